//! Named hook points: what a forward pass records ([`Capture`]) and how it edits activations on the way
//! through ([`Intervention`]).
//!
//! Site names (l = layer index, i = hidden-state index):
//! - both families: `block_out.{l}` (residual stream after layer l, [batch, seq, hidden]) and
//!   `hidden_states.{i}` (transformers' `output_hidden_states`; GPT-2: 0 = embeddings, i = block_out.{i-1},
//!   last = ln_f(…); Mamba: i = block_out.{i} for i < layers, last = norm_f(…); no embedding entry);
//! - GPT-2: `mlp_act.{l}` ([batch, seq, n_inner], input of `mlp.c_proj`), `attn_probs.{l}`
//!   ([batch, heads, seq_q, seq_k], after the causal/padding mask and softmax);
//! - Mamba: `mixer_gated.{l}` ([batch, seq, intermediate], input of `mixer.out_proj`), `mixer_dt.{l}`
//!   (Δ after softplus, [batch, seq, intermediate]), `ssm_state.{l}` (state h_t after each step,
//!   [batch, seq, intermediate, state_size], recorded only when asked for by name; read-only);
//! - linear-layer inputs, recorded only when asked for by name (whole-model pruning reads them):
//!   GPT-2 `attn_in.{l}` (ln_1 output, input of `attn.c_attn`), `attn_ctx.{l}` (attention context,
//!   input of `attn.c_proj`), `mlp_in.{l}` (ln_2 output, input of `mlp.c_fc`) and `mlp_act.{l}`;
//!   Mamba `mixer_in.{l}` (the block's RMSNorm output, input of `in_proj`), `mixer_conv.{l}` (activated
//!   convolution output, input of `x_proj`), `mixer_dt_in.{l}` (the low-rank Δ, input of `dt_proj`)
//!   and `mixer_gated.{l}`.
//!
//! Edits happen where the site is computed, before the forward continues, and a captured site holds the
//! edited value. Edits restricted to channels act on the last axis of 3-D sites and on the head axis (1)
//! of `attn_probs`.

use std::collections::{BTreeMap, BTreeSet};

use burn::tensor::{Bool, Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::error::{ModelError, Result};

/// A recorded site activation: rank 3 for per-token sites, rank 4 for `attn_probs` and `ssm_state`.
#[derive(Debug, Clone)]
pub enum SiteTensor {
    /// [batch, seq, width].
    Rank3(Tensor<3>),
    /// [batch, heads, seq, seq] (`attn_probs`) or [batch, seq, intermediate, state] (`ssm_state`).
    Rank4(Tensor<4>),
}

impl SiteTensor {
    /// The shape.
    pub fn dims(&self) -> Vec<usize> {
        match self {
            Self::Rank3(t) => t.dims().to_vec(),
            Self::Rank4(t) => t.dims().to_vec(),
        }
    }

    /// The values (row-major) as f32.
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        let data = match self {
            Self::Rank3(t) => t.to_data(),
            Self::Rank4(t) => t.to_data(),
        };
        data.try_into_vec_as::<f32>()
            .map_err(|e| ModelError::Backend(format!("{e:?}")))
    }

    /// The rank-3 tensor, if this is one.
    pub fn as_rank3(&self) -> Option<&Tensor<3>> {
        match self {
            Self::Rank3(t) => Some(t),
            Self::Rank4(_) => None,
        }
    }

    /// The rank-4 tensor, if this is one.
    pub fn as_rank4(&self) -> Option<&Tensor<4>> {
        match self {
            Self::Rank4(t) => Some(t),
            Self::Rank3(_) => None,
        }
    }
}

/// Which sites a forward pass records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capture {
    /// Every site except `ssm_state.*` (large; only recorded by name).
    pub all: bool,
    /// Sites recorded by name.
    pub names: BTreeSet<String>,
}

impl Capture {
    /// Records nothing (logits only).
    pub fn none() -> Self {
        Self::default()
    }

    /// Records `hidden_states.*` and the model's per-layer site kinds
    /// ([`crate::HookedLm::layer_site_kinds`]) that are not read-only (so not `ssm_state.*`);
    /// the linear-layer inputs and read-only kinds are recorded only when named.
    pub fn all() -> Self {
        Self {
            all: true,
            names: BTreeSet::new(),
        }
    }

    /// Records the named sites.
    pub fn sites<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            all: false,
            names: names.into_iter().map(Into::into).collect(),
        }
    }

    /// Also records `name`.
    pub fn with(mut self, name: impl Into<String>) -> Self {
        self.names.insert(name.into());
        self
    }

    /// Whether `name` is recorded by a model whose [`Capture::all`] kinds are `all_kinds`.
    pub fn records(&self, name: &str, all_kinds: &[&str]) -> bool {
        self.names.contains(name)
            || (self.all
                && (name.starts_with("hidden_states.")
                    || all_kinds
                        .iter()
                        .any(|k| name.strip_prefix(k).is_some_and(|r| r.starts_with('.')))))
    }

    fn is_empty(&self) -> bool {
        !self.all && self.names.is_empty()
    }
}

/// Where a per-channel mean for [`Edit::Mean`] comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum MeanSource {
    /// The mean over the current batch's real (non-padding) positions, per channel (per head for
    /// `attn_probs`, over batch, query and key positions).
    Batch,
    /// Given per-channel means (length = site width; for `attn_probs`, one value per head).
    Given(Vec<f32>),
}

/// How a site's values are replaced.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // edits are few; boxing `Set` buys nothing
pub enum Edit {
    /// Set to 0.
    Zero,
    /// Set to a per-channel mean.
    Mean(MeanSource),
    /// Multiply by a factor.
    Scale(f32),
    /// Add N(0, std²) noise drawn from ChaCha8 seeded with `seed` over the whole site (row-major), so the
    /// same seed gives the same noise whatever the channel restriction.
    AddNoise {
        /// Standard deviation.
        std: f32,
        /// RNG seed.
        seed: u64,
    },
    /// Replace by a given tensor of exactly the site's shape.
    Set(SiteTensor),
    /// Magnitude masking (TEAL): keep x where |x| > τ, set the rest to 0 (τ = 0 leaves every
    /// non-zero value). τ must be finite and ≥ 0.
    Threshold(f32),
}

/// Which channels an edit touches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Channels {
    /// Every channel of every batch element.
    #[default]
    All,
    /// These channels, in every batch element.
    Only(Vec<usize>),
    /// Element i of the batch gets channels `[i]` (possibly none): many single-neuron ablations in one
    /// forward pass. The length must equal the batch size.
    PerExample(Vec<Vec<usize>>),
}

/// One edit of one site.
#[derive(Debug, Clone)]
pub struct SiteEdit {
    /// Site name, e.g. `mlp_act.3`.
    pub site: String,
    /// What to do.
    pub edit: Edit,
    /// Where.
    pub channels: Channels,
}

/// A set of site edits applied during one forward pass (in order, for edits of the same site).
#[derive(Debug, Clone, Default)]
pub struct Intervention {
    /// The edits.
    pub edits: Vec<SiteEdit>,
}

impl Intervention {
    /// No edits.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an edit of every channel of `site`.
    pub fn edit(mut self, site: impl Into<String>, edit: Edit) -> Self {
        self.edits.push(SiteEdit {
            site: site.into(),
            edit,
            channels: Channels::All,
        });
        self
    }

    /// Adds an edit restricted to `channels`.
    pub fn edit_channels(
        mut self,
        site: impl Into<String>,
        edit: Edit,
        channels: Channels,
    ) -> Self {
        self.edits.push(SiteEdit {
            site: site.into(),
            edit,
            channels,
        });
        self
    }

    /// One single-channel edit per batch element: element i gets `edit` on channel `channels[i]`.
    pub fn per_example(site: impl Into<String>, edit: Edit, channels: &[usize]) -> Self {
        Self::new().edit_channels(
            site,
            edit,
            Channels::PerExample(channels.iter().map(|&c| vec![c]).collect()),
        )
    }

    /// The distinct site names that are edited.
    pub fn sites(&self) -> BTreeSet<&str> {
        self.edits.iter().map(|e| e.site.as_str()).collect()
    }
}

/// Per-forward hook state: applies edits and records captures (built by `CausalLm::forward`;
/// a family's `forward_hooked` passes each site through it).
pub struct Hooks<'a> {
    capture: &'a Capture,
    intervention: Option<&'a Intervention>,
    /// [batch, seq], 1 = real token.
    mask: Tensor<2>,
    /// The site kinds [`Capture::all`] records.
    all_kinds: Vec<&'static str>,
    pub(crate) sites: BTreeMap<String, SiteTensor>,
}

impl<'a> Hooks<'a> {
    pub(crate) fn new(
        capture: &'a Capture,
        intervention: Option<&'a Intervention>,
        mask: Tensor<2>,
    ) -> Self {
        let intervention = intervention.filter(|i| !i.edits.is_empty());
        Self {
            capture,
            intervention,
            mask,
            all_kinds: Vec::new(),
            sites: BTreeMap::new(),
        }
    }

    /// The site kinds [`Capture::all`] records for this model (besides `hidden_states`).
    pub(crate) fn with_all_kinds(mut self, kinds: Vec<&'static str>) -> Self {
        self.all_kinds = kinds;
        self
    }

    fn active(&self) -> bool {
        !self.capture.is_empty() || self.intervention.is_some()
    }

    pub(crate) fn wants(&self, name: &str) -> bool {
        self.capture.records(name, &self.all_kinds)
    }

    /// Whether `name` is recorded or edited.
    pub(crate) fn touches(&self, name: &str) -> bool {
        self.wants(name)
            || self
                .intervention
                .is_some_and(|iv| iv.edits.iter().any(|e| e.site == name))
    }

    /// Edits then records a per-token site [batch, seq, width].
    pub(crate) fn site3(
        &mut self,
        name: impl FnOnce() -> String,
        x: Tensor<3>,
    ) -> Result<Tensor<3>> {
        if !self.active() {
            return Ok(x);
        }
        let name = name();
        let mut x = x;
        if let Some(iv) = self.intervention {
            for e in iv.edits.iter().filter(|e| e.site == name) {
                x = apply3(x, e, &self.mask)?;
            }
        }
        if self.capture.records(&name, &self.all_kinds) {
            self.sites.insert(name, SiteTensor::Rank3(x.clone()));
        }
        Ok(x)
    }

    /// Edits then records `attn_probs` [batch, heads, seq, seq] (channels = heads).
    pub(crate) fn site4(
        &mut self,
        name: impl FnOnce() -> String,
        x: Tensor<4>,
    ) -> Result<Tensor<4>> {
        if !self.active() {
            return Ok(x);
        }
        let name = name();
        let mut x = x;
        if let Some(iv) = self.intervention {
            for e in iv.edits.iter().filter(|e| e.site == name) {
                x = apply4(x, e, &self.mask)?;
            }
        }
        if self.capture.records(&name, &self.all_kinds) {
            self.sites.insert(name, SiteTensor::Rank4(x.clone()));
        }
        Ok(x)
    }

    /// Records a read-only site.
    pub(crate) fn record4(&mut self, name: String, x: Tensor<4>) {
        self.sites.insert(name, SiteTensor::Rank4(x));
    }
}

fn channel_mask(
    channels: &Channels,
    batch: usize,
    width: usize,
    site: &str,
) -> Result<Option<Vec<bool>>> {
    let check = |c: usize| {
        if c >= width {
            Err(ModelError::Invalid(format!(
                "intervention on `{site}`: channel {c} out of range (width {width})"
            )))
        } else {
            Ok(())
        }
    };
    match channels {
        Channels::All => Ok(None),
        Channels::Only(cs) => {
            let mut row = vec![false; width];
            for &c in cs {
                check(c)?;
                row[c] = true;
            }
            Ok(Some(row.repeat(batch)))
        }
        Channels::PerExample(per) => {
            if per.len() != batch {
                return Err(ModelError::Invalid(format!(
                    "intervention on `{site}`: {} per-example channel lists for a batch of {batch}",
                    per.len()
                )));
            }
            let mut m = vec![false; batch * width];
            for (b, cs) in per.iter().enumerate() {
                for &c in cs {
                    check(c)?;
                    m[b * width + c] = true;
                }
            }
            Ok(Some(m))
        }
    }
}

fn noise(dims: &[usize], std: f32, seed: u64, site: &str) -> Result<Vec<f32>> {
    let normal = Normal::new(0.0f32, std).map_err(|e| {
        ModelError::Invalid(format!("intervention on `{site}`: noise std {std}: {e}"))
    })?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n: usize = dims.iter().product();
    Ok((0..n).map(|_| normal.sample(&mut rng)).collect())
}

fn threshold<const D: usize>(x: Tensor<D>, tau: f32, site: &str) -> Result<Tensor<D>> {
    if !(tau.is_finite() && tau >= 0.0) {
        return Err(ModelError::Invalid(format!(
            "intervention on `{site}`: threshold {tau} must be finite and >= 0"
        )));
    }
    let drop = x.clone().abs().lower_equal_elem(tau);
    Ok(x.mask_fill(drop, 0.0))
}

fn apply3(x: Tensor<3>, e: &SiteEdit, mask: &Tensor<2>) -> Result<Tensor<3>> {
    let [b, s, w] = x.dims();
    let device = x.device();
    let edited = match &e.edit {
        Edit::Zero => x.zeros_like(),
        Edit::Threshold(t) => threshold(x.clone(), *t, &e.site)?,
        Edit::Scale(f) => x.clone().mul_scalar(*f),
        Edit::Mean(MeanSource::Given(v)) => {
            if v.len() != w {
                return Err(ModelError::Invalid(format!(
                    "intervention on `{}`: {} given means for width {w}",
                    e.site,
                    v.len()
                )));
            }
            Tensor::<1>::from_data(TensorData::new(v.clone(), [w]), &device)
                .reshape([1, 1, w])
                .expand([b, s, w])
        }
        Edit::Mean(MeanSource::Batch) => {
            let m = mask.clone().reshape([b, s, 1]);
            let count = m.clone().sum().reshape([1, 1, 1]).clamp_min(1.0);
            let mean = (x.clone() * m).sum_dims(&[0, 1]) / count;
            mean.expand([b, s, w])
        }
        Edit::AddNoise { std, seed } => {
            let n = noise(&[b, s, w], *std, *seed, &e.site)?;
            x.clone() + Tensor::<3>::from_data(TensorData::new(n, [b, s, w]), &device)
        }
        Edit::Set(t) => match t {
            SiteTensor::Rank3(t) if t.dims() == [b, s, w] => t.clone().to_device(&device),
            other => {
                return Err(ModelError::Invalid(format!(
                    "intervention on `{}`: Set tensor has shape {:?}, the site has [{b}, {s}, {w}]",
                    e.site,
                    other.dims()
                )));
            }
        },
    };
    match channel_mask(&e.channels, b, w, &e.site)? {
        None => Ok(edited),
        Some(m) => {
            let m = Tensor::<3, Bool>::from_data(TensorData::new(m, [b, 1, w]), &device)
                .expand([b, s, w]);
            Ok(x.mask_where(m, edited))
        }
    }
}

fn apply4(x: Tensor<4>, e: &SiteEdit, mask: &Tensor<2>) -> Result<Tensor<4>> {
    let [b, h, q, k] = x.dims();
    let device = x.device();
    let edited = match &e.edit {
        Edit::Zero => x.zeros_like(),
        Edit::Threshold(t) => threshold(x.clone(), *t, &e.site)?,
        Edit::Scale(f) => x.clone().mul_scalar(*f),
        Edit::Mean(MeanSource::Given(v)) => {
            if v.len() != h {
                return Err(ModelError::Invalid(format!(
                    "intervention on `{}`: {} given means for {h} heads",
                    e.site,
                    v.len()
                )));
            }
            Tensor::<1>::from_data(TensorData::new(v.clone(), [h]), &device)
                .reshape([1, h, 1, 1])
                .expand([b, h, q, k])
        }
        Edit::Mean(MeanSource::Batch) => {
            // real query x real key pairs
            let m = mask.clone();
            let pair = m.clone().reshape([b, 1, q, 1]) * m.reshape([b, 1, 1, k]);
            let count = pair.clone().sum().reshape([1, 1, 1, 1]).clamp_min(1.0);
            let mean = (x.clone() * pair).sum_dims(&[0, 2, 3]) / count;
            mean.expand([b, h, q, k])
        }
        Edit::AddNoise { std, seed } => {
            let n = noise(&[b, h, q, k], *std, *seed, &e.site)?;
            x.clone() + Tensor::<4>::from_data(TensorData::new(n, [b, h, q, k]), &device)
        }
        Edit::Set(t) => match t {
            SiteTensor::Rank4(t) if t.dims() == [b, h, q, k] => t.clone().to_device(&device),
            other => {
                return Err(ModelError::Invalid(format!(
                    "intervention on `{}`: Set tensor has shape {:?}, the site has [{b}, {h}, {q}, {k}]",
                    e.site,
                    other.dims()
                )));
            }
        },
    };
    match channel_mask(&e.channels, b, h, &e.site)? {
        None => Ok(edited),
        Some(m) => {
            let m = Tensor::<4, Bool>::from_data(TensorData::new(m, [b, h, 1, 1]), &device)
                .expand([b, h, q, k]);
            Ok(x.mask_where(m, edited))
        }
    }
}
