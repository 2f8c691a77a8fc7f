//! Attention neurons.
//!
//! **Mamba's hidden attention** (Ali, Zimerman & Wolf, "The Hidden Attention of Mamba Models", 2024): the
//! selective scan is a data-controlled linear operator, so for channel d, query i ≥ key j,
//!
//! α\[d,i,j\] = Σ_n C\[i,n\] · exp(A\[d,n\] · (S\[i,d\] − S\[j,d\])) · Δ\[j,d\] · B\[j,n\],  S = cumsum_t Δ,
//!
//! and y\[i,d\] = Σ_{j≤i} α\[d,i,j\] · u\[j,d\] + D_d · u\[i,d\] (u = the SSM input after conv and activation);
//! the block's gated output is y ⊙ silu(z). [`MambaLayerAttention`] materialises α from the layer's
//! weights (in f64, independently of the model's scan) and [`MambaLayerAttention::gated`] reproduces
//! `mixer_gated`, which the tests check. Neurons are the intermediate channels d.
//! For GPT-2 the attention maps are its real `attn_probs` and neurons are `mlp_act` channels.
//!
//! Methods (neuron scores are averaged over the first `causal_prompts` texts; maps come from the first):
//! - `attention_weighted`: Mamba s_d = mean_i Σ_j |α\[d,i,j\]|·|u\[j,d\]|; GPT-2 s_n = Σ_j Ā\[last,j\]·|a\[j,n\]|
//!   with Ā the head-mean attention of the layer;
//! - `gradient_guided`: Mamba s_d = Σ_{i,j} α⁺ ⊙ (∂ℓ/∂α)⁺ with ∂ℓ/∂α\[d,i,j\] = ∂ℓ/∂y\[i,d\]·u\[j,d\] and ℓ
//!   the clean top-1 logit at the last position (Mamba-Attr); GPT-2 G = mean_heads(A ⊙ ReLU(∂ℓ/∂A)),
//!   s_n = Σ_j G\[last,j\]·|a\[j,n\]|;
//! - `rollout` (Abnar & Zuidema): Â_l = rownorm(M_l + I), R_l = Â_l·R_{l−1} over layers 0..=l, with M_l the
//!   layer's map (GPT-2: head-mean probabilities; Mamba: channel mean of per-channel min–max normalised
//!   α); s_n = Σ_j R_l\[last,j\]·|a\[j,n\]|. Every row of R sums to 1.
//!
//! Metrics per method (the original's): neurons analysed, mean |activation| of the top-k, and neuron
//! diversity = mean pairwise cosine distance (1 − cos) of the top-k neurons' activation profiles over
//! tokens (the original summed an entropy instead; that value depended on the tensor size).

use std::collections::BTreeMap;

use burn::tensor::Device;
use ndarray::{Array1, Array2, Array3, ArrayView2, Axis, s};
use serde::{Deserialize, Serialize};

use super::delta::block_input;
use super::tensors::{last_top1, site3, site4, tensor2, tensor3, to_site3};
use super::{
    AnalysisConfig, AnalysisModel, RankedNeuron, Result, TokenizedTexts, model_err, neuron_site,
    ranked,
};
use sparsity_models::config::Activation;
use sparsity_models::error::ModelError;
use sparsity_models::lm::{Batch, CausalLm};
use sparsity_models::mamba::Mamba;
use sparsity_models::sites::{Capture, Edit, Intervention, SiteTensor};

const STAGE: &str = "attention_neurons";

/// An attention-neuron method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttentionMethod {
    /// Activations weighted by attention.
    AttentionWeighted,
    /// Attention × positive gradient.
    GradientGuided,
    /// Attention rollout across layers.
    Rollout,
}

impl AttentionMethod {
    /// The CLI / JSON name.
    pub fn name(self) -> &'static str {
        match self {
            Self::AttentionWeighted => "attention_weighted",
            Self::GradientGuided => "gradient_guided",
            Self::Rollout => "rollout",
        }
    }

    /// Parses a CLI name.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "attention_weighted" => Some(Self::AttentionWeighted),
            "gradient_guided" => Some(Self::GradientGuided),
            "rollout" => Some(Self::Rollout),
            _ => None,
        }
    }
}

/// One method's result at one layer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttentionResult {
    /// The site whose neurons are scored.
    pub site: String,
    /// Neurons analysed (the site's width).
    pub neurons_analyzed: usize,
    /// Top-k neurons by score.
    pub top: Vec<RankedNeuron>,
    /// Mean |activation| of the top-k neurons.
    pub mean_activation: f64,
    /// Mean pairwise cosine distance of the top-k activation profiles.
    pub neuron_diversity: f64,
    /// Every neuron's score, by neuron index (absent in reports written before it was recorded).
    #[serde(default)]
    pub scores: Vec<f64>,
}

/// The attention-neuron stage's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttentionNeurons {
    /// Per layer, per method name.
    pub layers: BTreeMap<usize, BTreeMap<String, AttentionResult>>,
    /// The layer's attention map on the first text ([seq, seq], rows = queries), per layer.
    pub maps: BTreeMap<usize, Vec<Vec<f64>>>,
    /// The rollout matrix on the first text at the deepest analysed layer.
    pub rollout: Option<Vec<Vec<f64>>>,
    /// Mamba: max |reconstructed gated output − recorded `mixer_gated`| over analysed layers and texts.
    pub scan_reconstruction_max_abs_error: Option<f64>,
}

fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

fn softplus(x: f64) -> f64 {
    if x > 20.0 { x } else { x.exp().ln_1p() }
}

/// The materialised hidden attention of one Mamba layer on one sequence (no padding).
#[derive(Debug, Clone)]
pub struct MambaLayerAttention {
    /// α [channels, seq, seq] (zero above the diagonal).
    pub alpha: Array3<f64>,
    /// SSM input u [seq, channels].
    pub u: Array2<f64>,
    /// Gate input z [seq, channels].
    pub z: Array2<f64>,
    /// D \[channels\].
    pub d_skip: Array1<f64>,
}

impl MambaLayerAttention {
    /// Computes the layer's intermediates and α from the block input `x` [seq, hidden].
    pub fn compute(
        model: &Mamba,
        layer: usize,
        x: ArrayView2<'_, f32>,
    ) -> sparsity_models::Result<Self> {
        let c = &model.config;
        if c.activation()? != Activation::Silu {
            return Err(ModelError::Invalid(format!(
                "hidden attention is implemented for hidden_act = silu, the model uses `{}`",
                c.hidden_act
            )));
        }
        let blk = model
            .layers
            .get(layer)
            .ok_or_else(|| ModelError::Invalid(format!("layer {layer} out of range")))?;
        let f = |t: &burn::tensor::Tensor<2>| tensor2(t).map(|a| a.mapv(f64::from));
        let f1 = |t: &burn::tensor::Tensor<1>| {
            sparsity_models::util::tensor_to_vec(t)
                .map(|v| Array1::from(v.into_iter().map(f64::from).collect::<Vec<_>>()))
        };
        let (e, n, r, k) = (c.inner_size(), c.state_size, c.dt_rank(), c.conv_kernel);
        let x = x.mapv(f64::from);
        let (l, _) = x.dim();
        // RMSNorm
        let w_norm = f1(&blk.norm.val())?;
        let mut h = x.clone();
        for mut row in h.rows_mut() {
            let ms = row.iter().map(|v| v * v).sum::<f64>() / row.len() as f64;
            let inv = 1.0 / (ms + c.layer_norm_epsilon).sqrt();
            row.iter_mut()
                .zip(w_norm.iter())
                .for_each(|(v, w)| *v = *v * inv * w);
        }
        let mx = &blk.mixer;
        let mut xz = h.dot(&f(&mx.in_proj.weight.val())?);
        if let Some(b) = &mx.in_proj.bias {
            xz += &f1(&b.val())?;
        }
        let xs = xz.slice(s![.., 0..e]).to_owned();
        let z = xz.slice(s![.., e..2 * e]).to_owned();
        let cw = f(&mx.conv_weight.val())?; // [E, K]
        let cb = match &mx.conv_bias {
            Some(b) => f1(&b.val())?,
            None => Array1::zeros(e),
        };
        let mut u = Array2::<f64>::zeros((l, e));
        for t in 0..l {
            for d in 0..e {
                let mut acc = cb[d];
                for j in 0..k {
                    let src = t as isize - (k as isize - 1) + j as isize;
                    if src >= 0 {
                        acc += cw[[d, j]] * xs[[src as usize, d]];
                    }
                }
                u[[t, d]] = silu(acc);
            }
        }
        let ssm = u.dot(&f(&mx.x_proj.val())?);
        let dt_raw = ssm.slice(s![.., 0..r]).to_owned();
        let bm = ssm.slice(s![.., r..r + n]).to_owned();
        let cm = ssm.slice(s![.., r + n..r + 2 * n]).to_owned();
        let mut dt = dt_raw.dot(&f(&mx.dt_proj.weight.val())?);
        if let Some(b) = &mx.dt_proj.bias {
            dt += &f1(&b.val())?;
        }
        let delta = dt.mapv(softplus); // [L, E]
        let a = f(&mx.a_log.val())?.mapv(|v| -v.exp()); // [E, N]
        let d_skip = f1(&mx.d.val())?;
        let mut cum = delta.clone();
        for t in 1..l {
            for d in 0..e {
                cum[[t, d]] += cum[[t - 1, d]];
            }
        }
        let mut alpha = Array3::<f64>::zeros((e, l, l));
        for d in 0..e {
            for i in 0..l {
                for j in 0..=i {
                    let gap = cum[[i, d]] - cum[[j, d]];
                    let mut acc = 0.0;
                    for q in 0..n {
                        acc += cm[[i, q]] * (a[[d, q]] * gap).exp() * bm[[j, q]];
                    }
                    alpha[[d, i, j]] = acc * delta[[j, d]];
                }
            }
        }
        Ok(Self {
            alpha,
            u,
            z,
            d_skip,
        })
    }

    /// y\[i,d\] = Σ_j α\[d,i,j\]·u\[j,d\] + D_d·u\[i,d\], [seq, channels] (before the gate).
    pub fn scan_output(&self) -> Array2<f64> {
        let (e, l, _) = self.alpha.dim();
        let mut y = Array2::<f64>::zeros((l, e));
        for d in 0..e {
            for i in 0..l {
                let mut acc = self.d_skip[d] * self.u[[i, d]];
                for j in 0..=i {
                    acc += self.alpha[[d, i, j]] * self.u[[j, d]];
                }
                y[[i, d]] = acc;
            }
        }
        y
    }

    /// The gated output y ⊙ silu(z) [seq, channels] (= the `mixer_gated` site).
    pub fn gated(&self) -> Array2<f64> {
        self.scan_output() * self.z.mapv(silu)
    }

    /// Channel mean of per-channel min–max normalised α over the causal entries, [seq, seq].
    pub fn channel_mean_map(&self) -> Array2<f64> {
        let (e, l, _) = self.alpha.dim();
        let mut m = Array2::<f64>::zeros((l, l));
        for d in 0..e {
            let a = self.alpha.index_axis(Axis(0), d);
            let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
            for i in 0..l {
                for j in 0..=i {
                    lo = lo.min(a[[i, j]]);
                    hi = hi.max(a[[i, j]]);
                }
            }
            let span = hi - lo;
            for i in 0..l {
                for j in 0..=i {
                    m[[i, j]] += if span > 0.0 {
                        (a[[i, j]] - lo) / span
                    } else {
                        0.0
                    };
                }
            }
        }
        m / e as f64
    }
}

/// Attention rollout: Â_l = rownorm(M_l + I), R = Â_L·…·Â_0. Every row of the result sums to 1 when the
/// maps are non-negative.
pub fn rollout(maps: &[Array2<f64>]) -> Option<Array2<f64>> {
    let l = maps.first()?.nrows();
    let mut r = Array2::<f64>::eye(l);
    for m in maps {
        let mut a = m + &Array2::<f64>::eye(l);
        for mut row in a.rows_mut() {
            let s: f64 = row.sum();
            if s > 0.0 {
                row.mapv_inplace(|v| v / s);
            }
        }
        r = a.dot(&r);
    }
    Some(r)
}

/// Mean pairwise cosine distance of the columns `cols` of `acts` [tokens, neurons].
pub fn neuron_diversity(acts: ArrayView2<'_, f64>, cols: &[usize]) -> f64 {
    let (mut sum, mut n) = (0.0, 0usize);
    for (x, &a) in cols.iter().enumerate() {
        for &b in &cols[x + 1..] {
            let (ca, cb) = (acts.column(a), acts.column(b));
            let (na, nb) = (ca.dot(&ca).sqrt(), cb.dot(&cb).sqrt());
            let cos = if na > 0.0 && nb > 0.0 {
                ca.dot(&cb) / (na * nb)
            } else {
                0.0
            };
            sum += 1.0 - cos;
            n += 1;
        }
    }
    if n == 0 { 0.0 } else { sum / n as f64 }
}

fn result(site: &str, scores: &[f64], acts: &Array2<f64>, k: usize) -> AttentionResult {
    let top = ranked(scores, k);
    let cols: Vec<usize> = top.iter().map(|r| r.neuron).collect();
    let mean_activation = if cols.is_empty() {
        0.0
    } else {
        cols.iter()
            .map(|&c| acts.column(c).mapv(f64::abs).mean().unwrap_or(0.0))
            .sum::<f64>()
            / cols.len() as f64
    };
    AttentionResult {
        site: site.to_string(),
        neurons_analyzed: acts.ncols(),
        top,
        mean_activation,
        neuron_diversity: neuron_diversity(acts.view(), &cols),
        scores: scores.to_vec(),
    }
}

/// The site's clean activations and ∂ℓ/∂(site) for the clean top-1 logit ℓ at the last position, both
/// [seq, width] (batch element 0), via a gradient-tracked replacement of the site. `None` when the
/// backend records no gradient.
pub(crate) fn site_gradient(
    model: &CausalLm,
    batch: &Batch,
    site: &str,
    device: &Device,
) -> sparsity_models::Result<Option<(Array2<f64>, Array2<f64>)>> {
    let out = model.forward(batch, &Capture::sites([site]), None)?;
    let [_, len] = batch.dims();
    let logits = tensor3(&out.logits)?;
    let target = last_top1(&logits, len);
    let act = site3(&out, site)?;
    let SiteTensor::Rank3(t) = to_site3(&act, device) else {
        return Ok(None);
    };
    let leaf = t.autodiff().require_grad();
    let iv = Intervention::new().edit(site, Edit::Set(SiteTensor::Rank3(leaf.clone())));
    let logits = model.forward(batch, &Capture::none(), Some(&iv))?.logits;
    let picked = logits.narrow(1, len - 1, 1).narrow(2, target, 1);
    if !picked.is_tracked() {
        return Ok(None);
    }
    let grads = picked.sum().backward();
    let Some(g) = leaf.grad(&grads) else {
        return Ok(None);
    };
    let a = act.index_axis(Axis(0), 0).mapv(f64::from);
    Ok(Some((
        a,
        tensor3(&g)?.index_axis(Axis(0), 0).mapv(f64::from),
    )))
}

/// GPT-2 attention-probability gradient ∂ℓ/∂A [heads, seq, seq] (same construction as [`site_gradient`]).
fn attn_gradient(
    model: &CausalLm,
    batch: &Batch,
    site: &str,
    device: &Device,
) -> sparsity_models::Result<Option<Array3<f64>>> {
    let out = model.forward(batch, &Capture::sites([site]), None)?;
    let [_, len] = batch.dims();
    let logits = tensor3(&out.logits)?;
    let target = last_top1(&logits, len);
    let Some(SiteTensor::Rank4(t)) = out.sites.get(site).cloned() else {
        return Ok(None);
    };
    let leaf = t.inner().autodiff().require_grad();
    let _ = device;
    let iv = Intervention::new().edit(site, Edit::Set(SiteTensor::Rank4(leaf.clone())));
    let logits = model.forward(batch, &Capture::none(), Some(&iv))?.logits;
    let picked = logits.narrow(1, len - 1, 1).narrow(2, target, 1);
    if !picked.is_tracked() {
        return Ok(None);
    }
    let grads = picked.sum().backward();
    let Some(g) = leaf.grad(&grads) else {
        return Ok(None);
    };
    let [_, h, q, k] = g.dims();
    let v = sparsity_models::util::tensor_to_vec(&g)?;
    Ok(Array3::from_shape_vec((h, q, k), v.into_iter().map(f64::from).collect()).ok())
}

fn weighted_scores(row: ndarray::ArrayView1<'_, f64>, acts: &Array2<f64>) -> Vec<f64> {
    (0..acts.ncols())
        .map(|c| {
            row.iter()
                .zip(acts.column(c))
                .map(|(w, a)| w * a.abs())
                .sum()
        })
        .collect()
}

/// Runs the stage.
pub fn attention_neurons(
    m: &AnalysisModel,
    tok: &TokenizedTexts,
    layers: &[usize],
    config: &AnalysisConfig,
    device: &Device,
) -> Result<AttentionNeurons> {
    let model = &m.model;
    let err = |e| model_err(STAGE, &m.name)(e);
    // Mamba's hidden attention (its internals), else the family's softmax attention site.
    let mamba = model.downcast_ref::<Mamba>();
    let attn_kind = model.inner().attention_site_kind();
    if mamba.is_none() && attn_kind.is_none() {
        return Err(err(ModelError::Invalid(format!(
            "attention neurons need softmax attention probabilities or Mamba's hidden \
             attention; a {} model has neither",
            model.family()
        ))));
    }
    let max_layer = layers.iter().copied().max().unwrap_or(0);
    let prompts: Vec<&Vec<u32>> = tok
        .sequences
        .iter()
        .take(config.causal_prompts.max(1))
        .collect();
    let mut scores: BTreeMap<(usize, AttentionMethod), Vec<f64>> = BTreeMap::new();
    let mut acts_first: BTreeMap<usize, Array2<f64>> = BTreeMap::new();
    let mut maps_first: BTreeMap<usize, Vec<Vec<f64>>> = BTreeMap::new();
    let mut rollout_first = None;
    let mut max_err: Option<f64> = None;
    let bar = tracing::info_span!(
        "progress",
        progress_total = prompts.len() as u64,
        progress_message = %format!("{}: attention neurons", m.name)
    );
    for (pi, p) in prompts.iter().enumerate() {
        let ids: Vec<i64> = p.iter().map(|&i| i64::from(i)).collect();
        let len = ids.len();
        let batch = Batch::from_ids(&ids, 1, len, device).map_err(err)?;
        let mut cap = Capture::none();
        for l in 0..=max_layer {
            cap = cap
                .with(format!("block_out.{l}"))
                .with(neuron_site(model, l));
            if let Some(kind) = attn_kind {
                cap = cap.with(format!("{kind}.{l}"));
            }
        }
        let out = model.forward(&batch, &cap, None).map_err(err)?;
        let mut layer_maps: Vec<Array2<f64>> = Vec::new();
        for l in 0..=max_layer {
            let ns = neuron_site(model, l);
            let acts = site3(&out, &ns)
                .map_err(err)?
                .index_axis(Axis(0), 0)
                .mapv(f64::from);
            let analysed = layers.contains(&l);
            match (mamba, attn_kind) {
                (Some(mm), _) => {
                    let x = block_input(model, &batch, &out, l).map_err(err)?;
                    let att = MambaLayerAttention::compute(mm, l, x.index_axis(Axis(0), 0))
                        .map_err(err)?;
                    layer_maps.push(att.channel_mean_map());
                    if analysed {
                        let rec = att.gated();
                        let e = (&rec - &acts).mapv(f64::abs).fold(0.0f64, |a, &b| a.max(b));
                        max_err = Some(max_err.map_or(e, |m: f64| m.max(e)));
                        let (ch, _, _) = att.alpha.dim();
                        if config
                            .attention_methods
                            .contains(&AttentionMethod::AttentionWeighted)
                        {
                            let v: Vec<f64> = (0..ch)
                                .map(|d| {
                                    let a = att.alpha.index_axis(Axis(0), d);
                                    let mut s = 0.0;
                                    for i in 0..len {
                                        for j in 0..=i {
                                            s += a[[i, j]].abs() * att.u[[j, d]].abs();
                                        }
                                    }
                                    s / len as f64
                                })
                                .collect();
                            add(&mut scores, (l, AttentionMethod::AttentionWeighted), v);
                        }
                        if config
                            .attention_methods
                            .contains(&AttentionMethod::GradientGuided)
                        {
                            let (_, g) = site_gradient(model, &batch, &ns, device)
                                .map_err(err)?
                                .ok_or_else(|| {
                                    err(ModelError::Invalid(
                                        "the backend recorded no gradient for `gradient_guided`"
                                            .into(),
                                    ))
                                })?;
                            // ∂ℓ/∂y = ∂ℓ/∂gated · silu(z)
                            let gy = g * att.z.mapv(silu);
                            let v: Vec<f64> = (0..ch)
                                .map(|d| {
                                    let a = att.alpha.index_axis(Axis(0), d);
                                    let mut s = 0.0;
                                    for i in 0..len {
                                        for j in 0..=i {
                                            s += a[[i, j]].max(0.0)
                                                * (gy[[i, d]] * att.u[[j, d]]).max(0.0);
                                        }
                                    }
                                    s
                                })
                                .collect();
                            add(&mut scores, (l, AttentionMethod::GradientGuided), v);
                        }
                    }
                }
                (None, Some(kind)) => {
                    let probs = site4(&out, &format!("{kind}.{l}")).map_err(err)?;
                    let mean = probs
                        .index_axis(Axis(0), 0)
                        .mapv(f64::from)
                        .mean_axis(Axis(0))
                        .ok_or_else(|| {
                            err(ModelError::Invalid(format!("{kind}.{l} has no heads")))
                        })?;
                    layer_maps.push(mean.clone());
                    if analysed {
                        if config
                            .attention_methods
                            .contains(&AttentionMethod::AttentionWeighted)
                        {
                            add(
                                &mut scores,
                                (l, AttentionMethod::AttentionWeighted),
                                weighted_scores(mean.row(len - 1), &acts),
                            );
                        }
                        if config
                            .attention_methods
                            .contains(&AttentionMethod::GradientGuided)
                        {
                            let site = format!("{kind}.{l}");
                            let g = attn_gradient(model, &batch, &site, device)
                                .map_err(err)?
                                .ok_or_else(|| {
                                    err(ModelError::Invalid(
                                        "the backend recorded no gradient for `gradient_guided`"
                                            .into(),
                                    ))
                                })?;
                            let a = probs.index_axis(Axis(0), 0).mapv(f64::from);
                            let gm = (a * g.mapv(|v| v.max(0.0))).mean_axis(Axis(0)).ok_or_else(
                                || err(ModelError::Invalid(format!("{kind}.{l} has no heads"))),
                            )?;
                            add(
                                &mut scores,
                                (l, AttentionMethod::GradientGuided),
                                weighted_scores(gm.row(len - 1), &acts),
                            );
                        }
                    }
                }
                (None, None) => {
                    return Err(err(ModelError::Invalid(format!(
                        "a {} model has no attention to analyse",
                        model.family()
                    ))));
                }
            }
            if analysed
                && config.attention_methods.contains(&AttentionMethod::Rollout)
                && let Some(r) = rollout(&layer_maps)
            {
                add(
                    &mut scores,
                    (l, AttentionMethod::Rollout),
                    weighted_scores(r.row(len - 1), &acts),
                );
                if pi == 0 && l == max_layer {
                    rollout_first = Some(r.rows().into_iter().map(|row| row.to_vec()).collect());
                }
            }
            if pi == 0 && analysed {
                acts_first.insert(l, acts);
                if let Some(mp) = layer_maps.last() {
                    maps_first.insert(l, mp.rows().into_iter().map(|r| r.to_vec()).collect());
                }
            }
        }
        tracing::trace!(target: sparsity_models::PROGRESS, parent: &bar, progress_inc = 1u64);
    }
    drop(bar);
    let mut out_layers: BTreeMap<usize, BTreeMap<String, AttentionResult>> = BTreeMap::new();
    for ((l, method), v) in scores {
        let Some(acts) = acts_first.get(&l) else {
            continue;
        };
        let v: Vec<f64> = v.iter().map(|x| x / prompts.len() as f64).collect();
        out_layers.entry(l).or_default().insert(
            method.name().to_string(),
            result(&neuron_site(model, l), &v, acts, config.top_k),
        );
    }
    Ok(AttentionNeurons {
        layers: out_layers,
        maps: maps_first,
        rollout: rollout_first,
        scan_reconstruction_max_abs_error: max_err,
    })
}

fn add(
    scores: &mut BTreeMap<(usize, AttentionMethod), Vec<f64>>,
    key: (usize, AttentionMethod),
    v: Vec<f64>,
) {
    match scores.get_mut(&key) {
        Some(acc) => acc.iter_mut().zip(v).for_each(|(a, b)| *a += b),
        None => {
            scores.insert(key, v);
        }
    }
}
