//! A Hugging Face `tokenizer.json` through the `tokenizers` crate (feature `tokenizer`).

use std::path::{Path, PathBuf};

use crate::error::{ModelError, Result};

/// A Hugging Face `tokenizer.json` loaded through the `tokenizers` crate.
pub struct TextTokenizer {
    tokenizer: tokenizers::Tokenizer,
    path: PathBuf,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("path", &self.path)
            .finish()
    }
}

impl TextTokenizer {
    /// Loads a `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(ModelError::MissingFile {
                path: path.into(),
                what: "tokenizer (tokenizer.json)".into(),
            });
        }
        let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
            path: path.into(),
            source,
        })?;
        let bad = |message: String| ModelError::Tokenizer {
            path: path.into(),
            message,
        };
        // The JSON syntax is checked here first: tokenizers 0.23 panics (an `expect` inside its
        // decoder deserializer) on some malformed documents instead of returning an error,
        // while on well-formed JSON every failure is an error.
        let doc: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let text = serde_json::to_vec(&doc).map_err(|e| bad(e.to_string()))?;
        let mut tokenizer =
            tokenizers::Tokenizer::from_bytes(&text).map_err(|e| bad(e.to_string()))?;
        // Sequences are encoded one at a time and never padded: a `padding` section (whose
        // fixed length comes from the file) is ignored rather than allowed to size buffers.
        tokenizer.with_padding(None);
        Ok(Self {
            tokenizer,
            path: path.into(),
        })
    }

    /// Loads `dir/tokenizer.json`.
    pub fn from_model_dir(dir: &Path) -> Result<Self> {
        Self::from_file(&dir.join("tokenizer.json"))
    }

    /// Token ids of `text`, without special tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| ModelError::Tokenizer {
                path: self.path.clone(),
                message: e.to_string(),
            })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids` (special tokens skipped).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| ModelError::Tokenizer {
                path: self.path.clone(),
                message: e.to_string(),
            })
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }
}
