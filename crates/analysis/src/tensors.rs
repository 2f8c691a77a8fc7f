//! Conversions between burn tensors and ndarray arrays for the analysis stages.

use burn::tensor::{Tensor, TensorData};
use ndarray::{Array2, Array3, Array4};

use sparsity_models::error::{ModelError, Result};
use sparsity_models::lm::ForwardOutput;
use sparsity_models::sites::SiteTensor;

/// A captured rank-3 site as [batch, seq, width].
pub(crate) fn site3(out: &ForwardOutput, name: &str) -> Result<Array3<f32>> {
    let t = out.sites.get(name).ok_or_else(|| {
        ModelError::Invalid(format!(
            "site `{name}` was not recorded by the forward pass"
        ))
    })?;
    let dims = t.dims();
    if dims.len() != 3 {
        return Err(ModelError::Invalid(format!(
            "site `{name}` has shape {dims:?}, expected rank 3"
        )));
    }
    Array3::from_shape_vec((dims[0], dims[1], dims[2]), t.to_vec()?)
        .map_err(|e| ModelError::Invalid(format!("site `{name}`: {e}")))
}

/// A captured rank-4 site.
pub(crate) fn site4(out: &ForwardOutput, name: &str) -> Result<Array4<f32>> {
    let t = out.sites.get(name).ok_or_else(|| {
        ModelError::Invalid(format!(
            "site `{name}` was not recorded by the forward pass"
        ))
    })?;
    let dims = t.dims();
    if dims.len() != 4 {
        return Err(ModelError::Invalid(format!(
            "site `{name}` has shape {dims:?}, expected rank 4"
        )));
    }
    Array4::from_shape_vec((dims[0], dims[1], dims[2], dims[3]), t.to_vec()?)
        .map_err(|e| ModelError::Invalid(format!("site `{name}`: {e}")))
}

/// A rank-3 tensor as an array.
pub(crate) fn tensor3(t: &Tensor<3>) -> Result<Array3<f32>> {
    let [a, b, c] = t.dims();
    let v = sparsity_models::util::tensor_to_vec(t)?;
    Array3::from_shape_vec((a, b, c), v).map_err(|e| ModelError::Invalid(e.to_string()))
}

/// A rank-2 tensor as an array.
pub(crate) fn tensor2(t: &Tensor<2>) -> Result<Array2<f32>> {
    let [a, b] = t.dims();
    let v = sparsity_models::util::tensor_to_vec(t)?;
    Array2::from_shape_vec((a, b), v).map_err(|e| ModelError::Invalid(e.to_string()))
}

/// An array as a rank-3 site tensor on `device`.
pub(crate) fn to_site3(a: &Array3<f32>, device: &burn::tensor::Device) -> SiteTensor {
    let (x, y, z) = a.dim();
    let v: Vec<f32> = a.iter().copied().collect();
    SiteTensor::Rank3(Tensor::from_data(TensorData::new(v, [x, y, z]), device))
}

/// log-softmax of one logit row, in f64.
pub(crate) fn log_softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = row
        .iter()
        .map(|&v| (v as f64 - max).exp())
        .sum::<f64>()
        .ln()
        + max;
    row.iter().map(|&v| v as f64 - lse).collect()
}

/// KL(P ‖ Q) from log-probabilities (natural log), computed stably.
pub(crate) fn kl_from_logp(logp: &[f64], logq: &[f64]) -> f64 {
    logp.iter()
        .zip(logq)
        .map(|(&lp, &lq)| {
            if lp == f64::NEG_INFINITY {
                0.0
            } else {
                lp.exp() * (lp - lq)
            }
        })
        .sum::<f64>()
        .max(0.0)
}

/// The arg-max token of batch element 0 at position `len − 1` of logits [batch, seq, vocab] (first on ties).
pub(crate) fn last_top1(logits: &Array3<f32>, len: usize) -> usize {
    logits
        .slice(ndarray::s![0, len - 1, ..])
        .iter()
        .enumerate()
        .fold((0usize, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
            if v > bv { (i, v) } else { (bi, bv) }
        })
        .0
}
