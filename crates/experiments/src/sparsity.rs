//! `cargo xtask sparsity`: the comprehensive sparsity report of one activation tensor, with its
//! two plots and results-store rows.

use std::path::PathBuf;

use serde::Serialize;
use sparsity_metrics::{Aggregation, ReportParams, SparsityReport};

use crate::error::{Result, StepContext};
use crate::results::{ResultRow, RunMeta, ToRows, append_rows};

/// One report run.
#[derive(Debug, Clone)]
pub struct SparsityRun {
    /// Safetensors file with the activations.
    pub activations: PathBuf,
    /// Tensor name (`[samples, neurons]` or `[samples, seq, neurons]`).
    pub tensor: String,
    /// Aggregation of a 3-D tensor.
    pub aggregation: Aggregation,
    /// Report options.
    pub params: ReportParams,
    /// Report JSON; the plots go beside it (`<stem>_methods.png`, `<stem>_percentiles.png`).
    pub out: PathBuf,
    /// Results store directory.
    pub results_dir: PathBuf,
    /// Model label (default: the file stem).
    pub model: Option<String>,
}

/// The options of a run as stored with its rows.
#[derive(Debug, Serialize)]
struct Parameters<'a> {
    activations: String,
    tensor: &'a str,
    aggregate: String,
    family: String,
    threshold: f64,
    target: f64,
    entropy: String,
}

/// A report with the tensor it describes (rows carry it as their site).
struct OfTensor<'a>(&'a SparsityReport, &'a str);

impl ToRows for OfTensor<'_> {
    fn to_rows(&self, meta: &RunMeta, model: &str) -> Vec<ResultRow> {
        self.0
            .flat_rows()
            .into_iter()
            .map(|(method, metric, value)| meta.row(model, None, self.1, &method, &metric, value))
            .collect()
    }
}

/// Loads the tensor, writes the report, its plots and rows; returns the results-store file.
pub fn run_sparsity(run: &SparsityRun) -> Result<PathBuf> {
    let p = &run.params;
    let tensor =
        sparsity_metrics::load_safetensors(&run.activations, &run.tensor).with_step(|| {
            format!(
                "loading `{}` from {}",
                run.tensor,
                run.activations.display()
            )
        })?;
    tracing::info!(shape = ?tensor.shape(), tensor = %run.tensor, "loaded activations");
    let analysis =
        sparsity_metrics::analyze_tensor(&tensor, run.aggregation, p).step("sparsity report")?;
    let report = &analysis.report;
    crate::write_json(&run.out, report)?;
    let model = run.model.clone().unwrap_or_else(|| {
        run.activations
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "unknown".into())
    });
    let stem = run.out.with_extension("");
    let stem = stem.to_string_lossy();
    let labelled = [(model.as_str(), report)];
    sparsity_metrics::plot_methods(&PathBuf::from(format!("{stem}_methods.png")), &labelled)
        .step("plotting the methods")?;
    sparsity_metrics::plot_percentiles(
        &PathBuf::from(format!("{stem}_percentiles.png")),
        &labelled,
    )
    .step("plotting the percentiles")?;
    let meta = RunMeta::new(
        "sparsity",
        &Parameters {
            activations: run.activations.display().to_string(),
            tensor: &run.tensor,
            aggregate: run.aggregation.to_string(),
            family: p.family.to_string(),
            threshold: p.traditional_threshold(),
            target: p.target,
            entropy: p.entropy_mode.to_string(),
        },
    )
    .step("serialising the run parameters")?;
    let rows = OfTensor(report, &run.tensor).to_rows(&meta, &model);
    let path = append_rows(&run.results_dir, &rows).step("appending to the results store")?;
    tracing::info!(report = %run.out.display(), results = %path.display(), rows = rows.len(), "sparsity report written");
    Ok(path)
}
