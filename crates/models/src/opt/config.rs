//! `config.json` of OPT (`model_type` `opt`): a serde mirror of `transformers.OPTConfig` (fields
//! that change the math; the others are kept verbatim for the round trip).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{Activation, TokenIds, activation_of, check_size};
use crate::error::{ModelError, Result};

/// OPT's `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OptConfig {
    /// Vocabulary size (rows of `embed_tokens`).
    pub vocab_size: usize,
    /// Residual stream width.
    pub hidden_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// MLP width (`fc1` outputs).
    pub ffn_dim: usize,
    /// Learned positions (the table has 2 more rows: OPT's offset).
    pub max_position_embeddings: usize,
    /// Pre-LN blocks (true: 125m, 1.3b, …) or post-LN (false: 350m).
    pub do_layer_norm_before: bool,
    /// Drops the final LayerNorm (checkpoints fine-tuned before transformers 4.20.1).
    #[serde(rename = "_remove_final_layer_norm")]
    pub remove_final_layer_norm: bool,
    /// Width of the token embedding; `project_in` / `project_out` map it to and from
    /// `hidden_size` when the two differ (350m). `None` means `hidden_size`.
    pub word_embed_proj_dim: Option<usize>,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// MLP activation (`relu`).
    pub activation_function: String,
    /// LayerNorms have weight and bias (false: plain normalisation, no parameters).
    pub layer_norm_elementwise_affine: bool,
    /// Biases on every linear layer of the blocks.
    pub enable_bias: bool,
    /// `lm_head` shares the token embedding.
    pub tie_word_embeddings: bool,
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

impl Default for OptConfig {
    /// transformers' `OPTConfig()` defaults (OPT-125m's shape).
    fn default() -> Self {
        Self {
            vocab_size: 50272,
            hidden_size: 768,
            num_hidden_layers: 12,
            ffn_dim: 3072,
            max_position_embeddings: 2048,
            do_layer_norm_before: true,
            remove_final_layer_norm: false,
            word_embed_proj_dim: None,
            num_attention_heads: 12,
            activation_function: "relu".into(),
            layer_norm_elementwise_affine: true,
            enable_bias: true,
            tie_word_embeddings: true,
            bos_token_id: Some(TokenIds::One(2)),
            eos_token_id: Some(TokenIds::One(2)),
            pad_token_id: Some(TokenIds::One(1)),
            extra: serde_json::Map::new(),
        }
    }
}

/// OPT's LayerNorm epsilon (`nn.LayerNorm`'s default).
pub const OPT_LAYER_NORM_EPS: f64 = 1e-5;

/// OPT's position offset: position p reads row p + 2 of `embed_positions`.
pub const POSITION_OFFSET: usize = 2;

impl OptConfig {
    /// Token-embedding width.
    pub fn embed_dim(&self) -> usize {
        self.word_embed_proj_dim.unwrap_or(self.hidden_size)
    }

    /// Whether `project_in` / `project_out` exist.
    pub fn has_projections(&self) -> bool {
        self.embed_dim() != self.hidden_size
    }

    /// Whether the decoder ends with a LayerNorm.
    pub fn has_final_layer_norm(&self) -> bool {
        self.do_layer_norm_before && !self.remove_final_layer_norm
    }

    /// Width of one head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    /// The parsed MLP activation.
    pub fn activation(&self) -> Result<Activation> {
        activation_of(
            Path::new("<config>"),
            "activation_function",
            &self.activation_function,
        )
    }

    /// Checks sizes, heads and activation; `path` names the config.
    pub fn validate(&self, path: &Path) -> Result<()> {
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("ffn_dim", self.ffn_dim),
            ("max_position_embeddings", self.max_position_embeddings),
            ("num_attention_heads", self.num_attention_heads),
            ("word_embed_proj_dim", self.embed_dim()),
        ] {
            check_size(path, name, v)?;
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(ModelError::config(
                path,
                format!(
                    "hidden_size = {} is not a multiple of num_attention_heads = {}",
                    self.hidden_size, self.num_attention_heads
                ),
            ));
        }
        activation_of(path, "activation_function", &self.activation_function)?;
        Ok(())
    }
}
