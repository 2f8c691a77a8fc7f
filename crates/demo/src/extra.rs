//! The demo OPT and Llama: trained on the demo corpus with the demo pair's tokenizer, on first
//! use and cached next to the pair, so pruning and activation-sparsity checks run on weights that
//! are not random for every family.
//!
//! Layout: `<cache>/<key>/extra/{opt,llama}/` (`config.json`, `model.safetensors`,
//! `tokenizer.json`, `demo_extra.json`), `<key>` being the demo pair's entry (which is built first
//! when absent). They are kept out of the default pair so `cargo xtask analyze` does not pay for
//! their training (about 3–4 minutes each on 2 cores). Each is trained into a temporary
//! directory and renamed into place.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::prelude::*;
use serde::{Deserialize, Serialize};
use sparsity_models::{CausalLm, Llama, LlamaConfig, Opt, OptConfig, TokenIds};

use crate::demo::{DemoConfig, DemoError, DemoModelRecord, DemoModels, ensure_demo_models_with};
use crate::demo_tokenizer;
use crate::train::{self, TrainConfig};

/// The demo models outside the default pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExtraDemo {
    /// A 4 × 128 pre-LN OPT with ReLU MLPs (exact zeros, as OPT-125m has).
    Opt,
    /// A 4 × 128 Llama with grouped-query attention (4 query / 2 key-value heads), SwiGLU, RoPE.
    Llama,
}

impl ExtraDemo {
    /// Every extra demo model.
    pub const ALL: [ExtraDemo; 2] = [ExtraDemo::Opt, ExtraDemo::Llama];

    /// `opt` or `llama`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Opt => "opt",
            Self::Llama => "llama",
        }
    }

    /// The training options: GPT-2's demo schedule (8 × 64 tokens per step, AdamW, warm-up +
    /// cosine), 1200 steps for OPT and 2400 for the Llama.
    pub fn train_config(self, seed: u64) -> TrainConfig {
        let mut t = DemoConfig::new(seed).gpt2_train;
        t.seed = seed;
        if self == Self::Llama {
            t.set_steps(2400);
        }
        t
    }

    /// The architecture for a tokenizer of `vocab` entries.
    fn model(
        self,
        vocab: usize,
        seed: u64,
        device: &burn::tensor::Device,
    ) -> Result<Model, DemoError> {
        let err = |source| DemoError::Model {
            model: self.name(),
            source,
        };
        Ok(match self {
            Self::Opt => Model::Opt(
                Opt::init(
                    &OptConfig {
                        vocab_size: vocab,
                        hidden_size: 128,
                        num_hidden_layers: 4,
                        ffn_dim: 512,
                        max_position_embeddings: 256,
                        num_attention_heads: 4,
                        bos_token_id: Some(TokenIds::One(0)),
                        eos_token_id: Some(TokenIds::One(0)),
                        pad_token_id: Some(TokenIds::One(0)),
                        ..OptConfig::default()
                    },
                    seed,
                    device,
                )
                .map_err(err)?,
            ),
            Self::Llama => Model::Llama(
                Llama::init(
                    &LlamaConfig {
                        vocab_size: vocab,
                        hidden_size: 128,
                        intermediate_size: 344,
                        num_hidden_layers: 4,
                        num_attention_heads: 4,
                        num_key_value_heads: Some(2),
                        max_position_embeddings: 256,
                        tie_word_embeddings: false,
                        bos_token_id: Some(TokenIds::One(0)),
                        eos_token_id: Some(TokenIds::One(0)),
                        ..LlamaConfig::default()
                    },
                    seed,
                    device,
                )
                .map_err(err)?,
            ),
        })
    }

    fn init_seed(self, seed: u64) -> u64 {
        seed ^ match self {
            Self::Opt => 0x6f70_7400_0000_0003,
            Self::Llama => 0x6c6c_616d_6100_0004,
        }
    }
}

impl std::str::FromStr for ExtraDemo {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| format!("unknown extra demo model `{s}` (opt, llama)"))
    }
}

#[allow(clippy::large_enum_variant)] // one value, built once per training run
enum Model {
    Opt(Opt),
    Llama(Llama),
}

/// The `demo_extra.json` record of one extra demo model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExtraDemoRecord {
    /// Which model.
    pub model: ExtraDemo,
    /// The training options.
    pub train_config: TrainConfig,
    /// The training outcome (losses against the pair's unigram entropy in `demo.json`).
    pub record: DemoModelRecord,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Where an extra demo model is.
#[derive(Clone, Debug)]
pub struct ExtraDemoModel {
    /// The model directory (Hugging Face layout).
    pub dir: PathBuf,
    /// The demo pair it shares the corpus and tokenizer with.
    pub pair: DemoModels,
    /// Its training record.
    pub record: ExtraDemoRecord,
    /// True when this call trained it.
    pub trained: bool,
}

/// Name of an extra model's training record.
pub const EXTRA_RECORD_FILE: &str = "demo_extra.json";

/// The extra demo model `which` of the default demo (seed [`crate::demo::DEFAULT_SEED`]) under
/// `cache_dir`, trained on first use (after the pair, whose tokenizer it uses).
pub fn ensure_extra_demo(cache_dir: &Path, which: ExtraDemo) -> Result<ExtraDemoModel, DemoError> {
    let config = DemoConfig::new(crate::demo::DEFAULT_SEED);
    let pair = ensure_demo_models_with(cache_dir, &config, false)?;
    let dir = pair.dir.join("extra").join(which.name());
    let train_config = which.train_config(config.seed);
    let record_path = dir.join(EXTRA_RECORD_FILE);
    if record_path.is_file() && dir.join("model.safetensors").is_file() {
        let text = std::fs::read_to_string(&record_path).map_err(|source| DemoError::Io {
            path: record_path.clone(),
            source,
        })?;
        match serde_json::from_str::<ExtraDemoRecord>(&text) {
            Ok(record) if record.train_config == train_config && record.model == which => {
                return Ok(ExtraDemoModel {
                    dir,
                    pair,
                    record,
                    trained: false,
                });
            }
            _ => {
                tracing::warn!(path = %record_path.display(), "stale extra demo record; retraining")
            }
        }
    }
    let record = train_extra(&pair, which, &train_config, &dir)?;
    Ok(ExtraDemoModel {
        dir,
        pair,
        record,
        trained: true,
    })
}

fn train_extra(
    pair: &DemoModels,
    which: ExtraDemo,
    train_config: &TrainConfig,
    dir: &Path,
) -> Result<ExtraDemoRecord, DemoError> {
    let started = Instant::now();
    let tokenizer =
        tokenizers::Tokenizer::from_file(&pair.tokenizer_path).map_err(|e| DemoError::Record {
            path: pair.tokenizer_path.clone(),
            message: e.to_string(),
        })?;
    let vocab = tokenizer.get_vocab_size(true);
    let c = &pair.record.config;
    let splits = crate::corpus::CorpusSplits::generate(c.seed, c.splits)?;
    let train_stream = demo_tokenizer::encode_stream(&tokenizer, &splits.train)?;
    let val_stream = demo_tokenizer::encode_stream(&tokenizer, &splits.validation)?;
    let held_stream = demo_tokenizer::encode_stream(&tokenizer, &splits.held_out)?;
    let device = sparsity_models::util::cpu_device().autodiff();
    let seed = which.init_seed(c.seed);
    let name = which.name();
    let train_err = |source| DemoError::Train {
        model: name,
        source,
    };
    let parent = dir.parent().unwrap_or(dir);
    std::fs::create_dir_all(parent).map_err(|source| DemoError::Io {
        path: parent.to_path_buf(),
        source,
    })?;
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    tracing::info!(model = name, "training the extra demo model");
    let result = (|| -> Result<DemoModelRecord, DemoError> {
        macro_rules! run {
            ($m:expr) => {{
                let n_params = $m.num_params();
                let (model, record) =
                    train::train($m, &train_stream, &val_stream, vocab, train_config, &device)
                        .map_err(train_err)?;
                let held_out_loss = train::evaluate(
                    &model,
                    &held_stream,
                    vocab,
                    train_config.seq_len,
                    train_config.batch_size,
                    None,
                    &device,
                )
                .map_err(train_err)?;
                let model = model.valid();
                CausalLm::new(model)
                    .save_pretrained(&tmp)
                    .map_err(|source| DemoError::Model {
                        model: name,
                        source,
                    })?;
                DemoModelRecord {
                    n_params,
                    init_seed: seed,
                    val_loss: record.final_val_loss().unwrap_or(f64::NAN),
                    held_out_loss,
                    train: record,
                }
            }};
        }
        let record = match which.model(vocab, seed, &device)? {
            Model::Opt(m) => run!(m),
            Model::Llama(m) => run!(m),
        };
        demo_tokenizer::save_tokenizer(&tokenizer, &tmp.join("tokenizer.json"))?;
        Ok(record)
    })();
    let record = match result {
        Ok(r) => ExtraDemoRecord {
            model: which,
            train_config: train_config.clone(),
            record: r,
            seconds: started.elapsed().as_secs_f64(),
        },
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    crate::demo::write_record(&tmp.join(EXTRA_RECORD_FILE), &record)?;
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|source| DemoError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    std::fs::rename(&tmp, dir).map_err(|source| DemoError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    tracing::info!(model = name, dir = %dir.display(), "extra demo model trained and cached");
    Ok(record)
}
