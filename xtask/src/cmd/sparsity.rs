//! `cargo xtask sparsity`: the comprehensive sparsity report of one activation tensor.
//!
//! Loads `--tensor` from `--activations` (`[samples, neurons]` used as is, or
//! `[samples, seq, neurons]` aggregated by `--aggregate`), writes the report JSON to `--out`,
//! the plots `<out stem>_methods.png` and `<out stem>_percentiles.png` beside it, and appends
//! one row per report scalar to the Parquet results store.

use std::path::PathBuf;

use anyhow::Context;
use clap::ValueEnum;
use sparsity_metrics::{Aggregation, EntropyMode, ModelFamily, ReportParams};

use sparsity_experiments::results::{ResultRow, append_rows, new_run_id, now_us};

/// Aggregation choice on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AggregateArg {
    /// Mean over each sequence, variance across sequences (the original's).
    PerSequenceMean,
    /// Variance over all tokens.
    PerToken,
}

/// Model family on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FamilyArg {
    /// Mamba (threshold 0.01).
    Mamba,
    /// Transformer (threshold 1e-5).
    Transformer,
    /// Unknown (threshold 0.01).
    Unknown,
}

/// Entropy formula on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum EntropyArg {
    /// Shannon entropy of bin probabilities (default).
    Shannon,
    /// The original's density sum (reproduces old numbers).
    Legacy,
}

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
    #[arg(long, value_enum, default_value = "per-sequence-mean")]
    pub aggregate: AggregateArg,
    /// Model family (default traditional threshold).
    #[arg(long, value_enum, default_value = "unknown")]
    pub family: FamilyArg,
    /// Traditional threshold (overrides the family default).
    #[arg(long)]
    pub threshold: Option<f64>,
    /// Target of the optimal threshold.
    #[arg(long, default_value_t = 0.3)]
    pub target: f64,
    /// Entropy formula.
    #[arg(long, value_enum, default_value = "shannon")]
    pub entropy: EntropyArg,
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
    let aggregation = match args.aggregate {
        AggregateArg::PerSequenceMean => Aggregation::PerSequenceMean,
        AggregateArg::PerToken => Aggregation::PerToken,
    };
    let params = ReportParams {
        family: match args.family {
            FamilyArg::Mamba => ModelFamily::Mamba,
            FamilyArg::Transformer => ModelFamily::Transformer,
            FamilyArg::Unknown => ModelFamily::Unknown,
        },
        threshold: args.threshold,
        target: args.target,
        entropy_mode: match args.entropy {
            EntropyArg::Shannon => EntropyMode::Shannon,
            EntropyArg::Legacy => EntropyMode::Legacy,
        },
        ..ReportParams::default()
    };
    let tensor = sparsity_metrics::load_safetensors(&args.activations, &args.tensor)?;
    tracing::info!(shape = ?tensor.shape(), tensor = %args.tensor, "loaded activations");
    let analysis = sparsity_metrics::analyze_tensor(&tensor, aggregation, &params)?;
    let report = &analysis.report;
    crate::util::write_json(&args.out, report)?;
    let model = args.model.clone().unwrap_or_else(|| {
        args.activations
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "unknown".into())
    });
    let stem = args.out.with_extension("");
    let stem = stem.to_string_lossy();
    let methods_png = PathBuf::from(format!("{stem}_methods.png"));
    let percentiles_png = PathBuf::from(format!("{stem}_percentiles.png"));
    sparsity_metrics::plot_methods(&methods_png, &[(model.as_str(), report)])?;
    sparsity_metrics::plot_percentiles(&percentiles_png, &[(model.as_str(), report)])?;
    let run_id = new_run_id();
    let timestamp_us = now_us();
    let git_rev = crate::util::git_revision();
    let parameters = serde_json::json!({
        "activations": args.activations.display().to_string(),
        "tensor": args.tensor,
        "aggregate": aggregation.to_string(),
        "family": params.family.to_string(),
        "threshold": params.traditional_threshold(),
        "target": params.target,
        "entropy": params.entropy_mode.to_string(),
    })
    .to_string();
    let rows: Vec<ResultRow> = report
        .flat_rows()
        .into_iter()
        .map(|(method, metric, value)| ResultRow {
            run_id: run_id.clone(),
            timestamp_us,
            git_rev: git_rev.clone(),
            command: "sparsity".into(),
            model: model.clone(),
            layer: None,
            site: args.tensor.clone(),
            method,
            metric,
            value,
            parameters: parameters.clone(),
        })
        .collect();
    let path = append_rows(&args.results_dir, &rows).context("appending to the results store")?;
    tracing::info!(report = %args.out.display(), results = %path.display(), rows = rows.len(), "sparsity report written");
    Ok(())
}
