//! OPT checkpoints: `model.decoder.*` (or `decoder.*`, as the original facebook/opt-* checkpoints
//! name them) and `lm_head.weight`; `nn.Linear` weights [out, in] held as [in, out].

use std::path::Path;

use burn::tensor::Device;

use super::config::POSITION_OFFSET;
use super::{Opt, OptBlock, OptConfig};
use crate::config::ModelConfig;
use crate::error::Result;
use crate::loader::{Named, TensorStore, check_dim, check_layer_count, push, push_dense, save};
use crate::nn::{Dense, LayerNorm};

impl Opt {
    /// Builds an OPT from a checkpoint; every size the config declares is compared with the
    /// checkpoint before it sizes anything.
    pub(crate) fn from_store(
        config: &OptConfig,
        store: &mut TensorStore,
        device: &Device,
    ) -> Result<Self> {
        let pre = if store.contains("model.decoder.embed_tokens.weight") {
            "model.decoder."
        } else if store.contains("decoder.embed_tokens.weight") {
            "decoder."
        } else {
            "model.decoder."
        };
        let (d, e, f) = (config.hidden_size, config.embed_dim(), config.ffn_dim);
        let bias = config.enable_bias;
        let affine = config.layer_norm_elementwise_affine;
        check_layer_count(
            store,
            "num_hidden_layers",
            config.num_hidden_layers,
            &format!("{pre}layers."),
            ".fc1.weight",
        )?;
        let emb = format!("{pre}embed_tokens.weight");
        check_dim(store, "vocab_size", config.vocab_size, &emb, 0)?;
        check_dim(store, "word_embed_proj_dim", e, &emb, 1)?;
        let pos = format!("{pre}embed_positions.weight");
        check_dim(store, "hidden_size", d, &pos, 1)?;
        check_dim(
            store,
            "max_position_embeddings (+ 2)",
            config.max_position_embeddings + POSITION_OFFSET,
            &pos,
            0,
        )?;
        check_dim(store, "ffn_dim", f, &format!("{pre}layers.0.fc1.weight"), 0)?;
        let embed_tokens = store.param2(&emb, [config.vocab_size, e], device)?;
        let embed_positions = store.param2(
            &pos,
            [config.max_position_embeddings + POSITION_OFFSET, d],
            device,
        )?;
        let dense = |store: &mut TensorStore, name: &str, d_in, d_out, bias| {
            store.dense(name, d_in, d_out, bias, device)
        };
        let norm = |store: &mut TensorStore, name: &str| -> Result<LayerNorm> {
            if affine {
                Ok(LayerNorm {
                    weight: store.param1(&format!("{name}.weight"), d, device)?,
                    bias: store.param1(&format!("{name}.bias"), d, device)?,
                })
            } else {
                Ok(LayerNorm::ones(d, device))
            }
        };
        let proj = config.has_projections();
        let project_in = if proj {
            Some(dense(store, &format!("{pre}project_in"), e, d, false)?)
        } else {
            None
        };
        let mut blocks = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let p = format!("{pre}layers.{l}");
            blocks.push(OptBlock {
                attn_norm: norm(store, &format!("{p}.self_attn_layer_norm"))?,
                q_proj: dense(store, &format!("{p}.self_attn.q_proj"), d, d, bias)?,
                k_proj: dense(store, &format!("{p}.self_attn.k_proj"), d, d, bias)?,
                v_proj: dense(store, &format!("{p}.self_attn.v_proj"), d, d, bias)?,
                out_proj: dense(store, &format!("{p}.self_attn.out_proj"), d, d, bias)?,
                mlp_norm: norm(store, &format!("{p}.final_layer_norm"))?,
                fc1: dense(store, &format!("{p}.fc1"), d, f, bias)?,
                fc2: dense(store, &format!("{p}.fc2"), f, d, bias)?,
            });
        }
        let final_norm = if config.has_final_layer_norm() {
            Some(norm(store, &format!("{pre}final_layer_norm"))?)
        } else {
            None
        };
        let project_out = if proj {
            Some(dense(store, &format!("{pre}project_out"), d, e, false)?)
        } else {
            None
        };
        let lm_head = if config.tie_word_embeddings {
            store.ignore("lm_head.weight");
            None
        } else {
            Some(store.param2("lm_head.weight", [config.vocab_size, e], device)?)
        };
        store.check_all_used()?;
        Ok(Self {
            embed_tokens,
            embed_positions,
            project_in,
            blocks,
            final_norm,
            project_out,
            lm_head,
            config: config.clone(),
        })
    }

    fn tensors(&self) -> Result<Named> {
        let mut out = Named::new();
        let pre = "model.decoder.";
        let affine = self.config.layer_norm_elementwise_affine;
        let dense = |out: &mut Named, name: String, x: &Dense| push_dense(out, &name, x);
        let norm = |out: &mut Named, name: String, n: &LayerNorm| -> Result<()> {
            if affine {
                push(out, format!("{name}.weight"), &n.weight)?;
                push(out, format!("{name}.bias"), &n.bias)?;
            }
            Ok(())
        };
        push(
            &mut out,
            format!("{pre}embed_tokens.weight"),
            &self.embed_tokens,
        )?;
        push(
            &mut out,
            format!("{pre}embed_positions.weight"),
            &self.embed_positions,
        )?;
        if let Some(p) = &self.project_in {
            dense(&mut out, format!("{pre}project_in"), p)?;
        }
        for (l, b) in self.blocks.iter().enumerate() {
            let p = format!("{pre}layers.{l}");
            norm(&mut out, format!("{p}.self_attn_layer_norm"), &b.attn_norm)?;
            dense(&mut out, format!("{p}.self_attn.q_proj"), &b.q_proj)?;
            dense(&mut out, format!("{p}.self_attn.k_proj"), &b.k_proj)?;
            dense(&mut out, format!("{p}.self_attn.v_proj"), &b.v_proj)?;
            dense(&mut out, format!("{p}.self_attn.out_proj"), &b.out_proj)?;
            norm(&mut out, format!("{p}.final_layer_norm"), &b.mlp_norm)?;
            dense(&mut out, format!("{p}.fc1"), &b.fc1)?;
            dense(&mut out, format!("{p}.fc2"), &b.fc2)?;
        }
        if let Some(n) = &self.final_norm {
            norm(&mut out, format!("{pre}final_layer_norm"), n)?;
        }
        if let Some(p) = &self.project_out {
            dense(&mut out, format!("{pre}project_out"), p)?;
        }
        if let Some(w) = &self.lm_head {
            push(&mut out, "lm_head.weight".into(), w)?;
        }
        Ok(out)
    }

    /// Writes `config.json` and `model.safetensors` (transformers' `OPTForCausalLM` names,
    /// nn.Linear [out, in] layout, tied `lm_head` omitted) into `dir`, atomically per file.
    pub fn save_pretrained(&self, dir: &Path) -> Result<()> {
        save(dir, ModelConfig::Opt(self.config.clone()), self.tensors()?)
    }
}
