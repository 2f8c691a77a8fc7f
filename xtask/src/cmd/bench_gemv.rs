//! `cargo xtask bench-gemv`: masked vs dense GEMV on LLM-sized shapes (CPU), with a
//! STREAM-like bandwidth probe, `ndarray`'s `dot` and optionally numpy's `W @ x`
//! (`benches/peers/gemv_peer.py`) measured in the same run. Prints a table, writes JSON.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};
use sparsity_kernels::GemvConfig;
use sparsity_kernels::bench::{
    GemvBenchConfig, GemvBenchReport, GemvShape, WeightDtype, run_gemv_bench_with,
};

/// Arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Weight shapes as OUTxIN (`nn.Linear.weight` order), comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "4096x4096,11008x4096,4096x11008"
    )]
    shapes: Vec<String>,
    /// Target activation sparsities in [0, 1), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0,0.25,0.5,0.75,0.9")]
    sparsity: Vec<f64>,
    /// Backend: `cpu`, or `cuda` (the CubeCL split-K kernel on CUDA device 0; needs xtask built
    /// with `--features cubecl-cuda` on a machine with an NVIDIA driver).
    #[arg(long, default_value = "cpu")]
    backend: String,
    /// Weight element type: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// MiB of rotated weight copies per shape (keep well above the last-level cache).
    #[arg(long, default_value_t = 1024)]
    rotate_mib: usize,
    /// Timed calls per point.
    #[arg(long, default_value_t = 40)]
    reps: usize,
    /// Seed of weights and activations.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Outputs per rayon task in the CPU kernel.
    #[arg(long, default_value_t = 2048)]
    chunk_outputs: usize,
    /// Python interpreter with numpy: also time numpy's `W @ x` with benches/peers/gemv_peer.py.
    #[arg(long)]
    python: Option<PathBuf>,
    /// Output JSON file.
    #[arg(long, default_value = "results/bench_gemv.json")]
    out: PathBuf,
}

/// The numpy peer's result for one shape.
#[derive(Debug, serde::Deserialize, serde::Serialize)]
struct PeerRow {
    shape: String,
    median_us: f64,
    min_us: f64,
}

#[derive(serde::Serialize)]
struct Output<'a> {
    git_revision: String,
    report: &'a GemvBenchReport,
    numpy_peer: Vec<PeerRow>,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    let shapes = args
        .shapes
        .iter()
        .map(|s| s.parse::<GemvShape>())
        .collect::<Result<Vec<_>, _>>()
        .context("parsing --shapes")?;
    let dtype: WeightDtype = args.dtype.parse().context("parsing --dtype")?;
    match args.backend.as_str() {
        "cpu" => {}
        "cuda" => return run_cuda(&args, &shapes, dtype),
        other => bail!("--backend {other}: expected cpu or cuda"),
    }
    let config = GemvBenchConfig {
        shapes,
        sparsities: args.sparsity.clone(),
        dtype,
        rotate_bytes: args.rotate_mib << 20,
        reps: args.reps,
        seed: args.seed,
        kernel: GemvConfig {
            chunk_outputs: args.chunk_outputs,
            ..GemvConfig::default()
        },
        ndarray_peer: true,
    };
    let mut bar: Option<(String, indicatif::ProgressBar)> = None;
    let report = run_gemv_bench_with(&config, &mut |p| {
        if bar.as_ref().is_none_or(|(stage, _)| *stage != p.stage) {
            if let Some((_, old)) = bar.take() {
                old.finish_and_clear();
            }
            let label = format!("bench-gemv {}", p.stage);
            bar = Some((
                p.stage.clone(),
                crate::util::progress_bar(&label, "points", p.total as u64),
            ));
        }
        if let Some((_, b)) = &bar {
            b.set_position(p.done as u64);
        }
    })?;
    if let Some((_, b)) = bar {
        b.finish_and_clear();
    }

    let mut numpy_peer: Vec<PeerRow> = Vec::new();
    if let Some(python) = &args.python {
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../benches/peers/gemv_peer.py");
        let output = Command::new(python)
            .arg(&script)
            .arg("--shapes")
            .arg(args.shapes.join(","))
            .arg("--rotate-mib")
            .arg(args.rotate_mib.to_string())
            .arg("--reps")
            .arg(args.reps.to_string())
            .arg("--dtype")
            .arg(&args.dtype)
            .output()
            .with_context(|| format!("running {} {}", python.display(), script.display()))?;
        if !output.status.success() {
            bail!(
                "numpy peer {} failed: {}",
                script.display(),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        numpy_peer =
            serde_json::from_slice(&output.stdout).context("parsing the numpy peer's JSON")?;
    }

    let bw = report.bandwidth;
    println!(
        "bandwidth ({} threads, {} MiB buffers): copy {:.1} GB/s, read {:.1} GB/s",
        bw.threads,
        bw.buffer_bytes >> 20,
        bw.copy_gbs,
        bw.read_gbs
    );
    println!(
        "{:<12} {:<5} {:<12} {:>8} {:>8} {:>11} {:>9} {:>9} {:>9} {:>9}",
        "shape",
        "dtype",
        "kernel",
        "target_s",
        "actual_s",
        "median_us",
        "eff_GB/s",
        "%copy_bw",
        "x_dense",
        "x_ndarray"
    );
    for r in &report.rows {
        println!(
            "{:<12} {:<5} {:<12} {:>8.2} {:>8.3} {:>11.1} {:>9.1} {:>9.1} {:>9.2} {:>9}",
            r.shape.to_string(),
            args.dtype,
            r.kernel,
            r.target_sparsity,
            r.achieved_sparsity,
            r.median_us,
            r.effective_gbs,
            100.0 * r.effective_gbs / bw.copy_gbs,
            r.speedup_vs_dense,
            r.speedup_vs_ndarray
                .map_or("-".to_string(), |s| format!("{s:.2}")),
        );
    }
    for p in &numpy_peer {
        let dense = report
            .rows
            .iter()
            .find(|r| r.kernel == "dense" && r.shape.to_string() == p.shape)
            .map(|r| r.median_us);
        println!(
            "{:<12} {:<5} {:<12} {:>8} {:>8} {:>11.1}   (this crate's dense is {:.2}x faster)",
            p.shape,
            args.dtype,
            "numpy_W@x",
            "-",
            "-",
            p.median_us,
            dense.map_or(f64::NAN, |d| p.median_us / d)
        );
    }
    let out = Output {
        git_revision: crate::util::git_revision(),
        report: &report,
        numpy_peer,
    };
    crate::util::write_json(&args.out, &out)?;
    tracing::info!(path = %args.out.display(), "wrote JSON");
    Ok(())
}

#[cfg(not(feature = "cubecl-cuda"))]
fn run_cuda(_: &Args, _: &[GemvShape], _: WeightDtype) -> anyhow::Result<()> {
    bail!(
        "--backend cuda: this xtask was built without the CUDA client; on a machine with an NVIDIA \
         driver run `CUDARC_CUDA_VERSION=13000 cargo run --release -p xtask --features cubecl-cuda \
         -- bench-gemv --backend cuda` (see docs/kernels.md)"
    )
}

/// The GPU run: device copy bandwidth, then per shape the dense path and the masked path at
/// each sparsity (tuned launch, weights rotated over `--rotate-mib`).
#[cfg(feature = "cubecl-cuda")]
fn run_cuda(args: &Args, shapes: &[GemvShape], dtype: WeightDtype) -> anyhow::Result<()> {
    use half::{bf16, f16};
    use sparsity_kernels_cuda::{bench_gpu, cuda_client, device_copy_bandwidth};

    #[derive(serde::Serialize)]
    struct CudaOutput {
        git_revision: String,
        device: &'static str,
        copy_gbps: f64,
        rows: Vec<sparsity_kernels_cuda::GpuBenchRow>,
    }
    let client = cuda_client(0)?;
    let copy_gbps = device_copy_bandwidth(&client, 1 << 30, 5)?;
    println!("device copy bandwidth (1 GiB buffers): {copy_gbps:.0} GB/s");
    let rotate = args.rotate_mib << 20;
    let mut rows = Vec::new();
    for s in shapes {
        let (o, i) = (s.out_features, s.in_features);
        let sp = &args.sparsity;
        let (reps, seed) = (args.reps.max(1), args.seed);
        rows.extend(match dtype {
            WeightDtype::F32 => bench_gpu::<f32>(&client, o, i, sp, rotate, reps, seed)?,
            WeightDtype::F16 => bench_gpu::<f16>(&client, o, i, sp, rotate, reps, seed)?,
            WeightDtype::Bf16 => bench_gpu::<bf16>(&client, o, i, sp, rotate, reps, seed)?,
        });
    }
    print!("{}", sparsity_kernels_cuda::format_table(&rows, copy_gbps));
    let out = CudaOutput {
        git_revision: crate::util::git_revision(),
        device: "cuda:0",
        copy_gbps,
        rows,
    };
    crate::util::write_json(&args.out, &out)?;
    tracing::info!(path = %args.out.display(), "wrote JSON");
    Ok(())
}
