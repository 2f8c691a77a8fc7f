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
