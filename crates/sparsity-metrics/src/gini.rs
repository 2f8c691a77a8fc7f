//! Gini coefficient of per-neuron values (the original's `calculate_gini_sparsity`).
//!
//! `x = sort(|v|)` ascending, `c = cumsum(x)`, `G = (n + 1 − 2·Σ_i c_i / c_n) / n`
//! (0 when n = 0 or `c_n = 0`); equivalently `G = (2 Σ i·x_(i) − (n+1) Σ x) / (n Σ x)`.
//! `sparsity_from_gini = G`. A constant vector gives 0, a one-hot vector `(n−1)/n`.
//!
//! It measures the inequality of the per-neuron values (a few neurons with most of the
//! variance → high G), not the fraction of inactive activations; it is scale-invariant.

use ndarray::ArrayView1;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::percentile::sorted_abs;

/// Gini result (JSON keys of the original).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GiniResult {
    /// G in `[0, (n−1)/n]`.
    pub gini_coefficient: f64,
    /// Same as `gini_coefficient`.
    pub sparsity_from_gini: f64,
}

/// Gini coefficient of `v` (`[n]`, uses |v|).
pub fn gini_sparsity(v: ArrayView1<f64>) -> Result<GiniResult> {
    let s = sorted_abs("per-neuron values", v)?;
    let n = s.len() as f64;
    let mut c = 0.0;
    let mut sum_c = 0.0;
    for x in &s {
        c += x;
        sum_c += c;
    }
    let g = if c == 0.0 {
        0.0
    } else {
        (n + 1.0 - 2.0 * sum_c / c) / n
    };
    Ok(GiniResult {
        gini_coefficient: g,
        sparsity_from_gini: g,
    })
}
