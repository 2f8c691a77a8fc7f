//! Layer dynamics (the original's `analyze_layer_dynamics`), without its fabricated fallbacks.
//!
//! Per layer l with per-neuron values `v_l`: `mean_variance = mean(v_l)`, `t` = the family
//! threshold (or the override), `s = mean(|v_l| < t)`. When `s < 0.01` or `s > 0.99` the
//! original switched to the optimal threshold at target 0.3 if that gives a sparsity in
//! `[0.1, 0.9]`; the rule is kept and the threshold used is reported. In that case `s ≈ 0.3`
//! **by construction** (the original's flat 0.30 curves), which `threshold_source` makes visible.

use ndarray::ArrayView1;
use serde::{Deserialize, Serialize};

use crate::error::{Result, check_target};
use crate::percentile::{below, sorted_abs};
use crate::threshold::{check_threshold, optimal_sorted};

/// Which threshold a layer's sparsity was measured at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdSource {
    /// The family (or user) threshold.
    Traditional,
    /// The optimal-threshold fallback (sparsity ≈ target by construction).
    OptimalFallback,
}

/// One layer's dynamics.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LayerDynamics {
    /// Layer index (position in the input slice).
    pub layer: usize,
    /// `mean(v_l)`.
    pub mean_variance: f64,
    /// Sparsity at the traditional threshold.
    pub traditional_sparsity: f64,
    /// The threshold used for `sparsity`.
    pub threshold: f64,
    /// `mean(|v_l| < threshold)`.
    pub sparsity: f64,
    /// Where `threshold` came from.
    pub threshold_source: ThresholdSource,
}

/// Layer dynamics over per-layer value vectors (each `[neurons_l]`), threshold `t`
/// and the fallback `target` (0.3 in the original).
pub fn layer_dynamics(
    layers: &[ArrayView1<'_, f64>],
    t: f64,
    target: f64,
) -> Result<Vec<LayerDynamics>> {
    let t = check_threshold(t)?;
    let target = check_target("target", target)?;
    layers
        .iter()
        .enumerate()
        .map(|(layer, v)| {
            let s = sorted_abs(&format!("layer {layer} values"), *v)?;
            let mean_variance = v.iter().sum::<f64>() / v.len() as f64;
            let (traditional_sparsity, _) = below(&s, t);
            let mut threshold = t;
            let mut source = ThresholdSource::Traditional;
            if !(0.01..=0.99).contains(&traditional_sparsity) {
                let opt = optimal_sorted(&s, target);
                if (0.1..=0.9).contains(&opt.sparsity) {
                    threshold = opt.threshold;
                    source = ThresholdSource::OptimalFallback;
                }
            }
            Ok(LayerDynamics {
                layer,
                mean_variance,
                traditional_sparsity,
                threshold,
                sparsity: below(&s, threshold).0,
                threshold_source: source,
            })
        })
        .collect()
}
