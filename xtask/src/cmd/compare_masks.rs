//! `cargo xtask compare-masks A B --out report.json`: compare two pruning masks (or pruned
//! weights) layer by layer — Jaccard of kept positions, Hamming fraction, cosine of the
//! weight values, per row, per column and per layer with summary statistics — and draw one
//! histogram PNG per layer.
//!
//! A and B are safetensors files (every 2-D tensor is a layer; integer/bool tensors are
//! masks with 1 = pruned, float tensors are pruned weights with zeros = pruned; `x.mask` +
//! `x.weight` pairs form one layer) or directories of such files; layers are matched by name.

use std::path::PathBuf;

use anyhow::Context;
use sparsity_pruning::compare::{FeatureSummary, compare_all};
use sparsity_pruning::io::load_masked_input;
use sparsity_pruning::plot::plot_layer_histogram;

/// Arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// First mask / pruned-weight file or directory.
    pub a: PathBuf,
    /// Second mask / pruned-weight file or directory.
    pub b: PathBuf,
    /// JSON report path.
    #[arg(long)]
    pub out: PathBuf,
    /// Directory for the per-layer histograms (default: `<out stem>_plots` beside the report).
    #[arg(long)]
    pub plots: Option<PathBuf>,
    /// Skip the histograms.
    #[arg(long)]
    pub no_plots: bool,
    /// Also write every per-feature value (not just summaries) into the report.
    #[arg(long)]
    pub per_feature: bool,
}

fn safe_file_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    let a = load_masked_input(&args.a).with_context(|| format!("reading {}", args.a.display()))?;
    let b = load_masked_input(&args.b).with_context(|| format!("reading {}", args.b.display()))?;
    let report = compare_all(&a, &b)?;
    if report.layers.is_empty() {
        anyhow::bail!(
            "no layer names in common between {} ({:?}) and {} ({:?})",
            args.a.display(),
            report.only_in_a,
            args.b.display(),
            report.only_in_b
        );
    }
    let plot_dir = args.plots.clone().unwrap_or_else(|| {
        let stem = args
            .out
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        args.out.with_file_name(format!("{stem}_plots"))
    });
    let (label_a, label_b) = (args.a.display().to_string(), args.b.display().to_string());
    let pb = indicatif::ProgressBar::new(report.layers.len() as u64);
    let mut layers = Vec::with_capacity(report.layers.len());
    for l in &report.layers {
        let plot = if args.no_plots {
            None
        } else {
            let p = plot_dir.join(format!("{}.png", safe_file_name(&l.name)));
            plot_layer_histogram(&p, l, &label_a, &label_b)?;
            Some(p.display().to_string())
        };
        let rows: FeatureSummary = l.rows.summary();
        let cols: FeatureSummary = l.columns.summary();
        let mut entry = serde_json::json!({
            "name": l.name,
            "shape": l.shape,
            "layer": l.layer,
            "rows": rows,
            "columns": cols,
            "histogram": plot,
        });
        if args.per_feature {
            entry["rows_per_feature"] = serde_json::to_value(&l.rows)?;
            entry["columns_per_feature"] = serde_json::to_value(&l.columns)?;
        }
        layers.push(entry);
        pb.inc(1);
    }
    pb.finish_and_clear();
    let out = serde_json::json!({
        "a": label_a,
        "b": label_b,
        "mask_convention": "1 = pruned; Jaccard over kept positions; Hamming = fraction of differing bits",
        "git_revision": crate::util::git_revision(),
        "layers": layers,
        "only_in_a": report.only_in_a,
        "only_in_b": report.only_in_b,
        "layer_jaccard": report.layer_jaccard,
        "layer_hamming": report.layer_hamming,
    });
    crate::util::write_json(&args.out, &out)?;
    tracing::info!(
        layers = report.layers.len(),
        mean_jaccard = report.layer_jaccard.mean,
        mean_hamming = report.layer_hamming.mean,
        "wrote {}",
        args.out.display()
    );
    Ok(())
}
