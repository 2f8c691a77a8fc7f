//! One entry point over every method: [`prune`] for a layer whose calibration statistics are
//! already collected, and [`LayerPruner`], which collects them from streamed batches (the
//! shape whole-model pruning plugs into: feed each layer's inputs, then prune it).

use ndarray::{Array2, ArrayView2, ArrayViewD};
use serde::{Deserialize, Serialize};

use crate::calibration::check_weight;
use crate::config::{Method, Pattern, StatsKind};
use crate::error::{PruneError, Result};
use crate::magnitude::{magnitude_nm_mask, magnitude_unstructured_mask};
use crate::sparsegpt::{HessianStats, Precision, SparseGptParams, sparsegpt};
use crate::wanda::{
    WandaStats, check_stats, nm_mask, row_unstructured_mask, variant_mask, wanda_scores,
};

/// Calibration statistics of one layer; each method reads the part it needs.
#[derive(Debug, Clone, Default)]
pub struct Calibration {
    /// Wanda's per-feature norms (Wanda and its variant).
    pub wanda: Option<WandaStats>,
    /// SparseGPT's Hessian.
    pub hessian: Option<HessianStats>,
}

/// Per-layer diagnostics of a pruning run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PruneReport {
    /// Layer name.
    pub layer: String,
    /// Method name.
    pub method: String,
    /// The requested pattern.
    pub pattern: Pattern,
    /// Weight shape [out, in] (after any Conv1D transpose).
    pub shape: [usize; 2],
    /// Number of pruned entries.
    pub pruned: usize,
    /// Fraction of pruned entries.
    pub sparsity: f64,
    /// Calibration sequences the statistics were built from (0 for magnitude).
    pub nsamples: usize,
    /// Wanda variant: the α found by bisection.
    pub variant_alpha: Option<f64>,
    /// SparseGPT: number of 10× damping retries.
    pub damp_retries: Option<usize>,
    /// SparseGPT: relative damping finally used.
    pub percdamp_used: Option<f64>,
    /// SparseGPT: input columns with diag H = 0.
    pub dead_columns: Option<Vec<usize>>,
    /// SparseGPT: the OBS loss the reference prints.
    pub obs_loss: Option<f64>,
}

/// A pruned layer.
#[derive(Debug, Clone)]
pub struct Pruned {
    /// [out, in] pruned weight (f32).
    pub weight: Array2<f32>,
    /// [out, in] mask, 1 = pruned.
    pub mask: Array2<u8>,
    /// Diagnostics.
    pub report: PruneReport,
}

/// Prunes `weight` [out, in] of layer `layer` with `method` and `pattern`, using the
/// calibration statistics the method needs (`SparseGpt` uses the default retry limit; see
/// [`prune_with`] to change it).
pub fn prune(
    layer: &str,
    weight: ArrayView2<f32>,
    calibration: &Calibration,
    method: Method,
    pattern: Pattern,
) -> Result<Pruned> {
    prune_with(layer, weight, calibration, method, pattern, None)
}

/// [`prune`] with an explicit SparseGPT damping-retry limit (`None`: the default).
pub fn prune_with(
    layer: &str,
    weight: ArrayView2<f32>,
    calibration: &Calibration,
    method: Method,
    pattern: Pattern,
    max_damp_retries: Option<usize>,
) -> Result<Pruned> {
    let (rows, cols) = weight.dim();
    method.validate(layer)?;
    pattern.validate(layer, [rows, cols])?;
    check_weight(layer, &weight)?;
    let mut report = PruneReport {
        layer: layer.to_string(),
        method: method.name().to_string(),
        pattern,
        shape: [rows, cols],
        pruned: 0,
        sparsity: 0.0,
        nsamples: 0,
        variant_alpha: None,
        damp_retries: None,
        percdamp_used: None,
        dead_columns: None,
        obs_loss: None,
    };
    let missing = |what: &str| PruneError::MissingStats {
        layer: layer.to_string(),
        method: method.name().to_string(),
        what: what.to_string(),
    };
    let (weight_out, mask) = match method {
        Method::Magnitude => {
            let mask = match pattern {
                Pattern::Unstructured(r) => magnitude_unstructured_mask(weight, r),
                Pattern::NM { n, m } => magnitude_nm_mask(weight, n, m),
            };
            (apply_mask(weight, &mask), mask)
        }
        Method::Wanda | Method::WandaVariant => {
            let stats = calibration
                .wanda
                .as_ref()
                .ok_or_else(|| missing("Wanda statistics (scaler_row)"))?;
            check_stats(layer, stats, cols)?;
            report.nsamples = stats.nsamples();
            let scores = wanda_scores(weight, stats.scaler_row());
            let mask = match (method, pattern) {
                (_, Pattern::NM { n, m }) => nm_mask(scores.view(), n, m),
                (Method::WandaVariant, Pattern::Unstructured(r)) => {
                    let (mask, search) = variant_mask(scores.view(), r);
                    report.variant_alpha = Some(search.alpha);
                    mask
                }
                (_, Pattern::Unstructured(r)) => row_unstructured_mask(scores.view(), r),
            };
            (apply_mask(weight, &mask), mask)
        }
        Method::SparseGpt {
            blocksize,
            percdamp,
        } => {
            let stats = calibration
                .hessian
                .as_ref()
                .ok_or_else(|| missing("the Hessian"))?;
            if stats.in_features() != cols {
                return Err(PruneError::ShapeMismatch {
                    layer: layer.to_string(),
                    what: "Hessian vs weight in-features".into(),
                    expected: vec![cols, cols],
                    got: vec![stats.in_features(), stats.in_features()],
                });
            }
            report.nsamples = stats.nsamples();
            let params = SparseGptParams {
                blocksize,
                percdamp,
                max_damp_retries: max_damp_retries
                    .unwrap_or(crate::config::DEFAULT_MAX_DAMP_RETRIES),
            };
            let out = match stats.precision() {
                Precision::F32 => {
                    sparsegpt(layer, weight, stats.hessian().view(), pattern, &params)?
                }
                Precision::F64 => {
                    sparsegpt(layer, weight, stats.hessian_f64().view(), pattern, &params)?
                }
            };
            report.damp_retries = Some(out.damp_retries);
            report.percdamp_used = Some(out.percdamp_used);
            report.dead_columns = Some(out.dead_columns);
            report.obs_loss = Some(out.obs_loss);
            (out.weight, out.mask)
        }
    };
    report.pruned = mask.iter().filter(|&&m| m != 0).count();
    report.sparsity = if mask.is_empty() {
        0.0
    } else {
        report.pruned as f64 / mask.len() as f64
    };
    Ok(Pruned {
        weight: weight_out,
        mask,
        report,
    })
}

/// [out, in] copy of `weight` with masked entries set to 0.
pub fn apply_mask(weight: ArrayView2<f32>, mask: &Array2<u8>) -> Array2<f32> {
    let mut out = weight.to_owned();
    ndarray::Zip::from(&mut out).and(mask).for_each(|w, &m| {
        if m != 0 {
            *w = 0.0;
        }
    });
    out
}

/// Prunes one layer from streamed calibration batches: create it with the layer's shape,
/// feed every calibration batch of the layer's **input** with [`LayerPruner::add_batch`]
/// (memory: one layer's statistics, never the activations), then call [`LayerPruner::prune`].
#[derive(Debug, Clone)]
pub struct LayerPruner {
    layer: String,
    shape: [usize; 2],
    method: Method,
    pattern: Pattern,
    calibration: Calibration,
    max_damp_retries: Option<usize>,
}

impl LayerPruner {
    /// A pruner for layer `layer` with weight shape [out, in]; validates method and pattern.
    pub fn new(layer: &str, shape: [usize; 2], method: Method, pattern: Pattern) -> Result<Self> {
        method.validate(layer)?;
        pattern.validate(layer, shape)?;
        let calibration = match method.needs() {
            StatsKind::None => Calibration::default(),
            StatsKind::Wanda => Calibration {
                wanda: Some(WandaStats::new(shape[1])),
                hessian: None,
            },
            StatsKind::Hessian => Calibration {
                wanda: None,
                hessian: Some(HessianStats::new(shape[1], Precision::F32)),
            },
        };
        Ok(Self {
            layer: layer.to_string(),
            shape,
            method,
            pattern,
            calibration,
            max_damp_retries: None,
        })
    }

    /// Accumulates the Hessian in f64 instead of f32 (SparseGPT only; resets the statistics).
    pub fn with_hessian_precision(mut self, precision: Precision) -> Self {
        if self.calibration.hessian.is_some() {
            self.calibration.hessian = Some(HessianStats::new(self.shape[1], precision));
        }
        self
    }

    /// Sets SparseGPT's limit on 10× damping retries.
    pub fn with_max_damp_retries(mut self, retries: usize) -> Self {
        self.max_damp_retries = Some(retries);
        self
    }

    /// Adds a batch of the layer's inputs, [tokens, in] (one sequence) or [batch, seq, in].
    pub fn add_batch(&mut self, x: ArrayViewD<f32>) -> Result<()> {
        if let Some(w) = self.calibration.wanda.as_mut() {
            w.add_batch(&self.layer, x.view())?;
        }
        if let Some(h) = self.calibration.hessian.as_mut() {
            h.add_batch(&self.layer, x.view())?;
        }
        if self.calibration.wanda.is_none() && self.calibration.hessian.is_none() {
            // Magnitude needs no statistics, but the batch is still validated.
            crate::calibration::flatten_batch(&self.layer, x, self.shape[1])?;
        }
        Ok(())
    }

    /// The statistics collected so far.
    pub fn calibration(&self) -> &Calibration {
        &self.calibration
    }

    /// Prunes `weight` [out, in] with the collected statistics.
    pub fn prune(&self, weight: ArrayView2<f32>) -> Result<Pruned> {
        if weight.dim() != (self.shape[0], self.shape[1]) {
            return Err(PruneError::ShapeMismatch {
                layer: self.layer.clone(),
                what: "weight".into(),
                expected: self.shape.to_vec(),
                got: weight.shape().to_vec(),
            });
        }
        prune_with(
            &self.layer,
            weight,
            &self.calibration,
            self.method,
            self.pattern,
            self.max_damp_retries,
        )
    }
}
