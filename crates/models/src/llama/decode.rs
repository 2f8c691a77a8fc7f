//! The Llama family one token at a time, with a key/value cache per block (rotated keys, one row
//! per key/value head) and the sliding window where the config has one (see [`crate::step`]).

use std::path::Path;

use super::Llama;
use crate::attention::{apply_rope_row, rope_row};
use crate::config::Activation;
use crate::error::Result;
use crate::step::{
    LinearFactory, StepDecoder, StepLinear, activate, apply_new, cached_attention, check_step,
    concat_outputs, fused_qkv, param_values, rms_norm, spec_dense, spec_head,
};

#[derive(Debug)]
struct Block {
    input_norm: Vec<f32>,
    /// `q_proj | k_proj | v_proj`, one GEMV ([`fused_qkv`]).
    qkv: Box<dyn StepLinear>,
    o: Box<dyn StepLinear>,
    post_norm: Vec<f32>,
    /// `gate_proj | up_proj`, one GEMV.
    gate_up: Box<dyn StepLinear>,
    down: Box<dyn StepLinear>,
    window: Option<usize>,
    k_cache: Vec<f32>,
    v_cache: Vec<f32>,
}

/// The Llama-family step decoder.
#[derive(Debug)]
pub(crate) struct LlamaStep {
    embed: Vec<f32>,
    blocks: Vec<Block>,
    norm: Vec<f32>,
    head: Box<dyn StepLinear>,
    hidden: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    inv_freq: Vec<f32>,
    max_positions: usize,
    eps: f64,
    act: Activation,
    pos: usize,
}

impl LlamaStep {
    pub(crate) fn new(m: &Llama, linears: &dyn LinearFactory) -> Result<Self> {
        let c = &m.config;
        let mut blocks = Vec::with_capacity(m.blocks.len());
        for (l, b) in m.blocks.iter().enumerate() {
            let spec = |name: &str, site: &str, d: &crate::nn::Dense| {
                spec_dense(name, Some(format!("{site}.{l}")), d)
            };
            let lin =
                |name: &str, site: &str, d: &crate::nn::Dense| linears.linear(spec(name, site, d)?);
            let gate_up = concat_outputs(
                "mlp.gate_proj|up_proj",
                vec![
                    spec("mlp.gate_proj", "mlp_in", &b.gate_proj)?,
                    spec("mlp.up_proj", "mlp_in", &b.up_proj)?,
                ],
            )?;
            blocks.push(Block {
                input_norm: param_values(&b.input_norm)?,
                qkv: linears.linear(fused_qkv(l, &b.q_proj, &b.k_proj, &b.v_proj)?)?,
                o: lin("self_attn.o_proj", "attn_ctx", &b.o_proj)?,
                post_norm: param_values(&b.post_norm)?,
                gate_up: linears.linear(gate_up)?,
                down: lin("mlp.down_proj", "mlp_act", &b.down_proj)?,
                window: c.layer_window(l),
                k_cache: Vec::new(),
                v_cache: Vec::new(),
            });
        }
        Ok(Self {
            embed: param_values(&m.embed_tokens)?,
            blocks,
            norm: param_values(&m.norm)?,
            head: linears.linear(spec_head(m.lm_head.as_ref().unwrap_or(&m.embed_tokens))?)?,
            hidden: c.hidden_size,
            heads: c.num_attention_heads,
            kv_heads: c.kv_heads(),
            head_dim: c.head_dim(),
            inv_freq: c.rope(Path::new("<config>"))?.inv_freq(c.head_dim()),
            max_positions: c.max_position_embeddings,
            eps: c.rms_norm_eps,
            act: c.activation()?,
            pos: 0,
        })
    }
}

impl StepDecoder for LlamaStep {
    fn reset(&mut self) {
        self.pos = 0;
        for b in &mut self.blocks {
            b.k_cache.clear();
            b.v_cache.clear();
        }
    }

    fn step(&mut self, token: u32) -> Result<Vec<f32>> {
        let (d, pos, eps) = (self.hidden, self.pos, self.eps);
        let t = check_step(token, self.head.out_features(), pos, self.max_positions)?;
        let (h, kv, hd) = (self.heads, self.kv_heads, self.head_dim);
        let (cos, sin) = rope_row(pos as f32, &self.inv_freq);
        let scale = (hd as f32).powf(-0.5);
        let mut x = self.embed[t * d..(t + 1) * d].to_vec();
        let mut ctx = vec![0.0f32; h * hd];
        for b in &mut self.blocks {
            let a = rms_norm(&x, &b.input_norm, eps);
            let mut qkv = apply_new(b.qkv.as_ref(), &a)?;
            let (q, kv_part) = qkv.split_at_mut(h * hd);
            let (k, v) = kv_part.split_at_mut(kv * hd);
            q.chunks_exact_mut(hd)
                .chain(k.chunks_exact_mut(hd))
                .for_each(|head| apply_rope_row(head, &cos, &sin));
            b.k_cache.extend_from_slice(k);
            b.v_cache.extend_from_slice(v);
            let q = &*q;
            let first = b.window.map_or(0, |w| (pos + 1).saturating_sub(w));
            cached_attention(q, &b.k_cache, &b.v_cache, h, kv, hd, scale, first, &mut ctx);
            let y = apply_new(b.o.as_ref(), &ctx)?;
            x.iter_mut().zip(&y).for_each(|(x, y)| *x += y);
            let m = rms_norm(&x, &b.post_norm, eps);
            let mut gu = apply_new(b.gate_up.as_ref(), &m)?;
            let half = gu.len() / 2;
            let (g, u) = gu.split_at_mut(half);
            g.iter_mut()
                .zip(&*u)
                .for_each(|(g, u)| *g = activate(self.act, *g) * u);
            let g = &*g;
            let y = apply_new(b.down.as_ref(), g)?;
            x.iter_mut().zip(&y).for_each(|(x, y)| *x += y);
        }
        let x = rms_norm(&x, &self.norm, eps);
        let logits = apply_new(self.head.as_ref(), &x)?;
        self.pos += 1;
        Ok(logits)
    }
}
