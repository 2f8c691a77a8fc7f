//! Efficiency: parameters by component, active neurons, activation variance and forward throughput.
//!
//! The original counted elements of the **embedding output** with |a| > 0.1 as "active neurons" and
//! divided them by the parameter count. Here a neuron is a channel of the neuron-level site
//! (`mlp_act` / `mixer_gated`) of every layer, it is *active* when its mean |activation| over every real
//! token exceeds the traditional threshold, and `efficiency_ratio` = active / total neurons.

use std::collections::BTreeMap;
use std::time::Instant;

use burn::tensor::Device;
use ndarray::{Array1, Axis, s};
use serde::{Deserialize, Serialize};

use super::tensors::site3;
use super::{AnalysisConfig, AnalysisModel, Result, TokenizedTexts, model_err, neuron_site};
use sparsity_models::sites::Capture;

const STAGE: &str = "efficiency";

/// The efficiency stage's result (the original's keys plus the components).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Efficiency {
    /// Every parameter, tied embeddings counted once.
    pub total_parameters: usize,
    /// Parameters by component (`embeddings`, `attention` / `mixer`, `mlp`, `norms`, `lm_head`).
    pub parameters_by_component: BTreeMap<String, usize>,
    /// Neurons (neuron-level site channels over every layer) with mean |a| above the threshold.
    pub active_neurons: usize,
    /// Neurons in total.
    pub total_neurons: usize,
    /// active / total neurons.
    pub efficiency_ratio: f64,
    /// The threshold used.
    pub threshold: f64,
    /// Mean per-token variance of the neuron-level sites.
    pub mean_variance: f64,
    /// Fraction of activations with |a| below the threshold (all neuron-level sites).
    pub mean_sparsity: f64,
    /// Forward throughput on this machine (logits only, batched as analysed).
    pub tokens_per_second: f64,
}

/// Runs the stage.
pub fn efficiency(
    m: &AnalysisModel,
    tok: &TokenizedTexts,
    config: &AnalysisConfig,
    device: &Device,
) -> Result<Efficiency> {
    let model = &m.model;
    let err = |e| model_err(STAGE, &m.name)(e);
    let threshold = config.threshold.unwrap_or_else(|| {
        AnalysisConfig::metrics_family(model.architecture()).default_threshold()
    });
    let parameters_by_component = model.inner().parameter_groups();
    let total_parameters = parameters_by_component.values().sum();
    let n = model.num_layers();
    let sites: Vec<String> = (0..n).map(|l| neuron_site(model, l)).collect();
    let capture = Capture::sites(sites.clone());
    let batches = tok.batches(model, config.batch_size).map_err(err)?;
    let mut abs_sum: Vec<Array1<f64>> = Vec::new();
    let mut sum: Vec<Array1<f64>> = Vec::new();
    let mut sq: Vec<Array1<f64>> = Vec::new();
    let (mut below, mut count, mut tokens) = (0u64, 0u64, 0usize);
    for pb in &batches {
        let batch = pb.to_batch(device).map_err(err)?;
        let out = model.forward(&batch, &capture, None).map_err(err)?;
        for (i, site) in sites.iter().enumerate() {
            let a = site3(&out, site).map_err(err)?;
            let w = a.dim().2;
            if abs_sum.len() <= i {
                abs_sum.push(Array1::zeros(w));
                sum.push(Array1::zeros(w));
                sq.push(Array1::zeros(w));
            }
            for (b, &len) in pb.lengths.iter().enumerate() {
                let seq = a.slice(s![b, 0..len, ..]).mapv(f64::from);
                abs_sum[i] += &seq.mapv(f64::abs).sum_axis(Axis(0));
                sum[i] += &seq.sum_axis(Axis(0));
                sq[i] += &seq.mapv(|v| v * v).sum_axis(Axis(0));
                below += seq.iter().filter(|v| v.abs() < threshold).count() as u64;
                count += seq.len() as u64;
                if i == 0 {
                    tokens += len;
                }
            }
        }
    }
    let t = tokens.max(1) as f64;
    let (mut active, mut total, mut var_sum) = (0usize, 0usize, 0.0f64);
    for i in 0..abs_sum.len() {
        active += abs_sum[i].iter().filter(|&&v| v / t > threshold).count();
        total += abs_sum[i].len();
        let mean = &sum[i] / t;
        let var = &sq[i] / t - &mean.mapv(|v| v * v);
        var_sum += var.sum();
    }
    // throughput: logits only, timed after one warm-up batch
    if let Some(pb) = batches.first() {
        let b = pb.to_batch(device).map_err(err)?;
        model.logits(&b).map_err(err)?;
    }
    let t0 = Instant::now();
    for pb in &batches {
        let b = pb.to_batch(device).map_err(err)?;
        let l = model.logits(&b).map_err(err)?;
        // force evaluation
        sparsity_models::util::tensor_to_vec(&l.sum()).map_err(err)?;
    }
    let secs = t0.elapsed().as_secs_f64();
    Ok(Efficiency {
        total_parameters,
        parameters_by_component,
        active_neurons: active,
        total_neurons: total,
        efficiency_ratio: active as f64 / total.max(1) as f64,
        threshold,
        mean_variance: var_sum / total.max(1) as f64,
        mean_sparsity: below as f64 / count.max(1) as f64,
        tokens_per_second: if secs > 0.0 {
            tok.tokens() as f64 / secs
        } else {
            f64::NAN
        },
    })
}
