//! `cargo xtask prune-layer`: prune one linear layer stored in a safetensors file.
//!
//! The input holds `weight` [out, in] f32 and `calib` [tokens, in] f32; rows
//! [j·L, (j+1)·L) form calibration sequence j, with L from `--seq-len`, else the file's
//! metadata `seqlen`, else all rows are one sequence. Writes `weight` (pruned, f32) and `mask`
//! (u8, 1 = pruned) atomically, and a JSON report (sparsity, reconstruction error, SparseGPT
//! damping retries) next to it.

use std::path::PathBuf;

use anyhow::{Context, bail};
use sparsity_pruning::layer_file::{prune_layer_file, write_pruned_layer};
use sparsity_pruning::{Method, Pattern};

/// Pruning method.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum MethodArg {
    /// |W|, one threshold per layer.
    Magnitude,
    /// Wanda: |W|·sqrt(scaler_row) per row.
    Wanda,
    /// Wanda's cumulative-score variant (α bisection).
    WandaVariant,
    /// SparseGPT (OBS sweep with the inverse Hessian).
    Sparsegpt,
}

/// Arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Pruning method.
    #[arg(long, value_enum)]
    pub method: MethodArg,
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

fn parse_nm(s: &str) -> anyhow::Result<(usize, usize)> {
    let Some((n, m)) = s.split_once(':') else {
        bail!("--nm {s:?}: expected N:M, e.g. 2:4");
    };
    let n = n
        .trim()
        .parse()
        .with_context(|| format!("--nm {s:?}: N is not an integer"))?;
    let m = m
        .trim()
        .parse()
        .with_context(|| format!("--nm {s:?}: M is not an integer"))?;
    Ok((n, m))
}

/// The method and pattern from the shared `--method`, `--nm` / `--sparsity`, `--blocksize` and
/// `--percdamp` options (`--nm` wins when both are given).
pub(crate) fn method_and_pattern(
    method: MethodArg,
    nm: Option<&str>,
    sparsity: Option<f64>,
    blocksize: usize,
    percdamp: f64,
) -> anyhow::Result<(Method, Pattern)> {
    let pattern = match (nm, sparsity) {
        (Some(nm), _) => {
            let (n, m) = parse_nm(nm)?;
            Pattern::NM { n, m }
        }
        (None, Some(r)) => Pattern::Unstructured(r),
        (None, None) => bail!("give --sparsity R or --nm N:M"),
    };
    let method = match method {
        MethodArg::Magnitude => Method::Magnitude,
        MethodArg::Wanda => Method::Wanda,
        MethodArg::WandaVariant => Method::WandaVariant,
        MethodArg::Sparsegpt => Method::SparseGpt {
            blocksize,
            percdamp,
        },
    };
    Ok((method, pattern))
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    let (method, pattern) = method_and_pattern(
        args.method,
        args.nm.as_deref(),
        args.sparsity,
        args.blocksize,
        args.percdamp,
    )?;
    tracing::info!(input = %args.input.display(), method = method.name(), %pattern, "pruning layer");
    let outcome = prune_layer_file(
        &args.input,
        method,
        pattern,
        args.seq_len,
        Some(args.max_damp_retries),
    )
    .with_context(|| format!("pruning {}", args.input.display()))?;
    write_pruned_layer(&args.out, &outcome.pruned)
        .with_context(|| format!("writing {}", args.out.display()))?;
    let report_path = args
        .report
        .clone()
        .unwrap_or_else(|| args.out.with_extension("json"));
    let report = serde_json::json!({
        "input": args.input.display().to_string(),
        "output": args.out.display().to_string(),
        "git_revision": crate::util::git_revision(),
        "result": outcome.summary(),
    });
    crate::util::write_json(&report_path, &report)?;
    let r = &outcome.pruned.report;
    tracing::info!(
        pruned = r.pruned,
        sparsity = r.sparsity,
        rel_recon_error = outcome.rel_recon_error,
        damp_retries = ?r.damp_retries,
        "wrote {} and {}",
        args.out.display(),
        report_path.display()
    );
    Ok(())
}
