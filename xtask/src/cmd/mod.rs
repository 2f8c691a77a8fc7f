//! One module per `cargo xtask` command.

pub mod analyze;
pub mod bench_gemv;
pub mod cluster;
pub mod compare_masks;
pub mod decode_bench;
pub mod dsa_report;
pub mod dsa_sweep;
pub mod dump;
pub mod prune;
pub mod prune_layer;
pub mod sparse_decode;
pub mod sparsity;
pub mod train_demo;
