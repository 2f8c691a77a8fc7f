//! Layers shared by the families: a dense layer with an optional bias and a LayerNorm.

use burn::module::{Module, Param};
use burn::tensor::module::linear;
use burn::tensor::{Device, Tensor};
use rand_chacha::ChaCha8Rng;

use crate::util::{const_param, layer_norm, normal_param};

/// A dense layer y = x·W (+ b) with W stored [in, out] (an `nn.Linear` held transposed).
#[derive(Module, Debug)]
pub struct Dense {
    /// [in, out]
    pub weight: Param<Tensor<2>>,
    /// \[out\]
    pub bias: Option<Param<Tensor<1>>>,
}

impl Dense {
    /// N(0, std²) weights and zero biases (when `bias`), seeded by `rng`.
    pub(crate) fn init(
        rng: &mut ChaCha8Rng,
        d_in: usize,
        d_out: usize,
        std: f32,
        bias: bool,
        device: &Device,
    ) -> Self {
        Self {
            weight: normal_param(rng, [d_in, d_out], std, device),
            bias: bias.then(|| const_param([d_out], 0.0, device)),
        }
    }

    /// Input features.
    pub fn in_features(&self) -> usize {
        self.weight.dims()[0]
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.weight.dims()[1]
    }

    /// [.., in] → [.., out] (see `dense`).
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        dense(x, self.weight.val(), self.bias.as_ref().map(|b| b.val()))
    }
}

/// x·W (+ b) for x [.., in] and W [in, out], as one `[rows, in] × [in, out]` product (burn's
/// `linear` keeps a batched product with the weight broadcast when each batch's rows fill its
/// tiles, which re-packs the weight once per batch).
pub(crate) fn dense<const D: usize>(
    x: Tensor<D>,
    w: Tensor<2>,
    bias: Option<Tensor<1>>,
) -> Tensor<D> {
    let dims = x.dims();
    let d_in = dims[D - 1];
    let rows = dims[..D - 1].iter().product::<usize>();
    if D < 2 || rows == 0 {
        return linear(x, w, bias);
    }
    let d_out = w.dims()[1];
    let mut y = x.reshape([rows, d_in]).matmul(w);
    if let Some(b) = bias {
        y = y + b.unsqueeze::<2>();
    }
    let mut out = dims;
    out[D - 1] = d_out;
    y.reshape(out)
}

/// A LayerNorm's parameters.
#[derive(Module, Debug)]
pub struct LayerNorm {
    /// \[width\]
    pub weight: Param<Tensor<1>>,
    /// \[width\]
    pub bias: Param<Tensor<1>>,
}

impl LayerNorm {
    /// Unit weight, zero bias.
    pub(crate) fn ones(width: usize, device: &Device) -> Self {
        Self {
            weight: const_param([width], 1.0, device),
            bias: const_param([width], 0.0, device),
        }
    }

    /// (x − mean) / √(var + eps) · weight + bias over the last axis.
    pub fn forward<const D: usize>(&self, x: Tensor<D>, eps: f64) -> Tensor<D> {
        layer_norm(x, self.weight.val(), self.bias.val(), eps)
    }
}
