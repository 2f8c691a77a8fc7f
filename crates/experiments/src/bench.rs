//! `cargo xtask bench-gemv`: the kernels' GEMV benchmark with its progress as `tracing` spans,
//! and numpy's `W @ x` (`benches/peers/gemv_peer.py`) measured in the same run.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};
use sparsity_kernels::bench::{GemvBenchConfig, GemvBenchReport, run_gemv_bench_with};

use crate::error::{ExperimentError, Result, StepContext};
use crate::results::git_revision;

/// The numpy peer's result for one shape.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct PeerRow {
    /// `OUTxIN`.
    pub shape: String,
    /// Median µs per call.
    pub median_us: f64,
    /// Fastest µs per call.
    pub min_us: f64,
}

/// The JSON of a CPU run.
#[derive(Debug, Clone, Serialize)]
pub struct GemvBenchOutput {
    /// Code revision.
    pub git_revision: String,
    /// Our kernels.
    pub report: GemvBenchReport,
    /// numpy's `W @ x`, when measured.
    pub numpy_peer: Vec<PeerRow>,
}

/// How to run the numpy peer.
#[derive(Debug, Clone)]
pub struct NumpyPeer {
    /// Python interpreter with numpy.
    pub python: PathBuf,
    /// `benches/peers/gemv_peer.py`.
    pub script: PathBuf,
}

/// The GEMV benchmark's peak memory (f64: no shape overflows it): the bandwidth probe's two
/// buffers, then per shape (one at a time) the rotated weight copies (at least 2, enough to
/// fill `rotate_bytes`), an f32 copy of each for the `ndarray` peer.
pub fn gemv_bench_memory(config: &GemvBenchConfig) -> sparsity_io::budget::MemoryEstimate {
    use sparsity_kernels::bench::WeightDtype;
    let elem = if matches!(config.dtype, WeightDtype::F32) {
        4.0
    } else {
        2.0
    };
    let rotate = config.rotate_bytes as f64;
    let largest = config
        .shapes
        .iter()
        .map(|s| s.out_features as f64 * s.in_features as f64)
        .fold(0.0, f64::max);
    let copies = (rotate / (largest * elem).max(1.0)).ceil().max(2.0);
    let mut e = sparsity_io::budget::MemoryEstimate::new(format!(
        "bench-gemv ({} shapes, largest {largest:.3e} weights, {copies} copies)",
        config.shapes.len()
    ))
    .part("bandwidth probe", rotate.max((1u64 << 28) as f64))
    .part("weight copies", copies * largest * elem);
    if config.ndarray_peer {
        e = e.part("ndarray peer (f32)", copies * largest * 4.0);
    }
    e
}

/// Runs the benchmark (progress as `tracing` spans, one per shape), then the numpy peer on the
/// same shapes, and writes the JSON to `out`. Returns the output and a text table.
pub fn run_gemv_bench(
    config: &GemvBenchConfig,
    peer: Option<&NumpyPeer>,
    out: &Path,
    max_memory: Option<u64>,
) -> Result<(GemvBenchOutput, String)> {
    gemv_bench_memory(config)
        .check(
            max_memory,
            "use smaller --shapes or --rotate-mib, or raise --max-memory",
        )
        .step("checking the memory budget")?;
    let mut span: Option<(String, tracing::Span, usize)> = None;
    let report = run_gemv_bench_with(config, &mut |p| {
        if span.as_ref().is_none_or(|(stage, _, _)| *stage != p.stage) {
            let s = tracing::info_span!(
                "bench-gemv",
                progress_total = p.total as u64,
                progress_unit = "points",
                progress_message = %format!("bench-gemv {}", p.stage)
            );
            span = Some((p.stage.clone(), s, 0));
        }
        if let Some((_, s, done)) = &mut span {
            let inc = p.done.saturating_sub(*done) as u64;
            *done = p.done;
            tracing::trace!(target: sparsity_models::PROGRESS, parent: &*s, progress_inc = inc);
        }
    })
    .step("GEMV benchmark")?;
    drop(span);
    let numpy_peer = match peer {
        Some(p) => run_numpy_peer(p, config)?,
        None => Vec::new(),
    };
    let mut table = report.table();
    let dtype = format!("{:?}", config.dtype).to_lowercase();
    for p in &numpy_peer {
        let dense = report
            .rows
            .iter()
            .find(|r| r.kernel == "dense" && r.shape.to_string() == p.shape)
            .map(|r| r.median_us);
        table += &format!(
            "{:<12} {:<5} {:<12} {:>8} {:>8} {:>11.1}   (this crate's dense is {:.2}x faster)\n",
            p.shape,
            dtype,
            "numpy_W@x",
            "-",
            "-",
            p.median_us,
            dense.map_or(f64::NAN, |d| p.median_us / d)
        );
    }
    let output = GemvBenchOutput {
        git_revision: git_revision(),
        report,
        numpy_peer,
    };
    crate::write_json(out, &output)?;
    Ok((output, table))
}

fn run_numpy_peer(peer: &NumpyPeer, config: &GemvBenchConfig) -> Result<Vec<PeerRow>> {
    let shapes: Vec<String> = config.shapes.iter().map(|s| s.to_string()).collect();
    let output = Command::new(&peer.python)
        .arg(&peer.script)
        .arg("--shapes")
        .arg(shapes.join(","))
        .arg("--rotate-mib")
        .arg((config.rotate_bytes >> 20).to_string())
        .arg("--reps")
        .arg(config.reps.to_string())
        .arg("--dtype")
        .arg(format!("{:?}", config.dtype).to_lowercase())
        .output()
        .with_step(|| {
            format!(
                "running {} {}",
                peer.python.display(),
                peer.script.display()
            )
        })?;
    if !output.status.success() {
        return Err(ExperimentError::invalid(
            "--python",
            format!(
                "numpy peer {} failed: {}",
                peer.script.display(),
                String::from_utf8_lossy(&output.stderr)
            ),
        ));
    }
    serde_json::from_slice(&output.stdout).step("parsing the numpy peer's JSON")
}
