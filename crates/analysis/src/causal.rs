//! Causal neurons: single-neuron interventions batched into one forward pass per chunk of candidates.
//!
//! For a prompt of L tokens and candidates c₁…c_m, the prompt is repeated m times and batch element i
//! gets the intervention on neuron c_i only ([`Intervention::per_example`]); its impact is
//! KL(P_clean ‖ P_intervened) of the next-token distribution at the last position (log-softmax, so no
//! underflow; the original used `q.log()`), and the change of the prompt's mean next-token loss.
//! Scores are averaged over the prompts. Candidates are the top neurons by |Σ_t a·∂logit/∂a| (activation ×
//! gradient of the clean top-1 logit at the last position, one backward pass per prompt), or every neuron.
//!
//! Inter-layer impact: ablating layer l's top-k set changes every later `block_out.{m}` by
//! ‖Δh_m‖_F / ‖h_m‖_F (real tokens of the prompts); the rows for the analysed layers form the cross-layer
//! influence matrix (entries m < l are `None`: a causal model cannot change them). Perplexity is measured
//! on every analysed text with and without the top-k ablation.

use std::collections::BTreeMap;

use burn::tensor::Device;
use ndarray::{Array1, Array3, Axis, s};
use serde::{Deserialize, Serialize};

use super::tensors::{kl_from_logp, log_softmax, site3, tensor3};
use super::{
    AnalysisConfig, AnalysisModel, RankedNeuron, Result, TokenizedTexts, model_err, neuron_site,
};
use sparsity_models::error::ModelError;
use sparsity_models::lm::{Batch, CausalLm};
use sparsity_models::sites::{Capture, Channels, Edit, Intervention, MeanSource};

const STAGE: &str = "causal";

/// The intervention applied to a neuron.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CausalMode {
    /// Set to 0.
    Zero,
    /// Set to the neuron's mean over the prompts' real tokens.
    Mean,
    /// Multiply by a factor (the original's default: 0.1).
    Scale(f32),
    /// Add Gaussian noise with σ = the neuron's standard deviation over the prompts, seeded.
    Noise,
}

impl std::str::FromStr for CausalMode {
    type Err = String;
    /// `zero`, `mean`, `noise` or `scale:S` (S finite).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s {
            "zero" => Self::Zero,
            "mean" => Self::Mean,
            "noise" => Self::Noise,
            _ => match s.strip_prefix("scale:").map(str::parse::<f32>) {
                Some(Ok(f)) if f.is_finite() => Self::Scale(f),
                _ => return Err(format!("`{s}`: expected zero, mean, noise or scale:S")),
            },
        })
    }
}

impl std::fmt::Display for CausalMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Zero => f.write_str("zero"),
            Self::Mean => f.write_str("mean"),
            Self::Scale(s) => write!(f, "scale({s})"),
            Self::Noise => f.write_str("noise"),
        }
    }
}

/// Causal impact of one neuron.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NeuronImpact {
    /// Neuron index.
    pub neuron: usize,
    /// Mean KL(clean ‖ intervened) at the last position over the prompts (nats).
    pub kl: f64,
    /// Mean change of the prompts' next-token loss (nats/token).
    pub delta_loss: f64,
    /// The candidate-selection score (|activation × gradient|), when used.
    pub attribution: Option<f64>,
}

/// Causal analysis of one layer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerCausal {
    /// The intervened site.
    pub site: String,
    /// How candidates were chosen (`all`, `activation_x_gradient`).
    pub candidate_selection: String,
    /// Every tested candidate, descending KL.
    pub impacts: Vec<NeuronImpact>,
    /// The top-k by KL.
    pub top: Vec<RankedNeuron>,
    /// Relative change of `block_out.{m}` for every layer m ≥ l when the top-k set is ablated
    /// (index m; `None` for m < l).
    pub inter_layer_impact: Vec<Option<f64>>,
    /// Perplexity of the analysed texts, clean.
    pub perplexity_clean: f64,
    /// Perplexity with the top-k set ablated.
    pub perplexity_ablated: f64,
    /// The top-k set's effect against random sets of k other neurons of the layer (None when
    /// the layer has fewer than 2k neurons).
    pub random_baseline: Option<RandomBaseline>,
}

/// The effect of ablating the top-k set together against the same ablation of random sets of k
/// neurons of the same layer drawn from outside the top-k set (seeded). Effect: mean KL of the
/// next-token distribution at the last position over the prompts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RandomBaseline {
    /// Set size.
    pub k: usize,
    /// The top-k set's effect.
    pub top_effect: f64,
    /// Each random set's effect, in draw order.
    pub random_effects: Vec<f64>,
    /// Their mean.
    pub random_mean: f64,
    /// Their sample standard deviation (ddof 1).
    pub random_sd: f64,
    /// Random sets whose effect is at least the top set's (the top set's rank is this + 1).
    pub draws_at_least_top: usize,
    /// `top_effect / random_mean` (None when the random mean is 0).
    pub multiple_of_random: Option<f64>,
    /// Permutation p-value `(1 + draws_at_least_top) / (1 + draws)`.
    pub p_value: f64,
    /// Holm-adjusted over the analysed layers of the model.
    pub p_holm: f64,
    /// `p_holm < 0.05`.
    pub significant: bool,
}

/// `draws` seeded sets of `k` distinct neurons from `0..width` outside `exclude`, each sorted
/// (`rand::seq::index::sample` on a ChaCha8 stream, the workspace's seeded generator: the same
/// seed gives the same sets).
pub fn random_sets(
    width: usize,
    exclude: &[usize],
    k: usize,
    draws: usize,
    seed: u64,
) -> Vec<Vec<usize>> {
    use rand::SeedableRng;
    let pool: Vec<usize> = (0..width).filter(|n| !exclude.contains(n)).collect();
    let k = k.min(pool.len());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..draws)
        .map(|_| {
            let mut set: Vec<usize> = rand::seq::index::sample(&mut rng, pool.len(), k)
                .into_iter()
                .map(|i| pool[i])
                .collect();
            set.sort_unstable();
            set
        })
        .collect()
}

/// Mean KL at the last position over `prompts` when each set of `sets` is ablated together
/// (each neuron with its own edit from `edit_for`); one batched forward per prompt.
pub fn set_effects(
    model: &CausalLm,
    prompts: &[Vec<i64>],
    site: &str,
    sets: &[Vec<usize>],
    edit_for: &dyn Fn(usize) -> sparsity_models::Result<Edit>,
    device: &Device,
) -> sparsity_models::Result<Vec<f64>> {
    let m = sets.len();
    let mut effects = vec![0.0f64; m];
    if m == 0 || prompts.is_empty() {
        return Ok(effects);
    }
    let mut neurons: Vec<usize> = sets.iter().flatten().copied().collect();
    neurons.sort_unstable();
    neurons.dedup();
    let mut iv = Intervention::new();
    for &n in &neurons {
        let per: Vec<Vec<usize>> = sets
            .iter()
            .map(|s| if s.contains(&n) { vec![n] } else { Vec::new() })
            .collect();
        iv = iv.edit_channels(site, edit_for(n)?, Channels::PerExample(per));
    }
    for ids in prompts {
        let len = ids.len();
        let clean = Batch::from_ids(ids, 1, len, device)?;
        let (_, clean_last) = losses_and_last(&tensor3(&model.logits(&clean)?)?, ids, len);
        let rep: Vec<i64> = (0..m).flat_map(|_| ids.iter().copied()).collect();
        let batch = Batch::from_ids(&rep, m, len, device)?;
        let logits = tensor3(&model.forward(&batch, &Capture::none(), Some(&iv))?.logits)?;
        let (_, last) = losses_and_last(&logits, ids, len);
        for (e, l) in effects.iter_mut().zip(&last) {
            *e += kl_from_logp(&clean_last[0], l) / prompts.len() as f64;
        }
    }
    Ok(effects)
}

/// The top set against `random` sets of the same size (from [`random_sets`]); `p_holm` is left
/// equal to `p_value` (the caller corrects over layers). None without at least two random sets.
pub fn random_baseline(
    model: &CausalLm,
    prompts: &[Vec<i64>],
    site: &str,
    top: &[usize],
    random: &[Vec<usize>],
    edit_for: &dyn Fn(usize) -> sparsity_models::Result<Edit>,
    device: &Device,
) -> sparsity_models::Result<Option<RandomBaseline>> {
    let k = top.len();
    if k == 0 || random.len() < 2 {
        return Ok(None);
    }
    let mut sets = vec![top.to_vec()];
    sets.extend(random.iter().cloned());
    let effects = set_effects(model, prompts, site, &sets, edit_for, device)?;
    let top_effect = effects[0];
    let random_effects = effects[1..].to_vec();
    let n = random_effects.len() as f64;
    let random_mean = random_effects.iter().sum::<f64>() / n;
    let random_sd = (random_effects
        .iter()
        .map(|e| (e - random_mean).powi(2))
        .sum::<f64>()
        / (n - 1.0))
        .sqrt();
    let draws_at_least_top = random_effects.iter().filter(|&&e| e >= top_effect).count();
    let p_value = (1 + draws_at_least_top) as f64 / (1.0 + n);
    Ok(Some(RandomBaseline {
        k,
        top_effect,
        random_effects,
        random_mean,
        random_sd,
        draws_at_least_top,
        multiple_of_random: (random_mean > 0.0).then(|| top_effect / random_mean),
        p_value,
        p_holm: p_value,
        significant: p_value < 0.05,
    }))
}

/// The cross-layer influence matrix: row = source layer (analysed layers), column = target layer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CrossLayerInfluence {
    /// Source layers (rows).
    pub sources: Vec<usize>,
    /// Target layers (columns): every layer.
    pub targets: Vec<usize>,
    /// `values[i][j]`: relative change of `block_out.{targets[j]}` when ablating `sources[i]`'s top-k.
    pub values: Vec<Vec<Option<f64>>>,
}

/// The causal stage's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CausalNeurons {
    /// The intervention used.
    pub mode: CausalMode,
    /// Number of prompts the scores are averaged over.
    pub prompts: usize,
    /// Per analysed layer.
    pub layers: BTreeMap<usize, LayerCausal>,
    /// The layer × layer matrix.
    pub cross_layer: CrossLayerInfluence,
}

/// The per-channel statistics the mean / noise modes need.
#[derive(Debug, Clone)]
pub struct ChannelStats {
    /// Mean per channel.
    pub mean: Vec<f32>,
    /// Standard deviation per channel.
    pub std: Vec<f32>,
}

/// The edit a mode applies to `neuron` (noise uses that neuron's own standard deviation).
pub fn mode_edit(
    mode: CausalMode,
    stats: &ChannelStats,
    neuron: usize,
    seed: u64,
) -> sparsity_models::Result<Edit> {
    Ok(match mode {
        CausalMode::Zero => Edit::Zero,
        CausalMode::Mean => Edit::Mean(MeanSource::Given(stats.mean.clone())),
        CausalMode::Scale(f) => Edit::Scale(f),
        CausalMode::Noise => {
            let std = stats.std.get(neuron).copied().ok_or_else(|| {
                ModelError::Invalid(format!(
                    "noise ablation: neuron {neuron} is outside the site's {} channels",
                    stats.std.len()
                ))
            })?;
            Edit::AddNoise { std, seed }
        }
    })
}

/// Mean next-token loss of every batch element over its real positions, and the last-position
/// log-probabilities, from logits [batch, seq, vocab].
fn losses_and_last(logits: &Array3<f32>, ids: &[i64], len: usize) -> (Vec<f64>, Vec<Vec<f64>>) {
    let (b, _, _) = logits.dim();
    let mut losses = Vec::with_capacity(b);
    let mut last = Vec::with_capacity(b);
    for i in 0..b {
        let mut nll = 0.0;
        for t in 0..len.saturating_sub(1) {
            let row = logits.slice(s![i, t, ..]);
            let lp = log_softmax(row.as_slice().unwrap_or(&row.to_vec()));
            let target = ids[t + 1] as usize;
            nll -= lp.get(target).copied().unwrap_or(f64::NAN);
        }
        losses.push(nll / (len.saturating_sub(1)).max(1) as f64);
        let row = logits.slice(s![i, len - 1, ..]).to_vec();
        last.push(log_softmax(&row));
    }
    (losses, last)
}

/// KL and Δloss of single-neuron interventions on `site` for one prompt (`ids`, all real tokens),
/// `chunk` neurons per forward pass (1 = one at a time). Returns (kl, delta_loss) per neuron.
pub fn single_neuron_impacts(
    model: &CausalLm,
    ids: &[i64],
    site: &str,
    neurons: &[usize],
    edit_for: &dyn Fn(usize) -> sparsity_models::Result<Edit>,
    chunk: usize,
    device: &Device,
) -> sparsity_models::Result<Vec<(f64, f64)>> {
    let len = ids.len();
    let clean = Batch::from_ids(ids, 1, len, device)?;
    let clean_logits = tensor3(&model.logits(&clean)?)?;
    let (clean_loss, clean_last) = losses_and_last(&clean_logits, ids, len);
    let mut out = Vec::with_capacity(neurons.len());
    for group in neurons.chunks(chunk.max(1)) {
        let m = group.len();
        let rep: Vec<i64> = (0..m).flat_map(|_| ids.iter().copied()).collect();
        let batch = Batch::from_ids(&rep, m, len, device)?;
        // one edit per distinct Edit value: every neuron of the group gets its own (possibly equal) edit
        let mut iv = Intervention::new();
        for (i, &n) in group.iter().enumerate() {
            let mut per = vec![Vec::new(); m];
            per[i] = vec![n];
            iv = iv.edit_channels(site, edit_for(n)?, Channels::PerExample(per));
        }
        let logits = tensor3(&model.forward(&batch, &Capture::none(), Some(&iv))?.logits)?;
        let (losses, last) = losses_and_last(&logits, &rep[..len], len);
        for i in 0..m {
            out.push((
                kl_from_logp(&clean_last[0], &last[i]),
                losses[i] - clean_loss[0],
            ));
        }
    }
    Ok(out)
}

/// |Σ_t a·∂logit/∂a| per neuron of `site` for one prompt, where the logit is the clean top-1 token at the
/// last position. `None` when the backend records no gradient.
fn attribution(
    model: &CausalLm,
    ids: &[i64],
    site: &str,
    device: &Device,
) -> sparsity_models::Result<Option<Vec<f64>>> {
    let batch = Batch::from_ids(ids, 1, ids.len(), device)?;
    let Some((act, g)) = super::attention::site_gradient(model, &batch, site, device)? else {
        return Ok(None);
    };
    Ok(Some((&act * &g).sum_axis(Axis(0)).mapv(f64::abs).to_vec()))
}

/// Mean next-token loss over `seqs` with an optional intervention (every element of the batch edited).
fn perplexity_with(
    model: &CausalLm,
    tok: &TokenizedTexts,
    batch_size: usize,
    iv: Option<&Intervention>,
    device: &Device,
) -> sparsity_models::Result<f64> {
    let (mut nll, mut n) = (0.0f64, 0usize);
    for pb in tok.batches(model, batch_size)? {
        let batch = pb.to_batch(device)?;
        let logits = tensor3(&model.forward(&batch, &Capture::none(), iv)?.logits)?;
        for (b, &len) in pb.lengths.iter().enumerate() {
            for t in 0..len.saturating_sub(1) {
                let row = logits.slice(s![b, t, ..]).to_vec();
                let lp = log_softmax(&row);
                nll -= lp[pb.ids[b * pb.seq + t + 1] as usize];
                n += 1;
            }
        }
    }
    if n == 0 {
        return Err(ModelError::Invalid(
            "perplexity needs texts of at least 2 tokens".into(),
        ));
    }
    Ok((nll / n as f64).exp())
}

/// Runs the causal stage.
pub fn causal_neurons(
    m: &AnalysisModel,
    tok: &TokenizedTexts,
    layers: &[usize],
    config: &AnalysisConfig,
    device: &Device,
) -> Result<CausalNeurons> {
    let model = &m.model;
    let err = |e| model_err(STAGE, &m.name)(e);
    let prompts: Vec<Vec<i64>> = tok
        .sequences
        .iter()
        .take(config.causal_prompts.max(1))
        .map(|s| s.iter().map(|&i| i64::from(i)).collect())
        .collect();
    let n_layers = model.num_layers();
    let prompt_tok = TokenizedTexts {
        sequences: tok.sequences[..prompts.len()].to_vec(),
        indices: tok.indices[..prompts.len()].to_vec(),
    };
    let perplexity_clean =
        perplexity_with(model, tok, config.batch_size, None, device).map_err(err)?;
    let mut layers_out = BTreeMap::new();
    let mut matrix = Vec::new();
    let bar = tracing::info_span!(
        "progress",
        progress_total = layers.len() as u64,
        progress_message = %format!("{}: causal neurons", m.name)
    );
    for &l in layers {
        let site = neuron_site(model, l);
        let width = model.site_width(&site).map_err(err)?;
        // channel statistics over the prompts (for mean / noise modes)
        let mut rows: Vec<f32> = Vec::new();
        for p in &prompts {
            let b = Batch::from_ids(p, 1, p.len(), device).map_err(err)?;
            let a = site3(
                &model
                    .forward(&b, &Capture::sites([site.clone()]), None)
                    .map_err(err)?,
                &site,
            )
            .map_err(err)?;
            rows.extend(a.iter().copied());
        }
        let t = rows.len() / width;
        let mat = ndarray::Array2::from_shape_vec((t, width), rows)
            .map_err(|e| err(ModelError::Invalid(e.to_string())))?;
        let stats = ChannelStats {
            mean: mat
                .mean_axis(Axis(0))
                .map(|a| a.to_vec())
                .unwrap_or_default(),
            std: mat.std_axis(Axis(0), 0.0).to_vec(),
        };
        // candidates
        let (candidates, selection, attrib): (Vec<usize>, &str, Option<Vec<f64>>) =
            if config.causal_candidates == 0 || config.causal_candidates >= width {
                ((0..width).collect(), "all", None)
            } else {
                let mut total = Array1::<f64>::zeros(width);
                let mut ok = true;
                for p in &prompts {
                    match attribution(model, p, &site, device).map_err(err)? {
                        Some(v) => total += &Array1::from(v),
                        None => {
                            ok = false;
                            break;
                        }
                    }
                }
                if ok {
                    let v = total.to_vec();
                    let c = super::top_k_indices(&v, config.causal_candidates);
                    (c, "activation_x_gradient", Some(v))
                } else {
                    let v: Vec<f64> = mat
                        .mapv(|x| f64::from(x.abs()))
                        .mean_axis(Axis(0))
                        .map(|a| a.to_vec())
                        .unwrap_or_default();
                    let c = super::top_k_indices(&v, config.causal_candidates);
                    (c, "mean_abs_activation", Some(v))
                }
            };
        let mut kl = vec![0.0f64; candidates.len()];
        let mut dl = vec![0.0f64; candidates.len()];
        for (pi, p) in prompts.iter().enumerate() {
            let seed = config.seed.wrapping_add(pi as u64);
            let edit_for = |n: usize| mode_edit(config.causal_mode, &stats, n, seed);
            let r = single_neuron_impacts(model, p, &site, &candidates, &edit_for, 32, device)
                .map_err(err)?;
            for (i, (k, d)) in r.into_iter().enumerate() {
                kl[i] += k / prompts.len() as f64;
                dl[i] += d / prompts.len() as f64;
            }
        }
        let mut impacts: Vec<NeuronImpact> = candidates
            .iter()
            .enumerate()
            .map(|(i, &n)| NeuronImpact {
                neuron: n,
                kl: kl[i],
                delta_loss: dl[i],
                attribution: attrib.as_ref().map(|a| a[n]),
            })
            .collect();
        impacts.sort_by(|a, b| b.kl.total_cmp(&a.kl).then(a.neuron.cmp(&b.neuron)));
        let top: Vec<RankedNeuron> = impacts
            .iter()
            .take(config.top_k)
            .map(|x| RankedNeuron {
                neuron: x.neuron,
                score: x.kl,
            })
            .collect();
        // the top-k set ablated together, each neuron with its own edit (noise: its own σ)
        let mut ablate = Intervention::new();
        for r in &top {
            let edit = mode_edit(config.causal_mode, &stats, r.neuron, config.seed).map_err(err)?;
            ablate = ablate.edit_channels(site.clone(), edit, Channels::Only(vec![r.neuron]));
        }
        // the top-k set against random sets of k other neurons, with the same edits
        let top_neurons: Vec<usize> = top.iter().map(|r| r.neuron).collect();
        let edit_for = |n: usize| mode_edit(config.causal_mode, &stats, n, config.seed);
        // Only where the layer has at least 2k neurons: k others to draw from, and more.
        let random = if width >= 2 * top_neurons.len() {
            let seed = config.seed ^ (l as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            random_sets(
                width,
                &top_neurons,
                top_neurons.len(),
                config.random_draws,
                seed,
            )
        } else {
            Vec::new()
        };
        let baseline = random_baseline(
            model,
            &prompts,
            &site,
            &top_neurons,
            &random,
            &edit_for,
            device,
        )
        .map_err(err)?;
        // inter-layer impact over the prompts
        let cap = Capture::sites((0..n_layers).map(|j| format!("block_out.{j}")));
        let mut num = vec![0.0f64; n_layers];
        let mut den = vec![0.0f64; n_layers];
        for p in &prompts {
            let b = Batch::from_ids(p, 1, p.len(), device).map_err(err)?;
            let clean = model.forward(&b, &cap, None).map_err(err)?;
            let abl = model.forward(&b, &cap, Some(&ablate)).map_err(err)?;
            for j in l..n_layers {
                let name = format!("block_out.{j}");
                let c = site3(&clean, &name).map_err(err)?;
                let a = site3(&abl, &name).map_err(err)?;
                num[j] += (&a - &c).mapv(|x| f64::from(x) * f64::from(x)).sum();
                den[j] += c.mapv(|x| f64::from(x) * f64::from(x)).sum();
            }
        }
        let inter: Vec<Option<f64>> = (0..n_layers)
            .map(|j| (j >= l && den[j] > 0.0).then(|| (num[j] / den[j]).sqrt()))
            .collect();
        let perplexity_ablated =
            perplexity_with(model, tok, config.batch_size, Some(&ablate), device).map_err(err)?;
        matrix.push(inter.clone());
        layers_out.insert(
            l,
            LayerCausal {
                site,
                candidate_selection: selection.to_string(),
                impacts,
                top,
                inter_layer_impact: inter,
                perplexity_clean,
                perplexity_ablated,
                random_baseline: baseline,
            },
        );
        tracing::trace!(target: sparsity_models::PROGRESS, parent: &bar, progress_inc = 1u64);
    }
    drop(bar);
    let _ = prompt_tok;
    // Holm over the analysed layers' permutation p-values.
    let ps: Vec<f64> = layers_out
        .values()
        .filter_map(|c| c.random_baseline.as_ref().map(|b| b.p_value))
        .collect();
    if !ps.is_empty() {
        let holm = sparsity_stats::holm(&ps).map_err(|e| {
            err(ModelError::Invalid(format!(
                "Holm over the random baselines: {e}"
            )))
        })?;
        for (b, p) in layers_out
            .values_mut()
            .filter_map(|c| c.random_baseline.as_mut())
            .zip(holm)
        {
            b.p_holm = p;
            b.significant = p < 0.05;
        }
    }
    Ok(CausalNeurons {
        mode: config.causal_mode,
        prompts: prompts.len(),
        layers: layers_out,
        cross_layer: CrossLayerInfluence {
            sources: layers.to_vec(),
            targets: (0..n_layers).collect(),
            values: matrix,
        },
    })
}
