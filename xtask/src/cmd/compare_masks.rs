//! `cargo xtask compare-masks A B --out report.json`: compare two pruning masks (or pruned
//! weights) layer by layer — Jaccard of kept positions, Hamming fraction, cosine of the
//! weight values, per row, per column and per layer with summary statistics — and draw one
//! histogram PNG per layer.
//!
//! A and B are safetensors files (every 2-D tensor is a layer; integer/bool tensors are
//! masks with 1 = pruned, float tensors are pruned weights with zeros = pruned; `x.mask` +
//! `x.weight` pairs form one layer) or directories of such files; layers are matched by name.

use std::path::PathBuf;

use sparsity_experiments::prune::run_compare_masks;

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

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    let plot_dir = args.plots.clone().unwrap_or_else(|| {
        let stem = args
            .out
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned());
        args.out
            .with_file_name(format!("{}_plots", stem.unwrap_or_default()))
    });
    let plots = (!args.no_plots).then_some(plot_dir.as_path());
    let r = run_compare_masks(&args.a, &args.b, &args.out, plots, args.per_feature)?;
    tracing::info!(
        layers = r.layers.len(),
        mean_jaccard = r.layer_jaccard.mean,
        mean_hamming = r.layer_hamming.mean,
        "wrote {}",
        args.out.display()
    );
    Ok(())
}
