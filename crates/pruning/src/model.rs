//! Whole-model pruning of the `sparsity-models` GPT-2 and Mamba (feature `models`, on by default).
//!
//! Sequential, as in the Wanda and SparseGPT papers: blocks are pruned in order, and the
//! calibration inputs of block `l` are computed by the model whose blocks `< l` are already
//! pruned. Within a block every selected linear layer sees the block's *dense* inputs of that
//! pass (the reference code collects all of a block's inputs with forward hooks, then prunes).
//!
//! Memory is bounded by one block's statistics plus one calibration batch: the inputs are read
//! at the by-name-only linear-input sites of [`sparsity_models::sites`] and streamed into
//! [`LayerPruner`]s, never stored. Calibration length is an explicit property of the sequences
//! the caller passes (all of one length, so no padding enters the statistics).
//!
//! The relative reconstruction error ‖WXᵀ − WₚXᵀ‖²_F / ‖WXᵀ‖²_F of each layer is computed from
//! the Gram matrix G = Σ x xᵀ of the same inputs, accumulated in f64, as
//! tr(ΔW G ΔWᵀ) / tr(W G Wᵀ) — equal to [`crate::ReconError`] on the stored activations.
//!
//! Each calibration pass runs the full forward (the sites of block `l` are read, later blocks
//! are computed and discarded), so pruning an L-block model costs L calibration forwards.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ndarray::{Array2, ArrayD, IxDyn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use sparsity_models::burn::module::Param;
use sparsity_models::burn::tensor::{Device, Tensor, TensorData};
use sparsity_models::text::{Perplexity, perplexity_of_sequences};
use sparsity_models::{Batch, Capture, CausalLm, LinearLayer};

use crate::error::{PruneError, Result};
use crate::io::{OutTensor, write_safetensors};
use crate::{HessianStats, LayerPruner, Method, Pattern, Precision, PruneReport};

/// One prunable linear layer of a model (the family's [`sparsity_models::LinearLayer`]: block,
/// group, module, Hugging Face weight name, input site, shape [out, in], storage layout).
pub type LinearTarget = LinearLayer;

/// The model's linear-layer groups (what `groups` selects), in forward order: GPT-2 `attention`,
/// `mlp`; Mamba `in_proj`, `x_proj`, `dt_proj`, `out_proj`.
pub fn linear_groups(model: &CausalLm) -> Vec<String> {
    let mut groups: Vec<String> = Vec::new();
    for l in model.linear_layers() {
        if !groups.contains(&l.group) {
            groups.push(l.group);
        }
    }
    groups
}

/// The prunable linear layers of `model` in the selected groups, in forward order. A group the
/// model does not have is an error naming the groups it has.
pub fn linear_targets(model: &CausalLm, groups: &[String]) -> Result<Vec<LinearTarget>> {
    let known = linear_groups(model);
    if let Some(g) = groups.iter().find(|g| !known.contains(g)) {
        return Err(PruneError::InvalidOption {
            layer: "<model>".into(),
            option: "layers".into(),
            value: g.clone(),
            reason: format!(
                "not a layer group of a {} model (its groups: {})",
                model.family(),
                known.join(", ")
            ),
        });
    }
    Ok(model
        .linear_layers()
        .into_iter()
        .filter(|l| groups.contains(&l.group))
        .collect())
}

/// The burn parameter (stored [in, out]) behind a target.
fn param_of<'a>(model: &'a mut CausalLm, t: &LinearTarget) -> Result<&'a mut Param<Tensor<2>>> {
    model
        .inner_mut()
        .linear_weight_mut(t)
        .ok_or_else(|| PruneError::InvalidOption {
            layer: t.name.clone(),
            option: "target".into(),
            value: format!("block {} {}", t.block, t.module),
            reason: "the model has no such linear layer".into(),
        })
}

fn model_err(what: &str) -> impl Fn(sparsity_models::ModelError) -> PruneError + '_ {
    move |e| PruneError::Model {
        what: what.to_string(),
        reason: e.to_string(),
    }
}

/// The weight of `t` as [out, in] f32.
pub fn read_weight(model: &mut CausalLm, t: &LinearTarget) -> Result<Array2<f32>> {
    let p = param_of(model, t)?;
    let stored = p.val();
    let [i, o] = stored.dims();
    if [o, i] != t.shape {
        return Err(PruneError::ShapeMismatch {
            layer: t.name.clone(),
            what: "model weight [out, in]".into(),
            expected: t.shape.to_vec(),
            got: vec![o, i],
        });
    }
    let v = sparsity_models::util::tensor_to_vec(&stored).map_err(model_err(&t.name))?;
    let a = Array2::from_shape_vec((i, o), v).map_err(|e| PruneError::Model {
        what: t.name.clone(),
        reason: e.to_string(),
    })?;
    Ok(a.t().as_standard_layout().into_owned())
}

/// Replaces the weight of `t` with `w` [out, in].
pub fn write_weight(model: &mut CausalLm, t: &LinearTarget, w: &Array2<f32>) -> Result<()> {
    if w.dim() != (t.shape[0], t.shape[1]) {
        return Err(PruneError::ShapeMismatch {
            layer: t.name.clone(),
            what: "new weight [out, in]".into(),
            expected: t.shape.to_vec(),
            got: w.shape().to_vec(),
        });
    }
    let p = param_of(model, t)?;
    let device = p.val().device();
    let stored: Vec<f32> = w.t().iter().copied().collect();
    *p = Param::from_tensor(Tensor::from_data(
        TensorData::new(stored, [t.shape[1], t.shape[0]]),
        &device,
    ));
    Ok(())
}

/// Options of [`prune_model`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelPruneOptions {
    /// The method.
    pub method: Method,
    /// The pattern, applied to every selected layer.
    pub pattern: Pattern,
    /// Layer groups to prune (empty: every group of the model, see [`linear_groups`]).
    pub groups: Vec<String>,
    /// Calibration sequences per forward pass.
    pub batch_size: usize,
    /// SparseGPT Hessian accumulation precision (the reference: f32).
    pub hessian_precision: Precision,
    /// SparseGPT's limit on 10× damping retries (`None`: the crate default).
    pub max_damp_retries: Option<usize>,
    /// Compute each layer's relative reconstruction error (an extra f64 Gram matrix per layer).
    pub recon_error: bool,
}

impl ModelPruneOptions {
    /// Defaults: every layer group, batches of 8 sequences, f32 Hessian, reconstruction errors on.
    pub fn new(method: Method, pattern: Pattern) -> Self {
        Self {
            method,
            pattern,
            groups: Vec::new(),
            batch_size: 8,
            hessian_precision: Precision::F32,
            max_damp_retries: None,
            recon_error: true,
        }
    }
}

/// One pruned layer of a whole-model run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// Which layer.
    pub target: LinearTarget,
    /// The per-layer report (sparsity, SparseGPT retries, …).
    pub report: PruneReport,
    /// ‖WXᵀ − WₚXᵀ‖²_F / ‖WXᵀ‖²_F over the calibration inputs (when requested).
    pub rel_recon_error: Option<f64>,
}

/// The outcome of [`prune_model`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelPruneReport {
    /// Model family.
    pub family: String,
    /// The options used.
    pub options: ModelPruneOptions,
    /// Number of calibration sequences.
    pub calibration_sequences: usize,
    /// Their length in tokens.
    pub calibration_length: usize,
    /// Per layer, in forward order.
    pub layers: Vec<LayerRecord>,
    /// Pruned / total over the selected layers.
    pub overall_sparsity: f64,
    /// Perplexity of the held-out sequences before pruning (when given).
    pub perplexity_before: Option<Perplexity>,
    /// … and after.
    pub perplexity_after: Option<Perplexity>,
}

impl ModelPruneReport {
    /// Mean relative reconstruction error over the layers that have one.
    pub fn mean_recon_error(&self) -> Option<f64> {
        let v: Vec<f64> = self
            .layers
            .iter()
            .filter_map(|l| l.rel_recon_error)
            .collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    }
}

/// The masks of a run, keyed by Hugging Face weight name, in the layout of the tensor in
/// `model.safetensors` (GPT-2 [in, out], Mamba [out, in]); 1 = pruned.
pub type Masks = BTreeMap<String, Array2<u8>>;

/// Prunes `model` in place on the calibration `sequences` (all of one length), returning the
/// report and the masks; `eval` sequences (any lengths; empty: skip) give perplexity before and
/// after.
pub fn prune_model(
    model: &mut CausalLm,
    sequences: &[Vec<u32>],
    eval: &[Vec<u32>],
    options: &ModelPruneOptions,
    device: &Device,
) -> Result<(ModelPruneReport, Masks)> {
    let bad = |option: &str, value: String, reason: &str| PruneError::InvalidOption {
        layer: "<model>".into(),
        option: option.into(),
        value,
        reason: reason.into(),
    };
    let Some(first) = sequences.first() else {
        return Err(bad(
            "calibration",
            "0 sequences".into(),
            "need at least one",
        ));
    };
    let len = first.len();
    if len == 0 {
        return Err(bad("calibration", "length 0".into(), "sequences are empty"));
    }
    if let Some((i, s)) = sequences.iter().enumerate().find(|(_, s)| s.len() != len) {
        return Err(bad(
            "calibration",
            format!("sequence {i} has {} tokens", s.len()),
            &format!("every calibration sequence must have the first one's length {len}"),
        ));
    }
    if let Some(max) = model.max_positions()
        && len > max
    {
        return Err(bad(
            "calibration length",
            len.to_string(),
            &format!("longer than the model's {max} positions"),
        ));
    }
    if options.batch_size == 0 {
        return Err(bad("batch_size", "0".into(), "must be at least 1"));
    }
    let groups = if options.groups.is_empty() {
        linear_groups(model)
    } else {
        options.groups.clone()
    };
    let targets = linear_targets(model, &groups)?;
    // Validate the pattern on every layer before any work.
    for t in &targets {
        LayerPruner::new(&t.name, t.shape, options.method, options.pattern)?;
    }
    let perplexity_before = if eval.is_empty() {
        None
    } else {
        Some(
            perplexity_of_sequences(model, eval, options.batch_size, None, device)
                .map_err(model_err("held-out perplexity (before)"))?,
        )
    };

    let n_blocks = model.num_layers();
    let bar = tracing::info_span!(
        "prune",
        progress_total = n_blocks as u64,
        progress_unit = "blocks",
        progress_message = "pruning"
    );
    let mut layers = Vec::with_capacity(targets.len());
    let mut masks = Masks::new();
    for block in 0..n_blocks {
        let here: Vec<&LinearTarget> = targets.iter().filter(|t| t.block == block).collect();
        if here.is_empty() {
            tracing::trace!(target: "sparsity::progress", parent: &bar, progress_inc = 1u64);
            continue;
        }
        let mut pruners = here
            .iter()
            .map(|t| {
                let mut p = LayerPruner::new(&t.name, t.shape, options.method, options.pattern)?
                    .with_hessian_precision(options.hessian_precision);
                if let Some(r) = options.max_damp_retries {
                    p = p.with_max_damp_retries(r);
                }
                Ok(p)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut grams: Vec<Option<HessianStats>> = here
            .iter()
            .map(|t| {
                options
                    .recon_error
                    .then(|| HessianStats::new(t.shape[1], Precision::F64))
            })
            .collect();
        let capture = Capture::sites(here.iter().map(|t| t.input_site.clone()));
        for chunk in sequences.chunks(options.batch_size) {
            let ids: Vec<i64> = chunk.iter().flatten().map(|&t| i64::from(t)).collect();
            let batch = Batch::from_ids(&ids, chunk.len(), len, device)
                .map_err(model_err("calibration batch"))?;
            let out = model
                .forward(&batch, &capture, None)
                .map_err(model_err("calibration forward"))?;
            for ((t, pruner), gram) in here.iter().zip(&mut pruners).zip(&mut grams) {
                let site = out
                    .sites
                    .get(&t.input_site)
                    .ok_or_else(|| PruneError::Model {
                        what: t.name.clone(),
                        reason: format!("site `{}` was not recorded", t.input_site),
                    })?;
                let dims = site.dims();
                let values = site.to_vec().map_err(model_err(&t.input_site))?;
                let x = ArrayD::from_shape_vec(IxDyn(&dims), values).map_err(|e| {
                    PruneError::Model {
                        what: t.input_site.clone(),
                        reason: e.to_string(),
                    }
                })?;
                pruner.add_batch(x.view())?;
                if let Some(g) = gram {
                    g.add_batch(&t.name, x.view())?;
                }
            }
        }
        for ((t, pruner), gram) in here.iter().zip(&pruners).zip(&grams) {
            let dense = read_weight(model, t)?;
            let pruned = pruner.prune(dense.view())?;
            let rel = gram
                .as_ref()
                .map(|g| gram_recon_error(&dense, &pruned.weight, &g.hessian_f64()));
            write_weight(model, t, &pruned.weight)?;
            tracing::info!(
                layer = %t.name,
                sparsity = pruned.report.sparsity,
                rel_recon_error = ?rel,
                "pruned"
            );
            let mask = if t.hf_in_out {
                pruned.mask.t().as_standard_layout().into_owned()
            } else {
                pruned.mask
            };
            masks.insert(t.name.clone(), mask);
            layers.push(LayerRecord {
                target: (*t).clone(),
                report: pruned.report,
                rel_recon_error: rel,
            });
        }
        tracing::trace!(target: "sparsity::progress", parent: &bar, progress_inc = 1u64);
    }
    drop(bar);
    let perplexity_after = if eval.is_empty() {
        None
    } else {
        Some(
            perplexity_of_sequences(model, eval, options.batch_size, None, device)
                .map_err(model_err("held-out perplexity (after)"))?,
        )
    };
    let (pruned, total) = layers.iter().fold((0usize, 0usize), |(p, n), l| {
        (
            p + l.report.pruned,
            n + l.report.shape[0] * l.report.shape[1],
        )
    });
    let report = ModelPruneReport {
        family: model.family().to_string(),
        options: ModelPruneOptions {
            groups,
            ..options.clone()
        },
        calibration_sequences: sequences.len(),
        calibration_length: len,
        layers,
        overall_sparsity: if total == 0 {
            0.0
        } else {
            pruned as f64 / total as f64
        },
        perplexity_before,
        perplexity_after,
    };
    Ok((report, masks))
}

/// tr(ΔW G ΔWᵀ) / tr(W G Wᵀ) with ΔW = W − Wₚ (both [out, in]) and G [in, in].
fn gram_recon_error(dense: &Array2<f32>, pruned: &Array2<f32>, g: &Array2<f64>) -> f64 {
    let d = dense.mapv(f64::from);
    let delta = &d - &pruned.mapv(f64::from);
    let quad = |w: &Array2<f64>| (w.dot(g) * w).sum();
    let (num, den) = (quad(&delta), quad(&d));
    if den > 0.0 {
        num / den
    } else if num == 0.0 {
        0.0
    } else {
        f64::INFINITY
    }
}

/// `nsamples` calibration windows of `seq_len` tokens from one token stream, with starts drawn
/// uniformly (seeded; windows may overlap, as in the reference's C4 sampler).
pub fn calibration_windows(
    tokens: &[u32],
    seq_len: usize,
    nsamples: usize,
    seed: u64,
) -> Result<Vec<Vec<u32>>> {
    if seq_len == 0 || nsamples == 0 {
        return Err(PruneError::InvalidOption {
            layer: "<model>".into(),
            option: "calibration".into(),
            value: format!("{nsamples} windows of {seq_len} tokens"),
            reason: "both must be at least 1".into(),
        });
    }
    if tokens.len() < seq_len {
        return Err(PruneError::InvalidOption {
            layer: "<model>".into(),
            option: "calibration length".into(),
            value: seq_len.to_string(),
            reason: format!("the calibration text has only {} tokens", tokens.len()),
        });
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let last = tokens.len() - seq_len;
    Ok((0..nsamples)
        .map(|_| {
            let s = rng.random_range(0..=last);
            tokens[s..s + seq_len].to_vec()
        })
        .collect())
}

/// Writes the pruned model as a Hugging Face directory at `out` (config.json, model.safetensors,
/// plus `masks.safetensors`, `pruning.json` and `tokenizer.json` copied from `tokenizer` when
/// given), atomically: everything goes to a sibling temporary directory that replaces `out`. An
/// existing `out` is replaced only when it is empty or an earlier output (holds `pruning.json`).
pub fn save_pruned(
    model: &CausalLm,
    report: &ModelPruneReport,
    masks: &Masks,
    tokenizer: Option<&Path>,
    out: &Path,
) -> Result<()> {
    let werr = |file: &Path| {
        let file = file.display().to_string();
        move |e: std::io::Error| PruneError::Write {
            file: file.clone(),
            reason: e.to_string(),
        }
    };
    // Only an empty directory or an earlier pruning output (it holds `pruning.json`) is replaced:
    // `--out .` or a typo must never delete unrelated files.
    if out.exists() {
        let replaceable = out.is_dir()
            && (out.join("pruning.json").is_file()
                || std::fs::read_dir(out).map_err(werr(out))?.next().is_none());
        if !replaceable {
            return Err(PruneError::Write {
                file: out.display().to_string(),
                reason: "exists and is not an earlier pruning output (no pruning.json) nor an \
                         empty directory; refusing to replace it"
                    .into(),
            });
        }
    }
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&parent).map_err(werr(&parent))?;
    let tmp = tempfile::Builder::new()
        .prefix(".pruned-")
        .tempdir_in(&parent)
        .map_err(werr(&parent))?;
    model
        .save_pretrained(tmp.path())
        .map_err(|e| PruneError::Write {
            file: tmp.path().display().to_string(),
            reason: e.to_string(),
        })?;
    let tensors: Vec<(String, OutTensor)> = masks
        .iter()
        .map(|(k, m)| (k.clone(), OutTensor::U8(m.clone().into_dyn())))
        .collect();
    let meta = [
        ("format".to_string(), "pt".to_string()),
        ("convention".to_string(), "1 = pruned".to_string()),
    ]
    .into_iter()
    .collect();
    write_safetensors(&tmp.path().join("masks.safetensors"), &tensors, Some(meta))?;
    let json = serde_json::to_vec_pretty(report).map_err(|e| PruneError::Write {
        file: "pruning.json".into(),
        reason: e.to_string(),
    })?;
    let jp = tmp.path().join("pruning.json");
    std::fs::write(&jp, json).map_err(werr(&jp))?;
    if let Some(tok) = tokenizer {
        let dst = tmp.path().join("tokenizer.json");
        std::fs::copy(tok, &dst).map_err(werr(tok))?;
    }
    if out.exists() {
        std::fs::remove_dir_all(out).map_err(werr(out))?;
    }
    let kept = tmp.keep();
    std::fs::rename(&kept, out).map_err(|e| {
        let _ = std::fs::remove_dir_all(&kept);
        PruneError::Write {
            file: out.display().to_string(),
            reason: e.to_string(),
        }
    })?;
    Ok(())
}
