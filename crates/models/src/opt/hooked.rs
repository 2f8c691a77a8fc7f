//! OPT as a [`HookedLm`]: its sites, linear layers and parameter groups.

use std::any::Any;
use std::collections::BTreeMap;
use std::path::Path;

use burn::module::{Module, Param};
use burn::tensor::{Int, Tensor};

use super::{Opt, OptBlock};
use crate::config::{ModelConfig, ModelFamily};
use crate::error::Result;
use crate::family::{Architecture, HookedLm, LinearLayer};
use crate::nn::Dense;
use crate::sites::Hooks;
use crate::step::{LinearFactory, StepDecoder};

/// (group, module, input site kind, [out, in] from (hidden, ffn))
type Row = (
    &'static str,
    &'static str,
    &'static str,
    fn(usize, usize) -> [usize; 2],
);

/// Every linear layer of a block, in forward order; TEAL masks every one's input.
const LINEARS: [Row; 6] = [
    ("attention", "self_attn.q_proj", "attn_in", |d, _| [d, d]),
    ("attention", "self_attn.k_proj", "attn_in", |d, _| [d, d]),
    ("attention", "self_attn.v_proj", "attn_in", |d, _| [d, d]),
    ("attention", "self_attn.out_proj", "attn_ctx", |d, _| [d, d]),
    ("mlp", "fc1", "mlp_in", |d, f| [f, d]),
    ("mlp", "fc2", "mlp_act", |d, f| [d, f]),
];

pub(super) fn block_linear<'a>(b: &'a mut OptBlock, module: &str) -> Option<&'a mut Dense> {
    Some(match module {
        "self_attn.q_proj" => &mut b.q_proj,
        "self_attn.k_proj" => &mut b.k_proj,
        "self_attn.v_proj" => &mut b.v_proj,
        "self_attn.out_proj" => &mut b.out_proj,
        "fc1" => &mut b.fc1,
        "fc2" => &mut b.fc2,
        _ => return None,
    })
}

impl HookedLm for Opt {
    fn family(&self) -> ModelFamily {
        ModelFamily::Opt
    }

    fn architecture(&self) -> Architecture {
        Architecture::Transformer
    }

    fn config(&self) -> ModelConfig {
        ModelConfig::Opt(self.config.clone())
    }

    fn num_layers(&self) -> usize {
        self.blocks.len()
    }

    fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }

    fn hidden_state_width(&self, i: usize) -> usize {
        if i == self.blocks.len() {
            self.config.embed_dim()
        } else {
            self.config.hidden_size
        }
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
            "block_out" | "attn_in" | "attn_ctx" | "mlp_in" => Some(c.hidden_size),
            "mlp_act" => Some(c.ffn_dim),
            "attn_probs" => Some(c.num_attention_heads),
            _ => None,
        }
    }

    /// OPT's MLP flattens the rows before `final_layer_norm`: transformers' hooks on `fc1` /
    /// `fc2` see [batch·seq, width].
    fn hf_site_shape(&self, kind: &str, shape: &[usize]) -> Vec<usize> {
        match (kind, shape) {
            ("mlp_in" | "mlp_act", &[b, s, w]) => vec![b * s, w],
            _ => shape.to_vec(),
        }
    }

    fn neuron_site_kind(&self) -> &'static str {
        "mlp_act"
    }

    fn attention_site_kind(&self) -> Option<&'static str> {
        Some("attn_probs")
    }

    fn embed(&self, input_ids: Tensor<2, Int>, attention_mask: Tensor<2>) -> Tensor<3> {
        Opt::embed(self, input_ids, attention_mask)
    }

    fn forward_hooked(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Tensor<2>,
        hooks: &mut Hooks,
    ) -> Result<Tensor<3>> {
        Opt::forward_hooked(self, input_ids, attention_mask, hooks)
    }

    fn save_pretrained(&self, dir: &Path) -> Result<()> {
        Opt::save_pretrained(self, dir)
    }

    fn linear_layers(&self) -> Vec<LinearLayer> {
        let (d, f) = (self.config.hidden_size, self.config.ffn_dim);
        (0..self.num_layers())
            .flat_map(|block| {
                LINEARS
                    .iter()
                    .map(move |&(group, module, site, shape)| LinearLayer {
                        block,
                        group: group.into(),
                        module: module.into(),
                        name: format!("model.decoder.layers.{block}.{module}.weight"),
                        input_site: format!("{site}.{block}"),
                        shape: shape(d, f),
                        hf_in_out: false,
                        mlp_input: true,
                    })
            })
            .collect()
    }

    fn linear_weight_mut(&mut self, layer: &LinearLayer) -> Option<&mut Param<Tensor<2>>> {
        let b = self.blocks.get_mut(layer.block)?;
        Some(&mut block_linear(b, &layer.module)?.weight)
    }

    fn parameter_groups(&self) -> BTreeMap<String, usize> {
        let sum = |f: &dyn Fn(&OptBlock) -> usize| self.blocks.iter().map(f).sum::<usize>();
        let proj = self.project_in.as_ref().map_or(0, |p| p.num_params())
            + self.project_out.as_ref().map_or(0, |p| p.num_params());
        BTreeMap::from([
            (
                "embeddings".to_string(),
                self.embed_tokens.num_params() + self.embed_positions.num_params() + proj,
            ),
            (
                "attention".to_string(),
                sum(&|b| {
                    b.q_proj.num_params()
                        + b.k_proj.num_params()
                        + b.v_proj.num_params()
                        + b.out_proj.num_params()
                }),
            ),
            (
                "mlp".to_string(),
                sum(&|b| b.fc1.num_params() + b.fc2.num_params()),
            ),
            (
                "norms".to_string(),
                if self.config.layer_norm_elementwise_affine {
                    sum(&|b| b.attn_norm.num_params() + b.mlp_norm.num_params())
                        + self.final_norm.as_ref().map_or(0, |n| n.num_params())
                } else {
                    0
                },
            ),
            (
                "lm_head".to_string(),
                self.lm_head.as_ref().map_or(0, |h| h.num_params()),
            ),
        ])
    }

    fn step_decoder(&self, linears: &dyn LinearFactory) -> Result<Box<dyn StepDecoder>> {
        Ok(Box::new(super::decode::OptStep::new(self, linears)?))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}
