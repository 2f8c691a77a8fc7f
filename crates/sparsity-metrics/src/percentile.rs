//! Percentile sparsity over per-neuron values (the original study's `calculate_percentile_sparsity`).
//!
//! For each p: `threshold_p = percentile(|v|, p)` with numpy's default linear interpolation
//! (`h = (n−1)·p/100`, `thr = s[⌊h⌋] + (h−⌊h⌋)(s[⌊h⌋+1] − s[⌊h⌋])` on the sorted `s`),
//! `sparsity_p = mean(|v| < threshold_p)`, `neurons_below_p = #{|v| < threshold_p}`.
//!
//! **Tautological:** with distinct values `sparsity_p = ⌈h⌉/n ≈ p/100` for any data (P50 always
//! reports ≈ 0.5). Only the thresholds carry information about the data.

use ndarray::ArrayView1;
use serde::{Deserialize, Serialize};

use crate::error::{MetricsError, Result, check_values};

/// The default percentiles, as in the original study.
pub const DEFAULT_PERCENTILES: [f64; 7] = [5.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0];

/// Threshold and sparsity at one percentile (JSON keys of the original).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PercentileEntry {
    /// `percentile(|v|, p)`.
    pub threshold: f64,
    /// `mean(|v| < threshold)`.
    pub sparsity: f64,
    /// `#{|v| < threshold}`.
    pub neurons_below: usize,
}

/// Sorted absolute values, checked (non-empty, finite). `[n]`
pub(crate) fn sorted_abs(what: &str, v: ArrayView1<f64>) -> Result<Vec<f64>> {
    check_values(what, v)?;
    let mut s: Vec<f64> = v.iter().map(|x| x.abs()).collect();
    s.sort_by(f64::total_cmp);
    Ok(s)
}

/// numpy's `percentile(s, p)` (method "linear") on an ascending sorted, non-empty slice.
pub fn percentile_sorted(sorted: &[f64], p: f64) -> Result<f64> {
    if !(p.is_finite() && (0.0..=100.0).contains(&p)) {
        return Err(MetricsError::PercentileOutOfRange(p));
    }
    let n = sorted.len();
    let (Some(&first), Some(&last)) = (sorted.first(), sorted.last()) else {
        return Err(MetricsError::Empty {
            what: "values for percentile".into(),
        });
    };
    // Same operation order as numpy: q = p/100, virtual index (n−1)·q, lerp with the
    // symmetric form numpy uses for gamma ≥ 0.5.
    let q = p / 100.0;
    let h = (n - 1) as f64 * q;
    let lo = h.floor();
    let gamma = h - lo;
    let i = lo as usize;
    let a = sorted.get(i).copied().unwrap_or(last);
    let b = sorted.get(i + 1).copied().unwrap_or(last);
    let _ = first;
    let diff = b - a;
    Ok(if gamma >= 0.5 {
        b - diff * (1.0 - gamma)
    } else {
        a + diff * gamma
    })
}

/// Fraction and count of `|v|` strictly below `threshold` (on sorted magnitudes).
pub(crate) fn below(sorted: &[f64], threshold: f64) -> (f64, usize) {
    let k = sorted.partition_point(|&x| x < threshold);
    (k as f64 / sorted.len() as f64, k)
}

/// Percentile sparsity of `v` for each p in `percentiles` (each in `[0, 100]`). `v`: `[n]`.
pub fn percentile_sparsity(
    v: ArrayView1<f64>,
    percentiles: &[f64],
) -> Result<Vec<(f64, PercentileEntry)>> {
    let s = sorted_abs("per-neuron values", v)?;
    percentiles
        .iter()
        .map(|&p| {
            let threshold = percentile_sorted(&s, p)?;
            let (sparsity, neurons_below) = below(&s, threshold);
            Ok((
                p,
                PercentileEntry {
                    threshold,
                    sparsity,
                    neurons_below,
                },
            ))
        })
        .collect()
}

/// The original's JSON key for a percentile: `p5`, `p50`, `p99.9` for 99.9.
pub fn percentile_key(p: f64) -> String {
    if p.fract() == 0.0 {
        format!("p{}", p as i64)
    } else {
        format!("p{p}")
    }
}
