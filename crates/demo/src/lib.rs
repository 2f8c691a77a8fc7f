//! The built-in demo models of sparsity-lab, and what makes them: a seeded English-like corpus
//! ([`corpus`]), a byte-level BPE tokenizer trained on it ([`demo_tokenizer`]), a reusable burn
//! training loop for any [`sparsity_models::CausalLmTrain`] model ([`train`]), and the GPT-2 /
//! Mamba pair trained on first use and cached ([`demo`]), and a demo OPT and Llama trained on request
//! ([`extra`]).
//!
//! The training loop reports progress as a `tracing` span with `progress_total` and
//! `progress_inc` events (target [`sparsity_models::PROGRESS`]); it never draws to the terminal.

pub mod corpus;
pub mod demo;
pub mod demo_tokenizer;
pub mod extra;
pub mod train;

pub use demo::{DemoConfig, DemoError, DemoModels, ensure_demo_models};
pub use extra::{ExtraDemo, ExtraDemoModel, ensure_extra_demo};
