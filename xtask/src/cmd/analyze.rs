//! `cargo xtask analyze`: the Mamba vs transformer neuron analysis (the main job).
//!
//! With no arguments it trains (first run) or loads the built-in demo GPT-2 and Mamba and analyses them
//! on the built-in corpus's held-out split. Writes `neuron_analysis_results.json`, `report.md` and PNG
//! plots under `--out-dir`, and appends rows to the Parquet results store.

use std::path::PathBuf;

use anyhow::{Context, bail};
use sparsity_analysis::{
    self as analysis, AnalysisConfig, AnalysisModel, AttentionMethod, CausalMode,
};
use sparsity_models::text::{TextTokenizer, read_texts};
use sparsity_models::{CausalLm, cpu_device};

use crate::util::{git_revision, write_json};

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
    causal_mode: String,
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
}

fn parse_mode(s: &str) -> anyhow::Result<CausalMode> {
    Ok(match s {
        "zero" => CausalMode::Zero,
        "mean" => CausalMode::Mean,
        "noise" => CausalMode::Noise,
        _ => match s.strip_prefix("scale:").map(str::parse::<f32>) {
            Some(Ok(f)) if f.is_finite() => CausalMode::Scale(f),
            _ => bail!("--causal-mode `{s}`: expected zero, mean, noise or scale:S"),
        },
    })
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.backend != "ndarray" {
        bail!(
            "--backend {}: this build runs on the CPU (ndarray) backend only; burn's CUDA backend cannot be built offline (see docs/design.md)",
            args.backend
        );
    }
    if let Some(t) = args.threads {
        if t == 0 {
            bail!("--threads must be at least 1");
        }
        // a second initialisation (e.g. in tests) is harmless
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global();
    }
    let device = cpu_device();
    let mut layers = args.layers.clone();
    if let Some(l) = args.layer
        && args.layers == [0, 1, 2]
    {
        layers = vec![l];
    }
    let methods = args
        .attention_methods
        .iter()
        .map(|m| {
            AttentionMethod::parse(m).with_context(|| format!("unknown attention method `{m}`"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut config = AnalysisConfig {
        layers,
        top_k: args.top_k,
        text_limit: args.text_limit,
        max_length: args.max_length,
        enable_attention: args.enable_attention,
        attention_methods: methods,
        causal_candidates: args.causal_candidates,
        causal_mode: parse_mode(&args.causal_mode)?,
        threshold: args.threshold,
        seed: args.seed,
        keep_going: args.keep_going,
        ..AnalysisConfig::default()
    };

    // models and texts
    let mut dirs: Vec<(String, PathBuf)> = Vec::new();
    let mut default_texts = None;
    if args.models.is_empty() {
        let demo = crate::util::demo_models(args.cache.as_deref())?;
        eprintln!(
            "demo models: GPT-2 validation loss {:.3}, Mamba {:.3} nats/token (corpus unigram entropy {:.3})",
            demo.record.gpt2.val_loss, demo.record.mamba.val_loss, demo.record.unigram_entropy
        );
        default_texts = Some(demo.held_out_texts());
        dirs.push(("demo-gpt2".into(), demo.gpt2_dir.clone()));
        dirs.push(("demo-mamba".into(), demo.mamba_dir.clone()));
    } else {
        for id in &args.models {
            let dir = sparsity_models::hub::resolve_model_dir(id)
                .with_context(|| format!("resolving model `{id}`"))?;
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_else(|| id.clone());
            dirs.push((name, dir));
        }
    }
    let texts = match (&args.texts, default_texts) {
        (Some(p), _) => {
            read_texts(p).with_context(|| format!("reading texts from {}", p.display()))?
        }
        (None, Some(t)) => t,
        (None, None) => bail!(
            "--texts is required with --model (the built-in corpus matches only the demo models' tokenizer)"
        ),
    };
    let mut models = Vec::new();
    for (name, dir) in &dirs {
        let model = CausalLm::load_dir(dir, &device)
            .with_context(|| format!("loading {}", dir.display()))?;
        let tokenizer = TextTokenizer::from_model_dir(dir)?;
        models.push(AnalysisModel {
            name: name.clone(),
            model,
            tokenizer,
        });
    }
    if args.all_layers {
        let max = models
            .iter()
            .map(|m| m.model.num_layers())
            .max()
            .unwrap_or(0);
        config.layers = (0..max).collect();
    }

    let run_id = sparsity_experiments::results::new_run_id();
    let out_dir = args
        .out_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("analysis_outputs").join(&run_id));
    let plots_dir = args
        .plots_dir
        .clone()
        .unwrap_or_else(|| out_dir.join("plots"));
    let result = analysis::run(&models, &texts, &config, &device)?;

    let json_name = "neuron_analysis_results.json";
    write_json(&out_dir.join(json_name), &result)?;
    if args.save_results {
        write_json(
            &PathBuf::from("analysis_outputs")
                .join(format!("neuron_analysis_results_{run_id}.json")),
            &result,
        )?;
    }
    let files = analysis::write_report(
        &out_dir,
        &plots_dir,
        &result.models,
        &result.comparison,
        json_name,
    )
    .context("writing the report")?;
    let rows = analysis_rows(&run_id, &git_revision(), &result);
    let parquet = sparsity_experiments::results::append_rows(&args.results_dir, &rows)?;

    // summary table
    println!(
        "{:<14} {:>7} {:>10} {:>12} {:>12} {:>10}",
        "model", "layer", "site", "mean var", "traditional", "gini"
    );
    for m in &result.models {
        if let Some(sp) = &m.sparsity {
            for (l, ls) in &sp.layers {
                for r in [&ls.block_out, &ls.neurons] {
                    println!(
                        "{:<14} {:>7} {:>10} {:>12.4e} {:>12.3} {:>10.3}",
                        m.model,
                        l,
                        r.site.split('.').next().unwrap_or(""),
                        r.mean_variance,
                        r.per_sequence_mean.traditional.sparsity,
                        r.per_sequence_mean.gini.sparsity_from_gini
                    );
                }
            }
        }
    }
    println!("\n{}", result.comparison.summary);
    println!("\nreport: {}", files.markdown.display());
    println!(
        "results: {} ({} plots in {})",
        out_dir.join(json_name).display(),
        files.plots.len(),
        plots_dir.display()
    );
    println!("results store rows: {}", parquet.display());
    Ok(())
}

/// Flat rows for the results store: every per-layer report scalar, the layer dynamics, causal top-k
/// KL values and efficiency numbers.
fn analysis_rows(
    run_id: &str,
    git_rev: &str,
    run: &analysis::AnalysisRun,
) -> Vec<sparsity_experiments::results::ResultRow> {
    let timestamp_us = sparsity_experiments::results::now_us();
    let params = serde_json::to_string(&run.config).unwrap_or_default();
    let mut rows = Vec::new();
    let mut push =
        |model: &str, layer: Option<i64>, site: &str, method: &str, metric: &str, value: f64| {
            rows.push(sparsity_experiments::results::ResultRow {
                run_id: run_id.to_string(),
                timestamp_us,
                git_rev: git_rev.to_string(),
                command: "analyze".to_string(),
                model: model.to_string(),
                layer,
                site: site.to_string(),
                method: method.to_string(),
                metric: metric.to_string(),
                value,
                parameters: params.clone(),
            });
        };
    for m in &run.models {
        if let Some(sp) = &m.sparsity {
            for (l, ls) in &sp.layers {
                for r in [&ls.block_out, &ls.neurons] {
                    for (agg, rep) in [
                        ("per_sequence_mean", &r.per_sequence_mean),
                        ("per_token", &r.per_token),
                    ] {
                        for (method, metric, v) in rep.flat_rows() {
                            push(
                                &m.model,
                                Some(*l as i64),
                                &r.site,
                                &format!("{agg}:{method}"),
                                &metric,
                                v,
                            );
                        }
                    }
                }
            }
            for d in &sp.layer_dynamics {
                let site = format!("block_out.{}", d.layer);
                push(
                    &m.model,
                    Some(d.layer as i64),
                    &site,
                    "layer_dynamics",
                    "mean_variance",
                    d.mean_variance,
                );
                push(
                    &m.model,
                    Some(d.layer as i64),
                    &site,
                    "layer_dynamics",
                    "sparsity",
                    d.sparsity,
                );
            }
        }
        if let Some(c) = &m.causal {
            for (l, lc) in &c.layers {
                for (rank, t) in lc.top.iter().enumerate() {
                    push(
                        &m.model,
                        Some(*l as i64),
                        &lc.site,
                        "causal",
                        &format!("kl_rank{rank}_neuron{}", t.neuron),
                        t.score,
                    );
                }
                push(
                    &m.model,
                    Some(*l as i64),
                    &lc.site,
                    "causal",
                    "perplexity_clean",
                    lc.perplexity_clean,
                );
                push(
                    &m.model,
                    Some(*l as i64),
                    &lc.site,
                    "causal",
                    "perplexity_ablated",
                    lc.perplexity_ablated,
                );
            }
        }
        if let Some(e) = &m.efficiency {
            push(
                &m.model,
                None,
                "",
                "efficiency",
                "total_parameters",
                e.total_parameters as f64,
            );
            push(
                &m.model,
                None,
                "",
                "efficiency",
                "efficiency_ratio",
                e.efficiency_ratio,
            );
            push(
                &m.model,
                None,
                "",
                "efficiency",
                "tokens_per_second",
                e.tokens_per_second,
            );
        }
    }
    rows
}
