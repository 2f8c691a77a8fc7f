//! Experiment orchestration over the sparsity-lab libraries, the layer `cargo xtask` calls: each
//! command is one function here that runs the experiment and writes its files (JSON through
//! [`write_json`], figures, rows in the Parquet results store through [`results::ToRows`]).
//! - [`analyze`]: the neuron analysis on the demo models or model directories;
//! - [`bench`](mod@bench): the GEMV benchmark with numpy's peer in the same run;
//! - [`cluster`]: Hamming clustering of tensors of a safetensors file;
//! - [`dsa_sweep`]: the DeepSeek-sparse-attention keep-ratio sweep (resumable JSONL,
//!   deterministic shards, Slurm script, statistics report and figures);
//! - [`prune`]: whole-model pruning, one layer file, mask comparison;
//! - [`results`]: the Parquet results store;
//! - [`sparse_decode`]: TEAL-style activation sparsity sweeps and decode speed;
//! - [`decode_bench`]: the LLM-size end-to-end decode benchmark against transformers;
//! - [`sparsity`]: the sparsity report of one activation tensor;
//! - [`source`]: which models and texts a run uses (the built-in demo or model directories).
//!
//! ```
//! use sparsity_experiments::results::{RunMeta, append_rows, read_rows};
//!
//! // Two rows of one run into the Parquet results store, read back exactly.
//! let dir = tempfile::tempdir()?;
//! let meta = RunMeta::new("example", &serde_json::json!({ "threshold": 0.01 }))?;
//! let rows = vec![
//!     meta.row("demo-gpt2", Some(0), "mlp_act.0", "hoyer", "value", 0.25),
//!     meta.row("demo-gpt2", Some(1), "mlp_act.1", "hoyer", "value", 0.31),
//! ];
//! let path = append_rows(dir.path(), &rows)?;
//! assert_eq!(read_rows(&path)?, rows);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod analyze;
pub mod bench;
pub mod cluster;
pub mod decode_bench;
pub mod dsa_recall;
pub mod dsa_sweep;
pub mod error;
pub mod machine;
pub mod prune;
pub mod results;
pub mod source;
pub mod sparse_decode;
pub mod sparsity;

pub use error::{ExperimentError, Result, StepContext};

/// Serialises `value` as pretty JSON to `path` atomically (temporary file + rename).
pub fn write_json<T: serde::Serialize>(path: &std::path::Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value).step("serialising JSON")?;
    sparsity_io::write_atomic(path, &bytes).with_step(|| format!("writing {}", path.display()))
}

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
