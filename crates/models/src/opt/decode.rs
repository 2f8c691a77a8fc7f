//! OPT one token at a time, with a key/value cache per block (see [`crate::step`]).

use super::Opt;
use super::config::{OPT_LAYER_NORM_EPS, POSITION_OFFSET};
use crate::config::Activation;
use crate::error::Result;
use crate::step::{
    LinearFactory, StepDecoder, StepLinear, activate, apply_new, apply_rows_new, cached_attention,
    check_prompt, fused_qkv, layer_norm, param_values, spec_dense, spec_head,
};

#[derive(Debug)]
struct Block {
    attn_norm: (Vec<f32>, Vec<f32>),
    /// `q_proj | k_proj | v_proj`, one GEMV ([`fused_qkv`]).
    qkv: Box<dyn StepLinear>,
    out: Box<dyn StepLinear>,
    mlp_norm: (Vec<f32>, Vec<f32>),
    fc1: Box<dyn StepLinear>,
    fc2: Box<dyn StepLinear>,
    k_cache: Vec<f32>,
    v_cache: Vec<f32>,
}

/// The OPT step decoder.
#[derive(Debug)]
pub(crate) struct OptStep {
    embed: Vec<f32>,
    positions: Vec<f32>,
    max_positions: usize,
    project_in: Option<Box<dyn StepLinear>>,
    blocks: Vec<Block>,
    final_norm: Option<(Vec<f32>, Vec<f32>)>,
    project_out: Option<Box<dyn StepLinear>>,
    head: Box<dyn StepLinear>,
    heads: usize,
    hidden: usize,
    embed_dim: usize,
    pre_ln: bool,
    act: Activation,
    pos: usize,
}

impl OptStep {
    pub(crate) fn new(m: &Opt, linears: &dyn LinearFactory) -> Result<Self> {
        let c = &m.config;
        let norm = |n: &crate::nn::LayerNorm| -> Result<(Vec<f32>, Vec<f32>)> {
            Ok((param_values(&n.weight)?, param_values(&n.bias)?))
        };
        let mut blocks = Vec::with_capacity(m.blocks.len());
        for (l, b) in m.blocks.iter().enumerate() {
            let lin = |name: &str, site: &str, d: &crate::nn::Dense| {
                linears.linear(spec_dense(name, Some(format!("{site}.{l}")), d)?)
            };
            blocks.push(Block {
                attn_norm: norm(&b.attn_norm)?,
                qkv: linears.linear(fused_qkv(l, &b.q_proj, &b.k_proj, &b.v_proj)?)?,
                out: lin("self_attn.out_proj", "attn_ctx", &b.out_proj)?,
                mlp_norm: norm(&b.mlp_norm)?,
                fc1: lin("fc1", "mlp_in", &b.fc1)?,
                fc2: lin("fc2", "mlp_act", &b.fc2)?,
                k_cache: Vec::new(),
                v_cache: Vec::new(),
            });
        }
        let unmasked =
            |name: &str, d: &Option<crate::nn::Dense>| -> Result<Option<Box<dyn StepLinear>>> {
                d.as_ref()
                    .map(|d| linears.linear(spec_dense(name, None, d)?))
                    .transpose()
            };
        Ok(Self {
            embed: param_values(&m.embed_tokens)?,
            positions: param_values(&m.embed_positions)?,
            max_positions: c.max_position_embeddings,
            project_in: unmasked("project_in", &m.project_in)?,
            blocks,
            final_norm: m.final_norm.as_ref().map(norm).transpose()?,
            project_out: unmasked("project_out", &m.project_out)?,
            head: linears.linear(spec_head(m.lm_head.as_ref().unwrap_or(&m.embed_tokens))?)?,
            heads: c.num_attention_heads,
            hidden: c.hidden_size,
            embed_dim: c.embed_dim(),
            pre_ln: c.do_layer_norm_before,
            act: c.activation()?,
            pos: 0,
        })
    }
}

impl StepDecoder for OptStep {
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

impl OptStep {
    /// Feeds `tokens` (one for a step, a prompt for a prefill) layer by layer, each linear layer
    /// over all of them at once ([`StepLinear::apply_rows`]), each token attending to the cache up
    /// to itself; the logits after the last token.
    fn run(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let (d, e, start) = (self.hidden, self.embed_dim, self.pos);
        let vocab = self.head.out_features();
        let ids = check_prompt(tokens, vocab, start, self.max_positions)?;
        let n = ids.len();
        let eps = OPT_LAYER_NORM_EPS;
        let ln_rows = |x: &[f32], (w, b): &(Vec<f32>, Vec<f32>)| -> Vec<f32> {
            x.chunks_exact(d)
                .flat_map(|r| layer_norm(r, w, b, eps))
                .collect()
        };
        let toks: Vec<f32> = ids
            .iter()
            .flat_map(|&t| self.embed[t * e..(t + 1) * e].iter().copied())
            .collect();
        let mut x = match &self.project_in {
            Some(p) => apply_rows_new(p.as_ref(), &toks, n)?,
            None => toks,
        };
        for (i, xr) in x.chunks_exact_mut(d).enumerate() {
            let row = (start + i + POSITION_OFFSET) * d;
            xr.iter_mut()
                .zip(&self.positions[row..row + d])
                .for_each(|(x, p)| *x += p);
        }
        let h = self.heads;
        let dh = d / h;
        let scale = (dh as f32).powf(-0.5);
        let mut ctx = vec![0.0f32; n * d];
        for b in &mut self.blocks {
            let a = if self.pre_ln {
                ln_rows(&x, &b.attn_norm)
            } else {
                x.clone()
            };
            let mut qkv = apply_rows_new(b.qkv.as_ref(), &a, n)?;
            for (row, c) in qkv.chunks_exact_mut(3 * d).zip(ctx.chunks_exact_mut(d)) {
                let (q, kv_part) = row.split_at_mut(d);
                q.iter_mut().for_each(|v| *v *= scale);
                let (k, v) = kv_part.split_at(d);
                b.k_cache.extend_from_slice(k);
                b.v_cache.extend_from_slice(v);
                cached_attention(q, &b.k_cache, &b.v_cache, h, h, dh, 1.0, 0, c);
            }
            let y = apply_rows_new(b.out.as_ref(), &ctx, n)?;
            x.iter_mut().zip(&y).for_each(|(x, y)| *x += y);
            if !self.pre_ln {
                x = ln_rows(&x, &b.attn_norm);
            }
            let m = if self.pre_ln {
                ln_rows(&x, &b.mlp_norm)
            } else {
                x.clone()
            };
            let mut hidden = apply_rows_new(b.fc1.as_ref(), &m, n)?;
            hidden.iter_mut().for_each(|v| *v = activate(self.act, *v));
            let y = apply_rows_new(b.fc2.as_ref(), &hidden, n)?;
            x.iter_mut().zip(&y).for_each(|(x, y)| *x += y);
            if !self.pre_ln {
                x = ln_rows(&x, &b.mlp_norm);
            }
        }
        let mut x = x[(n - 1) * d..].to_vec();
        if let Some((w, bias)) = &self.final_norm {
            x = layer_norm(&x, w, bias, eps);
        }
        if let Some(p) = &self.project_out {
            x = apply_new(p.as_ref(), &x)?;
        }
        let logits = apply_new(self.head.as_ref(), &x)?;
        self.pos += n;
        Ok(logits)
    }
}
