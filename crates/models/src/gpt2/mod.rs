//! GPT-2 (Radford et al. 2019, "Language Models are Unsupervised Multitask Learners"), exact to
//! `transformers.GPT2LMHeadModel` in eval mode.
//!
//! x₀ = wte\[ids\] + wpe\[pos\];  per block: a = LN₁(x); q,k,v = split(a·W_attn + b_attn);
//! P = softmax(q·kᵀ/√d_h + mask); x += (P·v)·W_o + b_o;  m = act(LN₂(x)·W_fc + b_fc); x += m·W_proj + b_proj;
//! logits = LN_f(x)·wteᵀ (tied) or ·lm_headᵀ.
//!
//! Weights keep GPT-2's `Conv1D` layout [in, out] (applied as x·W + b), which is burn's own
//! [d_input, d_output] layout: they are loaded as stored, never transposed. Positions are
//! `cumsum(attention_mask) − 1` (clamped at 0), so left padding does not shift the real tokens' positions.

use burn::module::{Module, Param};
use burn::tensor::{Device, Int, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::config::{Activation, Gpt2Config};
use crate::error::{ModelError, Result};
use crate::sites::Hooks;
use crate::util::{const_param, normal_param};

mod decode;
mod hooked;

pub use crate::nn::LayerNorm;

/// GPT-2's `Conv1D`: y = x·W + b with W stored [in, out].
#[derive(Module, Debug)]
pub struct Conv1D {
    /// [in, out]
    pub weight: Param<Tensor<2>>,
    /// \[out\]
    pub bias: Param<Tensor<1>>,
}

impl Conv1D {
    pub(crate) fn init(
        rng: &mut ChaCha8Rng,
        d_in: usize,
        d_out: usize,
        std: f32,
        device: &Device,
    ) -> Self {
        Self {
            weight: normal_param(rng, [d_in, d_out], std, device),
            bias: const_param([d_out], 0.0, device),
        }
    }

    /// [.., in] → [.., out] (see `nn::dense`).
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        crate::nn::dense(x, self.weight.val(), Some(self.bias.val()))
    }
}

/// One GPT-2 decoder block (`transformer.h.{l}`).
#[derive(Module, Debug)]
pub struct Gpt2Block {
    /// `ln_1`
    pub ln_1: LayerNorm,
    /// `attn.c_attn`: [n_embd, 3·n_embd]
    pub c_attn: Conv1D,
    /// `attn.c_proj`: [n_embd, n_embd]
    pub attn_c_proj: Conv1D,
    /// `ln_2`
    pub ln_2: LayerNorm,
    /// `mlp.c_fc`: [n_embd, n_inner]
    pub c_fc: Conv1D,
    /// `mlp.c_proj`: [n_inner, n_embd]
    pub mlp_c_proj: Conv1D,
}

/// GPT-2 language model (`GPT2LMHeadModel`).
#[derive(Module, Debug)]
pub struct Gpt2 {
    /// Token embedding `wte`: [vocab, n_embd].
    pub wte: Param<Tensor<2>>,
    /// Position embedding `wpe`: [n_positions, n_embd].
    pub wpe: Param<Tensor<2>>,
    /// Decoder blocks.
    pub blocks: Vec<Gpt2Block>,
    /// Final LayerNorm `ln_f`.
    pub ln_f: LayerNorm,
    /// Untied `lm_head.weight` [vocab, n_embd] (None when tied to `wte`).
    pub lm_head: Option<Param<Tensor<2>>>,
    /// The configuration.
    #[module(skip)]
    pub config: Gpt2Config,
}

/// What a GPT-2 forward pass returns.
#[derive(Debug, Clone)]
pub struct Gpt2Output {
    /// [batch, seq, vocab]
    pub logits: Tensor<3>,
}

impl Gpt2 {
    /// A randomly initialised model (transformers' scheme: N(0, 0.02²) weights and embeddings, residual
    /// projections N(0, (0.02/√(2·n_layer))²), zero biases, unit LayerNorms), seeded.
    pub fn init(config: &Gpt2Config, seed: u64, device: &Device) -> Result<Self> {
        config.validate(std::path::Path::new("<Gpt2Config>"))?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let d = config.n_embd;
        let inner = config.inner_size();
        let std = 0.02f32;
        let proj_std = std / (2.0 * config.n_layer as f32).sqrt();
        let wte = normal_param(&mut rng, [config.vocab_size, d], std, device);
        let wpe = normal_param(&mut rng, [config.n_positions, d], std, device);
        let blocks = (0..config.n_layer)
            .map(|_| Gpt2Block {
                ln_1: LayerNorm::ones(d, device),
                c_attn: Conv1D::init(&mut rng, d, 3 * d, std, device),
                attn_c_proj: Conv1D::init(&mut rng, d, d, proj_std, device),
                ln_2: LayerNorm::ones(d, device),
                c_fc: Conv1D::init(&mut rng, d, inner, std, device),
                mlp_c_proj: Conv1D::init(&mut rng, inner, d, proj_std, device),
            })
            .collect();
        let lm_head = if config.tie_word_embeddings {
            None
        } else {
            Some(normal_param(&mut rng, [config.vocab_size, d], std, device))
        };
        Ok(Self {
            wte,
            wpe,
            blocks,
            ln_f: LayerNorm::ones(d, device),
            lm_head,
            config: config.clone(),
        })
    }

    /// Number of decoder blocks.
    pub fn num_layers(&self) -> usize {
        self.blocks.len()
    }

    /// Plain forward: logits [batch, seq, vocab] for `input_ids` [batch, seq] and an optional
    /// `attention_mask` [batch, seq] (1 = token, 0 = padding; all ones when `None`).
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2>>,
    ) -> Result<Gpt2Output> {
        let logits = crate::family::HookedLm::plain_logits(self, input_ids, attention_mask)?;
        Ok(Gpt2Output { logits })
    }

    /// The input of block 0: token plus position embeddings, positions counted over the real
    /// tokens (`cumsum(mask) − 1`), [batch, seq, n_embd].
    pub fn embed(&self, input_ids: Tensor<2, Int>, mask: Tensor<2>) -> Tensor<3> {
        let [b, s] = input_ids.dims();
        let positions = mask.cumsum(1).sub_scalar(1.0).clamp_min(0.0).int();
        let tok = self.wte.val().select(0, input_ids.reshape([b * s]));
        let pos = self.wpe.val().select(0, positions.reshape([b * s]));
        (tok + pos).reshape([b, s, self.config.n_embd])
    }

    /// Forward with hooks (sites recorded / edited through `hooks`).
    pub(crate) fn forward_hooked(
        &self,
        input_ids: Tensor<2, Int>,
        mask: Tensor<2>,
        hooks: &mut Hooks<'_>,
    ) -> Result<Tensor<3>> {
        let c = &self.config;
        let [b, s] = input_ids.dims();
        if s > c.n_positions {
            return Err(ModelError::SequenceTooLong {
                seq: s,
                max: c.n_positions,
            });
        }
        let d = c.n_embd;
        let h = c.n_head;
        let dh = c.head_dim();
        let eps = c.layer_norm_epsilon;
        let act: Activation = c.activation()?;

        // causal + padding mask; the fused causal kernel when nothing needs the probabilities
        let keys = crate::attention::key_mask(&mask, None)?;
        let mut x = self.embed(input_ids, mask);
        x = hooks.site3(|| "hidden_states.0".into(), x)?;

        let n_layer = self.blocks.len();
        for (l, blk) in self.blocks.iter().enumerate() {
            let mut scale = if c.scale_attn_weights {
                1.0 / (dh as f64).sqrt()
            } else {
                1.0
            };
            if c.scale_attn_by_inverse_layer_idx {
                scale /= (l + 1) as f64;
            }
            let a = blk.ln_1.forward(x.clone(), eps);
            let a = hooks.site3(|| format!("attn_in.{l}"), a)?;
            let qkv = blk.c_attn.forward(a);
            let split = |i: usize| {
                qkv.clone()
                    .narrow(2, i * d, d)
                    .reshape([b, s, h, dh])
                    .swap_dims(1, 2)
            };
            let (q, k, v) = (split(0), split(1), split(2));
            let ctx =
                crate::attention::attend(q, k, v, scale, &keys, hooks, &format!("attn_probs.{l}"))?;
            let o = ctx.swap_dims(1, 2).reshape([b, s, d]);
            let o = hooks.site3(|| format!("attn_ctx.{l}"), o)?;
            x = x + blk.attn_c_proj.forward(o);

            let m = blk.ln_2.forward(x.clone(), eps);
            let m = hooks.site3(|| format!("mlp_in.{l}"), m)?;
            let m = act.apply(blk.c_fc.forward(m))?;
            let m = hooks.site3(|| format!("mlp_act.{l}"), m)?;
            x = x + blk.mlp_c_proj.forward(m);
            x = hooks.site3(|| format!("block_out.{l}"), x)?;
            if l + 1 < n_layer {
                x = hooks.site3(|| format!("hidden_states.{}", l + 1), x)?;
            }
        }
        let x = self.ln_f.forward(x, eps);
        let x = hooks.site3(|| format!("hidden_states.{n_layer}"), x)?;
        let head = match &self.lm_head {
            Some(w) => w.val(),
            None => self.wte.val(),
        };
        Ok(crate::util::lm_head(x, head))
    }
}

impl crate::trainable::CausalLmTrain for Gpt2 {
    fn causal_logits(
        &self,
        input_ids: Tensor<2, Int>,
    ) -> std::result::Result<Tensor<3>, Box<dyn std::error::Error + Send + Sync>> {
        Ok(self.forward(input_ids, None)?.logits)
    }
}
