//! `cargo xtask dsa-sweep`: train the DSA transformer at several sequence lengths and keep ratios
//! (plus a dense baseline) with several seeds; one JSON line per run appended to `--results`, so
//! an interrupted sweep resumes where it stopped; `--shard i/n` runs a deterministic slice and
//! `--emit-slurm N` writes a Slurm job-array script instead of running. Writes the report when done.

use std::path::PathBuf;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use sparsity_experiments::dsa_sweep::{
    Preset, RatioSemantics, SweepData, SweepParams, append_result, completed_ids, read_results,
    run_list, run_one, shard, slurm_script, summarize, write_report,
};
use sparsity_models::cpu_device;
use sparsity_models::dsa::SparseImpl;

use sparsity_experiments::results::{ResultRow, append_rows, new_run_id, now_us};

/// Backends.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// burn's ndarray CPU backend.
    Ndarray,
    /// burn-cuda (not buildable offline: refused with the reason).
    Cuda,
}

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
    /// Model preset.
    #[arg(long, value_enum, default_value = "tiny")]
    pub preset: PresetArg,
    /// Backend.
    #[arg(long, value_enum, default_value = "ndarray")]
    pub backend: Backend,
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
    #[arg(long)]
    pub shard: Option<String>,
    /// Write a Slurm job-array script with this many shards to `<results dir>/sweep.slurm` and exit.
    #[arg(long)]
    pub emit_slurm: Option<usize>,
    /// Sparse attention implementation used in training (identical selection and results).
    #[arg(long, value_enum, default_value = "masked-dense")]
    pub implementation: ImplArg,
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

fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 1 << 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 1 << 30),
        Some('T' | 't') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("`{s}`: expected bytes, e.g. 8G or 512M"))
}

/// Sparse attention implementations.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImplArg {
    /// Full scores with unselected entries masked (fast on the CPU backend for training).
    MaskedDense,
    /// Gather the k selected keys per query.
    Gather,
}

/// Preset names.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PresetArg {
    /// d_model 64, 2 layers, 4 heads, d_ff 256.
    Tiny,
    /// d_model 512, 6 layers, 8 heads, d_ff 2048.
    Paper,
}

fn parse_shard(s: &str) -> anyhow::Result<(usize, usize)> {
    let (i, n) = s
        .split_once('/')
        .with_context(|| format!("--shard `{s}`: expected i/n, e.g. 0/4"))?;
    Ok((
        i.trim()
            .parse()
            .with_context(|| format!("--shard `{s}`: bad index"))?,
        n.trim()
            .parse()
            .with_context(|| format!("--shard `{s}`: bad count"))?,
    ))
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.backend == Backend::Cuda {
        bail!(
            "--backend cuda: burn's CUDA backend (burn-cuda 0.22 → cubecl-cuda) cannot be built offline \
             here (its LLVM bundler downloads at build time); use --backend ndarray"
        );
    }
    let params = SweepParams {
        lengths: args.lengths.clone(),
        ratios: args.keep_ratios.clone(),
        semantics: if args.legacy_ratio {
            RatioSemantics::LegacyDropped
        } else {
            RatioSemantics::Keep
        },
        seeds: args.seeds,
        base_seed: args.base_seed,
        preset: match args.preset {
            PresetArg::Tiny => Preset::Tiny,
            PresetArg::Paper => Preset::Paper,
        },
        dense_baseline: !args.no_dense,
        steps: args.steps,
        batch_size: args.batch_size,
        learning_rate: args.lr,
        indexer_warmup_steps: args.indexer_warmup,
        indexer_loss_weight: args.indexer_loss_weight,
        eval_every: (args.steps / 4).max(1),
        eval_batches: 4,
        implementation: match args.implementation {
            ImplArg::MaskedDense => SparseImpl::MaskedDense,
            ImplArg::Gather => SparseImpl::Gather,
        },
    };
    params.validate()?;
    let estimate = params.check_memory(args.vocab, args.max_memory)?;
    let all = run_list(&params)?;
    if args.dry_run {
        println!(
            "{} runs (lengths {:?}, ratios {:?}, {} seeds{}); peak memory per run ≈ {}",
            all.len(),
            args.lengths,
            args.keep_ratios,
            args.seeds,
            if args.no_dense {
                ""
            } else {
                ", with dense baselines"
            },
            sparsity_experiments::dsa_sweep::human_bytes(estimate)
        );
        return Ok(());
    }
    let results_dir = args
        .results
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_else(|| PathBuf::from("."));
    if let Some(n) = args.emit_slurm {
        let mut sweep_args = format!(
            "--lengths {} --keep-ratios {} --seeds {} --base-seed {} --preset {} --steps {} \
             --batch-size {} --lr {} --indexer-warmup {} --indexer-loss-weight {} --data-seed {} --vocab {}",
            join(&args.lengths),
            join(&args.keep_ratios),
            args.seeds,
            args.base_seed,
            match args.preset {
                PresetArg::Tiny => "tiny",
                PresetArg::Paper => "paper",
            },
            args.steps,
            args.batch_size,
            args.lr,
            args.indexer_warmup,
            args.indexer_loss_weight,
            args.data_seed,
            args.vocab
        );
        if args.legacy_ratio {
            sweep_args.push_str(" --legacy-ratio");
        }
        if args.no_dense {
            sweep_args.push_str(" --no-dense");
        }
        let script = slurm_script(&sweep_args, n, &results_dir, "dsa-sweep", "24:00:00", 4)?;
        let path = results_dir.join("sweep.slurm");
        sparsity_io::write_atomic(&path, script.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        println!(
            "Slurm script for {} runs in {n} shards: {} (submit with `sbatch {}`)",
            all.len(),
            path.display(),
            path.display()
        );
        return Ok(());
    }
    let runs = match &args.shard {
        Some(s) => {
            let (i, n) = parse_shard(s)?;
            shard(all, i, n)?
        }
        None => all,
    };
    let done = completed_ids(&args.results)?;
    let todo: Vec<_> = runs.into_iter().filter(|r| !done.contains(&r.id)).collect();
    tracing::info!(
        runs = todo.len(),
        already_done = done.len(),
        results = %args.results.display(),
        "DSA sweep"
    );
    if !todo.is_empty() {
        let data = SweepData::demo_corpus(args.data_seed, args.vocab)?;
        tracing::info!(source = %data.source, train_tokens = data.train.len(), validation_tokens = data.validation.len(), "data");
        let device = cpu_device().autodiff();
        let bar = ProgressBar::new(todo.len() as u64);
        if let Ok(style) = ProgressStyle::with_template(
            "dsa-sweep [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}",
        ) {
            bar.set_style(style);
        }
        let run_id = new_run_id();
        let git_rev = crate::util::git_revision();
        for spec in &todo {
            bar.set_message(spec.id.clone());
            let result = run_one(spec, &params, &data, &device)?;
            append_result(&args.results, &result)?;
            let parameters = serde_json::json!({
                "run": spec.id, "length": spec.length, "keep_ratio": spec.keep_ratio, "top_k": spec.top_k,
                "seed": spec.seed, "preset": args.preset.to_possible_value_name(), "steps": args.steps,
            })
            .to_string();
            let rows: Vec<ResultRow> = [
                ("final_val_loss", result.final_val_loss),
                ("final_val_accuracy", result.final_val_accuracy),
                ("train_seconds", result.train_seconds),
                ("train_tokens_per_second", result.train_tokens_per_second),
            ]
            .into_iter()
            .map(|(metric, value)| ResultRow {
                run_id: run_id.clone(),
                timestamp_us: now_us(),
                git_rev: git_rev.clone(),
                command: "dsa-sweep".into(),
                model: format!("dsa-{}", args.preset.to_possible_value_name()),
                layer: None,
                site: format!("L{}", spec.length),
                method: spec
                    .keep_ratio
                    .map_or("dense".to_string(), |k| format!("dsa-keep-{k}")),
                metric: metric.into(),
                value,
                parameters: parameters.clone(),
            })
            .collect();
            append_rows(&args.results_dir, &rows).context("appending to the results store")?;
            tracing::info!(run = %spec.id, val_loss = result.final_val_loss, val_accuracy = result.final_val_accuracy, seconds = result.train_seconds, "run done");
            bar.inc(1);
        }
        bar.finish_and_clear();
    }
    let results = read_results(&args.results)?;
    let report = summarize(&results)?;
    let dir = args
        .report
        .clone()
        .unwrap_or_else(|| results_dir.join("report"));
    let md = write_report(&report, std::slice::from_ref(&args.results), &dir)?;
    println!(
        "DSA sweep: {} runs in {}; report: {}",
        results.len(),
        args.results.display(),
        md.display()
    );
    Ok(())
}

fn join<T: std::fmt::Display>(v: &[T]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

trait PresetName {
    fn to_possible_value_name(&self) -> &'static str;
}

impl PresetName for PresetArg {
    fn to_possible_value_name(&self) -> &'static str {
        match self {
            PresetArg::Tiny => "tiny",
            PresetArg::Paper => "paper",
        }
    }
}
