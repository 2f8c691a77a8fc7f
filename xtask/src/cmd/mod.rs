//! One module per `cargo xtask` command.

pub mod analyze;
pub mod bench_gemv;
pub mod compare_masks;
pub mod dump;
pub mod prune_layer;
pub mod sparsity;
pub mod train_demo;
