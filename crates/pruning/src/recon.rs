//! Relative reconstruction error of a pruned layer over calibration inputs:
//! ‖W Xᵀ − Wₚ Xᵀ‖²_F / ‖W Xᵀ‖²_F, accumulated in f64 over streamed batches.

use ndarray::{Array2, ArrayView2, ArrayViewD, linalg::general_mat_mul};

use crate::calibration::flatten_batch;
use crate::error::{PruneError, Result};

/// Streams calibration batches and accumulates the two squared norms.
#[derive(Debug, Clone)]
pub struct ReconError {
    layer: String,
    /// [out, in] W in f64.
    dense: Array2<f64>,
    /// [out, in] W − Wₚ in f64.
    diff: Array2<f64>,
    num: f64,
    den: f64,
}

impl ReconError {
    /// Accumulator for `dense` and `pruned`, both [out, in].
    pub fn new(layer: &str, dense: ArrayView2<f32>, pruned: ArrayView2<f32>) -> Result<Self> {
        if dense.dim() != pruned.dim() {
            return Err(PruneError::ShapeMismatch {
                layer: layer.to_string(),
                what: "pruned weight vs dense weight".into(),
                expected: dense.shape().to_vec(),
                got: pruned.shape().to_vec(),
            });
        }
        let d = dense.mapv(|v| v as f64);
        let p = pruned.mapv(|v| v as f64);
        Ok(Self {
            layer: layer.to_string(),
            diff: &d - &p,
            dense: d,
            num: 0.0,
            den: 0.0,
        })
    }

    /// Adds a batch of inputs, [tokens, in] or [batch, seq, in].
    pub fn add_batch(&mut self, x: ArrayViewD<f32>) -> Result<()> {
        let b = flatten_batch(&self.layer, x, self.dense.ncols())?;
        let x64 = b.x.mapv(|v| v as f64);
        let mut y = Array2::<f64>::zeros((x64.nrows(), self.dense.nrows()));
        general_mat_mul(1.0, &x64, &self.diff.t(), 0.0, &mut y);
        self.num += y.iter().map(|v| v * v).sum::<f64>();
        general_mat_mul(1.0, &x64, &self.dense.t(), 0.0, &mut y);
        self.den += y.iter().map(|v| v * v).sum::<f64>();
        Ok(())
    }

    /// The relative error (0 when ‖W Xᵀ‖ = 0 and nothing changed; +∞ if only the pruned output is non-zero).
    pub fn value(&self) -> f64 {
        if self.den > 0.0 {
            self.num / self.den
        } else if self.num == 0.0 {
            0.0
        } else {
            f64::INFINITY
        }
    }
}

/// ‖W Xᵀ − Wₚ Xᵀ‖²_F / ‖W Xᵀ‖²_F for `x` [tokens, in], in f64.
pub fn relative_reconstruction_error(
    layer: &str,
    dense: ArrayView2<f32>,
    pruned: ArrayView2<f32>,
    x: ArrayView2<f32>,
) -> Result<f64> {
    let mut acc = ReconError::new(layer, dense, pruned)?;
    acc.add_batch(x.into_dyn())?;
    Ok(acc.value())
}
