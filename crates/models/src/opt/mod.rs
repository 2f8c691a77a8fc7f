//! OPT (Zhang et al. 2022, "OPT: Open Pre-trained Transformer Language Models"), exact to
//! `transformers.OPTForCausalLM` in eval mode.
//!
//! x₀ = project_in(embed_tokens\[ids\]) + embed_positions[pos + 2], pos = cumsum(mask)·mask − 1
//! (padding reads row 1); per block, pre-LN (`do_layer_norm_before`):
//! x += out_proj(attn(LN₁(x))); x += fc2(act(fc1(LN₂(x)))); post-LN (OPT-350m):
//! x = LN₁(x + out_proj(attn(x))); x = LN₂(x + fc2(act(fc1(x)))).
//! Then the final LayerNorm (pre-LN models), project_out, and logits against the (tied) head.
//!
//! `nn.Linear` weights ([out, in] in the checkpoint) are held transposed as [in, out]. LayerNorms
//! without `layer_norm_elementwise_affine` hold unit weights and zero biases that are neither read
//! nor written.

use burn::module::{Module, Param};
use burn::tensor::{Device, Int, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::attention::{attend, key_mask};
use crate::error::{ModelError, Result};
use crate::nn::{Dense, LayerNorm};
use crate::sites::Hooks;
use crate::util::normal_param;

pub mod config;
mod decode;
mod hooked;
mod load;

pub use config::OptConfig;
use config::{OPT_LAYER_NORM_EPS, POSITION_OFFSET};

/// One OPT decoder layer (`model.decoder.layers.{l}`).
#[derive(Module, Debug)]
pub struct OptBlock {
    /// `self_attn_layer_norm`
    pub attn_norm: LayerNorm,
    /// `self_attn.q_proj`
    pub q_proj: Dense,
    /// `self_attn.k_proj`
    pub k_proj: Dense,
    /// `self_attn.v_proj`
    pub v_proj: Dense,
    /// `self_attn.out_proj`
    pub out_proj: Dense,
    /// `final_layer_norm` (the MLP's LayerNorm)
    pub mlp_norm: LayerNorm,
    /// `fc1`: [hidden, ffn_dim]
    pub fc1: Dense,
    /// `fc2`: [ffn_dim, hidden]
    pub fc2: Dense,
}

/// OPT language model (`OPTForCausalLM`).
#[derive(Module, Debug)]
pub struct Opt {
    /// `embed_tokens`: [vocab, word_embed_proj_dim].
    pub embed_tokens: Param<Tensor<2>>,
    /// `embed_positions`: [max_position_embeddings + 2, hidden].
    pub embed_positions: Param<Tensor<2>>,
    /// `project_in` (word_embed_proj_dim → hidden) when the widths differ.
    pub project_in: Option<Dense>,
    /// Decoder layers.
    pub blocks: Vec<OptBlock>,
    /// The decoder's `final_layer_norm` (pre-LN models).
    pub final_norm: Option<LayerNorm>,
    /// `project_out` (hidden → word_embed_proj_dim) when the widths differ.
    pub project_out: Option<Dense>,
    /// Untied `lm_head.weight` [vocab, word_embed_proj_dim] (None when tied).
    pub lm_head: Option<Param<Tensor<2>>>,
    /// The configuration.
    #[module(skip)]
    pub config: OptConfig,
}

impl Opt {
    /// A randomly initialised model (transformers' scheme: N(0, 0.02²) weights and embeddings,
    /// zero biases, unit LayerNorms), seeded.
    pub fn init(config: &OptConfig, seed: u64, device: &Device) -> Result<Self> {
        config.validate(std::path::Path::new("<OptConfig>"))?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (d, e, f) = (config.hidden_size, config.embed_dim(), config.ffn_dim);
        let std = 0.02f32;
        let bias = config.enable_bias;
        let embed_tokens = normal_param(&mut rng, [config.vocab_size, e], std, device);
        let embed_positions = normal_param(
            &mut rng,
            [config.max_position_embeddings + POSITION_OFFSET, d],
            std,
            device,
        );
        let proj = config.has_projections();
        let project_in = proj.then(|| Dense::init(&mut rng, e, d, std, false, device));
        let blocks = (0..config.num_hidden_layers)
            .map(|_| OptBlock {
                attn_norm: LayerNorm::ones(d, device),
                q_proj: Dense::init(&mut rng, d, d, std, bias, device),
                k_proj: Dense::init(&mut rng, d, d, std, bias, device),
                v_proj: Dense::init(&mut rng, d, d, std, bias, device),
                out_proj: Dense::init(&mut rng, d, d, std, bias, device),
                mlp_norm: LayerNorm::ones(d, device),
                fc1: Dense::init(&mut rng, d, f, std, bias, device),
                fc2: Dense::init(&mut rng, f, d, std, bias, device),
            })
            .collect();
        let project_out = proj.then(|| Dense::init(&mut rng, d, e, std, false, device));
        let lm_head = (!config.tie_word_embeddings)
            .then(|| normal_param(&mut rng, [config.vocab_size, e], std, device));
        Ok(Self {
            embed_tokens,
            embed_positions,
            project_in,
            blocks,
            final_norm: config
                .has_final_layer_norm()
                .then(|| LayerNorm::ones(d, device)),
            project_out,
            lm_head,
            config: config.clone(),
        })
    }

    /// The input of block 0: project_in(token embedding) + learned position (OPT's offset of 2;
    /// padding reads row 1), [batch, seq, hidden].
    pub fn embed(&self, input_ids: Tensor<2, Int>, mask: Tensor<2>) -> Tensor<3> {
        let [b, s] = input_ids.dims();
        let e = self.config.embed_dim();
        let d = self.config.hidden_size;
        let pos = (mask.clone().cumsum(1) * mask)
            .sub_scalar(1.0)
            .add_scalar(POSITION_OFFSET as f64)
            .int();
        let tok = self
            .embed_tokens
            .val()
            .select(0, input_ids.reshape([b * s]))
            .reshape([b, s, e]);
        let tok = match &self.project_in {
            Some(p) => p.forward(tok),
            None => tok,
        };
        let pos = self
            .embed_positions
            .val()
            .select(0, pos.reshape([b * s]))
            .reshape([b, s, d]);
        tok + pos
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
        let (d, h, dh) = (c.hidden_size, c.num_attention_heads, c.head_dim());
        let eps = OPT_LAYER_NORM_EPS;
        let act = c.activation()?;
        let pre = c.do_layer_norm_before;
        let keys = key_mask(&mask, None)?;
        let mut x = self.embed(input_ids, mask);
        x = hooks.site3(|| "hidden_states.0".into(), x)?;
        let n_layer = self.blocks.len();
        let heads = |t: Tensor<3>| t.reshape([b, s, h, dh]).swap_dims(1, 2);
        for (l, blk) in self.blocks.iter().enumerate() {
            let a = if pre {
                blk.attn_norm.forward(x.clone(), eps)
            } else {
                x.clone()
            };
            let a = hooks.site3(|| format!("attn_in.{l}"), a)?;
            // transformers scales the query before the product (scaling = 1 in the attention)
            let q = heads(blk.q_proj.forward(a.clone())).mul_scalar((dh as f64).powf(-0.5));
            let k = heads(blk.k_proj.forward(a.clone()));
            let v = heads(blk.v_proj.forward(a));
            let ctx = attend(q, k, v, 1.0, &keys, hooks, &format!("attn_probs.{l}"))?;
            let o = ctx.swap_dims(1, 2).reshape([b, s, d]);
            let o = hooks.site3(|| format!("attn_ctx.{l}"), o)?;
            x = x + blk.out_proj.forward(o);
            if !pre {
                x = blk.attn_norm.forward(x, eps);
            }
            let m = if pre {
                blk.mlp_norm.forward(x.clone(), eps)
            } else {
                x.clone()
            };
            let m = hooks.site3(|| format!("mlp_in.{l}"), m)?;
            let m = act.apply(blk.fc1.forward(m))?;
            let m = hooks.site3(|| format!("mlp_act.{l}"), m)?;
            x = x + blk.fc2.forward(m);
            if !pre {
                x = blk.mlp_norm.forward(x, eps);
            }
            x = hooks.site3(|| format!("block_out.{l}"), x)?;
            if l + 1 < n_layer {
                x = hooks.site3(|| format!("hidden_states.{}", l + 1), x)?;
            }
        }
        if let Some(norm) = &self.final_norm {
            x = norm.forward(x, eps);
        }
        if let Some(p) = &self.project_out {
            x = p.forward(x);
        }
        let x = hooks.site3(|| format!("hidden_states.{n_layer}"), x)?;
        let head = match &self.lm_head {
            Some(w) => w.val(),
            None => self.embed_tokens.val(),
        };
        Ok(crate::util::lm_head(x, head))
    }
}

impl crate::trainable::CausalLmTrain for Opt {
    fn causal_logits(
        &self,
        input_ids: Tensor<2, Int>,
    ) -> std::result::Result<Tensor<3>, Box<dyn std::error::Error + Send + Sync>> {
        Ok(crate::family::HookedLm::plain_logits(
            self, input_ids, None,
        )?)
    }
}
