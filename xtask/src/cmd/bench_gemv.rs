//! `cargo xtask bench-gemv`: masked vs dense GEMV on LLM-sized shapes (CPU), with a
//! STREAM-like bandwidth probe, `ndarray`'s `dot` and optionally numpy's `W @ x`
//! (`benches/peers/gemv_peer.py`) measured in the same run. Prints a table, writes JSON.

use std::path::PathBuf;

use anyhow::{Context, bail};
use sparsity_experiments::bench::{NumpyPeer, run_gemv_bench};
use sparsity_kernels::GemvConfig;
use sparsity_kernels::bench::{GemvBenchConfig, GemvShape, WeightDtype};

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
    /// Split the outputs among the threads instead of the inputs (the kernel's pre-split-K
    /// strategy, for comparison).
    #[arg(long)]
    no_split_k: bool,
    /// Python interpreter with numpy: also time numpy's `W @ x` with benches/peers/gemv_peer.py.
    #[arg(long)]
    python: Option<PathBuf>,
    /// Output JSON file.
    #[arg(long, default_value = "results/bench_gemv.json")]
    out: PathBuf,
    #[command(flatten)]
    budget: crate::util::BudgetArgs,
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
        rotate_bytes: args
            .rotate_mib
            .checked_mul(1 << 20)
            .context("--rotate-mib: too large")?,
        reps: args.reps,
        seed: args.seed,
        kernel: GemvConfig {
            chunk_outputs: args.chunk_outputs,
            split_k: !args.no_split_k,
            ..GemvConfig::default()
        },
        ndarray_peer: true,
    };
    let peer = args.python.map(|python| NumpyPeer {
        python,
        script: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../benches/peers/gemv_peer.py"),
    });
    if args.budget.dry_run {
        println!(
            "{}",
            sparsity_experiments::bench::gemv_bench_memory(&config)
        );
        return Ok(());
    }
    let (_, table) = run_gemv_bench(&config, peer.as_ref(), &args.out, args.budget.max_memory)?;
    print!("{table}");
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
    use sparsity_kernels_cuda::{bench_shapes, cuda_client, device_copy_bandwidth};

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
    let dims: Vec<(usize, usize)> = shapes
        .iter()
        .map(|s| (s.out_features, s.in_features))
        .collect();
    let rotate = args.rotate_mib << 20;
    let rows = bench_shapes(
        &client,
        &dims,
        dtype,
        &args.sparsity,
        rotate,
        args.reps,
        args.seed,
    )?;
    print!("{}", sparsity_kernels_cuda::format_table(&rows, copy_gbps));
    let out = CudaOutput {
        git_revision: sparsity_experiments::results::git_revision(),
        device: "cuda:0",
        copy_gbps,
        rows,
    };
    sparsity_experiments::write_json(&args.out, &out)?;
    tracing::info!(path = %args.out.display(), "wrote JSON");
    Ok(())
}
