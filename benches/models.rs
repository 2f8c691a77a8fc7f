//! Forward pass (logits, no hooks) of a GPT-2-small-shaped model (12 layers, 768 wide, 12 heads,
//! vocab 50 257, random weights) and a Mamba-130m-shaped model (24 layers, d_model 768, d_state
//! 16, expand 2, conv 4, time_step_rank 48, vocab 50 280) on 1 × 128 and 8 × 128 tokens, burn's
//! `flex` CPU backend (the crate's `cpu_device()`; build with `--features ndarray` and set
//! `MODELS_BENCH_NDARRAY=1` to add burn's deprecated `ndarray` backend), f32, against PyTorch
//! `transformers` (GPT2LMHeadModel / MambaForCausalLM of the same shapes, eval, no_grad,
//! `torch.set_num_threads` = the same thread count) in the same run.
//!
//! Set `MODELS_PEER_PYTHON` to a Python with `benches/peers/requirements-torch.txt` installed to
//! run the peer first (its lines go to `target/models-bench/peer.jsonl` and are printed):
//!
//! ```sh
//! RAYON_NUM_THREADS=2 OMP_NUM_THREADS=2 MODELS_PEER_PYTHON=/work/venv/bin/python \
//!   cargo bench -p sparsity-benches --bench models
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(missing_docs)]

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sparsity_models::config::TimeStepRank;
use sparsity_models::{Batch, Capture, CausalLm, Gpt2, Gpt2Config, Mamba, MambaConfig, cpu_device};

const SEQ: usize = 128;

fn run_peer() {
    let Some(python) = std::env::var_os("MODELS_PEER_PYTHON") else {
        eprintln!("MODELS_PEER_PYTHON not set: skipping the PyTorch peer");
        return;
    };
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers/models_peer.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .arg("--reps")
        .arg("5")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "models peer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/models-bench");
    std::fs::create_dir_all(&dir).unwrap();
    sparsity_io::write_atomic(&dir.join("peer.jsonl"), &out.stdout).unwrap();
    eprintln!("PyTorch peer:\n{}", String::from_utf8_lossy(&out.stdout));
}

fn bench(c: &mut Criterion) {
    run_peer();
    #[allow(unused_mut)]
    let mut devices = vec![("flex", cpu_device())];
    #[cfg(feature = "ndarray")]
    if std::env::var_os("MODELS_BENCH_NDARRAY").is_some() {
        devices.push(("ndarray", sparsity_models::ndarray_device()));
    }
    for (backend, device) in devices {
        let gpt2 = CausalLm::from(Gpt2::init(&Gpt2Config::default(), 1, &device).unwrap());
        let mamba_config = MambaConfig {
            num_hidden_layers: 24,
            time_step_rank: TimeStepRank::Explicit(48),
            ..MambaConfig::default()
        };
        let mamba = CausalLm::from(Mamba::init(&mamba_config, 2, &device).unwrap());
        let mut rng = ChaCha8Rng::seed_from_u64(128);
        for (name, model) in [("gpt2_small", &gpt2), ("mamba_130m", &mamba)] {
            let mut g = c.benchmark_group(format!("forward/{backend}/{name}"));
            g.sample_size(10);
            g.sampling_mode(SamplingMode::Flat);
            g.warm_up_time(Duration::from_secs(2));
            g.measurement_time(Duration::from_secs(20));
            for b in [1usize, 8] {
                let ids: Vec<i64> = (0..b * SEQ).map(|_| rng.random_range(0..50_000)).collect();
                let batch = Batch::from_ids(&ids, b, SEQ, &device).unwrap();
                g.throughput(Throughput::Elements((b * SEQ) as u64));
                g.bench_function(format!("{b}x{SEQ}"), |bench| {
                    bench.iter(|| {
                        let out = model.forward(&batch, &Capture::none(), None).unwrap();
                        // force the computation (burn is lazy on some backends)
                        black_box(out.logits.into_data())
                    })
                });
            }
            g.finish();
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = bench
}
criterion_main!(benches);
