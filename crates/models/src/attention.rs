//! Causal softmax attention shared by the transformer families: the key mask (causal, an optional
//! sliding window, padding), grouped-query head sharing, rotary embeddings and the attention
//! itself with its `attn_probs` site.

use burn::tensor::{Bool, Int, Tensor, TensorData};

use crate::error::{ModelError, Result};
use crate::sites::Hooks;

/// Which keys each query may not see, for a batch.
#[derive(Debug, Clone)]
pub(crate) struct KeyMask {
    /// [batch, 1, seq, seq]: true = key hidden from the query.
    pub masked: Tensor<4, Bool>,
    /// Whether the plain causal mask is the whole story (no padding, no window cutting in), so
    /// the backend's fused causal attention gives the same result.
    pub plain_causal: bool,
}

/// Whether any position of the [batch, seq] mask is padding.
pub(crate) fn has_padding(mask: &Tensor<2>) -> Result<bool> {
    mask.clone()
        .lower_elem(0.5)
        .any()
        .try_into_scalar::<bool>()
        .map_err(|e| ModelError::Backend(format!("reading the attention mask: {e:?}")))
}

/// The key mask for a [batch, seq] attention mask: key k is hidden from query q when it lies in
/// q's future, when q − k ≥ `window` (transformers' sliding window: the query and the
/// window − 1 keys before it stay visible), or when it is padding.
pub(crate) fn key_mask(mask: &Tensor<2>, window: Option<usize>) -> Result<KeyMask> {
    let [b, s] = mask.dims();
    let device = mask.device();
    let hidden: Vec<bool> = (0..s * s)
        .map(|i| {
            let (q, k) = (i / s, i % s);
            k > q || window.is_some_and(|w| q - k >= w)
        })
        .collect();
    let causal = Tensor::<3, Bool>::from_data(TensorData::new(hidden, [1, s, s]), &device);
    let pad_key = mask.clone().lower_elem(0.5).reshape([b, 1, s]);
    let masked = causal
        .expand([b, s, s])
        .bool_or(pad_key.expand([b, s, s]))
        .reshape([b, 1, s, s]);
    let padded = has_padding(mask)?;
    Ok(KeyMask {
        masked,
        plain_causal: !padded && window.is_none_or(|w| w >= s),
    })
}

/// [batch, kv_heads, seq, dh] → [batch, kv_heads · groups, seq, dh], each key/value head shared by
/// `groups` consecutive query heads (transformers' `repeat_kv`).
pub(crate) fn repeat_kv(x: Tensor<4>, groups: usize) -> Tensor<4> {
    if groups == 1 {
        return x;
    }
    let [b, kv, s, dh] = x.dims();
    x.unsqueeze_dim::<5>(2)
        .expand([b, kv, groups, s, dh])
        .reshape([b, kv * groups, s, dh])
}

/// softmax(q·kᵀ·scale + mask)·v for q, k, v [batch, heads, seq, dh], with the probabilities
/// passed through the site `probs_site` ([batch, heads, seq, seq]). Without padding or window,
/// when the site is neither recorded nor edited and nothing is differentiated, the backend's
/// fused causal attention computes the same function.
pub(crate) fn attend(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    scale: f64,
    mask: &KeyMask,
    hooks: &mut Hooks,
    probs_site: &str,
) -> Result<Tensor<4>> {
    if mask.plain_causal && !q.is_autodiff() && !hooks.touches(probs_site) {
        let options = burn::tensor::ops::AttentionModuleOptions {
            scale: Some(scale),
            softcap: None,
            is_causal: true,
        };
        return Ok(burn::tensor::module::attention(
            q, k, v, None, None, options,
        ));
    }
    let [b, h, s, _] = q.dims();
    let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(scale);
    let scores = scores.mask_fill(mask.masked.clone().expand([b, h, s, s]), f32::MIN);
    let probs = burn::tensor::activation::softmax(scores, 3);
    let probs = hooks.site4(|| probs_site.to_string(), probs)?;
    Ok(probs.matmul(v))
}

/// Positions of the real tokens, `cumsum(mask) − 1`, and 0 at left padding, [batch, seq].
pub(crate) fn positions(mask: &Tensor<2>) -> Tensor<2, Int> {
    mask.clone().cumsum(1).sub_scalar(1.0).clamp_min(0.0).int()
}

/// Rotary embedding tables for positions [batch, seq]: (cos, sin) [batch, 1, seq, dh], each
/// angle p·f computed in f32 (as transformers does) and its cosine / sine rounded to f32.
pub(crate) fn rope_tables(
    positions: &Tensor<2, Int>,
    inv_freq: &[f32],
) -> Result<(Tensor<4>, Tensor<4>)> {
    let [b, s] = positions.dims();
    let device = positions.device();
    let pos = positions
        .to_data()
        .try_into_vec_as::<i64>()
        .map_err(|e| ModelError::Backend(format!("reading positions: {e:?}")))?;
    let half = inv_freq.len();
    let dh = 2 * half;
    let mut cos = Vec::with_capacity(b * s * dh);
    let mut sin = Vec::with_capacity(b * s * dh);
    for p in pos {
        let (c, sn) = rope_row(p as f32, inv_freq);
        cos.extend_from_slice(&c);
        sin.extend_from_slice(&sn);
    }
    Ok((
        Tensor::from_data(TensorData::new(cos, [b, 1, s, dh]), &device),
        Tensor::from_data(TensorData::new(sin, [b, 1, s, dh]), &device),
    ))
}

/// cos and sin of one position's angles, duplicated over the two halves (\[dh\] each).
pub fn rope_row(p: f32, inv_freq: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let half = inv_freq.len();
    let mut cos = vec![0.0; 2 * half];
    let mut sin = vec![0.0; 2 * half];
    for (i, f) in inv_freq.iter().enumerate() {
        let a = f64::from(p * f);
        let (s, c) = a.sin_cos();
        cos[i] = c as f32;
        cos[i + half] = c as f32;
        sin[i] = s as f32;
        sin[i + half] = s as f32;
    }
    (cos, sin)
}

/// x·cos + rotate_half(x)·sin for x [batch, heads, seq, dh], rotate_half(x) = [−x₂, x₁].
pub(crate) fn apply_rope(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    let dh = x.dims()[3];
    let half = dh / 2;
    let x1 = x.clone().narrow(3, 0, half);
    let x2 = x.clone().narrow(3, half, half);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    x * cos.clone() + rotated * sin.clone()
}

/// Rotates one head vector in place (the step decoders' form of `apply_rope`).
pub fn apply_rope_row(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = x.len() / 2;
    for i in 0..half {
        let (a, b) = (x[i], x[i + half]);
        x[i] = a * cos[i] - b * sin[i];
        x[i + half] = b * cos[i + half] + a * sin[i + half];
    }
}
