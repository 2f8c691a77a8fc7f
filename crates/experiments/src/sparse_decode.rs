//! `cargo xtask sparse-decode`: TEAL-style activation sparsity per model and allocation —
//! calibrated thresholds, held-out perplexity and achieved sparsity, and (optionally) decode
//! speed on the kernels' masked GEMV — with its JSON, figure and Markdown table.

use std::path::PathBuf;

use burn::tensor::Device;
use serde::Serialize;
use sparsity_decoding::decode::{DecodeRun, Decoder, decode_sequences};
use sparsity_decoding::sparse_decode::{
    Allocation, SparseDecodeReport, plot_sweep, sparsity_sweep_with,
};
use sparsity_models::CausalLm;
use sparsity_models::text::TextTokenizer;
use sparsity_pruning::model::calibration_windows;

use crate::error::{ExperimentError, Result, StepContext};
use crate::results::git_revision;
use crate::source::{resolve_models, texts_or};

/// One sparse-decode run.
#[derive(Debug, Clone, Serialize)]
pub struct SparseDecodeRun {
    /// Model directories / hub ids; empty: both demo models.
    pub models: Vec<String>,
    /// Demo model cache.
    #[serde(skip)]
    pub demo_cache: PathBuf,
    /// Target sparsities.
    pub sparsities: Vec<f64>,
    /// Calibration texts (required with models other than the demo ones).
    pub calib_texts: Option<PathBuf>,
    /// Held-out texts (required with models other than the demo ones).
    pub eval_texts: Option<PathBuf>,
    /// Calibration windows.
    pub nsamples: usize,
    /// Held-out windows (consecutive, non-overlapping).
    pub eval_windows: usize,
    /// Window length in tokens.
    pub seq_len: usize,
    /// Seed of the calibration window starts.
    pub seed: u64,
    /// Held-out windows decoded token by token for the speed columns (0: skip).
    pub decode_windows: usize,
    /// Sequences per forward pass.
    pub batch_size: usize,
    /// The allocations swept.
    pub allocations: Vec<Allocation>,
    /// Output directory.
    pub out_dir: PathBuf,
    /// Memory budget in bytes (`--max-memory`) for one forward pass's activations at
    /// `batch_size × seq_len`; `None`: the memory the system reports available.
    #[serde(skip)]
    pub max_memory: Option<u64>,
}

/// Decode runs of one model and allocation: dense, then one per target.
#[derive(Debug, Clone, Serialize)]
pub struct DecodeRuns {
    /// The dense decoder.
    pub dense: DecodeRun,
    /// One run per target, in order.
    pub per_target: Vec<DecodeRun>,
}

/// One (model, allocation) entry of the report.
#[derive(Debug, Clone, Serialize)]
pub struct ModelEntry {
    /// `model (allocation)`.
    pub name: String,
    /// The sweep.
    pub report: SparseDecodeReport,
    /// Decode speed, when measured.
    pub decode: Option<DecodeRuns>,
}

/// `sparse_decode.json`.
#[derive(Debug, Clone, Serialize)]
pub struct SparseDecodeOutput {
    /// Code revision.
    pub git_revision: String,
    /// When the sweep finished (UTC, minutes).
    pub date: String,
    /// The CPU (`model name` of /proc/cpuinfo) and its logical cores.
    pub cpu: String,
    /// Logical cores: timings taken while the load average exceeded them are unreliable.
    pub cores: usize,
    /// The vector instructions the GEMV kernels ran with (`sparsity_kernels::simd_level`).
    pub simd: String,
    /// Highest 1-minute load average read before or after any timed decode (`None`: the system
    /// has none).
    pub load_max: Option<f64>,
    /// Highest average number of CPUs other processes and the hypervisor used during a timed
    /// decode (`crate::machine::CpuSnapshot`).
    pub other_cpus_max: Option<f64>,
    /// The options.
    pub options: SparseDecodeRun,
    /// Per model and allocation.
    pub models: Vec<ModelEntry>,
}

/// The plan of a sweep without running it (`--dry-run`): per model, the windows, targets and
/// allocations, and the memory estimate of one forward pass at `batch_size × seq_len`, checked
/// against the budget. Models are loaded (their shapes decide the estimate); nothing is written.
pub fn plan_sparse_decode(run: &SparseDecodeRun, device: &Device) -> Result<String> {
    use std::fmt::Write as _;
    let set = resolve_models(&run.models, &run.demo_cache)?;
    let mut out = String::new();
    for (name, dir) in &set.models {
        let model =
            CausalLm::load_dir(dir, device).with_step(|| format!("loading {}", dir.display()))?;
        let estimate = model.forward_memory(run.batch_size, run.seq_len);
        let verdict = match estimate.check(run.max_memory, "") {
            Ok(_) => "fits the budget".to_string(),
            Err(e) => format!("OVER BUDGET: {e}"),
        };
        let _ = writeln!(
            out,
            "{name}: {} calibration + {} held-out windows of {} tokens, {} targets x {} allocations\n{estimate}\n  {verdict}",
            run.nsamples,
            run.eval_windows,
            run.seq_len,
            run.sparsities.len(),
            run.allocations.len(),
        );
    }
    Ok(out)
}

/// Runs the sweep on every model and allocation and writes `sparse_decode.json`,
/// `sparse_decode.png` and `sparse_decode.md` into `run.out_dir`; returns the Markdown table.
pub fn run_sparse_decode(run: &SparseDecodeRun, device: &Device) -> Result<String> {
    let set = resolve_models(&run.models, &run.demo_cache)?;
    let calib_texts = texts_or(
        run.calib_texts.as_deref(),
        set.demo_train_texts(),
        "--calib-texts",
    )?;
    let eval_texts = texts_or(
        run.eval_texts.as_deref(),
        set.demo_held_out_texts(),
        "--eval-texts",
    )?;
    let mut entries = Vec::new();
    let mut conditions = crate::machine::Conditions::default();
    for (name, dir) in &set.models {
        let model =
            CausalLm::load_dir(dir, device).with_step(|| format!("loading {}", dir.display()))?;
        model
            .forward_memory(run.batch_size, run.seq_len)
            .check(
                run.max_memory,
                "use a shorter --seq-len or a smaller --batch-size, or raise --max-memory",
            )
            .with_step(|| format!("checking the memory budget of `{name}`"))?;
        let tok = TextTokenizer::from_model_dir(dir)
            .with_step(|| format!("loading the tokenizer of {}", dir.display()))?;
        let calib_stream = tok.encode(&calib_texts.join("\n\n")).step("tokenising")?;
        let eval_stream = tok.encode(&eval_texts.join("\n\n")).step("tokenising")?;
        let calib = calibration_windows(&calib_stream, run.seq_len, run.nsamples, run.seed)
            .step("calibration windows")?;
        let eval: Vec<Vec<u32>> = eval_stream
            .chunks_exact(run.seq_len.max(1))
            .take(run.eval_windows)
            .map(<[u32]>::to_vec)
            .collect();
        if eval.is_empty() {
            return Err(ExperimentError::invalid(
                "--eval-texts",
                format!(
                    "the held-out text has {} tokens, fewer than one window of {}",
                    eval_stream.len(),
                    run.seq_len
                ),
            ));
        }
        let windows = &eval[..run.decode_windows.min(eval.len())];
        let dense = if windows.is_empty() {
            None
        } else {
            Some(timed_decode(&model, None, windows, &mut conditions)?)
        };
        for &allocation in &run.allocations {
            tracing::info!(model = %name, allocation = allocation.name(), "sparse-decode sweep");
            let report = sparsity_sweep_with(
                &model,
                &calib,
                &eval,
                &run.sparsities,
                allocation,
                run.batch_size,
                device,
            )
            .with_step(|| format!("sweeping {name} ({})", allocation.name()))?;
            let decode = match &dense {
                Some(d) => Some(DecodeRuns {
                    dense: d.clone(),
                    per_target: report
                        .rows
                        .iter()
                        .map(|row| {
                            timed_decode(&model, Some(&row.thresholds), windows, &mut conditions)
                        })
                        .collect::<Result<_>>()?,
                }),
                None => None,
            };
            entries.push(ModelEntry {
                name: format!("{name} ({})", allocation.name()),
                report,
                decode,
            });
        }
    }
    std::fs::create_dir_all(&run.out_dir)
        .with_step(|| format!("creating {}", run.out_dir.display()))?;
    let out = SparseDecodeOutput {
        git_revision: git_revision(),
        date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        cpu: crate::machine::cpu_name(),
        cores: crate::machine::logical_cores(),
        simd: sparsity_kernels::simd_level().name().into(),
        load_max: conditions.load,
        other_cpus_max: conditions.other_cpus,
        options: run.clone(),
        models: entries,
    };
    crate::write_json(&run.out_dir.join("sparse_decode.json"), &out)?;
    let reports: Vec<(String, SparseDecodeReport)> = out
        .models
        .iter()
        .map(|e| (e.name.clone(), e.report.clone()))
        .collect();
    plot_sweep(&run.out_dir.join("sparse_decode.png"), &reports).step("plotting the sweep")?;
    let md = markdown(&out.models);
    let path = run.out_dir.join("sparse_decode.md");
    sparsity_io::write_atomic(&path, md.as_bytes())
        .with_step(|| format!("writing {}", path.display()))?;
    Ok(md)
}

/// Decodes `windows` after one warm-up window (pages in the weights, starts the rayon pool);
/// raises `worst` to the conditions measured around the timed part.
fn timed_decode(
    model: &CausalLm,
    thresholds: Option<&sparsity_decoding::sparse_decode::Thresholds>,
    windows: &[Vec<u32>],
    worst: &mut crate::machine::Conditions,
) -> Result<DecodeRun> {
    let mut dec = Decoder::new(model, thresholds).step("building the decoder")?;
    decode_sequences(&mut dec, &windows[..1]).step("decoding (warm-up)")?;
    let (run, cond) = crate::machine::measure(|| decode_sequences(&mut dec, windows));
    worst.load = crate::machine::max_reading(worst.load, cond.load);
    worst.other_cpus = crate::machine::max_reading(worst.other_cpus, cond.other_cpus);
    run.step("decoding")
}

/// The Markdown table of `sparse_decode.md`.
pub fn markdown(models: &[ModelEntry]) -> String {
    let mut md = String::from(
        "# TEAL-style activation sparsity\n\nMasked sites: the MLP inputs of GPT-2 and Mamba; every linear layer's input (q/k/v, o, MLP in, MLP out) of OPT and the Llama family. `achieved`: fraction of masked-site entries zeroed on the held-out text (exact zeros included: OPT's ReLU gives many at target 0); `weights skipped`: the per-site fractions weighted by the size of the weight each site feeds (what a masked GEMV does not read).\n\n| model (allocation) | target | achieved | weights skipped | perplexity | vs dense | decode tok/s | speed-up |\n|---|---|---|---|---|---|---|---|\n",
    );
    for e in models {
        let (name, r, dec) = (&e.name, &e.report, e.decode.as_ref());
        let tps = |run: Option<&DecodeRun>| {
            run.map_or("-".to_string(), |d| format!("{:.1}", d.tokens_per_second))
        };
        md.push_str(&format!(
            "| {name} | dense | 0 | 0 | {:.3} | | {} | 1.00 |\n",
            r.dense.perplexity,
            tps(dec.map(|d| &d.dense))
        ));
        for (j, row) in r.rows.iter().enumerate() {
            let run = dec.and_then(|d| d.per_target.get(j));
            let speed = match (dec, run) {
                (Some(d), Some(s)) => {
                    format!("{:.2}", s.tokens_per_second / d.dense.tokens_per_second)
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
    md
}
