//! Shared helpers for the criterion benchmarks (deterministic inputs), and the interleaved
//! benchmark harness behind the generated tables of `docs/benchmarks.md` ([`harness`]).

pub mod harness;

/// The README's examples, compiled (and run unless marked `no_run`) by `cargo test`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
