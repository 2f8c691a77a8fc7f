//! Wanda: pruning by weights and activations (Sun, Liu, Bair, Kolter 2023,
//! "A Simple and Effective Pruning Approach for Large Language Models", arXiv 2306.11695).
//!
//! Score S_ij = |W_ij| · sqrt(scaler_row_j), compared within each output row i, where
//! scaler_row_j = Σ_tokens x_j² / N is the reference's running average over N calibration
//! **sequences**: per call with b sequences, `s *= n/(n+b); n += b; s += ‖x_j‖² / n`.
//! All arithmetic is f32 in the reference's order (sequential sums of squares, then
//! `sqrt(·)²`), so the statistics match PyTorch bit for bit.
//!
//! * unstructured: stable ascending sort of each row, prune the first int(in · ratio);
//! * N:M: in each group of m consecutive columns of a row prune the n smallest scores;
//! * variant (unstructured): per row cumulative sum C of the sorted scores; for α, prune
//!   S ≤ sorted[#{C ≤ α · rowsum} − 1]; α is bisected from 0.4 in [0, 0.8] until
//!   |sparsity − target| ≤ 0.001 or the bracket is narrower than 0.001.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayViewD, Axis, Zip};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::calibration::flatten_batch;
use crate::error::{PruneError, Result, check_finite};

/// Streamed Wanda statistics of one layer: the per-input-feature scaled squared norms.
#[derive(Debug, Clone)]
pub struct WandaStats {
    /// `[in]` Σ x_j² / N (the reference's `scaler_row`).
    scaler_row: Array1<f32>,
    /// Number of calibration sequences seen (the reference's `nsamples`).
    nsamples: usize,
}

impl WandaStats {
    /// Empty statistics for a layer with `in_features` inputs.
    pub fn new(in_features: usize) -> Self {
        Self {
            scaler_row: Array1::zeros(in_features),
            nsamples: 0,
        }
    }

    /// Statistics from an already computed `scaler_row` (`[in]`) over `nsamples` sequences.
    pub fn from_scaler_row(scaler_row: Array1<f32>, nsamples: usize) -> Self {
        Self {
            scaler_row,
            nsamples,
        }
    }

    /// Adds one calibration batch, [tokens, in] (one sequence) or [batch, seq, in].
    pub fn add_batch(&mut self, layer: &str, x: ArrayViewD<f32>) -> Result<()> {
        let batch = flatten_batch(layer, x, self.scaler_row.len())?;
        let b = batch.sequences;
        if b == 0 {
            return Ok(());
        }
        // The reference multiplies an f32 tensor by a Python float: the factor is rounded to f32.
        let decay = (self.nsamples as f64 / (self.nsamples + b) as f64) as f32;
        self.nsamples += b;
        let n = self.nsamples as f32;
        // torch.norm(inp.t(), dim=1): a sequential f32 sum of squares over the tokens.
        let mut acc = Array1::<f32>::zeros(self.scaler_row.len());
        for row in batch.x.rows() {
            Zip::from(&mut acc).and(&row).for_each(|a, &v| *a += v * v);
        }
        Zip::from(&mut self.scaler_row).and(&acc).for_each(|s, &a| {
            let norm = a.sqrt();
            *s = *s * decay + (norm * norm) / n;
        });
        Ok(())
    }

    /// `[in]` the per-feature mean squared activation Σ x_j² / N.
    pub fn scaler_row(&self) -> ArrayView1<'_, f32> {
        self.scaler_row.view()
    }

    /// Number of calibration sequences added.
    pub fn nsamples(&self) -> usize {
        self.nsamples
    }

    /// Number of input features.
    pub fn in_features(&self) -> usize {
        self.scaler_row.len()
    }
}

/// [out, in] Wanda scores |W| · sqrt(scaler_row) in f32, as the reference computes them.
pub fn wanda_scores(weight: ArrayView2<f32>, scaler_row: ArrayView1<f32>) -> Array2<f32> {
    let sqrt_s: Array1<f32> = scaler_row.mapv(f32::sqrt);
    let mut out = weight.mapv(f32::abs);
    out.axis_iter_mut(Axis(0))
        .into_par_iter()
        .for_each(|mut row| Zip::from(&mut row).and(&sqrt_s).for_each(|w, &s| *w *= s));
    out
}

/// Stable ascending argsort of a row (ties keep index order, like `torch.sort(stable=True)`).
fn stable_argsort(row: ArrayView1<f32>) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    idx.sort_by(|&a, &b| row[a].total_cmp(&row[b]));
    idx
}

/// [out, in] mask (1 = pruned): in every row, the `int(in · ratio)` smallest scores.
pub fn row_unstructured_mask(scores: ArrayView2<f32>, ratio: f64) -> Array2<u8> {
    let cols = scores.ncols();
    let k = (cols as f64 * ratio) as usize;
    let mut mask = Array2::<u8>::zeros(scores.raw_dim());
    mask.axis_iter_mut(Axis(0))
        .into_par_iter()
        .zip(scores.axis_iter(Axis(0)).into_par_iter())
        .for_each(|(mut m, s)| {
            for &j in stable_argsort(s).iter().take(k) {
                m[j] = 1;
            }
        });
    mask
}

/// [out, in] mask (1 = pruned): in every group of `m` consecutive columns of a row, the `n`
/// smallest scores (ties: lower column first). `in` must be divisible by `m`.
pub fn nm_mask(scores: ArrayView2<f32>, n: usize, m: usize) -> Array2<u8> {
    let mut mask = Array2::<u8>::zeros(scores.raw_dim());
    mask.axis_iter_mut(Axis(0))
        .into_par_iter()
        .zip(scores.axis_iter(Axis(0)).into_par_iter())
        .for_each(|(mut mrow, srow)| {
            let mut idx: Vec<usize> = Vec::with_capacity(m);
            let cols = srow.len();
            let mut g = 0;
            while g < cols {
                let end = (g + m).min(cols);
                idx.clear();
                idx.extend(g..end);
                idx.sort_by(|&a, &b| srow[a].total_cmp(&srow[b]));
                for &j in idx.iter().take(n) {
                    mrow[j] = 1;
                }
                g += m;
            }
        });
    mask
}

/// Result of the Wanda variant's α search.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct VariantSearch {
    /// The final α.
    pub alpha: f64,
    /// The layer sparsity at that α (f32, as the reference computes it).
    pub sparsity: f32,
    /// Number of α values evaluated.
    pub evaluations: usize,
}

/// The Wanda variant (unstructured): per-row cumulative-score thresholds with α bisected
/// so that the layer sparsity is within 0.001 of `ratio`. Returns the [out, in] mask and
/// the search result.
pub fn variant_mask(scores: ArrayView2<f32>, ratio: f64) -> (Array2<u8>, VariantSearch) {
    let rows = scores.nrows();
    let cols = scores.ncols();
    // Per row: sorted scores, their cumulative sum (torch.cumsum accumulates in f64 on the
    // CPU and rounds every output to f32) and the row sum.
    let per_row: Vec<(Vec<f32>, Vec<f32>, f32)> = scores
        .axis_iter(Axis(0))
        .into_par_iter()
        .map(|row| {
            let idx = stable_argsort(row);
            let sorted: Vec<f32> = idx.iter().map(|&j| row[j]).collect();
            let mut acc = 0f64;
            let cum: Vec<f32> = sorted
                .iter()
                .map(|&v| {
                    acc += v as f64;
                    acc as f32
                })
                .collect();
            let sum = row.iter().map(|&v| v as f64).sum::<f64>() as f32;
            (sorted, cum, sum)
        })
        .collect();

    let numel = (rows * cols) as f32;
    let thresholds = |alpha: f64| -> (Vec<Option<f32>>, f32) {
        let a = alpha as f32;
        let th: Vec<Option<f32>> = per_row
            .par_iter()
            .map(|(sorted, cum, sum)| {
                let limit = *sum * a;
                let k = cum.partition_point(|&c| c <= limit);
                if k == 0 { None } else { Some(sorted[k - 1]) }
            })
            .collect();
        let pruned: usize = per_row
            .par_iter()
            .zip(th.par_iter())
            .map(|((sorted, _, _), t)| match t {
                Some(t) => sorted.partition_point(|&v| v <= *t),
                None => 0,
            })
            .sum();
        (th, pruned as f32 / numel)
    };

    let target = ratio;
    let mut alpha = 0.4f64;
    let (mut lo, mut hi) = (0.0f64, 0.8f64);
    let (mut th, mut cur) = thresholds(alpha);
    let mut evaluations = 1;
    while ((cur - target as f32).abs() > 0.001f32) && (hi - lo >= 0.001) {
        let new_alpha = if cur > target as f32 {
            hi = alpha;
            (alpha + lo) / 2.0
        } else {
            lo = alpha;
            (alpha + hi) / 2.0
        };
        alpha = new_alpha;
        (th, cur) = thresholds(alpha);
        evaluations += 1;
    }
    let mut mask = Array2::<u8>::zeros((rows, cols));
    Zip::from(mask.rows_mut())
        .and(scores.rows())
        .and(&Array1::from(th))
        .for_each(|mut m, s, t| {
            if let Some(t) = *t {
                Zip::from(&mut m)
                    .and(&s)
                    .for_each(|m, &v| *m = u8::from(v <= t));
            }
        });
    (
        mask,
        VariantSearch {
            alpha,
            sparsity: cur,
            evaluations,
        },
    )
}

/// Checks a `scaler_row` against the weight's in-features and for finiteness.
pub(crate) fn check_stats(layer: &str, stats: &WandaStats, in_features: usize) -> Result<()> {
    if stats.in_features() != in_features {
        return Err(PruneError::ShapeMismatch {
            layer: layer.to_string(),
            what: "Wanda scaler_row".into(),
            expected: vec![in_features],
            got: vec![stats.in_features()],
        });
    }
    check_finite(
        layer,
        "Wanda scaler_row",
        &[in_features],
        stats.scaler_row.iter(),
    )
}
