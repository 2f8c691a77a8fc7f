//! The Llama family one token at a time, with a key/value cache per block (rotated keys, one row
//! per key/value head) and the sliding window where the config has one (see [`crate::step`]).

use std::path::Path;

use super::Llama;
use crate::attention::{apply_rope_row, rope_row};
use crate::config::Activation;
use crate::error::Result;
use crate::step::{
    LinearFactory, StepDecoder, StepLinear, activate, apply_new, apply_rows_new, cached_attention,
    check_prompt, concat_outputs, fused_qkv, param_values, rms_norm, spec_dense, spec_head,
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
        self.run(&[token])
    }

    fn prefill(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        self.run(tokens)
    }
}

impl LlamaStep {
    /// Feeds `tokens` (one for a step, a prompt for a prefill) layer by layer, each linear layer
    /// over all of them at once ([`StepLinear::apply_rows`]), each token attending to the cache up
    /// to itself; the logits after the last token.
    fn run(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let (d, start, eps) = (self.hidden, self.pos, self.eps);
        let vocab = self.head.out_features();
        let ids = check_prompt(tokens, vocab, start, self.max_positions)?;
        let n = ids.len();
        let (h, kv, hd) = (self.heads, self.kv_heads, self.head_dim);
        let rope: Vec<_> = (start..start + n)
            .map(|p| rope_row(p as f32, &self.inv_freq))
            .collect();
        let scale = (hd as f32).powf(-0.5);
        let norm_rows = |x: &[f32], w: &[f32]| -> Vec<f32> {
            x.chunks_exact(d)
                .flat_map(|r| rms_norm(r, w, eps))
                .collect()
        };
        let mut x: Vec<f32> = ids
            .iter()
            .flat_map(|&t| self.embed[t * d..(t + 1) * d].iter().copied())
            .collect();
        let mut ctx = vec![0.0f32; n * h * hd];
        for b in &mut self.blocks {
            let a = norm_rows(&x, &b.input_norm);
            let mut qkv = apply_rows_new(b.qkv.as_ref(), &a, n)?;
            let width = qkv.len() / n;
            for (i, (row, c)) in qkv
                .chunks_exact_mut(width)
                .zip(ctx.chunks_exact_mut(h * hd))
                .enumerate()
            {
                let (q, kv_part) = row.split_at_mut(h * hd);
                let (k, v) = kv_part.split_at_mut(kv * hd);
                let (cos, sin) = &rope[i];
                q.chunks_exact_mut(hd)
                    .chain(k.chunks_exact_mut(hd))
                    .for_each(|head| apply_rope_row(head, cos, sin));
                b.k_cache.extend_from_slice(k);
                b.v_cache.extend_from_slice(v);
                let pos = start + i;
                let first = b.window.map_or(0, |w| (pos + 1).saturating_sub(w));
                cached_attention(q, &b.k_cache, &b.v_cache, h, kv, hd, scale, first, c);
            }
            let y = apply_rows_new(b.o.as_ref(), &ctx, n)?;
            x.iter_mut().zip(&y).for_each(|(x, y)| *x += y);
            let m = norm_rows(&x, &b.post_norm);
            let gu = apply_rows_new(b.gate_up.as_ref(), &m, n)?;
            let half = gu.len() / n / 2;
            let g: Vec<f32> = gu
                .chunks_exact(2 * half)
                .flat_map(|r| {
                    let (g, u) = r.split_at(half);
                    g.iter().zip(u).map(|(g, u)| activate(self.act, *g) * u)
                })
                .collect();
            let y = apply_rows_new(b.down.as_ref(), &g, n)?;
            x.iter_mut().zip(&y).for_each(|(x, y)| *x += y);
        }
        let x = rms_norm(&x[(n - 1) * d..], &self.norm, eps);
        let logits = apply_new(self.head.as_ref(), &x)?;
        self.pos += n;
        Ok(logits)
    }
}
