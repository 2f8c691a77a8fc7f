//! Experiment orchestration over the sparsity-lab libraries, the layer `cargo xtask` calls:
//! - [`dsa_sweep`]: the DeepSeek-sparse-attention keep-ratio sweep (resumable JSONL, deterministic
//!   shards, Slurm script, statistics report and figures);
//! - [`results`]: the Parquet results store every command appends to.

pub mod dsa_sweep;
pub mod results;
