//! Text input: tokenisation with the model's `tokenizer.json`, padding + attention masks, truncation, text
//! sources (plain text, JSONL), and token-weighted perplexity with padding excluded.
//!
//! Padding rule: padded positions carry the model's pad id and mask 0. GPT-2 masks padded keys in
//! attention and takes positions from `cumsum(mask) − 1`, Mamba zeroes padded SSM inputs, so with either
//! padding side the real positions get the same values as an unpadded run, and statistics that weight by
//! the mask never see a padded position.

use std::path::Path;

use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Tensor};

use crate::error::{ModelError, Result};
use crate::lm::{Batch, CausalLm};

#[cfg(feature = "tokenizer")]
pub use crate::tokenizer::TextTokenizer;

/// Which side padding goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PaddingSide {
    /// Pad after the tokens (default).
    #[default]
    Right,
    /// Pad before the tokens.
    Left,
}

/// How sequences are batched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchOptions {
    /// Keep at most this many tokens of each sequence (the first ones); `None` = no truncation.
    pub max_length: Option<usize>,
    /// Padding side.
    pub padding_side: PaddingSide,
    /// Id written at padded positions (masked, so it never matters for real positions).
    pub pad_id: i64,
}

impl Default for BatchOptions {
    fn default() -> Self {
        Self {
            max_length: None,
            padding_side: PaddingSide::Right,
            pad_id: 0,
        }
    }
}

/// Padded ids and mask on the host, row-major [batch, seq].
#[derive(Debug, Clone, PartialEq)]
pub struct PaddedBatch {
    /// [batch, seq] ids.
    pub ids: Vec<i64>,
    /// [batch, seq] 1 = real token.
    pub mask: Vec<f32>,
    /// Batch size.
    pub batch: usize,
    /// Padded length.
    pub seq: usize,
    /// Real (truncated) length of each sequence.
    pub lengths: Vec<usize>,
}

impl PaddedBatch {
    /// Pads (and truncates) token sequences into one batch.
    pub fn new(sequences: &[Vec<u32>], options: &BatchOptions) -> Result<Self> {
        if sequences.is_empty() {
            return Err(ModelError::EmptyTextSet {
                source_name: "batch".into(),
            });
        }
        if options.max_length == Some(0) {
            return Err(ModelError::Invalid("max_length must be > 0".into()));
        }
        let lengths: Vec<usize> = sequences
            .iter()
            .map(|s| options.max_length.map_or(s.len(), |m| s.len().min(m)))
            .collect();
        let seq = lengths.iter().copied().max().unwrap_or(0);
        if seq == 0 {
            return Err(ModelError::Invalid(
                "every sequence of the batch is empty".into(),
            ));
        }
        let batch = sequences.len();
        let mut ids = vec![options.pad_id; batch * seq];
        let mut mask = vec![0.0f32; batch * seq];
        for (b, (s, &len)) in sequences.iter().zip(&lengths).enumerate() {
            let start = match options.padding_side {
                PaddingSide::Right => 0,
                PaddingSide::Left => seq - len,
            };
            for (j, &id) in s.iter().take(len).enumerate() {
                ids[b * seq + start + j] = i64::from(id);
                mask[b * seq + start + j] = 1.0;
            }
        }
        Ok(Self {
            ids,
            mask,
            batch,
            seq,
            lengths,
        })
    }

    /// The batch as tensors on `device`.
    pub fn to_batch(&self, device: &Device) -> Result<Batch> {
        Batch::from_ids_and_mask(&self.ids, &self.mask, self.batch, self.seq, device)
    }
}

/// Reads texts: a `.jsonl` file gives the `text` field of each non-empty line; any other file gives one
/// text per non-empty line. An empty result is an error.
pub fn read_texts(path: &Path) -> Result<Vec<String>> {
    if !path.is_file() {
        return Err(ModelError::MissingFile {
            path: path.into(),
            what: "text file".into(),
        });
    }
    let content = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
    let is_jsonl = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("jsonl"));
    let mut texts = Vec::new();
    for (i, line) in content.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if is_jsonl {
            let v: serde_json::Value =
                serde_json::from_str(line).map_err(|e| ModelError::Jsonl {
                    path: path.into(),
                    line: i + 1,
                    message: e.to_string(),
                })?;
            let text = v
                .get("text")
                .and_then(|t| t.as_str())
                .ok_or_else(|| ModelError::Jsonl {
                    path: path.into(),
                    line: i + 1,
                    message: "no string field `text`".into(),
                })?;
            if !text.trim().is_empty() {
                texts.push(text.to_string());
            }
        } else {
            texts.push(line.to_string());
        }
    }
    non_empty(texts, &path.display().to_string())
}

/// Checks that a text set has at least one non-blank text.
pub fn non_empty(texts: Vec<String>, source_name: &str) -> Result<Vec<String>> {
    if texts.iter().all(|t| t.trim().is_empty()) {
        return Err(ModelError::EmptyTextSet {
            source_name: source_name.into(),
        });
    }
    Ok(texts)
}

/// Token-weighted perplexity of a text set.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Perplexity {
    /// Summed negative log-likelihood (nats) of the predicted tokens.
    pub nll_sum: f64,
    /// Number of predicted tokens (every real token after the first of its sequence).
    pub tokens: usize,
    /// exp(nll_sum / tokens).
    pub perplexity: f64,
}

impl Perplexity {
    /// From summed NLL over `tokens` predictions; an error naming `source_name` when no token was
    /// predicted (a perplexity of nothing is not 1 or 0, it is undefined).
    pub fn from_sums(nll_sum: f64, tokens: usize, source_name: &str) -> Result<Self> {
        if tokens == 0 {
            return Err(ModelError::Invalid(format!(
                "{source_name}: no predicted tokens (every sequence needs two or more tokens)"
            )));
        }
        Ok(Self {
            nll_sum,
            tokens,
            perplexity: (nll_sum / tokens as f64).exp(),
        })
    }

    /// Mean NLL per predicted token (nats).
    pub fn mean_nll(&self) -> f64 {
        self.nll_sum / self.tokens.max(1) as f64
    }
}

/// Summed next-token NLL and count of predicted tokens of one batch (padding excluded: a prediction counts
/// when both its context position and its target are real).
pub fn batch_nll(model: &CausalLm, batch: &Batch) -> Result<(f64, usize)> {
    let [_, s] = batch.dims();
    if s < 2 {
        return Ok((0.0, 0));
    }
    nll_of_logits(model.logits(batch)?, batch)
}

/// [`batch_nll`] from logits [batch, seq, vocab] already computed for `batch` (e.g. by a forward
/// pass with an intervention).
pub fn nll_of_logits(logits: Tensor<3>, batch: &Batch) -> Result<(f64, usize)> {
    let [b, s] = batch.dims();
    if s < 2 {
        return Ok((0.0, 0));
    }
    let logp = log_softmax(logits.narrow(1, 0, s - 1), 2);
    let targets = batch
        .input_ids
        .clone()
        .narrow(1, 1, s - 1)
        .reshape([b, s - 1, 1]);
    let picked = logp.gather(2, targets).reshape([b, s - 1]);
    let m = batch.attention_mask.clone();
    let weight = m.clone().narrow(1, 0, s - 1) * m.narrow(1, 1, s - 1);
    let tokens = crate::util::tensor_to_vec(&weight.clone().sum())?;
    let nll = crate::util::tensor_to_vec(&(picked * weight).sum().neg())?;
    let tokens = tokens.first().copied().unwrap_or(0.0).round() as usize;
    Ok((f64::from(nll.first().copied().unwrap_or(0.0)), tokens))
}

/// Token-weighted perplexity of token sequences, run in batches of `batch_size` (padding excluded).
pub fn perplexity_of_sequences(
    model: &CausalLm,
    sequences: &[Vec<u32>],
    batch_size: usize,
    max_length: Option<usize>,
    device: &Device,
) -> Result<Perplexity> {
    if sequences.iter().all(|s| s.is_empty()) {
        return Err(ModelError::EmptyTextSet {
            source_name: "perplexity input".into(),
        });
    }
    let options = BatchOptions {
        max_length: max_length.or(model.max_positions()),
        padding_side: PaddingSide::Right,
        pad_id: model.pad_token_id(),
    };
    let span = tracing::info_span!(
        "perplexity",
        progress_total = sequences.len() as u64,
        progress_unit = "sequences"
    );
    let (mut nll_sum, mut tokens) = (0.0f64, 0usize);
    let usable: Vec<Vec<u32>> = sequences
        .iter()
        .filter(|s| !s.is_empty())
        .cloned()
        .collect();
    for chunk in usable.chunks(batch_size.max(1)) {
        let batch = PaddedBatch::new(chunk, &options)?.to_batch(device)?;
        let (n, t) = batch_nll(model, &batch)?;
        nll_sum += n;
        tokens += t;
        let done = chunk.len() as u64;
        tracing::trace!(target: crate::PROGRESS, parent: &span, progress_inc = done);
    }
    Perplexity::from_sums(nll_sum, tokens, "perplexity")
}

/// Token-weighted perplexity of texts (tokenised without special tokens).
#[cfg(feature = "tokenizer")]
pub fn perplexity(
    model: &CausalLm,
    tokenizer: &TextTokenizer,
    texts: &[String],
    batch_size: usize,
    max_length: Option<usize>,
    device: &Device,
) -> Result<Perplexity> {
    if texts.iter().all(|t| t.trim().is_empty()) {
        return Err(ModelError::EmptyTextSet {
            source_name: "perplexity texts".into(),
        });
    }
    let seqs = texts
        .iter()
        .map(|t| tokenizer.encode(t))
        .collect::<Result<Vec<_>>>()?;
    perplexity_of_sequences(model, &seqs, batch_size, max_length, device)
}
