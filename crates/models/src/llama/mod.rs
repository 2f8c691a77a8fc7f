//! The Llama family (Touvron et al. 2023, "LLaMA: Open and Efficient Foundation Language Models"),
//! covering `model_type` `llama`, `qwen2` and `mistral`, exact to transformers'
//! `LlamaForCausalLM` / `Qwen2ForCausalLM` / `MistralForCausalLM` in eval mode.
//!
//! x₀ = embed_tokens\[ids\]; per block: a = RMSNorm₁(x); q, k, v = a·W_q, a·W_k, a·W_v (+ biases where
//! the config has them); q, k rotated by RoPE at the token's position; k, v shared by groups of
//! query heads (GQA); P = softmax(q·kᵀ/√d_h + causal / sliding-window / padding mask);
//! x += (P·v)·W_o; m = RMSNorm₂(x); x += (act(m·W_gate) ⊙ m·W_up)·W_down;
//! logits = RMSNorm_f(x)·headᵀ.
//!
//! Positions are `cumsum(attention_mask) − 1` (0 at left padding), as transformers' `generate`
//! computes them; without padding that is 0, 1, 2, … as in a plain forward call. `nn.Linear`
//! weights ([out, in] in the checkpoint) are held transposed as [in, out].

use std::path::Path;

use burn::module::{Module, Param};
use burn::tensor::{Device, Int, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::attention::{KeyMask, apply_rope, attend, key_mask, positions, repeat_kv, rope_tables};
use crate::error::{ModelError, Result};
use crate::nn::Dense;
use crate::sites::Hooks;
use crate::util::{const_param, normal_param, rms_norm};

pub mod config;
mod decode;
mod hooked;
mod load;

pub use config::LlamaConfig;

/// One decoder layer (`model.layers.{l}`).
#[derive(Module, Debug)]
pub struct LlamaBlock {
    /// `input_layernorm.weight` \[hidden\]
    pub input_norm: Param<Tensor<1>>,
    /// `self_attn.q_proj`: [hidden, heads·head_dim]
    pub q_proj: Dense,
    /// `self_attn.k_proj`: [hidden, kv_heads·head_dim]
    pub k_proj: Dense,
    /// `self_attn.v_proj`: [hidden, kv_heads·head_dim]
    pub v_proj: Dense,
    /// `self_attn.o_proj`: [heads·head_dim, hidden]
    pub o_proj: Dense,
    /// `post_attention_layernorm.weight` \[hidden\]
    pub post_norm: Param<Tensor<1>>,
    /// `mlp.gate_proj`: [hidden, intermediate]
    pub gate_proj: Dense,
    /// `mlp.up_proj`: [hidden, intermediate]
    pub up_proj: Dense,
    /// `mlp.down_proj`: [intermediate, hidden]
    pub down_proj: Dense,
}

/// A Llama-family language model.
#[derive(Module, Debug)]
pub struct Llama {
    /// `model.embed_tokens.weight`: [vocab, hidden].
    pub embed_tokens: Param<Tensor<2>>,
    /// Decoder layers.
    pub blocks: Vec<LlamaBlock>,
    /// `model.norm.weight` \[hidden\].
    pub norm: Param<Tensor<1>>,
    /// Untied `lm_head.weight` [vocab, hidden] (None when tied).
    pub lm_head: Option<Param<Tensor<2>>>,
    /// The configuration.
    #[module(skip)]
    pub config: LlamaConfig,
}

impl Llama {
    /// A randomly initialised model (transformers' scheme: N(0, 0.02²) weights and embeddings,
    /// zero biases, unit norms), seeded.
    pub fn init(config: &LlamaConfig, seed: u64, device: &Device) -> Result<Self> {
        config.validate(Path::new("<LlamaConfig>"))?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (d, i) = (config.hidden_size, config.intermediate_size);
        let (qw, kvw) = (
            config.num_attention_heads * config.head_dim(),
            config.kv_heads() * config.head_dim(),
        );
        let std = 0.02f32;
        let (qkv_b, o_b, mlp_b) = (config.qkv_bias(), config.o_bias(), config.mlp_bias());
        let embed_tokens = normal_param(&mut rng, [config.vocab_size, d], std, device);
        let blocks = (0..config.num_hidden_layers)
            .map(|_| LlamaBlock {
                input_norm: const_param([d], 1.0, device),
                q_proj: Dense::init(&mut rng, d, qw, std, qkv_b, device),
                k_proj: Dense::init(&mut rng, d, kvw, std, qkv_b, device),
                v_proj: Dense::init(&mut rng, d, kvw, std, qkv_b, device),
                o_proj: Dense::init(&mut rng, qw, d, std, o_b, device),
                post_norm: const_param([d], 1.0, device),
                gate_proj: Dense::init(&mut rng, d, i, std, mlp_b, device),
                up_proj: Dense::init(&mut rng, d, i, std, mlp_b, device),
                down_proj: Dense::init(&mut rng, i, d, std, mlp_b, device),
            })
            .collect();
        let lm_head = (!config.tie_word_embeddings)
            .then(|| normal_param(&mut rng, [config.vocab_size, d], std, device));
        Ok(Self {
            embed_tokens,
            blocks,
            norm: const_param([d], 1.0, device),
            lm_head,
            config: config.clone(),
        })
    }

    /// The input of block 0: the token embedding, [batch, seq, hidden].
    pub fn embed(&self, input_ids: Tensor<2, Int>) -> Tensor<3> {
        let [b, s] = input_ids.dims();
        self.embed_tokens
            .val()
            .select(0, input_ids.reshape([b * s]))
            .reshape([b, s, self.config.hidden_size])
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
        if s > c.max_position_embeddings {
            return Err(ModelError::SequenceTooLong {
                seq: s,
                max: c.max_position_embeddings,
            });
        }
        let (h, kv, hd) = (c.num_attention_heads, c.kv_heads(), c.head_dim());
        let eps = c.rms_norm_eps;
        let act = c.activation()?;
        let inv_freq = c.rope(Path::new("<config>"))?.inv_freq(hd);
        let (cos, sin) = rope_tables(&positions(&mask), &inv_freq)?;
        let full = key_mask(&mask, None)?;
        let mut windowed: Option<(usize, KeyMask)> = None;
        let scale = (hd as f64).powf(-0.5);

        let mut x = self.embed(input_ids);
        x = hooks.site3(|| "hidden_states.0".into(), x)?;
        let n_layer = self.blocks.len();
        for (l, blk) in self.blocks.iter().enumerate() {
            let keys = match c.layer_window(l) {
                None => &full,
                Some(w) => {
                    if windowed.as_ref().is_none_or(|(ww, _)| *ww != w) {
                        windowed = Some((w, key_mask(&mask, Some(w))?));
                    }
                    match &windowed {
                        Some((_, m)) => m,
                        None => &full,
                    }
                }
            };
            let a = rms_norm(x.clone(), blk.input_norm.val(), eps);
            let a = hooks.site3(|| format!("attn_in.{l}"), a)?;
            let q = blk
                .q_proj
                .forward(a.clone())
                .reshape([b, s, h, hd])
                .swap_dims(1, 2);
            let k = blk
                .k_proj
                .forward(a.clone())
                .reshape([b, s, kv, hd])
                .swap_dims(1, 2);
            let v = blk
                .v_proj
                .forward(a)
                .reshape([b, s, kv, hd])
                .swap_dims(1, 2);
            let q = apply_rope(q, &cos, &sin);
            let k = repeat_kv(apply_rope(k, &cos, &sin), h / kv);
            let v = repeat_kv(v, h / kv);
            let ctx = attend(q, k, v, scale, keys, hooks, &format!("attn_probs.{l}"))?;
            let o = ctx.swap_dims(1, 2).reshape([b, s, h * hd]);
            let o = hooks.site3(|| format!("attn_ctx.{l}"), o)?;
            x = x + blk.o_proj.forward(o);

            let m = rms_norm(x.clone(), blk.post_norm.val(), eps);
            let m = hooks.site3(|| format!("mlp_in.{l}"), m)?;
            let g = act.apply(blk.gate_proj.forward(m.clone()))? * blk.up_proj.forward(m);
            let g = hooks.site3(|| format!("mlp_act.{l}"), g)?;
            x = x + blk.down_proj.forward(g);
            x = hooks.site3(|| format!("block_out.{l}"), x)?;
            if l + 1 < n_layer {
                x = hooks.site3(|| format!("hidden_states.{}", l + 1), x)?;
            }
        }
        let x = rms_norm(x, self.norm.val(), eps);
        let x = hooks.site3(|| format!("hidden_states.{n_layer}"), x)?;
        let head = match &self.lm_head {
            Some(w) => w.val(),
            None => self.embed_tokens.val(),
        };
        Ok(crate::util::lm_head(x, head))
    }
}

impl crate::trainable::CausalLmTrain for Llama {
    fn causal_logits(
        &self,
        input_ids: Tensor<2, Int>,
    ) -> std::result::Result<Tensor<3>, Box<dyn std::error::Error + Send + Sync>> {
        Ok(crate::family::HookedLm::plain_logits(
            self, input_ids, None,
        )?)
    }
}
