//! Mask comparison, the metrics of the original Wanda-vs-SparseGPT study
//! (dat-adi/sparsity_characterization `scripts/metrics`), on bit-packed masks:
//!
//! * Jaccard of **kept** positions |A ∩ B| / |A ∪ B| (0 when the union is empty, as in the
//!   original);
//! * Hamming distance as the **fraction** of differing mask bits;
//! * cosine similarity ⟨a, b⟩ / (‖a‖ ‖b‖) of the pruned weight values (0 if a norm is 0;
//!   only when both inputs are weights, not bare masks).
//!
//! Each metric is reported for the whole layer and per feature — per output row and per
//! input column (the original called a mask column a "feature", except for down_proj where it
//! used rows) — with summary statistics (mean, std with ddof 0, quantiles).

use ndarray::{Array2, ArrayView2, Axis};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{PruneError, Result};
use sparsity_io::bits::{BitMatrix, pair_counts};

/// One side of a comparison: a mask, and the pruned weight values when known.
#[derive(Debug, Clone)]
pub struct MaskedLayer {
    /// Layer name.
    pub name: String,
    /// The packed mask (1 = pruned).
    pub mask: BitMatrix,
    /// [rows, cols] pruned weight, if the input was a weight.
    pub values: Option<Array2<f32>>,
}

impl MaskedLayer {
    /// From a u8 mask (non-zero = pruned).
    pub fn from_mask(name: &str, mask: ArrayView2<u8>) -> Self {
        Self {
            name: name.to_string(),
            mask: BitMatrix::from_view(mask, |&v| v != 0),
            values: None,
        }
    }

    /// From a pruned weight (exact zeros = pruned).
    pub fn from_weight(name: &str, weight: Array2<f32>) -> Self {
        Self {
            name: name.to_string(),
            mask: BitMatrix::from_view(weight.view(), |&v| v == 0.0),
            values: Some(weight),
        }
    }
}

/// Summary statistics of a per-feature metric (quantiles with linear interpolation, as numpy).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Number of features.
    pub count: usize,
    /// Mean.
    pub mean: f64,
    /// Standard deviation (ddof 0, as the original's np.std).
    pub std: f64,
    /// Minimum.
    pub min: f64,
    /// 5 % quantile.
    pub q05: f64,
    /// 25 % quantile.
    pub q25: f64,
    /// Median.
    pub median: f64,
    /// 75 % quantile.
    pub q75: f64,
    /// 95 % quantile.
    pub q95: f64,
    /// Maximum.
    pub max: f64,
}

impl Summary {
    /// Summary of `values` (all zeros when empty).
    pub fn of(values: &[f64]) -> Self {
        let n = values.len();
        if n == 0 {
            return Self {
                count: 0,
                mean: 0.0,
                std: 0.0,
                min: 0.0,
                q05: 0.0,
                q25: 0.0,
                median: 0.0,
                q75: 0.0,
                q95: 0.0,
                max: 0.0,
            };
        }
        let mut s = values.to_vec();
        s.sort_by(f64::total_cmp);
        let mean = s.iter().sum::<f64>() / n as f64;
        let var = s.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
        let q = |p: f64| {
            let h = (n - 1) as f64 * p;
            let lo = h.floor() as usize;
            let hi = (lo + 1).min(n - 1);
            s[lo] + (h - lo as f64) * (s[hi] - s[lo])
        };
        Self {
            count: n,
            mean,
            std: var.sqrt(),
            min: s[0],
            q05: q(0.05),
            q25: q(0.25),
            median: q(0.5),
            q75: q(0.75),
            q95: q(0.95),
            max: s[n - 1],
        }
    }
}

/// Per-feature values of every metric along one axis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureMetrics {
    /// Jaccard of kept positions, one per feature.
    pub jaccard: Vec<f64>,
    /// Hamming fraction, one per feature.
    pub hamming: Vec<f64>,
    /// Cosine of the weight values, one per feature (when both sides carry weights).
    pub cosine: Option<Vec<f64>>,
}

/// Summaries of [`FeatureMetrics`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureSummary {
    /// Jaccard summary.
    pub jaccard: Summary,
    /// Hamming summary.
    pub hamming: Summary,
    /// Cosine summary.
    pub cosine: Option<Summary>,
}

impl FeatureMetrics {
    /// The summaries.
    pub fn summary(&self) -> FeatureSummary {
        FeatureSummary {
            jaccard: Summary::of(&self.jaccard),
            hamming: Summary::of(&self.hamming),
            cosine: self.cosine.as_deref().map(Summary::of),
        }
    }
}

/// Whole-layer metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerMetrics {
    /// Jaccard of kept positions over the whole layer.
    pub jaccard: f64,
    /// Fraction of differing mask bits over the whole layer.
    pub hamming: f64,
    /// Cosine of the flattened weights (when both sides carry weights).
    pub cosine: Option<f64>,
    /// Fraction pruned in A.
    pub sparsity_a: f64,
    /// Fraction pruned in B.
    pub sparsity_b: f64,
}

/// The comparison of one layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerComparison {
    /// Layer name.
    pub name: String,
    /// [rows, cols].
    pub shape: [usize; 2],
    /// Whole-layer metrics.
    pub layer: LayerMetrics,
    /// Per output row.
    pub rows: FeatureMetrics,
    /// Per input column.
    pub columns: FeatureMetrics,
}

/// (kept∩, kept∪, differing) counts of two packed mask rows of `len` bits (bit set = pruned):
/// kept∩ = len − |pruned_a ∪ pruned_b|, kept∪ = len − |pruned_a ∩ pruned_b|.
fn row_counts(a: &[u64], b: &[u64], len: usize) -> (u64, u64, u64) {
    let p = pair_counts(a, b);
    let len = len as u64;
    (len - p.either, len - p.both, p.differ)
}

fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

fn cosine(a: ndarray::ArrayView1<f32>, b: ndarray::ArrayView1<f32>) -> f64 {
    cosine_iter(a.iter(), b.iter())
}

fn cosine_iter<'a>(a: impl Iterator<Item = &'a f32>, b: impl Iterator<Item = &'a f32>) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.zip(b) {
        let (x, y) = (x as f64, y as f64);
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        ab / (aa.sqrt() * bb.sqrt())
    }
}

fn per_feature(
    a: &BitMatrix,
    b: &BitMatrix,
    values: Option<(ArrayView2<f32>, ArrayView2<f32>)>,
) -> FeatureMetrics {
    let cols = a.cols();
    let counts: Vec<(u64, u64, u64)> = (0..a.rows())
        .into_par_iter()
        .map(|r| row_counts(a.row_words(r), b.row_words(r), cols))
        .collect();
    let cosine = values.map(|(va, vb)| {
        va.axis_iter(Axis(0))
            .into_par_iter()
            .zip(vb.axis_iter(Axis(0)).into_par_iter())
            .map(|(x, y)| cosine(x, y))
            .collect()
    });
    FeatureMetrics {
        jaccard: counts.iter().map(|&(i, u, _)| ratio(i, u)).collect(),
        hamming: counts
            .iter()
            .map(|&(_, _, d)| ratio(d, cols as u64))
            .collect(),
        cosine,
    }
}

/// Compares two layers of the same shape.
pub fn compare_layers(a: &MaskedLayer, b: &MaskedLayer) -> Result<LayerComparison> {
    let shape = [a.mask.rows(), a.mask.cols()];
    if [b.mask.rows(), b.mask.cols()] != shape {
        return Err(PruneError::ShapeMismatch {
            layer: a.name.clone(),
            what: format!("mask B (`{}`)", b.name),
            expected: shape.to_vec(),
            got: vec![b.mask.rows(), b.mask.cols()],
        });
    }
    let values = match (&a.values, &b.values) {
        (Some(x), Some(y)) => Some((x.view(), y.view())),
        _ => None,
    };
    let rows = per_feature(&a.mask, &b.mask, values);
    let (at, bt) = (a.mask.transpose(), b.mask.transpose());
    let columns = per_feature(
        &at,
        &bt,
        values.map(|(x, y)| (x.reversed_axes(), y.reversed_axes())),
    );
    let (mut inter, mut union, mut diff) = (0u64, 0u64, 0u64);
    for r in 0..shape[0] {
        let (i, u, d) = row_counts(a.mask.row_words(r), b.mask.row_words(r), shape[1]);
        inter += i;
        union += u;
        diff += d;
    }
    let numel = (shape[0] * shape[1]) as u64;
    let layer = LayerMetrics {
        jaccard: ratio(inter, union),
        hamming: ratio(diff, numel),
        cosine: values.map(|(x, y)| cosine_iter(x.iter(), y.iter())),
        sparsity_a: ratio(a.mask.count_ones(), numel),
        sparsity_b: ratio(b.mask.count_ones(), numel),
    };
    Ok(LayerComparison {
        name: a.name.clone(),
        shape,
        layer,
        rows,
        columns,
    })
}

/// The comparison of two inputs, layer by layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComparisonReport {
    /// Compared layers, in A's order.
    pub layers: Vec<LayerComparison>,
    /// Layers only in A.
    pub only_in_a: Vec<String>,
    /// Layers only in B.
    pub only_in_b: Vec<String>,
    /// Summary over layers of the whole-layer Jaccard.
    pub layer_jaccard: Summary,
    /// Summary over layers of the whole-layer Hamming fraction.
    pub layer_hamming: Summary,
}

/// Compares the layers of A and B that have the same name (every shape must agree). When
/// each side holds exactly one layer, the two are compared whatever their names (the result
/// is named `A-name vs B-name` if they differ).
pub fn compare_all(a: &[MaskedLayer], b: &[MaskedLayer]) -> Result<ComparisonReport> {
    if let ([la], [lb]) = (a, b)
        && la.name != lb.name
    {
        let mut c = compare_layers(la, lb)?;
        c.name = format!("{} vs {}", la.name, lb.name);
        return Ok(ComparisonReport {
            layer_jaccard: Summary::of(&[c.layer.jaccard]),
            layer_hamming: Summary::of(&[c.layer.hamming]),
            layers: vec![c],
            only_in_a: Vec::new(),
            only_in_b: Vec::new(),
        });
    }
    let mut layers = Vec::new();
    let mut only_in_a = Vec::new();
    for la in a {
        match b.iter().find(|lb| lb.name == la.name) {
            Some(lb) => layers.push(compare_layers(la, lb)?),
            None => only_in_a.push(la.name.clone()),
        }
    }
    let only_in_b = b
        .iter()
        .filter(|lb| !a.iter().any(|la| la.name == lb.name))
        .map(|lb| lb.name.clone())
        .collect();
    let jac: Vec<f64> = layers.iter().map(|l| l.layer.jaccard).collect();
    let ham: Vec<f64> = layers.iter().map(|l| l.layer.hamming).collect();
    Ok(ComparisonReport {
        layers,
        only_in_a,
        only_in_b,
        layer_jaccard: Summary::of(&jac),
        layer_hamming: Summary::of(&ham),
    })
}
