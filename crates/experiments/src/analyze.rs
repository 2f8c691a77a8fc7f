//! `cargo xtask analyze`: the neuron analysis of the demo pair (default) or of model
//! directories, with its JSON, Markdown report, figures and results-store rows.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use sparsity_analysis::{self as analysis, AnalysisConfig, AnalysisModel, AnalysisRun};
use sparsity_models::CausalLm;
use sparsity_models::text::TextTokenizer;

use crate::error::{Result, StepContext};
use crate::results::{ResultRow, RunMeta, ToRows, append_rows};
use crate::source::{resolve_models, texts_or};

/// The JSON file of an analysis (the original's name).
pub const JSON_NAME: &str = "neuron_analysis_results.json";

/// One analysis run.
#[derive(Debug, Clone)]
pub struct AnalyzeRun {
    /// Model directories / hub ids; empty: the demo pair.
    pub models: Vec<String>,
    /// Demo model cache.
    pub demo_cache: PathBuf,
    /// Text source; default: the demo corpus' held-out split (demo models only).
    pub texts: Option<PathBuf>,
    /// The analysis options (`layers` empty with `all_layers`: every layer).
    pub config: AnalysisConfig,
    /// Analyse every layer in detail.
    pub all_layers: bool,
    /// Output directory; default `analysis_outputs/<run id>`.
    pub out_dir: Option<PathBuf>,
    /// Plot directory; default `<out_dir>/plots`.
    pub plots_dir: Option<PathBuf>,
    /// Also write a timestamped copy of the JSON under `analysis_outputs/` (the original's flag).
    pub save_copy: bool,
    /// Results store directory.
    pub results_dir: PathBuf,
}

/// What a run wrote.
#[derive(Debug, Clone)]
pub struct AnalyzeOutcome {
    /// The analysis.
    pub run: AnalysisRun,
    /// The JSON file.
    pub json: PathBuf,
    /// The Markdown report.
    pub report: PathBuf,
    /// The figures.
    pub plots: Vec<PathBuf>,
    /// The results-store file.
    pub results: PathBuf,
    /// A plain-text summary (per-layer table and the comparison).
    pub summary: String,
}

/// The plan of an analysis without running it (`--dry-run`): per model, the texts kept after
/// tokenising (at most `text_limit`, truncated to `max_length`), the longest, the layers, and the
/// memory estimate of one forward pass at the batch size and that length, checked against the
/// budget. Models are loaded (their shapes decide the estimate; the demo pair is trained on
/// first use as for a run); nothing is written.
pub fn plan_analyze(run: &AnalyzeRun, device: &Device) -> Result<String> {
    use std::fmt::Write as _;
    let set = resolve_models(&run.models, &run.demo_cache)?;
    let texts = texts_or(run.texts.as_deref(), set.demo_held_out_texts(), "--texts")?;
    let config = &run.config;
    let mut out = String::new();
    for (name, dir) in &set.models {
        let model =
            CausalLm::load_dir(dir, device).with_step(|| format!("loading {}", dir.display()))?;
        let tokenizer = TextTokenizer::from_model_dir(dir)
            .with_step(|| format!("loading the tokenizer of {}", dir.display()))?;
        let tok =
            analysis::TokenizedTexts::new(&tokenizer, &texts, config.text_limit, config.max_length)
                .with_step(|| format!("tokenising the texts for `{name}`"))?;
        let longest = tok.sequences.iter().map(Vec::len).max().unwrap_or(0);
        let layers = if run.all_layers {
            format!("all {}", model.num_layers())
        } else {
            format!("{:?} of {}", config.layers, model.num_layers())
        };
        let estimate =
            model.forward_memory(config.batch_size.min(tok.sequences.len().max(1)), longest);
        let verdict = match estimate.check(config.max_memory, "") {
            Ok(_) => "fits the budget".to_string(),
            Err(e) => format!("OVER BUDGET: {e}"),
        };
        let _ = writeln!(
            out,
            "{name}: {} texts, {} tokens, longest {longest}; layers {layers}\n{estimate}\n  {verdict}",
            tok.sequences.len(),
            tok.tokens(),
        );
    }
    Ok(out)
}

/// Resolves the models and texts, runs the analysis and writes every output.
pub fn run_analyze(run: &AnalyzeRun, device: &Device) -> Result<AnalyzeOutcome> {
    let set = resolve_models(&run.models, &run.demo_cache)?;
    let texts = texts_or(run.texts.as_deref(), set.demo_held_out_texts(), "--texts")?;
    let mut models = Vec::new();
    for (name, dir) in &set.models {
        models.push(AnalysisModel {
            name: name.clone(),
            model: CausalLm::load_dir(dir, device)
                .with_step(|| format!("loading {}", dir.display()))?,
            tokenizer: TextTokenizer::from_model_dir(dir)
                .with_step(|| format!("loading the tokenizer of {}", dir.display()))?,
        });
    }
    let mut config = run.config.clone();
    if run.all_layers {
        let max = models.iter().map(|m| m.model.num_layers()).max();
        config.layers = (0..max.unwrap_or(0)).collect();
    }
    let meta = RunMeta::new("analyze", &config).step("serialising the run parameters")?;
    let out_dir = run
        .out_dir
        .clone()
        .unwrap_or_else(|| Path::new("analysis_outputs").join(&meta.run_id));
    let plots_dir = run
        .plots_dir
        .clone()
        .unwrap_or_else(|| out_dir.join("plots"));
    let result = analysis::run(&models, &texts, &config, device).step("analysis")?;
    let json = out_dir.join(JSON_NAME);
    crate::write_json(&json, &result)?;
    if run.save_copy {
        let name = format!("neuron_analysis_results_{}.json", meta.run_id);
        crate::write_json(&Path::new("analysis_outputs").join(name), &result)?;
    }
    let files = analysis::write_report(
        &out_dir,
        &plots_dir,
        &result.models,
        &result.comparison,
        JSON_NAME,
    )
    .step("writing the report")?;
    let results = append_rows(&run.results_dir, &result.to_rows(&meta, ""))
        .step("appending to the results store")?;
    let summary = analysis::summary(&result);
    Ok(AnalyzeOutcome {
        run: result,
        json,
        report: files.markdown,
        plots: files.plots,
        results,
        summary,
    })
}

/// Every per-layer report scalar (both aggregations), the layer dynamics, the causal top-k KL
/// values and perplexities, and the efficiency numbers; `model` is unused (each analysis names
/// its model).
impl ToRows for AnalysisRun {
    fn to_rows(&self, meta: &RunMeta, _model: &str) -> Vec<ResultRow> {
        let mut rows = Vec::new();
        for m in &self.models {
            let mut push =
                |layer: Option<usize>, site: &str, method: &str, metric: &str, v: f64| {
                    rows.push(meta.row(&m.model, layer.map(|l| l as i64), site, method, metric, v));
                };
            if let Some(sp) = &m.sparsity {
                for (l, ls) in &sp.layers {
                    for r in [&ls.block_out, &ls.neurons] {
                        for (agg, rep) in [
                            ("per_sequence_mean", &r.per_sequence_mean),
                            ("per_token", &r.per_token),
                        ] {
                            for (method, metric, v) in rep.flat_rows() {
                                push(Some(*l), &r.site, &format!("{agg}:{method}"), &metric, v);
                            }
                        }
                    }
                }
                for d in &sp.layer_dynamics {
                    let site = format!("block_out.{}", d.layer);
                    let l = Some(d.layer);
                    push(l, &site, "layer_dynamics", "mean_variance", d.mean_variance);
                    push(l, &site, "layer_dynamics", "sparsity", d.sparsity);
                }
            }
            if let Some(c) = &m.causal {
                for (l, lc) in &c.layers {
                    for (rank, t) in lc.top.iter().enumerate() {
                        let metric = format!("kl_rank{rank}_neuron{}", t.neuron);
                        push(Some(*l), &lc.site, "causal", &metric, t.score);
                    }
                    push(
                        Some(*l),
                        &lc.site,
                        "causal",
                        "perplexity_clean",
                        lc.perplexity_clean,
                    );
                    push(
                        Some(*l),
                        &lc.site,
                        "causal",
                        "perplexity_ablated",
                        lc.perplexity_ablated,
                    );
                }
            }
            if let Some(e) = &m.efficiency {
                push(
                    None,
                    "",
                    "efficiency",
                    "total_parameters",
                    e.total_parameters as f64,
                );
                push(
                    None,
                    "",
                    "efficiency",
                    "efficiency_ratio",
                    e.efficiency_ratio,
                );
                push(
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
}
