//! Masked (sparse) GEMV vs the dense GEMV of the same layout, `ndarray`'s `dot`, and a
//! STREAM-like copy, on LLM-sized f32 shapes with rotated weight copies (> LLC), so that
//! weights come from memory. numpy's `W @ x` runs in the same `cargo xtask bench-gemv`
//! invocation (see docs/benchmarks.md).
//!
//! `cargo bench -p sparsity-benches --bench gemv -- --measurement-time 3`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(missing_docs)]
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ndarray::{Array1, Array2, Axis};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sparsity_kernels::bench::stream_copy;
use sparsity_kernels::{GemvConfig, ThresholdCalibration, gemv_dense_into, gemv_masked_into};

const ROTATE_BYTES: usize = 1 << 30;

fn gemv(c: &mut Criterion) {
    let cfg = GemvConfig::default();
    for &(n_out, n_in) in &[(4096usize, 4096usize), (11008, 4096), (4096, 11008)] {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let bytes = n_out * n_in * 4;
        let n_copies = ROTATE_BYTES.div_ceil(bytes).max(2);
        let base = Array2::from_shape_simple_fn((n_in, n_out), || rng.random_range(-1.0f32..1.0));
        let w_t: Vec<Array2<f32>> = (0..n_copies).map(|_| base.clone()).collect();
        let w: Vec<Array2<f32>> = (0..n_copies)
            .map(|_| base.t().as_standard_layout().into_owned())
            .collect();
        drop(base);
        let x = Array1::from_shape_simple_fn(n_in, || rng.random_range(-1.0f32..1.0));
        let mut y = Array1::<f32>::zeros(n_out);
        let mut g = c.benchmark_group(format!("gemv_{n_out}x{n_in}"));
        g.throughput(Throughput::Bytes(bytes as u64));
        g.sample_size(20);
        let mut i = 0;
        g.bench_function("dense", |b| {
            b.iter(|| {
                i = (i + 1) % n_copies;
                gemv_dense_into(w_t[i].view(), x.view(), y.view_mut(), &cfg).unwrap();
                black_box(&y);
            })
        });
        g.bench_function("ndarray_dot", |b| {
            b.iter(|| {
                i = (i + 1) % n_copies;
                black_box(w[i].dot(&x));
            })
        });
        for s in [0.5, 0.9] {
            let tau = ThresholdCalibration::new(s)
                .fit(x.view().insert_axis(Axis(0)))
                .unwrap()
                .tau;
            g.bench_with_input(BenchmarkId::new("masked", s), &tau, |b, &tau| {
                b.iter(|| {
                    i = (i + 1) % n_copies;
                    gemv_masked_into(w_t[i].view(), x.view(), tau, y.view_mut(), &cfg).unwrap();
                    black_box(&y);
                })
            });
        }
        g.finish();
    }
    // Small, cache-resident shapes (the demo models' MLPs): the rayon pool forced on every call
    // against the default, which runs calls under `min_parallel_work` on the calling thread.
    for &(n_out, n_in) in &[(512usize, 128usize), (128, 512)] {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let w_t = Array2::from_shape_simple_fn((n_in, n_out), || rng.random_range(-1.0f32..1.0));
        let x = Array1::from_shape_simple_fn(n_in, || rng.random_range(-1.0f32..1.0));
        let mut y = Array1::<f32>::zeros(n_out);
        let tau = ThresholdCalibration::new(0.5)
            .fit(x.view().insert_axis(Axis(0)))
            .unwrap()
            .tau;
        let pool = GemvConfig {
            min_parallel_work: 0,
            ..GemvConfig::default()
        };
        let mut g = c.benchmark_group(format!("gemv_small_{n_out}x{n_in}"));
        for (name, cfg) in [("calling_thread", cfg), ("rayon_pool", pool)] {
            g.bench_function(format!("dense/{name}"), |b| {
                b.iter(|| {
                    gemv_dense_into(w_t.view(), x.view(), y.view_mut(), &cfg).unwrap();
                    black_box(&y);
                })
            });
            g.bench_function(format!("masked0.5/{name}"), |b| {
                b.iter(|| {
                    gemv_masked_into(w_t.view(), x.view(), tau, y.view_mut(), &cfg).unwrap();
                    black_box(&y);
                })
            });
        }
        g.finish();
    }
    // STREAM-like copy over 512 MiB buffers (reported as bytes copied).
    let n = (ROTATE_BYTES / 2) / 4;
    let src = vec![1.0f32; n];
    let mut dst = vec![0.0f32; n];
    let mut g = c.benchmark_group("stream_copy");
    g.throughput(Throughput::Bytes((2 * n * 4) as u64));
    g.sample_size(10);
    g.bench_function("copy_512MiB", |b| {
        b.iter(|| {
            stream_copy(&mut dst, &src);
            black_box(&dst);
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    // no plots: criterion's plotters backend needs system fonts
    config = Criterion::default().without_plots();
    targets = gemv
}
criterion_main!(benches);
