//! Quick bandwidth table of the CPU kernels without the xtask driver:
//! `cargo run --release -p sparsity-kernels --example bench_gemv_quick`.

use sparsity_kernels::bench::{GemvBenchConfig, run_gemv_bench};

fn main() -> Result<(), sparsity_kernels::KernelError> {
    let config = GemvBenchConfig {
        reps: 24,
        ..GemvBenchConfig::default()
    };
    let report = run_gemv_bench(&config)?;
    let bw = report.bandwidth;
    println!(
        "threads {} copy {:.1} GB/s read {:.1} GB/s",
        bw.threads, bw.copy_gbs, bw.read_gbs
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
