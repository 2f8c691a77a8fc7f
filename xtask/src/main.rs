//! `cargo xtask`: the experiment driver of sparsity-lab.
//!
//! Every command parses its arguments, calls one library function, and writes files
//! (JSON through a temporary file and a rename, PNG plots, rows in the Parquet results
//! store under `results/`). Logic belongs in the library crates, not here.

mod cmd;
mod progress;
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
    /// Prune a whole GPT-2 / Mamba / OPT / Llama (sequential calibration), report per-layer errors and perplexity, save an HF directory.
    Prune(cmd::prune::Args),
    /// TEAL-style activation sparsity (MLP inputs; every linear input for OPT / Llama): calibrated thresholds, held-out perplexity vs sparsity.
    SparseDecode(cmd::sparse_decode::Args),
    /// Compare two pruning masks (or pruned weights): Jaccard, Hamming, cosine per feature and layer.
    CompareMasks(cmd::compare_masks::Args),
    /// Benchmark the masked (sparse) GEMV against dense on LLM-sized shapes.
    BenchGemv(cmd::bench_gemv::Args),
    /// End-to-end LLM-size decode benchmark (TinyLlama shape): ours dense / sparse vs transformers' generate.
    DecodeBench(cmd::decode_bench::Args),
    /// Run a model on input ids and dump logits, hidden states and every hook site to safetensors.
    Dump(cmd::dump::Args),
    /// Train (or load from the cache) the built-in demo GPT-2 and Mamba on the synthetic corpus.
    TrainDemo(cmd::train_demo::Args),
    /// Mamba vs GPT-2 neuron analysis: sparsity, delta-sensitive, causal and attention neurons, report.
    Analyze(cmd::analyze::Args),
    /// Bit-packed Hamming neighbours and clustering of a binary pattern matrix, MMM coherence, plots.
    Cluster(cmd::cluster::Args),
    /// DeepSeek sparse attention sweep over lengths × keep ratios × seeds (resumable, shardable, Slurm).
    DsaSweep(cmd::dsa_sweep::Args),
    /// Merge DSA sweep result files into one report with ANOVA / Tukey HSD / Cohen's d tables.
    DsaReport(cmd::dsa_report::Args),
}

fn main() -> anyhow::Result<()> {
    util::init_logging();
    let cli = Cli::parse();
    match cli.command {
        Command::Sparsity(a) => cmd::sparsity::run(a),
        Command::PruneLayer(a) => cmd::prune_layer::run(a),
        Command::Prune(a) => cmd::prune::run(a),
        Command::SparseDecode(a) => cmd::sparse_decode::run(a),
        Command::CompareMasks(a) => cmd::compare_masks::run(a),
        Command::BenchGemv(a) => cmd::bench_gemv::run(a),
        Command::DecodeBench(a) => cmd::decode_bench::run(a),
        Command::Dump(a) => cmd::dump::run(a),
        Command::TrainDemo(a) => cmd::train_demo::run(a),
        Command::Analyze(a) => cmd::analyze::run(a),
        Command::Cluster(a) => cmd::cluster::run(a),
        Command::DsaSweep(a) => cmd::dsa_sweep::run(a),
        Command::DsaReport(a) => cmd::dsa_report::run(a),
    }
}
