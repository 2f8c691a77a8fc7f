//! Shared helpers for the criterion benchmarks (deterministic inputs).
