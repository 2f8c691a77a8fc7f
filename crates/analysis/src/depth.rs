//! Which model's neurons are sparser: the neuron-level sites (`mlp_act` / `mixer_gated`) of every
//! layer, compared between models at matched relative depth, with paired bootstrap confidence
//! intervals over texts.
//!
//! Layer `l` of a model with `L` layers sits at relative depth `(l + ½) / L`. Each layer of the
//! shallower model is matched with the layer of the other model whose relative depth is nearest
//! (the lower layer on a tie).
//!
//! Measures (every one scale-free, every one "higher = sparser"):
//! - `hoyer`, `gini`, `entropy` (1 − normalised Shannon entropy): of the per-neuron variances of the
//!   per-text means (the original study's aggregation, as in the per-layer tables);
//! - `near_zero`: fraction of activations with `|a| ≤ 0.1 · s_j`, `s_j` the neuron's mean |a|;
//! - `exact_zero`: fraction of activations exactly 0 (ReLU-style sparsity);
//! - `teal_energy_kept_50`: the share of the layer's activation energy `Σ a²` in the activations a
//!   TEAL threshold calibrated at 50 % sparsity keeps (`|a| > τ₅₀`, one τ per layer): 0.5 for
//!   magnitudes that are all equal, near 1 when a few activations carry the energy. The calibrated
//!   sparsity itself equals its target by construction, so it cannot compare models.
//! - `traditional`: fraction of neurons whose variance lies below the family's absolute threshold.
//!   It is not scale-free: where the two models use different thresholds it is reported as not
//!   comparable, with no interval and no verdict.
//!
//! The per-neuron scales `s_j` and the threshold `τ₅₀` come from a first pass over all texts and
//! stay fixed in the bootstrap (plug-in values); the per-text quantities of the second pass are
//! resampled. Both models are resampled with the same text indices (the texts are shared, so the
//! design is paired). Intervals are percentile intervals (linear interpolation, as numpy's
//! `quantile`), one per measure and layer pair; they are not simultaneous over measures.

use std::collections::BTreeMap;

use burn::tensor::Device;
use ndarray::{Array1, Array2, Axis};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use sparsity_metrics::{Aggregation, EntropyMode, NeuronStats, NeuronStatsParams};
use sparsity_models::sites::Capture;

use super::tensors::site3;
use super::{
    AnalysisConfig, AnalysisError, AnalysisModel, Result, TokenizedTexts, metrics_err, model_err,
    neuron_site,
};

const STAGE: &str = "neuron_texts";

/// ε of the near-zero fraction (relative to each neuron's mean |a|), as the per-layer reports.
pub const NEAR_ZERO_EPSILON: f64 = 0.1;

/// The measures, in the order of [`Measures`]; every one is "higher = sparser".
pub const MEASURES: [&str; 7] = [
    "hoyer",
    "gini",
    "entropy",
    "near_zero",
    "exact_zero",
    "teal_energy_kept_50",
    "traditional",
];

/// One line per measure, for the report.
pub fn measure_description(key: &str) -> &'static str {
    match key {
        "hoyer" => "Hoyer sparsity of the per-neuron variances (per-text means)",
        "gini" => "Gini coefficient of the per-neuron variances",
        "entropy" => "1 − normalised Shannon entropy of the per-neuron variances",
        "near_zero" => "fraction of activations with |a| ≤ 0.1 × the neuron's mean |a|",
        "exact_zero" => "fraction of activations exactly 0",
        "teal_energy_kept_50" => {
            "share of Σa² in the activations a TEAL threshold at 50 % sparsity keeps"
        }
        "traditional" => "fraction of neurons with variance below the family's absolute threshold",
        _ => "",
    }
}

/// Per-text statistics of one layer's neuron site (second pass).
#[derive(Debug, Clone)]
pub struct LayerTextStats {
    /// Site name.
    pub site: String,
    /// `[texts, width]`: each text's mean activation per neuron over its real tokens.
    pub means: Array2<f64>,
    /// Activations (tokens × width) per text.
    pub entries: Vec<u64>,
    /// Activations with `|a| ≤ ε s_j` per text.
    pub near_zero: Vec<u64>,
    /// Activations exactly 0 per text.
    pub exact_zero: Vec<u64>,
    /// `Σ a²` over activations with `|a| > τ₅₀`, per text.
    pub energy_kept: Vec<f64>,
    /// `Σ a²` per text.
    pub energy: Vec<f64>,
    /// τ₅₀ (from the first pass).
    pub tau50: f64,
}

/// Per-text statistics of every layer of one model.
#[derive(Debug, Clone)]
pub struct NeuronTextStats {
    /// Index of each row's text in the input text list (texts with fewer than 2 tokens are
    /// dropped by tokenisation).
    pub texts: Vec<usize>,
    /// Per layer.
    pub layers: Vec<LayerTextStats>,
    /// The traditional threshold of the model's family.
    pub threshold: f64,
}

/// A callback on one text's real-token block `[len, width]` of one site: (site index, text row,
/// block).
type TextVisitor<'a> = dyn FnMut(usize, usize, ndarray::ArrayView2<'_, f32>) -> Result<()> + 'a;

/// Collects [`NeuronTextStats`]: two passes over the texts through every layer's neuron site.
pub fn collect_text_stats(
    m: &AnalysisModel,
    tok: &TokenizedTexts,
    config: &AnalysisConfig,
    threshold: f64,
    device: &Device,
) -> Result<NeuronTextStats> {
    let model = &m.model;
    let sites: Vec<String> = (0..model.num_layers())
        .map(|l| neuron_site(model, l))
        .collect();
    let capture = Capture::sites(sites.iter().cloned());
    let batches = tok
        .batches(model, config.batch_size)
        .map_err(model_err(STAGE, &m.name))?;
    // visits every real-token block [len, width] of every site, text by text
    let visit = |f: &mut TextVisitor<'_>| {
        let mut text = 0usize;
        for pb in &batches {
            let batch = pb.to_batch(device).map_err(model_err(STAGE, &m.name))?;
            let out = model
                .forward(&batch, &capture, None)
                .map_err(model_err(STAGE, &m.name))?;
            for (si, name) in sites.iter().enumerate() {
                let a = site3(&out, name).map_err(model_err(STAGE, &m.name))?;
                for (b, &len) in pb.lengths.iter().enumerate() {
                    let seq = a.index_axis(Axis(0), b);
                    f(si, text + b, seq.slice(ndarray::s![0..len, ..]))?;
                }
            }
            text += pb.lengths.len();
        }
        Ok(())
    };
    let _span = tracing::info_span!("neuron_texts", model = %m.name).entered();
    // pass 1: scales and the TEAL threshold
    let mut first: Vec<NeuronStats> = Vec::with_capacity(sites.len());
    for s in &sites {
        let width = model.site_width(s).map_err(model_err(STAGE, &m.name))?;
        first.push(
            NeuronStatsParams::new(width)
                .aggregation(Aggregation::PerToken)
                .histogram(true)
                .build()
                .map_err(metrics_err(STAGE, &m.name))?,
        );
    }
    visit(&mut |si, _, seq| {
        first[si]
            .update(seq)
            .map_err(metrics_err(STAGE, &m.name))
            .map(|_| ())
    })?;
    let n = tok.sequences.len();
    let mut layers = Vec::with_capacity(sites.len());
    let mut limits = Vec::with_capacity(sites.len());
    for (s, st) in sites.iter().zip(&first) {
        let scales = st.mean_abs().map_err(metrics_err(STAGE, &m.name))?;
        let tau50 = st
            .histogram()
            .ok_or_else(|| AnalysisError::Invalid(format!("{s}: no activation histogram")))?
            .calibrate(0.5)
            .map_err(metrics_err(STAGE, &m.name))?
            .threshold;
        limits.push(scales.mapv(|x| NEAR_ZERO_EPSILON * x));
        layers.push(LayerTextStats {
            site: s.clone(),
            means: Array2::zeros((n, st.neurons())),
            entries: vec![0; n],
            near_zero: vec![0; n],
            exact_zero: vec![0; n],
            energy_kept: vec![0.0; n],
            energy: vec![0.0; n],
            tau50,
        });
    }
    drop(first);
    // pass 2: per-text statistics
    visit(&mut |si, t, seq| {
        let ls = &mut layers[si];
        let lim = &limits[si];
        let (len, w) = seq.dim();
        let mut row = ls.means.index_axis_mut(Axis(0), t);
        let (mut nz, mut ez, mut ek, mut e) = (0u64, 0u64, 0.0f64, 0.0f64);
        for tok_row in seq.outer_iter() {
            for (j, &a) in tok_row.iter().enumerate() {
                let a = a as f64;
                row[j] += a;
                let mag = a.abs();
                nz += u64::from(mag <= lim[j]);
                ez += u64::from(a == 0.0);
                e += a * a;
                if mag > ls.tau50 {
                    ek += a * a;
                }
            }
        }
        row.mapv_inplace(|x| x / len as f64);
        ls.entries[t] = (len * w) as u64;
        ls.near_zero[t] = nz;
        ls.exact_zero[t] = ez;
        ls.energy_kept[t] = ek;
        ls.energy[t] = e;
        Ok(())
    })?;
    Ok(NeuronTextStats {
        texts: tok.indices.clone(),
        layers,
        threshold,
    })
}

/// The seven measures of one layer, in the order of [`MEASURES`]; `None` where undefined (e.g. an
/// all-zero variance vector has no Hoyer sparsity).
pub type Measures = [Option<f64>; 7];

/// The measures of `ls` over the texts `rows` (row indices, repeats allowed: a bootstrap
/// resample), with the traditional threshold `threshold`.
pub fn layer_measures(ls: &LayerTextStats, rows: &[usize], threshold: f64) -> Measures {
    let mut out: Measures = [None; 7];
    if rows.is_empty() {
        return out;
    }
    let w = ls.means.ncols();
    let k = rows.len() as f64;
    let mut mean = Array1::<f64>::zeros(w);
    for &r in rows {
        mean += &ls.means.row(r);
    }
    mean /= k;
    let mut var = Array1::<f64>::zeros(w);
    for &r in rows {
        for (v, (&x, &mu)) in var.iter_mut().zip(ls.means.row(r).iter().zip(mean.iter())) {
            *v += (x - mu) * (x - mu);
        }
    }
    var /= k;
    out[0] = sparsity_metrics::hoyer_sparsity(var.view()).ok();
    out[1] = sparsity_metrics::gini_sparsity(var.view())
        .ok()
        .map(|g| g.sparsity_from_gini);
    out[2] = sparsity_metrics::entropy_sparsity(var.view(), EntropyMode::Shannon)
        .ok()
        .map(|e| e.sparsity_from_entropy);
    let sum = |v: &[u64]| rows.iter().map(|&r| v[r]).sum::<u64>() as f64;
    let entries = sum(&ls.entries);
    if entries > 0.0 {
        out[3] = Some(sum(&ls.near_zero) / entries);
        out[4] = Some(sum(&ls.exact_zero) / entries);
    }
    let energy: f64 = rows.iter().map(|&r| ls.energy[r]).sum();
    if energy > 0.0 {
        out[5] = Some(rows.iter().map(|&r| ls.energy_kept[r]).sum::<f64>() / energy);
    }
    out[6] = (w > 0).then(|| var.iter().filter(|&&v| v < threshold).count() as f64 / w as f64);
    out
}

/// `resamples` bootstrap resamples of `n` rows (each `n` draws with replacement), from a ChaCha8
/// stream seeded with `seed`.
pub fn resample_rows(n: usize, resamples: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..resamples)
        .map(|_| (0..n).map(|_| rng.random_range(0..n.max(1))).collect())
        .collect()
}

/// The `q` quantile of `sorted` (ascending) with linear interpolation (numpy's default).
pub fn quantile_sorted(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let h = (sorted.len() - 1) as f64 * q.clamp(0.0, 1.0);
    let lo = h.floor() as usize;
    let hi = h.ceil() as usize;
    Some(sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo]))
}

/// A point estimate with its percentile bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// The value on all texts.
    pub value: f64,
    /// Lower end of the interval.
    pub lo: f64,
    /// Upper end of the interval.
    pub hi: f64,
    /// Resamples on which the measure was undefined (left out of the interval).
    pub undefined_resamples: usize,
}

/// The percentile interval at `confidence` of the bootstrap values `boot` (None values are counted
/// as undefined), around `value`.
pub fn percentile_interval(value: f64, boot: &[Option<f64>], confidence: f64) -> Option<Estimate> {
    let mut v: Vec<f64> = boot.iter().flatten().copied().collect();
    let undefined = boot.len() - v.len();
    v.sort_by(f64::total_cmp);
    let a = (1.0 - confidence) / 2.0;
    Some(Estimate {
        value,
        lo: quantile_sorted(&v, a)?,
        hi: quantile_sorted(&v, 1.0 - a)?,
        undefined_resamples: undefined,
    })
}

/// One measure of one layer of one model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerEstimate {
    /// Layer.
    pub layer: usize,
    /// Relative depth `(l + ½) / L`.
    pub depth: f64,
    /// Per measure (absent where undefined on all texts).
    pub values: BTreeMap<String, Estimate>,
}

/// Every layer of one model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DepthCurves {
    /// Model label.
    pub model: String,
    /// Its neuron site kind (`mlp_act`, `mixer_gated`, …).
    pub site: String,
    /// The traditional threshold the model's family uses.
    pub threshold: f64,
    /// Per layer.
    pub layers: Vec<LayerEstimate>,
}

/// The difference `a − b` of one measure at one matched layer pair.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PairDifference {
    /// Model a's value.
    pub a: f64,
    /// Model b's value.
    pub b: f64,
    /// `a − b` with its paired bootstrap interval.
    pub difference: Estimate,
    /// The sparser model where the interval excludes 0, else `None`.
    pub sparser: Option<String>,
}

/// One matched layer pair.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerPair {
    /// Layer of model a.
    pub layer_a: usize,
    /// Layer of model b.
    pub layer_b: usize,
    /// Their relative depths.
    pub depth_a: f64,
    /// Relative depth of `layer_b`.
    pub depth_b: f64,
    /// Per comparable measure.
    pub differences: BTreeMap<String, PairDifference>,
}

/// One measure over all matched layer pairs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MeasureSummary {
    /// Measure key.
    pub measure: String,
    /// `false` where the models compute it at different absolute thresholds.
    pub comparable: bool,
    /// Mean of model a's values over the matched pairs.
    pub mean_a: f64,
    /// Mean of model b's values.
    pub mean_b: f64,
    /// Mean difference `a − b` with its paired bootstrap interval (absent when not comparable).
    pub difference: Option<Estimate>,
    /// Matched pairs where a is sparser (interval above 0).
    pub pairs_a_sparser: usize,
    /// Matched pairs where b is sparser.
    pub pairs_b_sparser: usize,
    /// Matched pairs with no verdict.
    pub pairs_undecided: usize,
    /// The sparser model: only where the mean difference's interval excludes 0 and every matched
    /// pair's difference has the same sign as the mean.
    pub sparser: Option<String>,
    /// The answer as a sentence.
    pub sentence: String,
}

/// Two models compared at matched depth.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelPairComparison {
    /// Model a.
    pub a: String,
    /// Model b.
    pub b: String,
    /// Matched layer pairs, by depth.
    pub pairs: Vec<LayerPair>,
    /// Per measure, in [`MEASURES`] order.
    pub summary: Vec<MeasureSummary>,
}

/// The neuron-level comparison of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DepthComparison {
    /// Interval level (0.95).
    pub confidence: f64,
    /// Bootstrap resamples.
    pub resamples: usize,
    /// Seed of the resamples.
    pub seed: u64,
    /// Texts every model analysed (the resampling units).
    pub texts: usize,
    /// Every model's curves over depth (on the shared texts).
    pub models: Vec<DepthCurves>,
    /// Every two models.
    pub comparisons: Vec<ModelPairComparison>,
}

/// Relative depth of layer `l` of `n`.
pub fn relative_depth(l: usize, n: usize) -> f64 {
    (l as f64 + 0.5) / n.max(1) as f64
}

/// Layer pairs `(la, lb)` matched by relative depth: every layer of the shallower model (a on a
/// tie) with the nearest layer of the other (the lower one on a tie).
pub fn match_layers(na: usize, nb: usize) -> Vec<(usize, usize)> {
    let nearest = |d: f64, n: usize| {
        (0..n)
            .min_by(|&x, &y| {
                (relative_depth(x, n) - d)
                    .abs()
                    .total_cmp(&(relative_depth(y, n) - d).abs())
                    .then(x.cmp(&y))
            })
            .unwrap_or(0)
    };
    if na <= nb {
        (0..na)
            .map(|l| (l, nearest(relative_depth(l, na), nb)))
            .collect()
    } else {
        (0..nb)
            .map(|l| (nearest(relative_depth(l, nb), na), l))
            .collect()
    }
}

/// One model's input to [`compare_depth`].
pub struct ModelTexts<'a> {
    /// Model label.
    pub model: &'a str,
    /// Its neuron site kind.
    pub site: &'a str,
    /// Its per-text statistics.
    pub stats: &'a NeuronTextStats,
}

fn fmt_num(v: f64) -> String {
    if v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e4) {
        format!("{v:.2e}")
    } else {
        format!("{v:.4}")
    }
}

/// Compares every two models at matched depth with a paired bootstrap over the texts they share.
pub fn compare_depth(
    models: &[ModelTexts<'_>],
    resamples: usize,
    confidence: f64,
    seed: u64,
) -> Result<DepthComparison> {
    if resamples == 0 || !(confidence > 0.0 && confidence < 1.0) {
        return Err(AnalysisError::Invalid(format!(
            "bootstrap: {resamples} resamples at confidence {confidence}"
        )));
    }
    // the texts every model kept, and each model's row of each
    let mut shared: Vec<usize> = models.first().map_or(Vec::new(), |m| m.stats.texts.clone());
    for m in models.iter().skip(1) {
        shared.retain(|t| m.stats.texts.contains(t));
    }
    let rows_of = |m: &ModelTexts<'_>| -> Vec<usize> {
        shared
            .iter()
            .filter_map(|t| m.stats.texts.iter().position(|x| x == t))
            .collect()
    };
    let model_rows: Vec<Vec<usize>> = models.iter().map(rows_of).collect();
    let boot = resample_rows(shared.len(), resamples, seed);
    let _span = tracing::info_span!("bootstrap", resamples, texts = shared.len()).entered();
    // values[model][layer] = (point, per-resample)
    let mut values: Vec<Vec<(Measures, Vec<Measures>)>> = Vec::with_capacity(models.len());
    for (m, rows) in models.iter().zip(&model_rows) {
        let mut per_layer = Vec::with_capacity(m.stats.layers.len());
        for ls in &m.stats.layers {
            let point = layer_measures(ls, rows, m.stats.threshold);
            let mut b = Vec::with_capacity(resamples);
            let mut mapped = vec![0usize; rows.len()];
            for sample in &boot {
                for (dst, &i) in mapped.iter_mut().zip(sample) {
                    *dst = rows[i];
                }
                b.push(layer_measures(ls, &mapped, m.stats.threshold));
            }
            per_layer.push((point, b));
        }
        values.push(per_layer);
    }
    let curves: Vec<DepthCurves> = models
        .iter()
        .zip(&values)
        .map(|(m, per_layer)| {
            let n = per_layer.len();
            DepthCurves {
                model: m.model.to_string(),
                site: m.site.to_string(),
                threshold: m.stats.threshold,
                layers: per_layer
                    .iter()
                    .enumerate()
                    .map(|(l, (point, b))| LayerEstimate {
                        layer: l,
                        depth: relative_depth(l, n),
                        values: MEASURES
                            .iter()
                            .enumerate()
                            .filter_map(|(i, key)| {
                                let v = point[i]?;
                                let bs: Vec<Option<f64>> = b.iter().map(|x| x[i]).collect();
                                Some((key.to_string(), percentile_interval(v, &bs, confidence)?))
                            })
                            .collect(),
                    })
                    .collect(),
            }
        })
        .collect();
    let mut comparisons = Vec::new();
    for ia in 0..models.len() {
        for ib in ia + 1..models.len() {
            comparisons.push(compare_two(
                models, &values, ia, ib, resamples, confidence, &shared,
            ));
        }
    }
    Ok(DepthComparison {
        confidence,
        resamples,
        seed,
        texts: shared.len(),
        models: curves,
        comparisons,
    })
}

fn compare_two(
    models: &[ModelTexts<'_>],
    values: &[Vec<(Measures, Vec<Measures>)>],
    ia: usize,
    ib: usize,
    resamples: usize,
    confidence: f64,
    shared: &[usize],
) -> ModelPairComparison {
    let (na, nb) = (models[ia].model, models[ib].model);
    let matched = match_layers(values[ia].len(), values[ib].len());
    let thresholds_equal = models[ia].stats.threshold == models[ib].stats.threshold;
    let pct = confidence * 100.0;
    let mut pairs = Vec::new();
    for &(la, lb) in &matched {
        let (pa, ba) = &values[ia][la];
        let (pb, bb) = &values[ib][lb];
        let mut differences = BTreeMap::new();
        for (i, key) in MEASURES.iter().enumerate() {
            if *key == "traditional" && !thresholds_equal {
                continue;
            }
            let (Some(a), Some(b)) = (pa[i], pb[i]) else {
                continue;
            };
            let d: Vec<Option<f64>> = ba
                .iter()
                .zip(bb)
                .map(|(x, y)| Some(x[i]? - y[i]?))
                .collect();
            let Some(difference) = percentile_interval(a - b, &d, confidence) else {
                continue;
            };
            let sparser = if difference.lo > 0.0 {
                Some(na.to_string())
            } else if difference.hi < 0.0 {
                Some(nb.to_string())
            } else {
                None
            };
            differences.insert(
                key.to_string(),
                PairDifference {
                    a,
                    b,
                    difference,
                    sparser,
                },
            );
        }
        pairs.push(LayerPair {
            layer_a: la,
            layer_b: lb,
            depth_a: relative_depth(la, values[ia].len()),
            depth_b: relative_depth(lb, values[ib].len()),
            differences,
        });
    }
    let mut summary = Vec::new();
    for (i, key) in MEASURES.iter().enumerate() {
        let comparable = *key != "traditional" || thresholds_equal;
        let pts: Vec<(f64, f64)> = matched
            .iter()
            .filter_map(|&(la, lb)| Some((values[ia][la].0[i]?, values[ib][lb].0[i]?)))
            .collect();
        if pts.is_empty() {
            continue;
        }
        let k = pts.len() as f64;
        let mean_a = pts.iter().map(|p| p.0).sum::<f64>() / k;
        let mean_b = pts.iter().map(|p| p.1).sum::<f64>() / k;
        let name = measure_name(key);
        if !comparable {
            summary.push(MeasureSummary {
                measure: key.to_string(),
                comparable,
                mean_a,
                mean_b,
                difference: None,
                pairs_a_sparser: 0,
                pairs_b_sparser: 0,
                pairs_undecided: 0,
                sparser: None,
                sentence: format!(
                    "The {name} is not comparable between {na} and {nb}: it counts neuron variances \
                     below {} for {na} and below {} for {nb} (absolute thresholds of different \
                     scales), so no direction is stated.",
                    fmt_num(models[ia].stats.threshold),
                    fmt_num(models[ib].stats.threshold)
                ),
            });
            continue;
        }
        // the mean difference over matched pairs, per resample (a pair undefined on a resample
        // makes that resample undefined)
        let boot: Vec<Option<f64>> = (0..resamples)
            .map(|r| {
                let mut s = 0.0;
                for &(la, lb) in &matched {
                    s += values[ia][la].1[r][i]? - values[ib][lb].1[r][i]?;
                }
                Some(s / matched.len() as f64)
            })
            .collect();
        let all_defined = pts.len() == matched.len();
        let difference = if all_defined {
            percentile_interval(mean_a - mean_b, &boot, confidence)
        } else {
            None
        };
        let (mut pa, mut pb, mut pu) = (0, 0, 0);
        for p in &pairs {
            match p.differences.get(*key).and_then(|d| d.sparser.as_deref()) {
                Some(s) if s == na => pa += 1,
                Some(_) => pb += 1,
                None => pu += 1,
            }
        }
        let signs: Vec<f64> = pts.iter().map(|(a, b)| a - b).collect();
        let sparser = difference.as_ref().and_then(|d| {
            if d.lo > 0.0 && signs.iter().all(|&x| x > 0.0) {
                Some(na.to_string())
            } else if d.hi < 0.0 && signs.iter().all(|&x| x < 0.0) {
                Some(nb.to_string())
            } else {
                None
            }
        });
        let ci = difference.map_or(String::from("no interval: undefined at some layer"), |d| {
            format!("{pct:.0} % CI [{}, {}]", fmt_num(d.lo), fmt_num(d.hi))
        });
        let n_pairs = matched.len();
        let sentence = match (&sparser, difference) {
            (Some(s), Some(d)) => {
                let (hi_name, lo_name, hi_v, lo_v, diff, lo, hi) = if *s == na {
                    (na, nb, mean_a, mean_b, d.value, d.lo, d.hi)
                } else {
                    (nb, na, mean_b, mean_a, -d.value, -d.hi, -d.lo)
                };
                format!(
                    "At matched depth, {hi_name}'s neurons are sparser than {lo_name}'s by {name}: \
                     {} vs {} (mean over {n_pairs} matched layer pairs), difference {}, {pct:.0} % CI \
                     [{}, {}] (paired bootstrap over {} texts, {resamples} resamples); sparser at \
                     every matched pair, with an interval excluding 0 at {} of them.",
                    fmt_num(hi_v),
                    fmt_num(lo_v),
                    fmt_num(diff),
                    fmt_num(lo),
                    fmt_num(hi),
                    shared.len(),
                    if *s == na { pa } else { pb }
                )
            }
            (_, Some(d)) if d.lo == 0.0 && d.hi == 0.0 && signs.iter().all(|&x| x == 0.0) => {
                format!(
                    "By {name} {na} and {nb} are identical: {} for both at every one of the \
                     {n_pairs} matched layer pairs, on every resample.",
                    fmt_num(mean_a)
                )
            }
            _ if signs.iter().any(|&x| x > 0.0) && signs.iter().any(|&x| x < 0.0) => format!(
                "By {name} the direction depends on depth: {na} is sparser at {} of {n_pairs} \
                 matched layer pairs and {nb} at {} (interval excluding 0 at {pa} and {pb}); mean \
                 {} vs {}, difference {}, {ci}. No overall direction is stated.",
                signs.iter().filter(|&&x| x > 0.0).count(),
                signs.iter().filter(|&&x| x < 0.0).count(),
                fmt_num(mean_a),
                fmt_num(mean_b),
                fmt_num(mean_a - mean_b)
            ),
            _ => format!(
                "By {name} no difference between {na} and {nb} is detectable with these texts: \
                 {} vs {} (mean over {n_pairs} matched layer pairs), difference {}, {ci}.",
                fmt_num(mean_a),
                fmt_num(mean_b),
                fmt_num(mean_a - mean_b)
            ),
        };
        summary.push(MeasureSummary {
            measure: key.to_string(),
            comparable,
            mean_a,
            mean_b,
            difference,
            pairs_a_sparser: pa,
            pairs_b_sparser: pb,
            pairs_undecided: pu,
            sparser,
            sentence,
        });
    }
    ModelPairComparison {
        a: na.to_string(),
        b: nb.to_string(),
        pairs,
        summary,
    }
}

/// The measure's name in sentences.
pub fn measure_name(key: &str) -> &'static str {
    match key {
        "hoyer" => "Hoyer",
        "gini" => "Gini",
        "entropy" => "entropy sparsity",
        "near_zero" => "near-zero fraction",
        "exact_zero" => "exact-zero fraction",
        "teal_energy_kept_50" => "TEAL energy kept at 50 %",
        "traditional" => "traditional sparsity",
        _ => "?",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_distr::{Distribution, StandardNormal};

    /// Per-text statistics computed from explicit activation blocks (`texts[i]`: tokens × width),
    /// with the first pass's scales and τ₅₀ given.
    fn stats_from_rows(texts: &[Array2<f64>], limits: &[f64], tau50: f64) -> LayerTextStats {
        let w = texts[0].ncols();
        let mut means = Array2::zeros((texts.len(), w));
        let mut st = LayerTextStats {
            site: "mlp_act.0".into(),
            means: Array2::zeros((0, w)),
            entries: vec![],
            near_zero: vec![],
            exact_zero: vec![],
            energy_kept: vec![],
            energy: vec![],
            tau50,
        };
        for (i, t) in texts.iter().enumerate() {
            means.row_mut(i).assign(&t.mean_axis(Axis(0)).unwrap());
            st.entries.push(t.len() as u64);
            st.near_zero.push(
                t.indexed_iter()
                    .filter(|((_, j), a)| a.abs() <= limits[*j])
                    .count() as u64,
            );
            st.exact_zero
                .push(t.iter().filter(|&&a| a == 0.0).count() as u64);
            st.energy.push(t.iter().map(|a| a * a).sum());
            st.energy_kept
                .push(t.iter().filter(|a| a.abs() > tau50).map(|a| a * a).sum());
        }
        st.means = means;
        st
    }

    fn random_texts(n: usize, w: usize, seed: u64, scale: &[f64]) -> Vec<Array2<f64>> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|i| {
                Array2::from_shape_fn((3 + i % 4, w), |(_, j)| {
                    let z: f64 = StandardNormal.sample(&mut rng);
                    // a ReLU-like site: some exact zeros
                    (z * scale[j]).max(-0.2)
                })
                .mapv(|a| if a < -0.1 { 0.0 } else { a })
            })
            .collect()
    }

    #[test]
    fn quantiles_match_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0];
        // numpy.quantile([1, 2, 3, 4], [0, 0.25, 0.5, 0.975, 1])
        let want = [1.0, 1.75, 2.5, 3.925, 4.0];
        for (q, w) in [0.0, 0.25, 0.5, 0.975, 1.0].iter().zip(want) {
            assert!((quantile_sorted(&v, *q).unwrap() - w).abs() < 1e-12);
        }
        assert_eq!(quantile_sorted(&[], 0.5), None);
    }

    #[test]
    fn layers_are_matched_by_relative_depth() {
        assert_eq!(match_layers(3, 3), vec![(0, 0), (1, 1), (2, 2)]);
        // 2 layers at depths 0.25, 0.75; 4 at 0.125 … 0.875: ties go to the lower layer
        assert_eq!(match_layers(2, 4), vec![(0, 0), (1, 2)]);
        assert_eq!(match_layers(4, 2), vec![(0, 0), (2, 1)]);
        assert_eq!(match_layers(1, 5), vec![(0, 2)]);
        assert!((relative_depth(2, 4) - 0.625).abs() < 1e-15);
    }

    /// The fast path (sufficient statistics per text, rows resampled by index) against a
    /// brute-force bootstrap: the same resamples built as explicit data sets, every measure
    /// recomputed from the raw activations.
    #[test]
    fn bootstrap_equals_a_brute_force_resampling() {
        let w = 6;
        let scale = [1.0, 0.5, 2.0, 0.1, 1.5, 0.8];
        let ta = random_texts(7, w, 1, &scale);
        let tb = random_texts(7, w, 2, &[0.3, 3.0, 0.3, 0.3, 0.2, 0.3]);
        let limits = [0.05, 0.02, 0.1, 0.01, 0.07, 0.04];
        let sa = NeuronTextStats {
            texts: (0..7).collect(),
            layers: vec![stats_from_rows(&ta, &limits, 0.3)],
            threshold: 0.05,
        };
        let sb = NeuronTextStats {
            texts: (0..7).collect(),
            layers: vec![stats_from_rows(&tb, &limits, 0.2)],
            threshold: 0.05,
        };
        let (b, seed) = (1000, 11);
        let models = [
            ModelTexts {
                model: "a",
                site: "mlp_act",
                stats: &sa,
            },
            ModelTexts {
                model: "b",
                site: "mlp_act",
                stats: &sb,
            },
        ];
        let d = compare_depth(&models, b, 0.95, seed).unwrap();
        // brute force
        let brute = |texts: &[Array2<f64>], rows: &[usize], tau: f64| -> Vec<f64> {
            let sel: Vec<&Array2<f64>> = rows.iter().map(|&r| &texts[r]).collect();
            let means = Array2::from_shape_fn((sel.len(), w), |(i, j)| {
                sel[i].column(j).sum() / sel[i].nrows() as f64
            });
            let var = means.var_axis(Axis(0), 0.0);
            let all: Vec<(usize, f64)> = sel
                .iter()
                .flat_map(|t| t.indexed_iter().map(|((_, j), &a)| (j, a)))
                .collect();
            let n = all.len() as f64;
            vec![
                sparsity_metrics::hoyer_sparsity(var.view()).unwrap_or(f64::NAN),
                sparsity_metrics::gini_sparsity(var.view())
                    .map_or(f64::NAN, |g| g.gini_coefficient),
                all.iter().filter(|(j, a)| a.abs() <= limits[*j]).count() as f64 / n,
                all.iter().filter(|(_, a)| *a == 0.0).count() as f64 / n,
                all.iter()
                    .filter(|(_, a)| a.abs() > tau)
                    .map(|(_, a)| a * a)
                    .sum::<f64>()
                    / all.iter().map(|(_, a)| a * a).sum::<f64>(),
            ]
        };
        let keys = [
            "hoyer",
            "gini",
            "near_zero",
            "exact_zero",
            "teal_energy_kept_50",
        ];
        let samples = resample_rows(7, b, seed);
        let all: Vec<usize> = (0..7).collect();
        for (k, key) in keys.iter().enumerate() {
            let per = |texts: &[Array2<f64>], tau: f64| -> Vec<f64> {
                samples.iter().map(|s| brute(texts, s, tau)[k]).collect()
            };
            let (va, vb) = (per(&ta, 0.3), per(&tb, 0.2));
            let interval = |v: &[f64]| {
                let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
                v.sort_by(f64::total_cmp);
                (
                    quantile_sorted(&v, 0.025).unwrap(),
                    quantile_sorted(&v, 0.975).unwrap(),
                )
            };
            let got = d.models[0].layers[0].values[*key];
            let (lo, hi) = interval(&va);
            assert!(
                (got.value - brute(&ta, &all, 0.3)[k]).abs() < 1e-12,
                "{key}"
            );
            assert!(
                (got.lo - lo).abs() < 1e-12 && (got.hi - hi).abs() < 1e-12,
                "{key}"
            );
            let diff: Vec<f64> = va.iter().zip(&vb).map(|(x, y)| x - y).collect();
            let (lo, hi) = interval(&diff);
            let pd = &d.comparisons[0].pairs[0].differences[*key];
            assert!((pd.difference.lo - lo).abs() < 1e-12, "{key}");
            assert!((pd.difference.hi - hi).abs() < 1e-12, "{key}");
        }
        // seeded: the same seed gives the same intervals, another seed others
        let again = compare_depth(&models, b, 0.95, seed).unwrap();
        assert_eq!(
            serde_json::to_string(&again).unwrap(),
            serde_json::to_string(&d).unwrap()
        );
        let other = compare_depth(&models, b, 0.95, seed + 1).unwrap();
        assert_ne!(
            other.models[0].layers[0].values["hoyer"],
            d.models[0].layers[0].values["hoyer"]
        );
    }

    /// Per-text neuron means with per-neuron standard deviations `sd`: the population variances
    /// are `sd²`, so the population Hoyer gap is known.
    fn planted(n: usize, sd: &[f64], seed: u64) -> NeuronTextStats {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let w = sd.len();
        let means = Array2::from_shape_fn((n, w), |(_, j)| {
            let z: f64 = StandardNormal.sample(&mut rng);
            z * sd[j]
        });
        NeuronTextStats {
            texts: (0..n).collect(),
            layers: vec![LayerTextStats {
                site: "mlp_act.0".into(),
                means,
                entries: vec![10; n],
                near_zero: vec![5; n],
                exact_zero: vec![0; n],
                energy_kept: vec![1.0; n],
                energy: vec![2.0; n],
                tau50: 1.0,
            }],
            threshold: 1e-5,
        }
    }

    fn two<'a>(a: &'a NeuronTextStats, b: &'a NeuronTextStats) -> [ModelTexts<'a>; 2] {
        [
            ModelTexts {
                model: "peaked",
                site: "mlp_act",
                stats: a,
            },
            ModelTexts {
                model: "flat",
                site: "mlp_act",
                stats: b,
            },
        ]
    }

    #[test]
    fn a_planted_hoyer_gap_lies_in_the_interval_and_identical_inputs_give_no_verdict() {
        // 4 of 32 neurons carry a large variance in a; every neuron the same in b
        let sd_a: Vec<f64> = (0..32).map(|j| if j < 4 { 3.0 } else { 0.5 }).collect();
        let sd_b = vec![1.0; 32];
        let var = |sd: &[f64]| Array1::from_iter(sd.iter().map(|s| s * s));
        let gap = sparsity_metrics::hoyer_sparsity(var(&sd_a).view()).unwrap()
            - sparsity_metrics::hoyer_sparsity(var(&sd_b).view()).unwrap();
        assert!(gap > 0.3);
        let (a, b) = (planted(2000, &sd_a, 3), planted(2000, &sd_b, 4));
        let d = compare_depth(&two(&a, &b), 1000, 0.95, 0).unwrap();
        let c = &d.comparisons[0];
        let h = c.summary.iter().find(|m| m.measure == "hoyer").unwrap();
        let e = h.difference.unwrap();
        assert!(
            e.lo <= gap && gap <= e.hi,
            "gap {gap} outside [{}, {}]",
            e.lo,
            e.hi
        );
        assert_eq!(h.sparser.as_deref(), Some("peaked"));
        assert!(
            h.sentence
                .starts_with("At matched depth, peaked's neurons are sparser than flat's by Hoyer")
        );
        // identical inputs: every resample's difference is 0, no verdict anywhere
        let d = compare_depth(&two(&a, &a), 1000, 0.95, 0).unwrap();
        for m in &d.comparisons[0].summary {
            let e = m.difference.unwrap();
            assert!(e.lo <= 0.0 && 0.0 <= e.hi, "{}", m.measure);
            assert!(m.sparser.is_none(), "{}", m.measure);
            assert!(m.sentence.contains("are identical"), "{}", m.sentence);
        }
        for p in &d.comparisons[0].pairs {
            assert!(p.differences.values().all(|x| x.sparser.is_none()));
        }
    }

    #[test]
    fn mixed_directions_over_depth_give_no_overall_direction() {
        // layer 0: a peaked; layer 1: b peaked
        let peaked: Vec<f64> = (0..32).map(|j| if j < 4 { 3.0 } else { 0.5 }).collect();
        let flat = vec![1.0; 32];
        let two_layers = |x: &[f64], y: &[f64], seed| {
            let mut s = planted(500, x, seed);
            s.layers.push(planted(500, y, seed + 1).layers.remove(0));
            s
        };
        let a = two_layers(&peaked, &flat, 1);
        let b = two_layers(&flat, &peaked, 3);
        let d = compare_depth(&two(&a, &b), 1000, 0.95, 0).unwrap();
        let h = d.comparisons[0]
            .summary
            .iter()
            .find(|m| m.measure == "hoyer")
            .unwrap();
        assert_eq!((h.pairs_a_sparser, h.pairs_b_sparser), (1, 1));
        assert!(h.sparser.is_none());
        assert!(h.sentence.contains("depends on depth"), "{}", h.sentence);
    }

    #[test]
    fn a_measure_at_different_thresholds_is_not_comparable() {
        let sd = vec![1.0; 8];
        let a = planted(50, &sd, 1);
        let mut b = planted(50, &sd, 2);
        b.threshold = 0.01;
        let d = compare_depth(&two(&a, &b), 1000, 0.95, 0).unwrap();
        let t = d.comparisons[0]
            .summary
            .iter()
            .find(|m| m.measure == "traditional")
            .unwrap();
        assert!(!t.comparable && t.difference.is_none() && t.sparser.is_none());
        assert!(
            !d.comparisons[0].pairs[0]
                .differences
                .contains_key("traditional")
        );
        b.threshold = a.threshold;
        let d = compare_depth(&two(&a, &b), 1000, 0.95, 0).unwrap();
        assert!(
            d.comparisons[0]
                .summary
                .iter()
                .any(|m| m.measure == "traditional" && m.comparable)
        );
    }
}
