//! `config.json` of the Llama family (`model_type` `llama`, `qwen2`, `mistral`): a serde mirror of
//! `transformers.LlamaConfig` / `Qwen2Config` / `MistralConfig` (fields that change the math; the
//! others are kept verbatim for the round trip), and the rotary embedding it declares.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{Activation, TokenIds, activation_of, check_size};
use crate::error::{ModelError, Result};

/// The Llama family's `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LlamaConfig {
    /// `llama`, `qwen2` or `mistral`.
    pub model_type: String,
    /// Vocabulary size (rows of `embed_tokens`).
    pub vocab_size: usize,
    /// Residual stream width.
    pub hidden_size: usize,
    /// MLP width (rows of `gate_proj` / `up_proj`).
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention); `None` means `num_attention_heads`.
    pub num_key_value_heads: Option<usize>,
    /// Width of one head; `None` means hidden_size / num_attention_heads.
    pub head_dim: Option<usize>,
    /// MLP gate activation (`silu`).
    pub hidden_act: String,
    /// Maximum sequence length the model was configured for.
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// `lm_head` shares the input embedding.
    pub tie_word_embeddings: bool,
    /// Biases on q/k/v/o (`llama`; Qwen2 always has q/k/v biases and no o bias; Mistral none).
    pub attention_bias: bool,
    /// Biases on gate/up/down (`llama` only).
    pub mlp_bias: bool,
    /// transformers 5's rotary parameters (`rope_type`, `rope_theta`, `factor`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rope_parameters: Option<serde_json::Value>,
    /// transformers 4's `rope_theta` (read when `rope_parameters` has none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    /// transformers 4's `rope_scaling` (read when `rope_parameters` is absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<serde_json::Value>,
    /// Sliding-window width (Mistral: every layer; Qwen2: the layers `layer_types` marks, only with
    /// `use_sliding_window`).
    pub sliding_window: Option<usize>,
    /// Qwen2: whether `sliding_window` is used at all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_sliding_window: Option<bool>,
    /// Qwen2: layers from this index on use the window (when `layer_types` is absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_window_layers: Option<usize>,
    /// Qwen2: `full_attention` / `sliding_attention` per layer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer_types: Option<Vec<String>>,
    /// Beginning-of-sequence token id(s).
    pub bos_token_id: Option<TokenIds>,
    /// End-of-sequence token id(s).
    pub eos_token_id: Option<TokenIds>,
    /// Padding token id.
    pub pad_token_id: Option<TokenIds>,
    /// Every other field, kept for the round trip.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Default for LlamaConfig {
    /// transformers' `LlamaConfig()` defaults (Llama-2-7B's shape).
    fn default() -> Self {
        Self {
            model_type: "llama".into(),
            vocab_size: 32000,
            hidden_size: 4096,
            intermediate_size: 11008,
            num_hidden_layers: 32,
            num_attention_heads: 32,
            num_key_value_heads: None,
            head_dim: None,
            hidden_act: "silu".into(),
            max_position_embeddings: 2048,
            rms_norm_eps: 1e-6,
            tie_word_embeddings: false,
            attention_bias: false,
            mlp_bias: false,
            rope_parameters: None,
            rope_theta: None,
            rope_scaling: None,
            sliding_window: None,
            use_sliding_window: None,
            max_window_layers: None,
            layer_types: None,
            bos_token_id: Some(TokenIds::One(1)),
            eos_token_id: Some(TokenIds::One(2)),
            pad_token_id: None,
            extra: serde_json::Map::new(),
        }
    }
}

/// How the rotary frequencies are scaled (`rope_type`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    /// `default`: θ^(−2i/d).
    Default,
    /// `linear`: every frequency divided by `factor`.
    Linear {
        /// The divisor.
        factor: f64,
    },
    /// `llama3`: low frequencies divided by `factor`, high ones kept, a smooth ramp between.
    Llama3 {
        /// The divisor of the low frequencies.
        factor: f64,
        /// Wavelengths above original / low_freq_factor are scaled.
        low_freq_factor: f64,
        /// Wavelengths below original / high_freq_factor are kept.
        high_freq_factor: f64,
        /// The pre-training context length.
        original_max_position_embeddings: f64,
    },
}

/// The rotary embedding of a config: base and scaling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rope {
    /// θ.
    pub theta: f64,
    /// The scaling.
    pub scaling: RopeScaling,
}

impl Rope {
    /// The inverse frequencies for heads of width `dim` (dim / 2 values), as transformers computes
    /// them (f32 powers, then the scaling).
    pub fn inv_freq(&self, dim: usize) -> Vec<f32> {
        let base = (0..dim / 2).map(|i| {
            let e = (2 * i) as f32 / dim as f32;
            1.0f32 / (self.theta as f32).powf(e)
        });
        match self.scaling {
            RopeScaling::Default => base.collect(),
            RopeScaling::Linear { factor } => base.map(|f| f / factor as f32).collect(),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: old,
            } => {
                let low_wavelen = old / low_freq_factor;
                let high_wavelen = old / high_freq_factor;
                base.map(|f| {
                    let f = f64::from(f);
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    let scaled = if wavelen > low_wavelen { f / factor } else { f };
                    if wavelen < high_wavelen || wavelen > low_wavelen {
                        scaled as f32
                    } else {
                        let smooth = (old / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        ((1.0 - smooth) * scaled / factor + smooth * scaled) as f32
                    }
                })
                .collect()
            }
        }
    }
}

fn num(path: &Path, params: &serde_json::Value, key: &str) -> Result<f64> {
    let v = params
        .get(key)
        .and_then(serde_json::Value::as_f64)
        .ok_or_else(|| {
            ModelError::config(path, format!("rope_parameters: `{key}` must be a number"))
        })?;
    if !v.is_finite() {
        return Err(ModelError::config(
            path,
            format!("rope_parameters: `{key}` = {v} is not finite"),
        ));
    }
    Ok(v)
}

impl LlamaConfig {
    /// Key/value heads.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Width of one head.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Whether q/k/v carry biases.
    pub fn qkv_bias(&self) -> bool {
        match self.model_type.as_str() {
            "qwen2" => true,
            "mistral" => false,
            _ => self.attention_bias,
        }
    }

    /// Whether `o_proj` carries a bias.
    pub fn o_bias(&self) -> bool {
        self.model_type == "llama" && self.attention_bias
    }

    /// Whether the MLP's projections carry biases.
    pub fn mlp_bias(&self) -> bool {
        self.model_type == "llama" && self.mlp_bias
    }

    /// The sliding window of layer `l`, if it has one.
    pub fn layer_window(&self, l: usize) -> Option<usize> {
        match self.model_type.as_str() {
            "mistral" => self.sliding_window,
            "qwen2" => {
                if !self.use_sliding_window.unwrap_or(false) {
                    return None;
                }
                let window = self.sliding_window?;
                let sliding = match &self.layer_types {
                    Some(types) => types.get(l).is_some_and(|t| t == "sliding_attention"),
                    None => l >= self.max_window_layers.unwrap_or(28),
                };
                sliding.then_some(window)
            }
            _ => None,
        }
    }

    /// The parsed MLP activation.
    pub fn activation(&self) -> Result<Activation> {
        activation_of(Path::new("<config>"), "hidden_act", &self.hidden_act)
    }

    /// The rotary embedding: `rope_parameters` (transformers 5) or `rope_theta` + `rope_scaling`
    /// (transformers 4). `default`, `linear` and `llama3` are implemented; any other type is an
    /// error naming it.
    pub fn rope(&self, path: &Path) -> Result<Rope> {
        let empty = serde_json::Value::Object(serde_json::Map::new());
        let params = match (&self.rope_parameters, &self.rope_scaling) {
            (Some(p), _) if !p.is_null() => p,
            (_, Some(s)) if !s.is_null() => s,
            _ => &empty,
        };
        if !params.is_object() {
            return Err(ModelError::config(
                path,
                "rope_parameters must be an object (per-layer-type rotary parameters are not supported)",
            ));
        }
        let theta = match params.get("rope_theta") {
            Some(_) => num(path, params, "rope_theta")?,
            // transformers' default θ for all three model types
            None => self.rope_theta.unwrap_or(10000.0),
        };
        if !(theta > 0.0 && theta.is_finite()) {
            return Err(ModelError::config(
                path,
                format!("rope_theta = {theta} must be finite and > 0"),
            ));
        }
        let kind = params
            .get("rope_type")
            .or_else(|| params.get("type"))
            .and_then(serde_json::Value::as_str)
            .unwrap_or("default");
        if let Some(p) = params.get("partial_rotary_factor")
            && p.as_f64() != Some(1.0)
        {
            return Err(ModelError::config(
                path,
                format!("rope_parameters: partial_rotary_factor = {p} is not supported (only 1.0)"),
            ));
        }
        let positive = |key: &str| -> Result<f64> {
            let v = num(path, params, key)?;
            if v <= 0.0 {
                return Err(ModelError::config(
                    path,
                    format!("rope_parameters: `{key}` = {v} must be > 0"),
                ));
            }
            Ok(v)
        };
        let scaling = match kind {
            "default" => RopeScaling::Default,
            "linear" => RopeScaling::Linear {
                factor: positive("factor")?,
            },
            "llama3" => {
                let low = positive("low_freq_factor")?;
                let high = positive("high_freq_factor")?;
                if high <= low {
                    return Err(ModelError::config(
                        path,
                        format!(
                            "rope_parameters: high_freq_factor = {high} must exceed low_freq_factor = {low}"
                        ),
                    ));
                }
                RopeScaling::Llama3 {
                    factor: positive("factor")?,
                    low_freq_factor: low,
                    high_freq_factor: high,
                    original_max_position_embeddings: match params
                        .get("original_max_position_embeddings")
                    {
                        Some(_) => positive("original_max_position_embeddings")?,
                        None => self.max_position_embeddings as f64,
                    },
                }
            }
            other => {
                return Err(ModelError::config(
                    path,
                    format!(
                        "rope_type `{other}` is not supported (implemented: default, linear, llama3)"
                    ),
                ));
            }
        };
        Ok(Rope { theta, scaling })
    }

    /// Checks sizes, heads, activation, rotary parameters and windows; `path` names the config.
    pub fn validate(&self, path: &Path) -> Result<()> {
        if !matches!(self.model_type.as_str(), "llama" | "qwen2" | "mistral") {
            return Err(ModelError::UnknownModelType {
                path: path.into(),
                model_type: self.model_type.clone(),
            });
        }
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.kv_heads()),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            check_size(path, name, v)?;
        }
        if self.head_dim.is_none() && !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(ModelError::config(
                path,
                format!(
                    "hidden_size = {} is not a multiple of num_attention_heads = {} (and no head_dim is given)",
                    self.hidden_size, self.num_attention_heads
                ),
            ));
        }
        let hd = self.head_dim();
        check_size(path, "head_dim", hd)?;
        if !hd.is_multiple_of(2) {
            return Err(ModelError::config(
                path,
                format!("head_dim = {hd} must be even for rotary embeddings"),
            ));
        }
        if !self.num_attention_heads.is_multiple_of(self.kv_heads()) {
            return Err(ModelError::config(
                path,
                format!(
                    "num_attention_heads = {} is not a multiple of num_key_value_heads = {}",
                    self.num_attention_heads,
                    self.kv_heads()
                ),
            ));
        }
        if self
            .num_attention_heads
            .checked_mul(hd)
            .is_none_or(|w| w > crate::config::MAX_CONFIG_SIZE)
        {
            return Err(ModelError::config(
                path,
                "num_attention_heads × head_dim is too large",
            ));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps >= 0.0) {
            return Err(ModelError::config(
                path,
                "rms_norm_eps must be finite and >= 0",
            ));
        }
        activation_of(path, "hidden_act", &self.hidden_act)?;
        self.rope(path)?;
        if let Some(types) = &self.layer_types
            && self.model_type == "qwen2"
        {
            if types.len() != self.num_hidden_layers {
                return Err(ModelError::config(
                    path,
                    format!(
                        "layer_types has {} entries for num_hidden_layers = {}",
                        types.len(),
                        self.num_hidden_layers
                    ),
                ));
            }
            if let Some(t) = types
                .iter()
                .find(|t| *t != "full_attention" && *t != "sliding_attention")
            {
                return Err(ModelError::config(
                    path,
                    format!("layer_types: `{t}` is not full_attention or sliding_attention"),
                ));
            }
        }
        for l in 0..self.num_hidden_layers.min(1 << 20) {
            if let Some(w) = self.layer_window(l) {
                if w == 0 {
                    return Err(ModelError::config(path, "sliding_window must be > 0"));
                }
                if w > self.max_position_embeddings {
                    return Err(ModelError::config(
                        path,
                        format!(
                            "sliding_window = {w} is larger than max_position_embeddings = {}",
                            self.max_position_embeddings
                        ),
                    ));
                }
                break;
            }
        }
        Ok(())
    }

    /// Parses the config.json object of a `llama`, `qwen2` or `mistral` model, applying the
    /// defaults transformers applies for that `model_type` where the file is silent.
    pub fn from_value(mut value: serde_json::Value, path: &Path) -> Result<Self> {
        let model_type = value
            .get("model_type")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("llama")
            .to_string();
        if let Some(obj) = value.as_object_mut()
            && model_type == "mistral"
            && !obj.contains_key("sliding_window")
        {
            obj.insert("sliding_window".into(), 4096.into());
        }
        let config: Self =
            serde_json::from_value(value).map_err(|e| ModelError::config(path, e.to_string()))?;
        config.validate(path)?;
        Ok(config)
    }

    /// The `architectures` entry transformers reads back.
    pub fn architecture_name(&self) -> &'static str {
        match self.model_type.as_str() {
            "qwen2" => "Qwen2ForCausalLM",
            "mistral" => "MistralForCausalLM",
            _ => "LlamaForCausalLM",
        }
    }
}
