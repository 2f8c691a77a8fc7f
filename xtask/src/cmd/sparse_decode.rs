//! `cargo xtask sparse-decode`: TEAL-style activation sparsity at the MLP inputs — per-site
//! thresholds calibrated for each target sparsity, held-out perplexity and achieved sparsity.
//!
//! Default: both demo models, calibrated on windows of the demo corpus' training texts and
//! evaluated on windows of its held-out split. With `--model`, `--calib-texts` and
//! `--eval-texts` are required. Writes `sparse_decode.json`, `sparse_decode.png` and
//! `sparse_decode.md` into `--out-dir`: per allocation (uniform, TEAL's greedy), perplexity,
//! achieved sparsity and, with `--decode-windows`, token-by-token decode speed on this crate's
//! masked GEMV (see docs/kernels.md).

use std::path::PathBuf;

use sparsity_decoding::sparse_decode::Allocation;
use sparsity_experiments::sparse_decode::{SparseDecodeRun, plan_sparse_decode, run_sparse_decode};
use sparsity_models::cpu_device;

/// Arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model directory or hub id (repeatable). Default: the demo GPT-2 and Mamba.
    #[arg(long = "model")]
    pub models: Vec<String>,
    /// Target sparsities.
    #[arg(long, value_delimiter = ',', default_value = "0,0.25,0.4,0.5,0.65")]
    pub sparsities: Vec<f64>,
    /// Calibration texts (one per line, or .jsonl with `text`).
    #[arg(long)]
    pub calib_texts: Option<PathBuf>,
    /// Held-out texts.
    #[arg(long)]
    pub eval_texts: Option<PathBuf>,
    /// Calibration windows.
    #[arg(long, default_value_t = 16)]
    pub nsamples: usize,
    /// Held-out windows.
    #[arg(long, default_value_t = 32)]
    pub eval_windows: usize,
    /// Window length in tokens.
    #[arg(long, default_value_t = 64)]
    pub seq_len: usize,
    /// Seed of the window starts.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Held-out windows decoded token by token with the CPU kernels for the speed columns
    /// (0: skip).
    #[arg(long, default_value_t = 4)]
    pub decode_windows: usize,
    /// Sequences per forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Output directory.
    #[arg(long, default_value = "results/sparse-decode")]
    pub out_dir: PathBuf,
    /// How each target is spread over a layer's sites: `uniform` (every site at the target),
    /// `greedy` (TEAL's block-wise greedy allocation by weight size); comma separated.
    #[arg(long, value_delimiter = ',', default_value = "uniform,greedy")]
    pub allocation: Vec<AllocationArg>,
    /// Level step of the greedy allocation.
    #[arg(long, default_value_t = 0.05)]
    pub greedy_step: f64,
    /// Demo model cache directory (default: target/sparsity-lab-cache/demo).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// `--max-memory` (one forward pass's activations, checked after each model is loaded and
    /// before any text runs) and `--dry-run` (load the models, print the plan and estimate).
    #[command(flatten)]
    pub budget: crate::util::BudgetArgs,
}

/// `--allocation` values.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocationArg {
    /// Every site at the target.
    Uniform,
    /// TEAL's block-wise greedy allocation.
    Greedy,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    let allocations = args
        .allocation
        .iter()
        .map(|a| match a {
            AllocationArg::Uniform => Allocation::Uniform,
            AllocationArg::Greedy => Allocation::Greedy {
                step: args.greedy_step,
            },
        })
        .collect();
    let run = SparseDecodeRun {
        models: args.models,
        demo_cache: args.cache.unwrap_or_else(crate::util::workspace_demo_cache),
        sparsities: args.sparsities,
        calib_texts: args.calib_texts,
        eval_texts: args.eval_texts,
        nsamples: args.nsamples,
        eval_windows: args.eval_windows,
        seq_len: args.seq_len,
        seed: args.seed,
        decode_windows: args.decode_windows,
        batch_size: args.batch_size,
        allocations,
        out_dir: args.out_dir,
        max_memory: args.budget.max_memory,
    };
    if args.budget.dry_run {
        print!("{}", plan_sparse_decode(&run, &cpu_device())?);
        return Ok(());
    }
    let md = run_sparse_decode(&run, &cpu_device())?;
    eprint!("{md}");
    eprintln!("report in {}", run.out_dir.display());
    Ok(())
}
