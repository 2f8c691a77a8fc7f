//! The DeepSeek-sparse-attention sweep: for each sequence length, a dense baseline and DSA at
//! several keep ratios, each trained from scratch with several seeds on the same data; results as
//! one JSON line per run (append-only, so an interrupted sweep resumes), deterministic shards and a
//! Slurm job-array script for clusters, and a report with the statistics
//! ([`sparsity_stats::compare_groups`]: one-way ANOVA, Tukey HSD, Cohen's d and Welch's
//! test against dense with Bonferroni correction, a power note).
//!
//! Fixes relative to the original study (see `docs/dsa.md`): causal top-k (no future keys), a
//! trained indexer (dense warm-up + KL), train and validation windows from disjoint texts, a dense
//! arm, a scaled initialisation (the first loss is ≈ ln V), and `keep_ratio` = fraction of the
//! sequence length kept (the original's code dropped that fraction; `RatioSemantics::LegacyDropped`
//! reads ratios the original's way).

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use sparsity_demo::train::{EvalPoint, TrainConfig, next_token_loss, train};
use sparsity_models::dsa::{AttentionMode, DsaConfig, DsaTransformer, IndexerTraining, SparseImpl};
use sparsity_models::error::{ModelError, Result};
use sparsity_models::util::tensor_to_vec;

use crate::dsa_recall::{RecallQuery, RecallTask, build_recall_stream};

/// Model size preset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// d_model 64, 2 layers, 4 heads, d_ff 256 (CPU).
    Tiny,
    /// The original's d_model 512, 8 heads, 6 layers, d_ff 2048.
    Paper,
}

impl std::str::FromStr for Preset {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "tiny" => Ok(Self::Tiny),
            "paper" => Ok(Self::Paper),
            _ => Err(ModelError::Invalid(format!(
                "preset `{s}`: expected tiny or paper"
            ))),
        }
    }
}

impl Preset {
    /// The preset's name (`tiny`, `paper`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Tiny => "tiny",
            Self::Paper => "paper",
        }
    }

    /// The architecture for a vocabulary and a maximum length.
    pub fn config(self, vocab_size: usize, max_seq_len: usize) -> DsaConfig {
        match self {
            Self::Tiny => DsaConfig::tiny(vocab_size, max_seq_len),
            Self::Paper => DsaConfig::paper(vocab_size, max_seq_len),
        }
    }
}

/// How the sweep's ratios are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RatioSemantics {
    /// `k = max(1, ⌊L · r⌋)`: r is the fraction of the sequence kept (the definition).
    Keep,
    /// `k = max(1, ⌊L · (1 − r)⌋)`: r is the fraction dropped (what the original's code did).
    LegacyDropped,
}

/// Everything that defines a sweep (the same parameters give the same run list and results):
/// the grid, and the [`RunOptions`] every run is trained under (all in one place, so the run
/// ids' hash covers every option by construction).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepParams {
    /// Sequence lengths.
    pub lengths: Vec<usize>,
    /// Ratios (see [`RunOptions::semantics`]); a ratio giving k ≥ L is still run (it equals dense).
    pub ratios: Vec<f64>,
    /// Seeds per cell (runs use `base_seed + r`, r = 0..seeds).
    pub seeds: usize,
    /// First seed.
    pub base_seed: u64,
    /// Also run the dense baseline per length (and seed).
    pub dense_baseline: bool,
    /// How every run is trained and on which data.
    pub options: RunOptions,
}

impl SweepParams {
    /// The tiny-preset defaults for the given grid.
    pub fn tiny(lengths: Vec<usize>, ratios: Vec<f64>, seeds: usize) -> Self {
        Self {
            lengths,
            ratios,
            seeds,
            base_seed: 0,
            dense_baseline: true,
            options: RunOptions {
                preset: Preset::Tiny,
                semantics: RatioSemantics::Keep,
                steps: 200,
                batch_size: 8,
                learning_rate: 3e-3,
                indexer_warmup_steps: 50,
                indexer_loss_weight: 1.0,
                eval_every: 50,
                eval_batches: 4,
                implementation: SparseImpl::MaskedDense,
                data_seed: 42,
                vocab: 1024,
                task: Task::Text,
            },
        }
    }

    /// The options every run of this sweep is trained under (what its id's hash covers).
    pub fn run_options(&self) -> RunOptions {
        self.options.clone()
    }

    /// Checks the grid and options.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ModelError::Invalid(m));
        if self.lengths.is_empty() || self.lengths.contains(&0) {
            return bad(format!(
                "--lengths {:?}: need at least one length ≥ 1",
                self.lengths
            ));
        }
        if self.ratios.is_empty() {
            return bad("--keep-ratios: need at least one ratio".into());
        }
        for &r in &self.ratios {
            let ok = match self.options.semantics {
                RatioSemantics::Keep => r > 0.0 && r <= 1.0,
                RatioSemantics::LegacyDropped => (0.0..1.0).contains(&r),
            };
            if !(r.is_finite() && ok) {
                return bad(format!(
                    "ratio {r} is out of range for {:?} (keep: (0, 1]; legacy dropped: [0, 1))",
                    self.options.semantics
                ));
            }
        }
        if self.seeds == 0 || self.options.steps == 0 || self.options.batch_size == 0 {
            return bad("--seeds, --steps and --batch-size must be at least 1".into());
        }
        if let Task::Recall(t) = &self.options.task {
            for &l in &self.lengths {
                t.validate(l)?;
            }
        }
        Ok(())
    }

    /// An upper estimate of one run's peak memory at the longest length, in bytes, computed
    /// in f64 so that absurd lengths cannot overflow: parameters with their gradients and AdamW
    /// moments (4 copies; the learned positions grow with L), the attention and indexer score
    /// matrices kept for the backward pass (scores, probabilities and their gradient:
    /// 3 × batch × heads × L² per layer, for the heads and the indexer heads), the per-token
    /// activations of every layer (about 10·d_model + 3·d_ff values), and the logits with
    /// their softmax and gradient (3 × batch × L × vocab), all f32.
    pub fn peak_memory_estimate(&self, vocab_size: usize) -> f64 {
        let l = self.lengths.iter().copied().max().unwrap_or(0) as f64;
        let c = self.options.preset.config(vocab_size, 1);
        let (d, ff, layers) = (c.d_model as f64, c.d_ff as f64, c.n_layers as f64);
        let (heads, ih, idim) = (c.n_heads as f64, c.index_heads as f64, c.index_dim as f64);
        let (b, v) = (self.options.batch_size as f64, vocab_size as f64);
        let per_layer_params =
            4.0 * d * d + 2.0 * d * ff + d * ih * (idim + 1.0) + d * idim + 6.0 * d;
        let params = 2.0 * v * d + l * d + layers * per_layer_params;
        let scores = layers * 3.0 * b * (heads + ih) * l * l;
        let activations = layers * b * l * (10.0 * d + 3.0 * ff);
        let logits = 3.0 * b * l * v;
        4.0 * (4.0 * params + scores + activations + logits)
    }

    /// Checks [`Self::peak_memory_estimate`] against `budget` bytes (or, without one, the
    /// memory the system reports available) before anything is allocated; the error states the
    /// estimate, the budget and the length that needs it. Returns the estimate.
    pub fn check_memory(&self, vocab_size: usize, budget: Option<u64>) -> Result<f64> {
        let estimate = self.peak_memory_estimate(vocab_size);
        let (limit, source) = match budget {
            Some(b) => (b as f64, "--max-memory"),
            None => match available_memory_bytes() {
                Some(a) => (a as f64, "available memory (/proc/meminfo)"),
                None => return Ok(estimate),
            },
        };
        if estimate > limit {
            let longest = self.lengths.iter().copied().max().unwrap_or(0);
            return Err(ModelError::Invalid(format!(
                "the sweep needs an estimated {} per run at length {longest} (batch {}), more than \
                 the {} of {source}; use shorter --lengths, a smaller --batch-size, or raise \
                 --max-memory",
                human_bytes(estimate),
                self.options.batch_size,
                human_bytes(limit)
            )));
        }
        Ok(estimate)
    }

    /// The keep ratio (fraction of L kept) of a sweep ratio.
    pub fn keep_ratio(&self, ratio: f64) -> f64 {
        match self.options.semantics {
            RatioSemantics::Keep => ratio,
            RatioSemantics::LegacyDropped => 1.0 - ratio,
        }
    }
}

/// What the runs are trained and evaluated on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    /// Next-token prediction on the corpus text alone.
    #[default]
    Text,
    /// The corpus text with key–value recall planted in every window ([`crate::dsa_recall`]).
    Recall(RecallTask),
}

impl Task {
    /// `true` for [`Task::Text`].
    pub fn is_text(&self) -> bool {
        matches!(self, Self::Text)
    }

    /// Token ids the task adds to the corpus vocabulary.
    pub fn extra_tokens(&self) -> usize {
        match self {
            Self::Text => 0,
            Self::Recall(t) => t.extra_tokens(),
        }
    }
}

/// Every option that changes a run's result besides its own length, ratio and seed: the part of
/// a run's identity that its id carries as a hash ([`RunOptions::hash`]) and its results record
/// in full, so that resuming into a results file made with other options is an error naming
/// them ([`check_resume`]) instead of silently reporting old runs as new.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunOptions {
    /// Model preset.
    pub preset: Preset,
    /// How ratios are read (the same "r0.25" keeps 0.25 or 0.75 of L).
    pub semantics: RatioSemantics,
    /// Optimiser steps per run.
    pub steps: usize,
    /// Sequences per batch.
    pub batch_size: usize,
    /// Peak learning rate (AdamW, cosine with warm-up).
    pub learning_rate: f64,
    /// Dense warm-up steps during which the indexer learns the dense attention (then sparse).
    pub indexer_warmup_steps: usize,
    /// Weight of the indexer's KL loss.
    pub indexer_loss_weight: f64,
    /// Validate every this many steps (0: only at the end).
    pub eval_every: usize,
    /// Validation batches per intermediate evaluation (the final one uses the whole split).
    pub eval_batches: usize,
    /// How sparse attention is computed in training (same selection and result either way; on
    /// burn's CPU backend the masked dense form trains faster at these sizes).
    pub implementation: SparseImpl,
    /// Seed of the synthetic corpus ([`SweepData::demo_corpus`]).
    pub data_seed: u64,
    /// BPE vocabulary size of the corpus.
    pub vocab: usize,
    /// The task. Left out of the JSON (and so of the hash) for [`Task::Text`], so that runs
    /// recorded before tasks existed keep their ids.
    #[serde(default, skip_serializing_if = "Task::is_text")]
    pub task: Task,
}

impl RunOptions {
    /// 8 hex digits of the 64-bit FNV-1a hash of the options' JSON (field order fixed by the
    /// struct, floats written shortest-round-trip): stable across runs, machines and versions
    /// that keep the same fields.
    pub fn hash(&self) -> String {
        let text = serde_json::to_string(self).unwrap_or_default();
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in text.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        format!("{:08x}", (h >> 32) ^ (h & 0xffff_ffff))
    }

    /// The options that differ between `self` and `other`, as `name: self vs other`.
    pub fn differences(&self, other: &Self) -> Vec<String> {
        let (a, b) = (
            serde_json::to_value(self).unwrap_or_default(),
            serde_json::to_value(other).unwrap_or_default(),
        );
        let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
            return Vec::new();
        };
        a.iter()
            .filter(|(k, v)| b.get(*k) != Some(*v))
            .map(|(k, v)| {
                let w = b.get(k).map_or("(missing)".to_string(), |w| w.to_string());
                format!("{k}: {v} vs {w}")
            })
            .collect()
    }
}

/// Checks that every run already in a results file was made with `options`. A run recorded
/// with other options is an error that names the file, the run and each differing option; a run
/// recorded without its options (by a version before run identities) is an error too, since
/// nothing tells whether it matches.
pub fn check_resume(path: &Path, existing: &[RunResult], options: &RunOptions) -> Result<()> {
    for r in existing {
        match &r.options {
            Some(o) if o == options => {}
            Some(o) => {
                return Err(ModelError::Invalid(format!(
                    "{}: run {} was made with other options than this sweep's (file vs now: {});                      resume with the same options, or write to another --results file",
                    path.display(),
                    r.spec.id,
                    o.differences(options).join("; ")
                )));
            }
            None => {
                return Err(ModelError::Invalid(format!(
                    "{}: run {} has no recorded options (written before run identities), so it                      cannot be told apart from a run with other options; write to another                      --results file",
                    path.display(),
                    r.spec.id
                )));
            }
        }
    }
    Ok(())
}

/// One training run of the sweep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    /// Stable identifier: length, arm, seed and the hash of the [`RunOptions`], e.g.
    /// `L128-r0.25-s1-3f9a06c2` or `L128-dense-s1-3f9a06c2`.
    pub id: String,
    /// Sequence length.
    pub length: usize,
    /// The sweep ratio as given (`None` for the dense baseline).
    pub ratio: Option<f64>,
    /// Fraction of L kept (`None` for dense).
    pub keep_ratio: Option<f64>,
    /// Keys per query (L for dense).
    pub top_k: usize,
    /// Seed of initialisation and data order.
    pub seed: u64,
}

impl RunSpec {
    /// Mean over queries t of min(k, t + 1)/(t + 1): the fraction of causal keys really kept.
    ///
    /// Summed term by term up to L = 2^20; beyond (only a hostile results file has such a
    /// length: the sweep's memory check refuses it) in closed form, `min(k, L) + k (H_L − H_k)`,
    /// with the harmonic numbers' asymptotic expansion, so that no number read from a file can
    /// make this loop for hours (found by the results fuzz test).
    pub fn mean_kept_fraction(&self) -> f64 {
        let l = self.length;
        if l == 0 {
            return 0.0;
        }
        if l <= 1 << 20 {
            return (0..l)
                .map(|t| (self.top_k.min(t + 1)) as f64 / (t + 1) as f64)
                .sum::<f64>()
                / l as f64;
        }
        let k = self.top_k.min(l);
        let harmonic = |n: usize| -> f64 {
            if n <= 1 << 20 {
                (1..=n).map(|i| 1.0 / i as f64).sum()
            } else {
                let n = n as f64;
                n.ln() + 0.577_215_664_901_532_9 + 1.0 / (2.0 * n) - 1.0 / (12.0 * n * n)
            }
        };
        (k as f64 + k as f64 * (harmonic(l) - harmonic(k))) / l as f64
    }
}

/// The sweep's runs in a fixed order: per length, the dense baseline then each ratio, each seed.
pub fn run_list(params: &SweepParams) -> Result<Vec<RunSpec>> {
    params.validate()?;
    let hash = params.run_options().hash();
    let mut runs = Vec::new();
    for &l in &params.lengths {
        let mut arms: Vec<Option<f64>> = Vec::new();
        if params.dense_baseline {
            arms.push(None);
        }
        arms.extend(params.ratios.iter().map(|&r| Some(r)));
        for arm in arms {
            for s in 0..params.seeds {
                let seed = params.base_seed + s as u64;
                let (id, keep, k) = match arm {
                    None => (format!("L{l}-dense-s{seed}-{hash}"), None, l),
                    Some(r) => {
                        let keep = params.keep_ratio(r);
                        let k = AttentionMode::sparse(keep).top_k(l)?.unwrap_or(l).min(l);
                        (format!("L{l}-r{r}-s{seed}-{hash}"), Some(keep), k)
                    }
                };
                runs.push(RunSpec {
                    id,
                    length: l,
                    ratio: arm,
                    keep_ratio: keep,
                    top_k: k,
                    seed,
                });
            }
        }
    }
    Ok(runs)
}

/// A deterministic slice of the run list: runs whose position `p` has `p mod n == i`.
pub fn shard(runs: Vec<RunSpec>, i: usize, n: usize) -> Result<Vec<RunSpec>> {
    if n == 0 || i >= n {
        return Err(ModelError::Invalid(format!(
            "--shard {i}/{n}: need 0 ≤ i < n (shards are numbered from 0)"
        )));
    }
    Ok(runs
        .into_iter()
        .enumerate()
        .filter(|(p, _)| p % n == i)
        .map(|(_, r)| r)
        .collect())
}

/// Tokenised training and validation streams.
#[derive(Clone, Debug)]
pub struct SweepData {
    /// Training tokens.
    pub train: Vec<u32>,
    /// Validation tokens (from texts disjoint from the training texts): the ratio is chosen here.
    pub validation: Vec<u32>,
    /// Test tokens (the corpus's held-out texts, disjoint from training and validation): the
    /// chosen ratio's numbers are reported here.
    pub test: Vec<u32>,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Where the data came from.
    pub source: String,
}

impl SweepData {
    /// The synthetic demo corpus (seeded) with a byte-level BPE tokenizer of `vocab_size` trained on
    /// its training split; validation texts are a disjoint split.
    pub fn demo_corpus(seed: u64, vocab_size: usize) -> Result<Self> {
        let splits = sparsity_demo::corpus::CorpusSplits::generate(
            seed,
            sparsity_demo::corpus::SplitSizes::default(),
        )
        .map_err(|e| ModelError::Invalid(format!("demo corpus: {e}")))?;
        let tok = sparsity_demo::demo_tokenizer::train_bpe_tokenizer(&splits.train, vocab_size)
            .map_err(|e| ModelError::Invalid(format!("demo tokenizer: {e}")))?;
        let enc = |texts: &[String]| {
            sparsity_demo::demo_tokenizer::encode_stream(&tok, texts)
                .map_err(|e| ModelError::Invalid(format!("demo tokenizer: {e}")))
        };
        Ok(Self {
            train: enc(&splits.train)?,
            validation: enc(&splits.validation)?,
            test: enc(&splits.held_out)?,
            vocab_size: tok.get_vocab_size(true),
            source: format!(
                "synthetic demo corpus (seed {seed}, {} train / {} validation / {} test texts), byte-level BPE {vocab_size}",
                splits.train.len(),
                splits.validation.len(),
                splits.held_out.len()
            ),
        })
    }

    /// The streams one run of length `len` trains and is evaluated on: the corpus streams for
    /// [`Task::Text`]; with the recall task planted (seeded by `data_seed` and the split, the
    /// same for every run of the sweep) for [`Task::Recall`].
    pub fn for_run(&self, len: usize, task: &Task, data_seed: u64) -> Result<RunData> {
        match task {
            Task::Text => Ok(RunData {
                train: self.train.clone(),
                validation: self.validation.clone(),
                test: self.test.clone(),
                vocab_size: self.vocab_size,
                validation_queries: Vec::new(),
                test_queries: Vec::new(),
            }),
            Task::Recall(t) => {
                let plant = |ids: &[u32], split: u64| {
                    build_recall_stream(ids, len, t, self.vocab_size, data_seed ^ (split << 32))
                };
                let train = plant(&self.train, 1)?;
                let validation = plant(&self.validation, 2)?;
                let test = plant(&self.test, 3)?;
                Ok(RunData {
                    train: train.ids,
                    validation: validation.ids,
                    test: test.ids,
                    vocab_size: self.vocab_size + t.extra_tokens(),
                    validation_queries: validation.queries,
                    test_queries: test.queries,
                })
            }
        }
    }
}

/// The streams of one run ([`SweepData::for_run`]).
#[derive(Clone, Debug)]
pub struct RunData {
    /// Training tokens.
    pub train: Vec<u32>,
    /// Validation tokens.
    pub validation: Vec<u32>,
    /// Test tokens.
    pub test: Vec<u32>,
    /// Vocabulary size (the corpus's plus the task's tokens).
    pub vocab_size: usize,
    /// The recall queries of the validation stream (empty for text).
    pub validation_queries: Vec<RecallQuery>,
    /// The recall queries of the test stream.
    pub test_queries: Vec<RecallQuery>,
}

/// The recall task's numbers on one split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecallEval {
    /// Queries evaluated.
    pub queries: usize,
    /// Fraction of queries whose argmax prediction is the fact's value.
    pub accuracy: f64,
    /// Fraction of (query, layer) where the indexer's top-k holds the fact's position (mean over
    /// layers); None for the dense arm, which selects nothing (every key is attended).
    pub indexer_recall: Option<f64>,
    /// The same per layer.
    pub indexer_recall_per_layer: Vec<f64>,
}

/// Loss, accuracy and the recall numbers of one split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SplitEval {
    /// Mean next-token cross-entropy over every position (nats/token).
    pub loss: f64,
    /// Next-token argmax accuracy over every position.
    pub accuracy: f64,
    /// The recall task's numbers (None without queries).
    pub recall: Option<RecallEval>,
}

/// What one run measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// The run.
    pub spec: RunSpec,
    /// The model preset.
    pub preset: Preset,
    /// Trainable parameters.
    pub n_params: usize,
    /// Mean next-token cross-entropy over the whole validation split (nats/token).
    pub final_val_loss: f64,
    /// Next-token argmax accuracy over the whole validation split.
    pub final_val_accuracy: f64,
    /// Validation curve during training.
    pub val_curve: Vec<EvalPoint>,
    /// Last training loss (cross-entropy).
    pub final_train_loss: f64,
    /// Last indexer KL (None for dense).
    pub final_indexer_kl: Option<f64>,
    /// Wall-clock seconds of training (validation included).
    pub train_seconds: f64,
    /// Training tokens per second.
    pub train_tokens_per_second: f64,
    /// Mean fraction of causal keys kept per query.
    pub mean_kept_fraction: f64,
    /// Process peak resident memory after the run (VmHWM; a process-wide high-water mark).
    pub peak_rss_bytes: Option<u64>,
    /// The options it was trained under (absent in files written before run identities).
    #[serde(default)]
    pub options: Option<RunOptions>,
    /// Mean next-token cross-entropy over the whole test split (absent in files written before
    /// the test split).
    #[serde(default)]
    pub test_loss: Option<f64>,
    /// Next-token accuracy over the whole test split.
    #[serde(default)]
    pub test_accuracy: Option<f64>,
    /// The recall task on the validation split.
    #[serde(default)]
    pub validation_recall: Option<RecallEval>,
    /// The recall task on the test split.
    #[serde(default)]
    pub test_recall: Option<RecallEval>,
}

pub use sparsity_io::budget::{available_memory_bytes, human_bytes, parse_bytes};

/// Trains and evaluates one run on the CPU autodiff `device`.
pub fn run_one(
    spec: &RunSpec,
    params: &SweepParams,
    data: &SweepData,
    device: &Device,
) -> Result<RunResult> {
    let data = &data.for_run(spec.length, &params.options.task, params.options.data_seed)?;
    let config = params.options.preset.config(data.vocab_size, spec.length);
    let mode = match spec.keep_ratio {
        None => AttentionMode::Dense,
        Some(keep) => AttentionMode::Sparse {
            keep_ratio: keep,
            implementation: params.options.implementation,
        },
    };
    let mut model = DsaTransformer::init(&config, mode, spec.seed, device)?;
    model.indexer_training = IndexerTraining {
        warmup_steps: if spec.keep_ratio.is_some() {
            params.options.indexer_warmup_steps
        } else {
            params.options.steps
        },
        // The dense arm trains its (unused) indexer too, so every arm's optimiser sees the same
        // parameter set: gradient clipping uses the global norm, which includes the indexer.
        loss_weight: params.options.indexer_loss_weight,
    };
    let tc = TrainConfig {
        steps: params.options.steps,
        batch_size: params.options.batch_size,
        seq_len: spec.length,
        learning_rate: params.options.learning_rate,
        warmup_steps: (params.options.steps / 10).max(1),
        eval_every: params.options.eval_every,
        eval_batches: Some(params.options.eval_batches.max(1)),
        seed: spec.seed,
        show_progress: false,
        ..TrainConfig::default()
    };
    let started = Instant::now();
    let (model, record) = train(
        model,
        &data.train,
        &data.validation,
        data.vocab_size,
        &tc,
        device,
    )
    .map_err(|e| ModelError::Invalid(format!("run {}: {e}", spec.id)))?;
    let train_seconds = started.elapsed().as_secs_f64();
    let valid = model.valid();
    let batch = params.options.batch_size;
    let val = evaluate_split(
        &valid,
        &data.validation,
        spec.length,
        batch,
        &data.validation_queries,
    )?;
    let test = evaluate_split(&valid, &data.test, spec.length, batch, &data.test_queries)?;
    Ok(RunResult {
        spec: spec.clone(),
        preset: params.options.preset,
        n_params: record.n_params,
        final_val_loss: val.loss,
        final_val_accuracy: val.accuracy,
        val_curve: record.evals.clone(),
        final_train_loss: record.train_losses.last().copied().unwrap_or(f32::NAN) as f64,
        final_indexer_kl: record.aux_losses.last().map(|&v| v as f64),
        train_seconds,
        train_tokens_per_second: record.tokens_seen as f64 / train_seconds.max(1e-9),
        mean_kept_fraction: spec.mean_kept_fraction(),
        peak_rss_bytes: peak_rss_bytes(),
        options: Some(params.run_options()),
        test_loss: Some(test.loss),
        test_accuracy: Some(test.accuracy),
        validation_recall: val.recall,
        test_recall: test.recall,
    })
}

/// Mean cross-entropy and argmax accuracy over every disjoint window of `ids`.
pub fn evaluate_full(
    model: &DsaTransformer,
    ids: &[u32],
    seq_len: usize,
    batch_size: usize,
) -> Result<(f64, f64)> {
    evaluate_split(model, ids, seq_len, batch_size, &[]).map(|e| (e.loss, e.accuracy))
}

/// [`evaluate_full`] plus the recall task's accuracy on `queries` and the indexer's recall of
/// their facts (windows are read at multiples of `seq_len`, as the queries are numbered).
pub fn evaluate_split(
    model: &DsaTransformer,
    ids: &[u32],
    seq_len: usize,
    batch_size: usize,
    queries: &[RecallQuery],
) -> Result<SplitEval> {
    let windows = ids.len().saturating_sub(1) / seq_len;
    if windows == 0 {
        return Err(ModelError::Invalid(format!(
            "evaluation stream of {} tokens is shorter than one window of {} + 1",
            ids.len(),
            seq_len
        )));
    }
    if let Some(q) = queries
        .iter()
        .find(|q| q.window >= windows || q.position >= seq_len || q.source >= q.position)
    {
        return Err(ModelError::Invalid(format!(
            "recall query {q:?} lies outside the {windows} windows of {seq_len} tokens"
        )));
    }
    let mut by_window: BTreeMap<usize, Vec<&RecallQuery>> = BTreeMap::new();
    for q in queries {
        by_window.entry(q.window).or_default().push(q);
    }
    let device = model.wte.val().device();
    let n_layers = model.blocks.len();
    let (mut loss_sum, mut correct, mut count) = (0.0f64, 0usize, 0usize);
    let (mut recall_hits, mut recall_n) = (0usize, 0usize);
    let mut selected = vec![0usize; n_layers];
    let mut any_selection = false;
    let all: Vec<usize> = (0..windows).collect();
    for chunk in all.chunks(batch_size.max(1)) {
        let mut input = Vec::with_capacity(chunk.len() * seq_len);
        let mut target = Vec::with_capacity(chunk.len() * seq_len);
        for &w in chunk {
            let s = &ids[w * seq_len..w * seq_len + seq_len + 1];
            input.extend(s[..seq_len].iter().map(|&x| x as i64));
            target.extend(s[1..].iter().map(|&x| x as i64));
        }
        let n = chunk.len();
        let out = model.forward(
            Tensor::<2, Int>::from_data(TensorData::new(input, [n, seq_len]), &device),
            model.mode,
            false,
        )?;
        let logits = out.logits;
        let pred = tensor_to_vec(&logits.clone().argmax(2).float())?;
        correct += pred
            .iter()
            .zip(&target)
            .filter(|(p, t)| **p as i64 == **t)
            .count();
        for (b, w) in chunk.iter().enumerate() {
            for q in by_window.get(w).into_iter().flatten() {
                recall_n += 1;
                recall_hits +=
                    usize::from(pred[b * seq_len + q.position] as i64 == i64::from(q.value));
                for (li, sel) in out.selections.iter().enumerate() {
                    let hit = match sel {
                        Some(sel) => {
                            any_selection = true;
                            sel.keys(b, q.position).contains(&q.source)
                        }
                        None => true,
                    };
                    selected[li] += usize::from(hit);
                }
            }
        }
        let t = Tensor::<1, Int>::from_data(TensorData::new(target, [n * seq_len]), &device);
        let loss: f32 = next_token_loss(logits, t).into_scalar();
        loss_sum += loss as f64 * (n * seq_len) as f64;
        count += n * seq_len;
    }
    let sparse_mode = matches!(model.mode, AttentionMode::Sparse { .. });
    let recall = (recall_n > 0).then(|| {
        let per_layer: Vec<f64> = selected
            .iter()
            .map(|&h| h as f64 / recall_n as f64)
            .collect();
        RecallEval {
            queries: recall_n,
            accuracy: recall_hits as f64 / recall_n as f64,
            indexer_recall: (sparse_mode || any_selection)
                .then(|| per_layer.iter().sum::<f64>() / per_layer.len().max(1) as f64),
            indexer_recall_per_layer: if sparse_mode || any_selection {
                per_layer
            } else {
                Vec::new()
            },
        }
    });
    Ok(SplitEval {
        loss: loss_sum / count as f64,
        accuracy: correct as f64 / count as f64,
        recall,
    })
}

/// The process's peak resident set size (Linux `VmHWM`), if readable.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Reads a results file (JSON lines). A truncated last line (an interrupted append) is skipped with
/// a warning; any other malformed line is an error naming the file and line.
pub fn read_results(path: &Path) -> Result<Vec<RunResult>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(ModelError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<RunResult>(line) {
            Ok(r) => out.push(r),
            Err(e) if i + 1 == lines.len() && !text.ends_with('\n') => {
                tracing::warn!(path = %path.display(), line = i + 1, error = %e, "skipping a truncated last line");
            }
            Err(e) => {
                return Err(ModelError::Jsonl {
                    path: path.to_path_buf(),
                    line: i + 1,
                    message: e.to_string(),
                });
            }
        }
    }
    Ok(out)
}

/// Appends one result as a JSON line and flushes it to disk. If the file ends with a truncated
/// line (an append interrupted by a crash), that partial record is cut off first: its run is not
/// complete, so it is re-run.
pub fn append_result(path: &Path, result: &RunResult) -> Result<()> {
    let io = |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut line = serde_json::to_string(result)
        .map_err(|e| ModelError::Invalid(format!("serialising run {}: {e}", result.spec.id)))?;
    line.push('\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io)?;
    let existing = std::fs::read(path).map_err(io)?;
    if !existing.is_empty() && existing.last() != Some(&b'\n') {
        let keep = existing
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1);
        tracing::warn!(path = %path.display(), bytes = existing.len() - keep, "cutting off a truncated last record");
        f.set_len(keep as u64).map_err(io)?;
    }
    f.write_all(line.as_bytes()).map_err(io)?;
    f.sync_data().map_err(io)?;
    Ok(())
}

/// Ids of the runs already in a results file.
pub fn completed_ids(path: &Path) -> Result<HashSet<String>> {
    Ok(read_results(path)?.into_iter().map(|r| r.spec.id).collect())
}

/// A Slurm job-array script running `n_shards` shards of the sweep, one array task per shard,
/// each appending to its own results file under `results_dir` and writing no report (the merge
/// does). `sweep_args` are the sweep's own options as given ([`SweepRun::command_args`]), each
/// written shell-quoted, so the tasks run exactly the command that emitted the script.
pub fn slurm_script(
    sweep_args: &[String],
    n_shards: usize,
    results_dir: &Path,
    job_name: &str,
    time_limit: &str,
    cpus_per_task: usize,
) -> Result<String> {
    if n_shards == 0 {
        return Err(ModelError::Invalid(
            "--emit-slurm needs at least one shard".into(),
        ));
    }
    // `#SBATCH` lines are read by sbatch, not by a shell: the directory goes there as is.
    let raw_dir = results_dir.display();
    let dir = shell_quote(&raw_dir.to_string());
    let args: Vec<String> = sweep_args.iter().map(|a| shell_quote(a)).collect();
    Ok(format!(
        "#!/bin/bash\n\
         # Slurm job array for the DSA sweep: one task per shard; each appends to its own JSONL file,\n\
         # so a re-submitted array resumes where it stopped. Merge (this writes the report) with:\n\
         #   cargo xtask dsa-report {dir}/shard-*.jsonl --out {dir}/report\n\
         #SBATCH --job-name={job_name}\n\
         #SBATCH --array=0-{last}\n\
         #SBATCH --cpus-per-task={cpus_per_task}\n\
         #SBATCH --time={time_limit}\n\
         #SBATCH --output={raw_dir}/slurm-%A_%a.out\n\
         set -euo pipefail\n\
         export RAYON_NUM_THREADS=\"${{SLURM_CPUS_PER_TASK:-{cpus_per_task}}}\"\n\
         cargo xtask dsa-sweep {args} \\\n\
         \x20   --shard \"${{SLURM_ARRAY_TASK_ID}}/{n_shards}\" --results {dir}/shard-\"${{SLURM_ARRAY_TASK_ID}}\".jsonl\n",
        args = args.join(" "),
        last = n_shards - 1,
    ))
}

/// `s` as one POSIX shell word: unchanged when it is made only of characters no shell treats
/// specially, else in single quotes (a `'` inside written `'\''`).
pub fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./,:=+@%".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// One cell (length × arm) of the report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CellSummary {
    /// Sequence length.
    pub length: usize,
    /// Arm label (`dense` or the ratio).
    pub arm: String,
    /// Keep ratio (None for dense).
    pub keep_ratio: Option<f64>,
    /// Keys per query.
    pub top_k: usize,
    /// Mean fraction of causal keys kept per query.
    pub mean_kept_fraction: f64,
    /// Runs.
    pub n: usize,
    /// Mean and sample standard deviation (ddof 1) of the final validation loss.
    pub val_loss_mean: f64,
    /// Standard deviation (ddof 1; 0 for a single run).
    pub val_loss_std: f64,
    /// Mean validation accuracy.
    pub val_accuracy_mean: f64,
    /// Mean training seconds.
    pub train_seconds_mean: f64,
    /// Mean training tokens per second.
    pub train_tokens_per_second_mean: f64,
    /// Mean test loss (runs with a test split).
    #[serde(default)]
    pub test_loss_mean: Option<f64>,
    /// Mean recall accuracy on the test split (recall task).
    #[serde(default)]
    pub test_recall_accuracy_mean: Option<f64>,
    /// Mean indexer recall on the test split (sparse arms of the recall task).
    #[serde(default)]
    pub test_indexer_recall_mean: Option<f64>,
}

/// Per length: the original's results row plus the statistics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LengthSummary {
    /// Sequence length.
    pub length: usize,
    /// The sparse arm with the lowest mean validation loss (the original's "optimal ratio"; it
    /// claims nothing: see [`PairedAnalysis::optimal_arm`]).
    pub lowest_mean_arm: Option<String>,
    /// Its mean validation loss.
    pub lowest_mean_val_loss: Option<f64>,
    /// The dense baseline's mean validation loss.
    pub dense_val_loss: Option<f64>,
    /// (dense − optimal)/dense · 100.
    pub improvement_vs_dense_percent: Option<f64>,
    /// ANOVA / Tukey / Cohen's d / power over the sparse arms (dense as baseline); None with a
    /// reason when there are too few runs.
    pub statistics: Option<sparsity_stats::GroupComparison>,
    /// Why the statistics are missing, if they are.
    pub statistics_note: Option<String>,
    /// The analysis that matches the design: runs of one seed share initialisation and data
    /// order, so arms are compared paired by seed. None with a reason in `paired_note`.
    pub paired: Option<PairedAnalysis>,
    /// Why the paired analysis is missing, if it is.
    pub paired_note: Option<String>,
    /// The arm chosen on validation: the optimal arm where one is distinguishable, else the
    /// lowest mean (which then claims nothing).
    #[serde(default)]
    pub chosen_arm: Option<String>,
    /// Every sparse arm against dense on the test split, paired by seed.
    #[serde(default)]
    pub held_out: Vec<HeldOutVersusDense>,
}

/// One sparse arm against dense on the held-out test split, paired by seed (95 % t intervals).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeldOutVersusDense {
    /// The arm.
    pub arm: String,
    /// `test loss(arm) − test loss(dense)` per seed (None with a reason in `note`).
    pub test_loss: Option<sparsity_stats::PairedDifference>,
    /// `recall accuracy(arm) − recall accuracy(dense)` per seed (recall task).
    pub recall_accuracy: Option<sparsity_stats::PairedDifference>,
    /// Why a difference is missing (e.g. every seed's difference is 0: the arm equals dense).
    pub note: Option<String>,
}

/// A sparse arm against the dense baseline, paired by seed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairedVersusDense {
    /// The arm.
    pub arm: String,
    /// Seeds run both densely and with this arm.
    pub seeds: Vec<u64>,
    /// `loss(arm) − loss(dense)` per seed: mean, sd, t, p, the 95 % t interval, d_z.
    pub difference: sparsity_stats::PairedDifference,
    /// The Bonferroni-simultaneous interval over all arms (level `1 − α/m`).
    pub simultaneous_ci: (f64, f64),
    /// Holm-adjusted p-value over the arms.
    pub p_holm: f64,
    /// `p_holm < α`: the arm's loss differs from dense (negative difference: lower loss).
    pub significant: bool,
}

/// The best sparse arm against the runner-up, paired by seed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairedBestVsRunnerUp {
    /// Lowest mean loss.
    pub best: String,
    /// Second lowest.
    pub runner_up: String,
    /// Seeds run with both.
    pub seeds: Vec<u64>,
    /// `loss(best) − loss(runner-up)` per seed.
    pub difference: sparsity_stats::PairedDifference,
    /// The level the comparison is tested at: α over the m(m−1)/2 pairs of arms, since the best
    /// and runner-up are picked after seeing the data (Bonferroni).
    pub alpha_corrected: f64,
    /// The interval at `1 − alpha_corrected`.
    pub corrected_ci: (f64, f64),
    /// `p < alpha_corrected`.
    pub significant: bool,
}

/// The per-length analysis paired by seed (see [`summarize`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairedAnalysis {
    /// Family-wise level.
    pub alpha: f64,
    /// Each sparse arm against dense (empty without a dense baseline).
    pub versus_dense: Vec<PairedVersusDense>,
    /// Best against runner-up (None with fewer than two sparse arms).
    pub best_vs_runner_up: Option<PairedBestVsRunnerUp>,
    /// The arm called optimal: the best arm when it beats the runner-up at the corrected level
    /// (with a single sparse arm: when it differs from dense). None otherwise.
    pub optimal_arm: Option<String>,
    /// The smallest loss difference the deciding comparison detects with 80 % power at its
    /// level (the smallest detectable d_z times the sd of its paired differences).
    pub min_detectable_difference: Option<f64>,
    /// The answer in one sentence.
    pub verdict: String,
}

/// The merged sweep report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepReport {
    /// Runs merged.
    pub runs: usize,
    /// Cells.
    pub cells: Vec<CellSummary>,
    /// Per length.
    pub lengths: Vec<LengthSummary>,
}

fn arm_label(spec: &RunSpec) -> String {
    match spec.ratio {
        None => "dense".into(),
        Some(r) => format!("{r}"),
    }
}

/// The mean when every value is present, else None.
fn mean_all(v: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let v: Option<Vec<f64>> = v.collect();
    v.filter(|v| !v.is_empty()).map(|v| mean(&v))
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn std1(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    let m = mean(v);
    (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
}

/// Merges runs (later duplicates of a run id are dropped) into the report.
pub fn summarize(results: &[RunResult]) -> Result<SweepReport> {
    // One report compares runs trained alike: runs made with other options (a stale file, or
    // shards of different sweeps merged together) are an error, never averaged in.
    if let Some(first) = results.first() {
        for r in results {
            if r.options != first.options {
                let what = match (&first.options, &r.options) {
                    (Some(a), Some(b)) => a.differences(b).join("; "),
                    _ => "one has recorded options, the other none".to_string(),
                };
                return Err(ModelError::Invalid(format!(
                    "runs {} and {} were made with different options ({what}); a report \
                     compares runs of one sweep",
                    first.spec.id, r.spec.id
                )));
            }
        }
    }
    let mut seen = HashSet::new();
    let mut by_cell: BTreeMap<(usize, u8, String), Vec<&RunResult>> = BTreeMap::new();
    for r in results {
        if !seen.insert(r.spec.id.clone()) {
            continue;
        }
        let order = u8::from(r.spec.ratio.is_some());
        by_cell
            .entry((r.spec.length, order, arm_label(&r.spec)))
            .or_default()
            .push(r);
    }
    let mut cells = Vec::new();
    for ((length, _, arm), runs) in &by_cell {
        let loss: Vec<f64> = runs.iter().map(|r| r.final_val_loss).collect();
        let first = &runs[0].spec;
        cells.push(CellSummary {
            length: *length,
            arm: arm.clone(),
            keep_ratio: first.keep_ratio,
            top_k: first.top_k,
            mean_kept_fraction: first.mean_kept_fraction(),
            n: runs.len(),
            val_loss_mean: mean(&loss),
            val_loss_std: std1(&loss),
            val_accuracy_mean: mean(
                &runs
                    .iter()
                    .map(|r| r.final_val_accuracy)
                    .collect::<Vec<_>>(),
            ),
            train_seconds_mean: mean(&runs.iter().map(|r| r.train_seconds).collect::<Vec<_>>()),
            train_tokens_per_second_mean: mean(
                &runs
                    .iter()
                    .map(|r| r.train_tokens_per_second)
                    .collect::<Vec<_>>(),
            ),
            test_loss_mean: mean_all(runs.iter().map(|r| r.test_loss)),
            test_recall_accuracy_mean: mean_all(
                runs.iter()
                    .map(|r| r.test_recall.as_ref().map(|x| x.accuracy)),
            ),
            test_indexer_recall_mean: mean_all(
                runs.iter()
                    .map(|r| r.test_recall.as_ref().and_then(|x| x.indexer_recall)),
            ),
        });
    }
    let mut lengths = Vec::new();
    let all_lengths: Vec<usize> = {
        let mut l: Vec<usize> = cells.iter().map(|c| c.length).collect();
        l.dedup();
        l
    };
    let params = sparsity_stats::CompareParams::default()
        .check()
        .map_err(|e| ModelError::Invalid(format!("statistics options: {e}")))?;
    for length in all_lengths {
        let dense = by_cell
            .iter()
            .find(|((l, o, _), _)| *l == length && *o == 0)
            .map(|(_, runs)| runs.iter().map(|r| r.final_val_loss).collect::<Vec<f64>>());
        let sparse: Vec<sparsity_stats::LabelledGroup> = by_cell
            .iter()
            .filter(|((l, o, _), _)| *l == length && *o == 1)
            .map(|((_, _, arm), runs)| {
                sparsity_stats::LabelledGroup::new(
                    arm.clone(),
                    runs.iter().map(|r| r.final_val_loss).collect(),
                )
            })
            .collect();
        let best = sparse
            .iter()
            .min_by(|a, b| mean(&a.values).total_cmp(&mean(&b.values)));
        let dense_mean = dense.as_ref().map(|d| mean(d));
        let baseline = dense
            .clone()
            .map(|d| sparsity_stats::LabelledGroup::new("dense", d));
        let (statistics, statistics_note) =
            match sparsity_stats::compare_groups(&sparse, baseline.as_ref(), &params) {
                Ok(s) => (Some(s), None),
                Err(e) => (None, Some(e.to_string())),
            };
        let by_seed = |arm: Option<&str>| -> BTreeMap<u64, f64> {
            by_cell
                .iter()
                .filter(|((l, o, label), _)| {
                    *l == length
                        && match arm {
                            None => *o == 0,
                            Some(a) => *o == 1 && label == a,
                        }
                })
                .flat_map(|(_, runs)| runs.iter().map(|r| (r.spec.seed, r.final_val_loss)))
                .collect()
        };
        let arms: Vec<String> = sparse.iter().map(|g| g.label.clone()).collect();
        let (paired, paired_note) = match paired_analysis(&arms, &by_seed, 0.05) {
            Ok(a) => (Some(a), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let metric_by_seed = |arm: Option<&str>, f: &dyn Fn(&RunResult) -> Option<f64>| {
            by_cell
                .iter()
                .filter(|((l, o, label), _)| {
                    *l == length
                        && match arm {
                            None => *o == 0,
                            Some(a) => *o == 1 && label == a,
                        }
                })
                .flat_map(|(_, runs)| runs.iter().filter_map(|r| Some((r.spec.seed, f(r)?))))
                .collect::<BTreeMap<u64, f64>>()
        };
        let test_loss = |r: &RunResult| r.test_loss;
        let recall_acc = |r: &RunResult| r.test_recall.as_ref().map(|x| x.accuracy);
        let mut held_out = Vec::new();
        if by_cell.keys().any(|(l, o, _)| *l == length && *o == 0) {
            for arm in &arms {
                let mut notes = Vec::new();
                let mut diff = |f: &dyn Fn(&RunResult) -> Option<f64>, what: &str| {
                    let (a, d) = (metric_by_seed(Some(arm), f), metric_by_seed(None, f));
                    if a.is_empty() || d.is_empty() {
                        return None;
                    }
                    match paired_by_seed(&a, &d, 0.95) {
                        Ok((_, x)) => Some(x),
                        Err(e) => {
                            notes.push(format!("{what}: {e}"));
                            None
                        }
                    }
                };
                let test_loss = diff(&test_loss, "test loss");
                let recall_accuracy = diff(&recall_acc, "recall accuracy");
                held_out.push(HeldOutVersusDense {
                    arm: arm.clone(),
                    test_loss,
                    recall_accuracy,
                    note: (!notes.is_empty()).then(|| notes.join("; ")),
                });
            }
        }
        let chosen_arm = paired
            .as_ref()
            .and_then(|a| a.optimal_arm.clone())
            .or_else(|| best.map(|b| b.label.clone()));
        lengths.push(LengthSummary {
            length,
            lowest_mean_arm: best.map(|b| b.label.clone()),
            lowest_mean_val_loss: best.map(|b| mean(&b.values)),
            dense_val_loss: dense_mean,
            improvement_vs_dense_percent: match (best, dense_mean) {
                (Some(b), Some(d)) if d != 0.0 => Some((d - mean(&b.values)) / d * 100.0),
                _ => None,
            },
            statistics,
            statistics_note,
            paired,
            paired_note,
            chosen_arm,
            held_out,
        });
    }
    Ok(SweepReport {
        runs: seen.len(),
        cells,
        lengths,
    })
}

/// Paired t of `a` against `b` over the seeds both have.
fn paired_by_seed(
    a: &BTreeMap<u64, f64>,
    b: &BTreeMap<u64, f64>,
    confidence: f64,
) -> std::result::Result<(Vec<u64>, sparsity_stats::PairedDifference), String> {
    let seeds: Vec<u64> = a.keys().filter(|s| b.contains_key(s)).copied().collect();
    let x: Vec<f64> = seeds.iter().filter_map(|s| a.get(s).copied()).collect();
    let y: Vec<f64> = seeds.iter().filter_map(|s| b.get(s).copied()).collect();
    let d = sparsity_stats::paired_t(&x, &y, confidence).map_err(|e| e.to_string())?;
    Ok((seeds, d))
}

/// The paired analysis of one length: `arms` are the sparse arms' labels, `by_seed(None)` the
/// dense losses by seed, `by_seed(Some(arm))` an arm's. Every sparse arm against dense (paired t,
/// 95 % and Bonferroni-simultaneous intervals, Holm over the arms); the lowest-mean arm against
/// the runner-up at α over all m(m−1)/2 pairs; an optimal arm only where that comparison is
/// significant, else the smallest difference the design could have detected.
pub fn paired_analysis(
    arms: &[String],
    by_seed: &dyn Fn(Option<&str>) -> BTreeMap<u64, f64>,
    alpha: f64,
) -> std::result::Result<PairedAnalysis, String> {
    if arms.is_empty() {
        return Err("no sparse arm".into());
    }
    let dense = by_seed(None);
    let m = arms.len();
    let mut versus_dense = Vec::new();
    if !dense.is_empty() {
        let mut tests = Vec::new();
        for arm in arms {
            let (seeds, d) = paired_by_seed(&by_seed(Some(arm)), &dense, 0.95)
                .map_err(|e| format!("{arm} vs dense: {e}"))?;
            let ci = d
                .interval(1.0 - alpha / m as f64)
                .map_err(|e| e.to_string())?;
            tests.push((arm.clone(), seeds, d, ci));
        }
        let p: Vec<f64> = tests.iter().map(|t| t.2.p_value).collect();
        let holm = sparsity_stats::holm(&p).map_err(|e| e.to_string())?;
        for ((arm, seeds, difference, simultaneous_ci), p_holm) in tests.into_iter().zip(holm) {
            versus_dense.push(PairedVersusDense {
                arm,
                seeds,
                difference,
                simultaneous_ci,
                p_holm,
                significant: p_holm < alpha,
            });
        }
    }
    let mean_of = |arm: &str| {
        let v: Vec<f64> = by_seed(Some(arm)).into_values().collect();
        mean(&v)
    };
    let mut ranked: Vec<(String, f64)> = arms.iter().map(|a| (a.clone(), mean_of(a))).collect();
    ranked.sort_by(|a, b| a.1.total_cmp(&b.1));
    let mdd = |d: &sparsity_stats::PairedDifference, level: f64| {
        sparsity_stats::paired_min_detectable_dz(d.n, level, 0.8)
            .ok()
            .map(|dz| dz * d.sd_diff)
    };
    let (best_vs_runner_up, optimal_arm, min_detectable_difference, verdict) = if m >= 2 {
        let (best, runner_up) = (&ranked[0].0, &ranked[1].0);
        let pairs = (m * (m - 1) / 2) as f64;
        let alpha_corrected = alpha / pairs;
        let (seeds, difference) =
            paired_by_seed(&by_seed(Some(best)), &by_seed(Some(runner_up)), 0.95)
                .map_err(|e| format!("{best} vs {runner_up}: {e}"))?;
        let corrected_ci = difference
            .interval(1.0 - alpha_corrected)
            .map_err(|e| e.to_string())?;
        let significant = difference.p_value < alpha_corrected;
        let mdd = mdd(&difference, alpha_corrected);
        let verdict = if significant {
            format!(
                "keep ratio {best} is optimal: its loss is lower than the runner-up's ({runner_up}) \
                 by {:.4} nats/token, {:.1} % CI [{:.4}, {:.4}] (paired t over {} seeds, \
                 p = {} < {}, Bonferroni over {} pairs of ratios)",
                -difference.mean_diff,
                100.0 * (1.0 - alpha_corrected),
                -corrected_ci.1,
                -corrected_ci.0,
                difference.n,
                fmt_p(difference.p_value),
                fmt_p(alpha_corrected),
                pairs
            )
        } else {
            format!(
                "no keep ratio is distinguishable from the runner-up at this budget: {best} vs \
                 {runner_up} differ by {:+.4} nats/token, {:.1} % CI [{:+.4}, {:+.4}] (paired t \
                 over {} seeds, p = {}, not below {}); the design detects a difference of \
                 {} with 80 % power at that level",
                difference.mean_diff,
                100.0 * (1.0 - alpha_corrected),
                corrected_ci.0,
                corrected_ci.1,
                difference.n,
                fmt_p(difference.p_value),
                fmt_p(alpha_corrected),
                mdd.map_or("(not computable)".to_string(), |x| format!(
                    "{x:.4} nats/token"
                ))
            )
        };
        let optimal = significant.then(|| best.clone());
        (
            Some(PairedBestVsRunnerUp {
                best: best.clone(),
                runner_up: runner_up.clone(),
                seeds,
                difference,
                alpha_corrected,
                corrected_ci,
                significant,
            }),
            optimal,
            mdd,
            verdict,
        )
    } else if let Some(v) = versus_dense.first() {
        let mdd = mdd(&v.difference, alpha);
        let verdict = if v.significant {
            format!(
                "keep ratio {} {} dense by {:.4} nats/token, 95 % CI [{:+.4}, {:+.4}] (paired t \
                 over {} seeds, p = {})",
                v.arm,
                if v.difference.mean_diff < 0.0 {
                    "beats"
                } else {
                    "loses to"
                },
                v.difference.mean_diff.abs(),
                v.difference.ci_low,
                v.difference.ci_high,
                v.difference.n,
                fmt_p(v.difference.p_value)
            )
        } else {
            format!(
                "keep ratio {} is not distinguishable from dense at this budget (difference \
                 {:+.4}, 95 % CI [{:+.4}, {:+.4}], p = {}); the design detects {} with 80 % power",
                v.arm,
                v.difference.mean_diff,
                v.difference.ci_low,
                v.difference.ci_high,
                fmt_p(v.difference.p_value),
                mdd.map_or("(not computable)".to_string(), |x| format!(
                    "{x:.4} nats/token"
                ))
            )
        };
        let optimal = (v.significant && v.difference.mean_diff < 0.0).then(|| v.arm.clone());
        (None, optimal, mdd, verdict)
    } else {
        return Err("one sparse arm and no dense baseline: nothing to compare".into());
    };
    Ok(PairedAnalysis {
        alpha,
        versus_dense,
        best_vs_runner_up,
        optimal_arm,
        min_detectable_difference,
        verdict,
    })
}

/// A p-value or level for prose: three decimals, or two significant digits in e-notation
/// below 0.001.
fn fmt_p(x: f64) -> String {
    if x < 1e-3 {
        format!("{x:.1e}")
    } else {
        format!("{x:.3}")
    }
}

/// Writes `report.json`, `report.md`, `loss_vs_ratio.png` and `time_vs_ratio.png` into `dir`
/// (each atomically); returns the Markdown path.
pub fn write_report(report: &SweepReport, sources: &[PathBuf], dir: &Path) -> Result<PathBuf> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ModelError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let json = serde_json::to_vec_pretty(report)
        .map_err(|e| ModelError::Invalid(format!("serialising the report: {e}")))?;
    let json_path = dir.join("report.json");
    sparsity_io::write_atomic(&json_path, &json)
        .map_err(sparsity_io::IoError::into_io)
        .map_err(io(&json_path))?;
    plot_cells(
        report,
        &dir.join("loss_vs_ratio.png"),
        "Validation loss vs keep ratio",
        "validation loss (nats/token)",
        |c| c.val_loss_mean,
        true,
    )?;
    plot_cells(
        report,
        &dir.join("time_vs_ratio.png"),
        "Training throughput vs keep ratio",
        "training tokens / s",
        |c| c.train_tokens_per_second_mean,
        false,
    )?;
    let md = markdown(report, sources);
    let md_path = dir.join("report.md");
    sparsity_io::write_atomic(&md_path, md.as_bytes())
        .map_err(sparsity_io::IoError::into_io)
        .map_err(io(&md_path))?;
    Ok(md_path)
}

/// The held-out test split: the arm chosen on validation, and every arm against dense on test.
fn held_out_markdown(s: &mut String, report: &SweepReport) {
    use std::fmt::Write as _;
    if !report.cells.iter().any(|c| c.test_loss_mean.is_some()) {
        return;
    }
    let _ = writeln!(
        s,
        "\n## Held-out test split\n\nThe ratio is chosen on validation (above); its numbers, and \
         every arm's against dense, are measured here on the test split (the corpus's held-out \
         texts, disjoint from training and validation). Differences are paired by seed, with 95 % \
         t intervals (loss: negative = lower; recall accuracy: positive = better). Recall \
         accuracy: argmax at the query positions equals the planted fact's value; indexer recall: \
         the fraction of (query, layer) whose top-k holds the fact's position.\n"
    );
    let f = |v: Option<f64>| v.map_or("–".to_string(), |x| format!("{x:.4}"));
    let d = |x: &Option<sparsity_stats::PairedDifference>| {
        x.as_ref().map_or("–".to_string(), |x| {
            format!("{:+.4} [{:+.4}, {:+.4}]", x.mean_diff, x.ci_low, x.ci_high)
        })
    };
    for l in &report.lengths {
        let _ = writeln!(
            s,
            "### L = {}: chosen on validation: {}\n\n| arm | k | test loss | recall accuracy | indexer recall | test loss − dense [95 % CI] | recall accuracy − dense [95 % CI] |\n|---|---|---|---|---|---|---|",
            l.length,
            l.chosen_arm.clone().unwrap_or_else(|| "–".into())
        );
        for c in report.cells.iter().filter(|c| c.length == l.length) {
            let h = l.held_out.iter().find(|h| h.arm == c.arm);
            let _ = writeln!(
                s,
                "| {}{} | {} | {} | {} | {} | {} | {} |",
                c.arm,
                if Some(&c.arm) == l.chosen_arm.as_ref() {
                    " (chosen)"
                } else {
                    ""
                },
                c.top_k,
                f(c.test_loss_mean),
                f(c.test_recall_accuracy_mean),
                f(c.test_indexer_recall_mean),
                h.map_or("–".to_string(), |h| d(&h.test_loss)),
                h.map_or("–".to_string(), |h| d(&h.recall_accuracy)),
            );
        }
        for h in &l.held_out {
            if let Some(n) = &h.note {
                let _ = writeln!(s, "\n{}: {n}", h.arm);
            }
        }
        s.push('\n');
    }
}

fn markdown(report: &SweepReport, sources: &[PathBuf]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "# DeepSeek sparse attention sweep\n");
    let _ = writeln!(
        s,
        "{} runs merged from {}. Keep ratio = fraction of the sequence length kept per query \
         (k = max(1, ⌊L·r⌋), causal: query t sees min(k, t+1) keys). Loss = mean next-token \
         cross-entropy on the whole validation split (texts disjoint from training).\n",
        report.runs,
        sources
            .iter()
            .map(|p| format!("`{}`", p.display()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        s,
        "![loss](loss_vs_ratio.png)\n\n![time](time_vs_ratio.png)\n"
    );
    let _ = writeln!(s, "## Answer (paired by seed)\n");
    let _ = writeln!(
        s,
        "Runs with the same seed share initialisation and data order, so every comparison is \
         paired by seed (paired t; intervals for differences of mean validation loss, negative = \
         lower loss). A ratio is called optimal only where it beats the runner-up at α = 0.05 \
         corrected over all pairs of ratios.\n"
    );
    for l in &report.lengths {
        match (&l.paired, &l.paired_note) {
            (Some(a), _) => {
                let _ = writeln!(s, "- **L = {}**: {}.", l.length, a.verdict);
            }
            (None, note) => {
                let _ = writeln!(
                    s,
                    "- **L = {}**: no paired analysis ({}).",
                    l.length,
                    note.clone().unwrap_or_default()
                );
            }
        }
    }
    let _ = writeln!(s, "\n## Results per length\n");
    let _ = writeln!(
        s,
        "| length | lowest-mean ratio | its loss | dense loss | lowest-mean vs dense (paired, 95 % CI) | optimal (corrected) |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    let f = |v: Option<f64>, d: usize| v.map_or("–".to_string(), |x| format!("{x:.d$}"));
    for l in &report.lengths {
        let vs_dense = l
            .paired
            .as_ref()
            .and_then(|a| {
                a.versus_dense
                    .iter()
                    .find(|v| Some(&v.arm) == l.lowest_mean_arm.as_ref())
            })
            .map_or("–".to_string(), |v| {
                format!(
                    "{:+.4} [{:+.4}, {:+.4}]",
                    v.difference.mean_diff, v.difference.ci_low, v.difference.ci_high
                )
            });
        let optimal = l.paired.as_ref().map_or("–".to_string(), |a| {
            a.optimal_arm
                .clone()
                .unwrap_or_else(|| "none distinguishable".into())
        });
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            l.length,
            l.lowest_mean_arm.clone().unwrap_or_else(|| "–".into()),
            f(l.lowest_mean_val_loss, 4),
            f(l.dense_val_loss, 4),
            vs_dense,
            optimal
        );
    }
    for l in &report.lengths {
        let Some(a) = &l.paired else { continue };
        let _ = writeln!(s, "\n### L = {}: paired by seed\n", l.length);
        if !a.versus_dense.is_empty() {
            let _ = writeln!(
                s,
                "| ratio − dense | seeds | mean difference | 95 % CI | simultaneous CI (Bonferroni, {} ratios) | d_z | Holm p | significant |\n|---|---|---|---|---|---|---|---|",
                a.versus_dense.len()
            );
            for v in &a.versus_dense {
                let d = &v.difference;
                let _ = writeln!(
                    s,
                    "| {} | {} | {:+.4} | [{:+.4}, {:+.4}] | [{:+.4}, {:+.4}] | {:+.2} | {:.3} | {} |",
                    v.arm,
                    d.n,
                    d.mean_diff,
                    d.ci_low,
                    d.ci_high,
                    v.simultaneous_ci.0,
                    v.simultaneous_ci.1,
                    d.cohens_dz,
                    v.p_holm,
                    if v.significant { "yes" } else { "no" }
                );
            }
        }
        if let Some(b) = &a.best_vs_runner_up {
            let _ = writeln!(
                s,
                "\nBest vs runner-up: {} − {} = {:+.4} over {} seeds, 95 % CI [{:+.4}, {:+.4}], \
                 {:.2} % CI [{:+.4}, {:+.4}] at the corrected level α = {:.3} (Bonferroni over \
                 the pairs of ratios), p = {:.3}: {}.",
                b.best,
                b.runner_up,
                b.difference.mean_diff,
                b.difference.n,
                b.difference.ci_low,
                b.difference.ci_high,
                100.0 * (1.0 - b.alpha_corrected),
                b.corrected_ci.0,
                b.corrected_ci.1,
                b.alpha_corrected,
                b.difference.p_value,
                if b.significant {
                    "significant"
                } else {
                    "not significant"
                }
            );
        }
        if let Some(m) = a.min_detectable_difference {
            let _ = writeln!(
                s,
                "\nSmallest difference the deciding comparison detects with 80 % power at its \
                 level: {m:.4} nats/token."
            );
        }
    }
    held_out_markdown(&mut s, report);
    let _ = writeln!(
        s,
        "\n## Unpaired statistics (for reference)\n\nThe original's analysis treats the arms as \
         independent groups (ANOVA, Tukey HSD, Welch against dense, power at α = 0.05 \
         uncorrected). The paired analysis above is the one that matches the design.\n"
    );
    let _ = writeln!(
        s,
        "| length | lowest-mean ratio | improvement vs dense | best vs runner-up (Tukey p) |"
    );
    let _ = writeln!(s, "|---|---|---|---|");
    for l in &report.lengths {
        let tukey = l.statistics.as_ref().map_or("–".to_string(), |st| {
            format!(
                "{} vs {}: p = {:.3}{}",
                st.best.label,
                st.best.runner_up_label,
                st.best.tukey_p_value,
                if st.best.significantly_better {
                    " (significant)"
                } else {
                    " (not significant)"
                }
            )
        });
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            l.length,
            l.lowest_mean_arm.clone().unwrap_or_else(|| "–".into()),
            l.improvement_vs_dense_percent
                .map_or("–".to_string(), |x| format!("{x:+.2} %")),
            tukey
        );
    }
    let _ = writeln!(s, "\n## Cells\n");
    let _ = writeln!(
        s,
        "| length | arm | keep ratio | k | mean kept fraction | n | val loss (mean ± sd) | val accuracy | train s | tokens/s |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
    for c in &report.cells {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.3} | {} | {:.4} ± {:.4} | {:.4} | {:.1} | {:.0} |",
            c.length,
            c.arm,
            c.keep_ratio
                .map_or("1 (dense)".to_string(), |k| format!("{k}")),
            c.top_k,
            c.mean_kept_fraction,
            c.n,
            c.val_loss_mean,
            c.val_loss_std,
            c.val_accuracy_mean,
            c.train_seconds_mean,
            c.train_tokens_per_second_mean
        );
    }
    let _ = writeln!(
        s,
        "\n## Unpaired statistics per length (the original's analysis)\n"
    );
    for l in &report.lengths {
        let _ = writeln!(s, "### L = {}\n", l.length);
        let Some(st) = &l.statistics else {
            let _ = writeln!(
                s,
                "No statistics: {}\n",
                l.statistics_note.clone().unwrap_or_default()
            );
            continue;
        };
        let _ = writeln!(
            s,
            "One-way ANOVA over the keep ratios: F({}, {}) = {:.3}, p = {:.4}.\n",
            st.anova.df_between, st.anova.df_within, st.anova.f_statistic, st.anova.p_value
        );
        let _ = writeln!(
            s,
            "| pair | mean difference | Tukey HSD p | significant |\n|---|---|---|---|"
        );
        for p in &st.tukey.pairs {
            let _ = writeln!(
                s,
                "| {} vs {} | {:+.4} | {:.4} | {} |",
                st.labels[p.group_a],
                st.labels[p.group_b],
                p.mean_diff,
                p.p_value,
                if p.reject { "yes" } else { "no" }
            );
        }
        if !st.versus_baseline.is_empty() {
            let _ = writeln!(
                s,
                "\n| ratio vs dense | Cohen's d | Welch p | Bonferroni p | significant |\n|---|---|---|---|---|"
            );
            for v in &st.versus_baseline {
                let _ = writeln!(
                    s,
                    "| {} | {:+.3} | {:.4} | {:.4} | {} |",
                    v.label,
                    v.cohens_d.d,
                    v.welch.p_value,
                    v.p_adjusted,
                    if v.significant { "yes" } else { "no" }
                );
            }
        }
        let _ = writeln!(
            s,
            "\nPower: with n = {} runs per group, a two-sample t test at α = {} detects d = {} with power {:.2}{}.\n",
            st.power.n_per_group,
            st.power.alpha,
            st.power.effect_size_d,
            st.power.power,
            st.power.n_for_target.map_or(String::new(), |n| format!(
                "; {} runs per group would reach power {}",
                n, st.power.target_power
            ))
        );
    }
    s
}

fn plot_cells(
    report: &SweepReport,
    path: &Path,
    title: &str,
    y_label: &str,
    value: impl Fn(&CellSummary) -> f64,
    error_bars: bool,
) -> Result<()> {
    use plotters::prelude::*;
    use sparsity_plot::FONT;
    let sparse: Vec<&CellSummary> = report
        .cells
        .iter()
        .filter(|c| c.keep_ratio.is_some())
        .collect();
    let all: Vec<f64> = report
        .cells
        .iter()
        .map(&value)
        .filter(|v| v.is_finite())
        .collect();
    if all.is_empty() {
        return Err(ModelError::Invalid(format!(
            "{}: no finite values to plot",
            path.display()
        )));
    }
    let (mut lo, mut hi) = all
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let extra = report
        .cells
        .iter()
        .map(|c| c.val_loss_std)
        .fold(0.0, f64::max);
    if error_bars {
        lo -= extra;
        hi += extra;
    }
    let pad = ((hi - lo).abs() * 0.08).max(1e-6);
    let lengths: Vec<usize> = report.lengths.iter().map(|l| l.length).collect();
    sparsity_plot::png_atomic(path, (1100, 700), |root| {
        let e = |e: &dyn std::fmt::Display| e.to_string();
        root.fill(&WHITE).map_err(|x| e(&x))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 28))
            .margin(20)
            .x_label_area_size(55)
            .y_label_area_size(90)
            .build_cartesian_2d(0.0f64..1.05, (lo - pad)..(hi + pad))
            .map_err(|x| e(&x))?;
        chart
            .configure_mesh()
            .x_desc("keep ratio (fraction of L kept per query)")
            .y_desc(y_label)
            .label_style((FONT, 18))
            .axis_desc_style((FONT, 20))
            .draw()
            .map_err(|x| e(&x))?;
        for (i, &l) in lengths.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            // a small horizontal offset per length keeps overlapping error bars apart
            let dx = (i as f64 - (lengths.len() as f64 - 1.0) / 2.0) * 0.006;
            let mut pts: Vec<(f64, f64, f64)> = sparse
                .iter()
                .filter(|c| c.length == l)
                .filter_map(|c| c.keep_ratio.map(|k| (k + dx, value(c), c.val_loss_std)))
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            chart
                .draw_series(LineSeries::new(
                    pts.iter().map(|p| (p.0, p.1)),
                    color.stroke_width(3),
                ))
                .map_err(|x| e(&x))?
                .label(format!("L = {l}"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
                });
            chart
                .draw_series(
                    pts.iter()
                        .map(|p| Circle::new((p.0, p.1), 5, color.filled())),
                )
                .map_err(|x| e(&x))?;
            if error_bars {
                chart
                    .draw_series(pts.iter().map(|p| {
                        PathElement::new(
                            vec![(p.0, p.1 - p.2), (p.0, p.1 + p.2)],
                            color.stroke_width(2),
                        )
                    }))
                    .map_err(|x| e(&x))?;
            }
            if let Some(d) = report
                .cells
                .iter()
                .find(|c| c.length == l && c.keep_ratio.is_none())
            {
                let y = value(d);
                chart
                    .draw_series(DashedLineSeries::new(
                        vec![(0.0, y), (1.05, y)],
                        8,
                        6,
                        color.stroke_width(2),
                    ))
                    .map_err(|x| e(&x))?
                    .label(format!("L = {l} dense"))
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(1))
                    });
            }
        }
        chart
            .configure_series_labels()
            .label_font((FONT, 18))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(|x| e(&x))?;
        root.present().map_err(|x| e(&x))?;
        Ok(())
    })
    .map_err(|err| ModelError::Invalid(err.to_string()))
}

/// A sweep invocation: what to run and where the results go.
#[derive(Debug, Clone)]
pub struct SweepRun {
    /// The grid and training options.
    pub params: SweepParams,
    /// The sweep's own command-line options as given (everything except `--shard`,
    /// `--results`, `--report`, `--emit-slurm` and `--dry-run`), repeated verbatim, each one
    /// shell-quoted, by the Slurm script. The caller that parsed them provides them (`cargo
    /// xtask dsa-sweep` re-serialises its parsed arguments and tests that they parse back equal).
    pub command_args: Vec<String>,
    /// Only shard `i` of `n`.
    pub shard: Option<(usize, usize)>,
    /// The JSON-lines results file (appended, resumed).
    pub results: PathBuf,
    /// Report directory (default: `report/` beside the results file).
    pub report_dir: Option<PathBuf>,
    /// Parquet results store directory.
    pub results_dir: PathBuf,
    /// Memory budget per run (default: what the system reports available).
    pub max_memory: Option<u64>,
    /// What to do.
    pub action: SweepAction,
}

/// What a sweep invocation does.
#[derive(Debug, Clone, PartialEq)]
pub enum SweepAction {
    /// Print the plan and the memory estimate only.
    DryRun,
    /// Write a Slurm job-array script of `shards` shards that re-runs `cargo xtask dsa-sweep`
    /// with this sweep's options ([`SweepRun::command_args`]), instead of running.
    EmitSlurm {
        /// Array size.
        shards: usize,
    },
    /// Run the missing runs of the (shard of the) grid, then write the report.
    Run,
}

/// What a sweep invocation did.
#[derive(Debug, Clone, PartialEq)]
pub enum SweepOutcome {
    /// The plan: number of runs and the peak memory estimate per run (bytes).
    Plan {
        /// Runs in the grid.
        runs: usize,
        /// Peak memory estimate per run.
        peak_memory: f64,
    },
    /// The Slurm script was written.
    Slurm {
        /// Its path.
        path: PathBuf,
        /// Runs in the grid.
        runs: usize,
    },
    /// A shard's runs done (its JSONL holds them); the merge (`cargo xtask dsa-report`) writes
    /// the report, so no task of an array writes over it.
    ShardDone {
        /// Results in this shard's file.
        runs: usize,
        /// The shard's results file.
        results: PathBuf,
    },
    /// Runs done; report written.
    Done {
        /// Results in the file.
        runs: usize,
        /// The Markdown report.
        report: PathBuf,
    },
}

impl std::fmt::Display for SweepOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Plan { runs, peak_memory } => write!(
                f,
                "{runs} runs; peak memory per run ≈ {}",
                human_bytes(*peak_memory)
            ),
            Self::Slurm { path, runs } => write!(
                f,
                "Slurm script for {runs} runs: {} (submit with `sbatch {}`)",
                path.display(),
                path.display()
            ),
            Self::ShardDone { runs, results } => write!(
                f,
                "DSA sweep shard: {runs} runs in {}; merge the shards with `cargo xtask dsa-report`",
                results.display()
            ),
            Self::Done { runs, report } => {
                write!(f, "DSA sweep: {runs} runs; report: {}", report.display())
            }
        }
    }
}

/// Parses a shard `i/n` (0-based).
pub fn parse_shard(s: &str) -> std::result::Result<(usize, usize), String> {
    let bad = || format!("`{s}`: expected i/n with 0 ≤ i < n, e.g. 0/4");
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    let i: usize = i.trim().parse().map_err(|_| bad())?;
    let n: usize = n.trim().parse().map_err(|_| bad())?;
    Ok((i, n))
}

/// Checks the options and memory, then plans, emits the Slurm script, or runs the missing runs
/// (one JSON line and four results-store rows each) and writes the report.
pub fn run_sweep(run: &SweepRun) -> crate::Result<SweepOutcome> {
    use crate::error::StepContext;
    let params = &run.params;
    params.validate().step("sweep options")?;
    let peak_memory = params
        .check_memory(
            params.options.vocab + params.options.task.extra_tokens(),
            run.max_memory,
        )
        .step("memory check")?;
    let all = run_list(params).step("planning the runs")?;
    let results_dir = run
        .results
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    match &run.action {
        SweepAction::DryRun => {
            return Ok(SweepOutcome::Plan {
                runs: all.len(),
                peak_memory,
            });
        }
        SweepAction::EmitSlurm { shards } => {
            let script = slurm_script(
                &run.command_args,
                *shards,
                &results_dir,
                "dsa-sweep",
                "24:00:00",
                4,
            )
            .step("Slurm script")?;
            let path = results_dir.join("sweep.slurm");
            sparsity_io::write_atomic(&path, script.as_bytes())
                .with_step(|| format!("writing {}", path.display()))?;
            return Ok(SweepOutcome::Slurm {
                path,
                runs: all.len(),
            });
        }
        SweepAction::Run => {}
    }
    let runs = match run.shard {
        Some((i, n)) => shard(all, i, n).step("--shard")?,
        None => all,
    };
    let existing = read_results(&run.results).step("reading the results file")?;
    check_resume(&run.results, &existing, &params.run_options()).step("resuming")?;
    let done: HashSet<String> = existing.into_iter().map(|r| r.spec.id).collect();
    let todo: Vec<_> = runs.into_iter().filter(|r| !done.contains(&r.id)).collect();
    tracing::info!(runs = todo.len(), already_done = done.len(), results = %run.results.display(), "DSA sweep");
    if !todo.is_empty() {
        let data = SweepData::demo_corpus(params.options.data_seed, params.options.vocab)
            .step("sweep data")?;
        tracing::info!(source = %data.source, train_tokens = data.train.len(), validation_tokens = data.validation.len(), "data");
        let device = sparsity_models::cpu_device().autodiff();
        let span = tracing::info_span!(
            "dsa-sweep",
            progress_total = todo.len() as u64,
            progress_unit = "runs"
        );
        let meta = crate::results::RunMeta::new("dsa-sweep", &serde_json::Value::Null)
            .step("serialising the run parameters")?;
        for spec in &todo {
            let result =
                run_one(spec, params, &data, &device).with_step(|| format!("run {}", spec.id))?;
            append_result(&run.results, &result).step("appending to the results file")?;
            let meta = crate::results::RunMeta {
                parameters: serde_json::json!({
                    "run": spec.id, "length": spec.length, "keep_ratio": spec.keep_ratio,
                    "top_k": spec.top_k, "seed": spec.seed, "preset": params.options.preset.name(),
                    "steps": params.options.steps,
                })
                .to_string(),
                timestamp_us: crate::results::now_us(),
                ..meta.clone()
            };
            let model = format!("dsa-{}", params.options.preset.name());
            let site = format!("L{}", spec.length);
            let method = spec
                .keep_ratio
                .map_or("dense".to_string(), |k| format!("dsa-keep-{k}"));
            let rows: Vec<_> = [
                ("final_val_loss", result.final_val_loss),
                ("final_val_accuracy", result.final_val_accuracy),
                ("train_seconds", result.train_seconds),
                ("train_tokens_per_second", result.train_tokens_per_second),
            ]
            .into_iter()
            .map(|(metric, value)| meta.row(&model, None, &site, &method, metric, value))
            .collect();
            crate::results::append_rows(&run.results_dir, &rows)
                .step("appending to the results store")?;
            tracing::info!(run = %spec.id, val_loss = result.final_val_loss, val_accuracy = result.final_val_accuracy, seconds = result.train_seconds, "run done");
            tracing::trace!(target: sparsity_models::PROGRESS, parent: &span, progress_inc = 1u64);
        }
    }
    let results = read_results(&run.results).step("reading the results file")?;
    if run.shard.is_some() {
        return Ok(SweepOutcome::ShardDone {
            runs: results.len(),
            results: run.results.clone(),
        });
    }
    let report = summarize(&results).step("summarising the sweep")?;
    let dir = run
        .report_dir
        .clone()
        .unwrap_or_else(|| results_dir.join("report"));
    let md = write_report(&report, std::slice::from_ref(&run.results), &dir)
        .step("writing the report")?;
    Ok(SweepOutcome::Done {
        runs: results.len(),
        report: md,
    })
}

/// Merges the results files `files` (a run id in several files counts once, the first
/// occurrence) and writes the report into `out`; returns the report and its Markdown path.
pub fn merge_report(files: &[PathBuf], out: &Path) -> crate::Result<(SweepReport, PathBuf)> {
    use crate::error::{ExperimentError, StepContext};
    let mut all = Vec::new();
    for f in files {
        if !f.is_file() {
            return Err(ExperimentError::invalid(
                "FILES",
                format!("{}: no such results file", f.display()),
            ));
        }
        all.extend(read_results(f).with_step(|| format!("reading {}", f.display()))?);
    }
    if all.is_empty() {
        return Err(ExperimentError::invalid(
            "FILES",
            format!("no runs in {files:?}"),
        ));
    }
    let report = summarize(&all).step("summarising the sweep")?;
    let md = write_report(&report, files, out).step("writing the report")?;
    Ok((report, md))
}
