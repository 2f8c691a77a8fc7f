//! `cargo xtask sparse-decode`: TEAL-style activation sparsity at the MLP inputs — per-site
//! thresholds calibrated for each target sparsity, held-out perplexity and achieved sparsity.
//!
//! Default: both demo models, calibrated on windows of the demo corpus' training texts and
//! evaluated on windows of its held-out split. With `--model`, `--calib-texts` and
//! `--eval-texts` are required. Writes `sparse_decode.json`, `sparse_decode.png` and
//! `sparse_decode.md` into `--out-dir`: per allocation (uniform, TEAL's greedy), perplexity,
//! achieved sparsity and, with `--decode-windows`, token-by-token decode speed on this crate's
//! masked GEMV (see docs/kernels.md).

use std::path::PathBuf;

use anyhow::{Context, bail};
use sparsity_decoding::decode::{DecodeRun, Decoder, decode_sequences};
use sparsity_decoding::sparse_decode::{
    Allocation, SparseDecodeReport, plot_sweep, sparsity_sweep_with,
};
use sparsity_models::text::{TextTokenizer, read_texts};
use sparsity_models::{CausalLm, cpu_device};
use sparsity_pruning::model::calibration_windows;

/// Arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model directory or hub id (repeatable). Default: the demo GPT-2 and Mamba.
    #[arg(long = "model")]
    pub models: Vec<String>,
    /// Target sparsities.
    #[arg(long, value_delimiter = ',', default_value = "0,0.25,0.4,0.5,0.65")]
    pub sparsities: Vec<f64>,
    /// Calibration texts (one per line, or .jsonl with `text`).
    #[arg(long)]
    pub calib_texts: Option<PathBuf>,
    /// Held-out texts.
    #[arg(long)]
    pub eval_texts: Option<PathBuf>,
    /// Calibration windows.
    #[arg(long, default_value_t = 16)]
    pub nsamples: usize,
    /// Held-out windows.
    #[arg(long, default_value_t = 32)]
    pub eval_windows: usize,
    /// Window length in tokens.
    #[arg(long, default_value_t = 64)]
    pub seq_len: usize,
    /// Seed of the window starts.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Held-out windows decoded token by token with the CPU kernels for the speed columns
    /// (0: skip).
    #[arg(long, default_value_t = 4)]
    pub decode_windows: usize,
    /// Sequences per forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Output directory.
    #[arg(long, default_value = "results/sparse-decode")]
    pub out_dir: PathBuf,
    /// How each target is spread over a layer's sites: `uniform` (every site at the target),
    /// `greedy` (TEAL's block-wise greedy allocation by weight size); comma separated.
    #[arg(long, value_delimiter = ',', default_value = "uniform,greedy")]
    pub allocation: Vec<AllocationArg>,
    /// Level step of the greedy allocation.
    #[arg(long, default_value_t = 0.05)]
    pub greedy_step: f64,
    /// Demo model cache directory (default: target/sparsity-lab-cache/demo).
    #[arg(long)]
    pub cache: Option<PathBuf>,
}

/// `--allocation` values.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocationArg {
    /// Every site at the target.
    Uniform,
    /// TEAL's block-wise greedy allocation.
    Greedy,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    let device = cpu_device();
    let mut entries: Vec<(String, PathBuf)> = Vec::new();
    let (calib_texts, eval_texts) = if args.models.is_empty() {
        let demo = crate::util::demo_models(args.cache.as_deref())?;
        let (train, held) = (demo.train_texts(), demo.held_out_texts());
        entries.push(("demo-gpt2".into(), demo.gpt2_dir.clone()));
        entries.push(("demo-mamba".into(), demo.mamba_dir.clone()));
        (train, held)
    } else {
        let (Some(c), Some(e)) = (&args.calib_texts, &args.eval_texts) else {
            bail!("--calib-texts and --eval-texts are required with --model");
        };
        for id in &args.models {
            let dir = sparsity_models::hub::resolve_model_dir(id)
                .with_context(|| format!("resolving model `{id}`"))?;
            entries.push((id.clone(), dir));
        }
        (
            read_texts(c).with_context(|| format!("reading {}", c.display()))?,
            read_texts(e).with_context(|| format!("reading {}", e.display()))?,
        )
    };
    let mut reports: Vec<(String, SparseDecodeReport)> = Vec::new();
    // per model: the dense decode run, then one per target
    let mut decode_runs: Vec<(DecodeRun, Vec<DecodeRun>)> = Vec::new();
    for (name, dir) in &entries {
        let model = CausalLm::load_dir(dir, &device)
            .with_context(|| format!("loading {}", dir.display()))?;
        let tok = TextTokenizer::from_model_dir(dir)?;
        let calib_stream = tok.encode(&calib_texts.join("\n\n"))?;
        let eval_stream = tok.encode(&eval_texts.join("\n\n"))?;
        let calib = calibration_windows(&calib_stream, args.seq_len, args.nsamples, args.seed)
            .context("calibration windows")?;
        // held-out: consecutive, non-overlapping windows
        let eval: Vec<Vec<u32>> = eval_stream
            .chunks_exact(args.seq_len)
            .take(args.eval_windows)
            .map(<[u32]>::to_vec)
            .collect();
        if eval.is_empty() {
            bail!(
                "the held-out text has {} tokens, fewer than one window of {}",
                eval_stream.len(),
                args.seq_len
            );
        }
        let dense_run = if args.decode_windows > 0 {
            let windows = &eval[..args.decode_windows.min(eval.len())];
            let mut dense = Decoder::new(&model, None)?;
            // warm-up (page in the weights, start the rayon pool)
            decode_sequences(&mut dense, &windows[..1])?;
            Some(decode_sequences(&mut dense, windows)?)
        } else {
            None
        };
        for alloc in &args.allocation {
            let allocation = match alloc {
                AllocationArg::Uniform => Allocation::Uniform,
                AllocationArg::Greedy => Allocation::Greedy {
                    step: args.greedy_step,
                },
            };
            tracing::info!(model = %name, allocation = allocation.name(), "sparse-decode sweep");
            let report = sparsity_sweep_with(
                &model,
                &calib,
                &eval,
                &args.sparsities,
                allocation,
                args.batch_size,
                &device,
            )
            .with_context(|| format!("sweeping {name} ({})", allocation.name()))?;
            if let Some(dense_run) = &dense_run {
                let windows = &eval[..args.decode_windows.min(eval.len())];
                let mut rows = Vec::new();
                for row in &report.rows {
                    let mut dec = Decoder::new(&model, Some(&row.thresholds))?;
                    decode_sequences(&mut dec, &windows[..1])?;
                    rows.push(decode_sequences(&mut dec, windows)?);
                }
                decode_runs.push((dense_run.clone(), rows));
            }
            reports.push((format!("{name} ({})", allocation.name()), report));
        }
    }

    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("creating {}", args.out_dir.display()))?;
    let json = serde_json::json!({
        "git_revision": crate::util::git_revision(),
        "options": {
            "sparsities": args.sparsities, "nsamples": args.nsamples,
            "greedy_step": args.greedy_step,
            "eval_windows": args.eval_windows, "seq_len": args.seq_len, "seed": args.seed,
        },
        "models": reports.iter().enumerate().map(|(i, (n, r))| serde_json::json!({
            "name": n, "report": r,
            "decode": decode_runs.get(i).map(|(d, rows)| serde_json::json!({"dense": d, "per_target": rows})),
        })).collect::<Vec<_>>(),
    });
    crate::util::write_json(&args.out_dir.join("sparse_decode.json"), &json)?;
    let png = args.out_dir.join("sparse_decode.png");
    plot_sweep(&png, &reports)?;
    let mut md = String::from(
        "# TEAL-style MLP-input sparsity\n\n`achieved`: fraction of MLP-input entries zeroed on the held-out text; `weights skipped`: the per-site fractions weighted by the size of the weight each site feeds (what a masked GEMV does not read).\n\n| model (allocation) | target | achieved | weights skipped | perplexity | vs dense | decode tok/s | speed-up |\n|---|---|---|---|---|---|---|---|\n",
    );
    for (i, (name, r)) in reports.iter().enumerate() {
        let dec = decode_runs.get(i);
        let tps = |run: Option<&DecodeRun>| {
            run.map_or("-".to_string(), |d| format!("{:.1}", d.tokens_per_second))
        };
        md.push_str(&format!(
            "| {name} | dense | 0 | 0 | {:.3} | | {} | 1.00 |\n",
            r.dense.perplexity,
            tps(dec.map(|d| &d.0))
        ));
        for (j, row) in r.rows.iter().enumerate() {
            let run = dec.and_then(|d| d.1.get(j));
            let speed = match (dec, run) {
                (Some((d, _)), Some(s)) => {
                    format!("{:.2}", s.tokens_per_second / d.tokens_per_second)
                }
                _ => "-".into(),
            };
            md.push_str(&format!(
                "| {name} | {:.2} | {:.3} | {:.3} | {:.3} | {:+.2} % | {} | {speed} |\n",
                row.target,
                row.achieved_sparsity,
                row.weight_sparsity,
                row.perplexity.perplexity,
                100.0 * row.relative_increase,
                tps(run)
            ));
        }
    }
    sparsity_io::write_atomic(&args.out_dir.join("sparse_decode.md"), md.as_bytes())
        .context("writing sparse_decode.md")?;
    eprint!("{md}");
    eprintln!("report in {}", args.out_dir.display());
    Ok(())
}
