//! The crate's error type: every failure names the tensor, shape or option at fault.

use thiserror::Error;

/// Errors of the sparse GEMV kernels, their calibration and their benchmarks.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum KernelError {
    /// A CubeCL device / runtime failure (no adapter, lost device, failed read-back, ...).
    #[error("CubeCL device: {0}")]
    Device(String),
    /// Two operands disagree on a dimension.
    #[error("shape mismatch: {tensor} has {what} = {got}, expected {expected} ({context})")]
    ShapeMismatch {
        /// The operand at fault (`"x"`, `"y"`, `"weight_t"`, ...).
        tensor: &'static str,
        /// Which dimension (`"length"`, `"rows"`, `"batch"`, ...).
        what: &'static str,
        /// The size found.
        got: usize,
        /// The size required by the other operands.
        expected: usize,
        /// The shapes of the other operands, in words.
        context: String,
    },
    /// An operand is not stored contiguously in standard (row-major) order.
    #[error(
        "{tensor} with shape {shape:?} is not contiguous in row-major order; call `.as_standard_layout()` first"
    )]
    NotContiguous {
        /// The operand at fault.
        tensor: &'static str,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// The threshold τ must be finite and non-negative.
    #[error("invalid threshold tau = {tau}: it must be finite and >= 0 (0 skips exact zeros only)")]
    InvalidThreshold {
        /// The value passed.
        tau: f32,
    },
    /// The batched kernel handles small decode batches only.
    #[error(
        "batch of {batch} rows in {tensor} exceeds the small-batch limit of {max}; use a dense matmul for prefill"
    )]
    BatchTooLarge {
        /// The operand at fault.
        tensor: &'static str,
        /// Rows found.
        batch: usize,
        /// The limit ([`crate::MAX_BATCH`]).
        max: usize,
    },
    /// A dimension is zero.
    #[error("{tensor} has an empty dimension (shape {shape:?})")]
    EmptyTensor {
        /// The operand at fault.
        tensor: &'static str,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// A parameter is outside its valid range.
    #[error("invalid option {option} = {value}: {reason}")]
    InvalidOption {
        /// The option name as the user spells it.
        option: &'static str,
        /// The offending value, formatted.
        value: String,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// The threshold calibration rejected its input (the calibration's message).
    #[error("threshold calibration: {0}")]
    Calibration(String),
    /// A calibration sample contains NaN or infinity.
    #[error("calibration activations contain a non-finite value at flat index {index}")]
    NonFiniteActivation {
        /// Position of the first non-finite value.
        index: usize,
    },
    /// A GPU (CubeCL) runtime failed.
    #[error("CubeCL runtime error in {stage}: {message}")]
    Gpu {
        /// What was being done (`"launch"`, `"read back"`, ...).
        stage: &'static str,
        /// The runtime's message.
        message: String,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, KernelError>;
