//! Token-by-token decoding on the CPU: each family's recurrent form (GPT-2 with a key/value cache,
//! Mamba with its convolution window and SSM state) written against caller-supplied linear
//! layers, so the model core needs no kernel crate. `sparsity-decoding` supplies the layers (the
//! `sparsity-kernels` GEMV, dense or masked) and drives the decoder.

use burn::module::Param;
use burn::tensor::Tensor;
use wide::f32x8;

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

    /// [`StepLinear::apply`] for `rows` inputs side by side: `x` [rows · in], `y` [rows · out]. The
    /// default applies one row at a time; an implementation may read the weights once for several
    /// rows (a prompt's prefill).
    fn apply_rows(&self, x: &[f32], rows: usize, y: &mut [f32]) -> Result<()> {
        let n_out = self.out_features();
        let n_in = check_rows(x, rows, y, n_out)?;
        for (xr, yr) in x.chunks_exact(n_in).zip(y.chunks_exact_mut(n_out)) {
            self.apply(xr, yr)?;
        }
        Ok(())
    }
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

    /// Feeds `tokens` in order (a prompt) and returns the logits after the last one, as that many
    /// [`StepDecoder::step`]s would. The default steps one token at a time; the families with a
    /// key/value cache run each layer over all the tokens at once, so every linear layer goes
    /// through [`StepLinear::apply_rows`]. Empty `tokens` is an error. Every family of this crate
    /// checks all tokens and positions first ([`check_prompt`]); this default, for other
    /// implementations, stops at the first bad token after the steps before it. After an error,
    /// [`StepDecoder::reset`] before reuse.
    fn prefill(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let mut logits = Err(ModelError::Invalid("prefill: no tokens".into()));
        for &t in tokens {
            logits = Ok(self.step(t)?);
        }
        logits
    }
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

/// The input width of [`StepLinear::apply_rows`]'s `rows` rows, or the error when `x` and `y` are
/// not `rows` non-empty rows of inputs and of `n_out` outputs.
pub fn check_rows(x: &[f32], rows: usize, y: &[f32], n_out: usize) -> Result<usize> {
    if rows == 0 || x.is_empty() || !x.len().is_multiple_of(rows) || y.len() != rows * n_out {
        return Err(ModelError::Invalid(format!(
            "apply_rows: {} inputs and {} outputs are not {rows} rows of {n_out} outputs",
            x.len(),
            y.len()
        )));
    }
    Ok(x.len() / rows)
}

/// [`check_step`] for every token of a prompt starting at position `start`: their indices, or
/// the first token's error (an empty prompt is an error too), before any of them runs.
pub fn check_prompt(tokens: &[u32], vocab: usize, start: usize, max: usize) -> Result<Vec<usize>> {
    if tokens.is_empty() {
        return Err(ModelError::Invalid("prefill: no tokens".into()));
    }
    tokens
        .iter()
        .enumerate()
        .map(|(i, &t)| check_step(t, vocab, start + i, max))
        .collect()
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

/// Visible steps × query heads × head width above which [`cached_attention`] splits its key/value
/// head groups over the rayon pool: at TinyLlama's shape (32 heads of 64) from 32 visible steps on,
/// where one call costs tens of microseconds, well above a pool hand-off.
pub const ATTENTION_PARALLEL_WORK: usize = 1 << 16;

/// `a · b` on `wide` vectors with two independent 8-lane partial sums (explicit SIMD, so the
/// step decoders' attention is vectorized at this crate's dev opt-level 1 too), then reduced.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (ca, ta) = a[..n].as_chunks::<8>();
    let (cb, tb) = b[..n].as_chunks::<8>();
    let (mut even, mut odd) = (f32x8::ZERO, f32x8::ZERO);
    let (pa, pb) = (ca.chunks_exact(2), cb.chunks_exact(2));
    if let (Some(x), Some(y)) = (pa.remainder().first(), pb.remainder().first()) {
        odd = f32x8::from(*x) * f32x8::from(*y);
    }
    for (x, y) in pa.zip(pb) {
        even = f32x8::from(x[0]).mul_add(f32x8::from(y[0]), even);
        odd = f32x8::from(x[1]).mul_add(f32x8::from(y[1]), odd);
    }
    let tail: f32 = ta.iter().zip(tb).map(|(x, y)| x * y).sum();
    (even + odd).reduce_add() + tail
}

/// `acc += w · row` on `wide` vectors.
fn axpy(acc: &mut [f32], row: &[f32], w: f32) {
    let n = acc.len().min(row.len());
    let (ca, ta) = acc[..n].as_chunks_mut::<8>();
    let (cr, tr) = row[..n].as_chunks::<8>();
    let c = f32x8::splat(w);
    for (a, r) in ca.iter_mut().zip(cr) {
        *a = f32x8::from(*r).mul_add(c, f32x8::from(*a)).to_array();
    }
    ta.iter_mut().zip(tr).for_each(|(a, r)| *a += w * r);
}

/// One query's softmax attention over a key/value cache: `q` [heads·dh], `k` and `v` the cached
/// rows \[steps\]\[kv_heads·dh\], query head h reading key/value head h / (heads / kv_heads); only
/// the steps from `first` on are visible (a sliding window). Writes [heads·dh] into `out`.
///
/// The query heads of one key/value head are computed together (each cached key and value row is
/// read once for the group), and the groups run on the rayon pool when the call is large
/// ([`ATTENTION_PARALLEL_WORK`]); every group's arithmetic is the same either way, so the result does
/// not depend on the thread count.
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
    let groups = (heads / kv_heads.max(1)).max(1);
    let visible = steps.saturating_sub(first);
    let group = |(kvh, out_g): (usize, &mut [f32])| {
        out_g.iter_mut().for_each(|o| *o = 0.0);
        let heads_here = out_g.len() / dh.max(1);
        let q_g = &q[kvh * groups * dh..(kvh * groups + heads_here) * dh];
        // scores[h * visible + t]: query head h of the group, visible step t
        let mut scores = vec![0.0f32; heads_here * visible];
        for (t, s) in (first..steps).enumerate() {
            let kr = &k[s * kv_width + kvh * dh..s * kv_width + (kvh + 1) * dh];
            for (h, qh) in q_g.chunks_exact(dh).enumerate() {
                scores[h * visible + t] = dot(qh, kr) * scale;
            }
        }
        for row in scores.chunks_exact_mut(visible.max(1)) {
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut z = 0.0f32;
            for sc in row.iter_mut() {
                *sc = (*sc - m).exp();
                z += *sc;
            }
            row.iter_mut().for_each(|p| *p /= z);
        }
        for (t, s) in (first..steps).enumerate() {
            let vr = &v[s * kv_width + kvh * dh..s * kv_width + (kvh + 1) * dh];
            for (h, oh) in out_g.chunks_exact_mut(dh).enumerate() {
                axpy(oh, vr, scores[h * visible + t]);
            }
        }
    };
    let chunk = (groups * dh).max(1);
    if visible * heads * dh >= ATTENTION_PARALLEL_WORK && kv_heads > 1 {
        use rayon::prelude::*;
        out.par_chunks_mut(chunk).enumerate().for_each(group);
    } else {
        out.chunks_mut(chunk).enumerate().for_each(group);
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

/// [`StepLinear::apply_rows`] into a new vector \[rows · out\].
pub fn apply_rows_new(layer: &dyn StepLinear, x: &[f32], rows: usize) -> Result<Vec<f32>> {
    let mut y = vec![0.0; rows * layer.out_features()];
    layer.apply_rows(x, rows, &mut y)?;
    Ok(y)
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

    /// f64 attention written head by head, as the formula reads.
    #[allow(clippy::too_many_arguments)]
    fn attention_reference(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        heads: usize,
        kv_heads: usize,
        dh: usize,
        scale: f32,
        first: usize,
    ) -> Vec<f64> {
        let w = kv_heads * dh;
        let steps = k.len() / w;
        let mut out = vec![0.0f64; heads * dh];
        for h in 0..heads {
            let kvh = h / (heads / kv_heads);
            let s: Vec<f64> = (first..steps)
                .map(|t| {
                    (0..dh)
                        .map(|i| f64::from(q[h * dh + i]) * f64::from(k[t * w + kvh * dh + i]))
                        .sum::<f64>()
                        * f64::from(scale)
                })
                .collect();
            let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
            for (j, t) in (first..steps).enumerate() {
                let p = (s[j] - m).exp() / z;
                for i in 0..dh {
                    out[h * dh + i] += p * f64::from(v[t * w + kvh * dh + i]);
                }
            }
        }
        out
    }

    #[test]
    fn cached_attention_matches_the_formula_on_every_path() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0
        };
        // (heads, kv heads, head width, steps, first visible): MHA, GQA with a window, a head width
        // that is not a multiple of eight, and a call large enough for the pool
        for (heads, kv, dh, steps, first) in [
            (4, 4, 8, 5, 0),
            (8, 2, 16, 9, 3),
            (6, 3, 13, 7, 0),
            (32, 4, 64, 40, 0),
            (32, 4, 64, 40, 17),
        ] {
            let q: Vec<f32> = (0..heads * dh).map(|_| next()).collect();
            let k: Vec<f32> = (0..steps * kv * dh).map(|_| next()).collect();
            let v: Vec<f32> = (0..steps * kv * dh).map(|_| next()).collect();
            let scale = (dh as f32).powf(-0.5);
            let expect = attention_reference(&q, &k, &v, heads, kv, dh, scale, first);
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap_or_else(|e| panic!("{e}"));
                let mut out = vec![f32::NAN; heads * dh];
                pool.install(|| {
                    cached_attention(&q, &k, &v, heads, kv, dh, scale, first, &mut out)
                });
                out
            };
            let one = run(1);
            for (i, (a, b)) in one.iter().zip(&expect).enumerate() {
                assert!(
                    (f64::from(*a) - b).abs() <= 1e-5 * (1.0 + b.abs()),
                    "{heads}/{kv}/{dh}/{steps}/{first} [{i}]: {a} vs {b}"
                );
            }
            // the pool changes where groups run, not their arithmetic
            assert_eq!(
                one.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                run(2).iter().map(|x| x.to_bits()).collect::<Vec<_>>()
            );
        }
        // nothing visible: zeros
        let mut out = vec![1.0f32; 8];
        cached_attention(&[1.0; 8], &[], &[], 2, 1, 4, 1.0, 0, &mut out);
        assert_eq!(out, vec![0.0; 8]);
    }
}
