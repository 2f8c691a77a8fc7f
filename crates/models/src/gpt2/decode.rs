//! GPT-2 one token at a time, with a key/value cache per block (see [`crate::step`]).

use super::Gpt2;
use crate::config::Activation;
use crate::error::Result;
use crate::step::{
    LinearFactory, StepDecoder, StepLinear, activate, apply_new, apply_rows_new, cached_attention,
    check_prompt, layer_norm, param_values, spec_head, spec_in_out,
};

#[derive(Debug)]
struct Block {
    ln1: (Vec<f32>, Vec<f32>),
    c_attn: Box<dyn StepLinear>,
    attn_proj: Box<dyn StepLinear>,
    ln2: (Vec<f32>, Vec<f32>),
    c_fc: Box<dyn StepLinear>,
    mlp_proj: Box<dyn StepLinear>,
    k: Vec<f32>,
    v: Vec<f32>,
}

/// The GPT-2 step decoder.
#[derive(Debug)]
pub(crate) struct Gpt2Step {
    wte: Vec<f32>,
    wpe: Vec<f32>,
    n_positions: usize,
    blocks: Vec<Block>,
    ln_f: (Vec<f32>, Vec<f32>),
    head: Box<dyn StepLinear>,
    heads: usize,
    hidden: usize,
    scale_weights: bool,
    inverse_layer_idx: bool,
    eps: f64,
    act: Activation,
    pos: usize,
}

impl Gpt2Step {
    pub(crate) fn new(m: &Gpt2, linears: &dyn LinearFactory) -> Result<Self> {
        let c = &m.config;
        let mut blocks = Vec::with_capacity(m.blocks.len());
        for (l, b) in m.blocks.iter().enumerate() {
            let lin = |name: &str, site: Option<String>, conv: &super::Conv1D| {
                linears.linear(spec_in_out(name, site, &conv.weight, Some(&conv.bias))?)
            };
            blocks.push(Block {
                ln1: (param_values(&b.ln_1.weight)?, param_values(&b.ln_1.bias)?),
                c_attn: lin("c_attn", None, &b.c_attn)?,
                attn_proj: lin("attn.c_proj", None, &b.attn_c_proj)?,
                ln2: (param_values(&b.ln_2.weight)?, param_values(&b.ln_2.bias)?),
                c_fc: lin("c_fc", Some(format!("mlp_in.{l}")), &b.c_fc)?,
                mlp_proj: lin("mlp.c_proj", Some(format!("mlp_act.{l}")), &b.mlp_c_proj)?,
                k: Vec::new(),
                v: Vec::new(),
            });
        }
        Ok(Self {
            wte: param_values(&m.wte)?,
            wpe: param_values(&m.wpe)?,
            n_positions: c.n_positions,
            blocks,
            ln_f: (param_values(&m.ln_f.weight)?, param_values(&m.ln_f.bias)?),
            head: linears.linear(spec_head(m.lm_head.as_ref().unwrap_or(&m.wte))?)?,
            heads: c.n_head,
            hidden: c.n_embd,
            scale_weights: c.scale_attn_weights,
            inverse_layer_idx: c.scale_attn_by_inverse_layer_idx,
            eps: c.layer_norm_epsilon,
            act: c.activation()?,
            pos: 0,
        })
    }
}

impl StepDecoder for Gpt2Step {
    fn reset(&mut self) {
        self.pos = 0;
        for b in &mut self.blocks {
            b.k.clear();
            b.v.clear();
        }
    }

    fn step(&mut self, token: u32) -> Result<Vec<f32>> {
        self.run(&[token])
    }

    fn prefill(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        self.run(tokens)
    }
}

impl Gpt2Step {
    /// Feeds `tokens` (one for a step, a prompt for a prefill) layer by layer, each linear layer
    /// over all of them at once ([`StepLinear::apply_rows`]), each token attending to the cache up
    /// to itself; the logits after the last token.
    fn run(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let (d, eps, start) = (self.hidden, self.eps, self.pos);
        let vocab = self.head.out_features();
        let ids = check_prompt(tokens, vocab, start, self.n_positions)?;
        let n = ids.len();
        let ln_rows = |x: &[f32], (w, b): &(Vec<f32>, Vec<f32>)| -> Vec<f32> {
            x.chunks_exact(d)
                .flat_map(|r| layer_norm(r, w, b, eps))
                .collect()
        };
        let mut x: Vec<f32> = ids
            .iter()
            .enumerate()
            .flat_map(|(i, &t)| {
                let pos = start + i;
                (0..d).map(move |j| (t * d + j, pos * d + j))
            })
            .map(|(t, p)| self.wte[t] + self.wpe[p])
            .collect();
        let h = self.heads;
        let dh = d / h;
        let mut o = vec![0.0f32; n * d];
        for (l, b) in self.blocks.iter_mut().enumerate() {
            let a = ln_rows(&x, &b.ln1);
            let qkv = apply_rows_new(b.c_attn.as_ref(), &a, n)?;
            let mut scale = if self.scale_weights {
                1.0 / (dh as f32).sqrt()
            } else {
                1.0
            };
            if self.inverse_layer_idx {
                scale /= (l + 1) as f32;
            }
            for (row, c) in qkv.chunks_exact(3 * d).zip(o.chunks_exact_mut(d)) {
                b.k.extend_from_slice(&row[d..2 * d]);
                b.v.extend_from_slice(&row[2 * d..]);
                cached_attention(&row[..d], &b.k, &b.v, h, h, dh, scale, 0, c);
            }
            let y = apply_rows_new(b.attn_proj.as_ref(), &o, n)?;
            x.iter_mut().zip(&y).for_each(|(x, y)| *x += y);
            let m = ln_rows(&x, &b.ln2);
            let mut hidden = apply_rows_new(b.c_fc.as_ref(), &m, n)?;
            hidden.iter_mut().for_each(|v| *v = activate(self.act, *v));
            let y = apply_rows_new(b.mlp_proj.as_ref(), &hidden, n)?;
            x.iter_mut().zip(&y).for_each(|(x, y)| *x += y);
        }
        let x = layer_norm(&x[(n - 1) * d..], &self.ln_f.0, &self.ln_f.1, eps);
        let logits = apply_new(self.head.as_ref(), &x)?;
        self.pos += n;
        Ok(logits)
    }
}
