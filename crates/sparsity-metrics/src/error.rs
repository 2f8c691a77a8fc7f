//! The crate's error type: every failure names the input, shape or option at fault.

use thiserror::Error;

/// Everything that can go wrong in `sparsity-metrics`. No function of this crate
/// substitutes a made-up value for a failed computation.
#[derive(Debug, Error)]
pub enum MetricsError {
    /// An input had no elements (no neurons, no tokens, no samples).
    #[error("empty input: {what}")]
    Empty {
        /// What was empty, e.g. `"per-neuron values"` or `"batch [0, 768]"`.
        what: String,
    },
    /// A NaN or infinite value was found.
    #[error("non-finite value {value} in {what} at position {position:?}")]
    NonFinite {
        /// The input that held it.
        what: String,
        /// Index of the first offending element (row-major, one entry per axis).
        position: Vec<usize>,
        /// The offending value.
        value: f64,
    },
    /// A percentile outside `[0, 100]` (or not finite).
    #[error("percentile {0} is outside [0, 100]")]
    PercentileOutOfRange(f64),
    /// A target sparsity outside `[0, 1]` (or not finite).
    #[error("target {name} = {value} is outside [0, 1]")]
    TargetOutOfRange {
        /// The option's name, e.g. `"target"`.
        name: String,
        /// The rejected value.
        value: f64,
    },
    /// A numeric option had an invalid value (negative threshold, zero bins, ...).
    #[error("invalid option {name} = {value}: {reason}")]
    InvalidOption {
        /// The option's name.
        name: String,
        /// The rejected value, as text.
        value: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A batch did not have the neuron count of the earlier batches (or of the stats).
    #[error("shape mismatch in {what}: expected {expected} neurons, got shape {got:?}")]
    ShapeMismatch {
        /// Which input.
        what: String,
        /// The neuron count fixed by the first batch or by the parameters.
        expected: usize,
        /// The shape that was given.
        got: Vec<usize>,
    },
    /// A measure is undefined for this input (e.g. Hoyer sparsity of fewer than 2 values).
    #[error("{measure} is undefined for {what}: {reason}")]
    Undefined {
        /// The measure.
        measure: String,
        /// The input.
        what: String,
        /// Why.
        reason: String,
    },
    /// Reading a safetensors file failed or the tensor is unusable.
    #[error("safetensors {path}: {reason}")]
    Safetensors {
        /// The file.
        path: String,
        /// What went wrong (missing tensor, unsupported dtype, rank, ...).
        reason: String,
    },
    /// An I/O error with the path that caused it.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Drawing a plot failed.
    #[error("plot {path}: {reason}")]
    Plot {
        /// The output file.
        path: String,
        /// The backend's message.
        reason: String,
    },
    /// Setting up the rayon thread pool failed.
    #[error("thread pool: {0}")]
    ThreadPool(String),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, MetricsError>;

/// Checks that a target fraction lies in `[0, 1]`.
pub(crate) fn check_target(name: &str, value: f64) -> Result<f64> {
    if value.is_finite() && (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(MetricsError::TargetOutOfRange {
            name: name.to_string(),
            value,
        })
    }
}

/// Checks a per-neuron value vector: non-empty and finite.
pub(crate) fn check_values(what: &str, v: ndarray::ArrayView1<f64>) -> Result<()> {
    if v.is_empty() {
        return Err(MetricsError::Empty {
            what: what.to_string(),
        });
    }
    if let Some((i, &x)) = v.iter().enumerate().find(|(_, x)| !x.is_finite()) {
        return Err(MetricsError::NonFinite {
            what: what.to_string(),
            position: vec![i],
            value: x,
        });
    }
    Ok(())
}
