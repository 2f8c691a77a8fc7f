//! Loading and saving Hugging Face model directories: `config.json` + `model.safetensors` (or a sharded
//! `model.safetensors.index.json`), with transformers' tensor names and layouts.
//!
//! Key table (l = layer; `{P}` = `transformer.` or nothing, both accepted):
//!
//! | checkpoint (HF)                          | here                         | layout            |
//! |------------------------------------------|------------------------------|-------------------|
//! | `{P}wte.weight`, `{P}wpe.weight`         | `Gpt2::wte`, `wpe`           | as stored         |
//! | `{P}h.{l}.attn.c_attn.{weight,bias}` …   | `Gpt2Block::c_attn` …        | Conv1D [in, out], as stored |
//! | `{P}ln_f.{weight,bias}`                  | `Gpt2::ln_f`                 | as stored         |
//! | `{P}h.{l}.attn.bias`, `.attn.masked_bias`| ignored (old causal-mask buffers) |              |
//! | `backbone.embeddings.weight` (or `backbone.embedding.weight`) | `Mamba::embeddings` | as stored |
//! | `backbone.layers.{l}.mixer.{in,out,dt}_proj.weight`, `x_proj.weight` | `Dense`/`x_proj` | nn.Linear [out, in] → [in, out] |
//! | `backbone.layers.{l}.mixer.conv1d.weight`| `conv_weight`                | [E, 1, K] → [E, K] |
//! | `backbone.layers.{l}.mixer.{A_log, D}`, `norm.weight`, `backbone.norm_f.weight` | as named | as stored |
//! | `lm_head.weight`                         | `lm_head` (ignored when tied)| as stored         |
//!
//! f16 / bf16 / f64 tensors are converted to f32; any other dtype is an error naming the tensor.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};
use safetensors::tensor::{Dtype, TensorInfo};

use crate::config::{Gpt2Config, MambaConfig, ModelConfig};
use crate::error::{ModelError, Result};
use crate::gpt2::{Conv1D, Gpt2, Gpt2Block, LayerNorm};
use crate::lm::CausalLm;
use crate::mamba::{Mamba, MambaBlock, MambaMixer};
use crate::util::tensor_to_vec;

struct Entry {
    file: usize,
    info: TensorInfo,
}

/// The tensors of one checkpoint (one or several safetensors files), taken one by one by name.
pub struct TensorStore {
    files: Vec<(PathBuf, Vec<u8>, usize)>,
    entries: BTreeMap<String, Entry>,
    taken: BTreeSet<String>,
    /// The checkpoint, for error messages.
    pub path: PathBuf,
}

fn dtype_name(d: Dtype) -> String {
    format!("{d:?}")
}

impl TensorStore {
    /// Opens `model.safetensors` or, failing that, `model.safetensors.index.json` in `dir`.
    pub fn open_dir(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        if single.is_file() {
            Self::open_files(std::slice::from_ref(&single), single.clone())
        } else if index.is_file() {
            let text = std::fs::read_to_string(&index).map_err(|e| ModelError::io(&index, e))?;
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| ModelError::Safetensors {
                    path: index.clone(),
                    message: e.to_string(),
                })?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| ModelError::Safetensors {
                    path: index.clone(),
                    message: "no `weight_map` object".into(),
                })?;
            let shards: BTreeSet<String> = map
                .values()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect();
            let files: Vec<PathBuf> = shards.iter().map(|f| dir.join(f)).collect();
            Self::open_files(&files, index)
        } else {
            Err(ModelError::MissingFile {
                path: single,
                what: "model weights (model.safetensors or model.safetensors.index.json)".into(),
            })
        }
    }

    /// Opens the given safetensors files as one checkpoint.
    pub fn open_files(files: &[PathBuf], path: PathBuf) -> Result<Self> {
        let mut buffers = Vec::with_capacity(files.len());
        for f in files {
            if !f.is_file() {
                return Err(ModelError::MissingFile {
                    path: f.clone(),
                    what: "safetensors shard".into(),
                });
            }
            let bytes = std::fs::read(f).map_err(|e| ModelError::io(f, e))?;
            buffers.push((f.clone(), bytes));
        }
        Self::from_buffers(buffers, path)
    }

    /// A checkpoint from safetensors files already in memory, each `(name for errors, bytes)`;
    /// every header is validated (offsets, lengths, the total against the buffer) before any
    /// tensor is read.
    pub fn from_buffers(buffers: Vec<(PathBuf, Vec<u8>)>, path: PathBuf) -> Result<Self> {
        let mut store = Self {
            files: Vec::new(),
            entries: BTreeMap::new(),
            taken: BTreeSet::new(),
            path,
        };
        for (f, bytes) in buffers {
            let (n, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| {
                ModelError::Safetensors {
                    path: f.clone(),
                    message: e.to_string(),
                }
            })?;
            let idx = store.files.len();
            for (name, info) in meta.tensors() {
                store.entries.insert(
                    name,
                    Entry {
                        file: idx,
                        info: info.clone(),
                    },
                );
            }
            store.files.push((f, bytes, 8 + n));
        }
        Ok(store)
    }

    /// Whether the checkpoint holds `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// All tensor names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// The shape of tensor `name`, if the checkpoint has it.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.entries.get(name).map(|e| e.info.shape.as_slice())
    }

    /// Marks `name` as used without reading it.
    pub fn ignore(&mut self, name: &str) {
        self.taken.insert(name.to_string());
    }

    /// Reads `name` as f32 values, checking its shape against `expected` (which may be given as another
    /// shape with the same elements, e.g. [E, 1, K] for an [E, K] param: pass the file's layout).
    pub fn take(&mut self, name: &str, expected: &[usize]) -> Result<Vec<f32>> {
        let entry = self
            .entries
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor {
                path: self.path.clone(),
                tensor: name.to_string(),
                expected: expected.to_vec(),
            })?;
        let (file, bytes, offset) = &self.files[entry.file];
        if entry.info.shape != expected {
            return Err(ModelError::WrongShape {
                path: file.clone(),
                tensor: name.to_string(),
                found: entry.info.shape.clone(),
                expected: expected.to_vec(),
            });
        }
        let (start, end) = entry.info.data_offsets;
        let raw =
            bytes
                .get(offset + start..offset + end)
                .ok_or_else(|| ModelError::Safetensors {
                    path: file.clone(),
                    message: format!("data of `{name}` out of bounds"),
                })?;
        let values = decode_f32(raw, entry.info.dtype).ok_or_else(|| ModelError::WrongDtype {
            path: file.clone(),
            tensor: name.to_string(),
            found: dtype_name(entry.info.dtype),
            expected: "F32, F16, BF16 or F64".into(),
        })?;
        self.taken.insert(name.to_string());
        Ok(values)
    }

    /// Errors with the list of tensors that were never taken or ignored.
    pub fn check_all_used(&self) -> Result<()> {
        let unused: Vec<String> = self
            .entries
            .keys()
            .filter(|k| !self.taken.contains(*k))
            .cloned()
            .collect();
        if unused.is_empty() {
            Ok(())
        } else {
            Err(ModelError::UnexpectedTensors {
                path: self.path.clone(),
                tensors: unused,
            })
        }
    }
}

/// Weights are floats: F32, F16, BF16 or F64, converted by the workspace's one decoder.
fn decode_f32(raw: &[u8], dtype: Dtype) -> Option<Vec<f32>> {
    if sparsity_io::tensors::is_float(dtype) {
        sparsity_io::decode_f32(raw, dtype)
    } else {
        None
    }
}

fn p<const D: usize>(values: Vec<f32>, shape: [usize; D], device: &Device) -> Param<Tensor<D>> {
    crate::util::param(values, shape, device)
}

/// [rows, cols] row-major → [cols, rows].
pub(crate) fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

impl TensorStore {
    pub(crate) fn param1(
        &mut self,
        name: &str,
        n: usize,
        device: &Device,
    ) -> Result<Param<Tensor<1>>> {
        Ok(p(self.take(name, &[n])?, [n], device))
    }

    pub(crate) fn param2(
        &mut self,
        name: &str,
        shape: [usize; 2],
        device: &Device,
    ) -> Result<Param<Tensor<2>>> {
        Ok(p(self.take(name, &shape)?, shape, device))
    }

    /// An nn.Linear weight [out, in] held as [in, out].
    pub(crate) fn linear_t(
        &mut self,
        name: &str,
        d_in: usize,
        d_out: usize,
        device: &Device,
    ) -> Result<Param<Tensor<2>>> {
        let v = self.take(name, &[d_out, d_in])?;
        Ok(p(transpose(&v, d_out, d_in), [d_in, d_out], device))
    }

    /// An `nn.Linear` `{name}.weight` [out, in] (held [in, out]) with `{name}.bias` when `bias`.
    pub(crate) fn dense(
        &mut self,
        name: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
        device: &Device,
    ) -> Result<crate::nn::Dense> {
        Ok(crate::nn::Dense {
            weight: self.linear_t(&format!("{name}.weight"), d_in, d_out, device)?,
            bias: self.opt1(&format!("{name}.bias"), d_out, bias, device)?,
        })
    }

    pub(crate) fn opt1(
        &mut self,
        name: &str,
        n: usize,
        on: bool,
        device: &Device,
    ) -> Result<Option<Param<Tensor<1>>>> {
        if on {
            Ok(Some(self.param1(name, n, device)?))
        } else {
            Ok(None)
        }
    }
}

/// Builds a GPT-2 from a checkpoint.
pub fn gpt2_from_store(
    config: &Gpt2Config,
    store: &mut TensorStore,
    device: &Device,
) -> Result<Gpt2> {
    let pre = if store.contains("transformer.wte.weight") {
        "transformer."
    } else {
        ""
    };
    let d = config.n_embd;
    let inner = config.inner_size();
    let ln = |store: &mut TensorStore, name: &str| -> Result<LayerNorm> {
        Ok(LayerNorm {
            weight: store.param1(&format!("{pre}{name}.weight"), d, device)?,
            bias: store.param1(&format!("{pre}{name}.bias"), d, device)?,
        })
    };
    let conv = |store: &mut TensorStore, name: &str, d_in: usize, d_out: usize| -> Result<Conv1D> {
        Ok(Conv1D {
            weight: store.param2(&format!("{pre}{name}.weight"), [d_in, d_out], device)?,
            bias: store.param1(&format!("{pre}{name}.bias"), d_out, device)?,
        })
    };
    // Every size the config declares is compared with the checkpoint before it sizes anything.
    check_layer_count(
        store,
        "n_layer",
        config.n_layer,
        &format!("{pre}h."),
        ".ln_1.weight",
    )?;
    let wte_name = format!("{pre}wte.weight");
    check_dim(store, "vocab_size", config.vocab_size, &wte_name, 0)?;
    check_dim(store, "n_embd", d, &wte_name, 1)?;
    check_dim(
        store,
        "n_positions",
        config.n_positions,
        &format!("{pre}wpe.weight"),
        0,
    )?;
    check_dim(
        store,
        "n_inner",
        inner,
        &format!("{pre}h.0.mlp.c_fc.weight"),
        1,
    )?;
    let wte = store.param2(&wte_name, [config.vocab_size, d], device)?;
    let wpe = store.param2(&format!("{pre}wpe.weight"), [config.n_positions, d], device)?;
    let mut blocks = Vec::new();
    for l in 0..config.n_layer {
        let h = format!("h.{l}");
        blocks.push(Gpt2Block {
            ln_1: ln(store, &format!("{h}.ln_1"))?,
            c_attn: conv(store, &format!("{h}.attn.c_attn"), d, 3 * d)?,
            attn_c_proj: conv(store, &format!("{h}.attn.c_proj"), d, d)?,
            ln_2: ln(store, &format!("{h}.ln_2"))?,
            c_fc: conv(store, &format!("{h}.mlp.c_fc"), d, inner)?,
            mlp_c_proj: conv(store, &format!("{h}.mlp.c_proj"), inner, d)?,
        });
        for buf in ["attn.bias", "attn.masked_bias"] {
            store.ignore(&format!("{pre}{h}.{buf}"));
        }
    }
    let ln_f = ln(store, "ln_f")?;
    let lm_head = if config.tie_word_embeddings {
        store.ignore("lm_head.weight");
        None
    } else {
        Some(store.param2("lm_head.weight", [config.vocab_size, d], device)?)
    };
    store.check_all_used()?;
    Ok(Gpt2 {
        wte,
        wpe,
        blocks,
        ln_f,
        lm_head,
        config: config.clone(),
    })
}

/// Largest layer index + 1 among the tensors named `{prefix}{l}{suffix}`, and whether every
/// index below it is present.
pub(crate) fn layers_in_store(store: &TensorStore, prefix: &str, suffix: &str) -> (usize, bool) {
    let found: BTreeSet<usize> = store
        .names()
        .filter_map(|n| n.strip_prefix(prefix)?.strip_suffix(suffix)?.parse().ok())
        .collect();
    let count = found.last().map_or(0, |&l| l + 1);
    (count, found.len() == count)
}

/// Checks a config's layer count against the checkpoint before anything is allocated from it.
pub(crate) fn check_layer_count(
    store: &TensorStore,
    key: &'static str,
    declared: usize,
    prefix: &str,
    suffix: &str,
) -> Result<()> {
    let (count, contiguous) = layers_in_store(store, prefix, suffix);
    if declared != count || !contiguous {
        return Err(ModelError::ConfigMismatch {
            path: store.path.clone(),
            key,
            value: declared,
            tensor: format!("{prefix}{{l}}{suffix}"),
            found: if contiguous {
                format!("exists for {count} layers (0..{count})")
            } else {
                format!(
                    "has gaps in its layer indices (highest {})",
                    count.saturating_sub(1)
                )
            },
        });
    }
    Ok(())
}

/// Checks that axis `axis` of `tensor` (when the checkpoint has it) equals the config's `value`
/// for `key`, before anything is allocated from the config's value.
pub(crate) fn check_dim(
    store: &TensorStore,
    key: &'static str,
    value: usize,
    tensor: &str,
    axis: usize,
) -> Result<()> {
    let Some(shape) = store.shape(tensor) else {
        return Ok(());
    };
    if shape.get(axis) != Some(&value) {
        return Err(ModelError::ConfigMismatch {
            path: store.path.clone(),
            key,
            value,
            tensor: tensor.into(),
            found: format!("has shape {shape:?} (axis {axis})"),
        });
    }
    Ok(())
}

/// Builds a Mamba from a checkpoint.
pub fn mamba_from_store(
    config: &MambaConfig,
    store: &mut TensorStore,
    device: &Device,
) -> Result<Mamba> {
    let hd = config.hidden_size;
    let e = config.inner_size();
    let n = config.state_size;
    let r = config.dt_rank();
    let k = config.conv_kernel;
    let emb_name = if !store.contains("backbone.embeddings.weight")
        && store.contains("backbone.embedding.weight")
    {
        "backbone.embedding.weight"
    } else {
        "backbone.embeddings.weight"
    };
    // Every size the config declares is compared with the checkpoint before it sizes anything.
    check_layer_count(
        store,
        "num_hidden_layers",
        config.num_hidden_layers,
        "backbone.layers.",
        ".norm.weight",
    )?;
    check_dim(store, "vocab_size", config.vocab_size, emb_name, 0)?;
    check_dim(store, "hidden_size", hd, emb_name, 1)?;
    let m0 = "backbone.layers.0.mixer";
    check_dim(store, "intermediate_size", e, &format!("{m0}.D"), 0)?;
    check_dim(store, "state_size", n, &format!("{m0}.A_log"), 1)?;
    check_dim(store, "conv_kernel", k, &format!("{m0}.conv1d.weight"), 2)?;
    check_dim(
        store,
        "time_step_rank",
        r,
        &format!("{m0}.dt_proj.weight"),
        1,
    )?;
    let embeddings = store.param2(emb_name, [config.vocab_size, hd], device)?;
    let mut layers = Vec::new();
    for l in 0..config.num_hidden_layers {
        let m = format!("backbone.layers.{l}.mixer");
        let in_proj = store.dense(&format!("{m}.in_proj"), hd, 2 * e, config.use_bias, device)?;
        let conv_weight = p(
            store.take(&format!("{m}.conv1d.weight"), &[e, 1, k])?,
            [e, k],
            device,
        );
        let conv_bias = store.opt1(&format!("{m}.conv1d.bias"), e, config.use_conv_bias, device)?;
        let x_proj = store.linear_t(&format!("{m}.x_proj.weight"), e, r + 2 * n, device)?;
        let dt_proj = store.dense(&format!("{m}.dt_proj"), r, e, true, device)?;
        let a_log = store.param2(&format!("{m}.A_log"), [e, n], device)?;
        let d = store.param1(&format!("{m}.D"), e, device)?;
        let out_proj = store.dense(&format!("{m}.out_proj"), e, hd, config.use_bias, device)?;
        let norm = store.param1(&format!("backbone.layers.{l}.norm.weight"), hd, device)?;
        layers.push(MambaBlock {
            norm,
            mixer: MambaMixer {
                in_proj,
                conv_weight,
                conv_bias,
                x_proj,
                dt_proj,
                a_log,
                d,
                out_proj,
            },
        });
    }
    let norm_f = store.param1("backbone.norm_f.weight", hd, device)?;
    let lm_head = if config.tie_word_embeddings {
        store.ignore("lm_head.weight");
        None
    } else {
        Some(store.param2("lm_head.weight", [config.vocab_size, hd], device)?)
    };
    store.check_all_used()?;
    Ok(Mamba {
        embeddings,
        layers,
        norm_f,
        lm_head,
        config: config.clone(),
    })
}

/// Loads config.json + weights from a model directory.
pub(crate) fn load_dir(dir: &Path, device: &Device) -> Result<CausalLm> {
    if !dir.is_dir() {
        return Err(ModelError::MissingFile {
            path: dir.into(),
            what: "model directory".into(),
        });
    }
    let config = ModelConfig::from_file(&dir.join("config.json"))?;
    let mut store = TensorStore::open_dir(dir)?;
    tracing::debug!(dir = %dir.display(), family = %config.family(), "loading model");
    load_parts(config, &mut store, device)
}

/// Loads a model from config.json text and `model.safetensors` bytes held in memory (`label`
/// names them in errors): the same parsing and checks as [`load_dir`].
pub(crate) fn load_bytes(
    config_json: &str,
    weights: Vec<u8>,
    label: &Path,
    device: &Device,
) -> Result<CausalLm> {
    let config = ModelConfig::from_json_str(config_json, &label.join("config.json"))?;
    let weights_path = label.join("model.safetensors");
    let mut store = TensorStore::from_buffers(vec![(weights_path.clone(), weights)], weights_path)?;
    load_parts(config, &mut store, device)
}

/// The list of loadable families: `model_type` → the family's loader.
fn load_parts(config: ModelConfig, store: &mut TensorStore, device: &Device) -> Result<CausalLm> {
    Ok(match config {
        ModelConfig::Gpt2(c) => CausalLm::new(gpt2_from_store(&c, store, device)?),
        ModelConfig::Mamba(c) => CausalLm::new(mamba_from_store(&c, store, device)?),
        ModelConfig::Opt(c) => CausalLm::new(crate::opt::Opt::from_store(&c, store, device)?),
        ModelConfig::Llama(c) => CausalLm::new(crate::llama::Llama::from_store(&c, store, device)?),
    })
}

/// Named f32 tensors in HF layout, ready for safetensors.
pub(crate) type Named = Vec<(String, Vec<usize>, Vec<f32>)>;

pub(crate) fn push<const D: usize>(
    out: &mut Named,
    name: String,
    t: &Param<Tensor<D>>,
) -> Result<()> {
    let v = t.val();
    out.push((name, v.dims().to_vec(), tensor_to_vec(&v)?));
    Ok(())
}

/// `{name}.weight` in the `nn.Linear` layout [out, in] and `{name}.bias` when the layer has one.
pub(crate) fn push_dense(out: &mut Named, name: &str, d: &crate::nn::Dense) -> Result<()> {
    push_t(out, format!("{name}.weight"), &d.weight)?;
    if let Some(b) = &d.bias {
        push(out, format!("{name}.bias"), b)?;
    }
    Ok(())
}

pub(crate) fn push_t(out: &mut Named, name: String, t: &Param<Tensor<2>>) -> Result<()> {
    let v = t.val();
    let [rows, cols] = v.dims();
    out.push((
        name,
        vec![cols, rows],
        transpose(&tensor_to_vec(&v)?, rows, cols),
    ));
    Ok(())
}

fn gpt2_tensors(m: &Gpt2) -> Result<Named> {
    let mut out = Named::new();
    let pre = "transformer.";
    push(&mut out, format!("{pre}wte.weight"), &m.wte)?;
    push(&mut out, format!("{pre}wpe.weight"), &m.wpe)?;
    for (l, b) in m.blocks.iter().enumerate() {
        let h = format!("{pre}h.{l}");
        for (name, ln) in [("ln_1", &b.ln_1), ("ln_2", &b.ln_2)] {
            push(&mut out, format!("{h}.{name}.weight"), &ln.weight)?;
            push(&mut out, format!("{h}.{name}.bias"), &ln.bias)?;
        }
        for (name, c) in [
            ("attn.c_attn", &b.c_attn),
            ("attn.c_proj", &b.attn_c_proj),
            ("mlp.c_fc", &b.c_fc),
            ("mlp.c_proj", &b.mlp_c_proj),
        ] {
            push(&mut out, format!("{h}.{name}.weight"), &c.weight)?;
            push(&mut out, format!("{h}.{name}.bias"), &c.bias)?;
        }
    }
    push(&mut out, format!("{pre}ln_f.weight"), &m.ln_f.weight)?;
    push(&mut out, format!("{pre}ln_f.bias"), &m.ln_f.bias)?;
    if let Some(w) = &m.lm_head {
        push(&mut out, "lm_head.weight".into(), w)?;
    }
    Ok(out)
}

fn mamba_tensors(m: &Mamba) -> Result<Named> {
    let mut out = Named::new();
    push(&mut out, "backbone.embeddings.weight".into(), &m.embeddings)?;
    for (l, b) in m.layers.iter().enumerate() {
        let x = &b.mixer;
        let pre = format!("backbone.layers.{l}.mixer");
        push_dense(&mut out, &format!("{pre}.in_proj"), &x.in_proj)?;
        let cw = x.conv_weight.val();
        let [e, k] = cw.dims();
        out.push((
            format!("{pre}.conv1d.weight"),
            vec![e, 1, k],
            tensor_to_vec(&cw)?,
        ));
        if let Some(bias) = &x.conv_bias {
            push(&mut out, format!("{pre}.conv1d.bias"), bias)?;
        }
        push_t(&mut out, format!("{pre}.x_proj.weight"), &x.x_proj)?;
        push_dense(&mut out, &format!("{pre}.dt_proj"), &x.dt_proj)?;
        push(&mut out, format!("{pre}.A_log"), &x.a_log)?;
        push(&mut out, format!("{pre}.D"), &x.d)?;
        push_dense(&mut out, &format!("{pre}.out_proj"), &x.out_proj)?;
        push(
            &mut out,
            format!("backbone.layers.{l}.norm.weight"),
            &b.norm,
        )?;
    }
    push(&mut out, "backbone.norm_f.weight".into(), &m.norm_f)?;
    if let Some(w) = &m.lm_head {
        push(&mut out, "lm_head.weight".into(), w)?;
    }
    Ok(out)
}

/// Serialises named f32 tensors to safetensors bytes (metadata `format: pt`, as transformers writes).
pub fn safetensors_bytes(
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    path: &Path,
) -> Result<Vec<u8>> {
    let out: Vec<(String, sparsity_io::OutTensor)> = tensors
        .iter()
        .map(|(n, shape, v)| {
            ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(shape), v.clone())
                .map(|a| (n.clone(), sparsity_io::OutTensor::F32(a)))
                .map_err(|e| ModelError::Safetensors {
                    path: path.into(),
                    message: format!("{n}: {e}"),
                })
        })
        .collect::<Result<_>>()?;
    let meta: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    sparsity_io::tensors::serialize(path, &out, Some(meta)).map_err(|e| ModelError::Safetensors {
        path: path.into(),
        message: e.to_string(),
    })
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    sparsity_io::write_atomic(path, bytes)
        .map_err(sparsity_io::IoError::into_io)
        .map_err(|e| ModelError::io(path, e))
}

pub(crate) fn save(dir: &Path, config: ModelConfig, tensors: Named) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let cfg_path = dir.join("config.json");
    write(&cfg_path, config.to_json_string()?.as_bytes())?;
    let st_path = dir.join("model.safetensors");
    let views: Vec<(&str, &[usize], &[f32])> = tensors
        .iter()
        .map(|(n, s, v)| (n.as_str(), s.as_slice(), v.as_slice()))
        .collect();
    let meta: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    sparsity_io::write_f32_streaming(&st_path, &views, Some(&meta)).map_err(|e| match e {
        sparsity_io::IoError::Io { source, .. } => ModelError::io(&st_path, source),
        other => ModelError::Safetensors {
            path: st_path.clone(),
            message: other.to_string(),
        },
    })?;
    Ok(())
}

impl Gpt2 {
    /// Writes `config.json` and `model.safetensors` (HF names, Conv1D [in, out] layout, tied `lm_head`
    /// omitted) into `dir`, atomically per file.
    pub fn save_pretrained(&self, dir: &Path) -> Result<()> {
        save(
            dir,
            ModelConfig::Gpt2(self.config.clone()),
            gpt2_tensors(self)?,
        )
    }
}

impl Mamba {
    /// Writes `config.json` and `model.safetensors` (HF names, nn.Linear [out, in] layout, tied `lm_head`
    /// omitted) into `dir`, atomically per file.
    pub fn save_pretrained(&self, dir: &Path) -> Result<()> {
        save(
            dir,
            ModelConfig::Mamba(self.config.clone()),
            mamba_tensors(self)?,
        )
    }
}

/// Loads a GPT-2 directory (errors if it holds another family).
pub fn load_gpt2(dir: &Path, device: &Device) -> Result<Gpt2> {
    load_family(dir, device, "gpt2")
}

/// Loads a directory and checks that it holds the family `T`.
fn load_family<T: crate::family::HookedLm + Clone>(
    dir: &Path,
    device: &Device,
    expected: &str,
) -> Result<T> {
    let model = load_dir(dir, device)?;
    model.downcast_ref::<T>().cloned().ok_or_else(|| {
        ModelError::config(
            dir.join("config.json"),
            format!("expected model_type {expected}, found {}", model.family()),
        )
    })
}

/// Loads a Mamba directory (errors if it holds another family).
pub fn load_mamba(dir: &Path, device: &Device) -> Result<Mamba> {
    load_family(dir, device, "mamba")
}

/// Builds a tensor from f32 values (helper for callers assembling inputs).
pub fn tensor_from_vec<const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
    device: &Device,
) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values, shape), device)
}
