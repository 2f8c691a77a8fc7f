//! Reading a 2-D tensor from a safetensors file as `f32` (through `sparsity-io`).

use std::path::Path;

use ndarray::Array2;
use sparsity_io::{IoError, SafetensorsFile};

use crate::error::{ClusterError, Result};

/// Loads tensor `name` from the safetensors file `path` as a dense `[rows, cols]` `f32`
/// matrix. Accepted dtypes: every float, integer and bool dtype (`sparsity_io::decode_f32`);
/// the tensor must be 2-D.
pub fn load_matrix(path: &Path, name: &str) -> Result<Array2<f32>> {
    let to_err = |e: IoError| match e {
        IoError::Io { path, source } => ClusterError::Io { path, source },
        other => ClusterError::Safetensors {
            path: path.to_path_buf(),
            message: other.to_string(),
        },
    };
    SafetensorsFile::open(path)
        .and_then(|f| f.array2_f32(name))
        .map_err(to_err)
}
