//! The per-layer file workflow behind `cargo xtask prune-layer`: a safetensors file with
//! `weight` [out, in] and `calib` [tokens, in] (rows [j·L, (j+1)·L) form calibration
//! sequence j) is pruned, and `weight` (f32) + `mask` (u8, 1 = pruned) are written.

use std::collections::HashMap;
use std::path::Path;

use ndarray::{Array2, Axis, s};
use serde::{Deserialize, Serialize};

use crate::config::{Method, Pattern};
use crate::error::{PruneError, Result};
use crate::io::{OutTensor, TensorFile, write_safetensors};
use crate::prune::{LayerPruner, PruneReport, Pruned};
use crate::recon::ReconError;

/// Where the calibration sequence length comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeqLenSource {
    /// Given explicitly (`--seq-len`).
    Explicit,
    /// The file's `seqlen` metadata entry.
    Metadata,
    /// Neither: all rows form one sequence.
    AllRows,
}

/// A pruned layer file, with the reconstruction error over its calibration rows.
#[derive(Debug, Clone)]
pub struct LayerFileOutcome {
    /// The pruned weight, mask and diagnostics.
    pub pruned: Pruned,
    /// ‖WXᵀ − WₚXᵀ‖²_F / ‖WXᵀ‖²_F over `calib`, in f64.
    pub rel_recon_error: f64,
    /// The sequence length used.
    pub seq_len: usize,
    /// Where it came from.
    pub seq_len_source: SeqLenSource,
    /// Number of calibration sequences.
    pub sequences: usize,
}

/// A JSON-friendly summary of a [`LayerFileOutcome`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerFileSummary {
    /// Pruning diagnostics.
    pub report: PruneReport,
    /// Relative reconstruction error over the calibration rows.
    pub rel_recon_error: f64,
    /// The sequence length used.
    pub seq_len: usize,
    /// Where it came from.
    pub seq_len_source: SeqLenSource,
    /// Number of calibration sequences.
    pub sequences: usize,
}

impl LayerFileOutcome {
    /// The serialisable summary.
    pub fn summary(&self) -> LayerFileSummary {
        LayerFileSummary {
            report: self.pruned.report.clone(),
            rel_recon_error: self.rel_recon_error,
            seq_len: self.seq_len,
            seq_len_source: self.seq_len_source,
            sequences: self.sequences,
        }
    }
}

/// Prunes the layer stored in `input` (tensors `weight` and `calib`), feeding the
/// calibration rows one sequence at a time, as the reference's forward hooks do.
pub fn prune_layer_file(
    input: &Path,
    method: Method,
    pattern: Pattern,
    seq_len: Option<usize>,
    max_damp_retries: Option<usize>,
) -> Result<LayerFileOutcome> {
    let file = TensorFile::open(input)?;
    let layer = input
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| input.display().to_string());
    let weight = file.array2_f32("weight")?;
    let calib = file.array2_f32("calib")?;
    let (tokens, in_features) = calib.dim();
    if in_features != weight.ncols() {
        return Err(PruneError::ShapeMismatch {
            layer,
            what: "calib [tokens, in] vs weight [out, in]".into(),
            expected: vec![tokens, weight.ncols()],
            got: vec![tokens, in_features],
        });
    }
    let (seq_len, source) = match seq_len {
        Some(l) => (l, SeqLenSource::Explicit),
        None => match file.metadata().get("seqlen") {
            Some(v) => {
                let l = v.trim().parse::<usize>().map_err(|_| PruneError::File {
                    file: input.display().to_string(),
                    reason: format!("metadata `seqlen` = {v:?} is not a non-negative integer"),
                })?;
                (l, SeqLenSource::Metadata)
            }
            None => (tokens, SeqLenSource::AllRows),
        },
    };
    if seq_len == 0 || tokens % seq_len != 0 {
        return Err(PruneError::InvalidOption {
            layer,
            option: "seq-len".into(),
            value: seq_len.to_string(),
            reason: format!("must be > 0 and divide the {tokens} calibration rows"),
        });
    }
    let sequences = tokens / seq_len;
    let mut pruner = LayerPruner::new(&layer, [weight.nrows(), weight.ncols()], method, pattern)?;
    if let Some(r) = max_damp_retries {
        pruner = pruner.with_max_damp_retries(r);
    }
    for chunk in calib.axis_chunks_iter(Axis(0), seq_len) {
        pruner.add_batch(chunk.into_dyn())?;
    }
    let pruned = pruner.prune(weight.view())?;
    let mut recon = ReconError::new(&layer, weight.view(), pruned.weight.view())?;
    recon.add_batch(calib.slice(s![.., ..]).into_dyn())?;
    Ok(LayerFileOutcome {
        rel_recon_error: recon.value(),
        pruned,
        seq_len,
        seq_len_source: source,
        sequences,
    })
}

/// Writes `weight` (f32) and `mask` (u8, 1 = pruned) to `out` atomically, with the method,
/// pattern and sparsity in the metadata.
pub fn write_pruned_layer(out: &Path, pruned: &Pruned) -> Result<()> {
    let mut meta = HashMap::new();
    meta.insert("method".to_string(), pruned.report.method.clone());
    meta.insert("pattern".to_string(), pruned.report.pattern.to_string());
    meta.insert("sparsity".to_string(), pruned.report.sparsity.to_string());
    meta.insert("mask_convention".to_string(), "u8, 1 = pruned".to_string());
    write_safetensors(
        out,
        &[
            (
                "weight".to_string(),
                OutTensor::F32(pruned.weight.clone().into_dyn()),
            ),
            (
                "mask".to_string(),
                OutTensor::U8(pruned.mask.clone().into_dyn()),
            ),
        ],
        Some(meta),
    )?;
    Ok(())
}

/// Mask [out, in] from a pruned weight: 1 where the entry is exactly zero.
pub fn mask_from_weight(weight: &Array2<f32>) -> Array2<u8> {
    weight.mapv(|v| u8::from(v == 0.0))
}
