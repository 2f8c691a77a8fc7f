//! `config.json` of a Hugging Face model directory: serde mirrors of `transformers`' `GPT2Config` and
//! `MambaConfig` with their defaults (unknown fields are ignored), and the activation functions they name.

use std::path::Path;

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
pub use crate::llama::config::{LlamaConfig, Rope, RopeScaling};
pub use crate::opt::config::OptConfig;

/// The model families this crate implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelFamily {
    /// GPT-2 (`model_type: "gpt2"`).
    Gpt2,
    /// Mamba-1 (`model_type: "mamba"`).
    Mamba,
    /// OPT (`model_type: "opt"`).
    Opt,
    /// The Llama family (`model_type: "llama"`, `"qwen2"`, `"mistral"`).
    Llama,
}

impl std::fmt::Display for ModelFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Gpt2 => "gpt2",
            Self::Mamba => "mamba",
            Self::Opt => "opt",
            Self::Llama => "llama",
        })
    }
}

/// An element-wise activation named by `activation_function` / `hidden_act` (transformers' `ACT2FN` keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
    GeluTanh,
    /// `gelu`, `gelu_python`: exact 0.5·x·(1 + erf(x/√2)).
    GeluErf,
    /// `quick_gelu`: x·σ(1.702·x).
    QuickGelu,
    /// `relu`.
    Relu,
    /// `silu` / `swish`: x·σ(x).
    Silu,
    /// `tanh`.
    Tanh,
    /// `sigmoid`.
    Sigmoid,
    /// `linear`: identity.
    Identity,
}

impl Activation {
    /// Parses a transformers activation name; `None` for names this crate does not implement.
    pub fn from_hf_name(name: &str) -> Option<Self> {
        Some(match name {
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Self::GeluTanh,
            "gelu" | "gelu_python" => Self::GeluErf,
            "quick_gelu" => Self::QuickGelu,
            "relu" => Self::Relu,
            "silu" | "swish" => Self::Silu,
            "tanh" => Self::Tanh,
            "sigmoid" => Self::Sigmoid,
            "linear" => Self::Identity,
            _ => return None,
        })
    }

    /// Applies the activation element-wise (errors only if the backend cannot hand out the
    /// values of an f32 tensor).
    pub fn apply<const D: usize>(self, x: Tensor<D>) -> Result<Tensor<D>> {
        use burn::tensor::activation as act;
        Ok(match self {
            // transformers' gelu_new, 0.5·x·(1 + tanh(u)), u = √(2/π)·(x + 0.044715·x³).
            // Training and gradients use burn's `gelu_approximate` (powf + tanh). Inference (no
            // autodiff) evaluates the same function as x·sigmoid(2u), one exp per element
            // (0.5·(1 + tanh u) = sigmoid(2u)); the two forms agree to float rounding (parity
            // tests), but training the demo GPT-2 with the sigmoid form's backward gave a
            // different loss curve, so the differentiable path keeps burn's form.
            Self::GeluTanh if x.is_autodiff() => act::gelu_approximate(x),
            Self::GeluTanh => gelu_new_host(x)?,
            Self::GeluErf => act::gelu(x),
            Self::QuickGelu => x.clone() * act::sigmoid(x.mul_scalar(1.702)),
            Self::Relu => act::relu(x),
            Self::Silu => act::silu(x),
            Self::Tanh => x.tanh(),
            Self::Sigmoid => act::sigmoid(x),
            Self::Identity => x,
        })
    }
}

/// Inference `gelu_new` as x·sigmoid(2u) in one host pass over the values (the tensor form
/// takes about eight element-wise passes), with the vectorisable [`crate::mamba::exp_f32`],
/// parallel over chunks; falls back to the tensor form when the values are not f32.
fn gelu_new_host<const D: usize>(x: Tensor<D>) -> Result<Tensor<D>> {
    use rayon::prelude::*;
    const TWO_SQRT_2_OVER_PI: f32 =
        (2.0 * std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2) as f32;
    let device = x.device();
    let shape = x.shape();
    if x.dtype() != burn::tensor::DType::F32 {
        let cube = x.clone() * x.clone() * x.clone();
        let u2 = (x.clone() + cube * 0.044715) * f64::from(TWO_SQRT_2_OVER_PI);
        return Ok(x * burn::tensor::activation::sigmoid(u2));
    }
    let mut v = x
        .into_data()
        .try_into_vec::<f32>()
        .map_err(|e| ModelError::Backend(format!("gelu_new: reading the f32 values: {e:?}")))?;
    v.par_chunks_mut(1 << 14).for_each(|c| {
        for e in c.iter_mut() {
            let a = *e;
            let u2 = TWO_SQRT_2_OVER_PI * (a + 0.044715 * a * a * a);
            *e = a / (1.0 + crate::mamba::exp_f32(-u2));
        }
    });
    Ok(Tensor::from_data(
        burn::tensor::TensorData::new(v, shape),
        &device,
    ))
}

/// The largest size any config field may declare (2^48): far above every real model, and small
/// enough that products of a few sizes cannot overflow. Sizes are also compared with the
/// checkpoint's tensors before anything is allocated from them (the family loaders).
pub const MAX_CONFIG_SIZE: usize = 1 << 48;

/// A size field must be in 1..=[`MAX_CONFIG_SIZE`].
pub(crate) fn check_size(path: &Path, name: &str, v: usize) -> Result<()> {
    if v == 0 {
        return Err(ModelError::config(path, format!("{name} must be > 0")));
    }
    if v > MAX_CONFIG_SIZE {
        return Err(ModelError::config(
            path,
            format!("{name} = {v} exceeds the largest supported size 2^48"),
        ));
    }
    Ok(())
}

pub(crate) fn activation_of(path: &Path, field: &str, name: &str) -> Result<Activation> {
    Activation::from_hf_name(name).ok_or_else(|| {
        ModelError::config(
            path,
            format!(
                "{field} = `{name}` is not supported (gelu_new, gelu_pytorch_tanh, gelu_fast, gelu, gelu_python, \
                 quick_gelu, relu, silu, swish, tanh, sigmoid, linear)"
            ),
        )
    })
}

/// A token id field: transformers accepts one id or a list (Llama 3's `eos_token_id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    /// One id.
    One(i64),
    /// Several ids (the first is used where one is needed).
    Many(Vec<i64>),
}

impl TokenIds {
    /// The id (the first of a list).
    pub fn first(&self) -> Option<i64> {
        match self {
            Self::One(id) => Some(*id),
            Self::Many(ids) => ids.first().copied(),
        }
    }
}

/// The `model_type` values this crate loads.
pub const MODEL_TYPES: &[&str] = &["gpt2", "mamba", "opt", "llama", "qwen2", "mistral"];

/// `transformers.GPT2Config` (the fields that change the math; unknown fields are ignored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Gpt2Config {
    /// Vocabulary size (rows of `wte`).
    pub vocab_size: usize,
    /// Maximum sequence length (rows of `wpe`).
    pub n_positions: usize,
    /// Hidden width.
    pub n_embd: usize,
    /// Number of decoder blocks.
    pub n_layer: usize,
    /// Number of attention heads (`n_embd` must be a multiple).
    pub n_head: usize,
    /// MLP width; `None` means 4·n_embd.
    pub n_inner: Option<usize>,
    /// MLP activation (`gelu_new` by default).
    pub activation_function: String,
    /// LayerNorm epsilon.
    pub layer_norm_epsilon: f64,
    /// Divide attention scores by √head_dim.
    pub scale_attn_weights: bool,
    /// Additionally divide attention scores by (layer index + 1).
    pub scale_attn_by_inverse_layer_idx: bool,
    /// Compute attention scores in f32 (always the case here; kept for the round trip).
    pub reorder_and_upcast_attn: bool,
    /// `lm_head` shares the input embedding.
    pub tie_word_embeddings: bool,
    /// Beginning-of-sequence token id.
    pub bos_token_id: Option<i64>,
    /// End-of-sequence token id.
    pub eos_token_id: Option<i64>,
    /// Padding token id (GPT-2 has none by default; padding then uses eos).
    pub pad_token_id: Option<i64>,
}

impl Default for Gpt2Config {
    fn default() -> Self {
        Self {
            vocab_size: 50257,
            n_positions: 1024,
            n_embd: 768,
            n_layer: 12,
            n_head: 12,
            n_inner: None,
            activation_function: "gelu_new".into(),
            layer_norm_epsilon: 1e-5,
            scale_attn_weights: true,
            scale_attn_by_inverse_layer_idx: false,
            reorder_and_upcast_attn: false,
            tie_word_embeddings: true,
            bos_token_id: Some(50256),
            eos_token_id: Some(50256),
            pad_token_id: None,
        }
    }
}

impl Gpt2Config {
    /// MLP width: `n_inner` or 4·n_embd.
    pub fn inner_size(&self) -> usize {
        self.n_inner.unwrap_or(self.n_embd.saturating_mul(4))
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head.max(1)
    }

    /// The parsed MLP activation.
    pub fn activation(&self) -> Result<Activation> {
        activation_of(
            Path::new("<config>"),
            "activation_function",
            &self.activation_function,
        )
    }

    /// Checks that the sizes are consistent; `path` names the config in the error.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("n_positions", self.n_positions),
            ("n_embd", self.n_embd),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
            (
                if self.n_inner.is_some() {
                    "n_inner"
                } else {
                    "n_inner (default 4 × n_embd)"
                },
                self.inner_size(),
            ),
        ];
        for (name, v) in positive {
            check_size(path, name, v)?;
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return Err(ModelError::config(
                path,
                format!(
                    "n_embd = {} is not a multiple of n_head = {}",
                    self.n_embd, self.n_head
                ),
            ));
        }
        if !(self.layer_norm_epsilon.is_finite() && self.layer_norm_epsilon >= 0.0) {
            return Err(ModelError::config(
                path,
                "layer_norm_epsilon must be finite and >= 0",
            ));
        }
        activation_of(path, "activation_function", &self.activation_function)?;
        Ok(())
    }
}

/// `time_step_rank`: an integer or `"auto"` (= ⌈hidden_size / 16⌉).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TimeStepRank {
    /// An explicit rank.
    Explicit(usize),
    /// `"auto"`.
    Auto(String),
}

impl Default for TimeStepRank {
    fn default() -> Self {
        Self::Auto("auto".into())
    }
}

/// `transformers.MambaConfig` (the fields that change the math; unknown fields are ignored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MambaConfig {
    /// Vocabulary size (rows of `backbone.embeddings`).
    pub vocab_size: usize,
    /// Residual stream width.
    pub hidden_size: usize,
    /// SSM state size N.
    pub state_size: usize,
    /// Number of Mamba blocks.
    pub num_hidden_layers: usize,
    /// RMSNorm epsilon (also used by the final norm).
    pub layer_norm_epsilon: f64,
    /// Expansion factor: `intermediate_size` defaults to expand·hidden_size.
    pub expand: usize,
    /// Inner width E; `None` means expand·hidden_size.
    pub intermediate_size: Option<usize>,
    /// Depthwise causal convolution width.
    pub conv_kernel: usize,
    /// Rank of the Δ projection, or `"auto"`.
    pub time_step_rank: TimeStepRank,
    /// Bias in `in_proj` and `out_proj`.
    pub use_bias: bool,
    /// Bias in `conv1d`.
    pub use_conv_bias: bool,
    /// Activation of the conv output and of the gate (`silu`).
    pub hidden_act: String,
    /// Keep the residual in f32 (always the case here; kept for the round trip).
    pub residual_in_fp32: bool,
    /// `lm_head` shares the input embedding.
    pub tie_word_embeddings: bool,
    /// Beginning-of-sequence token id.
    pub bos_token_id: Option<i64>,
    /// End-of-sequence token id.
    pub eos_token_id: Option<i64>,
    /// Padding token id.
    pub pad_token_id: Option<i64>,
    /// Lower end of the Δ initialisation range (training init only).
    pub time_step_min: f64,
    /// Upper end of the Δ initialisation range (training init only).
    pub time_step_max: f64,
    /// Floor of the initial Δ (training init only).
    pub time_step_floor: f64,
}

impl Default for MambaConfig {
    fn default() -> Self {
        Self {
            vocab_size: 50280,
            hidden_size: 768,
            state_size: 16,
            num_hidden_layers: 32,
            layer_norm_epsilon: 1e-5,
            expand: 2,
            intermediate_size: None,
            conv_kernel: 4,
            time_step_rank: TimeStepRank::default(),
            use_bias: false,
            use_conv_bias: true,
            hidden_act: "silu".into(),
            residual_in_fp32: true,
            tie_word_embeddings: true,
            bos_token_id: Some(0),
            eos_token_id: Some(0),
            pad_token_id: Some(0),
            time_step_min: 0.001,
            time_step_max: 0.1,
            time_step_floor: 1e-4,
        }
    }
}

impl MambaConfig {
    /// Inner width E: `intermediate_size` or expand·hidden_size.
    pub fn inner_size(&self) -> usize {
        self.intermediate_size
            .unwrap_or(self.expand.saturating_mul(self.hidden_size))
    }

    /// Δ rank R: the explicit value or ⌈hidden_size / 16⌉.
    pub fn dt_rank(&self) -> usize {
        match &self.time_step_rank {
            TimeStepRank::Explicit(r) => *r,
            TimeStepRank::Auto(_) => self.hidden_size.div_ceil(16),
        }
    }

    /// The parsed activation.
    pub fn activation(&self) -> Result<Activation> {
        activation_of(Path::new("<config>"), "hidden_act", &self.hidden_act)
    }

    /// Checks that the sizes are consistent; `path` names the config in the error.
    pub fn validate(&self, path: &Path) -> Result<()> {
        if let TimeStepRank::Auto(s) = &self.time_step_rank
            && s != "auto"
        {
            return Err(ModelError::config(
                path,
                format!("time_step_rank = `{s}`: expected an integer or \"auto\""),
            ));
        }
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("state_size", self.state_size),
            ("num_hidden_layers", self.num_hidden_layers),
            (
                if self.intermediate_size.is_some() {
                    "intermediate_size"
                } else {
                    "intermediate_size (default expand × hidden_size)"
                },
                self.inner_size(),
            ),
            ("conv_kernel", self.conv_kernel),
            (
                match self.time_step_rank {
                    TimeStepRank::Explicit(_) => "time_step_rank",
                    TimeStepRank::Auto(_) => "time_step_rank (auto: ⌈hidden_size / 16⌉)",
                },
                self.dt_rank(),
            ),
            ("expand", self.expand.max(1)),
        ];
        for (name, v) in positive {
            check_size(path, name, v)?;
        }
        if !(self.layer_norm_epsilon.is_finite() && self.layer_norm_epsilon >= 0.0) {
            return Err(ModelError::config(
                path,
                "layer_norm_epsilon must be finite and >= 0",
            ));
        }
        activation_of(path, "hidden_act", &self.hidden_act)?;
        Ok(())
    }
}

/// A parsed `config.json`, by family.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelConfig {
    /// A GPT-2 config.
    Gpt2(Gpt2Config),
    /// A Mamba config.
    Mamba(MambaConfig),
    /// An OPT config.
    Opt(OptConfig),
    /// A Llama-family config (llama, qwen2, mistral).
    Llama(LlamaConfig),
}

impl ModelConfig {
    /// The family.
    pub fn family(&self) -> ModelFamily {
        match self {
            Self::Gpt2(_) => ModelFamily::Gpt2,
            Self::Mamba(_) => ModelFamily::Mamba,
            Self::Opt(_) => ModelFamily::Opt,
            Self::Llama(_) => ModelFamily::Llama,
        }
    }

    /// Parses config.json text; `path` names the file in errors. Dispatches on `model_type`.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| ModelError::config(path, e.to_string()))?;
        let model_type = value
            .get("model_type")
            .and_then(|v| v.as_str())
            .ok_or_else(|| ModelError::config(path, "no string field `model_type`"))?
            .to_string();
        let config = match model_type.as_str() {
            "gpt2" => Self::Gpt2(
                serde_json::from_value(value)
                    .map_err(|e| ModelError::config(path, e.to_string()))?,
            ),
            "mamba" => Self::Mamba(
                serde_json::from_value(value)
                    .map_err(|e| ModelError::config(path, e.to_string()))?,
            ),
            "opt" => Self::Opt(
                serde_json::from_value(value)
                    .map_err(|e| ModelError::config(path, e.to_string()))?,
            ),
            "llama" | "qwen2" | "mistral" => Self::Llama(LlamaConfig::from_value(value, path)?),
            _ => {
                return Err(ModelError::UnknownModelType {
                    path: path.into(),
                    model_type,
                });
            }
        };
        match &config {
            Self::Gpt2(c) => c.validate(path)?,
            Self::Mamba(c) => c.validate(path)?,
            Self::Opt(c) => c.validate(path)?,
            Self::Llama(c) => c.validate(path)?,
        }
        Ok(config)
    }

    /// Reads and parses `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(ModelError::MissingFile {
                path: path.into(),
                what: "model config (config.json)".into(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        Self::from_json_str(&text, path)
    }

    /// The config.json text that `transformers` reads back (`model_type` and `architectures` added).
    pub fn to_json_string(&self) -> Result<String> {
        let (mut value, model_type, arch) = match self {
            Self::Gpt2(c) => (serde_json::to_value(c), "gpt2", "GPT2LMHeadModel"),
            Self::Mamba(c) => (serde_json::to_value(c), "mamba", "MambaForCausalLM"),
            Self::Opt(c) => (serde_json::to_value(c), "opt", "OPTForCausalLM"),
            Self::Llama(c) => (
                serde_json::to_value(c),
                c.model_type.as_str(),
                c.architecture_name(),
            ),
        };
        let value = value
            .as_mut()
            .map_err(|e| ModelError::config("<in memory>", e.to_string()))?;
        if let Some(obj) = value.as_object_mut() {
            obj.insert("model_type".into(), model_type.into());
            obj.insert("architectures".into(), serde_json::json!([arch]));
            obj.insert("dtype".into(), "float32".into());
            // the weights are written as f32 whatever the source checkpoint held
            obj.remove("torch_dtype");
            obj.remove("quantization_config");
            if let Self::Mamba(c) = self {
                // transformers expects the resolved integer sizes.
                obj.insert("intermediate_size".into(), c.inner_size().into());
                obj.insert("time_step_rank".into(), c.dt_rank().into());
            }
        }
        serde_json::to_string_pretty(value)
            .map_err(|e| ModelError::config("<in memory>", e.to_string()))
    }
}
