//! `cargo xtask dsa-sweep`: train the DSA transformer at several sequence lengths and keep ratios
//! (plus a dense baseline) with several seeds; one JSON line per run appended to `--results`, so
//! an interrupted sweep resumes where it stopped; `--shard i/n` runs a deterministic slice and
//! `--emit-slurm N` writes a Slurm job-array script instead of running. Writes the report when done.

use std::path::PathBuf;

use anyhow::bail;
use sparsity_experiments::dsa_sweep::{
    Preset, RatioSemantics, SweepAction, SweepParams, SweepRun, parse_bytes, parse_shard, run_sweep,
};
use sparsity_models::dsa::SparseImpl;

/// Arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Sequence lengths.
    #[arg(long, value_delimiter = ',', default_value = "64,128,256,512,1024")]
    pub lengths: Vec<usize>,
    /// Keep ratios (fraction of L kept per query; with --legacy-ratio: fraction dropped).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0.25,0.33,0.5,0.67,0.75,0.9"
    )]
    pub keep_ratios: Vec<f64>,
    /// Read the ratios as the original code did: the fraction of L dropped, k = ⌊L·(1 − r)⌋.
    #[arg(long)]
    pub legacy_ratio: bool,
    /// Seeds per cell.
    #[arg(long, default_value_t = 3)]
    pub seeds: usize,
    /// First seed.
    #[arg(long, default_value_t = 0)]
    pub base_seed: u64,
    /// Model preset: `tiny` (d_model 64, 2 layers, 4 heads, d_ff 256) or `paper` (d_model 512,
    /// 6 layers, 8 heads, d_ff 2048).
    #[arg(long, default_value = "tiny")]
    pub preset: Preset,
    /// Backend: `ndarray` (CPU); `cuda` is refused with the reason.
    #[arg(long, default_value = "ndarray")]
    pub backend: String,
    /// Skip the dense baseline.
    #[arg(long)]
    pub no_dense: bool,
    /// Optimiser steps per run.
    #[arg(long, default_value_t = 200)]
    pub steps: usize,
    /// Sequences per batch.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 3e-3)]
    pub lr: f64,
    /// Dense warm-up steps (the indexer learns the dense attention by KL).
    #[arg(long, default_value_t = 50)]
    pub indexer_warmup: usize,
    /// Weight of the indexer's KL loss.
    #[arg(long, default_value_t = 1.0)]
    pub indexer_loss_weight: f64,
    /// Seed of the synthetic corpus.
    #[arg(long, default_value_t = 42)]
    pub data_seed: u64,
    /// BPE vocabulary trained on the corpus's training split.
    #[arg(long, default_value_t = 1024)]
    pub vocab: usize,
    /// Run only shard i of n (`i/n`, 0-based).
    #[arg(long, value_parser = parse_shard)]
    pub shard: Option<(usize, usize)>,
    /// Write a Slurm job-array script with this many shards to `<results dir>/sweep.slurm` and exit.
    #[arg(long)]
    pub emit_slurm: Option<usize>,
    /// Sparse attention implementation used in training (identical selection and results):
    /// `masked-dense` (full scores, unselected entries masked; fast on the CPU) or `gather`.
    #[arg(long, default_value = "masked-dense")]
    pub implementation: SparseImpl,
    /// Results file (JSON lines; appended, resumed).
    #[arg(long, default_value = "target/dsa-sweep/runs.jsonl")]
    pub results: PathBuf,
    /// Report directory (default: `report/` beside the results file).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Parquet results store directory.
    #[arg(long, default_value = "results")]
    pub results_dir: PathBuf,
    /// Memory budget per run in bytes (suffixes K, M, G, T: powers of 1024); default: the
    /// memory the system reports available. The sweep refuses to start when its estimate is larger.
    #[arg(long, value_parser = parse_bytes)]
    pub max_memory: Option<u64>,
    /// Print the run plan and the memory estimate, then stop.
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.backend != "ndarray" {
        bail!(
            "--backend {}: burn's CUDA backend (burn-cuda 0.22 → cubecl-cuda) cannot be built offline \
             here (its LLVM bundler downloads at build time); use --backend ndarray",
            args.backend
        );
    }
    let semantics = if args.legacy_ratio {
        RatioSemantics::LegacyDropped
    } else {
        RatioSemantics::Keep
    };
    let params = SweepParams {
        lengths: args.lengths.clone(),
        ratios: args.keep_ratios.clone(),
        semantics,
        seeds: args.seeds,
        base_seed: args.base_seed,
        preset: args.preset,
        dense_baseline: !args.no_dense,
        steps: args.steps,
        batch_size: args.batch_size,
        learning_rate: args.lr,
        indexer_warmup_steps: args.indexer_warmup,
        indexer_loss_weight: args.indexer_loss_weight,
        eval_every: (args.steps / 4).max(1),
        eval_batches: 4,
        implementation: args.implementation,
    };
    let action = match (args.dry_run, args.emit_slurm) {
        (true, _) => SweepAction::DryRun,
        (false, Some(shards)) => SweepAction::EmitSlurm { shards },
        (false, None) => SweepAction::Run,
    };
    let run = SweepRun {
        params,
        data_seed: args.data_seed,
        vocab: args.vocab,
        shard: args.shard,
        results: args.results.clone(),
        report_dir: args.report,
        results_dir: args.results_dir,
        max_memory: args.max_memory,
        action,
    };
    println!("{}", run_sweep(&run)?);
    Ok(())
}
