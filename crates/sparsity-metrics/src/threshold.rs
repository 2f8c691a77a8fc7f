//! Fixed ("traditional") and target ("optimal") thresholds on per-neuron values.
//!
//! - Traditional: `sparsity = mean(|v| < t)`, `t` by model family (Mamba 0.01,
//!   transformer 1e-5, unknown 0.01, as the original) unless overridden. It discriminates only
//!   when `t` sits inside the range of |v|, which fails across activation scales.
//! - Optimal for a target `s`: `x = sort(|v|)`, `thr = x[⌊s·n⌋]` (last element if out of
//!   range), `sparsity = mean(|v| < thr)`. **Tautological:** with distinct values the sparsity is
//!   `⌊s·n⌋/n ≈ s` for any data (230/768 = 0.2995 for 0.3); only the threshold is informative.

use ndarray::ArrayView1;
use serde::{Deserialize, Serialize};

use crate::error::{MetricsError, Result, check_target};
use crate::percentile::{below, sorted_abs};

/// Model family, which picks the default traditional threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelFamily {
    /// Mamba / SSM models: 0.01.
    Mamba,
    /// Transformers (GPT-2, ...): 1e-5.
    Transformer,
    /// Anything else: 0.01.
    #[default]
    Unknown,
}

impl ModelFamily {
    /// The original's default traditional threshold for this family.
    pub fn default_threshold(self) -> f64 {
        match self {
            Self::Mamba => 0.01,
            Self::Transformer => 1e-5,
            Self::Unknown => 0.01,
        }
    }
}

impl std::str::FromStr for ModelFamily {
    type Err = crate::MetricsError;
    /// The names [`std::fmt::Display`] prints.
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        [Self::Mamba, Self::Transformer, Self::Unknown]
            .into_iter()
            .find(|v| v.to_string() == s)
            .ok_or_else(|| crate::MetricsError::InvalidOption {
                name: "family".into(),
                value: s.into(),
                reason: "expected mamba, transformer or unknown".into(),
            })
    }
}

impl std::fmt::Display for ModelFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Mamba => "mamba",
            Self::Transformer => "transformer",
            Self::Unknown => "unknown",
        })
    }
}

/// Traditional threshold result (JSON keys of the original).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ThresholdResult {
    /// The threshold t.
    pub threshold: f64,
    /// `mean(|v| < t)`.
    pub sparsity: f64,
    /// `#{|v| < t}`.
    pub neurons_below: usize,
}

/// Optimal threshold result (JSON keys of the original).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OptimalResult {
    /// `sort(|v|)[⌊target·n⌋]`.
    pub threshold: f64,
    /// `mean(|v| < threshold)` (≈ target by construction).
    pub sparsity: f64,
}

pub(crate) fn check_threshold(t: f64) -> Result<f64> {
    if t.is_finite() && t >= 0.0 {
        Ok(t)
    } else {
        Err(MetricsError::InvalidOption {
            name: "threshold".into(),
            value: t.to_string(),
            reason: "must be finite and >= 0".into(),
        })
    }
}

/// Fraction of `|v| < t`. `v`: `[n]`.
pub fn threshold_sparsity(v: ArrayView1<f64>, t: f64) -> Result<ThresholdResult> {
    let t = check_threshold(t)?;
    let s = sorted_abs("per-neuron values", v)?;
    let (sparsity, neurons_below) = below(&s, t);
    Ok(ThresholdResult {
        threshold: t,
        sparsity,
        neurons_below,
    })
}

/// The original's threshold sweep (`test_sparsity_thresholds`, there at the nine powers of ten
/// 1e-8 … 1): `mean(|v| < t)` at each threshold of a log grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdSweep {
    /// The thresholds, ascending.
    pub thresholds: Vec<f64>,
    /// `mean(|v| < t)` at each threshold.
    pub sparsity: Vec<f64>,
}

/// `points` thresholds `10^e`, `e` evenly spaced from `lo_exp` to `hi_exp` (both included);
/// integer exponents give the nearest double to the power of ten (`1e-8` exactly as written).
pub fn log_grid(lo_exp: f64, hi_exp: f64, points: usize) -> Result<Vec<f64>> {
    let bad = |reason: &str| MetricsError::InvalidOption {
        name: "threshold grid".into(),
        value: format!("10^{lo_exp} … 10^{hi_exp}, {points} points"),
        reason: reason.into(),
    };
    if !(lo_exp.is_finite() && hi_exp.is_finite() && lo_exp < hi_exp) {
        return Err(bad("needs finite exponents, the first below the second"));
    }
    if !(2..=100_000).contains(&points) {
        return Err(bad("needs 2 to 100 000 points"));
    }
    Ok((0..points)
        .map(|i| {
            let e = lo_exp + (hi_exp - lo_exp) * i as f64 / (points - 1) as f64;
            if e.fract() == 0.0 && e.abs() < 300.0 {
                format!("1e{e}").parse().unwrap_or_else(|_| 10f64.powf(e))
            } else {
                10f64.powf(e)
            }
        })
        .collect())
}

/// The threshold sweep of `v` over `thresholds` (each finite and ≥ 0): `mean(|v| < t)`.
pub fn threshold_sweep(v: ArrayView1<f64>, thresholds: &[f64]) -> Result<ThresholdSweep> {
    let s = sorted_abs("per-neuron values", v)?;
    let sparsity = thresholds
        .iter()
        .map(|&t| check_threshold(t).map(|t| below(&s, t).0))
        .collect::<Result<Vec<f64>>>()?;
    Ok(ThresholdSweep {
        thresholds: thresholds.to_vec(),
        sparsity,
    })
}

/// The original's `find_optimal_sparsity_threshold`: direct index into the sorted |v|.
pub fn optimal_threshold(v: ArrayView1<f64>, target: f64) -> Result<OptimalResult> {
    let target = check_target("target", target)?;
    let s = sorted_abs("per-neuron values", v)?;
    Ok(optimal_sorted(&s, target))
}

pub(crate) fn optimal_sorted(s: &[f64], target: f64) -> OptimalResult {
    let n = s.len();
    let i = ((target * n as f64) as usize).min(n.saturating_sub(1));
    let threshold = s.get(i).copied().unwrap_or(0.0);
    OptimalResult {
        threshold,
        sparsity: below(s, threshold).0,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The sweep is `mean(|v| < t)` at every threshold, counted here one value at a time.
    #[test]
    fn sweep_equals_the_brute_force_fraction() {
        let grid = log_grid(-8.0, 0.0, 33).unwrap();
        assert_eq!(grid.len(), 33);
        assert_eq!((grid[0], grid[4], grid[32]), (1e-8, 1e-7, 1.0));
        assert!(grid.windows(2).all(|w| w[0] < w[1]));
        // Values spread over the grid, with ties exactly at thresholds and negative values.
        let mut values: Vec<f64> = (0..500)
            .map(|i| (-1.0f64).powi(i) * 10f64.powf(-9.0 + 9.5 * ((i * 37) % 500) as f64 / 500.0))
            .collect();
        values.extend_from_slice(&[1e-8, 1e-7, -1.0, 0.0, 0.1]);
        let v = ndarray::Array1::from(values.clone());
        let sweep = threshold_sweep(v.view(), &grid).unwrap();
        for (t, s) in sweep.thresholds.iter().zip(&sweep.sparsity) {
            let count = values.iter().filter(|x| x.abs() < *t).count();
            assert_eq!(*s, count as f64 / values.len() as f64, "t = {t}");
        }
        assert!(threshold_sweep(v.view(), &[f64::NAN]).is_err());
        assert!(log_grid(0.0, -8.0, 33).is_err());
    }
}
