//! Llama-family checkpoints: `model.embed_tokens.weight`, `model.layers.{l}.self_attn.{q,k,v,o}_proj`,
//! `model.layers.{l}.mlp.{gate,up,down}_proj`, the two RMSNorms per layer, `model.norm.weight` and
//! `lm_head.weight`; `nn.Linear` weights [out, in] held as [in, out]. Old checkpoints' rotary
//! `inv_freq` buffers are ignored (the config determines them).

use std::path::Path;

use burn::tensor::Device;

use super::{Llama, LlamaBlock, LlamaConfig};
use crate::config::ModelConfig;
use crate::error::Result;
use crate::loader::{Named, TensorStore, check_dim, check_layer_count, push, push_dense, save};
use crate::nn::Dense;

impl Llama {
    /// Builds a Llama-family model from a checkpoint; every size the config declares is compared
    /// with the checkpoint before it sizes anything.
    pub(crate) fn from_store(
        config: &LlamaConfig,
        store: &mut TensorStore,
        device: &Device,
    ) -> Result<Self> {
        let (d, i) = (config.hidden_size, config.intermediate_size);
        let hd = config.head_dim();
        let (qw, kvw) = (config.num_attention_heads * hd, config.kv_heads() * hd);
        let (qkv_b, o_b, mlp_b) = (config.qkv_bias(), config.o_bias(), config.mlp_bias());
        check_layer_count(
            store,
            "num_hidden_layers",
            config.num_hidden_layers,
            "model.layers.",
            ".input_layernorm.weight",
        )?;
        let emb = "model.embed_tokens.weight";
        check_dim(store, "vocab_size", config.vocab_size, emb, 0)?;
        check_dim(store, "hidden_size", d, emb, 1)?;
        let a0 = "model.layers.0.self_attn";
        check_dim(
            store,
            "num_attention_heads × head_dim",
            qw,
            &format!("{a0}.q_proj.weight"),
            0,
        )?;
        check_dim(
            store,
            "num_key_value_heads × head_dim",
            kvw,
            &format!("{a0}.k_proj.weight"),
            0,
        )?;
        check_dim(
            store,
            "intermediate_size",
            i,
            "model.layers.0.mlp.gate_proj.weight",
            0,
        )?;
        let embed_tokens = store.param2(emb, [config.vocab_size, d], device)?;
        let dense = |store: &mut TensorStore, name: &str, d_in, d_out, bias| {
            store.dense(name, d_in, d_out, bias, device)
        };
        let mut blocks = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let p = format!("model.layers.{l}");
            store.ignore(&format!("{p}.self_attn.rotary_emb.inv_freq"));
            blocks.push(LlamaBlock {
                input_norm: store.param1(&format!("{p}.input_layernorm.weight"), d, device)?,
                q_proj: dense(store, &format!("{p}.self_attn.q_proj"), d, qw, qkv_b)?,
                k_proj: dense(store, &format!("{p}.self_attn.k_proj"), d, kvw, qkv_b)?,
                v_proj: dense(store, &format!("{p}.self_attn.v_proj"), d, kvw, qkv_b)?,
                o_proj: dense(store, &format!("{p}.self_attn.o_proj"), qw, d, o_b)?,
                post_norm: store.param1(
                    &format!("{p}.post_attention_layernorm.weight"),
                    d,
                    device,
                )?,
                gate_proj: dense(store, &format!("{p}.mlp.gate_proj"), d, i, mlp_b)?,
                up_proj: dense(store, &format!("{p}.mlp.up_proj"), d, i, mlp_b)?,
                down_proj: dense(store, &format!("{p}.mlp.down_proj"), i, d, mlp_b)?,
            });
        }
        let norm = store.param1("model.norm.weight", d, device)?;
        let lm_head = if config.tie_word_embeddings {
            store.ignore("lm_head.weight");
            None
        } else {
            Some(store.param2("lm_head.weight", [config.vocab_size, d], device)?)
        };
        store.check_all_used()?;
        Ok(Self {
            embed_tokens,
            blocks,
            norm,
            lm_head,
            config: config.clone(),
        })
    }

    fn tensors(&self) -> Result<Named> {
        let mut out = Named::new();
        let dense = |out: &mut Named, name: String, x: &Dense| push_dense(out, &name, x);
        push(
            &mut out,
            "model.embed_tokens.weight".into(),
            &self.embed_tokens,
        )?;
        for (l, b) in self.blocks.iter().enumerate() {
            let p = format!("model.layers.{l}");
            push(
                &mut out,
                format!("{p}.input_layernorm.weight"),
                &b.input_norm,
            )?;
            dense(&mut out, format!("{p}.self_attn.q_proj"), &b.q_proj)?;
            dense(&mut out, format!("{p}.self_attn.k_proj"), &b.k_proj)?;
            dense(&mut out, format!("{p}.self_attn.v_proj"), &b.v_proj)?;
            dense(&mut out, format!("{p}.self_attn.o_proj"), &b.o_proj)?;
            push(
                &mut out,
                format!("{p}.post_attention_layernorm.weight"),
                &b.post_norm,
            )?;
            dense(&mut out, format!("{p}.mlp.gate_proj"), &b.gate_proj)?;
            dense(&mut out, format!("{p}.mlp.up_proj"), &b.up_proj)?;
            dense(&mut out, format!("{p}.mlp.down_proj"), &b.down_proj)?;
        }
        push(&mut out, "model.norm.weight".into(), &self.norm)?;
        if let Some(w) = &self.lm_head {
            push(&mut out, "lm_head.weight".into(), w)?;
        }
        Ok(out)
    }

    /// Writes `config.json` and `model.safetensors` (transformers' names, nn.Linear [out, in]
    /// layout, tied `lm_head` omitted) into `dir`, atomically per file.
    pub fn save_pretrained(&self, dir: &Path) -> Result<()> {
        save(
            dir,
            ModelConfig::Llama(self.config.clone()),
            self.tensors()?,
        )
    }
}
