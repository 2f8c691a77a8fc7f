//! Pruning runs: a whole model (`cargo xtask prune`), one layer file (`prune-layer`), and the
//! comparison of two sets of masks (`compare-masks`), each with its files.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use serde::Serialize;
use sparsity_models::CausalLm;
use sparsity_models::text::TextTokenizer;
use sparsity_pruning::compare::{
    ComparisonReport, FeatureMetrics, FeatureSummary, LayerMetrics, compare_all,
};
use sparsity_pruning::io::load_masked_input;
use sparsity_pruning::layer_file::{LayerFileSummary, prune_layer_file, write_pruned_layer};
use sparsity_pruning::model::{
    ModelPruneOptions, ModelPruneReport, calibration_windows, prune_model, save_pruned,
};
use sparsity_pruning::plot::plot_layer_histogram;
use sparsity_pruning::{Method, Pattern};

use crate::error::{ExperimentError, Result, StepContext};
use crate::results::git_revision;
use crate::source::{resolve_models, texts_or};

/// A whole-model pruning run.
#[derive(Debug, Clone)]
pub struct PruneRun {
    /// Model directory, hub id, or `demo-gpt2` / `demo-mamba` / `demo-opt` / `demo-llama`.
    pub model: String,
    /// Demo model cache.
    pub demo_cache: PathBuf,
    /// The pruning options (method, pattern, groups, …).
    pub options: ModelPruneOptions,
    /// Calibration texts (default for the demo models: the corpus' training split).
    pub calib_texts: Option<PathBuf>,
    /// Held-out texts (default: the demo corpus' held-out split, else the last 10 % of the
    /// calibration texts, left out of calibration).
    pub eval_texts: Option<PathBuf>,
    /// Calibration windows (default 128; 64 for the demo models).
    pub nsamples: Option<usize>,
    /// Window length (default 2048 capped by the model's positions; 64 for the demo models).
    pub seq_len: Option<usize>,
    /// Seed of the window starts.
    pub seed: u64,
    /// Output directory (replaced; must differ from the model directory).
    pub out: PathBuf,
}

/// What a whole-model run wrote.
#[derive(Debug, Clone)]
pub struct PruneOutcome {
    /// The report (also `OUT/pruning.json`).
    pub report: ModelPruneReport,
    /// Per-layer sparsity and reconstruction error, then perplexity before → after.
    pub summary: String,
}

/// Loads the model, cuts calibration windows, prunes block by block and writes the pruned model,
/// its masks, `pruning.json` and `recon_error.png` into `run.out`.
pub fn run_prune(run: &PruneRun, device: &Device) -> Result<PruneOutcome> {
    let set = resolve_models(std::slice::from_ref(&run.model), &run.demo_cache)?;
    let is_demo = set.demo.is_some();
    let (_, dir) = set
        .models
        .first()
        .cloned()
        .ok_or_else(|| ExperimentError::invalid("--model", "no model"))?;
    if run.out.exists()
        && let (Ok(a), Ok(b)) = (run.out.canonicalize(), dir.canonicalize())
        && a == b
    {
        return Err(ExperimentError::invalid(
            "--out",
            format!(
                "{} is the model directory itself; choose another",
                run.out.display()
            ),
        ));
    }
    let mut model =
        CausalLm::load_dir(&dir, device).with_step(|| format!("loading {}", dir.display()))?;
    let tokenizer = TextTokenizer::from_model_dir(&dir)
        .with_step(|| format!("loading the tokenizer of {}", dir.display()))?;
    let mut calib_texts = texts_or(
        run.calib_texts.as_deref(),
        set.demo_train_texts(),
        "--calib-texts",
    )?;
    let eval_texts = match (&run.eval_texts, set.demo_held_out_texts()) {
        (Some(p), _) => texts_or(Some(p), None, "--eval-texts")?,
        (None, Some(t)) => t,
        (None, None) => {
            if calib_texts.len() < 2 {
                return Err(ExperimentError::invalid(
                    "--eval-texts",
                    format!(
                        "holding out 10 % of the calibration texts for perplexity needs at least \
                         2 texts (got {}); give --eval-texts",
                        calib_texts.len()
                    ),
                ));
            }
            let k = (calib_texts.len() / 10).max(1);
            calib_texts.split_off(calib_texts.len() - k)
        }
    };
    let stream = tokenizer
        .encode(&calib_texts.join("\n\n"))
        .step("tokenising the calibration texts")?;
    let max_pos = model.max_positions();
    let seq_len = match run.seq_len {
        Some(l) => l,
        None if is_demo => 64,
        None => max_pos.map_or(2048, |m| m.min(2048)),
    };
    let nsamples = run.nsamples.unwrap_or(if is_demo { 64 } else { 128 });
    let calib = calibration_windows(&stream, seq_len, nsamples, run.seed)
        .step("cutting calibration windows (try a smaller --seq-len or more texts)")?;
    let mut eval = Vec::new();
    for t in &eval_texts {
        let s = tokenizer.encode(t).step("tokenising the held-out texts")?;
        // windows of at most the model's positions
        let w = max_pos.unwrap_or(s.len().max(1)).max(1);
        eval.extend(s.chunks(w).filter(|c| c.len() >= 2).map(<[u32]>::to_vec));
    }
    let o = &run.options;
    tracing::info!(
        model = %dir.display(), method = o.method.name(), pattern = %o.pattern, nsamples,
        seq_len, eval_sequences = eval.len(), "pruning"
    );
    let (report, masks) = prune_model(&mut model, &calib, &eval, o, device)
        .with_step(|| format!("pruning {}", dir.display()))?;
    let tok = dir.join("tokenizer.json");
    save_pruned(
        &model,
        &report,
        &masks,
        tok.is_file().then_some(tok.as_path()),
        &run.out,
    )
    .with_step(|| format!("writing {}", run.out.display()))?;
    let plot = run.out.join("recon_error.png");
    if let Err(e) = sparsity_pruning::plot::plot_model_pruning(&plot, &report) {
        tracing::warn!(error = %e, "the reconstruction-error plot was not written");
    }
    let summary = prune_summary(&report);
    Ok(PruneOutcome { report, summary })
}

/// Per-layer sparsity and relative reconstruction error, perplexity before → after, overall
/// sparsity.
pub fn prune_summary(report: &ModelPruneReport) -> String {
    let mut s = String::from("layer | sparsity | rel. recon. error\n");
    for l in &report.layers {
        let err = l
            .rel_recon_error
            .map_or("-".to_string(), |e| format!("{e:.4e}"));
        s.push_str(&format!(
            "{} | {:.4} | {err}\n",
            l.target.name, l.report.sparsity
        ));
    }
    if let (Some(b), Some(a)) = (&report.perplexity_before, &report.perplexity_after) {
        s.push_str(&format!(
            "held-out perplexity {:.3} -> {:.3} ({} tokens)\n",
            b.perplexity, a.perplexity, a.tokens
        ));
    }
    s.push_str(&format!(
        "overall sparsity {:.4}\n",
        report.overall_sparsity
    ));
    s
}

/// The JSON report of `prune-layer`.
#[derive(Debug, Clone, Serialize)]
pub struct LayerRunReport {
    /// The input file.
    pub input: String,
    /// The pruned layer file.
    pub output: String,
    /// Code revision.
    pub git_revision: String,
    /// Sparsity, reconstruction error, damping retries.
    pub result: LayerFileSummary,
}

/// Prunes the layer file `input` and writes the pruned `weight` + `mask` to `out` and the JSON
/// report to `report` (default: `out` with extension `.json`).
pub fn run_prune_layer(
    input: &Path,
    method: Method,
    pattern: Pattern,
    seq_len: Option<usize>,
    max_damp_retries: usize,
    out: &Path,
    report: Option<&Path>,
) -> Result<LayerRunReport> {
    tracing::info!(input = %input.display(), method = method.name(), %pattern, "pruning layer");
    let outcome = prune_layer_file(input, method, pattern, seq_len, Some(max_damp_retries))
        .with_step(|| format!("pruning {}", input.display()))?;
    write_pruned_layer(out, &outcome.pruned).with_step(|| format!("writing {}", out.display()))?;
    let path = report.map_or_else(|| out.with_extension("json"), Path::to_path_buf);
    let r = LayerRunReport {
        input: input.display().to_string(),
        output: out.display().to_string(),
        git_revision: git_revision(),
        result: outcome.summary(),
    };
    crate::write_json(&path, &r)?;
    Ok(r)
}

/// One layer of a mask comparison.
#[derive(Debug, Clone, Serialize)]
pub struct LayerEntry {
    /// Layer name.
    pub name: String,
    /// [rows, cols].
    pub shape: [usize; 2],
    /// Whole-layer metrics.
    pub layer: LayerMetrics,
    /// Summary of the per-row metrics.
    pub rows: FeatureSummary,
    /// Summary of the per-column metrics.
    pub columns: FeatureSummary,
    /// The histogram PNG, when drawn.
    pub histogram: Option<String>,
    /// Every per-row value (with `per_feature`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows_per_feature: Option<FeatureMetrics>,
    /// Every per-column value (with `per_feature`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub columns_per_feature: Option<FeatureMetrics>,
}

/// The JSON report of `compare-masks`.
#[derive(Debug, Clone, Serialize)]
pub struct MaskComparisonReport {
    /// First input.
    pub a: String,
    /// Second input.
    pub b: String,
    /// How masks are read.
    pub mask_convention: &'static str,
    /// Code revision.
    pub git_revision: String,
    /// Per layer.
    pub layers: Vec<LayerEntry>,
    /// Layers only in A.
    pub only_in_a: Vec<String>,
    /// Layers only in B.
    pub only_in_b: Vec<String>,
    /// Summary over layers of the whole-layer Jaccard.
    pub layer_jaccard: sparsity_pruning::compare::Summary,
    /// Summary over layers of the whole-layer Hamming fraction.
    pub layer_hamming: sparsity_pruning::compare::Summary,
}

fn safe_file_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Compares the masks of `a` and `b` layer by layer, draws one histogram per layer into
/// `plots` (unless `None`) and writes the JSON report to `out`.
pub fn run_compare_masks(
    a: &Path,
    b: &Path,
    out: &Path,
    plots: Option<&Path>,
    per_feature: bool,
) -> Result<MaskComparisonReport> {
    let ma = load_masked_input(a).with_step(|| format!("reading {}", a.display()))?;
    let mb = load_masked_input(b).with_step(|| format!("reading {}", b.display()))?;
    let report: ComparisonReport = compare_all(&ma, &mb).step("comparing the masks")?;
    if report.layers.is_empty() {
        return Err(ExperimentError::invalid(
            "A, B",
            format!(
                "no layer names in common between {} ({:?}) and {} ({:?})",
                a.display(),
                report.only_in_a,
                b.display(),
                report.only_in_b
            ),
        ));
    }
    let (label_a, label_b) = (a.display().to_string(), b.display().to_string());
    let span = tracing::info_span!(
        "compare-masks",
        progress_total = report.layers.len() as u64,
        progress_unit = "layers"
    );
    let mut layers = Vec::with_capacity(report.layers.len());
    for l in &report.layers {
        let histogram = match plots {
            None => None,
            Some(dir) => {
                let p = dir.join(format!("{}.png", safe_file_name(&l.name)));
                plot_layer_histogram(&p, l, &label_a, &label_b)
                    .with_step(|| format!("plotting {}", p.display()))?;
                Some(p.display().to_string())
            }
        };
        layers.push(LayerEntry {
            name: l.name.clone(),
            shape: l.shape,
            layer: l.layer.clone(),
            rows: l.rows.summary(),
            columns: l.columns.summary(),
            histogram,
            rows_per_feature: per_feature.then(|| l.rows.clone()),
            columns_per_feature: per_feature.then(|| l.columns.clone()),
        });
        tracing::trace!(target: sparsity_models::PROGRESS, parent: &span, progress_inc = 1u64);
    }
    drop(span);
    let r = MaskComparisonReport {
        a: label_a,
        b: label_b,
        mask_convention: "1 = pruned; Jaccard over kept positions; Hamming = fraction of differing bits",
        git_revision: git_revision(),
        layers,
        only_in_a: report.only_in_a,
        only_in_b: report.only_in_b,
        layer_jaccard: report.layer_jaccard,
        layer_hamming: report.layer_hamming,
    };
    crate::write_json(out, &r)?;
    Ok(r)
}
