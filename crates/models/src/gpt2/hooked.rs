//! GPT-2 as a [`HookedLm`]: its sites, linear layers and parameter groups.

use std::any::Any;
use std::collections::BTreeMap;
use std::path::Path;

use burn::module::{Module, Param};
use burn::tensor::{Int, Tensor};

use super::Gpt2;
use crate::config::{ModelConfig, ModelFamily};
use crate::error::Result;
use crate::family::{Architecture, HookedLm, LinearLayer};
use crate::sites::Hooks;
use crate::step::{LinearFactory, StepDecoder};

/// (group, module, input site kind, [out, in] from (d, inner), TEAL-masked)
type Row = (
    &'static str,
    &'static str,
    &'static str,
    fn(usize, usize) -> [usize; 2],
    bool,
);

const LINEARS: [Row; 4] = [
    (
        "attention",
        "attn.c_attn",
        "attn_in",
        |d, _| [3 * d, d],
        false,
    ),
    ("attention", "attn.c_proj", "attn_ctx", |d, _| [d, d], false),
    ("mlp", "mlp.c_fc", "mlp_in", |d, i| [i, d], true),
    ("mlp", "mlp.c_proj", "mlp_act", |d, i| [d, i], true),
];

impl HookedLm for Gpt2 {
    fn family(&self) -> ModelFamily {
        ModelFamily::Gpt2
    }

    fn architecture(&self) -> Architecture {
        Architecture::Transformer
    }

    fn config(&self) -> ModelConfig {
        ModelConfig::Gpt2(self.config.clone())
    }

    fn num_layers(&self) -> usize {
        self.blocks.len()
    }

    fn hidden_size(&self) -> usize {
        self.config.n_embd
    }

    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    fn max_positions(&self) -> Option<usize> {
        Some(self.config.n_positions)
    }

    fn special_token_ids(&self) -> (Option<i64>, Option<i64>) {
        (self.config.pad_token_id, self.config.eos_token_id)
    }

    fn layer_site_kinds(&self) -> &'static [&'static str] {
        &["block_out", "mlp_act", "attn_probs"]
    }

    fn site_kind_width(&self, kind: &str) -> Option<usize> {
        let c = &self.config;
        match kind {
            "block_out" | "attn_in" | "attn_ctx" | "mlp_in" => Some(c.n_embd),
            "mlp_act" => Some(c.inner_size()),
            "attn_probs" => Some(c.n_head),
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
        Gpt2::embed(self, input_ids, attention_mask)
    }

    fn forward_hooked(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Tensor<2>,
        hooks: &mut Hooks,
    ) -> Result<Tensor<3>> {
        Gpt2::forward_hooked(self, input_ids, attention_mask, hooks)
    }

    fn save_pretrained(&self, dir: &Path) -> Result<()> {
        Gpt2::save_pretrained(self, dir)
    }

    fn linear_layers(&self) -> Vec<LinearLayer> {
        let (d, inner) = (self.config.n_embd, self.config.inner_size());
        (0..self.num_layers())
            .flat_map(|block| {
                LINEARS.iter().map(
                    move |&(group, module, site, shape, mlp_input)| LinearLayer {
                        block,
                        group: group.into(),
                        module: module.into(),
                        name: format!("transformer.h.{block}.{module}.weight"),
                        input_site: format!("{site}.{block}"),
                        shape: shape(d, inner),
                        hf_in_out: true,
                        mlp_input,
                    },
                )
            })
            .collect()
    }

    fn linear_weight_mut(&mut self, layer: &LinearLayer) -> Option<&mut Param<Tensor<2>>> {
        let b = self.blocks.get_mut(layer.block)?;
        Some(match layer.module.as_str() {
            "attn.c_attn" => &mut b.c_attn.weight,
            "attn.c_proj" => &mut b.attn_c_proj.weight,
            "mlp.c_fc" => &mut b.c_fc.weight,
            "mlp.c_proj" => &mut b.mlp_c_proj.weight,
            _ => return None,
        })
    }

    fn parameter_groups(&self) -> BTreeMap<String, usize> {
        let sum = |f: &dyn Fn(&super::Gpt2Block) -> usize| self.blocks.iter().map(f).sum::<usize>();
        BTreeMap::from([
            (
                "embeddings".to_string(),
                self.wte.num_params() + self.wpe.num_params(),
            ),
            (
                "attention".to_string(),
                sum(&|b| b.c_attn.num_params() + b.attn_c_proj.num_params()),
            ),
            (
                "mlp".to_string(),
                sum(&|b| b.c_fc.num_params() + b.mlp_c_proj.num_params()),
            ),
            (
                "norms".to_string(),
                sum(&|b| b.ln_1.num_params() + b.ln_2.num_params()) + self.ln_f.num_params(),
            ),
            (
                "lm_head".to_string(),
                self.lm_head.as_ref().map_or(0, |h| h.num_params()),
            ),
        ])
    }

    fn step_decoder(&self, linears: &dyn LinearFactory) -> Result<Box<dyn StepDecoder>> {
        Ok(Box::new(super::decode::Gpt2Step::new(self, linears)?))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}
