//! GPT-2, Mamba and a DeepSeek-sparse-attention transformer in burn, loaded from Hugging Face
//! directories, exact to `transformers`, with named hook points for reading and editing activations.
//!
//! - [`CausalLm`] loads a model directory ([`CausalLm::load_dir`]; a cached hub id with the `hub`
//!   feature) and runs [`CausalLm::forward`] on a [`Batch`], recording the sites named by a
//!   [`Capture`] and applying an optional [`Intervention`];
//! - [`Gpt2`] / [`Mamba`] are the burn modules (also usable directly for training through
//!   [`CausalLmTrain`]), with `save_pretrained` writing Hugging Face layouts;
//! - [`text`] pads and batches token sequences and computes perplexity (tokenisation with the
//!   `tokenizer` feature);
//! - [`dsa`] is a transformer with DeepSeek sparse attention (lightning indexer + causal top-k).
//!
//! Features (all off by default): `tokenizer` (Hugging Face `tokenizer.json` through the
//! `tokenizers` crate), `hub` (model ids resolved in the local Hugging Face cache), `cuda`,
//! `ndarray` (burn backends).
//!
//! Long loops report progress as `tracing` spans with a `progress_total` field and
//! `progress_inc` events under the target [`PROGRESS`]; `cargo xtask` draws them as bars.
//!
//! ```
//! use sparsity_models::{Capture, CausalLm, Batch, Gpt2, Gpt2Config, cpu_device};
//!
//! let device = cpu_device();
//! let config = Gpt2Config { vocab_size: 32, n_positions: 16, n_embd: 8, n_layer: 2, n_head: 2, ..Default::default() };
//! let model = CausalLm::from(Gpt2::init(&config, 7, &device)?);
//! let batch = Batch::from_ids(&[1, 2, 3, 4], 1, 4, &device)?;
//! let out = model.forward(&batch, &Capture::sites(["mlp_act.1"]), None)?;
//! assert_eq!(out.logits.dims(), [1, 4, 32]);
//! assert_eq!(out.sites["mlp_act.1"].dims(), vec![1, 4, 32]);
//! # Ok::<(), sparsity_models::ModelError>(())
//! ```

pub mod attention;
pub mod config;
pub mod dsa;
pub mod dump;
pub mod error;
pub mod family;
pub mod gpt2;
pub mod hub;
pub mod llama;
pub mod lm;
pub mod loader;
pub mod mamba;
pub mod nn;
pub mod opt;
pub mod sites;
pub mod step;
pub mod text;
#[cfg(feature = "tokenizer")]
pub mod tokenizer;
pub mod trainable;
pub mod util;

pub use burn;
pub use config::{
    Activation, Gpt2Config, LlamaConfig, MambaConfig, ModelConfig, ModelFamily, OptConfig,
    TimeStepRank, TokenIds,
};
pub use error::{ModelError, Result};
pub use family::{Architecture, HookedLm, LinearLayer};
pub use gpt2::Gpt2;
pub use llama::Llama;
pub use lm::{Batch, CausalLm, ForwardOutput};
pub use mamba::Mamba;
pub use opt::Opt;
pub use sites::{Capture, Channels, Edit, Intervention, MeanSource, SiteEdit, SiteTensor};
pub use trainable::CausalLmTrain;
pub use util::cpu_device;
#[cfg(feature = "ndarray")]
pub use util::ndarray_device;

/// The `tracing` target of progress events: a span carries `progress_total` (and
/// `progress_unit`), each event under this target carries `progress_inc`.
pub const PROGRESS: &str = "sparsity::progress";

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
