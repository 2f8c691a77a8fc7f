//! `cargo xtask analyze`: the Mamba vs transformer neuron analysis (the main job).
//!
//! With no arguments it trains (first run) or loads the built-in demo GPT-2 and Mamba and analyses them
//! on the built-in corpus's held-out split. Writes `neuron_analysis_results.json`, `report.md` and PNG
//! plots under `--out-dir`, and appends rows to the Parquet results store.

use std::path::PathBuf;

use anyhow::{Context, bail};
use sparsity_analysis::{AnalysisConfig, AttentionMethod, CausalMode};
use sparsity_experiments::analyze::{AnalyzeRun, plan_analyze, run_analyze};
use sparsity_models::cpu_device;

/// Arguments (the original's options and defaults).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model directory or hub id (repeatable). Default: the built-in demo GPT-2 and Mamba.
    #[arg(long = "model")]
    models: Vec<String>,
    /// Single layer to analyse (kept for the original's CLI; `--layers` wins when both are given).
    #[arg(long)]
    layer: Option<usize>,
    /// Layers to analyse in detail, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0,1,2")]
    layers: Vec<usize>,
    /// Analyse every layer in detail.
    #[arg(long)]
    all_layers: bool,
    /// Neurons per ranking.
    #[arg(long, default_value_t = 10)]
    top_k: usize,
    /// Texts used at most.
    #[arg(long, default_value_t = 100)]
    text_limit: usize,
    /// Prompts (the first texts) the causal stage averages its KL over, for the rankings and
    /// for the random-neuron baseline.
    #[arg(long, default_value_t = 16)]
    prompts: usize,
    /// Random sets of k neurons per layer the causal top-k set is compared with (≥ 20).
    #[arg(long, default_value_t = 99)]
    random_draws: usize,
    /// Bootstrap resamples of the texts behind the neuron-level comparison's 95 % intervals
    /// (≥ 1000).
    #[arg(long, default_value_t = 1000)]
    bootstrap: usize,
    /// Text source (.txt: one text per non-empty line; .jsonl: a `text` field). Default: the built-in
    /// corpus's held-out split.
    #[arg(long)]
    texts: Option<PathBuf>,
    /// Truncation length in tokens.
    #[arg(long, default_value_t = 64)]
    max_length: usize,
    /// Run the attention-neuron stage.
    #[arg(long)]
    enable_attention: bool,
    /// Attention methods, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "attention_weighted,gradient_guided,rollout"
    )]
    attention_methods: Vec<String>,
    /// Causal intervention: zero, mean, noise, or scale:S (the original's default: scale:0.1).
    #[arg(long, default_value = "scale:0.1")]
    causal_mode: CausalMode,
    /// Causal candidates per layer by |activation × gradient| (0 = every neuron).
    #[arg(long, default_value_t = 64)]
    causal_candidates: usize,
    /// Traditional threshold override.
    #[arg(long)]
    threshold: Option<f64>,
    /// Also write a timestamped copy of the JSON under `analysis_outputs/` (the original's flag).
    #[arg(long)]
    save_results: bool,
    /// Output directory of the JSON and report.md.
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Plot directory (default: `<out-dir>/plots`).
    #[arg(long)]
    plots_dir: Option<PathBuf>,
    /// Results store directory.
    #[arg(long, default_value = "results")]
    results_dir: PathBuf,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Worker threads (rayon); default: all cores.
    #[arg(long)]
    threads: Option<usize>,
    /// Backend: ndarray (CPU). `cuda` needs a build with the `cuda` feature.
    #[arg(long, default_value = "ndarray")]
    backend: String,
    /// Record a failed stage in the report and continue.
    #[arg(long)]
    keep_going: bool,
    /// Demo model cache directory (default: target/sparsity-lab-cache/demo).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// `--max-memory` (one forward pass's activations, checked per model after tokenising) and
    /// `--dry-run` (load the models, tokenise, print the plan and estimate, write nothing).
    #[command(flatten)]
    budget: crate::util::BudgetArgs,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.backend != "ndarray" {
        bail!(
            "--backend {}: this build runs on the CPU (ndarray) backend only; burn's CUDA backend cannot be built offline (see docs/design.md)",
            args.backend
        );
    }
    crate::util::set_threads(args.threads)?;
    let mut layers = args.layers.clone();
    if let Some(l) = args.layer
        && args.layers == [0, 1, 2]
    {
        layers = vec![l];
    }
    let attention_methods = args
        .attention_methods
        .iter()
        .map(|m| {
            AttentionMethod::parse(m).with_context(|| format!("unknown attention method `{m}`"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let config = AnalysisConfig {
        layers,
        top_k: args.top_k,
        text_limit: args.text_limit,
        max_length: args.max_length,
        enable_attention: args.enable_attention,
        attention_methods,
        causal_candidates: args.causal_candidates,
        causal_prompts: args.prompts,
        random_draws: args.random_draws,
        bootstrap_resamples: args.bootstrap,
        causal_mode: args.causal_mode,
        threshold: args.threshold,
        seed: args.seed,
        keep_going: args.keep_going,
        max_memory: args.budget.max_memory,
        ..AnalysisConfig::default()
    };
    let run = AnalyzeRun {
        models: args.models,
        demo_cache: args.cache.unwrap_or_else(crate::util::workspace_demo_cache),
        texts: args.texts,
        config,
        all_layers: args.all_layers,
        out_dir: args.out_dir,
        plots_dir: args.plots_dir,
        save_copy: args.save_results,
        results_dir: args.results_dir,
    };
    if args.budget.dry_run {
        print!("{}", plan_analyze(&run, &cpu_device())?);
        return Ok(());
    }
    let out = run_analyze(&run, &cpu_device())?;
    println!("{}", out.summary);
    println!("report: {}", out.report.display());
    println!(
        "results: {} ({} plots)",
        out.json.display(),
        out.plots.len()
    );
    println!("results store rows: {}", out.results.display());
    Ok(())
}
