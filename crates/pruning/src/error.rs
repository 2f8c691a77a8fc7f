//! The crate's error type: every failure names the layer (or file / tensor) and the shape at fault.

use thiserror::Error;

/// Everything that can go wrong while collecting statistics, pruning or comparing masks.
#[derive(Debug, Error)]
pub enum PruneError {
    /// Reading or writing a file (safetensors, atomic output) failed.
    #[error(transparent)]
    Io(#[from] sparsity_io::IoError),
    /// Two arrays that must agree in shape do not.
    #[error("layer `{layer}`: shape mismatch for {what}: expected {expected:?}, got {got:?}")]
    ShapeMismatch {
        /// Layer (or file) name.
        layer: String,
        /// Which tensor or dimension disagrees.
        what: String,
        /// The shape that was required.
        expected: Vec<usize>,
        /// The shape that was given.
        got: Vec<usize>,
    },
    /// A calibration batch has neither 2 ([tokens, in]) nor 3 ([batch, seq, in]) dimensions.
    #[error(
        "layer `{layer}`: calibration batch must be [tokens, in] or [batch, seq, in], got shape {got:?}"
    )]
    BatchRank {
        /// Layer name.
        layer: String,
        /// The shape that was given.
        got: Vec<usize>,
    },
    /// The sparsity ratio is not in [0, 1).
    #[error("layer `{layer}`: sparsity ratio {ratio} is outside [0, 1)")]
    InvalidRatio {
        /// Layer name.
        layer: String,
        /// The ratio given.
        ratio: f64,
    },
    /// N:M pattern with N >= M or M = 0.
    #[error("layer `{layer}`: invalid N:M pattern {n}:{m} (need 0 < N < M)")]
    InvalidNm {
        /// Layer name.
        layer: String,
        /// Pruned entries per group.
        n: usize,
        /// Group size.
        m: usize,
    },
    /// N:M pattern whose group size does not divide the in-features.
    #[error(
        "layer `{layer}` with weight shape {shape:?}: in-features {in_features} not divisible by M = {m}"
    )]
    NmNotDivisible {
        /// Layer name.
        layer: String,
        /// Weight shape [out, in].
        shape: Vec<usize>,
        /// Number of input features.
        in_features: usize,
        /// Group size.
        m: usize,
    },
    /// Whole-model pruning: the model failed (forward pass, a missing site, reading a weight).
    #[error("model: {what}: {reason}")]
    Model {
        /// What was being done (calibration forward, held-out perplexity, a layer name, ...).
        what: String,
        /// The model crate's message.
        reason: String,
    },
    /// A method parameter is out of range (blocksize 0, negative damping, ...).
    #[error("layer `{layer}`: invalid option {option} = {value}: {reason}")]
    InvalidOption {
        /// Layer name.
        layer: String,
        /// Option name.
        option: String,
        /// The value given, printed.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// A weight or activation is NaN or infinite.
    #[error("layer `{layer}`: non-finite value in {what} (shape {shape:?}) at index {index:?}")]
    NonFinite {
        /// Layer name.
        layer: String,
        /// Which tensor.
        what: String,
        /// Its shape.
        shape: Vec<usize>,
        /// The first offending index.
        index: Vec<usize>,
    },
    /// The method needs calibration statistics that were not collected.
    #[error(
        "layer `{layer}`: method {method} needs {what}, which were not provided (collect calibration batches first)"
    )]
    MissingStats {
        /// Layer name.
        layer: String,
        /// Method name.
        method: String,
        /// Which statistics.
        what: String,
    },
    /// SparseGPT's damped Hessian stayed non-positive-definite after every retry.
    #[error(
        "layer `{layer}` (Hessian {n}x{n}): not positive definite even after {retries} retries with 10x damping (last percdamp {last_percdamp})"
    )]
    NotPositiveDefinite {
        /// Layer name.
        layer: String,
        /// Hessian size (in-features).
        n: usize,
        /// Number of retries made.
        retries: usize,
        /// The last relative damping tried.
        last_percdamp: f64,
    },
    /// A tensor is missing from a file.
    #[error("{file}: tensor `{tensor}` not found (available: {available})")]
    MissingTensor {
        /// File path.
        file: String,
        /// Tensor name.
        tensor: String,
        /// Names present in the file.
        available: String,
    },
    /// A tensor has an unsupported dtype or rank.
    #[error("{file}: tensor `{tensor}` has unsupported {what}")]
    UnsupportedTensor {
        /// File path.
        file: String,
        /// Tensor name.
        tensor: String,
        /// What is unsupported (dtype / rank), with the value.
        what: String,
    },
    /// Reading or parsing a file failed.
    #[error("{file}: {reason}")]
    File {
        /// File path.
        file: String,
        /// The underlying error, printed.
        reason: String,
    },
    /// Writing an output failed.
    #[error("writing {file}: {reason}")]
    Write {
        /// File path.
        file: String,
        /// The underlying error, printed.
        reason: String,
    },
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, PruneError>;

/// Returns the first non-finite entry of `values` (laid out in standard order with `shape`)
/// as a [`PruneError::NonFinite`].
pub(crate) fn check_finite<'a, I>(layer: &str, what: &str, shape: &[usize], values: I) -> Result<()>
where
    I: IntoIterator<Item = &'a f32>,
{
    if let Some(flat) = values.into_iter().position(|v| !v.is_finite()) {
        let mut index = vec![0; shape.len()];
        let mut rest = flat;
        for (d, &len) in shape.iter().enumerate().rev() {
            if len > 0 {
                index[d] = rest % len;
                rest /= len;
            }
        }
        return Err(PruneError::NonFinite {
            layer: layer.to_string(),
            what: what.to_string(),
            shape: shape.to_vec(),
            index,
        });
    }
    Ok(())
}
