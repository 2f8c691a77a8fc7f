//! `cargo xtask dsa-sweep`: train the DSA transformer at several sequence lengths and keep ratios
//! (plus a dense baseline) with several seeds; one JSON line per run appended to `--results`, so
//! an interrupted sweep resumes where it stopped; `--shard i/n` runs a deterministic slice and
//! `--emit-slurm N` writes a Slurm job-array script instead of running. Writes the report when done.

use std::path::PathBuf;

use anyhow::bail;
use sparsity_experiments::dsa_recall::RecallTask;
use sparsity_experiments::dsa_sweep::{
    Preset, RatioSemantics, RunOptions, SweepAction, SweepParams, SweepRun, Task, parse_bytes,
    parse_shard, run_sweep,
};
use sparsity_models::dsa::SparseImpl;

/// Arguments.
#[derive(clap::Args, Debug, PartialEq)]
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
    /// The task: `recall` (the corpus text with key–value facts planted early in every window
    /// and queried late: the task where the choice of keys matters; docs/dsa.md) or `text`.
    #[arg(long, default_value = "recall", value_parser = ["recall", "text"])]
    pub task: String,
    /// Facts (and queries) per window of the recall task (8 keys, 16 values).
    #[arg(long, default_value_t = 4)]
    pub recall_pairs: usize,
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

impl Args {
    /// The sweep's own options as command-line arguments, for the Slurm script's tasks: every
    /// option except `--shard`, `--results`, `--report`, `--emit-slurm` and `--dry-run`, which
    /// each task sets itself or must not repeat. The destructuring names every field, so a new
    /// option does not compile until it is placed here; `slurm_command_parses_back_to_the_same_options`
    /// checks that the list parses back to the same values.
    pub fn sweep_argv(&self) -> Vec<String> {
        let Self {
            lengths,
            keep_ratios,
            legacy_ratio,
            seeds,
            base_seed,
            preset,
            backend,
            no_dense,
            steps,
            batch_size,
            lr,
            indexer_warmup,
            indexer_loss_weight,
            data_seed,
            vocab,
            task,
            recall_pairs,
            shard: _,
            emit_slurm: _,
            implementation,
            results: _,
            report: _,
            results_dir,
            max_memory,
            dry_run: _,
        } = self;
        let join = |v: Vec<String>| v.join(",");
        let mut a: Vec<String> = Vec::new();
        let mut opt = |name: &str, value: String| {
            a.push(format!("--{name}"));
            a.push(value);
        };
        opt(
            "lengths",
            join(lengths.iter().map(|x| x.to_string()).collect()),
        );
        opt(
            "keep-ratios",
            join(keep_ratios.iter().map(|x| x.to_string()).collect()),
        );
        opt("seeds", seeds.to_string());
        opt("base-seed", base_seed.to_string());
        opt("preset", preset.name().to_string());
        opt("backend", backend.clone());
        opt("steps", steps.to_string());
        opt("batch-size", batch_size.to_string());
        opt("lr", lr.to_string());
        opt("indexer-warmup", indexer_warmup.to_string());
        opt("indexer-loss-weight", indexer_loss_weight.to_string());
        opt("data-seed", data_seed.to_string());
        opt("vocab", vocab.to_string());
        opt("task", task.clone());
        opt("recall-pairs", recall_pairs.to_string());
        opt("implementation", implementation.name().to_string());
        opt("results-dir", results_dir.display().to_string());
        if let Some(m) = max_memory {
            opt("max-memory", m.to_string());
        }
        if *legacy_ratio {
            a.push("--legacy-ratio".into());
        }
        if *no_dense {
            a.push("--no-dense".into());
        }
        a
    }
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
        seeds: args.seeds,
        base_seed: args.base_seed,
        dense_baseline: !args.no_dense,
        options: RunOptions {
            preset: args.preset,
            semantics,
            steps: args.steps,
            batch_size: args.batch_size,
            learning_rate: args.lr,
            indexer_warmup_steps: args.indexer_warmup,
            indexer_loss_weight: args.indexer_loss_weight,
            eval_every: (args.steps / 4).max(1),
            eval_batches: 4,
            implementation: args.implementation,
            data_seed: args.data_seed,
            vocab: args.vocab,
            task: match args.task.as_str() {
                "text" => Task::Text,
                _ => Task::Recall(RecallTask {
                    pairs: args.recall_pairs,
                    ..RecallTask::default()
                }),
            },
        },
    };
    let action = match (args.dry_run, args.emit_slurm) {
        (true, _) => SweepAction::DryRun,
        (false, Some(shards)) => SweepAction::EmitSlurm { shards },
        (false, None) => SweepAction::Run,
    };
    let run = SweepRun {
        params,
        command_args: args.sweep_argv(),
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(argv: &[String]) -> Args {
        let full = std::iter::once("dsa-sweep".to_string()).chain(argv.iter().cloned());
        Cli::try_parse_from(full).unwrap().args
    }

    /// Splits one line of the emitted script into words as a POSIX shell would (plain words,
    /// single-quoted words and backslash escapes; that is all `shell_quote` writes).
    fn shell_words(line: &str) -> Vec<String> {
        let (mut words, mut cur, mut quoted, mut any) = (Vec::new(), String::new(), false, false);
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' if !quoted => cur.extend(chars.next()),
                '\'' => {
                    quoted = !quoted;
                    any = true;
                }
                ' ' if !quoted => {
                    if any || !cur.is_empty() {
                        words.push(std::mem::take(&mut cur));
                    }
                    any = false;
                }
                _ => cur.push(c),
            }
        }
        if any || !cur.is_empty() {
            words.push(cur);
        }
        words
    }

    /// Every option set to a value other than its default (the Slurm tasks must run exactly
    /// the emitted sweep: the old script dropped `--implementation`).
    #[test]
    fn slurm_command_parses_back_to_the_same_options() {
        let argv: Vec<String> = [
            "--lengths",
            "32,96",
            "--keep-ratios",
            "0.125,0.3",
            "--legacy-ratio",
            "--seeds",
            "5",
            "--base-seed",
            "11",
            "--preset",
            "paper",
            "--backend",
            "ndarray",
            "--no-dense",
            "--steps",
            "77",
            "--batch-size",
            "3",
            "--lr",
            "0.00123",
            "--indexer-warmup",
            "9",
            "--indexer-loss-weight",
            "0.5",
            "--data-seed",
            "8",
            "--vocab",
            "300",
            "--task",
            "text",
            "--recall-pairs",
            "2",
            "--implementation",
            "gather",
            "--results-dir",
            "my results/it's here",
            "--max-memory",
            "3G",
            "--shard",
            "1/4",
            "--emit-slurm",
            "4",
            "--results",
            "r/runs.jsonl",
            "--report",
            "rep",
            "--dry-run",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let original = parse(&argv);
        let defaults = parse(&[]);
        // Each option really differs from its default, so a dropped option is seen.
        let dbg = |a: &Args| format!("{a:?}");
        for (name, field) in [
            ("lengths", original.lengths != defaults.lengths),
            ("keep-ratios", original.keep_ratios != defaults.keep_ratios),
            (
                "legacy-ratio",
                original.legacy_ratio != defaults.legacy_ratio,
            ),
            ("seeds", original.seeds != defaults.seeds),
            ("base-seed", original.base_seed != defaults.base_seed),
            ("preset", original.preset != defaults.preset),
            ("no-dense", original.no_dense != defaults.no_dense),
            ("steps", original.steps != defaults.steps),
            ("batch-size", original.batch_size != defaults.batch_size),
            ("lr", original.lr != defaults.lr),
            (
                "indexer-warmup",
                original.indexer_warmup != defaults.indexer_warmup,
            ),
            (
                "indexer-loss-weight",
                original.indexer_loss_weight != defaults.indexer_loss_weight,
            ),
            ("data-seed", original.data_seed != defaults.data_seed),
            ("vocab", original.vocab != defaults.vocab),
            ("task", original.task != defaults.task),
            (
                "recall-pairs",
                original.recall_pairs != defaults.recall_pairs,
            ),
            (
                "implementation",
                original.implementation != defaults.implementation,
            ),
            ("results-dir", original.results_dir != defaults.results_dir),
            ("max-memory", original.max_memory != defaults.max_memory),
        ] {
            assert!(
                field,
                "--{name} is at its default in the test: {}",
                dbg(&original)
            );
        }

        let script = sparsity_experiments::dsa_sweep::slurm_script(
            &original.sweep_argv(),
            4,
            std::path::Path::new("out dir"),
            "j",
            "1:00:00",
            2,
        )
        .unwrap();
        // The task's command: the `cargo xtask dsa-sweep` line and its continuation.
        let start = script.find("cargo xtask dsa-sweep ").unwrap();
        let command = script[start..].replace("\\\n", " ");
        let line = command.lines().next().unwrap();
        let words = shell_words(line);
        assert_eq!(&words[..3], ["cargo", "xtask", "dsa-sweep"]);
        let task_args: Vec<String> = words[3..]
            .iter()
            .map(|w| {
                w.replace("\"${SLURM_ARRAY_TASK_ID}\"", "1")
                    .replace("${SLURM_ARRAY_TASK_ID}", "1")
            })
            .map(|w| w.replace('"', ""))
            .collect();
        let back = parse(&task_args);
        // Everything but what each task sets itself equals the original.
        let expected = Args {
            shard: Some((1, 4)),
            emit_slurm: None,
            results: std::path::PathBuf::from("out dir/shard-1.jsonl"),
            report: None,
            dry_run: false,
            ..parse(&argv)
        };
        assert_eq!(back, expected, "script:\n{script}");
    }
}
