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
    /// Optional bias \[out\].
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
    /// Feeds one token and returns the next-token logits \[vocab\].
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

/// [`check_token`], then the error for position `pos` at or past `max` positions.
pub fn check_step(token: u32, vocab: usize, pos: usize, max: usize) -> Result<usize> {
    let t = check_token(token, vocab, pos)?;
    if pos >= max {
        return Err(ModelError::SequenceTooLong { seq: pos + 1, max });
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

/// One query's softmax attention over a key/value cache: `q` [heads·dh], `k` and `v` the cached
/// rows \[steps\]\[kv_heads·dh\], query head h reading key/value head h / (heads / kv_heads); only
/// the steps from `first` on are visible (a sliding window). Writes [heads·dh] into `out`.
#[allow(clippy::too_many_arguments)] // the shape of one attention step
pub fn cached_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    heads: usize,
    kv_heads: usize,
    dh: usize,
    scale: f32,
    first: usize,
    out: &mut [f32],
) {
    let kv_width = kv_heads * dh;
    let steps = k.len() / kv_width.max(1);
    let groups = heads / kv_heads.max(1);
    out.iter_mut().for_each(|o| *o = 0.0);
    let mut scores = vec![0.0f32; steps.saturating_sub(first)];
    for h in 0..heads {
        let kvh = h / groups.max(1);
        let qh = &q[h * dh..(h + 1) * dh];
        for (sc, s) in scores.iter_mut().zip(first..steps) {
            let kr = &k[s * kv_width + kvh * dh..s * kv_width + (kvh + 1) * dh];
            *sc = qh.iter().zip(kr).map(|(a, b)| a * b).sum::<f32>() * scale;
        }
        let m = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut z = 0.0f32;
        for sc in scores.iter_mut() {
            *sc = (*sc - m).exp();
            z += *sc;
        }
        let oh = &mut out[h * dh..(h + 1) * dh];
        for (p, s) in scores.iter().zip(first..steps) {
            let vr = &v[s * kv_width + kvh * dh..s * kv_width + (kvh + 1) * dh];
            let w = p / z;
            oh.iter_mut().zip(vr).for_each(|(o, v)| *o += w * v);
        }
    }
}

/// A [`LinearSpec`] from a [`crate::nn::Dense`] (weight stored [in, out]).
pub fn spec_dense(
    name: &str,
    input_site: Option<String>,
    d: &crate::nn::Dense,
) -> Result<LinearSpec> {
    spec_in_out(name, input_site, &d.weight, d.bias.as_ref())
}

/// One layer computing several layers that read the same input, their outputs side by side
/// (`q_proj | k_proj | v_proj`, `gate_proj | up_proj`): one GEMV streams all their weights, so a
/// small projection (a key/value head group: 2048 × 256 at TinyLlama's shape) runs on the whole
/// pool with the large one instead of as a call too small to split, and the input is thresholded
/// once. Every part must be [`WeightLayout::InOut`] with the same input width and site; a part
/// without a bias gets zeros where another has one. `name` names the fused layer in errors.
pub fn concat_outputs(name: &str, parts: Vec<LinearSpec>) -> Result<LinearSpec> {
    let first = parts
        .first()
        .ok_or_else(|| ModelError::Invalid(format!("{name}: no layers to concatenate")))?;
    let (n_in, site) = (first.in_features, first.input_site.clone());
    for p in &parts {
        if p.layout != WeightLayout::InOut
            || p.in_features != n_in
            || p.input_site != site
            || p.weight.len() != p.in_features * p.out_features
            || p.bias.as_ref().is_some_and(|b| b.len() != p.out_features)
        {
            return Err(ModelError::Invalid(format!(
                "{name}: `{}` ({} → {}, site {:?}) cannot share an input with `{}` ({n_in} inputs, \
                 site {site:?})",
                p.name, p.in_features, p.out_features, p.input_site, first.name
            )));
        }
    }
    let n_out: usize = parts.iter().map(|p| p.out_features).sum();
    let mut weight = Vec::with_capacity(n_in * n_out);
    for i in 0..n_in {
        for p in &parts {
            weight.extend_from_slice(&p.weight[i * p.out_features..(i + 1) * p.out_features]);
        }
    }
    let bias = parts.iter().any(|p| p.bias.is_some()).then(|| {
        parts
            .iter()
            .flat_map(|p| p.bias.clone().unwrap_or_else(|| vec![0.0; p.out_features]))
            .collect()
    });
    Ok(LinearSpec {
        name: name.to_string(),
        input_site: site,
        weight,
        layout: WeightLayout::InOut,
        in_features: n_in,
        out_features: n_out,
        bias,
    })
}

/// Block `l`'s `self_attn.q_proj | k_proj | v_proj` as one layer reading site `attn_in.{l}`
/// ([`concat_outputs`]; OPT and the Llama family).
pub fn fused_qkv(
    l: usize,
    q: &crate::nn::Dense,
    k: &crate::nn::Dense,
    v: &crate::nn::Dense,
) -> Result<LinearSpec> {
    let site = || Some(format!("attn_in.{l}"));
    concat_outputs(
        "self_attn.q_proj|k_proj|v_proj",
        vec![
            spec_dense("self_attn.q_proj", site(), q)?,
            spec_dense("self_attn.k_proj", site(), k)?,
            spec_dense("self_attn.v_proj", site(), v)?,
        ],
    )
}

/// y = W·x (+ b) into a new vector of the layer's output width.
pub fn apply_new(layer: &dyn StepLinear, x: &[f32]) -> Result<Vec<f32>> {
    let mut y = vec![0.0; layer.out_features()];
    layer.apply(x, &mut y)?;
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, n_in: usize, n_out: usize, bias: bool, base: f32) -> LinearSpec {
        LinearSpec {
            name: name.into(),
            input_site: Some("attn_in.0".into()),
            weight: (0..n_in * n_out).map(|i| base + i as f32).collect(),
            layout: WeightLayout::InOut,
            in_features: n_in,
            out_features: n_out,
            bias: bias.then(|| (0..n_out).map(|i| -(base + i as f32)).collect()),
        }
    }

    #[test]
    fn concatenated_outputs_equal_the_parts() {
        let parts = vec![
            spec("q", 3, 4, true, 0.0),
            spec("k", 3, 2, false, 100.0),
            spec("v", 3, 1, true, 200.0),
        ];
        let fused = concat_outputs("qkv", parts.clone()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((fused.in_features, fused.out_features), (3, 7));
        let x = [0.5f32, -2.0, 3.0];
        let apply = |s: &LinearSpec| -> Vec<f32> {
            (0..s.out_features)
                .map(|o| {
                    (0..s.in_features)
                        .map(|i| x[i] * s.weight[i * s.out_features + o])
                        .sum::<f32>()
                        + s.bias.as_ref().map_or(0.0, |b| b[o])
                })
                .collect()
        };
        let expect: Vec<f32> = parts.iter().flat_map(apply).collect();
        assert_eq!(apply(&fused), expect);
        // a part with another input width or site is named
        let mut bad = spec("k", 2, 2, false, 0.0);
        let e = concat_outputs("qkv", vec![spec("q", 3, 4, true, 0.0), bad.clone()]).unwrap_err();
        assert!(e.to_string().contains("`k` (2 → 2"), "{e}");
        bad.in_features = 3;
        bad.weight = vec![0.0; 6];
        bad.input_site = Some("mlp_in.0".into());
        assert!(concat_outputs("qkv", vec![spec("q", 3, 4, true, 0.0), bad]).is_err());
        assert!(concat_outputs("qkv", vec![]).is_err());
    }
}
