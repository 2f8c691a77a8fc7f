//! Activation collection: every analysed site streamed into per-neuron statistics in both aggregations,
//! the comprehensive sparsity report per layer and site, and layer dynamics over every layer.
//!
//! Aggregations: `per_sequence_mean` is the original study's (mean over each text's real tokens, then the
//! population variance across texts); `per_token` is the variance over every real token. Padded positions
//! never enter any statistic.

use std::collections::BTreeMap;

use burn::tensor::Device;
use ndarray::{Array2, ArrayView2, Axis};
use serde::{Deserialize, Serialize};
use sparsity_metrics::{
    Aggregation, LayerDynamics, NeuronStats, NeuronStatsParams, ReportParams, SparsityReport,
    analyze_activations, layer_dynamics,
};

use super::tensors::site3;
use super::{
    AnalysisConfig, AnalysisModel, Result, TokenizedTexts, metrics_err, model_err, neuron_site,
};
use sparsity_models::sites::Capture;

const STAGE: &str = "sparsity";

/// The two reports of one site.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SiteSparsity {
    /// Site name (e.g. `block_out.0`).
    pub site: String,
    /// Number of neurons (channels).
    pub width: usize,
    /// Report over the per-sequence-mean variances (the original's aggregation).
    pub per_sequence_mean: SparsityReport,
    /// Report over the per-token variances, with activation-level measures.
    pub per_token: SparsityReport,
    /// Mean per-sequence-mean variance.
    pub mean_variance: f64,
    /// Mean per-token variance.
    pub mean_variance_per_token: f64,
    /// Fraction of neurons whose mean |a| exceeds the traditional threshold.
    pub active_neuron_fraction: f64,
    /// The original's threshold sweep, on a finer grid: `mean(|v| < t)` of the per-neuron
    /// variances at 33 thresholds `10^-8 … 10^0` (log grid, 4 per decade).
    pub threshold_sweep: SiteThresholdSweep,
}

/// [`SiteSparsity::threshold_sweep`]: one grid, both aggregations' variances.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SiteThresholdSweep {
    /// The thresholds.
    pub thresholds: Vec<f64>,
    /// `mean(|v| < t)` of the per-sequence-mean variances (the original's quantity).
    pub per_sequence_mean: Vec<f64>,
    /// `mean(|v| < t)` of the per-token variances.
    pub per_token: Vec<f64>,
}

/// The reports of one analysed layer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerSparsity {
    /// `block_out.{l}`: the residual stream after the layer (the original's site).
    pub block_out: SiteSparsity,
    /// The neuron-level site (`mlp_act.{l}` for GPT-2, `mixer_gated.{l}` for Mamba).
    pub neurons: SiteSparsity,
}

/// The sparsity stage's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SparsityAnalysis {
    /// The traditional threshold used.
    pub threshold: f64,
    /// Per analysed layer.
    pub layers: BTreeMap<usize, LayerSparsity>,
    /// Layer dynamics of `block_out` over every layer (per-sequence-mean variances, the original's rule:
    /// an extreme traditional sparsity falls back to the optimal threshold at target 0.3).
    pub layer_dynamics: Vec<LayerDynamics>,
    /// Layer dynamics of the neuron-level site over every layer.
    pub neuron_layer_dynamics: Vec<LayerDynamics>,
    /// Mean per-token variance of `block_out` per layer.
    pub layer_variances_per_token: Vec<f64>,
}

/// Streaming accumulator of one site.
struct SiteAcc {
    per_seq: NeuronStats,
    /// Real-token rows, kept for the activation-level pass (only for detailed layers).
    rows: Option<Vec<f32>>,
    per_token: NeuronStats,
    width: usize,
}

impl SiteAcc {
    fn new(width: usize, keep_rows: bool, threshold: f64) -> sparsity_metrics::Result<Self> {
        Ok(Self {
            per_seq: NeuronStatsParams::new(width)
                .aggregation(Aggregation::PerSequenceMean)
                .magnitude_threshold(threshold)
                .histogram(false)
                .build()?,
            per_token: NeuronStatsParams::new(width)
                .aggregation(Aggregation::PerToken)
                .magnitude_threshold(threshold)
                .histogram(false)
                .build()?,
            rows: keep_rows.then(Vec::new),
            width,
        })
    }

    /// `seq`: [len, width] real tokens of one text.
    fn push(&mut self, seq: ArrayView2<'_, f32>) -> sparsity_metrics::Result<()> {
        let (len, w) = seq.dim();
        let as3 = seq.into_shape_with_order((1, len, w)).map_err(|e| {
            sparsity_metrics::MetricsError::ShapeMismatch {
                what: format!("sequence ({e})"),
                expected: w,
                got: vec![len, w],
            }
        })?;
        self.per_seq.update_sequences(as3)?;
        self.per_token.update(seq)?;
        if let Some(rows) = &mut self.rows {
            rows.extend(seq.iter().copied());
        }
        Ok(())
    }
}

/// Runs the sparsity stage.
pub fn collect(
    m: &AnalysisModel,
    tok: &TokenizedTexts,
    layers: &[usize],
    config: &AnalysisConfig,
    device: &Device,
) -> Result<SparsityAnalysis> {
    let model = &m.model;
    let params = ReportParams {
        family: AnalysisConfig::metrics_family(model.architecture()),
        threshold: config.threshold,
        ..ReportParams::default()
    }
    .validate()
    .map_err(metrics_err(STAGE, &m.name))?;
    let threshold = params.traditional_threshold();
    let n_layers = model.num_layers();
    let mut sites: Vec<(String, bool)> = Vec::new();
    for l in 0..n_layers {
        let detailed = layers.contains(&l);
        sites.push((format!("block_out.{l}"), detailed));
        sites.push((neuron_site(model, l), detailed));
    }
    let mut accs: BTreeMap<String, SiteAcc> = BTreeMap::new();
    for (s, detailed) in &sites {
        let width = model.site_width(s).map_err(model_err(STAGE, &m.name))?;
        accs.insert(
            s.clone(),
            SiteAcc::new(width, *detailed, threshold).map_err(metrics_err(STAGE, &m.name))?,
        );
    }
    let capture = Capture::sites(sites.iter().map(|(s, _)| s.clone()));
    let batches = tok
        .batches(model, config.batch_size)
        .map_err(model_err(STAGE, &m.name))?;
    let bar = tracing::info_span!(
        "progress",
        progress_total = batches.len() as u64,
        progress_message = %format!("{}: activations", m.name)
    );
    for pb in &batches {
        let batch = pb.to_batch(device).map_err(model_err(STAGE, &m.name))?;
        let out = model
            .forward(&batch, &capture, None)
            .map_err(model_err(STAGE, &m.name))?;
        for (name, acc) in accs.iter_mut() {
            let a = site3(&out, name).map_err(model_err(STAGE, &m.name))?;
            for (b, &len) in pb.lengths.iter().enumerate() {
                // right padding: the real tokens are the prefix
                let seq = a.index_axis(Axis(0), b);
                let seq = seq.slice(ndarray::s![0..len, ..]);
                acc.push(seq).map_err(metrics_err(STAGE, &m.name))?;
            }
        }
        tracing::trace!(target: sparsity_models::PROGRESS, parent: &bar, progress_inc = 1u64);
    }
    drop(bar);

    let mut per_layer_var: Vec<ndarray::Array1<f64>> = Vec::with_capacity(n_layers);
    let mut neuron_layer_var: Vec<ndarray::Array1<f64>> = Vec::with_capacity(n_layers);
    let mut layer_variances_per_token = Vec::with_capacity(n_layers);
    let mut detailed: BTreeMap<usize, LayerSparsity> = BTreeMap::new();
    for l in 0..n_layers {
        let bo = format!("block_out.{l}");
        let ns = neuron_site(model, l);
        let (Some(bo_acc), Some(ns_acc)) = (accs.get(&bo), accs.get(&ns)) else {
            continue;
        };
        per_layer_var.push(
            bo_acc
                .per_seq
                .variance()
                .map_err(metrics_err(STAGE, &m.name))?,
        );
        neuron_layer_var.push(
            ns_acc
                .per_seq
                .variance()
                .map_err(metrics_err(STAGE, &m.name))?,
        );
        let vt = bo_acc
            .per_token
            .variance()
            .map_err(metrics_err(STAGE, &m.name))?;
        layer_variances_per_token.push(vt.mean().unwrap_or(f64::NAN));
        if layers.contains(&l) {
            detailed.insert(
                l,
                LayerSparsity {
                    block_out: site_report(&bo, bo_acc, &params, threshold)
                        .map_err(metrics_err(STAGE, &m.name))?,
                    neurons: site_report(&ns, ns_acc, &params, threshold)
                        .map_err(metrics_err(STAGE, &m.name))?,
                },
            );
        }
    }
    let views: Vec<_> = per_layer_var.iter().map(|v| v.view()).collect();
    let layer_dynamics =
        layer_dynamics(&views, threshold, params.target).map_err(metrics_err(STAGE, &m.name))?;
    let views: Vec<_> = neuron_layer_var.iter().map(|v| v.view()).collect();
    let neuron_layer_dynamics = sparsity_metrics::layer_dynamics(&views, threshold, params.target)
        .map_err(metrics_err(STAGE, &m.name))?;
    Ok(SparsityAnalysis {
        threshold,
        layers: detailed,
        layer_dynamics,
        neuron_layer_dynamics,
        layer_variances_per_token,
    })
}

fn site_report(
    name: &str,
    acc: &SiteAcc,
    params: &ReportParams,
    threshold: f64,
) -> sparsity_metrics::Result<SiteSparsity> {
    let v = acc.per_seq.variance()?;
    let mut per_sequence_mean = SparsityReport::from_values(v.view(), params)?;
    per_sequence_mean.config.aggregation = Some(Aggregation::PerSequenceMean);
    per_sequence_mean.config.samples = Some(acc.per_seq.sample_count());
    per_sequence_mean.config.tokens = Some(acc.per_seq.token_count());
    let rows = acc.rows.as_deref().unwrap_or(&[]);
    let tokens = rows.len() / acc.width.max(1);
    let arr = Array2::from_shape_vec((tokens, acc.width), rows.to_vec()).map_err(|e| {
        sparsity_metrics::MetricsError::ShapeMismatch {
            what: format!("{name} rows ({e})"),
            expected: acc.width,
            got: vec![tokens, acc.width],
        }
    })?;
    let per_token =
        analyze_activations(arr.view().into_dyn(), Aggregation::PerToken, params)?.report;
    let mean_abs = acc.per_token.mean_abs()?;
    let active = mean_abs.iter().filter(|&&a| a > threshold).count() as f64 / acc.width as f64;
    let grid = sparsity_metrics::log_grid(-8.0, 0.0, 33)?;
    let threshold_sweep = SiteThresholdSweep {
        per_sequence_mean: sparsity_metrics::threshold_sweep(v.view(), &grid)?.sparsity,
        per_token: sparsity_metrics::threshold_sweep(acc.per_token.variance()?.view(), &grid)?
            .sparsity,
        thresholds: grid,
    };
    Ok(SiteSparsity {
        site: name.to_string(),
        width: acc.width,
        threshold_sweep,
        mean_variance: v.mean().unwrap_or(f64::NAN),
        mean_variance_per_token: acc.per_token.variance()?.mean().unwrap_or(f64::NAN),
        per_sequence_mean,
        per_token,
        active_neuron_fraction: active,
    })
}
