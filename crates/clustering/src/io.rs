//! Reading a 2-D tensor from a safetensors file as `f32`.

use std::path::Path;

use ndarray::Array2;
use safetensors::{Dtype, SafeTensors};

use crate::error::{ClusterError, Result};

/// Loads tensor `name` from the safetensors file `path` as a dense `[rows, cols]` `f32`
/// matrix. Accepted dtypes: F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL; the tensor must be 2-D.
pub fn load_matrix(path: &Path, name: &str) -> Result<Array2<f32>> {
    let bytes = std::fs::read(path).map_err(|source| ClusterError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let err = |message: String| ClusterError::Safetensors {
        path: path.to_path_buf(),
        message,
    };
    let st = SafeTensors::deserialize(&bytes).map_err(|e| err(e.to_string()))?;
    let view = st.tensor(name).map_err(|_| {
        let mut names: Vec<String> = st.names().into_iter().map(|s| s.to_string()).collect();
        names.sort();
        let shown = names
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        err(format!(
            "tensor `{name}` not found (available: {shown}{})",
            if names.len() > 20 { ", ..." } else { "" }
        ))
    })?;
    let shape = view.shape().to_vec();
    if shape.len() != 2 {
        return Err(err(format!(
            "tensor `{name}` has shape {shape:?}; expected a 2-D matrix"
        )));
    }
    let data = view.data();
    let values: Vec<f32> = match view.dtype() {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::I64 => data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        Dtype::I32 => data
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32)
            .collect(),
        Dtype::I16 => data
            .chunks_exact(2)
            .map(|c| f32::from(i16::from_le_bytes([c[0], c[1]])))
            .collect(),
        Dtype::I8 => data.iter().map(|&b| f32::from(b as i8)).collect(),
        Dtype::U8 | Dtype::BOOL => data.iter().map(|&b| f32::from(b)).collect(),
        other => {
            return Err(err(format!(
                "tensor `{name}` has unsupported dtype {other:?}"
            )));
        }
    };
    Array2::from_shape_vec((shape[0], shape[1]), values)
        .map_err(|e| err(format!("tensor `{name}` with shape {shape:?}: {e}")))
}
