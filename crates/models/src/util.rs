//! Small tensor helpers shared by the models.

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};
use rand::Rng;
use rand_distr::{Distribution, Normal};

use crate::error::{ModelError, Result};

/// The default CPU device: burn's `flex` backend (pure Rust, SIMD, `gemm`-crate matrix products
/// on the rayon pool), f32.
///
/// burn 0.22 deprecates its `ndarray` backend in favour of `flex`; `ndarray_device` (feature `ndarray`) is kept for
/// comparison (benchmarks, cargo feature `ndarray`) and gives the same numbers within float
/// rounding.
pub fn cpu_device() -> Device {
    Device::flex()
}

/// burn's deprecated `ndarray` CPU backend (matrixmultiply GEMM), for comparisons
/// (cargo feature `ndarray`).
#[cfg(feature = "ndarray")]
#[allow(deprecated)]
pub fn ndarray_device() -> Device {
    Device::ndarray()
}

/// A parameter from row-major f32 values.
pub(crate) fn param<const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
    device: &Device,
) -> Param<Tensor<D>> {
    Param::from_tensor(Tensor::<D>::from_data(
        TensorData::new(values, shape),
        device,
    ))
}

/// N(0, std²) values from `rng`.
pub(crate) fn normal_values(rng: &mut impl Rng, n: usize, std: f32) -> Vec<f32> {
    match Normal::new(0.0f32, std) {
        Ok(d) => (0..n).map(|_| d.sample(rng)).collect(),
        Err(_) => vec![0.0; n],
    }
}

/// A parameter filled with N(0, std²) values.
pub(crate) fn normal_param<const D: usize>(
    rng: &mut impl Rng,
    shape: [usize; D],
    std: f32,
    device: &Device,
) -> Param<Tensor<D>> {
    let n = shape.iter().product();
    param(normal_values(rng, n, std), shape, device)
}

/// A parameter filled with one value.
pub(crate) fn const_param<const D: usize>(
    shape: [usize; D],
    value: f32,
    device: &Device,
) -> Param<Tensor<D>> {
    let n = shape.iter().product();
    param(vec![value; n], shape, device)
}

/// Logits x·headᵀ for hidden states x [batch, seq, hidden] and an output table head
/// [vocab, hidden] (the tied embedding or `lm_head.weight`) → [batch, seq, vocab].
///
/// A 2-D product against the transposed view: the backend's strided GEMM reads the table in
/// place, where the 3-D `linear` materialised its transpose on every call.
pub(crate) fn lm_head(x: Tensor<3>, head: Tensor<2>) -> Tensor<3> {
    let [b, s, d] = x.dims();
    let vocab = head.dims()[0];
    x.reshape([b * s, d])
        .matmul(head.transpose())
        .reshape([b, s, vocab])
}

/// Row-major f32 values of a tensor.
pub fn tensor_to_vec<const D: usize>(t: &Tensor<D>) -> Result<Vec<f32>> {
    t.to_data()
        .try_into_vec_as::<f32>()
        .map_err(|e| ModelError::Backend(format!("{e:?}")))
}

/// LayerNorm over the last axis: (x − mean) / √(biased var + eps) · weight + bias.
pub(crate) fn layer_norm<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<1>,
    bias: Tensor<1>,
    eps: f64,
) -> Tensor<D> {
    if !x.is_autodiff() {
        // the backend's fused kernel (one pass per row)
        return burn::tensor::module::layer_norm(x, weight, Some(bias), eps);
    }
    let (var, mean) = x.clone().var_mean_bias(D - 1);
    let y = (x - mean) / var.add_scalar(eps).sqrt();
    y * weight.unsqueeze() + bias.unsqueeze()
}

/// RMSNorm over the last axis: x / √(mean(x²) + eps) · weight.
pub(crate) fn rms_norm<const D: usize>(x: Tensor<D>, weight: Tensor<1>, eps: f64) -> Tensor<D> {
    let ms = x.clone().square().mean_dim(D - 1);
    x / ms.add_scalar(eps).sqrt() * weight.unsqueeze()
}

/// torch's softplus (β = 1, threshold 20): x above 20, log(1 + eˣ) otherwise.
pub(crate) fn softplus<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let above = x.clone().greater_elem(20.0);
    let soft = x.clone().clamp_max(20.0).exp().log1p();
    soft.mask_where(above, x)
}
