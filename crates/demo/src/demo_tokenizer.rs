//! Byte-level BPE tokenizer for the demo corpus, GPT-2 style (Sennrich et al. 2016, "Neural
//! Machine Translation of Rare Words with Subword Units"; Radford et al. 2019 for the byte-level
//! variant).
//!
//! Pre-tokenizer, decoder and post-processor are all `ByteLevel` as in GPT-2's `tokenizer.json`
//! (no prefix space, GPT-2's split regex), the initial alphabet is all 256 byte symbols so any
//! text encodes, and `<|endoftext|>` is the special token with id 0. Training is the `tokenizers`
//! crate's `BpeTrainer` on the train split; the result is deterministic for a given text list.

use std::path::Path;

use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer, TokenizerImpl};

/// The end-of-text special token (id 0), placed between texts in training streams.
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// Errors of tokenizer training and use.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// The requested vocabulary cannot hold the 256 byte symbols plus `<|endoftext|>`.
    #[error(
        "tokenizer vocab_size {vocab_size} is too small: it must be at least 257 (256 bytes + <|endoftext|>)"
    )]
    VocabTooSmall {
        /// The requested size.
        vocab_size: usize,
    },
    /// No training texts.
    #[error("cannot train a tokenizer on an empty text list")]
    NoTexts,
    /// An error reported by the `tokenizers` crate.
    #[error("tokenizer {context}: {message}")]
    Tokenizers {
        /// What was being done.
        context: String,
        /// The crate's message.
        message: String,
    },
    /// `<|endoftext|>` did not get id 0.
    #[error("tokenizer: `{END_OF_TEXT}` has id {id:?}, expected 0")]
    EndOfTextId {
        /// The id it got.
        id: Option<u32>,
    },
    /// Writing `tokenizer.json` failed.
    #[error("writing tokenizer file {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

fn tk_err(context: impl Into<String>) -> impl FnOnce(tokenizers::Error) -> TokenizerError {
    let context = context.into();
    move |e| TokenizerError::Tokenizers {
        context,
        message: e.to_string(),
    }
}

/// Trains a GPT-2 style byte-level BPE tokenizer on `texts` with a vocabulary of `vocab_size`
/// entries (including the 256 byte symbols and `<|endoftext|>` = id 0).
pub fn train_bpe_tokenizer(
    texts: &[String],
    vocab_size: usize,
) -> Result<Tokenizer, TokenizerError> {
    if vocab_size < 257 {
        return Err(TokenizerError::VocabTooSmall { vocab_size });
    }
    if texts.is_empty() {
        return Err(TokenizerError::NoTexts);
    }
    let mut trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(vec![AddedToken::from(END_OF_TEXT, true)])
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let mut tokenizer: TokenizerImpl<BPE, NormalizerWrapper, ByteLevel, ByteLevel, ByteLevel> =
        TokenizerImpl::new(BPE::default());
    // GPT-2: no prefix space, GPT-2 regex; the post-processor keeps offsets untrimmed.
    tokenizer
        .with_pre_tokenizer(Some(ByteLevel::new(false, true, true)))
        .with_decoder(Some(ByteLevel::default()))
        .with_post_processor(Some(ByteLevel::new(true, false, true)));
    tokenizer
        .train(&mut trainer, texts.iter())
        .map_err(tk_err("training BPE"))?;
    let json = tokenizer
        .to_string(false)
        .map_err(tk_err("serialising the trained tokenizer"))?;
    let tokenizer: Tokenizer = json
        .parse()
        .map_err(tk_err("re-reading the trained tokenizer"))?;
    let id = tokenizer.token_to_id(END_OF_TEXT);
    if id != Some(0) {
        return Err(TokenizerError::EndOfTextId { id });
    }
    Ok(tokenizer)
}

/// Writes `tokenizer` as pretty JSON to `path` atomically (temporary file + rename).
pub fn save_tokenizer(tokenizer: &Tokenizer, path: &Path) -> Result<(), TokenizerError> {
    let json = tokenizer
        .to_string(true)
        .map_err(tk_err(format!("serialising {}", path.display())))?;
    sparsity_io::write_atomic(path, json.as_bytes())
        .map_err(sparsity_io::IoError::into_io)
        .map_err(|source| TokenizerError::Write {
            path: path.display().to_string(),
            source,
        })
}

/// Tokenises texts into one stream of ids, each text followed by `<|endoftext|>` (id 0).
pub fn encode_stream(tokenizer: &Tokenizer, texts: &[String]) -> Result<Vec<u32>, TokenizerError> {
    let mut ids = Vec::new();
    for (i, t) in texts.iter().enumerate() {
        let enc = tokenizer
            .encode(t.as_str(), false)
            .map_err(tk_err(format!("encoding text {i}")))?;
        ids.extend_from_slice(enc.get_ids());
        ids.push(0);
    }
    Ok(ids)
}
