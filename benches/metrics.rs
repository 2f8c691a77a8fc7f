//! sparsity-metrics throughput on one [65 536 × 3 072] f32 activation matrix (805 MB, larger than
//! any cache): `NeuronStats` (count, Welford mean/variance, mean |a|, max |a|, exact-zero and
//! below-threshold fractions) single-threaded and on all cores, and the full comprehensive
//! analysis (`analyze_activations`: the statistics plus the exact |a| histogram for TEAL-style
//! calibration, the near-zero second pass and the report over the per-neuron variances), against
//! numpy doing the same work on the same data (`benches/peers/metrics_peer.py`), and a STREAM-like
//! copy and a STREAM-like read (sum) of the matrix as the memory-bandwidth references, all in the
//! same run.
//!
//! The matrix is written once to `target/metrics-bench/acts.npy`; set `METRICS_PEER_PYTHON` to a
//! Python with the pinned `benches/peers/requirements.txt` to run the peer inside this run (before
//! the criterion measurements, so the two never share the cores). Its timings go to
//! `target/metrics-bench/peer.json` and are printed.
//!
//! ```sh
//! METRICS_PEER_PYTHON=/work/venv/bin/python cargo bench -p sparsity-benches --bench metrics
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(missing_docs)]

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use ndarray::Array2;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use sparsity_metrics::activations::analyze_activations;
use sparsity_metrics::{Aggregation, NeuronStatsParams, ReportParams};

const TOKENS: usize = 65_536;
const NEURONS: usize = 3_072;
/// The traditional transformer threshold of the report (below-threshold counter).
const THRESHOLD: f64 = 1e-5;

fn out_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/metrics-bench");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// GELU-like activations with per-neuron scales spanning two decades; every third neuron is
/// ReLU-clipped so exact zeros occur (seeded).
fn data() -> Array2<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(65_536);
    let normal = Normal::new(0.0f32, 1.0).unwrap();
    let scale: Vec<f32> = (0..NEURONS)
        .map(|j| 10f32.powf(-1.0 + 2.0 * (j % 101) as f32 / 100.0))
        .collect();
    let mut a = Array2::<f32>::zeros((TOKENS, NEURONS));
    for mut row in a.rows_mut() {
        for (j, x) in row.iter_mut().enumerate() {
            let v = normal.sample(&mut rng) * scale[j];
            *x = if j % 3 == 0 { v.max(0.0) } else { v };
        }
    }
    a
}

fn write_npy(a: &Array2<f32>, path: &Path) {
    let slice = a.as_slice().unwrap();
    sparsity_benches::harness::write_npy(path, &[a.nrows(), a.ncols()], slice).unwrap();
}

fn run_peer(npy: &Path) {
    let Some(python) = std::env::var_os("METRICS_PEER_PYTHON") else {
        eprintln!("METRICS_PEER_PYTHON not set: skipping the numpy peer");
        return;
    };
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers/metrics_peer.py");
    let out = out_dir().join("peer.json");
    let status = std::process::Command::new(python)
        .arg(script)
        .arg("--data")
        .arg(npy)
        .arg("--repeats")
        .arg("5")
        .arg("--threshold")
        .arg(THRESHOLD.to_string())
        .arg("--out")
        .arg(&out)
        .env("OMP_NUM_THREADS", "1")
        .env("OPENBLAS_NUM_THREADS", "1")
        .env("MKL_NUM_THREADS", "1")
        .status()
        .unwrap();
    assert!(status.success(), "numpy peer failed: {status}");
    eprintln!("numpy peer: {}", std::fs::read_to_string(out).unwrap());
}

fn stats(a: &Array2<f32>) -> sparsity_metrics::NeuronStats {
    // The numpy peer's statistics row computes no magnitude histogram: neither does this one
    // (the histogram is part of the full-report row on both sides).
    let mut s = NeuronStatsParams::new(NEURONS)
        .magnitude_threshold(THRESHOLD)
        .histogram(false)
        .build()
        .unwrap();
    s.update(a.view()).unwrap();
    s
}

/// Sums every element with 16 independent lanes per chunk (vectorises), chunks in parallel.
fn read_sum(xs: &[f32]) -> f32 {
    use rayon::prelude::*;
    xs.par_chunks(1 << 16)
        .map(|c| {
            let mut acc = [0f32; 16];
            for ch in c.chunks_exact(16) {
                for k in 0..16 {
                    acc[k] += ch[k];
                }
            }
            acc.iter().sum::<f32>()
        })
        .sum()
}

fn bench(c: &mut Criterion) {
    let a = data();
    let npy = out_dir().join("acts.npy");
    write_npy(&a, &npy);
    run_peer(&npy);
    let all = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pools: Vec<(usize, rayon::ThreadPool)> = [1, all]
        .into_iter()
        .map(|t| {
            (
                t,
                rayon::ThreadPoolBuilder::new()
                    .num_threads(t)
                    .build()
                    .unwrap(),
            )
        })
        .collect();
    let bytes = (TOKENS * NEURONS * 4) as u64;
    let params = ReportParams {
        threshold: Some(THRESHOLD),
        ..ReportParams::default()
    };

    let mut g = c.benchmark_group("metrics_65536x3072");
    g.sample_size(10);
    g.sampling_mode(SamplingMode::Flat);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Bytes(bytes));
    let mut dst = vec![0f32; TOKENS * NEURONS];
    g.bench_function("stream_copy", |b| {
        b.iter(|| {
            dst.copy_from_slice(black_box(a.as_slice().unwrap()));
            black_box(&dst);
        })
    });
    drop(dst);
    for (t, pool) in &pools {
        // STREAM-like read: what a one-pass reduction over the matrix can reach at best.
        g.bench_function(format!("stream_read/threads={t}"), |b| {
            b.iter(|| pool.install(|| black_box(read_sum(black_box(a.as_slice().unwrap())))))
        });
    }
    // Compute floor: the same number of elements, but 256 cache-resident rows (3 MiB, in L3)
    // fed 256 times, single-threaded: what the kernel costs when memory is not the limit.
    let hot = a.slice(ndarray::s![..256, ..]);
    if let Some((_, pool)) = pools.first() {
        g.bench_function("neuron_stats_cache_resident/threads=1", |b| {
            b.iter(|| {
                pool.install(|| {
                    let mut s = NeuronStatsParams::new(NEURONS)
                        .magnitude_threshold(THRESHOLD)
                        .histogram(false)
                        .build()
                        .unwrap();
                    for _ in 0..TOKENS / 256 {
                        s.update(black_box(hot)).unwrap();
                    }
                    black_box(s)
                })
            })
        });
    }
    for (t, pool) in &pools {
        g.bench_function(format!("neuron_stats/threads={t}"), |b| {
            b.iter(|| pool.install(|| black_box(stats(black_box(&a)))))
        });
        g.bench_function(format!("full_report/threads={t}"), |b| {
            b.iter(|| {
                pool.install(|| {
                    black_box(
                        analyze_activations(a.view().into_dyn(), Aggregation::PerToken, &params)
                            .unwrap(),
                    )
                })
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    // No criterion plots: plotters here has no system fonts.
    config = Criterion::default().without_plots();
    targets = bench
}
criterion_main!(benches);
