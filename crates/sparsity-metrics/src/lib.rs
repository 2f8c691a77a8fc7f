//! # sparsity-metrics
//!
//! Streaming per-neuron activation statistics and sparsity measures, exact and documented:
//! the original study's percentile, entropy (Shannon by default, `Legacy` to reproduce old
//! numbers), Gini, traditional and optimal thresholds and layer dynamics, plus Hoyer sparsity,
//! TEAL-style calibrated activation sparsity and near-zero fractions relative to each neuron's
//! scale. Every failure is a [`MetricsError`]; no value is ever made up.
//!
//! Default dependencies are ndarray, rayon, serde and thiserror. Features:
//! - `safetensors`: [`load_safetensors`] (activation tensors from a file, through `sparsity-io`);
//! - `plots`: [`figures`] (the report's comparison and percentile charts, through `sparsity-plot`).
//!
//! ```
//! use ndarray::Array3;
//! use sparsity_metrics::{Aggregation, NeuronStatsParams, ReportParams, SparsityReport};
//!
//! // [batch, seq, neurons] activations, e.g. from a forward hook.
//! let acts = Array3::from_shape_fn((4, 16, 32), |(b, t, j)| ((b * 31 + t * 7 + j) % 13) as f32 * (j as f32 + 1.0) * 0.01);
//! let mut stats = NeuronStatsParams::new(32)
//!     .aggregation(Aggregation::PerSequenceMean)
//!     .build()?;
//! stats.update_sequences(acts.view())?; // stream as many batches as you like
//! let variance = stats.variance()?; // [neurons], ddof = 0
//! let report = SparsityReport::from_values(variance.view(), &ReportParams::default())?;
//! assert!((0.0..=1.0).contains(&report.gini.gini_coefficient));
//! assert_eq!(report.percentile.0.len(), 7); // p5 .. p95
//! println!("{}", serde_json::to_string_pretty(&report).unwrap());
//! # Ok::<(), sparsity_metrics::MetricsError>(())
//! ```

pub mod activation_sparsity;
pub mod activations;
pub mod entropy;
pub mod error;
#[cfg(feature = "plots")]
pub mod figures;
pub mod gini;
pub mod hoyer;
pub mod layer_dynamics;
pub mod near_zero;
pub mod neuron_stats;
pub mod percentile;
pub mod report;
pub mod threshold;

pub use activation_sparsity::{
    ActivationHistogram, CalibratedThreshold, teal_threshold, teal_threshold_f32,
};
#[cfg(feature = "safetensors")]
pub use activations::load_safetensors;
pub use activations::{ActivationAnalysis, ActivationTensor, analyze_activations, analyze_tensor};
pub use entropy::{EntropyMode, EntropyResult, entropy_sparsity};
pub use error::{MetricsError, Result};
#[cfg(feature = "plots")]
pub use figures::{plot_methods, plot_percentiles};
pub use gini::{GiniResult, gini_sparsity};
pub use hoyer::hoyer_sparsity;
pub use layer_dynamics::{LayerDynamics, ThresholdSource, layer_dynamics};
pub use near_zero::{NearZeroCounter, NearZeroSummary};
pub use neuron_stats::{Activation, Aggregation, NeuronStats, NeuronStatsParams};
pub use percentile::{PercentileEntry, percentile_sorted, percentile_sparsity};
pub use report::{ReportParams, SparsityReport};
pub use threshold::{
    ModelFamily, OptimalResult, ThresholdResult, ThresholdSweep, log_grid, optimal_threshold,
    threshold_sparsity, threshold_sweep,
};

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
