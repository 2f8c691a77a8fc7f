//! The embedded default: tiny GPT-2 and Mamba trained on the synthetic corpus, cached on disk.
//!
//! Pipeline (every step seeded, so the cached weights depend only on the [`DemoConfig`], i.e. on
//! the seed for the default options): generate the corpus splits ([`crate::corpus`]), train a
//! byte-level BPE tokenizer on the train split ([`crate::demo_tokenizer`]), tokenise each split
//! into one stream (`<|endoftext|>` = 0 after every text), then train a GPT-2 (Radford et al. 2019)
//! and a Mamba (Gu & Dao 2023) with [`crate::train`] (AdamW, warm-up + cosine, clipping) on the
//! train stream, validating on the validation stream. Both are saved in Hugging Face layout
//! (`config.json`, `model.safetensors`, `tokenizer.json`; `transformers` loads them with
//! `AutoModelForCausalLM.from_pretrained(dir)`), next to a `demo.json` training record.
//!
//! The bar: a model's validation cross-entropy must be clearly below the unigram entropy of the
//! tokenised corpus, `H = -Σ_t p(t) ln p(t)` nats per token, the best any context-free model can do.
//!
//! Layout: `<cache>/<key>/{gpt2,mamba}/…` and `<cache>/<key>/demo.json`, where `<cache>` is
//! [`default_cache_dir`] (`$SPARSITY_LAB_CACHE/demo`, else the user's cache directory; `cargo xtask`
//! uses `<workspace>/target/sparsity-lab-cache/demo`)
//! and `<key>` is `seed-<seed>` for the default options (`seed-<seed>-<hash>` otherwise). A run
//! trains into a temporary directory and renames it into place, so a cache entry is complete or
//! absent.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::corpus::{self, CorpusError, CorpusSplits, SplitSizes};
use crate::demo_tokenizer::{self, TokenizerError};
use crate::train::{self, CausalLmTrain, TrainConfig, TrainError, TrainRecord};
use sparsity_models::error::ModelError;
use sparsity_models::{Gpt2, Gpt2Config, Mamba, MambaConfig, TimeStepRank};

/// Environment variable naming the cache root (the demo models go to `$SPARSITY_LAB_CACHE/demo`).
pub const CACHE_ENV: &str = "SPARSITY_LAB_CACHE";
/// Seed of the default demo models.
pub const DEFAULT_SEED: u64 = 42;
/// Name of the training record in a cache entry.
pub const RECORD_FILE: &str = "demo.json";

/// Errors of the demo pipeline.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Corpus generation failed.
    #[error("demo corpus: {0}")]
    Corpus(#[from] CorpusError),
    /// Tokenizer training, saving or encoding failed.
    #[error("demo tokenizer: {0}")]
    Tokenizer(#[from] TokenizerError),
    /// Training a model failed.
    #[error("training the demo {model}: {source}")]
    Train {
        /// `gpt2` or `mamba`.
        model: &'static str,
        /// The training error.
        source: TrainError,
    },
    /// Building, saving or loading a model failed.
    #[error("demo {model}: {source}")]
    Model {
        /// `gpt2` or `mamba`.
        model: &'static str,
        /// The model error.
        source: ModelError,
    },
    /// A file or directory operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `demo.json` could not be written or read.
    #[error("{path}: {message}")]
    Record {
        /// The record file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// An option is invalid.
    #[error("demo option `{option}`: {message}")]
    InvalidOption {
        /// The option.
        option: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// Writes a training record as pretty JSON, atomically.
pub(crate) fn write_record(path: &Path, record: &impl serde::Serialize) -> Result<(), DemoError> {
    let json = serde_json::to_vec_pretty(record).map_err(|e| DemoError::Record {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    sparsity_io::write_atomic(path, &json)
        .map_err(sparsity_io::IoError::into_io)
        .map_err(io_err(path))
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DemoError + '_ {
    move |source| DemoError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Everything that determines the demo models.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DemoConfig {
    /// Master seed: corpus texts, model initialisation and data order derive from it.
    pub seed: u64,
    /// Corpus split sizes (texts).
    pub splits: SplitSizes,
    /// Requested tokenizer vocabulary (the models use the trained tokenizer's actual size).
    pub vocab_size: usize,
    /// GPT-2 architecture (`vocab_size` is set from the tokenizer).
    pub gpt2: Gpt2Config,
    /// Mamba architecture (`vocab_size` is set from the tokenizer).
    pub mamba: MambaConfig,
    /// GPT-2 training options (`seed` is derived from [`DemoConfig::seed`]).
    pub gpt2_train: TrainConfig,
    /// Mamba training options (`seed` is derived from [`DemoConfig::seed`]).
    pub mamba_train: TrainConfig,
}

impl DemoConfig {
    /// The default demo: 4 × 128 GPT-2 and Mamba, BPE vocabulary 2048, seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        let gpt2 = Gpt2Config {
            vocab_size: 2048,
            n_positions: 256,
            n_embd: 128,
            n_layer: 4,
            n_head: 4,
            n_inner: None,
            bos_token_id: Some(0),
            eos_token_id: Some(0),
            pad_token_id: None,
            ..Gpt2Config::default()
        };
        let mamba = MambaConfig {
            vocab_size: 2048,
            hidden_size: 128,
            state_size: 16,
            num_hidden_layers: 4,
            expand: 2,
            intermediate_size: None,
            conv_kernel: 4,
            time_step_rank: TimeStepRank::Auto("auto".into()),
            bos_token_id: Some(0),
            eos_token_id: Some(0),
            pad_token_id: Some(0),
            ..MambaConfig::default()
        };
        // 1200 steps (~3.5 min on 2 cores): at 400 the GPT-2 was still so close to its
        // initialisation that Wanda lost to magnitude pruning on it (docs/pruning.md).
        let gpt2_train = TrainConfig {
            steps: 1200,
            batch_size: 8,
            seq_len: 64,
            learning_rate: 3e-3,
            warmup_steps: 30,
            eval_every: 300,
            eval_batches: Some(8),
            seed,
            show_progress: true,
            ..TrainConfig::default()
        };
        // The sequential scan makes a Mamba step ~10x dearer than a GPT-2 step on CPU (its
        // backward grows with seq²): shorter windows, fewer steps, a higher peak rate.
        let mamba_train = TrainConfig {
            steps: 200,
            seq_len: 32,
            learning_rate: 6e-3,
            warmup_steps: 20,
            eval_every: 50,
            ..gpt2_train.clone()
        };
        Self {
            seed,
            splits: SplitSizes::default(),
            vocab_size: 2048,
            gpt2,
            mamba,
            gpt2_train,
            mamba_train,
        }
    }

    /// Sets the number of optimiser steps of both models (evaluations every quarter of the run).
    pub fn with_steps(mut self, steps: usize) -> Self {
        for t in [&mut self.gpt2_train, &mut self.mamba_train] {
            t.set_steps(steps);
        }
        self
    }

    /// Cache sub-directory name: `seed-<seed>` for the defaults, else `seed-<seed>-<hash>` with
    /// a 64-bit FNV-1a hash of the options.
    pub fn cache_key(&self) -> String {
        if *self == Self::new(self.seed) {
            return format!("seed-{}", self.seed);
        }
        let json = serde_json::to_string(&self.normalised()).unwrap_or_default();
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in json.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        format!("seed-{}-{h:016x}", self.seed)
    }

    /// The options without those that do not change the weights (progress display).
    fn normalised(&self) -> Self {
        let mut c = self.clone();
        c.gpt2_train.show_progress = false;
        c.mamba_train.show_progress = false;
        c
    }

    fn validate(&self) -> Result<(), DemoError> {
        if self.vocab_size < 257 {
            return Err(DemoError::InvalidOption {
                option: "vocab_size",
                message: format!(
                    "{} is below 257 (256 bytes + <|endoftext|>)",
                    self.vocab_size
                ),
            });
        }
        for (model, t) in [("gpt2", &self.gpt2_train), ("mamba", &self.mamba_train)] {
            t.clone()
                .validate()
                .map_err(|source| DemoError::Train { model, source })?;
        }
        if self.gpt2_train.seq_len > self.gpt2.n_positions {
            return Err(DemoError::InvalidOption {
                option: "gpt2_train.seq_len",
                message: format!(
                    "{} exceeds the GPT-2 n_positions {}",
                    self.gpt2_train.seq_len, self.gpt2.n_positions
                ),
            });
        }
        Ok(())
    }
}

/// Sizes of the tokenised corpus.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CorpusStats {
    /// Texts per split.
    pub texts: SplitSizes,
    /// Tokens in the train stream (`<|endoftext|>` included).
    pub train_tokens: usize,
    /// Tokens in the validation stream.
    pub validation_tokens: usize,
    /// Tokens in the held-out stream.
    pub held_out_tokens: usize,
    /// Word forms in the grammar's lexicon.
    pub lexicon_words: usize,
    /// Words in the train split.
    pub train_words: usize,
}

/// Training outcome of one demo model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DemoModelRecord {
    /// Parameters of the model.
    pub n_params: usize,
    /// Seed of the weight initialisation.
    pub init_seed: u64,
    /// The training run (losses, validation curve, time).
    pub train: TrainRecord,
    /// Final validation loss, nats per token.
    pub val_loss: f64,
    /// Loss on the whole held-out stream after training, nats per token.
    pub held_out_loss: f64,
}

/// The `demo.json` training record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DemoRecord {
    /// The options the models were built with.
    pub config: DemoConfig,
    /// Version of sparsity-models that trained them.
    pub crate_version: String,
    /// Corpus sizes.
    pub corpus: CorpusStats,
    /// Actual tokenizer vocabulary (= the models' `vocab_size`).
    pub tokenizer_vocab_size: usize,
    /// Unigram entropy of the train token stream, nats per token: the bar to beat.
    pub unigram_entropy: f64,
    /// Unigram entropy of the validation token stream, nats per token.
    pub unigram_entropy_validation: f64,
    /// Unigram entropy of the train split's words, nats per word.
    pub word_unigram_entropy: f64,
    /// The GPT-2.
    pub gpt2: DemoModelRecord,
    /// The Mamba.
    pub mamba: DemoModelRecord,
    /// Wall-clock seconds of the whole pipeline.
    pub seconds_total: f64,
}

/// Where the demo models are.
#[derive(Clone, Debug)]
pub struct DemoModels {
    /// The cache entry (holds `demo.json`).
    pub dir: PathBuf,
    /// GPT-2 in Hugging Face layout.
    pub gpt2_dir: PathBuf,
    /// Mamba in Hugging Face layout.
    pub mamba_dir: PathBuf,
    /// The shared `tokenizer.json` (a copy is in each model directory).
    pub tokenizer_path: PathBuf,
    /// The training record.
    pub record: DemoRecord,
    /// True when this call trained the models, false when it found them in the cache.
    pub trained: bool,
}

impl DemoModels {
    /// The corpus texts the models were trained on (regenerated from the seed).
    pub fn train_texts(&self) -> Vec<String> {
        let c = &self.record.config;
        corpus::generate_range(c.seed, 0, c.splits.train)
    }

    /// The held-out split of the corpus (never seen in training or validation).
    pub fn held_out_texts(&self) -> Vec<String> {
        let c = &self.record.config;
        let start = c.splits.train + c.splits.validation;
        corpus::generate_range(c.seed, start, start + c.splits.held_out)
    }
}

/// The demo cache directory a library user gets: `$SPARSITY_LAB_CACHE/demo` when the variable
/// is set, else the platform's user cache directory (`$XDG_CACHE_HOME/sparsity-lab/demo` or
/// `~/.cache/sparsity-lab/demo` on Linux, `~/Library/Caches/sparsity-lab/demo` on macOS,
/// `%LOCALAPPDATA%\sparsity-lab\demo` on Windows), as hf-hub keeps `~/.cache/huggingface`;
/// the system temporary directory when none of these is known. Never a path inside this
/// crate's source (`cargo xtask` passes the workspace's `target/` explicitly).
pub fn default_cache_dir() -> PathBuf {
    cache_dir_from(|k| std::env::var_os(k))
}

/// The demo cache of a build tree: `$SPARSITY_LAB_CACHE/demo` when set, else
/// `<target_dir>/sparsity-lab-cache/demo` (what `cargo xtask` and the workspace's tests use, so
/// they train the demo models once).
pub fn cache_dir_in_target(target_dir: &Path) -> PathBuf {
    std::env::var_os(CACHE_ENV)
        .filter(|v| !v.is_empty())
        .map(|r| PathBuf::from(r).join("demo"))
        .unwrap_or_else(|| target_dir.join("sparsity-lab-cache").join("demo"))
}

/// [`default_cache_dir`] with the environment given as a lookup function (testable).
pub fn cache_dir_from(env: impl Fn(&str) -> Option<std::ffi::OsString>) -> PathBuf {
    let var = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(root) = var(CACHE_ENV) {
        return root.join("demo");
    }
    let user_cache = if cfg!(target_os = "windows") {
        var("LOCALAPPDATA")
    } else if cfg!(target_os = "macos") {
        var("HOME").map(|h| h.join("Library").join("Caches"))
    } else {
        var("XDG_CACHE_HOME").or_else(|| var("HOME").map(|h| h.join(".cache")))
    };
    user_cache
        .unwrap_or_else(std::env::temp_dir)
        .join("sparsity-lab")
        .join("demo")
}

/// The default demo models (seed [`DEFAULT_SEED`]) under `cache_dir`: trained on the first call,
/// read from the cache afterwards.
pub fn ensure_demo_models(cache_dir: &Path) -> Result<DemoModels, DemoError> {
    ensure_demo_models_with(cache_dir, &DemoConfig::new(DEFAULT_SEED), false)
}

/// The demo models for `config` under `cache_dir`; `force` retrains even when cached.
pub fn ensure_demo_models_with(
    cache_dir: &Path,
    config: &DemoConfig,
    force: bool,
) -> Result<DemoModels, DemoError> {
    config.validate()?;
    let dir = cache_dir.join(config.cache_key());
    if !force && let Some(models) = read_cached(&dir, config)? {
        tracing::info!(dir = %dir.display(), "demo models found in the cache");
        return Ok(models);
    }
    std::fs::create_dir_all(cache_dir).map_err(io_err(cache_dir))?;
    let tmp = cache_dir.join(format!(
        ".{}.tmp-{}-{}",
        config.cache_key(),
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    let result = build_demo(&tmp, config);
    let record = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
    }
    std::fs::rename(&tmp, &dir).map_err(io_err(&dir))?;
    tracing::info!(dir = %dir.display(), "demo models trained and cached");
    Ok(models_at(&dir, record, true))
}

fn models_at(dir: &Path, record: DemoRecord, trained: bool) -> DemoModels {
    DemoModels {
        dir: dir.to_path_buf(),
        gpt2_dir: dir.join("gpt2"),
        mamba_dir: dir.join("mamba"),
        tokenizer_path: dir.join("tokenizer.json"),
        record,
        trained,
    }
}

/// A complete cache entry for `config`, or `None` when absent, incomplete or built with other
/// options.
fn read_cached(dir: &Path, config: &DemoConfig) -> Result<Option<DemoModels>, DemoError> {
    let record_path = dir.join(RECORD_FILE);
    if !record_path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&record_path).map_err(io_err(&record_path))?;
    let record: DemoRecord = match serde_json::from_str(&text) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(path = %record_path.display(), error = %e, "unreadable demo record; retraining");
            return Ok(None);
        }
    };
    if record.config.normalised() != config.normalised() {
        tracing::warn!(path = %record_path.display(), "demo record was built with other options; retraining");
        return Ok(None);
    }
    let models = models_at(dir, record, false);
    let complete = [&models.gpt2_dir, &models.mamba_dir].iter().all(|d| {
        ["config.json", "model.safetensors", "tokenizer.json"]
            .iter()
            .all(|f| d.join(f).is_file())
    }) && models.tokenizer_path.is_file();
    Ok(complete.then_some(models))
}

/// Seed of a model's weight initialisation, derived from the master seed.
fn init_seed(seed: u64, model: &str) -> u64 {
    let salt = match model {
        "gpt2" => 0x6770_7432_0000_0001,
        _ => 0x6d61_6d62_6100_0002,
    };
    seed ^ salt
}

/// Token streams of the three splits.
struct Streams {
    train: Vec<u32>,
    validation: Vec<u32>,
    held_out: Vec<u32>,
}

/// What the two model trainings share.
struct Shared<'a> {
    streams: &'a Streams,
    vocab: usize,
    device: &'a Device,
}

fn train_and_save<M: CausalLmTrain>(
    name: &'static str,
    model: M,
    init_seed: u64,
    train_config: &TrainConfig,
    shared: &Shared<'_>,
    save: impl FnOnce(&M) -> Result<(), ModelError>,
) -> Result<DemoModelRecord, DemoError> {
    let Shared {
        streams,
        vocab,
        device,
    } = *shared;
    tracing::info!(
        model = name,
        params = model.num_params(),
        "training demo model"
    );
    let (model, record) = train::train(
        model,
        &streams.train,
        &streams.validation,
        vocab,
        train_config,
        device,
    )
    .map_err(|source| DemoError::Train {
        model: name,
        source,
    })?;
    let held_out_loss = train::evaluate(
        &model,
        &streams.held_out,
        vocab,
        train_config.seq_len,
        train_config.batch_size,
        None,
        device,
    )
    .map_err(|source| DemoError::Train {
        model: name,
        source,
    })?;
    let model = model.valid();
    save(&model).map_err(|source| DemoError::Model {
        model: name,
        source,
    })?;
    Ok(DemoModelRecord {
        n_params: model.num_params(),
        init_seed,
        val_loss: record.final_val_loss().unwrap_or(f64::NAN),
        held_out_loss,
        train: record,
    })
}

/// Runs the whole pipeline into `dir` and returns its record.
fn build_demo(dir: &Path, config: &DemoConfig) -> Result<DemoRecord, DemoError> {
    let started = Instant::now();
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let splits = CorpusSplits::generate(config.seed, config.splits)?;
    tracing::info!(texts = config.splits.train, "training the BPE tokenizer");
    let tokenizer = demo_tokenizer::train_bpe_tokenizer(&splits.train, config.vocab_size)?;
    let vocab = tokenizer.get_vocab_size(true);
    let tokenizer_path = dir.join("tokenizer.json");
    demo_tokenizer::save_tokenizer(&tokenizer, &tokenizer_path)?;
    let streams = Streams {
        train: demo_tokenizer::encode_stream(&tokenizer, &splits.train)?,
        validation: demo_tokenizer::encode_stream(&tokenizer, &splits.validation)?,
        held_out: demo_tokenizer::encode_stream(&tokenizer, &splits.held_out)?,
    };
    let unigram_entropy = corpus::unigram_entropy(streams.train.iter().copied())?;
    let unigram_entropy_validation = corpus::unigram_entropy(streams.validation.iter().copied())?;
    let word_unigram_entropy = corpus::word_unigram_entropy(&splits.train)?;
    tracing::info!(
        vocab,
        train_tokens = streams.train.len(),
        unigram_entropy,
        "corpus tokenised"
    );
    let corpus_stats = CorpusStats {
        texts: splits.sizes(),
        train_tokens: streams.train.len(),
        validation_tokens: streams.validation.len(),
        held_out_tokens: streams.held_out.len(),
        lexicon_words: corpus::lexicon_size(),
        train_words: splits
            .train
            .iter()
            .map(|t| t.split_whitespace().count())
            .sum(),
    };

    let device = sparsity_models::util::cpu_device().autodiff();
    let save_tokenizer_to = |model_dir: &Path| {
        demo_tokenizer::save_tokenizer(&tokenizer, &model_dir.join("tokenizer.json"))
    };

    let gpt2_dir = dir.join("gpt2");
    let gpt2_config = Gpt2Config {
        vocab_size: vocab,
        ..config.gpt2.clone()
    };
    let gpt2_seed = init_seed(config.seed, "gpt2");
    let gpt2 = Gpt2::init(&gpt2_config, gpt2_seed, &device).map_err(|source| DemoError::Model {
        model: "gpt2",
        source,
    })?;
    let gpt2_train = TrainConfig {
        seed: config.seed,
        ..config.gpt2_train.clone()
    };
    let shared = Shared {
        streams: &streams,
        vocab,
        device: &device,
    };
    let gpt2_record = train_and_save("gpt2", gpt2, gpt2_seed, &gpt2_train, &shared, |m| {
        m.save_pretrained(&gpt2_dir)
    })?;
    save_tokenizer_to(&gpt2_dir)?;

    let mamba_dir = dir.join("mamba");
    let mamba_config = MambaConfig {
        vocab_size: vocab,
        ..config.mamba.clone()
    };
    let mamba_seed = init_seed(config.seed, "mamba");
    let mamba =
        Mamba::init(&mamba_config, mamba_seed, &device).map_err(|source| DemoError::Model {
            model: "mamba",
            source,
        })?;
    let mamba_train = TrainConfig {
        seed: config.seed,
        ..config.mamba_train.clone()
    };
    let mamba_record = train_and_save("mamba", mamba, mamba_seed, &mamba_train, &shared, |m| {
        m.save_pretrained(&mamba_dir)
    })?;
    save_tokenizer_to(&mamba_dir)?;

    let record = DemoRecord {
        config: config.clone(),
        crate_version: env!("CARGO_PKG_VERSION").to_string(),
        corpus: corpus_stats,
        tokenizer_vocab_size: vocab,
        unigram_entropy,
        unigram_entropy_validation,
        word_unigram_entropy,
        gpt2: gpt2_record,
        mamba: mamba_record,
        seconds_total: started.elapsed().as_secs_f64(),
    };
    write_record(&dir.join(RECORD_FILE), &record)?;
    Ok(record)
}

/// A plain-text summary of the demo models: where they are, the corpus, and per model its
/// parameters, steps and losses against the corpus' unigram entropy (a model whose validation
/// loss is not below it learned no context, which is also logged as a warning).
pub fn summary(models: &DemoModels) -> String {
    let r = &models.record;
    let source = if models.trained {
        "trained now"
    } else {
        "loaded from cache"
    };
    let mut s = format!("demo models ({source}): {}\n", models.dir.display());
    s += &format!(
        "corpus: {} train / {} validation / {} held-out texts, {} train tokens, BPE vocab {}\n",
        r.corpus.texts.train,
        r.corpus.texts.validation,
        r.corpus.texts.held_out,
        r.corpus.train_tokens,
        r.tokenizer_vocab_size
    );
    s += &format!(
        "unigram entropy (train tokens): {:.4} nats/token (validation stream: {:.4})\n",
        r.unigram_entropy, r.unigram_entropy_validation
    );
    s += &format!(
        "{:<6} {:>9} {:>7} {:>10} {:>10} {:>14} {:>9}\n",
        "model", "params", "steps", "val loss", "held-out", "val − entropy", "train s"
    );
    for (name, m) in [("gpt2", &r.gpt2), ("mamba", &r.mamba)] {
        s += &format!(
            "{:<6} {:>9} {:>7} {:>10.4} {:>10.4} {:>14.4} {:>9.1}\n",
            name,
            m.n_params,
            m.train.config.steps,
            m.val_loss,
            m.held_out_loss,
            m.val_loss - r.unigram_entropy,
            m.train.seconds
        );
        if m.val_loss >= r.unigram_entropy {
            tracing::warn!(
                model = name,
                val_loss = m.val_loss,
                unigram_entropy = r.unigram_entropy,
                "validation loss is not below the unigram entropy: the model learned no context"
            );
        }
    }
    s += &format!(
        "gpt2:  {}\nmamba: {}\n",
        models.gpt2_dir.display(),
        models.mamba_dir.display()
    );
    s
}

#[cfg(test)]
mod cache_dir_tests {
    use super::*;
    use std::ffi::OsString;

    #[test]
    fn cache_dir_follows_the_override_then_the_platform() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        let over = cache_dir_from(env(&[(CACHE_ENV, "/tmp/sl-test"), ("HOME", "/home/u")]));
        assert_eq!(over, PathBuf::from("/tmp/sl-test/demo"));
        // An empty override counts as unset.
        let unset = cache_dir_from(env(&[(CACHE_ENV, ""), ("HOME", "/home/u")]));
        assert!(unset.ends_with("sparsity-lab/demo"), "{}", unset.display());
        // Never inside a source tree (the old default was `<crate>/../../target/...`).
        assert!(
            !unset.to_string_lossy().contains("target"),
            "{}",
            unset.display()
        );
        if cfg!(target_os = "linux") {
            assert_eq!(unset, PathBuf::from("/home/u/.cache/sparsity-lab/demo"));
            let xdg = cache_dir_from(env(&[("XDG_CACHE_HOME", "/x"), ("HOME", "/home/u")]));
            assert_eq!(xdg, PathBuf::from("/x/sparsity-lab/demo"));
        }
        let nothing = cache_dir_from(|_| None);
        assert!(nothing.starts_with(std::env::temp_dir()));
    }
}
