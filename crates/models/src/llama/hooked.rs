//! The Llama family as a [`HookedLm`]: its sites, linear layers and parameter groups.

use std::any::Any;
use std::collections::BTreeMap;
use std::path::Path;

use burn::module::{Module, Param};
use burn::tensor::{Int, Tensor};

use super::{Llama, LlamaBlock};
use crate::config::{ModelConfig, ModelFamily};
use crate::error::Result;
use crate::family::{Architecture, HookedLm, LinearLayer};
use crate::nn::Dense;
use crate::sites::Hooks;
use crate::step::{LinearFactory, StepDecoder};

/// (group, module, input site kind)
type Row = (&'static str, &'static str, &'static str);

/// Every linear layer of a block, in forward order; TEAL masks every one's input.
const LINEARS: [Row; 7] = [
    ("attention", "self_attn.q_proj", "attn_in"),
    ("attention", "self_attn.k_proj", "attn_in"),
    ("attention", "self_attn.v_proj", "attn_in"),
    ("attention", "self_attn.o_proj", "attn_ctx"),
    ("mlp", "mlp.gate_proj", "mlp_in"),
    ("mlp", "mlp.up_proj", "mlp_in"),
    ("mlp", "mlp.down_proj", "mlp_act"),
];

pub(super) fn block_linear<'a>(b: &'a mut LlamaBlock, module: &str) -> Option<&'a mut Dense> {
    Some(match module {
        "self_attn.q_proj" => &mut b.q_proj,
        "self_attn.k_proj" => &mut b.k_proj,
        "self_attn.v_proj" => &mut b.v_proj,
        "self_attn.o_proj" => &mut b.o_proj,
        "mlp.gate_proj" => &mut b.gate_proj,
        "mlp.up_proj" => &mut b.up_proj,
        "mlp.down_proj" => &mut b.down_proj,
        _ => return None,
    })
}

impl HookedLm for Llama {
    fn family(&self) -> ModelFamily {
        ModelFamily::Llama
    }

    fn architecture(&self) -> Architecture {
        Architecture::Transformer
    }

    fn config(&self) -> ModelConfig {
        ModelConfig::Llama(self.config.clone())
    }

    fn num_layers(&self) -> usize {
        self.blocks.len()
    }

    fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }

    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    fn max_positions(&self) -> Option<usize> {
        Some(self.config.max_position_embeddings)
    }

    fn special_token_ids(&self) -> (Option<i64>, Option<i64>) {
        let c = &self.config;
        (
            c.pad_token_id.as_ref().and_then(|t| t.first()),
            c.eos_token_id.as_ref().and_then(|t| t.first()),
        )
    }

    fn layer_site_kinds(&self) -> &'static [&'static str] {
        &["block_out", "mlp_act", "attn_probs"]
    }

    fn site_kind_width(&self, kind: &str) -> Option<usize> {
        let c = &self.config;
        match kind {
            "block_out" | "attn_in" | "mlp_in" => Some(c.hidden_size),
            "attn_ctx" => Some(c.num_attention_heads * c.head_dim()),
            "mlp_act" => Some(c.intermediate_size),
            "attn_probs" => Some(c.num_attention_heads),
            _ => None,
        }
    }

    fn neuron_site_kind(&self) -> &'static str {
        "mlp_act"
    }

    fn attention_site_kind(&self) -> Option<&'static str> {
        Some("attn_probs")
    }

    fn embed(&self, input_ids: Tensor<2, Int>, attention_mask: Tensor<2>) -> Tensor<3> {
        {
            let _ = attention_mask;
            Llama::embed(self, input_ids)
        }
    }

    fn forward_hooked(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Tensor<2>,
        hooks: &mut Hooks,
    ) -> Result<Tensor<3>> {
        Llama::forward_hooked(self, input_ids, attention_mask, hooks)
    }

    fn save_pretrained(&self, dir: &Path) -> Result<()> {
        Llama::save_pretrained(self, dir)
    }

    fn linear_layers(&self) -> Vec<LinearLayer> {
        let mut layers = Vec::with_capacity(self.blocks.len() * LINEARS.len());
        for (block, b) in self.blocks.iter().enumerate() {
            let dense = [
                &b.q_proj,
                &b.k_proj,
                &b.v_proj,
                &b.o_proj,
                &b.gate_proj,
                &b.up_proj,
                &b.down_proj,
            ];
            for (&(group, module, site), d) in LINEARS.iter().zip(dense) {
                layers.push(LinearLayer {
                    block,
                    group: group.into(),
                    module: module.into(),
                    name: format!("model.layers.{block}.{module}.weight"),
                    input_site: format!("{site}.{block}"),
                    shape: [d.out_features(), d.in_features()],
                    hf_in_out: false,
                    mlp_input: true,
                });
            }
        }
        layers
    }

    fn linear_weight_mut(&mut self, layer: &LinearLayer) -> Option<&mut Param<Tensor<2>>> {
        let b = self.blocks.get_mut(layer.block)?;
        Some(&mut block_linear(b, &layer.module)?.weight)
    }

    fn parameter_groups(&self) -> BTreeMap<String, usize> {
        let sum = |f: &dyn Fn(&LlamaBlock) -> usize| self.blocks.iter().map(f).sum::<usize>();
        BTreeMap::from([
            ("embeddings".to_string(), self.embed_tokens.num_params()),
            (
                "attention".to_string(),
                sum(&|b| {
                    b.q_proj.num_params()
                        + b.k_proj.num_params()
                        + b.v_proj.num_params()
                        + b.o_proj.num_params()
                }),
            ),
            (
                "mlp".to_string(),
                sum(&|b| {
                    b.gate_proj.num_params() + b.up_proj.num_params() + b.down_proj.num_params()
                }),
            ),
            (
                "norms".to_string(),
                sum(&|b| b.input_norm.num_params() + b.post_norm.num_params())
                    + self.norm.num_params(),
            ),
            (
                "lm_head".to_string(),
                self.lm_head.as_ref().map_or(0, |h| h.num_params()),
            ),
        ])
    }

    fn step_decoder(&self, linears: &dyn LinearFactory) -> Result<Box<dyn StepDecoder>> {
        Ok(Box::new(super::decode::LlamaStep::new(self, linears)?))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}
