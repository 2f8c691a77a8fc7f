//! DeepSeek sparse attention: forward + backward (one training step's compute, no optimiser)
//! tokens/s of the DSA transformer against dense attention, at L = 64, 128, 256 (the recall
//! sweep's lengths), 1024 and 4096 (tiny preset) and L = 1024 (paper preset), batch 1, on the
//! default CPU device (burn's `flex` backend). DSA runs in both forms: `gather`
//! (each query gathers its k keys) and `masked-dense` (full scores, unselected masked: what the
//! original did, which cannot be faster than dense). Reports criterion's time per step; tokens/s
//! = L / time. Run with `cargo bench -p sparsity-benches --bench dsa` (results in
//! docs/benchmarks.md, section sparsity-models: DSA).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sparsity_demo::train::next_token_loss;
use sparsity_models::burn::tensor::{Int, Tensor, TensorData};
use sparsity_models::cpu_device;
use sparsity_models::dsa::{AttentionMode, DsaConfig, DsaTransformer, SparseImpl};

const VOCAB: usize = 1024;

fn step(
    model: &DsaTransformer,
    ids: &Tensor<2, Int>,
    targets: &Tensor<1, Int>,
    mode: AttentionMode,
) {
    // As in training (`dsa-sweep`): the indexer's KL loss joins the backward. Without it the
    // indexer's scores are autodiff nodes no backward reaches, and burn's orphan cleanup
    // (`GraphCleaner::cleanup_orphaned_entries`) took 92 % of a sparse step at L = 64 (1.15 s).
    let out = model.forward(ids.clone(), mode, true).unwrap();
    let mut loss = next_token_loss(out.logits, targets.clone());
    if let Some(kl) = out.indexer_loss {
        loss = loss + kl;
    }
    black_box(loss.backward());
}

fn bench_dsa(c: &mut Criterion) {
    let device = cpu_device().autodiff();
    let cases: Vec<(&str, DsaConfig, usize)> = vec![
        // The recall sweep's lengths (docs/dsa.md), tiny preset.
        ("tiny", DsaConfig::tiny(VOCAB, 4096), 64),
        ("tiny", DsaConfig::tiny(VOCAB, 4096), 128),
        ("tiny", DsaConfig::tiny(VOCAB, 4096), 256),
        ("tiny", DsaConfig::tiny(VOCAB, 4096), 1024),
        ("tiny", DsaConfig::tiny(VOCAB, 4096), 4096),
        ("paper", DsaConfig::paper(VOCAB, 1024), 1024),
    ];
    for (preset, config, len) in cases {
        let model = DsaTransformer::init(&config, AttentionMode::Dense, 1, &device).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(len as u64);
        let toks: Vec<i64> = (0..=len)
            .map(|_| rng.random_range(0..VOCAB as i64))
            .collect();
        let ids =
            Tensor::<2, Int>::from_data(TensorData::new(toks[..len].to_vec(), [1, len]), &device);
        let targets =
            Tensor::<1, Int>::from_data(TensorData::new(toks[1..].to_vec(), [len]), &device);
        let mut g = c.benchmark_group(format!("dsa/{preset}/L{len}"));
        g.sample_size(10);
        g.warm_up_time(Duration::from_secs(1));
        g.measurement_time(Duration::from_secs(if len > 1024 || preset == "paper" {
            30
        } else {
            10
        }));
        g.throughput(Throughput::Elements(len as u64));
        g.bench_function("dense", |b| {
            b.iter(|| step(&model, &ids, &targets, AttentionMode::Dense))
        });
        // The gathered keys/values of every query are kept for backward: at L = 4096 only the
        // smallest ratio fits comfortably in memory; the paper preset (~10 s per step here) gets
        // one ratio to keep the run short.
        let keeps: &[f64] = if len > 1024 || preset == "paper" {
            &[0.125]
        } else {
            &[0.125, 0.5]
        };
        for &keep in keeps {
            // The gather path's saved [heads, L, k, d_h] keys and values exceed 13 GB for the
            // paper preset at L = 1024 (OOM on a 24 GB machine): masked dense only there.
            let impls: &[(&str, SparseImpl)] = if preset == "paper" {
                &[("masked-dense", SparseImpl::MaskedDense)]
            } else {
                &[
                    ("gather", SparseImpl::Gather),
                    ("masked-dense", SparseImpl::MaskedDense),
                ]
            };
            for &(name, implementation) in impls {
                let mode = AttentionMode::Sparse {
                    keep_ratio: keep,
                    implementation,
                };
                g.bench_function(format!("{name}/keep{keep}"), |b| {
                    b.iter(|| step(&model, &ids, &targets, mode))
                });
            }
        }
        g.finish();
    }
}

criterion_group! {
    name = benches;
    // No criterion plots: plotters here has no system fonts.
    config = Criterion::default().without_plots();
    targets = bench_dsa
}
criterion_main!(benches);
