//! The crate's error type.

use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, IoError>;

/// Why a file could not be read or written, or a bit matrix could not be built.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// Reading, creating or renaming a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid safetensors file (header, offsets or length).
    #[error("{}: not a valid safetensors file: {reason}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The file has no tensor of that name.
    #[error("{}: no tensor `{tensor}` (tensors in file: {available})", path.display())]
    MissingTensor {
        /// The file.
        path: PathBuf,
        /// The requested tensor.
        tensor: String,
        /// The file's tensor names, sorted (the first 20).
        available: String,
    },
    /// The tensor's dtype cannot be converted to the requested element type.
    #[error("{}: tensor `{tensor}` has dtype {dtype}, which cannot be read as {target}", path.display())]
    UnsupportedDtype {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// The tensor's dtype.
        dtype: String,
        /// The element type asked for.
        target: &'static str,
    },
    /// The tensor's shape is not the one asked for.
    #[error("{}: tensor `{tensor}` has shape {shape:?}, expected {expected}", path.display())]
    WrongShape {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// The shape in the file.
        shape: Vec<usize>,
        /// What was expected.
        expected: String,
    },
    /// A tensor could not be serialised.
    #[error("{}: cannot write tensor `{tensor}`: {reason}", path.display())]
    Serialize {
        /// The target file.
        path: PathBuf,
        /// The tensor (empty for the file as a whole).
        tensor: String,
        /// What failed.
        reason: String,
    },
    /// A bit matrix's dimensions or words are inconsistent.
    #[error("bit matrix: {reason}")]
    Bits {
        /// What is wrong.
        reason: String,
    },
}

impl IoError {
    /// The underlying [`std::io::Error`] of an [`IoError::Io`] (for callers whose own error
    /// type already names the path); any other variant becomes an `io::Error` carrying it.
    pub fn into_io(self) -> std::io::Error {
        match self {
            Self::Io { source, .. } => source,
            other => std::io::Error::other(other),
        }
    }

    /// An [`IoError::Io`] for `path`.
    pub fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
