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
    print!("{}", demo::summary(&models));
    Ok(())
}
