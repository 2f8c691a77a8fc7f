//! TEAL-style activation sparsity at the MLP inputs (Liu et al. 2024, "Training-Free
//! Activation Sparsity in Large Language Models"): per-site magnitude thresholds calibrated on
//! text for a target sparsity, applied with [`Edit::Threshold`], and the perplexity they cost.
//!
//! Sites (the inputs of the linear layers the family marks for TEAL, see
//! [`sparsity_models::LinearLayer::mlp_input`]): GPT-2 `mlp_in.{l}` (input of `c_fc`) and
//! `mlp_act.{l}` (input of `c_proj`); Mamba `mixer_in.{l}` (input of `in_proj`) and
//! `mixer_gated.{l}` (input of `out_proj`); OPT and the Llama family every linear layer's input,
//! TEAL's own set: `attn_in.{l}` (q/k/v), `attn_ctx.{l}` (o), `mlp_in.{l}` (fc1 / gate and up) and
//! `mlp_act.{l}` (fc2 / down). The threshold of a site for target sparsity p is
//! numpy's linear-interpolation quantile p of |x| over every calibration token and channel of
//! the **dense** model at that site (TEAL's recipe), so that |x| ≤ τ holds for a fraction p of the
//! calibration entries. The sweep then measures, with all sites masked at once, the sparsity
//! actually reached on held-out text and the held-out perplexity.
//!
//! How the target is spread over a layer's sites is an [`Allocation`]: `Uniform` puts every site
//! at p (the default); `Greedy` is TEAL's block-wise greedy allocation: per layer, starting
//! dense, it repeatedly raises by one step the calibration level of the site whose raise costs
//! the least calibration loss (mean next-token NLL with that layer's sites masked, the other
//! layers dense), until the layer's mean level weighted by weight-matrix size — the fraction of
//! the layer's MLP weight reads skipped — reaches p. TEAL scores a raise by the error of the
//! block's output instead; on the demo GPT-2 that proxy chose worse allocations than uniform
//! (docs/kernels.md), so the loss itself is the score here. Cost: up to
//! `sites/layer × layers × p_max / step` calibration forwards.
//!
//! This module measures quality only; the speed of a masked GEMV is measured by the
//! `sparsity-kernels` benchmarks; [`crate::decode`] decodes with the masked kernel.

use std::collections::BTreeMap;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use sparsity_models::error::{ModelError, Result};
use sparsity_models::lm::{Batch, CausalLm};
use sparsity_models::sites::{Capture, Edit, Intervention};
use sparsity_models::text::Perplexity;

/// The MLP-input sites of `model`, in forward order (the inputs of the linear layers the
/// family marks [`sparsity_models::LinearLayer::mlp_input`]).
pub fn mlp_input_sites(model: &CausalLm) -> Vec<String> {
    model
        .mlp_inputs()
        .into_iter()
        .map(|(site, _)| site)
        .collect()
}

/// Per-site thresholds for one target sparsity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// The target sparsity p.
    pub target: f64,
    /// Site → τ.
    pub per_site: BTreeMap<String, f32>,
    /// Site → the calibration sparsity its τ was taken at (the target itself for `Uniform`).
    #[serde(default)]
    pub levels: BTreeMap<String, f64>,
}

/// How a target sparsity is spread over each layer's MLP-input sites.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Allocation {
    /// Every site at the target.
    #[default]
    Uniform,
    /// TEAL's block-wise greedy allocation with levels raised `step` at a time (see the module
    /// documentation).
    Greedy {
        /// Level increment, in (0, 0.5].
        step: f64,
    },
}

impl Allocation {
    /// The greedy allocation with TEAL's step of 0.05.
    pub const GREEDY: Allocation = Allocation::Greedy { step: 0.05 };

    /// A short name (`uniform`, `greedy`).
    pub fn name(&self) -> &'static str {
        match self {
            Allocation::Uniform => "uniform",
            Allocation::Greedy { .. } => "greedy",
        }
    }
}

/// The MLP-input sites of `model` with the size (elements) of the weight matrix each one feeds.
pub fn mlp_input_weights(model: &CausalLm) -> Vec<(String, usize)> {
    model.mlp_inputs()
}

impl Thresholds {
    /// The intervention that masks every site with its τ.
    pub fn intervention(&self) -> Intervention {
        self.per_site
            .iter()
            .fold(Intervention::new(), |iv, (site, &tau)| {
                iv.edit(site.clone(), Edit::Threshold(tau))
            })
    }
}

fn check_sequences(sequences: &[Vec<u32>], what: &str) -> Result<usize> {
    let Some(first) = sequences.first() else {
        return Err(ModelError::Invalid(format!("{what}: no sequences")));
    };
    let len = first.len();
    if len < 2 {
        return Err(ModelError::Invalid(format!(
            "{what}: sequences need at least 2 tokens, got {len}"
        )));
    }
    if let Some((i, s)) = sequences.iter().enumerate().find(|(_, s)| s.len() != len) {
        return Err(ModelError::Invalid(format!(
            "{what}: sequence {i} has {} tokens, the first has {len} (all must be equal)",
            s.len()
        )));
    }
    Ok(len)
}

fn batches<'a>(
    sequences: &'a [Vec<u32>],
    len: usize,
    batch_size: usize,
    device: &'a Device,
) -> impl Iterator<Item = Result<Batch>> + 'a {
    sequences.chunks(batch_size.max(1)).map(move |chunk| {
        let ids: Vec<i64> = chunk.iter().flatten().map(|&t| i64::from(t)).collect();
        Batch::from_ids(&ids, chunk.len(), len, device)
    })
}

fn check_targets(targets: &[f64]) -> Result<()> {
    if targets.is_empty() {
        return Err(ModelError::Invalid("no target sparsities given".into()));
    }
    if let Some(t) = targets.iter().find(|t| !(0.0..1.0).contains(*t)) {
        return Err(ModelError::Invalid(format!(
            "target sparsity {t} is outside [0, 1)"
        )));
    }
    Ok(())
}

/// Calibrates thresholds for each target on `sequences` (all of one length, run `batch_size`
/// at a time), every site at the target ([`Allocation::Uniform`]). Memory: every |x| of every
/// site over the calibration tokens.
pub fn calibrate_thresholds(
    model: &CausalLm,
    sequences: &[Vec<u32>],
    targets: &[f64],
    batch_size: usize,
    device: &Device,
) -> Result<Vec<Thresholds>> {
    calibrate_thresholds_with(
        model,
        sequences,
        targets,
        Allocation::Uniform,
        batch_size,
        device,
    )
}

/// [`calibrate_thresholds`] with a chosen [`Allocation`].
pub fn calibrate_thresholds_with(
    model: &CausalLm,
    sequences: &[Vec<u32>],
    targets: &[f64],
    allocation: Allocation,
    batch_size: usize,
    device: &Device,
) -> Result<Vec<Thresholds>> {
    check_targets(targets)?;
    if let Allocation::Greedy { step } = allocation
        && !(step > 0.0 && step <= 0.5)
    {
        return Err(ModelError::Invalid(format!(
            "greedy allocation step {step} is outside (0, 0.5]"
        )));
    }
    let len = check_sequences(sequences, "threshold calibration")?;
    let sites = mlp_input_sites(model);
    let capture = Capture::sites(sites.iter().cloned());
    let mut values: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for batch in batches(sequences, len, batch_size, device) {
        let out = model.forward(&batch?, &capture, None)?;
        for site in &sites {
            let v = recorded(&out.sites, site)?;
            if let Some(bad) = v.iter().find(|x| !x.is_finite()) {
                return Err(ModelError::Invalid(format!(
                    "site `{site}`: non-finite activation {bad} during calibration"
                )));
            }
            values
                .entry(site.clone())
                .or_default()
                .extend(v.iter().map(|x| f64::from(x.abs())));
        }
    }
    for v in values.values_mut() {
        v.sort_by(f64::total_cmp);
    }
    let levels: Vec<BTreeMap<String, f64>> = match allocation {
        Allocation::Uniform => targets
            .iter()
            .map(|&t| sites.iter().map(|s| (s.clone(), t)).collect())
            .collect(),
        Allocation::Greedy { step } => greedy_levels(
            model, sequences, len, &values, targets, step, batch_size, device,
        )?,
    };
    targets
        .iter()
        .zip(levels)
        .map(|(&target, levels)| {
            let per_site = levels
                .iter()
                .map(|(site, &level)| Ok((site.clone(), tau_at(&values, site, level)?)))
                .collect::<Result<_>>()?;
            Ok(Thresholds {
                target,
                per_site,
                levels,
            })
        })
        .collect()
}

/// The recorded values of `site`.
fn recorded(
    sites: &BTreeMap<String, sparsity_models::sites::SiteTensor>,
    site: &str,
) -> Result<Vec<f32>> {
    sites
        .get(site)
        .ok_or_else(|| ModelError::Invalid(format!("site `{site}` was not recorded")))?
        .to_vec()
}

/// τ of `site` at calibration sparsity `level`: the workspace's one TEAL calibration,
/// [`sparsity_metrics::teal_threshold_f32`] (0 → exact zeros only).
fn tau_at(values: &BTreeMap<String, Vec<f64>>, site: &str, level: f64) -> Result<f32> {
    let v = values
        .get(site)
        .ok_or_else(|| ModelError::Invalid(format!("site `{site}` was not recorded")))?;
    sparsity_metrics::teal_threshold_f32(v, level)
        .map_err(|e| ModelError::Invalid(format!("site `{site}`: {e}")))
}

/// TEAL's block-wise greedy allocation, with the calibration loss as the error: per layer, the
/// site levels at which the layer's weight-weighted mean level first reaches each target.
#[allow(clippy::too_many_arguments)]
fn greedy_levels(
    model: &CausalLm,
    sequences: &[Vec<u32>],
    len: usize,
    values: &BTreeMap<String, Vec<f64>>,
    targets: &[f64],
    step: f64,
    batch_size: usize,
    device: &Device,
) -> Result<Vec<BTreeMap<String, f64>>> {
    let weights = mlp_input_weights(model);
    let layers = model.num_layers();
    // calibration loss (mean NLL per token) with one layer's sites at `lv`, other layers dense
    let loss = |sites: &[(String, usize)], lv: &[f64]| -> Result<f64> {
        let mut iv = Intervention::new();
        for ((site, _), &x) in sites.iter().zip(lv) {
            iv = iv.edit(site.clone(), Edit::Threshold(tau_at(values, site, x)?));
        }
        let (mut nll, mut tokens) = (0.0f64, 0usize);
        for batch in batches(sequences, len, batch_size, device) {
            let batch = batch?;
            let out = model.forward(&batch, &Capture::none(), Some(&iv))?;
            let (n, t) = sparsity_models::text::nll_of_logits(out.logits, &batch)?;
            nll += n;
            tokens += t;
        }
        Ok(nll / tokens.max(1) as f64)
    };
    let mut order: Vec<usize> = (0..targets.len()).collect();
    order.sort_by(|&a, &b| targets[a].total_cmp(&targets[b]));
    let mut result: Vec<BTreeMap<String, f64>> = vec![BTreeMap::new(); targets.len()];
    let per_layer = weights.len() / layers.max(1);
    let bar = tracing::info_span!(
        "greedy allocation",
        progress_total = layers as u64,
        progress_unit = "layers"
    );
    for l in 0..layers {
        let sites = &weights[l * per_layer..(l + 1) * per_layer];
        let total: f64 = sites.iter().map(|(_, w)| *w as f64).sum();
        let mean = |lv: &[f64]| -> f64 {
            sites
                .iter()
                .zip(lv)
                .map(|((_, w), x)| *w as f64 * x)
                .sum::<f64>()
                / total
        };
        // levels in whole steps (no drift from repeated float additions)
        let mut counts = vec![0u32; sites.len()];
        let levels = |c: &[u32]| -> Vec<f64> { c.iter().map(|&n| f64::from(n) * step).collect() };
        for &ti in &order {
            let target = targets[ti];
            while mean(&levels(&counts)) < target - 1e-9 {
                let mut best: Option<(f64, usize)> = None;
                for k in 0..counts.len() {
                    let mut cand = counts.clone();
                    cand[k] += 1;
                    let cand = levels(&cand);
                    if cand[k] > MAX_LEVEL + 1e-9 {
                        continue;
                    }
                    let e = loss(sites, &cand)?;
                    // ties go to the earlier site, so the result does not depend on float noise
                    if best.is_none_or(|(b, _)| e < b) {
                        best = Some((e, k));
                    }
                }
                let Some((_, k)) = best else {
                    return Err(ModelError::Invalid(format!(
                        "greedy allocation: layer {l} cannot reach sparsity {target} with every \
                         site at most {MAX_LEVEL} in steps of {step}"
                    )));
                };
                counts[k] += 1;
            }
            for ((site, _), x) in sites.iter().zip(levels(&counts)) {
                result[ti].insert(site.clone(), x);
            }
        }
        tracing::trace!(target: sparsity_models::PROGRESS, parent: &bar, progress_inc = 1u64);
    }
    drop(bar);
    Ok(result)
}

/// The highest calibration level the greedy allocation gives a site.
const MAX_LEVEL: f64 = 0.99;

/// One row of the sparsity sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepRow {
    /// Target sparsity.
    pub target: f64,
    /// Fraction of zeroed entries over all sites on the held-out text (masks applied together).
    pub achieved_sparsity: f64,
    /// The per-site held-out sparsities weighted by the size of the weight each site feeds: the
    /// fraction of MLP weight reads a masked GEMV skips.
    #[serde(default)]
    pub weight_sparsity: f64,
    /// Per site, the fraction zeroed on the held-out text.
    pub per_site_sparsity: BTreeMap<String, f64>,
    /// Held-out perplexity with the masks.
    pub perplexity: Perplexity,
    /// perplexity / dense perplexity − 1.
    pub relative_increase: f64,
    /// The thresholds.
    pub thresholds: Thresholds,
}

/// The sweep's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SparseDecodeReport {
    /// Model family.
    pub family: String,
    /// How each target was spread over a layer's sites.
    #[serde(default)]
    pub allocation: Allocation,
    /// The sites masked.
    pub sites: Vec<String>,
    /// Calibration sequences × length.
    pub calibration: [usize; 2],
    /// Held-out sequences × length.
    pub evaluation: [usize; 2],
    /// Dense held-out perplexity.
    pub dense: Perplexity,
    /// One row per target, in the order given.
    pub rows: Vec<SweepRow>,
}

/// Per site: (zeroed entries, all entries).
type ZeroCounts = BTreeMap<String, (usize, usize)>;

/// Held-out NLL with `intervention`, plus per-site counts of zeros (real tokens only; all
/// sequences have one length, so every position is real).
fn masked_eval(
    model: &CausalLm,
    eval: &[Vec<u32>],
    len: usize,
    batch_size: usize,
    intervention: Option<&Intervention>,
    sites: &[String],
    device: &Device,
) -> Result<(Perplexity, ZeroCounts)> {
    let capture = if intervention.is_some() {
        Capture::sites(sites.iter().cloned())
    } else {
        Capture::none()
    };
    let (mut nll_sum, mut tokens) = (0.0f64, 0usize);
    let mut zeros = ZeroCounts::new();
    for batch in batches(eval, len, batch_size, device) {
        let batch = batch?;
        let out = model.forward(&batch, &capture, intervention)?;
        let (n, t) = sparsity_models::text::nll_of_logits(out.logits, &batch)?;
        nll_sum += n;
        tokens += t;
        for (site, t) in &out.sites {
            let v = t.to_vec()?;
            let e = zeros.entry(site.clone()).or_default();
            e.0 += v.iter().filter(|x| **x == 0.0).count();
            e.1 += v.len();
        }
    }
    Ok((Perplexity::from_sums(nll_sum, tokens, "evaluation")?, zeros))
}

/// Calibrates thresholds on `calibration`, then measures held-out perplexity and achieved
/// sparsity on `eval` (all sequences of one length each set) for every target
/// ([`Allocation::Uniform`]).
pub fn sparsity_sweep(
    model: &CausalLm,
    calibration: &[Vec<u32>],
    eval: &[Vec<u32>],
    targets: &[f64],
    batch_size: usize,
    device: &Device,
) -> Result<SparseDecodeReport> {
    sparsity_sweep_with(
        model,
        calibration,
        eval,
        targets,
        Allocation::Uniform,
        batch_size,
        device,
    )
}

/// [`sparsity_sweep`] with a chosen [`Allocation`].
pub fn sparsity_sweep_with(
    model: &CausalLm,
    calibration: &[Vec<u32>],
    eval: &[Vec<u32>],
    targets: &[f64],
    allocation: Allocation,
    batch_size: usize,
    device: &Device,
) -> Result<SparseDecodeReport> {
    let eval_len = check_sequences(eval, "evaluation")?;
    let calib_len = check_sequences(calibration, "threshold calibration")?;
    let thresholds =
        calibrate_thresholds_with(model, calibration, targets, allocation, batch_size, device)?;
    let sites = mlp_input_sites(model);
    let weights: BTreeMap<String, usize> = mlp_input_weights(model).into_iter().collect();
    let (dense, _) = masked_eval(model, eval, eval_len, batch_size, None, &sites, device)?;
    let bar = tracing::info_span!(
        "sparse-decode sweep",
        progress_total = thresholds.len() as u64,
        progress_unit = "targets"
    );
    let mut rows = Vec::with_capacity(thresholds.len());
    for th in thresholds {
        let iv = th.intervention();
        let (ppl, zeros) =
            masked_eval(model, eval, eval_len, batch_size, Some(&iv), &sites, device)?;
        let (z, n) = zeros
            .values()
            .fold((0usize, 0usize), |(z, n), (a, b)| (z + a, n + b));
        tracing::info!(
            target = th.target,
            perplexity = ppl.perplexity,
            "sparse-decode sweep row"
        );
        let (wz, wn) = zeros.iter().fold((0.0f64, 0.0f64), |(a, b), (k, (z, n))| {
            let w = weights.get(k).copied().unwrap_or(0) as f64;
            (a + w * *z as f64 / (*n).max(1) as f64, b + w)
        });
        rows.push(SweepRow {
            target: th.target,
            achieved_sparsity: z as f64 / n.max(1) as f64,
            weight_sparsity: wz / wn.max(1.0),
            per_site_sparsity: zeros
                .iter()
                .map(|(k, (z, n))| (k.clone(), *z as f64 / (*n).max(1) as f64))
                .collect(),
            relative_increase: ppl.perplexity / dense.perplexity - 1.0,
            perplexity: ppl,
            thresholds: th,
        });
        tracing::trace!(target: sparsity_models::PROGRESS, parent: &bar, progress_inc = 1u64);
    }
    drop(bar);
    Ok(SparseDecodeReport {
        family: model.family().to_string(),
        allocation,
        sites,
        calibration: [calibration.len(), calib_len],
        evaluation: [eval.len(), eval_len],
        dense,
        rows,
    })
}

/// Line plot of held-out perplexity against achieved MLP-input sparsity, one line per report
/// (PNG, written atomically). Feature `plots`.
#[cfg(feature = "plots")]
pub fn plot_sweep(path: &std::path::Path, reports: &[(String, SparseDecodeReport)]) -> Result<()> {
    use plotters::prelude::*;
    let colours = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
    let ratio =
        |r: &SparseDecodeReport, row: &SweepRow| row.perplexity.perplexity / r.dense.perplexity;
    let y_max = reports
        .iter()
        .flat_map(|(_, r)| r.rows.iter().map(move |row| ratio(r, row)))
        .filter(|v| v.is_finite())
        .fold(1.0f64, f64::max)
        * 1.05;
    sparsity_plot::png_atomic(path, (900, 560), |root| {
        let e = |e: &dyn std::fmt::Display| e.to_string();
        root.fill(&WHITE).map_err(|x| e(&x))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "TEAL-style activation sparsity: held-out perplexity / dense",
                ("sans-serif", 20),
            )
            .margin(14)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..1f64, 0.95f64..y_max)
            .map_err(|x| e(&x))?;
        chart
            .configure_mesh()
            .x_desc("achieved sparsity of the MLP inputs (held-out text)")
            .y_desc("perplexity / dense perplexity")
            .draw()
            .map_err(|x| e(&x))?;
        for (i, (name, r)) in reports.iter().enumerate() {
            let c = colours[i % colours.len()];
            let pts: Vec<(f64, f64)> = r
                .rows
                .iter()
                .map(|row| (row.achieved_sparsity, ratio(r, row)))
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                .map_err(|x| e(&x))?
                .label(name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled())))
                .map_err(|x| e(&x))?;
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.9))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(|x| e(&x))?;
        root.present().map_err(|x| e(&x))
    })
    .map_err(|e| ModelError::Invalid(format!("plot {}: {e}", path.display())))
}
