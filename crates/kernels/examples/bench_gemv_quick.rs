//! Quick bandwidth table of the CPU kernels without the xtask driver:
//! `cargo run --release -p sparsity-kernels --example bench_gemv_quick [DTYPE [SHAPES [SPARSITIES]]]`,
//! e.g. `-- bf16 5632x2048,2048x5632 0,0.5` (defaults: f32, the three LLaMA-7B shapes, 0–0.9).

use sparsity_kernels::bench::{GemvBenchConfig, run_gemv_bench};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut config = GemvBenchConfig {
        reps: 24,
        ..GemvBenchConfig::default()
    };
    if let Some(dtype) = args.first() {
        config.dtype = dtype.parse()?;
    }
    if let Some(shapes) = args.get(1) {
        config.shapes = shapes
            .split(',')
            .map(str::parse)
            .collect::<Result<_, _>>()?;
    }
    if let Some(sparsities) = args.get(2) {
        config.sparsities = sparsities
            .split(',')
            .map(str::parse)
            .collect::<Result<_, _>>()?;
    }
    let report = run_gemv_bench(&config)?;
    let bw = report.bandwidth;
    println!(
        "threads {} copy {:.1} GB/s read {:.1} GB/s kernels {}",
        bw.threads, bw.copy_gbs, bw.read_gbs, report.simd
    );
    println!(
        "| shape (out×in) | kernel | sparsity | median µs | eff. GB/s | % copy BW | × dense | × ndarray dot |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in &report.rows {
        println!(
            "| {} | {} | {:.2} | {:.0} | {:.1} | {:.0} % | {:.2} | {} |",
            r.shape,
            r.kernel,
            r.achieved_sparsity,
            r.median_us,
            r.effective_gbs,
            100.0 * r.effective_gbs / bw.copy_gbs,
            r.speedup_vs_dense,
            r.speedup_vs_ndarray
                .map_or("-".to_string(), |s| format!("{s:.2}"))
        );
    }
    Ok(())
}
