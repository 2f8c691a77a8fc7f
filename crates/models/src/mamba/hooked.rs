//! Mamba as a [`HookedLm`]: its sites, linear layers and parameter groups.

use std::any::Any;
use std::collections::BTreeMap;
use std::path::Path;

use burn::module::{Module, Param};
use burn::tensor::{Int, Tensor};

use super::Mamba;
use crate::config::{MambaConfig, ModelConfig, ModelFamily};
use crate::error::Result;
use crate::family::{Architecture, HookedLm, LinearLayer};
use crate::sites::Hooks;
use crate::step::{LinearFactory, StepDecoder};

/// (group, module, input site kind, [out, in], TEAL-masked)
type Row = (
    &'static str,
    &'static str,
    &'static str,
    fn(&MambaConfig) -> [usize; 2],
    bool,
);

const LINEARS: [Row; 4] = [
    (
        "in_proj",
        "mixer.in_proj",
        "mixer_in",
        |c| [2 * c.inner_size(), c.hidden_size],
        true,
    ),
    (
        "x_proj",
        "mixer.x_proj",
        "mixer_conv",
        |c| [c.dt_rank() + 2 * c.state_size, c.inner_size()],
        false,
    ),
    (
        "dt_proj",
        "mixer.dt_proj",
        "mixer_dt_in",
        |c| [c.inner_size(), c.dt_rank()],
        false,
    ),
    (
        "out_proj",
        "mixer.out_proj",
        "mixer_gated",
        |c| [c.hidden_size, c.inner_size()],
        true,
    ),
];

impl HookedLm for Mamba {
    fn family(&self) -> ModelFamily {
        ModelFamily::Mamba
    }

    fn architecture(&self) -> Architecture {
        Architecture::StateSpace
    }

    fn config(&self) -> ModelConfig {
        ModelConfig::Mamba(self.config.clone())
    }

    fn num_layers(&self) -> usize {
        self.layers.len()
    }

    fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }

    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    fn max_positions(&self) -> Option<usize> {
        None
    }

    fn special_token_ids(&self) -> (Option<i64>, Option<i64>) {
        (self.config.pad_token_id, self.config.eos_token_id)
    }

    fn layer_site_kinds(&self) -> &'static [&'static str] {
        &["block_out", "mixer_gated", "mixer_dt", "ssm_state"]
    }

    fn site_kind_width(&self, kind: &str) -> Option<usize> {
        let c = &self.config;
        match kind {
            "block_out" | "mixer_in" => Some(c.hidden_size),
            "mixer_conv" | "mixer_gated" | "mixer_dt" | "ssm_state" => Some(c.inner_size()),
            "mixer_dt_in" => Some(c.dt_rank()),
            _ => None,
        }
    }

    fn site_kind_values_per_token(&self, kind: &str) -> Option<usize> {
        match kind {
            // every per-token state [E, N] when captured
            "ssm_state" => Some(self.config.inner_size() * self.config.state_size),
            other => self.site_kind_width(other),
        }
    }

    fn read_only_site_kinds(&self) -> &'static [&'static str] {
        &["ssm_state"]
    }

    fn neuron_site_kind(&self) -> &'static str {
        "mixer_gated"
    }

    fn delta_site_kind(&self) -> Option<&'static str> {
        Some("mixer_dt")
    }

    fn embed(&self, input_ids: Tensor<2, Int>, attention_mask: Tensor<2>) -> Tensor<3> {
        let _ = attention_mask;
        Mamba::embed(self, input_ids)
    }

    fn forward_hooked(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Tensor<2>,
        hooks: &mut Hooks,
    ) -> Result<Tensor<3>> {
        Mamba::forward_hooked(self, input_ids, attention_mask, hooks)
    }

    fn save_pretrained(&self, dir: &Path) -> Result<()> {
        Mamba::save_pretrained(self, dir)
    }

    fn linear_layers(&self) -> Vec<LinearLayer> {
        (0..self.num_layers())
            .flat_map(|block| {
                LINEARS.iter().map(
                    move |&(group, module, site, shape, mlp_input)| LinearLayer {
                        block,
                        group: group.into(),
                        module: module.into(),
                        name: format!("backbone.layers.{block}.{module}.weight"),
                        input_site: format!("{site}.{block}"),
                        shape: shape(&self.config),
                        hf_in_out: false,
                        mlp_input,
                    },
                )
            })
            .collect()
    }

    fn linear_weight_mut(&mut self, layer: &LinearLayer) -> Option<&mut Param<Tensor<2>>> {
        let m = &mut self.layers.get_mut(layer.block)?.mixer;
        Some(match layer.module.as_str() {
            "mixer.in_proj" => &mut m.in_proj.weight,
            "mixer.x_proj" => &mut m.x_proj,
            "mixer.dt_proj" => &mut m.dt_proj.weight,
            "mixer.out_proj" => &mut m.out_proj.weight,
            _ => return None,
        })
    }

    fn parameter_groups(&self) -> BTreeMap<String, usize> {
        BTreeMap::from([
            ("embeddings".to_string(), self.embeddings.num_params()),
            (
                "mixer".to_string(),
                self.layers.iter().map(|b| b.mixer.num_params()).sum(),
            ),
            (
                "norms".to_string(),
                self.layers
                    .iter()
                    .map(|b| b.norm.num_params())
                    .sum::<usize>()
                    + self.norm_f.num_params(),
            ),
            (
                "lm_head".to_string(),
                self.lm_head.as_ref().map_or(0, |h| h.num_params()),
            ),
        ])
    }

    fn step_decoder(&self, linears: &dyn LinearFactory) -> Result<Box<dyn StepDecoder>> {
        Ok(Box::new(super::decode::MambaStep::new(self, linears)?))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}
