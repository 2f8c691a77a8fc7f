//! `cargo xtask prune-layer`: prune one linear layer stored in a safetensors file.
//!
//! The input holds `weight` [out, in] f32 and `calib` [tokens, in] f32; rows
//! [j·L, (j+1)·L) form calibration sequence j, with L from `--seq-len`, else the file's
//! metadata `seqlen`, else all rows are one sequence. Writes `weight` (pruned, f32) and `mask`
//! (u8, 1 = pruned) atomically, and a JSON report (sparsity, reconstruction error, SparseGPT
//! damping retries) next to it.

use std::path::PathBuf;

use sparsity_experiments::prune::run_prune_layer;
use sparsity_pruning::{Method, Pattern};

/// Arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Pruning method: magnitude, wanda, wanda-variant (cumulative-score α bisection) or
    /// sparsegpt.
    #[arg(long)]
    pub method: String,
    /// Input safetensors with `weight` [out, in] and `calib` [tokens, in].
    #[arg(long)]
    pub input: PathBuf,
    /// Unstructured sparsity ratio in [0, 1) (with --nm: ignored except for the report).
    #[arg(long, required_unless_present = "nm")]
    pub sparsity: Option<f64>,
    /// N:M pattern, e.g. 2:4 (prune N of every M consecutive input weights).
    #[arg(long)]
    pub nm: Option<String>,
    /// SparseGPT column block size.
    #[arg(long, default_value_t = 128)]
    pub blocksize: usize,
    /// SparseGPT damping as a fraction of mean(diag H).
    #[arg(long, default_value_t = 0.01)]
    pub percdamp: f64,
    /// Retries with 10x damping when the Hessian is not positive definite.
    #[arg(long, default_value_t = 4)]
    pub max_damp_retries: usize,
    /// Calibration sequence length L (default: metadata `seqlen`, else all rows).
    #[arg(long)]
    pub seq_len: Option<usize>,
    /// Output safetensors (`weight`, `mask`).
    #[arg(long)]
    pub out: PathBuf,
    /// JSON report path (default: the output path with extension `.json`).
    #[arg(long)]
    pub report: Option<PathBuf>,
}

/// The method and pattern from the shared `--method`, `--nm` / `--sparsity`, `--blocksize` and
/// `--percdamp` options (`--nm` wins when both are given).
pub(crate) fn method_and_pattern(
    method: &str,
    nm: Option<&str>,
    sparsity: Option<f64>,
    blocksize: usize,
    percdamp: f64,
) -> anyhow::Result<(Method, Pattern)> {
    Ok((
        Method::from_name(method, blocksize, percdamp)?,
        Pattern::from_options(nm, sparsity)?,
    ))
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    let (method, pattern) = method_and_pattern(
        &args.method,
        args.nm.as_deref(),
        args.sparsity,
        args.blocksize,
        args.percdamp,
    )?;
    let r = run_prune_layer(
        &args.input,
        method,
        pattern,
        args.seq_len,
        args.max_damp_retries,
        &args.out,
        args.report.as_deref(),
    )?;
    tracing::info!(
        sparsity = r.result.report.sparsity,
        rel_recon_error = r.result.rel_recon_error,
        "wrote {}",
        r.output
    );
    Ok(())
}
