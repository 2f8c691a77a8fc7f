//! SparseGPT (Frantar & Alistarh 2023, "SparseGPT: Massive Language Models Can Be
//! Accurately Pruned in One-Shot", arXiv 2301.00774; reference: IST-DASLab/sparsegpt).
//!
//! Hessian H = 2/N · Σ x xᵀ as the reference's running average over N sequences:
//! per call with b sequences `H *= n/(n+b); n += b; x ← sqrt(2/n)·x; H += xᵀx`.
//! Pruning: dead inputs (diag H = 0) get H_dd = 1 and W[:, d] = 0; damp = percdamp ·
//! mean(diag H) is added to the diagonal; U = chol(H⁻¹, upper). Columns are swept in blocks
//! of `blocksize`: unstructured masks are chosen at block start from W1² / diag(U1)² with
//! one threshold over the whole block (prune ≤ sort(·)[int(numel·ratio)]), N:M masks at each
//! group start from the already-updated W1; per column q = w (pruned → 0),
//! err = (w − q)/U_ii, W1[:, i:] −= err ⊗ U1[i, i:]; after the block
//! W[:, i2:] −= Err1 · U[i1:i2, i2:].
//!
//! A Hessian that is not positive definite even after damping (SparseGPT's most reported
//! failure) is retried with 10× the damping, up to a limit; the retries are reported.

use ndarray::{Array1, Array2, ArrayView2, ArrayViewD, Axis, linalg::general_mat_mul, s};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::calibration::flatten_batch;
use crate::config::Pattern;
use crate::error::{PruneError, Result, check_finite};
use crate::linalg::{Real, upper_cholesky_of_inverse};

/// Accumulation precision of the Hessian.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Precision {
    /// f32, like the reference (default).
    #[default]
    F32,
    /// f64 (more accurate for very long calibration runs).
    F64,
}

#[derive(Debug, Clone)]
enum Accum {
    F32(Array2<f32>),
    F64(Array2<f64>),
}

/// Streamed SparseGPT Hessian H = 2/N · Σ x xᵀ of one layer ([in, in]).
///
/// Only the upper triangle is accumulated (a symmetric rank-k update, half the flops of the
/// reference's full matmul); [`HessianStats::hessian`] returns the full symmetric matrix.
#[derive(Debug, Clone)]
pub struct HessianStats {
    h: Accum,
    nsamples: usize,
    in_features: usize,
}

impl HessianStats {
    /// Empty statistics for `in_features` inputs, accumulated in `precision`.
    pub fn new(in_features: usize, precision: Precision) -> Self {
        let h = match precision {
            Precision::F32 => Accum::F32(Array2::zeros((in_features, in_features))),
            Precision::F64 => Accum::F64(Array2::zeros((in_features, in_features))),
        };
        Self {
            h,
            nsamples: 0,
            in_features,
        }
    }

    /// Statistics from a full symmetric Hessian [in, in] over `nsamples` sequences.
    pub fn from_hessian(layer: &str, h: Array2<f32>, nsamples: usize) -> Result<Self> {
        if h.nrows() != h.ncols() {
            return Err(PruneError::ShapeMismatch {
                layer: layer.to_string(),
                what: "Hessian (must be square)".into(),
                expected: vec![h.nrows(), h.nrows()],
                got: h.shape().to_vec(),
            });
        }
        check_finite(layer, "Hessian", h.shape(), h.iter())?;
        Ok(Self {
            in_features: h.nrows(),
            h: Accum::F32(h),
            nsamples,
        })
    }

    /// Adds one calibration batch, [tokens, in] (one sequence) or [batch, seq, in].
    pub fn add_batch(&mut self, layer: &str, x: ArrayViewD<f32>) -> Result<()> {
        let batch = flatten_batch(layer, x, self.in_features)?;
        let b = batch.sequences;
        if b == 0 {
            return Ok(());
        }
        let decay = self.nsamples as f64 / (self.nsamples + b) as f64;
        self.nsamples += b;
        let scale = (2.0 / self.nsamples as f64).sqrt();
        match &mut self.h {
            Accum::F32(h) => {
                // The reference multiplies f32 tensors by Python floats: factors rounded to f32.
                let (decay, scale) = (decay as f32, scale as f32);
                h.mapv_inplace(|v| v * decay);
                let xs = batch.x.mapv(|v| v * scale);
                syrk_upper_add(h, xs.view());
            }
            Accum::F64(h) => {
                h.mapv_inplace(|v| v * decay);
                let xs = batch.x.mapv(|v| v as f64 * scale);
                syrk_upper_add(h, xs.view());
            }
        }
        Ok(())
    }

    /// Number of calibration sequences added.
    pub fn nsamples(&self) -> usize {
        self.nsamples
    }

    /// Number of input features.
    pub fn in_features(&self) -> usize {
        self.in_features
    }

    /// The accumulation precision.
    pub fn precision(&self) -> Precision {
        match self.h {
            Accum::F32(_) => Precision::F32,
            Accum::F64(_) => Precision::F64,
        }
    }

    /// [in, in] the full symmetric Hessian in f32.
    pub fn hessian(&self) -> Array2<f32> {
        match &self.h {
            Accum::F32(h) => symmetrize(h),
            Accum::F64(h) => symmetrize(h).mapv(|v| v as f32),
        }
    }

    /// [in, in] the full symmetric Hessian in f64.
    pub fn hessian_f64(&self) -> Array2<f64> {
        match &self.h {
            Accum::F32(h) => symmetrize(h).mapv(|v| v as f64),
            Accum::F64(h) => symmetrize(h),
        }
    }
}

/// Copies the upper triangle onto the lower one.
fn symmetrize<T: Real>(h: &Array2<T>) -> Array2<T> {
    let mut out = h.clone();
    let n = out.nrows();
    for i in 0..n {
        for j in 0..i {
            out[[i, j]] = out[[j, i]];
        }
    }
    out
}

/// H (upper triangle, including the diagonal) += Xᵀ X for X [tokens, in]; row blocks of H
/// run in parallel.
fn syrk_upper_add<T: Real>(h: &mut Array2<T>, x: ArrayView2<T>) {
    let rb = 64;
    let n = h.nrows();
    h.axis_chunks_iter_mut(Axis(0), rb)
        .into_par_iter()
        .enumerate()
        .for_each(|(ci, mut chunk)| {
            let r0 = ci * rb;
            let r1 = r0 + chunk.nrows();
            let lhs = x.slice(s![.., r0..r1]);
            let rhs = x.slice(s![.., r0..n]);
            let mut dst = chunk.slice_mut(s![.., r0..n]);
            general_mat_mul(T::one(), &lhs.t(), &rhs, T::one(), &mut dst);
        });
}

/// SparseGPT parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SparseGptParams {
    /// Column block size (default 128).
    pub blocksize: usize,
    /// Damping as a fraction of mean(diag H) (default 0.01).
    pub percdamp: f64,
    /// How many times to retry with 10× damping when H + damp·I is not positive definite.
    pub max_damp_retries: usize,
}

impl Default for SparseGptParams {
    fn default() -> Self {
        Self {
            blocksize: crate::config::DEFAULT_BLOCKSIZE,
            percdamp: crate::config::DEFAULT_PERCDAMP,
            max_damp_retries: crate::config::DEFAULT_MAX_DAMP_RETRIES,
        }
    }
}

/// What SparseGPT produced besides the weights.
#[derive(Debug, Clone)]
pub struct SparseGptOutput {
    /// [out, in] pruned (and updated) weight.
    pub weight: Array2<f32>,
    /// [out, in] mask, 1 = pruned.
    pub mask: Array2<u8>,
    /// Number of 10× damping retries that were needed.
    pub damp_retries: usize,
    /// The relative damping finally used.
    pub percdamp_used: f64,
    /// Input columns with diag H = 0 (their weights were zeroed).
    pub dead_columns: Vec<usize>,
    /// The OBS loss Σ (w − q)² / U_ii² / 2 the reference prints as `error`.
    pub obs_loss: f64,
}

/// Runs SparseGPT on `weight` [out, in] with the full symmetric Hessian `hessian` [in, in],
/// in the Hessian's precision `T` (f32 like the reference, or f64).
pub fn sparsegpt<T: Real>(
    layer: &str,
    weight: ArrayView2<f32>,
    hessian: ArrayView2<T>,
    pattern: Pattern,
    params: &SparseGptParams,
) -> Result<SparseGptOutput> {
    let (rows, cols) = weight.dim();
    if hessian.dim() != (cols, cols) {
        return Err(PruneError::ShapeMismatch {
            layer: layer.to_string(),
            what: "Hessian vs weight in-features".into(),
            expected: vec![cols, cols],
            got: hessian.shape().to_vec(),
        });
    }
    pattern.validate(layer, [rows, cols])?;
    if params.blocksize == 0 {
        return Err(PruneError::InvalidOption {
            layer: layer.to_string(),
            option: "blocksize".into(),
            value: "0".into(),
            reason: "must be at least 1".into(),
        });
    }
    if let Pattern::NM { m, .. } = pattern
        && !params.blocksize.is_multiple_of(m)
    {
        return Err(PruneError::InvalidOption {
            layer: layer.to_string(),
            option: "blocksize".into(),
            value: params.blocksize.to_string(),
            reason: format!("must be a multiple of M = {m} for N:M SparseGPT"),
        });
    }
    if !(params.percdamp.is_finite() && params.percdamp >= 0.0) {
        return Err(PruneError::InvalidOption {
            layer: layer.to_string(),
            option: "percdamp".into(),
            value: params.percdamp.to_string(),
            reason: "must be finite and >= 0".into(),
        });
    }

    let mut w: Array2<T> = weight.mapv(T::from_f32);
    let mut h: Array2<T> = hessian.to_owned();
    let dead_columns: Vec<usize> = (0..cols).filter(|&j| h[[j, j]] == T::zero()).collect();
    for &d in &dead_columns {
        h[[d, d]] = T::one();
        w.column_mut(d).fill(T::zero());
    }
    let mean_diag = {
        let mut acc = T::zero();
        for j in 0..cols {
            acc = acc + h[[j, j]];
        }
        if cols > 0 {
            acc / T::from_f64(cols as f64)
        } else {
            acc
        }
    };

    // Damping with 10× retries.
    let mut percdamp = params.percdamp;
    let mut retries = 0;
    let u = loop {
        let damp = T::from_f64(percdamp) * mean_diag;
        let mut hd = h.clone();
        for j in 0..cols {
            hd[[j, j]] = hd[[j, j]] + damp;
        }
        match upper_cholesky_of_inverse(hd.view()) {
            Ok(u) => break u,
            Err(pivot) => {
                if retries >= params.max_damp_retries {
                    return Err(PruneError::NotPositiveDefinite {
                        layer: layer.to_string(),
                        n: cols,
                        retries,
                        last_percdamp: percdamp,
                    });
                }
                tracing::warn!(
                    layer,
                    pivot,
                    percdamp,
                    "Hessian not positive definite; retrying with 10x damping"
                );
                retries += 1;
                percdamp *= 10.0;
                if percdamp == 0.0 {
                    percdamp = crate::config::DEFAULT_PERCDAMP;
                }
            }
        }
    };

    let mut mask = Array2::<u8>::zeros((rows, cols));
    let mut obs_loss = 0f64;
    let mut i1 = 0;
    while i1 < cols {
        let i2 = (i1 + params.blocksize).min(cols);
        let count = i2 - i1;
        let u1 = u.slice(s![i1..i2, i1..i2]);
        let diag: Array1<T> = (0..count).map(|i| u1[[i, i]]).collect();
        let mut w1 = w.slice(s![.., i1..i2]).to_owned();
        let mut mask1 = Array2::<u8>::zeros((rows, count));
        if let Pattern::Unstructured(ratio) = pattern {
            let d2: Array1<T> = diag.mapv(|d| d * d);
            let mut tmp: Vec<T> = Vec::with_capacity(rows * count);
            for r in 0..rows {
                for c in 0..count {
                    let v = w1[[r, c]];
                    tmp.push(v * v / d2[c]);
                }
            }
            let k = ((tmp.len() as f64 * ratio) as usize).min(tmp.len().saturating_sub(1));
            let mut sorted = tmp.clone();
            let (_, &mut thresh, _) = sorted.select_nth_unstable_by(k, |a, b| a.total_cmp(b));
            for (m, v) in mask1.iter_mut().zip(tmp.iter()) {
                *m = u8::from(*v <= thresh);
            }
        }
        let mut err1 = Array2::<T>::zeros((rows, count));
        let losses: Vec<f64> = w1
            .axis_iter_mut(Axis(0))
            .into_par_iter()
            .zip(mask1.axis_iter_mut(Axis(0)).into_par_iter())
            .zip(err1.axis_iter_mut(Axis(0)).into_par_iter())
            .map(|((mut wr, mut mr), mut er)| {
                let mut loss = 0f64;
                let mut idx: Vec<usize> = Vec::new();
                for i in 0..count {
                    if let Pattern::NM { n, m } = pattern
                        && i.is_multiple_of(m)
                    {
                        let end = (i + m).min(count);
                        let score = |c: usize| {
                            let v = wr[c];
                            v * v / (diag[c] * diag[c])
                        };
                        idx.clear();
                        idx.extend(i..end);
                        idx.sort_by(|&a, &b| score(a).total_cmp(&score(b)));
                        for &c in idx.iter().take(n) {
                            mr[c] = 1;
                        }
                    }
                    let wv = wr[i];
                    let q = if mr[i] == 1 { T::zero() } else { wv };
                    let d = diag[i];
                    let diff = wv - q;
                    loss += (diff.to_f64() * diff.to_f64()) / (d.to_f64() * d.to_f64());
                    let e = diff / d;
                    er[i] = e;
                    // W1[:, i:] -= err ⊗ U1[i, i:] (the product is rounded before subtracting).
                    wr[i] = q;
                    if e != T::zero() {
                        for c in i + 1..count {
                            let p = e * u1[[i, c]];
                            wr[c] = wr[c] - p;
                        }
                    }
                }
                loss
            })
            .collect();
        obs_loss += losses.iter().sum::<f64>() / 2.0;
        w.slice_mut(s![.., i1..i2]).assign(&w1);
        mask.slice_mut(s![.., i1..i2]).assign(&mask1);
        if i2 < cols {
            let rhs = u.slice(s![i1..i2, i2..]);
            let minus_one = T::zero() - T::one();
            w.slice_mut(s![.., i2..])
                .axis_chunks_iter_mut(Axis(0), 64)
                .into_par_iter()
                .zip(err1.axis_chunks_iter(Axis(0), 64).into_par_iter())
                .for_each(|(mut dst, e)| {
                    general_mat_mul(minus_one, &e, &rhs, T::one(), &mut dst);
                });
        }
        i1 = i2;
    }
    // Pruned entries are exact zeros already (q = 0); W stays finite unless the inputs were not.
    let weight_out = w.mapv(T::to_f32);
    Ok(SparseGptOutput {
        weight: weight_out,
        mask,
        damp_retries: retries,
        percdamp_used: percdamp,
        dead_columns,
        obs_loss,
    })
}
