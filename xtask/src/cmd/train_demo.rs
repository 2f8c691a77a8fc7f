//! `cargo xtask train-demo`: trains (or loads from the cache) the built-in demo GPT-2 and Mamba on
//! the synthetic corpus and prints their validation loss against the corpus's unigram entropy.

use std::path::PathBuf;

use anyhow::Context;
use sparsity_demo::demo::{self, DemoConfig};

/// Arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Cache directory of the demo models (default: `$SPARSITY_LAB_CACHE/demo`, else
    /// `target/sparsity-lab-cache/demo` in the workspace).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Retrain even when the cache holds the models.
    #[arg(long)]
    pub force: bool,
    /// Master seed (corpus, initialisation, data order).
    #[arg(long, default_value_t = demo::DEFAULT_SEED)]
    pub seed: u64,
    /// Optimiser steps per model (default: the demo's own schedule).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Optimiser steps of the GPT-2 only (after `--steps`).
    #[arg(long)]
    pub gpt2_steps: Option<usize>,
    /// Optimiser steps of the Mamba only (after `--steps`).
    #[arg(long)]
    pub mamba_steps: Option<usize>,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    let cache = args.cache.unwrap_or_else(crate::util::workspace_demo_cache);
    let mut config = DemoConfig::new(args.seed);
    if let Some(steps) = args.steps {
        anyhow::ensure!(steps > 0, "--steps must be at least 1");
        config = config.with_steps(steps);
    }
    for (flag, steps, train) in [
        ("--gpt2-steps", args.gpt2_steps, &mut config.gpt2_train),
        ("--mamba-steps", args.mamba_steps, &mut config.mamba_train),
    ] {
        if let Some(steps) = steps {
            anyhow::ensure!(steps > 0, "{flag} must be at least 1");
            train.set_steps(steps);
        }
    }
    let models = demo::ensure_demo_models_with(&cache, &config, args.force)
        .with_context(|| format!("demo models under {}", cache.display()))?;
    let r = &models.record;
    let source = if models.trained {
        "trained now"
    } else {
        "loaded from cache"
    };
    println!("demo models ({source}): {}", models.dir.display());
    println!(
        "corpus: {} train / {} validation / {} held-out texts, {} train tokens, BPE vocab {}",
        r.corpus.texts.train,
        r.corpus.texts.validation,
        r.corpus.texts.held_out,
        r.corpus.train_tokens,
        r.tokenizer_vocab_size
    );
    println!(
        "unigram entropy (train tokens): {:.4} nats/token (validation stream: {:.4})",
        r.unigram_entropy, r.unigram_entropy_validation
    );
    println!(
        "{:<6} {:>9} {:>7} {:>10} {:>10} {:>14} {:>9}",
        "model", "params", "steps", "val loss", "held-out", "val − entropy", "train s"
    );
    for (name, m) in [("gpt2", &r.gpt2), ("mamba", &r.mamba)] {
        println!(
            "{:<6} {:>9} {:>7} {:>10.4} {:>10.4} {:>14.4} {:>9.1}",
            name,
            m.n_params,
            m.train.config.steps,
            m.val_loss,
            m.held_out_loss,
            m.val_loss - r.unigram_entropy,
            m.train.seconds
        );
    }
    println!("gpt2:  {}", models.gpt2_dir.display());
    println!("mamba: {}", models.mamba_dir.display());
    for (name, m) in [("gpt2", &r.gpt2), ("mamba", &r.mamba)] {
        if m.val_loss >= r.unigram_entropy {
            tracing::warn!(
                model = name,
                val_loss = m.val_loss,
                unigram_entropy = r.unigram_entropy,
                "validation loss is not below the unigram entropy: the model learned no context"
            );
        }
    }
    Ok(())
}
