//! Threshold calibration for a target activation sparsity (TEAL, Liu et al. 2024,
//! arXiv 2408.14690, §3: "the threshold is the s-quantile of |x| at that site").
//!
//! For target sparsity `s` over `n` calibration values, τ is the `k = ⌊s·n⌋`-th smallest
//! `|x|` (1-based), so that exactly `k` values satisfy `|x| ≤ τ` when magnitudes are
//! distinct; `s = 0` gives τ = 0 (skip exact zeros only). This is the exact quantile of
//! `|x|`, which holds for any distribution. TEAL's own code reads τ off a 10 000-bin
//! histogram of signed `x` as `icdf(0.5 + s/2)`, assuming a zero-mean symmetric
//! distribution; that approximation is not reproduced here.

use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};

use crate::error::{KernelError, Result};

/// Parameters: the target fraction of inputs to skip at one site.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ThresholdCalibration {
    /// Target sparsity `s` in [0, 1): fraction of `|x|` values at or below τ.
    pub target_sparsity: f64,
}

/// A fitted threshold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CalibratedThreshold {
    /// τ: inputs with `|x| ≤ τ` are skipped.
    pub tau: f32,
    /// The requested sparsity.
    pub target_sparsity: f64,
    /// Fraction of calibration values with `|x| ≤ τ` (≥ target when values tie).
    pub achieved_sparsity: f64,
    /// Number of calibration values (tokens × features).
    pub n_values: usize,
}

impl ThresholdCalibration {
    /// Calibration for target sparsity `s` (checked in [`ThresholdCalibration::fit`]).
    pub fn new(target_sparsity: f64) -> Self {
        Self { target_sparsity }
    }

    /// Checks `0 ≤ s < 1`.
    pub fn validate(&self) -> Result<()> {
        let s = self.target_sparsity;
        if !(0.0..1.0).contains(&s) {
            return Err(KernelError::InvalidOption {
                option: "target_sparsity",
                value: s.to_string(),
                reason: "must lie in [0, 1)",
            });
        }
        Ok(())
    }

    /// Fits τ on the activations seen at one site, `activations` [tokens, in] (all
    /// tokens and channels pooled, as TEAL does per projection).
    pub fn fit(&self, activations: ArrayView2<'_, f32>) -> Result<CalibratedThreshold> {
        self.validate()?;
        let (tokens, features) = activations.dim();
        let n = tokens * features;
        if n == 0 {
            return Err(KernelError::EmptyTensor {
                tensor: "activations",
                shape: vec![tokens, features],
            });
        }
        let mut mags = Vec::with_capacity(n);
        for (index, &v) in activations.iter().enumerate() {
            if !v.is_finite() {
                return Err(KernelError::NonFiniteActivation { index });
            }
            mags.push(v.abs());
        }
        let k = (self.target_sparsity * n as f64).floor() as usize;
        let tau = if k == 0 {
            0.0
        } else {
            let (_, kth, _) = mags.select_nth_unstable_by(k - 1, f32::total_cmp);
            *kth
        };
        let at_or_below = mags.iter().filter(|&&m| m <= tau).count();
        Ok(CalibratedThreshold {
            tau,
            target_sparsity: self.target_sparsity,
            achieved_sparsity: at_or_below as f64 / n as f64,
            n_values: n,
        })
    }
}
