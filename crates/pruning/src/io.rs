//! File input/output: safetensors tensors as ndarray arrays, atomic safetensors output, and
//! the PyTorch `.pt` files of the original mask study (one `torch.save`d tensor per file).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ndarray::{Array2, ArrayD, IxDyn};
use safetensors::{Dtype, SafeTensors};

use crate::compare::MaskedLayer;
use crate::error::{PruneError, Result};

/// A safetensors file held in memory.
#[derive(Debug)]
pub struct TensorFile {
    path: PathBuf,
    bytes: Vec<u8>,
}

fn file_err(path: &Path, reason: impl std::fmt::Display) -> PruneError {
    PruneError::File {
        file: path.display().to_string(),
        reason: reason.to_string(),
    }
}

impl TensorFile {
    /// Reads and validates the safetensors header of `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| file_err(path, e))?;
        SafeTensors::deserialize(&bytes)
            .map_err(|e| file_err(path, format!("not a safetensors file: {e}")))?;
        Ok(Self {
            path: path.to_path_buf(),
            bytes,
        })
    }

    fn parsed(&self) -> Result<SafeTensors<'_>> {
        SafeTensors::deserialize(&self.bytes).map_err(|e| file_err(&self.path, e))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .parsed()?
            .names()
            .into_iter()
            .map(String::from)
            .collect();
        names.sort();
        Ok(names)
    }

    /// The `__metadata__` string map of the header (empty if none).
    pub fn metadata(&self) -> Result<HashMap<String, String>> {
        let (_, meta) =
            SafeTensors::read_metadata(&self.bytes).map_err(|e| file_err(&self.path, e))?;
        Ok(meta.metadata().clone().unwrap_or_default())
    }

    /// Whether a tensor is present.
    pub fn contains(&self, name: &str) -> Result<bool> {
        Ok(self.parsed()?.names().contains(&name))
    }

    /// Tensor `name` converted to f32 (from f32, f64, f16, bf16, or any integer/bool type).
    pub fn array(&self, name: &str) -> Result<ArrayD<f32>> {
        let st = self.parsed()?;
        let view = st.tensor(name).map_err(|_| PruneError::MissingTensor {
            file: self.path.display().to_string(),
            tensor: name.to_string(),
            available: st.names().join(", "),
        })?;
        let data = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F64 => data
                .chunks_exact(8)
                .map(|c| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(c);
                    f64::from_le_bytes(b) as f32
                })
                .collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::U8 | Dtype::BOOL => data.iter().map(|&v| v as f32).collect(),
            Dtype::I8 => data.iter().map(|&v| v as i8 as f32).collect(),
            Dtype::I32 => data
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32)
                .collect(),
            Dtype::I64 => data
                .chunks_exact(8)
                .map(|c| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(c);
                    i64::from_le_bytes(b) as f32
                })
                .collect(),
            other => {
                return Err(PruneError::UnsupportedTensor {
                    file: self.path.display().to_string(),
                    tensor: name.to_string(),
                    what: format!("dtype {other:?}"),
                });
            }
        };
        ArrayD::from_shape_vec(IxDyn(view.shape()), values).map_err(|e| file_err(&self.path, e))
    }

    /// Tensor `name` as a 2-D f32 array.
    pub fn array2(&self, name: &str) -> Result<Array2<f32>> {
        let a = self.array(name)?;
        let shape = a.shape().to_vec();
        a.into_dimensionality()
            .map_err(|_| PruneError::UnsupportedTensor {
                file: self.path.display().to_string(),
                tensor: name.to_string(),
                what: format!("rank {} (shape {shape:?}), expected 2", shape.len()),
            })
    }
}

/// (dtype, shape, little-endian bytes) of a tensor to serialise.
type RawTensor = (Dtype, Vec<usize>, Vec<u8>);

/// One tensor to write.
#[derive(Debug, Clone)]
pub enum OutTensor {
    /// f32 data with its shape.
    F32(ArrayD<f32>),
    /// u8 data with its shape.
    U8(ArrayD<u8>),
}

impl OutTensor {
    fn bytes(&self) -> (Dtype, Vec<usize>, Vec<u8>) {
        match self {
            OutTensor::F32(a) => (
                Dtype::F32,
                a.shape().to_vec(),
                a.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
            OutTensor::U8(a) => (Dtype::U8, a.shape().to_vec(), a.iter().copied().collect()),
        }
    }
}

/// Writes `tensors` (name → tensor) and string `metadata` to `path` as safetensors, atomically.
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, OutTensor)],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let raw: Vec<(String, RawTensor)> = tensors
        .iter()
        .map(|(n, t)| (n.clone(), t.bytes()))
        .collect();
    let mut views = Vec::with_capacity(raw.len());
    for (name, (dtype, shape, data)) in &raw {
        let v = safetensors::tensor::TensorView::new(*dtype, shape.clone(), data).map_err(|e| {
            PruneError::Write {
                file: path.display().to_string(),
                reason: format!("tensor `{name}`: {e}"),
            }
        })?;
        views.push((name.clone(), v));
    }
    let bytes = safetensors::serialize(views, metadata).map_err(|e| PruneError::Write {
        file: path.display().to_string(),
        reason: e.to_string(),
    })?;
    sparsity_metrics::io::write_atomic(path, &bytes).map_err(|e| PruneError::Write {
        file: path.display().to_string(),
        reason: e.to_string(),
    })
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
    let file = TensorFile::open(path)?;
    let st = file.parsed()?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut keys: Vec<String> = Vec::new();
    let mut masks: HashMap<String, String> = HashMap::new();
    let mut weights: HashMap<String, String> = HashMap::new();
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    for name in names {
        let view = st.tensor(&name).map_err(|e| file_err(path, e))?;
        if view.shape().len() != 2 {
            continue;
        }
        let mut key = layer_key(&name);
        if key.is_empty() {
            key = stem.clone();
        }
        if !keys.contains(&key) {
            keys.push(key.clone());
        }
        if is_mask_dtype(view.dtype()) {
            masks.insert(key, name);
        } else {
            weights.insert(key, name);
        }
    }
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        let values = match weights.get(&key) {
            Some(n) => Some(file.array2(n)?),
            None => None,
        };
        let layer = match (masks.get(&key), values) {
            (Some(m), values) => {
                let mask = file.array2(m)?.mapv(|v| u8::from(v != 0.0));
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
