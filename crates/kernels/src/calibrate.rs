//! Threshold calibration for a target activation sparsity at one site: the workspace's one TEAL
//! calibration, [`sparsity_metrics::teal_threshold`] (τ = the linear-interpolation quantile `s`
//! of `|x|`, numpy's and torch's default, TEAL's "s-quantile of |x|"; inputs with `|x| ≤ τ` are
//! skipped; `s = 0` gives τ = 0, exact zeros only), applied to an activation matrix.

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
            mags.push(f64::from(v.abs()));
        }
        mags.sort_by(f64::total_cmp);
        let tau = sparsity_metrics::teal_threshold_f32(&mags, self.target_sparsity)
            .map_err(|e| KernelError::Calibration(e.to_string()))?;
        let at_or_below = mags.iter().filter(|&&m| m <= f64::from(tau)).count();
        Ok(CalibratedThreshold {
            tau,
            target_sparsity: self.target_sparsity,
            achieved_sparsity: at_or_below as f64 / n as f64,
            n_values: n,
        })
    }
}
