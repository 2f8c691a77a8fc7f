//! Activation tensors: loading from safetensors and the full two-pass analysis
//! (streaming statistics, variance report, activation-level measures).
//!
//! A tensor is `[samples, neurons]` (one row per sample, used as is) or
//! `[samples, seq, neurons]` (aggregated by [`Aggregation`]).

#[cfg(feature = "safetensors")]
use std::path::Path;

use ndarray::{ArrayD, ArrayView2, ArrayView3, ArrayViewD, Ix2, Ix3};

use crate::error::{MetricsError, Result};
use crate::near_zero::NearZeroCounter;
use crate::neuron_stats::{Activation, Aggregation, NeuronStats, NeuronStatsParams};
use crate::report::{ActivationMeasures, ReportParams, SparsityReport};

/// An activation tensor as loaded (f32 and f64 kept; f16/bf16 widened to f32).
#[derive(Debug, Clone, PartialEq)]
pub enum ActivationTensor {
    /// f32 (also f16 and bf16, widened exactly).
    F32(ArrayD<f32>),
    /// f64.
    F64(ArrayD<f64>),
}

impl ActivationTensor {
    /// The tensor's shape.
    pub fn shape(&self) -> &[usize] {
        match self {
            Self::F32(a) => a.shape(),
            Self::F64(a) => a.shape(),
        }
    }
}

/// Loads tensor `name` from a safetensors file: F64 stays f64; F32, F16 and BF16 become f32
/// (exactly); any other dtype is an error naming the tensor and its dtype (feature
/// `safetensors`).
#[cfg(feature = "safetensors")]
pub fn load_safetensors(path: &Path, name: &str) -> Result<ActivationTensor> {
    use sparsity_io::tensors::{Dtype, SafetensorsFile};
    let st_err = |reason: String| MetricsError::Safetensors {
        path: path.display().to_string(),
        reason,
    };
    let file = SafetensorsFile::open(path).map_err(|e| match e {
        sparsity_io::IoError::Io { source, .. } => MetricsError::Io {
            path: path.display().to_string(),
            source,
        },
        other => st_err(other.to_string()),
    })?;
    let io = |e: sparsity_io::IoError| st_err(e.to_string());
    Ok(match file.meta(name).map_err(io)?.dtype {
        Dtype::F64 => ActivationTensor::F64(file.array_f64(name).map_err(io)?),
        Dtype::F32 | Dtype::F16 | Dtype::BF16 => {
            ActivationTensor::F32(file.array_f32(name).map_err(io)?)
        }
        other => {
            return Err(st_err(format!(
                "tensor {name:?} has dtype {other:?}; expected F32, F64, F16 or BF16"
            )));
        }
    })
}

/// The result of [`analyze_activations`]: the report and the streaming statistics behind it.
#[derive(Debug, Clone)]
pub struct ActivationAnalysis {
    /// The comprehensive report over the per-neuron variances, with activation measures.
    pub report: SparsityReport,
    /// The per-neuron statistics.
    pub stats: NeuronStats,
}

enum View<'a, A> {
    Samples(ArrayView2<'a, A>),
    Sequences(ArrayView3<'a, A>),
}

fn as_view<'a, A>(a: ArrayViewD<'a, A>) -> Result<View<'a, A>> {
    let shape = a.shape().to_vec();
    match shape.len() {
        2 => a
            .into_dimensionality::<Ix2>()
            .map(View::Samples)
            .map_err(|e| MetricsError::ShapeMismatch {
                what: format!("activations ({e})"),
                expected: 0,
                got: shape,
            }),
        3 => a
            .into_dimensionality::<Ix3>()
            .map(View::Sequences)
            .map_err(|e| MetricsError::ShapeMismatch {
                what: format!("activations ({e})"),
                expected: 0,
                got: shape,
            }),
        _ => Err(MetricsError::InvalidOption {
            name: "activations shape".into(),
            value: format!("{shape:?}"),
            reason: "expected [samples, neurons] or [samples, seq, neurons]".into(),
        }),
    }
}

/// Full analysis of an in-memory activation tensor (`[samples, neurons]` or
/// `[samples, seq, neurons]`): streaming statistics with `aggregation`, the comprehensive
/// report over the per-neuron variances, then a second pass for the near-zero fractions.
pub fn analyze_activations<A: Activation>(
    acts: ArrayViewD<'_, A>,
    aggregation: Aggregation,
    params: &ReportParams,
) -> Result<ActivationAnalysis> {
    let params = params.clone().validate()?;
    let view = as_view(acts)?;
    let neurons = match &view {
        View::Samples(v) => v.ncols(),
        View::Sequences(v) => v.dim().2,
    };
    let t = params.traditional_threshold();
    let mut stats = NeuronStatsParams::new(neurons)
        .aggregation(aggregation)
        .magnitude_threshold(t)
        .histogram(true)
        .build()?;
    match &view {
        View::Samples(v) => stats.update(v.view())?,
        View::Sequences(v) => stats.update_sequences(v.view())?,
    }
    let variance = stats.variance()?;
    let mut report = SparsityReport::from_values(variance.view(), &params)?;
    let mean_abs = stats.mean_abs()?;
    let mut near = NearZeroCounter::new(mean_abs.view(), params.near_zero_epsilon)?;
    match &view {
        View::Samples(v) => near.update(v.view())?,
        View::Sequences(v) => {
            let (b, s, n) = v.dim();
            match v.view().into_shape_with_order((b * s, n)) {
                Ok(rows) => near.update(rows)?,
                Err(_) => {
                    for seq in v.outer_iter() {
                        near.update(seq)?;
                    }
                }
            }
        }
    }
    let tokens = stats.token_count();
    let total = tokens as f64 * neurons as f64;
    let zero_fraction = stats.zero_fraction()?.sum() / neurons as f64;
    let below_threshold_fraction = stats.below_threshold_fraction()?.sum() / neurons as f64;
    let calibrated = match stats.histogram() {
        Some(h) => params
            .activation_targets
            .iter()
            .map(|&target| h.calibrate(target))
            .collect::<Result<Vec<_>>>()?,
        None => Vec::new(),
    };
    report.activation = Some(ActivationMeasures {
        activations: total as u64,
        zero_fraction,
        magnitude_threshold: t,
        below_threshold_fraction,
        calibrated,
        near_zero: near.summary()?,
    });
    report.config.values = "variance".into();
    report.config.aggregation = Some(aggregation);
    report.config.samples = Some(stats.sample_count());
    report.config.tokens = Some(tokens);
    Ok(ActivationAnalysis { report, stats })
}

/// [`analyze_activations`] on a loaded tensor of either precision.
pub fn analyze_tensor(
    tensor: &ActivationTensor,
    aggregation: Aggregation,
    params: &ReportParams,
) -> Result<ActivationAnalysis> {
    match tensor {
        ActivationTensor::F32(a) => analyze_activations(a.view(), aggregation, params),
        ActivationTensor::F64(a) => analyze_activations(a.view(), aggregation, params),
    }
}
