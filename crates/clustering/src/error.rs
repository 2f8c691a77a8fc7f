//! The crate's error type: every failure names the tensor, shape, index or option at fault.

use std::path::PathBuf;

/// Errors of `sparsity-clustering`.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A binary matrix needs at least one feature and one bit.
    #[error(
        "empty binary matrix: {n_features} features x {n_bits} bits (need at least one of each)"
    )]
    Empty {
        /// Number of features requested.
        n_features: usize,
        /// Number of bits per feature requested.
        n_bits: usize,
    },
    /// The dense input holds NaN or ±inf, which has no defined zero pattern.
    #[error("non-finite value {value} at [{row}, {col}] of the {what} matrix")]
    NonFinite {
        /// Which input ("weight", "activation").
        what: &'static str,
        /// Row of the offending entry.
        row: usize,
        /// Column of the offending entry.
        col: usize,
        /// The value itself.
        value: f32,
    },
    /// A binarisation rule string could not be parsed.
    #[error(
        "cannot parse binarisation rule `{0}` (expected `nonzero`, `positive` or `abs-gt:T` with T a finite number >= 0)"
    )]
    ParseBinarize(String),
    /// A feature index is outside the matrix.
    #[error("{what} index {index} is out of range for {n_features} features")]
    FeatureOutOfRange {
        /// What the index was for ("reference", "subset", ...).
        what: &'static str,
        /// The index given.
        index: usize,
        /// Number of features in the matrix.
        n_features: usize,
    },
    /// A per-feature array has the wrong length.
    #[error("{what} has length {got}, expected {expected} (one per feature)")]
    LengthMismatch {
        /// Which argument.
        what: &'static str,
        /// Its length.
        got: usize,
        /// The length it should have.
        expected: usize,
    },
    /// Two binary matrices that must share a bit length do not.
    #[error("bit-length mismatch: {what} has {got} bits, expected {expected}")]
    BitsMismatch {
        /// Which argument.
        what: &'static str,
        /// Its bit length.
        got: usize,
        /// Expected bit length.
        expected: usize,
    },
    /// A parameter is outside its valid range.
    #[error("invalid parameter `{name}` = {value}: {reason}")]
    InvalidParam {
        /// Parameter name as spelled in the params struct / CLI.
        name: &'static str,
        /// The value given, formatted.
        value: String,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// More clusters than points.
    #[error("k = {k} clusters requested but only {n_features} features to cluster")]
    TooManyClusters {
        /// Requested number of clusters.
        k: usize,
        /// Number of features.
        n_features: usize,
    },
    /// linfa's KMeans returned an error.
    #[error("linfa k-means (k = {k}) failed: {message}")]
    Linfa {
        /// Requested number of clusters.
        k: usize,
        /// linfa's message.
        message: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A safetensors file could not be parsed, or the tensor is unusable.
    #[error("safetensors file {path}: {message}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What went wrong (names the tensor, shape or dtype).
        message: String,
    },
    /// Drawing a plot failed.
    #[error("plot {path}: {message}")]
    Plot {
        /// The image file.
        path: PathBuf,
        /// plotters' message.
        message: String,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, ClusterError>;
