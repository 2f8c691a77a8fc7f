//! The Mamba vs transformer neuron analysis (`cargo xtask analyze`): activation statistics and every
//! sparsity measure per layer, delta-sensitive neurons, causal neurons, attention neurons, efficiency and
//! the comparison between models.
//!
//! Every number comes from a real forward (or backward) pass of the model on the given texts; a stage that
//! fails stops the run with an [`AnalysisError`] naming the stage, or, with
//! [`AnalysisConfig::keep_going`], records the failure in [`ModelAnalysis::failures`] and leaves that
//! stage's field empty. Nothing is ever substituted.
//!
//! Stages (one module each):
//! - [`collect`]: per-layer, per-site [`sparsity_metrics::NeuronStats`] in both aggregations
//!   (per-sequence mean, the original's; per token), the comprehensive sparsity report per layer, and
//!   layer dynamics over every layer;
//! - [`delta`]: delta-sensitive neurons (Mamba: the original's definition, its legacy pre-softplus
//!   variant, Δ variance, Δ–activation correlation, interventional Δ scaling; GPT-2: the permutation
//!   variant);
//! - [`causal`]: causal neurons by batched single-neuron interventions (KL of the next-token
//!   distribution at the last position, Δ loss), inter-layer impact, the cross-layer influence matrix
//!   and perplexity before/after ablating the top-k set;
//! - [`attention`]: attention neurons (the hidden attention of Mamba, Ali et al. 2024; GPT-2's real
//!   attention probabilities) with the methods `attention_weighted`, `rollout`, `gradient_guided`;
//! - [`efficiency`]: parameters by component, active neurons, forward tokens/s.
//!
//! ```
//! use sparsity_analysis::causal::single_neuron_impacts;
//! use sparsity_models::{CausalLm, Edit, Gpt2, Gpt2Config, cpu_device};
//!
//! // A small randomly initialised GPT-2 (load a real one with `CausalLm::load_dir`).
//! let device = cpu_device();
//! let config = Gpt2Config { vocab_size: 32, n_positions: 16, n_embd: 8, n_layer: 2, n_head: 2, ..Default::default() };
//! let model = CausalLm::from(Gpt2::init(&config, 7, &device)?);
//! let site = sparsity_analysis::neuron_site(&model, 1); // "mlp_act.1"
//! // Zero each of the first four neurons in turn: KL of the next-token distribution, Δ loss.
//! let impacts = single_neuron_impacts(&model, &[1, 2, 3, 4, 5], &site, &[0, 1, 2, 3], &|_| Ok(Edit::Zero), 4, &device)?;
//! assert_eq!(impacts.len(), 4);
//! assert!(impacts.iter().all(|(kl, _)| *kl >= 0.0));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod attention;
pub mod causal;
pub mod collect;
pub mod delta;
pub mod depth;
pub mod efficiency;
pub mod report;
mod tensors;

use std::collections::BTreeMap;
use std::time::Instant;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use sparsity_models::Architecture;
use sparsity_models::lm::CausalLm;
use sparsity_models::text::{BatchOptions, PaddedBatch, PaddingSide, TextTokenizer};

pub use attention::{AttentionMethod, AttentionNeurons, AttentionResult};
pub use causal::{CausalMode, CausalNeurons, CrossLayerInfluence};
pub use collect::{LayerSparsity, SiteSparsity, SparsityAnalysis};
pub use delta::{DeltaRanking, DeltaSensitivity};
pub use efficiency::Efficiency;
pub use report::{Comparison, ReportFiles, compare, write_report};

/// Why an analysis stage failed.
#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    /// A model-side failure (forward pass, site, tokenizer) in the named stage.
    #[error("analysis stage `{stage}` failed for model `{model}`: {source}")]
    Model {
        /// Stage name.
        stage: &'static str,
        /// Model label.
        model: String,
        /// Cause.
        #[source]
        source: Box<sparsity_models::error::ModelError>,
    },
    /// A metrics failure (empty input, NaN) in the named stage.
    #[error("analysis stage `{stage}` failed for model `{model}`: {source}")]
    Metrics {
        /// Stage name.
        stage: &'static str,
        /// Model label.
        model: String,
        /// Cause.
        #[source]
        source: Box<sparsity_metrics::MetricsError>,
    },
    /// An invalid option.
    #[error("invalid analysis option: {0}")]
    Invalid(String),
}

/// Result alias.
pub type Result<T> = std::result::Result<T, AnalysisError>;

/// Options of one analysis run (the original's CLI options and defaults).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnalysisConfig {
    /// Layers analysed in detail (`--layers`, default 0, 1, 2; clipped to the model's depth).
    pub layers: Vec<usize>,
    /// Neurons reported per ranking (`--top-k`, default 10).
    pub top_k: usize,
    /// Texts used at most (`--text-limit`, default 100).
    pub text_limit: usize,
    /// Truncation length in tokens (`--max-length`, default 64).
    pub max_length: usize,
    /// Texts per forward pass.
    pub batch_size: usize,
    /// Run the attention-neuron stage (`--enable-attention`).
    pub enable_attention: bool,
    /// Attention methods (`--attention-methods`).
    pub attention_methods: Vec<AttentionMethod>,
    /// Candidate neurons per layer for the causal stage: the top candidates by |activation × gradient|
    /// (0 = every neuron of the site).
    pub causal_candidates: usize,
    /// Prompts (texts) the causal KL is averaged over.
    pub causal_prompts: usize,
    /// Random sets of k neurons per layer the causal top-k set is compared with (at least 20;
    /// the smallest permutation p-value is 1/(draws + 1), which must survive Holm's correction
    /// over the analysed layers: 99 draws give 0.01).
    pub random_draws: usize,
    /// Intervention used by the causal stage.
    pub causal_mode: CausalMode,
    /// ε of the interventional Δ definition (Δ scaled by 1 ± ε).
    pub delta_epsilon: f32,
    /// Traditional threshold override (default by family: Mamba 0.01, transformer 1e-5).
    pub threshold: Option<f64>,
    /// Seed of every random choice (noise ablations, random neuron sets, bootstrap resamples).
    pub seed: u64,
    /// Bootstrap resamples of the texts behind the neuron-level comparison's intervals
    /// (`--bootstrap`, at least 1000).
    #[serde(default = "default_bootstrap")]
    pub bootstrap_resamples: usize,
    /// Record a failed stage and continue instead of stopping.
    pub keep_going: bool,
    /// Memory budget in bytes for one forward pass's activations (`--max-memory`); `None`: the
    /// memory the system reports available. Checked per model after tokenising, against
    /// [`sparsity_models::CausalLm::forward_memory`] at the batch size and the longest text.
    pub max_memory: Option<u64>,
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        Self {
            layers: vec![0, 1, 2],
            top_k: 10,
            text_limit: 100,
            max_length: 64,
            batch_size: 8,
            enable_attention: false,
            attention_methods: vec![
                AttentionMethod::AttentionWeighted,
                AttentionMethod::GradientGuided,
                AttentionMethod::Rollout,
            ],
            causal_candidates: 64,
            causal_prompts: 16,
            random_draws: 99,
            causal_mode: CausalMode::Scale(0.1),
            delta_epsilon: 0.1,
            threshold: None,
            seed: 0,
            bootstrap_resamples: default_bootstrap(),
            keep_going: false,
            max_memory: None,
        }
    }
}

fn default_bootstrap() -> usize {
    1000
}

impl AnalysisConfig {
    /// Checks the options.
    pub fn validate(&self) -> Result<()> {
        if self.bootstrap_resamples < 1000 {
            return Err(AnalysisError::Invalid(format!(
                "--bootstrap {}: the intervals need at least 1000 resamples",
                self.bootstrap_resamples
            )));
        }
        if self.top_k == 0 {
            return Err(AnalysisError::Invalid("--top-k must be at least 1".into()));
        }
        if self.random_draws < 20 {
            return Err(AnalysisError::Invalid(format!(
                "--random-draws {}: at least 20 random sets are needed for a permutation p-value",
                self.random_draws
            )));
        }
        if self.causal_prompts == 0 {
            return Err(AnalysisError::Invalid(
                "--prompts must be at least 1".into(),
            ));
        }
        if self.text_limit == 0 {
            return Err(AnalysisError::Invalid(
                "--text-limit must be at least 1".into(),
            ));
        }
        if self.max_length < 2 {
            return Err(AnalysisError::Invalid(
                "--max-length must be at least 2".into(),
            ));
        }
        if self.batch_size == 0 {
            return Err(AnalysisError::Invalid(
                "batch size must be at least 1".into(),
            ));
        }
        if self.layers.is_empty() {
            return Err(AnalysisError::Invalid("--layers names no layer".into()));
        }
        if !(self.delta_epsilon > 0.0 && self.delta_epsilon < 1.0) {
            return Err(AnalysisError::Invalid(format!(
                "delta epsilon {} must lie in (0, 1)",
                self.delta_epsilon
            )));
        }
        if let Some(t) = self.threshold
            && !(t.is_finite() && t >= 0.0)
        {
            return Err(AnalysisError::Invalid(format!(
                "--threshold {t} must be finite and >= 0"
            )));
        }
        Ok(())
    }

    /// The sparsity-metrics family (default thresholds) of a model's architecture.
    pub fn metrics_family(architecture: Architecture) -> sparsity_metrics::ModelFamily {
        match architecture {
            Architecture::StateSpace => sparsity_metrics::ModelFamily::Mamba,
            Architecture::Transformer => sparsity_metrics::ModelFamily::Transformer,
        }
    }
}

/// A model with its tokenizer and a label.
#[derive(Debug)]
pub struct AnalysisModel {
    /// Label used in reports (e.g. `demo-gpt2`).
    pub name: String,
    /// The model.
    pub model: CausalLm,
    /// Its tokenizer.
    pub tokenizer: TextTokenizer,
}

/// Tokenised texts of one model: sequences truncated to `max_length`, empty ones dropped.
#[derive(Debug, Clone)]
pub struct TokenizedTexts {
    /// Token ids per text.
    pub sequences: Vec<Vec<u32>>,
    /// Index of each kept text in the input list.
    pub indices: Vec<usize>,
}

impl TokenizedTexts {
    /// Tokenises `texts` (at most `limit`), truncating each to `max_length` tokens and dropping texts
    /// that give fewer than 2 tokens.
    pub fn new(
        tokenizer: &TextTokenizer,
        texts: &[String],
        limit: usize,
        max_length: usize,
    ) -> sparsity_models::Result<Self> {
        let mut sequences = Vec::new();
        let mut indices = Vec::new();
        for (i, t) in texts.iter().take(limit).enumerate() {
            let mut ids = tokenizer.encode(t)?;
            ids.truncate(max_length);
            if ids.len() >= 2 {
                sequences.push(ids);
                indices.push(i);
            }
        }
        if sequences.is_empty() {
            return Err(sparsity_models::error::ModelError::EmptyTextSet {
                source_name: "analysis texts (every text gave fewer than 2 tokens)".into(),
            });
        }
        Ok(Self { sequences, indices })
    }

    /// Right-padded batches of `batch_size` texts.
    pub fn batches(
        &self,
        model: &CausalLm,
        batch_size: usize,
    ) -> sparsity_models::Result<Vec<PaddedBatch>> {
        let options = BatchOptions {
            max_length: None,
            padding_side: PaddingSide::Right,
            pad_id: model.pad_token_id(),
        };
        self.sequences
            .chunks(batch_size.max(1))
            .map(|c| PaddedBatch::new(c, &options))
            .collect()
    }

    /// Total real tokens.
    pub fn tokens(&self) -> usize {
        self.sequences.iter().map(Vec::len).sum()
    }
}

/// A stage that failed under `--keep-going`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageFailure {
    /// Stage name.
    pub stage: String,
    /// The error, as text.
    pub error: String,
}

/// Everything the analysis found for one model. Fields of failed stages (with `keep_going`) are `None`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelAnalysis {
    /// Model label.
    pub model: String,
    /// `gpt2` or `mamba`.
    pub family: String,
    /// The family's kind of sequence mixing (absent in reports written before it was recorded).
    #[serde(default)]
    pub architecture: Option<Architecture>,
    /// Number of layers.
    pub num_layers: usize,
    /// Layers analysed in detail.
    pub layers: Vec<usize>,
    /// Texts and tokens analysed.
    pub num_texts: usize,
    /// Real tokens analysed.
    pub num_tokens: usize,
    /// Activation statistics and sparsity reports.
    pub sparsity: Option<SparsityAnalysis>,
    /// Delta-sensitive neurons per layer.
    pub delta_sensitive: Option<BTreeMap<usize, DeltaSensitivity>>,
    /// Causal neurons per layer, inter-layer impact and cross-layer influence.
    pub causal: Option<CausalNeurons>,
    /// Attention neurons per layer and method (only with `enable_attention`).
    pub attention_neurons: Option<AttentionNeurons>,
    /// Efficiency metrics.
    pub efficiency: Option<Efficiency>,
    /// Stages that failed (only with `keep_going`).
    pub failures: Vec<StageFailure>,
    /// Seconds per stage.
    pub stage_seconds: BTreeMap<String, f64>,
    /// Agreement between the top-k sets of every two rankings of the same layer and site
    /// (absent in reports written before it was recorded).
    #[serde(default)]
    pub ranking_agreement: Vec<RankingAgreement>,
    /// Per-text statistics of every layer's neuron site, the input of the neuron-level comparison
    /// ([`depth`]); not written to the JSON (the comparison is).
    #[serde(skip)]
    pub neuron_texts: Option<depth::NeuronTextStats>,
}

/// How much two rankings of one layer's neurons agree: the Jaccard index of their top-k sets,
/// with what two random k-sets of the site's neurons would give on average, and Spearman's rank
/// correlation of their scores over every neuron both rankings scored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankingAgreement {
    /// Layer.
    pub layer: usize,
    /// The site both rankings score.
    pub site: String,
    /// First ranking (`causal`, `delta:<definition>`, `attention:<method>`).
    pub a: String,
    /// Second ranking.
    pub b: String,
    /// Set size (the shorter of the two top lists).
    pub k: usize,
    /// Neurons in both top-k sets.
    pub shared: usize,
    /// `shared / (2k − shared)`.
    pub jaccard: f64,
    /// The Jaccard index two random k-subsets of the site's `n` neurons give in expectation,
    /// approximated as `s / (2k − s)` with `s = k²/n` (the expected overlap).
    pub chance_jaccard: f64,
    /// Spearman's ρ between the two rankings' scores (average ranks for ties) over the neurons
    /// both scored (the causal stage scores only its candidates); `None` when either score vector
    /// is constant there or fewer than 3 neurons are shared.
    #[serde(default)]
    pub spearman: Option<f64>,
    /// Neurons the correlation is computed over.
    #[serde(default)]
    pub spearman_neurons: usize,
}

/// One ranking's top list and its scores by neuron.
struct Scored {
    name: String,
    site: String,
    top: Vec<usize>,
    scores: BTreeMap<usize, f64>,
}

/// [`RankingAgreement`] of every two rankings that score the same site of the same layer;
/// `width(site)` is the site's neuron count.
pub fn ranking_agreement(
    a: &ModelAnalysis,
    width: &dyn Fn(&str) -> Option<usize>,
) -> Vec<RankingAgreement> {
    let mut by_layer: BTreeMap<usize, Vec<Scored>> = BTreeMap::new();
    let ids = |top: &[RankedNeuron]| top.iter().map(|r| r.neuron).collect::<Vec<usize>>();
    let full = |s: &[f64]| {
        s.iter()
            .copied()
            .enumerate()
            .collect::<BTreeMap<usize, f64>>()
    };
    if let Some(c) = &a.causal {
        for (l, lc) in &c.layers {
            by_layer.entry(*l).or_default().push(Scored {
                name: "causal".into(),
                site: lc.site.clone(),
                top: ids(&lc.top),
                scores: lc.impacts.iter().map(|i| (i.neuron, i.kl)).collect(),
            });
        }
    }
    if let Some(d) = &a.delta_sensitive {
        for (l, ds) in d {
            for (k, r) in &ds.rankings {
                by_layer.entry(*l).or_default().push(Scored {
                    name: format!("delta:{k}"),
                    site: r.site.clone(),
                    top: ids(&r.top),
                    scores: full(&r.scores),
                });
            }
        }
    }
    if let Some(at) = &a.attention_neurons {
        for (l, ms) in &at.layers {
            for (m, r) in ms {
                by_layer.entry(*l).or_default().push(Scored {
                    name: format!("attention:{m}"),
                    site: r.site.clone(),
                    top: ids(&r.top),
                    scores: full(&r.scores),
                });
            }
        }
    }
    let mut out = Vec::new();
    for (l, rankings) in &by_layer {
        for (i, x) in rankings.iter().enumerate() {
            for y in &rankings[i + 1..] {
                let k = x.top.len().min(y.top.len());
                let Some(n) = width(&x.site) else { continue };
                if x.site != y.site || k == 0 || n == 0 {
                    continue;
                }
                let (tx, ty) = (&x.top[..k], &y.top[..k]);
                let shared = tx.iter().filter(|v| ty.contains(v)).count();
                let s = (k * k) as f64 / n as f64;
                let (sx, sy): (Vec<f64>, Vec<f64>) = x
                    .scores
                    .iter()
                    .filter_map(|(j, v)| Some((*v, *y.scores.get(j)?)))
                    .unzip();
                let spearman = if sx.len() >= 3 {
                    sparsity_stats::spearman(&sx, &sy).ok()
                } else {
                    None
                };
                out.push(RankingAgreement {
                    layer: *l,
                    site: x.site.clone(),
                    a: x.name.clone(),
                    b: y.name.clone(),
                    k,
                    shared,
                    jaccard: shared as f64 / (2 * k - shared) as f64,
                    chance_jaccard: s / (2.0 * k as f64 - s),
                    spearman,
                    spearman_neurons: sx.len(),
                });
            }
        }
    }
    out
}

/// Runs every stage on one model.
pub fn analyze_model(
    m: &AnalysisModel,
    texts: &[String],
    config: &AnalysisConfig,
    device: &Device,
) -> Result<ModelAnalysis> {
    config.validate()?;
    let model = &m.model;
    let name = m.name.clone();
    let tok = TokenizedTexts::new(&m.tokenizer, texts, config.text_limit, config.max_length)
        .map_err(model_err("tokenize", &name))?;
    let longest = tok.sequences.iter().map(Vec::len).max().unwrap_or(0);
    model
        .forward_memory(config.batch_size.min(tok.sequences.len().max(1)), longest)
        .check(
            config.max_memory,
            "use a smaller --max-length or fewer texts per batch, or raise --max-memory",
        )
        .map_err(|e| AnalysisError::Invalid(format!("model `{name}`: {e}")))?;
    let layers: Vec<usize> = {
        let mut l: Vec<usize> = config
            .layers
            .iter()
            .copied()
            .filter(|&l| l < model.num_layers())
            .collect();
        l.sort_unstable();
        l.dedup();
        if l.is_empty() {
            return Err(AnalysisError::Invalid(format!(
                "none of the layers {:?} exists in `{name}` ({} layers)",
                config.layers,
                model.num_layers()
            )));
        }
        l
    };
    let mut out = ModelAnalysis {
        model: name.clone(),
        family: model.family().to_string(),
        architecture: Some(model.architecture()),
        num_layers: model.num_layers(),
        layers: layers.clone(),
        num_texts: tok.sequences.len(),
        num_tokens: tok.tokens(),
        sparsity: None,
        delta_sensitive: None,
        causal: None,
        attention_neurons: None,
        efficiency: None,
        failures: Vec::new(),
        stage_seconds: BTreeMap::new(),
        ranking_agreement: Vec::new(),
        neuron_texts: None,
    };

    macro_rules! stage {
        ($label:literal, $field:ident, $call:expr) => {{
            tracing::info!(model = %name, stage = $label, "running");
            let t0 = Instant::now();
            let r: Result<_> = $call;
            out.stage_seconds.insert($label.to_string(), t0.elapsed().as_secs_f64());
            match r {
                Ok(v) => out.$field = Some(v),
                Err(e) if config.keep_going => {
                    tracing::warn!(model = %name, stage = $label, error = %e, "stage failed; continuing (--keep-going)");
                    out.failures.push(StageFailure {
                        stage: $label.to_string(),
                        error: e.to_string(),
                    });
                }
                Err(e) => return Err(e),
            }
        }};
    }

    stage!(
        "sparsity",
        sparsity,
        collect::collect(m, &tok, &layers, config, device)
    );
    let threshold = config.threshold.unwrap_or_else(|| {
        AnalysisConfig::metrics_family(model.architecture()).default_threshold()
    });
    stage!(
        "neuron_texts",
        neuron_texts,
        depth::collect_text_stats(m, &tok, config, threshold, device)
    );
    stage!(
        "delta_sensitive",
        delta_sensitive,
        delta::delta_sensitive(m, &tok, &layers, config, device)
    );
    stage!(
        "causal",
        causal,
        causal::causal_neurons(m, &tok, &layers, config, device)
    );
    if config.enable_attention {
        stage!(
            "attention_neurons",
            attention_neurons,
            attention::attention_neurons(m, &tok, &layers, config, device)
        );
    }
    stage!(
        "efficiency",
        efficiency,
        efficiency::efficiency(m, &tok, config, device)
    );
    out.ranking_agreement = ranking_agreement(&out, &|site| model.site_width(site).ok());
    Ok(out)
}

pub(crate) fn model_err(
    stage: &'static str,
    model: &str,
) -> impl FnOnce(sparsity_models::error::ModelError) -> AnalysisError {
    let model = model.to_string();
    move |source| AnalysisError::Model {
        stage,
        model,
        source: Box::new(source),
    }
}

pub(crate) fn metrics_err(
    stage: &'static str,
    model: &str,
) -> impl FnOnce(sparsity_metrics::MetricsError) -> AnalysisError {
    let model = model.to_string();
    move |source| AnalysisError::Metrics {
        stage,
        model,
        source: Box::new(source),
    }
}

/// The neuron-level site of a model at layer `l` (its family's
/// [`sparsity_models::HookedLm::neuron_site_kind`]: GPT-2 `mlp_act.{l}`, Mamba `mixer_gated.{l}`).
pub fn neuron_site(model: &CausalLm, l: usize) -> String {
    model.neuron_site(l)
}

/// Indices of the `k` largest values, descending; ties by lower index. NaN never ranks first.
pub fn top_k_indices(values: &[f64], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_by(|&a, &b| {
        let (va, vb) = (values[a], values[b]);
        vb.partial_cmp(&va)
            .unwrap_or_else(|| va.is_nan().cmp(&vb.is_nan()))
            .then(a.cmp(&b))
    });
    idx.truncate(k);
    idx
}

/// A ranked neuron.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RankedNeuron {
    /// Neuron (channel) index at its site.
    pub neuron: usize,
    /// The score it was ranked by.
    pub score: f64,
}

/// The top `k` neurons by `scores`.
pub fn ranked(scores: &[f64], k: usize) -> Vec<RankedNeuron> {
    top_k_indices(scores, k)
        .into_iter()
        .map(|i| RankedNeuron {
            neuron: i,
            score: scores[i],
        })
        .collect()
}

/// The result of a whole run: every model's analysis and their comparison.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnalysisRun {
    /// The options used.
    pub config: AnalysisConfig,
    /// Per model.
    pub models: Vec<ModelAnalysis>,
    /// Comparison across models.
    pub comparison: Comparison,
}

/// A plain-text summary of a run: per model, layer and site the mean variance, traditional
/// sparsity and Gini sparsity (per-sequence mean), then the comparison.
pub fn summary(run: &AnalysisRun) -> String {
    let mut out = format!(
        "{:<14} {:>7} {:>10} {:>12} {:>12} {:>10}\n",
        "model", "layer", "site", "mean var", "traditional", "gini"
    );
    for m in &run.models {
        let Some(sp) = &m.sparsity else { continue };
        for (l, ls) in &sp.layers {
            for r in [&ls.block_out, &ls.neurons] {
                out.push_str(&format!(
                    "{:<14} {:>7} {:>10} {:>12.4e} {:>12.3} {:>10.3}\n",
                    m.model,
                    l,
                    r.site.split('.').next().unwrap_or(""),
                    r.mean_variance,
                    r.per_sequence_mean.traditional.sparsity,
                    r.per_sequence_mean.gini.sparsity_from_gini
                ));
            }
        }
    }
    out.push_str(&format!("\n{}\n", run.comparison.summary));
    out
}

/// Analyses every model on the same texts and compares them.
pub fn run(
    models: &[AnalysisModel],
    texts: &[String],
    config: &AnalysisConfig,
    device: &Device,
) -> Result<AnalysisRun> {
    if models.is_empty() {
        return Err(AnalysisError::Invalid("no model to analyse".into()));
    }
    let mut out = Vec::with_capacity(models.len());
    for m in models {
        out.push(analyze_model(m, texts, config, device)?);
    }
    let comparison = compare(&out, config)?;
    Ok(AnalysisRun {
        config: config.clone(),
        models: out,
        comparison,
    })
}

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
