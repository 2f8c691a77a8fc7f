//! What a model family implements: the [`HookedLm`] trait.
//!
//! A family is one module (`gpt2`, `mamba`, …) plus one `impl HookedLm`, and one entry in
//! `loader::FAMILIES` (the `model_type` it loads) and in [`crate::config::ModelConfig`] /
//! [`crate::config::ModelFamily`] (the lists of families). Nothing else in the workspace matches
//! on families: analyses, pruning and decoding ask the model through this trait (its sites, its
//! linear layers, its neurons, its step decoder).

use std::any::Any;
use std::collections::BTreeMap;
use std::path::Path;

use burn::module::Param;
use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::config::{ModelConfig, ModelFamily};
use crate::error::{ModelError, Result};
use crate::sites::Hooks;
use crate::step::{LinearFactory, StepDecoder};

/// The broad kind of sequence mixing a family uses (analyses choose measures by it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Architecture {
    /// Softmax attention (GPT-2, OPT, Llama, …).
    Transformer,
    /// A selective state-space model (Mamba).
    StateSpace,
}

/// One linear layer of a model, as pruning and sparse decoding see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinearLayer {
    /// Block index.
    pub block: usize,
    /// The group it belongs to (what `--layers` selects), e.g. `attention`, `mlp`, `in_proj`.
    pub group: String,
    /// The module path inside the block, e.g. `attn.c_attn` or `mixer.in_proj`.
    pub module: String,
    /// The Hugging Face weight name, e.g. `transformer.h.0.attn.c_attn.weight`.
    pub name: String,
    /// The site holding the layer's input (readable by name, see [`crate::sites`]).
    pub input_site: String,
    /// Weight shape [out, in].
    pub shape: [usize; 2],
    /// Whether the Hugging Face tensor is stored [in, out] (GPT-2's Conv1D) rather than [out, in].
    pub hf_in_out: bool,
    /// Whether TEAL-style decoding masks this layer's input: the MLP's linear layers of GPT-2
    /// and Mamba, every linear layer of OPT and the Llama family (TEAL's own set). The name is
    /// historical.
    pub mlp_input: bool,
}

impl LinearLayer {
    /// Elements of the weight matrix.
    pub fn weight_elements(&self) -> usize {
        self.shape[0] * self.shape[1]
    }
}

/// A causal language model family with named hook sites.
///
/// Sites are `hidden_states.{0..=L}` (every family) and `{kind}.{layer}` for the kinds of
/// [`HookedLm::layer_site_kinds`] plus the by-name-only kinds answered by
/// [`HookedLm::site_kind_width`].
pub trait HookedLm: std::fmt::Debug + Send + Sync + Any {
    /// The family.
    fn family(&self) -> ModelFamily;
    /// Its kind of sequence mixing.
    fn architecture(&self) -> Architecture;
    /// The configuration.
    fn config(&self) -> ModelConfig;
    /// Number of blocks.
    fn num_layers(&self) -> usize;
    /// Residual stream width.
    fn hidden_size(&self) -> usize;
    /// Width of `hidden_states.{i}` (the residual width, except where the last entry is
    /// projected, as OPT-350m's `project_out` does).
    fn hidden_state_width(&self, i: usize) -> usize {
        let _ = i;
        self.hidden_size()
    }
    /// Vocabulary size (rows of the embedding).
    fn vocab_size(&self) -> usize;
    /// Maximum sequence length, if the family has one.
    fn max_positions(&self) -> Option<usize>;
    /// `pad_token_id` and `eos_token_id` of the config.
    fn special_token_ids(&self) -> (Option<i64>, Option<i64>);
    /// The per-layer site kinds recorded by `Capture::all`, in a stable order.
    fn layer_site_kinds(&self) -> &'static [&'static str];
    /// The channel width of a per-layer site kind (by-name-only kinds included); `None` when the
    /// family has no such site.
    fn site_kind_width(&self, kind: &str) -> Option<usize>;
    /// Values per token a captured site of `kind` holds: its width, except for sites that hold
    /// more than one vector per token (a state-space model's `[E, N]` state). Used by
    /// [`crate::CausalLm::forward_memory`]; the default is [`Self::site_kind_width`].
    fn site_kind_values_per_token(&self, kind: &str) -> Option<usize> {
        self.site_kind_width(kind)
    }
    /// The shape transformers' hooks see for a site of `kind` whose shape here is `shape` (same
    /// values, same row-major order): the shape `cargo xtask dump` writes. The default is
    /// `shape` itself.
    fn hf_site_shape(&self, kind: &str, shape: &[usize]) -> Vec<usize> {
        let _ = kind;
        shape.to_vec()
    }
    /// Site kinds that can be recorded but not edited.
    fn read_only_site_kinds(&self) -> &'static [&'static str] {
        &[]
    }
    /// The site kind whose channels are a block's neurons (GPT-2 `mlp_act`, Mamba
    /// `mixer_gated`): the site the neuron analyses study.
    fn neuron_site_kind(&self) -> &'static str;
    /// The site kind holding a block's softmax attention probabilities, if it has one.
    fn attention_site_kind(&self) -> Option<&'static str> {
        None
    }
    /// The site kind holding a block's input-dependent step size Δ (selective SSMs), if any.
    fn delta_site_kind(&self) -> Option<&'static str> {
        None
    }
    /// The input of block 0 (the embedding output) for ids and mask [batch, seq], exactly as the
    /// forward pass computes it.
    fn embed(&self, input_ids: Tensor<2, Int>, attention_mask: Tensor<2>) -> Tensor<3>;
    /// Runs the model on ids [batch, seq] with mask [batch, seq], recording and editing sites
    /// through `hooks`; returns logits [batch, seq, vocab]. Inputs are already validated.
    fn forward_hooked(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Tensor<2>,
        hooks: &mut Hooks,
    ) -> Result<Tensor<3>>;
    /// Writes `config.json` + `model.safetensors` in Hugging Face layout.
    fn save_pretrained(&self, dir: &Path) -> Result<()>;
    /// Every linear layer, in forward order.
    fn linear_layers(&self) -> Vec<LinearLayer>;
    /// The burn parameter (stored [in, out]) behind a linear layer.
    fn linear_weight_mut(&mut self, layer: &LinearLayer) -> Option<&mut Param<Tensor<2>>>;
    /// Parameter counts by component (e.g. `embeddings`, `attention`, `mlp`, `norms`).
    fn parameter_groups(&self) -> BTreeMap<String, usize>;
    /// A one-token-at-a-time CPU decoder whose linear layers come from `linears`.
    fn step_decoder(&self, linears: &dyn LinearFactory) -> Result<Box<dyn StepDecoder>> {
        let _ = linears;
        Err(ModelError::Invalid(format!(
            "the {} family has no token-by-token decoder",
            self.family()
        )))
    }
    /// Logits without any hook, for ids [batch, seq] and an optional mask (all ones when
    /// `None`): [`HookedLm::forward_hooked`] with nothing recorded or edited.
    fn plain_logits(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2>>,
    ) -> Result<Tensor<3>> {
        let mask = attention_mask.unwrap_or_else(|| {
            let [b, s] = input_ids.dims();
            Tensor::ones([b, s], &input_ids.device())
        });
        let capture = crate::sites::Capture::none();
        let mut hooks = Hooks::new(&capture, None, mask.clone());
        self.forward_hooked(input_ids, mask, &mut hooks)
    }
    /// `self` as [`Any`], for analyses that need one family's internals.
    fn as_any(&self) -> &dyn Any;
    /// `self` as mutable [`Any`].
    fn as_any_mut(&mut self) -> &mut dyn Any;
}
