//! `cargo xtask`: the experiment driver of sparsity-lab.
//!
//! Every command parses its arguments, calls one library function, and writes files
//! (JSON through a temporary file and a rename, PNG plots, rows in the Parquet results
//! store under `results/`). Logic belongs in the library crates, not here.

mod cmd;
mod results;
mod util;

use clap::{Parser, Subcommand};

/// sparsity-lab experiment driver.
#[derive(Parser, Debug)]
#[command(name = "cargo xtask", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Comprehensive sparsity report over per-neuron variances of an activation tensor.
    Sparsity(cmd::sparsity::Args),
    /// Prune one linear layer (weight + calibration activations) with magnitude, Wanda, Wanda variant or SparseGPT.
    PruneLayer(cmd::prune_layer::Args),
    /// Compare two pruning masks (or pruned weights): Jaccard, Hamming, cosine per feature and layer.
    CompareMasks(cmd::compare_masks::Args),
    /// Cluster binary features by Hamming distance; separation ratio and MMM block coherence.
    Cluster(cmd::cluster::Args),
    /// Benchmark the masked (sparse) GEMV against dense on LLM-sized shapes.
    BenchGemv(cmd::bench_gemv::Args),
}

fn main() -> anyhow::Result<()> {
    util::init_logging();
    let cli = Cli::parse();
    match cli.command {
        Command::Sparsity(a) => cmd::sparsity::run(a),
        Command::PruneLayer(a) => cmd::prune_layer::run(a),
        Command::CompareMasks(a) => cmd::compare_masks::run(a),
        Command::Cluster(a) => cmd::cluster::run(a),
        Command::BenchGemv(a) => cmd::bench_gemv::run(a),
    }
}
