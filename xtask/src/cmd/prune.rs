//! `cargo xtask prune`: sequential whole-model pruning of a GPT-2 or Mamba directory (or the
//! built-in demo models `demo-gpt2` / `demo-mamba`) with magnitude, Wanda, the Wanda variant or
//! SparseGPT.
//!
//! Calibration: the texts of `--calib-texts` are tokenised, joined with a blank line and cut into
//! `--nsamples` windows of `--seq-len` tokens at seeded random starts (the reference's C4
//! sampler). Perplexity before and after is measured on `--eval-texts`, or, without it, on the
//! last 10 % of the calibration texts, which are then left out of calibration. Writes the pruned
//! model as a Hugging Face directory (`config.json`, `model.safetensors`, `tokenizer.json`), its
//! masks (`masks.safetensors`, 1 = pruned, in the layout of each tensor in `model.safetensors`),
//! `pruning.json` and `recon_error.png`, all into a temporary directory renamed to `--out`.

use std::path::PathBuf;

use sparsity_experiments::prune::{PruneRun, run_prune};
use sparsity_models::cpu_device;
use sparsity_pruning::Precision;
use sparsity_pruning::model::ModelPruneOptions;

/// Arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model directory, hub id, or `demo-gpt2` / `demo-mamba` / `demo-opt` / `demo-llama` (the built-in demo models; the last two are trained on first use).
    #[arg(long)]
    pub model: String,
    /// Pruning method: magnitude, wanda, wanda-variant or sparsegpt.
    #[arg(long)]
    pub method: String,
    /// Unstructured sparsity ratio in [0, 1).
    #[arg(long, required_unless_present = "nm")]
    pub sparsity: Option<f64>,
    /// N:M pattern, e.g. 2:4.
    #[arg(long)]
    pub nm: Option<String>,
    /// Layer groups, comma separated: attention, mlp (GPT-2, OPT, Llama); in_proj, x_proj, dt_proj, out_proj
    /// (Mamba); a group the model lacks is an error listing its groups. Default: all of them.
    #[arg(long, value_delimiter = ',')]
    pub layers: Vec<String>,
    /// Calibration texts (.txt: one text per non-empty line; .jsonl: a `text` field per line).
    /// Default for the demo models: the demo corpus' training texts.
    #[arg(long)]
    pub calib_texts: Option<PathBuf>,
    /// Held-out texts for perplexity before/after (default: the last 10 % of the calibration
    /// texts; for the demo models, the corpus' held-out split).
    #[arg(long)]
    pub eval_texts: Option<PathBuf>,
    /// Number of calibration windows (default 128; 64 for the demo models).
    #[arg(long)]
    pub nsamples: Option<usize>,
    /// Calibration window length in tokens (default 2048, capped by the model's positions; 64
    /// for the demo models).
    #[arg(long)]
    pub seq_len: Option<usize>,
    /// Seed of the window starts.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Calibration sequences per forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// SparseGPT column block size.
    #[arg(long, default_value_t = 128)]
    pub blocksize: usize,
    /// SparseGPT damping as a fraction of mean(diag H).
    #[arg(long, default_value_t = 0.01)]
    pub percdamp: f64,
    /// Retries with 10x damping when a Hessian is not positive definite.
    #[arg(long, default_value_t = 4)]
    pub max_damp_retries: usize,
    /// Accumulate SparseGPT's Hessian in f64 (the reference: f32).
    #[arg(long)]
    pub hessian_f64: bool,
    /// Skip the per-layer reconstruction errors (saves one f64 Gram matrix per layer).
    #[arg(long)]
    pub no_recon_error: bool,
    /// Output directory (replaced if it exists; must differ from the model directory).
    #[arg(long)]
    pub out: PathBuf,
    /// Demo model cache directory (default: target/sparsity-lab-cache/demo).
    #[arg(long)]
    pub cache: Option<PathBuf>,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    let (method, pattern) = super::prune_layer::method_and_pattern(
        &args.method,
        args.nm.as_deref(),
        args.sparsity,
        args.blocksize,
        args.percdamp,
    )?;
    let options = ModelPruneOptions {
        groups: args.layers.iter().map(|s| s.trim().to_string()).collect(),
        batch_size: args.batch_size,
        hessian_precision: if args.hessian_f64 {
            Precision::F64
        } else {
            Precision::F32
        },
        max_damp_retries: Some(args.max_damp_retries),
        recon_error: !args.no_recon_error,
        ..ModelPruneOptions::new(method, pattern)
    };
    let run = PruneRun {
        model: args.model,
        demo_cache: args.cache.unwrap_or_else(crate::util::workspace_demo_cache),
        options,
        calib_texts: args.calib_texts,
        eval_texts: args.eval_texts,
        nsamples: args.nsamples,
        seq_len: args.seq_len,
        seed: args.seed,
        out: args.out,
    };
    let out = run_prune(&run, &cpu_device())?;
    eprint!("{}", out.summary);
    eprintln!(
        "pruned model, masks and pruning.json in {}",
        run.out.display()
    );
    Ok(())
}
