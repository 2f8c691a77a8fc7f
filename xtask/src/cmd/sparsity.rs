//! `cargo xtask sparsity`: the comprehensive sparsity report of one activation tensor.
//!
//! Loads `--tensor` from `--activations` (`[samples, neurons]` used as is, or
//! `[samples, seq, neurons]` aggregated by `--aggregate`), writes the report JSON to `--out`,
//! the plots `<out stem>_methods.png` and `<out stem>_percentiles.png` beside it, and appends
//! one row per report scalar to the Parquet results store.

use std::path::PathBuf;

use sparsity_experiments::sparsity::{SparsityRun, run_sparsity};
use sparsity_metrics::{Aggregation, EntropyMode, ModelFamily, ReportParams};

/// Arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Safetensors file with the activations.
    #[arg(long)]
    pub activations: PathBuf,
    /// Tensor name in the file.
    #[arg(long)]
    pub tensor: String,
    /// Aggregation of a 3-D tensor.
    /// (`per-sequence-mean`: mean over each sequence, variance across sequences, the
    /// original's; `per-token`: variance over all tokens).
    #[arg(long, default_value = "per-sequence-mean")]
    pub aggregate: Aggregation,
    /// Model family (default traditional threshold).
    /// (`mamba`: 0.01, `transformer`: 1e-5, `unknown`: 0.01).
    #[arg(long, default_value = "unknown")]
    pub family: ModelFamily,
    /// Traditional threshold (overrides the family default).
    #[arg(long)]
    pub threshold: Option<f64>,
    /// Target of the optimal threshold.
    #[arg(long, default_value_t = 0.3)]
    pub target: f64,
    /// Entropy formula.
    /// (`shannon`: entropy of bin probabilities; `legacy`: the original's density sum).
    #[arg(long, default_value = "shannon")]
    pub entropy: EntropyMode,
    /// Output report JSON.
    #[arg(long)]
    pub out: PathBuf,
    /// Results store directory.
    #[arg(long, default_value = "results")]
    pub results_dir: PathBuf,
    /// Model label for the results store and plots (default: the file stem).
    #[arg(long)]
    pub model: Option<String>,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    let params = ReportParams {
        family: args.family,
        threshold: args.threshold,
        target: args.target,
        entropy_mode: args.entropy,
        ..ReportParams::default()
    };
    run_sparsity(&SparsityRun {
        activations: args.activations,
        tensor: args.tensor,
        aggregation: args.aggregate,
        params,
        out: args.out,
        results_dir: args.results_dir,
        model: args.model,
    })?;
    Ok(())
}
