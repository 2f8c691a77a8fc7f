//! Mask-comparison input: pruned layers from safetensors files (read through `sparsity-io`) and
//! the PyTorch `.pt` files of the original mask study (one `torch.save`d tensor per file).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use sparsity_io::tensors::Dtype;

use crate::compare::MaskedLayer;
use crate::error::{PruneError, Result};

pub use sparsity_io::tensors::{OutTensor, SafetensorsFile, write_safetensors};

/// The former name of [`SafetensorsFile`] (one implementation, in `sparsity-io`).
pub type TensorFile = SafetensorsFile;

fn file_err(path: &Path, reason: impl std::fmt::Display) -> PruneError {
    PruneError::File {
        file: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Whether a safetensors dtype holds a mask (integers / bool) rather than weight values.
fn is_mask_dtype(d: Dtype) -> bool {
    matches!(
        d,
        Dtype::U8 | Dtype::BOOL | Dtype::I8 | Dtype::I32 | Dtype::I64
    )
}

/// Splits a tensor name into (layer key, role): `x.mask` / `mask` → mask, `x.weight` /
/// `weight` → weight; other names are their own layer.
fn layer_key(name: &str) -> String {
    for suffix in [".mask", ".weight"] {
        if let Some(stem) = name.strip_suffix(suffix) {
            return stem.to_string();
        }
    }
    if name == "mask" || name == "weight" {
        return String::new();
    }
    name.to_string()
}

/// Loads every 2-D tensor of a safetensors file as a [`MaskedLayer`]: integer/bool tensors
/// are masks (non-zero = pruned); float tensors are pruned weights (zeros = pruned). A
/// `<x>.mask` and `<x>.weight` pair (or `mask` + `weight`, named after the file) is one layer
/// with the mask from `mask` and the values from `weight`.
pub fn load_masked_layers(path: &Path) -> Result<Vec<MaskedLayer>> {
    let file = SafetensorsFile::open(path)?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut keys: Vec<String> = Vec::new();
    let mut masks: HashMap<String, String> = HashMap::new();
    let mut weights: HashMap<String, String> = HashMap::new();
    for name in file.names() {
        let meta = file.meta(&name)?;
        if meta.shape.len() != 2 {
            continue;
        }
        let mut key = layer_key(&name);
        if key.is_empty() {
            key = stem.clone();
        }
        if !keys.contains(&key) {
            keys.push(key.clone());
        }
        if is_mask_dtype(meta.dtype) {
            masks.insert(key, name);
        } else {
            weights.insert(key, name);
        }
    }
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        let values = match weights.get(&key) {
            Some(n) => Some(file.array2_f32(n)?),
            None => None,
        };
        let layer = match (masks.get(&key), values) {
            (Some(m), values) => {
                let mask = file.array2_f32(m)?.mapv(|v| u8::from(v != 0.0));
                let mut l = MaskedLayer::from_mask(&key, mask.view());
                l.values = values;
                l
            }
            (None, Some(w)) => MaskedLayer::from_weight(&key, w),
            (None, None) => continue,
        };
        out.push(layer);
    }
    if out.is_empty() {
        return Err(file_err(path, "no 2-D mask or weight tensor found"));
    }
    Ok(out)
}

/// Loads the layers of `path`: a safetensors or PyTorch `.pt` file, or a directory of them
/// (safetensors layers named `<file stem>/<layer>`, or `<file stem>` for a single-layer file;
/// `.pt` files of the original study, `layer{N}-{component}-{indices}-{sparsity}.pt`, are named
/// `layer{N}-{component}` so that the same layer matches across structures).
pub fn load_masked_input(path: &Path) -> Result<Vec<MaskedLayer>> {
    if !path.is_dir() {
        if path.extension().and_then(|e| e.to_str()) == Some("pt") {
            let key = crate::pt::layer_key_from_file_name(path);
            let mut out = Vec::new();
            for (name, t) in crate::pt::read_pt(path)? {
                let integer = t.integer;
                let m = crate::pt::pt_matrix(path, &name, t)?;
                let lname = if name.is_empty() { key.clone() } else { name };
                out.push(if integer {
                    MaskedLayer::from_mask(&lname, m.mapv(|v| u8::from(v != 0.0)).view())
                } else {
                    MaskedLayer::from_weight(&lname, m)
                });
            }
            return Ok(out);
        }
        return load_masked_layers(path);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| file_err(path, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        match f.extension().and_then(|e| e.to_str()) {
            Some("safetensors") => {
                let stem = f
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let layers = load_masked_layers(&f)?;
                let single = layers.len() == 1;
                for mut l in layers {
                    if !(single && l.name == stem) {
                        l.name = format!("{stem}/{}", l.name);
                    }
                    out.push(l);
                }
            }
            Some("pt") => {
                let key = crate::pt::layer_key_from_file_name(&f);
                for (name, t) in crate::pt::read_pt(&f)? {
                    let integer = t.integer;
                    let m = crate::pt::pt_matrix(&f, &name, t)?;
                    let lname = if name.is_empty() {
                        key.clone()
                    } else {
                        format!("{key}/{name}")
                    };
                    out.push(if integer {
                        MaskedLayer::from_mask(&lname, m.mapv(|v| u8::from(v != 0.0)).view())
                    } else {
                        MaskedLayer::from_weight(&lname, m)
                    });
                }
            }
            _ => {}
        }
    }
    if out.is_empty() {
        return Err(file_err(path, "directory holds no .safetensors files"));
    }
    Ok(out)
}
