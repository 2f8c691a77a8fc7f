//! The crate's error type: every failure names the file, tensor, shape or option at fault.

use std::path::PathBuf;

/// Everything that can go wrong while loading, running or saving a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A required file of a model directory is absent.
    #[error("{path}: file not found ({what})")]
    MissingFile {
        /// The file that was looked for.
        path: PathBuf,
        /// What the file is for.
        what: String,
    },
    /// A model id is not in the local Hugging Face hub cache.
    #[error(
        "model `{id}` is neither a directory nor in the local Hugging Face cache {cache}; download it first, \
         e.g. `huggingface-cli download {id}` (or `hf download {id}`), or pass the path of a directory holding \
         config.json and model.safetensors"
    )]
    NotInCache {
        /// The model id.
        id: String,
        /// The hub cache directory that was searched.
        cache: PathBuf,
    },
    /// config.json could not be parsed or holds an invalid value.
    #[error("{path}: invalid config: {message}")]
    Config {
        /// The config file (or `<in memory>`).
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// `model_type` names an architecture this crate does not implement.
    #[error("{path}: unknown model_type `{model_type}` (supported: {})", crate::config::MODEL_TYPES.join(", "))]
    UnknownModelType {
        /// The config file.
        path: PathBuf,
        /// The value found.
        model_type: String,
    },
    /// A size in config.json disagrees with the checkpoint's tensors (checked before anything
    /// is allocated from the config's value).
    #[error(
        "{path}: config.json `{key}` = {value} disagrees with the checkpoint: {tensor} {found}"
    )]
    ConfigMismatch {
        /// The checkpoint (model directory or weights file).
        path: PathBuf,
        /// The config key.
        key: &'static str,
        /// The config's value.
        value: usize,
        /// The tensor (or tensor pattern) it was compared with.
        tensor: String,
        /// What the checkpoint holds.
        found: String,
    },
    /// A safetensors file could not be parsed.
    #[error("{path}: invalid safetensors file: {message}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A tensor the model needs is not in the checkpoint.
    #[error("{path}: missing tensor `{tensor}` (expected shape {expected:?})")]
    MissingTensor {
        /// The checkpoint file(s).
        path: PathBuf,
        /// The tensor name (with the prefix the loader looked for).
        tensor: String,
        /// The shape the model needs.
        expected: Vec<usize>,
    },
    /// The checkpoint holds tensors the model does not use.
    #[error("{path}: unexpected tensor(s) not used by the model: {tensors:?}")]
    UnexpectedTensors {
        /// The checkpoint file(s).
        path: PathBuf,
        /// The unused names.
        tensors: Vec<String>,
    },
    /// A tensor has the wrong shape.
    #[error("{path}: tensor `{tensor}` has shape {found:?}, expected {expected:?}")]
    WrongShape {
        /// The file holding the tensor.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// The shape in the file.
        found: Vec<usize>,
        /// The shape the model needs.
        expected: Vec<usize>,
    },
    /// A tensor has a dtype that cannot be converted to f32 (or to i64 for ids).
    #[error("{path}: tensor `{tensor}` has dtype {found}, expected {expected}")]
    WrongDtype {
        /// The file holding the tensor.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// The dtype in the file.
        found: String,
        /// The accepted dtype(s).
        expected: String,
    },
    /// A token id is outside the vocabulary.
    #[error("token id {id} at [{row}, {col}] is outside the vocabulary of {vocab_size} tokens")]
    TokenOutOfVocab {
        /// The offending id.
        id: i64,
        /// Batch row.
        row: usize,
        /// Sequence position.
        col: usize,
        /// The model's vocabulary size.
        vocab_size: usize,
    },
    /// A sequence is longer than the model's position table.
    #[error("sequence length {seq} exceeds n_positions = {max} of the model")]
    SequenceTooLong {
        /// Sequence length of the batch.
        seq: usize,
        /// The model's maximum.
        max: usize,
    },
    /// A batch, site name, intervention or option is invalid.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// Unknown hook site.
    #[error("unknown site `{site}` for a {family} model with {layers} layers")]
    UnknownSite {
        /// The requested site.
        site: String,
        /// The model family.
        family: String,
        /// The number of layers.
        layers: usize,
    },
    /// The tokenizer failed.
    #[error("tokenizer {path}: {message}")]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// The tokenizer's message.
        message: String,
    },
    /// A text source holds no usable text.
    #[error("{source_name}: empty text set (no non-empty texts)")]
    EmptyTextSet {
        /// The file or source that was empty.
        source_name: String,
    },
    /// A line of a JSONL file is not a JSON object with a string `text` field.
    #[error("{path}:{line}: {message}")]
    Jsonl {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The backend failed to read a tensor back.
    #[error("backend error: {0}")]
    Backend(String),
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, ModelError>;

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn config(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Config {
            path: path.into(),
            message: message.into(),
        }
    }
}
