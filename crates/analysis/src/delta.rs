//! Delta-sensitive neurons.
//!
//! Mamba's Δ_{t,d} = softplus(dt_proj(·)) is the per-channel, per-token step of the selective scan
//! (Ā = exp(Δ·A): a large Δ forgets the state and writes the current token, a small Δ carries the state).
//! Definitions, each reported as its own ranking with its key:
//! - `mixer_output_variance` (the reading of the original): per text, the mean over real tokens of
//!   the layer's mixer output (`block_out.{l}` − the block input, \[hidden\]); then the population variance
//!   across texts per hidden unit; top-k by variance;
//! - `legacy_pre_softplus_delta` (what the original code actually hooked on the CPU path: `mixer.dt_proj`'s
//!   output, i.e. Δ **before** softplus, bias included): the same per-text-mean variance over the
//!   intermediate channels; computed exactly from the recorded Δ as softplus⁻¹(Δ) = ln(expm1(Δ));
//! - `delta_variance`: per channel, the variance of Δ over every real token of every text (selective
//!   channels vs nearly time-invariant ones);
//! - `delta_activation_correlation`: per channel, |Pearson correlation| across tokens between Δ and
//!   |mixer_gated|;
//! - `delta_intervention`: per channel, mean over tokens of |g₊ − g₋| / (2ε), where g± is the channel's
//!   gated output (`mixer_gated`) when Δ of the layer is scaled by 1 ± ε (an intervention on `mixer_dt`).
//!   The scan is independent per channel and the gate does not depend on Δ, so scaling every channel at
//!   once gives each channel's own sensitivity.
//!
//! Both families also get `permutation` (the original's transformer variant): per text, the change of each
//! neuron's mean activation (neuron-level site) when the input tokens are reversed, averaged over texts.

use std::collections::BTreeMap;

use burn::tensor::Device;
use ndarray::{Array1, Array2, Array3, ArrayView2, Axis, s};
use serde::{Deserialize, Serialize};

use super::tensors::{site3, tensor3};
use super::{
    AnalysisConfig, AnalysisModel, RankedNeuron, Result, TokenizedTexts, model_err, neuron_site,
    ranked,
};
use sparsity_models::lm::{Batch, CausalLm, ForwardOutput};
use sparsity_models::sites::{Capture, Edit, Intervention};
use sparsity_models::text::PaddedBatch;

const STAGE: &str = "delta_sensitive";

/// One ranking with its definition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeltaRanking {
    /// Definition key (see the module docs).
    pub definition: String,
    /// The site whose channels are ranked.
    pub site: String,
    /// Top-k neurons, descending score.
    pub top: Vec<RankedNeuron>,
    /// Mean score over every neuron (for scale).
    pub mean_score: f64,
    /// Every neuron's score, by neuron index (absent in reports written before it was recorded).
    #[serde(default)]
    pub scores: Vec<f64>,
}

/// The delta-sensitive rankings of one layer, by definition key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeltaSensitivity {
    /// Rankings by definition key.
    pub rankings: BTreeMap<String, DeltaRanking>,
}

/// Per-text mean over tokens, then the population variance (ddof 0) across texts, per channel:
/// `sequences[i]` is text i's real tokens, [len_i, width].
pub fn per_text_mean_variance(sequences: &[ArrayView2<'_, f32>]) -> Option<Array1<f64>> {
    let width = sequences.first()?.ncols();
    let means: Vec<Array1<f64>> = sequences
        .iter()
        .filter(|s| s.nrows() > 0 && s.ncols() == width)
        .map(|s| {
            s.mapv(f64::from)
                .mean_axis(Axis(0))
                .unwrap_or_else(|| Array1::zeros(width))
        })
        .collect();
    if means.is_empty() {
        return None;
    }
    let n = means.len() as f64;
    let mu = means.iter().fold(Array1::<f64>::zeros(width), |a, m| a + m) / n;
    let var = means.iter().fold(Array1::<f64>::zeros(width), |a, m| {
        a + (m - &mu).mapv(|d| d * d)
    }) / n;
    Some(var)
}

/// Per channel |Pearson correlation| between the columns of `x` and `y` ([tokens, width] each);
/// 0 where either column is constant.
pub fn column_abs_correlation(x: ArrayView2<'_, f64>, y: ArrayView2<'_, f64>) -> Array1<f64> {
    let w = x.ncols();
    let mut out = Array1::zeros(w);
    for d in 0..w {
        let (a, b) = (x.column(d), y.column(d));
        let n = a.len() as f64;
        if n < 2.0 {
            continue;
        }
        let (ma, mb) = (a.sum() / n, b.sum() / n);
        let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
        for (&p, &q) in a.iter().zip(b.iter()) {
            sab += (p - ma) * (q - mb);
            saa += (p - ma) * (p - ma);
            sbb += (q - mb) * (q - mb);
        }
        if saa > 0.0 && sbb > 0.0 {
            out[d] = (sab / (saa * sbb).sqrt()).abs();
        }
    }
    out
}

/// The input of block `l` ([batch, seq, hidden]): the embeddings for l = 0, else `block_out.{l−1}`.
pub(crate) fn block_input(
    model: &CausalLm,
    batch: &Batch,
    out: &ForwardOutput,
    l: usize,
) -> sparsity_models::Result<Array3<f32>> {
    if l > 0 {
        return site3(out, &format!("block_out.{}", l - 1));
    }
    let _ = out;
    tensor3(&model.embed(batch))
}

fn real_rows(a: &Array3<f32>, pb: &PaddedBatch) -> Vec<Array2<f32>> {
    pb.lengths
        .iter()
        .enumerate()
        .map(|(b, &len)| a.slice(s![b, 0..len, ..]).to_owned())
        .collect()
}

fn ranking(definition: &str, site: String, scores: &[f64], k: usize) -> DeltaRanking {
    DeltaRanking {
        definition: definition.to_string(),
        site,
        top: ranked(scores, k),
        mean_score: scores.iter().sum::<f64>() / scores.len().max(1) as f64,
        scores: scores.to_vec(),
    }
}

/// Runs the stage for every analysed layer.
pub fn delta_sensitive(
    m: &AnalysisModel,
    tok: &TokenizedTexts,
    layers: &[usize],
    config: &AnalysisConfig,
    device: &Device,
) -> Result<BTreeMap<usize, DeltaSensitivity>> {
    let model = &m.model;
    let err = |e| model_err(STAGE, &m.name)(e);
    let delta_kind = model.inner().delta_site_kind();
    let k = config.top_k;
    let batches = tok.batches(model, config.batch_size).map_err(err)?;
    let mut result = BTreeMap::new();
    let bar = tracing::info_span!(
        "progress",
        progress_total = (layers.len() * batches.len()) as u64,
        progress_message = %format!("{}: delta-sensitive neurons", m.name)
    );
    for &l in layers {
        let ns = neuron_site(model, l);
        let mut capture = Capture::sites([format!("block_out.{l}"), ns.clone()]);
        if l > 0 {
            capture = capture.with(format!("block_out.{}", l - 1));
        }
        // Δ: the input-dependent step size of selective state-space families
        let dt_site = delta_kind.map(|k| format!("{k}.{l}"));
        if let Some(dt) = &dt_site {
            capture = capture.with(dt.clone());
        }
        let mut mixer_out_seqs: Vec<Array2<f32>> = Vec::new();
        let mut raw_delta_seqs: Vec<Array2<f32>> = Vec::new();
        let mut delta_rows: Vec<f64> = Vec::new();
        let mut gated_rows: Vec<f64> = Vec::new();
        let mut sens_sum: Option<Array1<f64>> = None;
        let mut sens_tokens = 0usize;
        let mut perm_sum: Option<Array1<f64>> = None;
        let mut perm_texts = 0usize;
        let eps = config.delta_epsilon;
        for pb in &batches {
            let batch = pb.to_batch(device).map_err(err)?;
            let out = model.forward(&batch, &capture, None).map_err(err)?;
            let bo = site3(&out, &format!("block_out.{l}")).map_err(err)?;
            let bin = block_input(model, &batch, &out, l).map_err(err)?;
            mixer_out_seqs.extend(real_rows(&(bo - bin), pb));
            let act = site3(&out, &ns).map_err(err)?;
            if let Some(dt_site) = &dt_site {
                let dt = site3(&out, dt_site).map_err(err)?;
                for seq in real_rows(&dt, pb) {
                    raw_delta_seqs.push(
                        seq.mapv(|d| ((d as f64).exp_m1().max(f64::MIN_POSITIVE)).ln() as f32),
                    );
                    delta_rows.extend(seq.iter().map(|&v| f64::from(v)));
                }
                for seq in real_rows(&act, pb) {
                    gated_rows.extend(seq.iter().map(|&v| f64::from(v.abs())));
                }
                // interventional: scale Δ by 1 ± ε
                let plus = Intervention::new().edit(dt_site.clone(), Edit::Scale(1.0 + eps));
                let minus = Intervention::new().edit(dt_site.clone(), Edit::Scale(1.0 - eps));
                let cap = Capture::sites([ns.clone()]);
                let gp = site3(&model.forward(&batch, &cap, Some(&plus)).map_err(err)?, &ns)
                    .map_err(err)?;
                let gm = site3(
                    &model.forward(&batch, &cap, Some(&minus)).map_err(err)?,
                    &ns,
                )
                .map_err(err)?;
                for (p, q) in real_rows(&gp, pb).into_iter().zip(real_rows(&gm, pb)) {
                    let diff = (p - q).mapv(|v| f64::from(v.abs()) / (2.0 * f64::from(eps)));
                    sens_tokens += diff.nrows();
                    let s = diff.sum_axis(Axis(0));
                    sens_sum = Some(match sens_sum.take() {
                        Some(acc) => acc + s,
                        None => s,
                    });
                }
            }
            // permutation variant: reverse each text's tokens
            let reversed: Vec<Vec<u32>> = pb
                .lengths
                .iter()
                .enumerate()
                .map(|(b, &len)| {
                    let row = &pb.ids[b * pb.seq..b * pb.seq + len];
                    row.iter().rev().map(|&id| id as u32).collect()
                })
                .collect();
            let rpb = PaddedBatch::new(
                &reversed,
                &sparsity_models::text::BatchOptions {
                    max_length: None,
                    padding_side: sparsity_models::text::PaddingSide::Right,
                    pad_id: model.pad_token_id(),
                },
            )
            .map_err(err)?;
            let rbatch = rpb.to_batch(device).map_err(err)?;
            let ract = site3(
                &model
                    .forward(&rbatch, &Capture::sites([ns.clone()]), None)
                    .map_err(err)?,
                &ns,
            )
            .map_err(err)?;
            for (a, r) in real_rows(&act, pb).into_iter().zip(real_rows(&ract, &rpb)) {
                let (Some(ma), Some(mr)) = (a.mean_axis(Axis(0)), r.mean_axis(Axis(0))) else {
                    continue;
                };
                let d = (ma - mr).mapv(|v| f64::from(v.abs()));
                perm_texts += 1;
                perm_sum = Some(match perm_sum.take() {
                    Some(acc) => acc + d,
                    None => d,
                });
            }
            tracing::trace!(target: sparsity_models::PROGRESS, parent: &bar, progress_inc = 1u64);
        }
        let mut rankings = BTreeMap::new();
        let views: Vec<_> = mixer_out_seqs.iter().map(|a| a.view()).collect();
        if let Some(v) = per_text_mean_variance(&views) {
            let key = "mixer_output_variance";
            rankings.insert(
                key.to_string(),
                ranking(key, format!("mixer_out.{l}"), v.to_vec().as_slice(), k),
            );
        }
        if let Some(dt_site) = &dt_site {
            let views: Vec<_> = raw_delta_seqs.iter().map(|a| a.view()).collect();
            if let Some(v) = per_text_mean_variance(&views) {
                let key = "legacy_pre_softplus_delta";
                rankings.insert(
                    key.to_string(),
                    ranking(key, format!("dt_proj.{l}"), v.to_vec().as_slice(), k),
                );
            }
            let width = model.site_width(dt_site).map_err(err)?;
            let rows = delta_rows.len() / width.max(1);
            let dmat = Array2::from_shape_vec((rows, width), delta_rows).map_err(|e| {
                model_err(STAGE, &m.name)(sparsity_models::error::ModelError::Invalid(
                    e.to_string(),
                ))
            })?;
            let gmat = Array2::from_shape_vec((rows, width), gated_rows).map_err(|e| {
                model_err(STAGE, &m.name)(sparsity_models::error::ModelError::Invalid(
                    e.to_string(),
                ))
            })?;
            let var = dmat.var_axis(Axis(0), 0.0);
            let key = "delta_variance";
            rankings.insert(
                key.to_string(),
                ranking(key, dt_site.clone(), var.to_vec().as_slice(), k),
            );
            let corr = column_abs_correlation(dmat.view(), gmat.view());
            let key = "delta_activation_correlation";
            rankings.insert(
                key.to_string(),
                ranking(key, dt_site.clone(), corr.to_vec().as_slice(), k),
            );
            if let Some(sum) = sens_sum {
                let sens = sum / sens_tokens.max(1) as f64;
                let key = "delta_intervention";
                rankings.insert(
                    key.to_string(),
                    ranking(key, ns.clone(), sens.to_vec().as_slice(), k),
                );
            }
        }
        if let Some(sum) = perm_sum {
            let v = sum / perm_texts.max(1) as f64;
            let key = "permutation";
            rankings.insert(
                key.to_string(),
                ranking(key, ns.clone(), v.to_vec().as_slice(), k),
            );
        }
        result.insert(l, DeltaSensitivity { rankings });
    }
    drop(bar);
    Ok(result)
}
