//! `cargo xtask dump`: run a model on the id cases of a safetensors file and write logits, hidden states
//! and every site under the fixture names (`input_ids` → `logits`, `input_ids_2` → `logits_2`, …), f32.

use std::path::Path;

use burn::tensor::Device;
use sparsity_io::tensors::{Dtype, SafetensorsFile};

use crate::error::{ModelError, Result};
use crate::lm::{Batch, CausalLm};
use crate::loader::safetensors_bytes;
use crate::sites::Capture;
use crate::util::tensor_to_vec;

/// One id case read from the input file.
#[derive(Debug, Clone, PartialEq)]
pub struct IdCase {
    /// Name suffix: "" for the first case, "_2", "_3", … after.
    pub suffix: String,
    /// Row-major ids.
    pub ids: Vec<i64>,
    /// Batch size.
    pub batch: usize,
    /// Sequence length.
    pub seq: usize,
}

/// Reads `input_ids`, `input_ids_2`, … (int64 or int32, [batch, seq]) from a safetensors file; other
/// tensors in the file are ignored.
pub fn read_id_cases(path: &Path) -> Result<Vec<IdCase>> {
    if !path.is_file() {
        return Err(ModelError::MissingFile {
            path: path.into(),
            what: "input ids (safetensors)".into(),
        });
    }
    let st = SafetensorsFile::open(path).map_err(|e| match e {
        sparsity_io::IoError::Io { source, .. } => ModelError::io(path, source),
        other => ModelError::Safetensors {
            path: path.into(),
            message: other.to_string(),
        },
    })?;
    let mut cases = Vec::new();
    for c in 1.. {
        let suffix = if c == 1 {
            String::new()
        } else {
            format!("_{c}")
        };
        let name = format!("input_ids{suffix}");
        let Ok((meta, data)) = st.raw(&name) else {
            break;
        };
        let shape = meta.shape;
        if shape.len() != 2 || shape[0] == 0 || shape[1] == 0 {
            return Err(ModelError::Invalid(format!(
                "{}: tensor `{name}` has shape {shape:?}, expected a non-empty [batch, seq]",
                path.display()
            )));
        }
        let ids: Vec<i64> = match meta.dtype {
            Dtype::I64 => data
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
                .collect(),
            Dtype::I32 => data
                .chunks_exact(4)
                .map(|b| i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                .collect(),
            other => {
                return Err(ModelError::WrongDtype {
                    path: path.into(),
                    tensor: name,
                    found: format!("{other:?}"),
                    expected: "I64 (or I32)".into(),
                });
            }
        };
        cases.push(IdCase {
            suffix,
            ids,
            batch: shape[0],
            seq: shape[1],
        });
    }
    if cases.is_empty() {
        return Err(ModelError::MissingTensor {
            path: path.into(),
            tensor: "input_ids".into(),
            expected: vec![],
        });
    }
    Ok(cases)
}

/// What [`dump`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpSummary {
    /// Number of id cases.
    pub cases: usize,
    /// Names of the tensors written.
    pub tensors: Vec<String>,
}

/// Runs `model` on every case of `input_ids` and writes `logits{suffix}` and every site (`hidden_states.{i}`,
/// `block_out.{l}`, `mlp_act.{l}`/`attn_probs.{l}` or `mixer_gated.{l}`/`mixer_dt.{l}`; `ssm_state.{l}`
/// too when `with_ssm_state`) as f32 to `out`, atomically. Each site is written in the layout
/// transformers' hooks see it ([`crate::HookedLm::hf_site_shape`]: OPT's MLP runs on rows
/// flattened to [batch·seq, width]); the values are the site's, in the same row-major order.
pub fn dump(
    model: &CausalLm,
    input_ids: &Path,
    out: &Path,
    with_ssm_state: bool,
    device: &Device,
) -> Result<DumpSummary> {
    let cases = read_id_cases(input_ids)?;
    let mut capture = Capture::all();
    if with_ssm_state {
        for l in 0..model.num_layers() {
            if model.site_width(&format!("ssm_state.{l}")).is_ok() {
                capture = capture.with(format!("ssm_state.{l}"));
            }
        }
    }
    let mut tensors = Vec::new();
    for case in &cases {
        let batch = Batch::from_ids(&case.ids, case.batch, case.seq, device)?;
        let fwd = model.forward(&batch, &capture, None)?;
        let logits = fwd.logits;
        tensors.push((
            format!("logits{}", case.suffix),
            logits.dims().to_vec(),
            tensor_to_vec(&logits)?,
        ));
        for (name, t) in fwd.sites {
            let kind = name.rsplit_once('.').map_or(name.as_str(), |(k, _)| k);
            let shape = model.inner().hf_site_shape(kind, &t.dims());
            tensors.push((format!("{name}{}", case.suffix), shape, t.to_vec()?));
        }
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let bytes = safetensors_bytes(&tensors, out)?;
    sparsity_io::write_atomic(out, &bytes)
        .map_err(sparsity_io::IoError::into_io)
        .map_err(|e| ModelError::io(out, e))?;
    Ok(DumpSummary {
        cases: cases.len(),
        tensors: tensors.into_iter().map(|t| t.0).collect(),
    })
}
