//! Pruning benchmarks: Hessian build + SparseGPT and Wanda (statistics + mask) on a
//! 3072×768 and a 768×3072 layer with 128 × 256 calibration tokens, unstructured 50 % and
//! 2:4. Peer: `benches/peers/pruning_peer.py bench` (PyTorch, same algorithm, same thread
//! count). Run with `RAYON_NUM_THREADS=2 cargo bench -p sparsity-benches --bench pruning`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use ndarray::{Array2, Array3, Axis};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use sparsity_pruning::{Calibration, HessianStats, Method, Pattern, Precision, WandaStats, prune};

const NSEQ: usize = 128;
const SEQLEN: usize = 256;

fn layer(out_f: usize, in_f: usize, seed: u64) -> (Array2<f32>, Array3<f32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let normal = Normal::new(0.0f32, 1.0).unwrap_or_else(|_| unreachable!());
    let w = Array2::from_shape_fn((out_f, in_f), |_| normal.sample(&mut rng) * 0.05);
    let scale: Vec<f32> = (0..in_f)
        .map(|j| 1.0 + 4.0 * (j % 97) as f32 / 97.0)
        .collect();
    let x = Array3::from_shape_fn((NSEQ, SEQLEN, in_f), |(_, _, j)| {
        normal.sample(&mut rng) * scale[j]
    });
    (w, x)
}

fn hessian(x: &Array3<f32>) -> HessianStats {
    let mut h = HessianStats::new(x.shape()[2], Precision::F32);
    for seq in x.axis_iter(Axis(0)) {
        h.add_batch("bench", seq.into_dyn())
            .unwrap_or_else(|e| unreachable!("{e}"));
    }
    h
}

fn wanda_stats(x: &Array3<f32>) -> WandaStats {
    let mut s = WandaStats::new(x.shape()[2]);
    for seq in x.axis_iter(Axis(0)) {
        s.add_batch("bench", seq.into_dyn())
            .unwrap_or_else(|e| unreachable!("{e}"));
    }
    s
}

fn bench_pruning(c: &mut Criterion) {
    for (out_f, in_f) in [(3072usize, 768usize), (768, 3072)] {
        let (w, x) = layer(out_f, in_f, 7);
        let shape = format!("{out_f}x{in_f}");
        let mut g = c.benchmark_group(format!("pruning/{shape}"));
        g.sample_size(10);
        g.measurement_time(Duration::from_secs(if in_f > 1000 { 40 } else { 10 }));
        g.warm_up_time(Duration::from_secs(1));
        g.bench_function("hessian", |b| b.iter(|| black_box(hessian(&x))));
        g.bench_function("wanda_stats", |b| b.iter(|| black_box(wanda_stats(&x))));
        let cal = Calibration {
            wanda: Some(wanda_stats(&x)),
            hessian: Some(hessian(&x)),
        };
        for (name, pattern) in [
            ("u50", Pattern::Unstructured(0.5)),
            ("2:4", Pattern::NM { n: 2, m: 4 }),
        ] {
            g.bench_function(format!("sparsegpt_{name}"), |b| {
                b.iter(|| black_box(prune("bench", w.view(), &cal, Method::sparsegpt(), pattern)))
            });
            g.bench_function(format!("wanda_{name}"), |b| {
                b.iter(|| black_box(prune("bench", w.view(), &cal, Method::Wanda, pattern)))
            });
        }
        g.finish();
    }
}

criterion_group! {
    name = benches;
    // no plots: criterion's plotters backend needs system fonts
    config = Criterion::default().without_plots();
    targets = bench_pruning
}
criterion_main!(benches);
