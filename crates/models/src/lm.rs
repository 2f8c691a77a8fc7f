//! The family-agnostic entry point: [`CausalLm`] loads any family and runs a forward pass that records
//! and edits named sites (see [`crate::sites`]).

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::config::{ModelConfig, ModelFamily};
use crate::error::{ModelError, Result};
use crate::family::{Architecture, HookedLm, LinearLayer};
use crate::gpt2::Gpt2;
use crate::loader::load_dir;
use crate::mamba::Mamba;
use crate::sites::{Capture, Hooks, Intervention, SiteTensor};

/// A batch of token ids with its attention mask.
#[derive(Debug, Clone)]
pub struct Batch {
    /// [batch, seq] token ids.
    pub input_ids: Tensor<2, Int>,
    /// [batch, seq] 1.0 = real token, 0.0 = padding.
    pub attention_mask: Tensor<2>,
}

impl Batch {
    /// A batch from row-major ids [batch, seq] with every position real.
    pub fn from_ids(ids: &[i64], batch: usize, seq: usize, device: &Device) -> Result<Self> {
        // Check the shape before sizing the all-ones mask from it.
        if batch.checked_mul(seq) != Some(ids.len()) {
            return Err(ModelError::Invalid(format!(
                "batch [{batch}, {seq}] does not match the {} ids given",
                ids.len()
            )));
        }
        Self::from_ids_and_mask(ids, &vec![1.0; ids.len()], batch, seq, device)
    }

    /// A batch from row-major ids and mask (1.0 / 0.0), both [batch, seq].
    pub fn from_ids_and_mask(
        ids: &[i64],
        mask: &[f32],
        batch: usize,
        seq: usize,
        device: &Device,
    ) -> Result<Self> {
        if batch == 0 || seq == 0 {
            return Err(ModelError::Invalid(format!("empty batch [{batch}, {seq}]")));
        }
        let n = batch.checked_mul(seq);
        if n != Some(ids.len()) || n != Some(mask.len()) {
            return Err(ModelError::Invalid(format!(
                "batch [{batch}, {seq}] does not match the {} ids and {} mask values given",
                ids.len(),
                mask.len()
            )));
        }
        // Ids outside i32 (the backends' int type) are errors here rather than a cast panic
        // inside the backend; ids outside the vocabulary are the model's `TokenOutOfVocab`.
        if let Some((i, v)) = ids
            .iter()
            .enumerate()
            .find(|(_, v)| i32::try_from(**v).is_err())
        {
            return Err(ModelError::Invalid(format!(
                "token id {v} at position [{}, {}] does not fit the backend's 32-bit ids",
                i / seq,
                i % seq
            )));
        }
        if let Some(v) = mask.iter().find(|v| **v != 0.0 && **v != 1.0) {
            return Err(ModelError::Invalid(format!(
                "attention mask value {v} is not 0 or 1"
            )));
        }
        Ok(Self {
            input_ids: Tensor::from_data(TensorData::new(ids.to_vec(), [batch, seq]), device),
            attention_mask: Tensor::from_data(TensorData::new(mask.to_vec(), [batch, seq]), device),
        })
    }

    /// [batch, seq]
    pub fn dims(&self) -> [usize; 2] {
        self.input_ids.dims()
    }
}

/// What [`CausalLm::forward`] returns.
#[derive(Debug, Clone)]
pub struct ForwardOutput {
    /// [batch, seq, vocab]
    pub logits: Tensor<3>,
    /// The captured sites by name (e.g. `mlp_act.0`), holding edited values where an intervention applied.
    pub sites: BTreeMap<String, SiteTensor>,
}

/// A causal language model of any family: a boxed [`HookedLm`] with input validation, site
/// bookkeeping and loading in front of it.
#[derive(Debug)]
pub struct CausalLm(Box<dyn HookedLm>);

impl From<Gpt2> for CausalLm {
    fn from(m: Gpt2) -> Self {
        Self::new(m)
    }
}

impl From<Mamba> for CausalLm {
    fn from(m: Mamba) -> Self {
        Self::new(m)
    }
}

impl CausalLm {
    /// An upper estimate of the activation memory of one forward pass over `batch` sequences
    /// of `seq` tokens with every site captured (the loaded weights are not counted: they are
    /// already resident), computed in f64 from the family's site widths, so that no argument
    /// can overflow it: per token and layer, every site kind's values
    /// ([`HookedLm::site_kind_values_per_token`]), and for the attention site `heads × seq`
    /// probabilities; per token the logits. Each is counted three times (the captured copy, the
    /// intermediate it comes from, and a gradient where a stage takes one). Commands check it
    /// against their budget before running ([`sparsity_io::budget`]).
    pub fn forward_memory(&self, batch: usize, seq: usize) -> sparsity_io::budget::MemoryEstimate {
        let m = self.inner();
        let (b, l) = (batch as f64, seq as f64);
        let layers = m.num_layers() as f64;
        let attention = m.attention_site_kind();
        let mut per_token = 0.0;
        let mut heads = 0.0;
        for kind in m.layer_site_kinds() {
            let v = m.site_kind_values_per_token(kind).unwrap_or(0) as f64;
            if Some(*kind) == attention {
                heads += v;
            } else {
                per_token += v;
            }
        }
        if let Some(kind) = attention
            && !m.layer_site_kinds().contains(&kind)
        {
            heads += m.site_kind_width(kind).unwrap_or(0) as f64;
        }
        sparsity_io::budget::MemoryEstimate::new(format!(
            "a forward pass of {} over {batch} × {seq} tokens",
            m.family()
        ))
        .part("layer activations", 3.0 * 4.0 * b * l * layers * per_token)
        .part(
            "attention probabilities",
            3.0 * 4.0 * b * l * l * layers * heads,
        )
        .part("logits", 3.0 * 4.0 * b * l * m.vocab_size() as f64)
    }

    /// Wraps a model of any family.
    pub fn new(model: impl HookedLm) -> Self {
        Self(Box::new(model))
    }

    /// The family's model.
    pub fn inner(&self) -> &dyn HookedLm {
        self.0.as_ref()
    }

    /// The family's model, mutably (e.g. to prune its weights).
    pub fn inner_mut(&mut self) -> &mut dyn HookedLm {
        self.0.as_mut()
    }

    /// The model as a concrete family type, e.g. `downcast_ref::<Mamba>()`.
    pub fn downcast_ref<T: HookedLm>(&self) -> Option<&T> {
        self.0.as_any().downcast_ref::<T>()
    }

    /// The model as a concrete family type, mutably.
    pub fn downcast_mut<T: HookedLm>(&mut self) -> Option<&mut T> {
        self.0.as_any_mut().downcast_mut::<T>()
    }

    /// Loads a model directory, or (feature `hub`) a model id from the local Hugging Face cache.
    pub fn load(dir_or_id: &str, device: &Device) -> Result<Self> {
        let dir = crate::hub::resolve_model_dir(dir_or_id)?;
        Self::load_dir(&dir, device)
    }

    /// Loads a model directory (`config.json` + `model.safetensors` or a sharded index).
    pub fn load_dir(dir: &Path, device: &Device) -> Result<Self> {
        load_dir(dir, device)
    }

    /// Loads a model from `config.json` text and `model.safetensors` bytes held in memory, with
    /// the same parsing and checks as [`Self::load_dir`]; `label` names them in errors.
    pub fn load_from_bytes(
        config_json: &str,
        weights: Vec<u8>,
        label: &Path,
        device: &Device,
    ) -> Result<Self> {
        crate::loader::load_bytes(config_json, weights, label, device)
    }

    /// Writes `config.json` + `model.safetensors` in Hugging Face layout.
    pub fn save_pretrained(&self, dir: &Path) -> Result<()> {
        self.0.save_pretrained(dir)
    }

    /// The family.
    pub fn family(&self) -> ModelFamily {
        self.0.family()
    }

    /// The family's kind of sequence mixing.
    pub fn architecture(&self) -> Architecture {
        self.0.architecture()
    }

    /// The configuration.
    pub fn config(&self) -> ModelConfig {
        self.0.config()
    }

    /// Number of layers (blocks).
    pub fn num_layers(&self) -> usize {
        self.0.num_layers()
    }

    /// Residual stream width.
    pub fn hidden_size(&self) -> usize {
        self.0.hidden_size()
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.0.vocab_size()
    }

    /// Maximum sequence length (GPT-2's `n_positions`; unbounded for Mamba).
    pub fn max_positions(&self) -> Option<usize> {
        self.0.max_positions()
    }

    /// The token id used for padding: `pad_token_id`, else `eos_token_id`, else 0 (0 also when the id is outside the vocabulary). Padded positions are
    /// masked, so the value never changes real positions.
    pub fn pad_token_id(&self) -> i64 {
        let (pad, eos) = self.0.special_token_ids();
        let vocab = self.vocab_size() as i64;
        pad.or(eos)
            .filter(|id| (0..vocab).contains(id))
            .unwrap_or(0)
    }

    /// Every per-layer site of [`HookedLm::layer_site_kinds`] (`ssm_state.*` included, the
    /// by-name-only linear-layer inputs not) and `hidden_states.*`, in a stable order.
    pub fn site_names(&self) -> Vec<String> {
        let n = self.num_layers();
        let mut names: Vec<String> = (0..=n).map(|i| format!("hidden_states.{i}")).collect();
        for kind in self.0.layer_site_kinds() {
            names.extend((0..n).map(|l| format!("{kind}.{l}")));
        }
        names
    }

    /// The channel width of a site: last axis of per-token sites, heads for `attn_probs`, intermediate
    /// size for `ssm_state`.
    pub fn site_width(&self, site: &str) -> Result<usize> {
        let unknown = || ModelError::UnknownSite {
            site: site.to_string(),
            family: self.family().to_string(),
            layers: self.num_layers(),
        };
        let (kind, idx) = site.rsplit_once('.').ok_or_else(unknown)?;
        let idx: usize = idx.parse().map_err(|_| unknown())?;
        let n = self.num_layers();
        if kind == "hidden_states" {
            return if idx <= n {
                Ok(self.0.hidden_state_width(idx))
            } else {
                Err(unknown())
            };
        }
        if idx >= n {
            return Err(unknown());
        }
        self.0.site_kind_width(kind).ok_or_else(unknown)
    }

    /// The site whose channels are block `layer`'s neurons (GPT-2 `mlp_act.{layer}`, Mamba
    /// `mixer_gated.{layer}`).
    pub fn neuron_site(&self, layer: usize) -> String {
        format!("{}.{layer}", self.0.neuron_site_kind())
    }

    /// The input of block 0 (the embedding output) for a batch, [batch, seq, hidden].
    pub fn embed(&self, input: &Batch) -> Tensor<3> {
        self.0
            .embed(input.input_ids.clone(), input.attention_mask.clone())
    }

    /// Every linear layer, in forward order.
    pub fn linear_layers(&self) -> Vec<LinearLayer> {
        self.0.linear_layers()
    }

    /// The inputs TEAL-style decoding masks (those of the linear layers the family marks
    /// [`LinearLayer::mlp_input`]), in forward order, each once, with the total size of the weight
    /// matrices it feeds (q, k and v share one input).
    pub fn mlp_inputs(&self) -> Vec<(String, usize)> {
        let mut out: Vec<(String, usize)> = Vec::new();
        for l in self.linear_layers().into_iter().filter(|l| l.mlp_input) {
            let n = l.weight_elements();
            match out.iter_mut().find(|(site, _)| *site == l.input_site) {
                Some((_, total)) => *total += n,
                None => out.push((l.input_site, n)),
            }
        }
        out
    }

    /// Checks the ids against the vocabulary and the sites against the model.
    fn validate(
        &self,
        input: &Batch,
        capture: &Capture,
        intervention: Option<&Intervention>,
    ) -> Result<()> {
        let [b, s] = input.dims();
        let [mb, ms] = input.attention_mask.dims();
        if [b, s] != [mb, ms] {
            return Err(ModelError::Invalid(format!(
                "input_ids [{b}, {s}] and attention_mask [{mb}, {ms}] differ in shape"
            )));
        }
        if b == 0 || s == 0 {
            return Err(ModelError::Invalid(format!("empty batch [{b}, {s}]")));
        }
        let vocab = self.vocab_size();
        let ids = input
            .input_ids
            .to_data()
            .try_into_vec_as::<i64>()
            .map_err(|e| ModelError::Backend(format!("{e:?}")))?;
        if let Some((i, &id)) = ids
            .iter()
            .enumerate()
            .find(|(_, id)| **id < 0 || **id as usize >= vocab)
        {
            return Err(ModelError::TokenOutOfVocab {
                id,
                row: i / s,
                col: i % s,
                vocab_size: vocab,
            });
        }
        if let Some(max) = self.max_positions()
            && s > max
        {
            return Err(ModelError::SequenceTooLong { seq: s, max });
        }
        for name in &capture.names {
            self.site_width(name)?;
        }
        if let Some(iv) = intervention {
            for name in iv.sites() {
                self.site_width(name)?;
                if self
                    .0
                    .read_only_site_kinds()
                    .iter()
                    .any(|k| name.strip_prefix(k).is_some_and(|r| r.starts_with('.')))
                {
                    return Err(ModelError::Invalid(format!("site `{name}` is read-only")));
                }
            }
        }
        Ok(())
    }

    /// Runs the model on `input`, recording the sites named by `capture` and applying `intervention`.
    ///
    /// Works on autodiff devices too (gradients flow through logits and captured sites).
    pub fn forward(
        &self,
        input: &Batch,
        capture: &Capture,
        intervention: Option<&Intervention>,
    ) -> Result<ForwardOutput> {
        self.validate(input, capture, intervention)?;
        let mask = input.attention_mask.clone();
        let read_only = self.0.read_only_site_kinds();
        let all_kinds = self
            .0
            .layer_site_kinds()
            .iter()
            .copied()
            .filter(|k| !read_only.contains(k))
            .collect();
        let mut hooks = Hooks::new(capture, intervention, mask.clone()).with_all_kinds(all_kinds);
        let logits = self
            .0
            .forward_hooked(input.input_ids.clone(), mask, &mut hooks)?;
        Ok(ForwardOutput {
            logits,
            sites: hooks.sites,
        })
    }

    /// Logits only.
    pub fn logits(&self, input: &Batch) -> Result<Tensor<3>> {
        Ok(self.forward(input, &Capture::none(), None)?.logits)
    }
}
