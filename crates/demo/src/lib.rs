//! The built-in demo models of sparsity-lab, and what makes them: a seeded English-like corpus
//! ([`corpus`]), a byte-level BPE tokenizer trained on it ([`demo_tokenizer`]), a reusable burn
//! training loop for any [`sparsity_models::CausalLmTrain`] model ([`train`]), and the GPT-2 /
//! Mamba pair trained on first use and cached ([`demo`]), and a demo OPT and Llama trained on request
//! ([`extra`]).
//!
//! The training loop reports progress as a `tracing` span with `progress_total` and
//! `progress_inc` events (target [`sparsity_models::PROGRESS`]); it never draws to the terminal.
//!
//! ```
//! use sparsity_demo::corpus;
//!
//! // The seeded English-like corpus behind the demo models: the same seed, the same texts.
//! let texts = corpus::generate(7, 20);
//! assert_eq!(texts, corpus::generate(7, 20));
//! assert_ne!(texts, corpus::generate(8, 20));
//! let bits = corpus::word_unigram_entropy(&texts)?;
//! assert!(bits > 0.0 && bits < (corpus::lexicon_size() as f64).log2());
//! # Ok::<(), sparsity_demo::corpus::CorpusError>(())
//! ```

pub mod corpus;
pub mod demo;
pub mod demo_tokenizer;
pub mod extra;
pub mod train;

pub use demo::{DemoConfig, DemoError, DemoModels, ensure_demo_models};
pub use extra::{ExtraDemo, ExtraDemoModel, ensure_extra_demo};

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
