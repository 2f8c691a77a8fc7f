//! One module per `cargo xtask` command.

pub mod bench_gemv;
pub mod cluster;
pub mod compare_masks;
pub mod prune_layer;
pub mod sparsity;
