//! Entropy sparsity of per-neuron values (the original's `calculate_entropy_sparsity`).
//!
//! `u = (|v| − min)/(max − min)` (all zeros when max = min); a histogram of `u` with
//! `B = max(1, min(50, ⌊n/10⌋))` equal bins over `[0, 1]` (numpy's `histogram` binning, which
//! uses `[−0.5, 0.5]` when `u` is constant); empty bins dropped, `B′` = non-empty bins.
//!
//! - **Shannon (default):** `p_b = c_b/n`, `H = −Σ p_b ln p_b`, `normalized = H / ln B′`
//!   (0 when `B′ = 1`), in `[0, 1]`.
//! - **Legacy:** the original formula on numpy's `density=True` values `d_b = c_b/(n·w)`:
//!   `H = −Σ d_b ln(d_b + 1e-10)`, normalised by `ln B′`. Since `Σ d_b w = 1`,
//!   `H = B·(H(p) − ln B) ≤ 0`, so `sparsity_from_entropy ≥ 1` for any data: kept only to
//!   reproduce old numbers.
//!
//! `sparsity_from_entropy = 1 − normalized`. It discriminates concentrated (few distinct
//! variance levels → low entropy) from spread-out distributions of per-neuron values; it is
//! blind to where the mass is (a shift or scale of `v` leaves it unchanged).

use ndarray::ArrayView1;
use serde::{Deserialize, Serialize};

use crate::error::{Result, check_values};

/// Which entropy formula to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntropyMode {
    /// Shannon entropy of bin probabilities (correct; default).
    #[default]
    Shannon,
    /// The original's sum over densities (always gives sparsity ≥ 1).
    Legacy,
}

impl std::str::FromStr for EntropyMode {
    type Err = crate::MetricsError;
    /// The names [`std::fmt::Display`] prints.
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        [Self::Shannon, Self::Legacy]
            .into_iter()
            .find(|v| v.to_string() == s)
            .ok_or_else(|| crate::MetricsError::InvalidOption {
                name: "entropy".into(),
                value: s.into(),
                reason: "expected shannon or legacy".into(),
            })
    }
}

impl std::fmt::Display for EntropyMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Shannon => "shannon",
            Self::Legacy => "legacy",
        })
    }
}

/// Entropy result (JSON keys of the original).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EntropyResult {
    /// `H` (Shannon) or the legacy density sum.
    pub entropy: f64,
    /// `H / ln B′` (0 when `B′ = 1`).
    pub normalized_entropy: f64,
    /// `1 − normalized_entropy`.
    pub sparsity_from_entropy: f64,
    /// Number of non-empty bins `B′`.
    pub num_bins: usize,
}

/// Number of histogram bins for n values: `max(1, min(50, n/10))`.
pub fn entropy_bins(n: usize) -> usize {
    (n / 10).clamp(1, 50)
}

/// numpy `histogram(u, bins)` counts with numpy's uniform-bin algorithm (range = [min, max],
/// widened by ±0.5 when constant). Returns (counts, edges).
pub fn numpy_histogram(u: &[f64], bins: usize) -> (Vec<u64>, Vec<f64>) {
    let mut lo = u.iter().copied().fold(f64::INFINITY, f64::min);
    let mut hi = u.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if lo == hi {
        lo -= 0.5;
        hi += 0.5;
    }
    // np.linspace(lo, hi, bins + 1): k * step + start, last edge exactly hi.
    let step = (hi - lo) / bins as f64;
    let mut edges: Vec<f64> = (0..=bins).map(|k| k as f64 * step + lo).collect();
    if let Some(e) = edges.last_mut() {
        *e = hi;
    }
    let denom = hi - lo;
    let mut counts = vec![0u64; bins];
    for &x in u {
        let mut i = ((x - lo) / denom * bins as f64) as usize;
        if i >= bins {
            i = bins - 1;
        }
        if x < edges[i] && i > 0 {
            i -= 1;
        } else if i + 1 < bins && x >= edges[i + 1] {
            i += 1;
        }
        counts[i] += 1;
    }
    (counts, edges)
}

/// Entropy sparsity of `v` (`[n]`, uses |v|).
pub fn entropy_sparsity(v: ArrayView1<f64>, mode: EntropyMode) -> Result<EntropyResult> {
    check_values("per-neuron values", v)?;
    let x: Vec<f64> = v.iter().map(|a| a.abs()).collect();
    let n = x.len();
    let min = x.iter().copied().fold(f64::INFINITY, f64::min);
    let max = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let u: Vec<f64> = if max > min {
        let range = max - min;
        x.iter().map(|a| (a - min) / range).collect()
    } else {
        vec![0.0; n]
    };
    let bins = entropy_bins(n);
    let (counts, edges) = numpy_histogram(&u, bins);
    let total: u64 = counts.iter().sum();
    let mut entropy = 0.0;
    let mut nonempty = 0usize;
    for (b, &c) in counts.iter().enumerate() {
        if c == 0 {
            continue;
        }
        nonempty += 1;
        match mode {
            EntropyMode::Shannon => {
                let p = c as f64 / n as f64;
                entropy -= p * p.ln();
            }
            EntropyMode::Legacy => {
                // numpy: density = counts / diff(edges) / counts.sum()
                let d = c as f64 / (edges[b + 1] - edges[b]) / total as f64;
                entropy -= d * (d + 1e-10).ln();
            }
        }
    }
    let max_entropy = (nonempty as f64).ln();
    let normalized_entropy = if max_entropy > 0.0 {
        entropy / max_entropy
    } else {
        0.0
    };
    Ok(EntropyResult {
        entropy,
        normalized_entropy,
        sparsity_from_entropy: 1.0 - normalized_entropy,
        num_bins: nonempty,
    })
}
