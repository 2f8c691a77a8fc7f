//! Token-by-token decoding on the CPU: each family's recurrent form (GPT-2 with a key/value cache,
//! Mamba with its convolution window and SSM state) written against caller-supplied linear
//! layers, so the model core needs no kernel crate. `sparsity-decoding` supplies the layers (the
//! `sparsity-kernels` GEMV, dense or masked) and drives the decoder.

use burn::module::Param;
use burn::tensor::Tensor;

use crate::config::Activation;
use crate::error::{ModelError, Result};
use crate::util::tensor_to_vec;

/// How a weight handed to a [`LinearFactory`] is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightLayout {
    /// Wᵀ, [in, out] row-major (burn's and GPT-2 Conv1D's storage).
    InOut,
    /// W, [out, in] row-major (`nn.Linear`, embeddings used as the head).
    OutIn,
}

/// One linear layer as the decoder asks for it.
#[derive(Debug, Clone)]
pub struct LinearSpec {
    /// A name for errors, e.g. `c_fc`.
    pub name: String,
    /// The site holding its input (`None` for layers that are never masked, e.g. the head).
    pub input_site: Option<String>,
    /// The weights, laid out as `layout` says.
    pub weight: Vec<f32>,
    /// [`WeightLayout`] of `weight`.
    pub layout: WeightLayout,
    /// Input features.
    pub in_features: usize,
    /// Output features.
    pub out_features: usize,
    /// Optional bias [out].
    pub bias: Option<Vec<f32>>,
}

/// y = W·x (+ b), computed however the caller likes.
pub trait StepLinear: std::fmt::Debug + Send + Sync {
    /// Output features.
    fn out_features(&self) -> usize;
    /// Writes W·x (+ b) into `y` (`x` has the input width, `y` the output width).
    fn apply(&self, x: &[f32], y: &mut [f32]) -> Result<()>;
}

/// Builds the decoder's linear layers.
pub trait LinearFactory {
    /// The layer for `spec`.
    fn linear(&self, spec: LinearSpec) -> Result<Box<dyn StepLinear>>;
}

/// One sequence decoded one token at a time.
pub trait StepDecoder: std::fmt::Debug + Send {
    /// Clears the caches / states (a new sequence).
    fn reset(&mut self);
    /// Feeds one token and returns the next-token logits [vocab].
    fn step(&mut self, token: u32) -> Result<Vec<f32>>;
}

/// The values of a parameter.
pub fn param_values<const D: usize>(p: &Param<Tensor<D>>) -> Result<Vec<f32>> {
    tensor_to_vec(&p.val())
}

/// A [`LinearSpec`] from a burn weight stored [in, out] and an optional bias.
pub fn spec_in_out(
    name: &str,
    input_site: Option<String>,
    weight: &Param<Tensor<2>>,
    bias: Option<&Param<Tensor<1>>>,
) -> Result<LinearSpec> {
    let [i, o] = weight.val().dims();
    Ok(LinearSpec {
        name: name.to_string(),
        input_site,
        weight: param_values(weight)?,
        layout: WeightLayout::InOut,
        in_features: i,
        out_features: o,
        bias: bias.map(param_values).transpose()?,
    })
}

/// The head's [`LinearSpec`] from a [vocab, hidden] matrix (`lm_head` or tied embeddings).
pub fn spec_head(weight: &Param<Tensor<2>>) -> Result<LinearSpec> {
    let [v, h] = weight.val().dims();
    Ok(LinearSpec {
        name: "lm_head".into(),
        input_site: None,
        weight: param_values(weight)?,
        layout: WeightLayout::OutIn,
        in_features: h,
        out_features: v,
        bias: None,
    })
}

/// The error for a token outside the vocabulary at position `pos`.
pub fn check_token(token: u32, vocab: usize, pos: usize) -> Result<usize> {
    let t = token as usize;
    if t >= vocab {
        return Err(ModelError::TokenOutOfVocab {
            id: i64::from(token),
            row: 0,
            col: pos,
            vocab_size: vocab,
        });
    }
    Ok(t)
}

/// The activation applied to one value (f32; exact erf through `libm` for `gelu`).
pub fn activate(a: Activation, x: f32) -> f32 {
    let sig = |v: f32| 1.0 / (1.0 + (-v).exp());
    match a {
        Activation::GeluTanh => {
            let c = (2.0f32 / std::f32::consts::PI).sqrt();
            0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
        }
        Activation::GeluErf => {
            (0.5 * f64::from(x) * (1.0 + libm::erf(f64::from(x) / 2f64.sqrt()))) as f32
        }
        Activation::QuickGelu => x * sig(1.702 * x),
        Activation::Relu => x.max(0.0),
        Activation::Silu => x * sig(x),
        Activation::Tanh => x.tanh(),
        Activation::Sigmoid => sig(x),
        Activation::Identity => x,
    }
}

/// LayerNorm of one vector.
pub fn layer_norm(x: &[f32], w: &[f32], b: &[f32], eps: f64) -> Vec<f32> {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    let inv = 1.0 / (var + eps as f32).sqrt();
    x.iter()
        .zip(w.iter().zip(b))
        .map(|(v, (w, b))| (v - mean) * inv * w + b)
        .collect()
}

/// RMSNorm of one vector.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f64) -> Vec<f32> {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let inv = 1.0 / (ms + eps as f32).sqrt();
    x.iter().zip(w).map(|(v, w)| v * inv * w).collect()
}
