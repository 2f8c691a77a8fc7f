//! Shared helpers for the criterion benchmarks (deterministic inputs).

/// The README's examples, compiled (and run unless marked `no_run`) by `cargo test`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
