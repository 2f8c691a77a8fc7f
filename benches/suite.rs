//! The interleaved benchmark command behind the generated tables of `docs/benchmarks.md`
//! (see `benches/harness.rs` for the method).
//!
//! ```sh
//! python3 -m venv .venv && .venv/bin/pip install -r benches/peers/requirements-torch.txt
//! cargo bench -p sparsity-benches --bench suite -- run --suite all --python .venv/bin/python
//! cargo bench -p sparsity-benches --bench suite -- tables   # re-render the tables from the JSON
//! ```
//!
//! `run` writes each suite's data once under `target/bench-data/<suite>/`, measures every row
//! (ours and the peer in fresh worker processes, interleaved), writes
//! `docs/results/bench/<suite>.json` and replaces the suite's table in `docs/benchmarks.md`.
//! Suites: `metrics` (numpy), `pruning` (PyTorch), `clustering` (scipy), `gemv` (numpy),
//! `models` (transformers);
//! `--suite all` (the default) runs each. Options: `--workers N` (2 fresh worker pairs per row),
//! `--rounds N` (3 interleaved rounds per pair), `--attempts N` (2),
//! `--out DIR`, `--doc FILE`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(missing_docs)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use ndarray::{Array2, Array3, Axis};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use sparsity_benches::harness::{
    self, HarnessError, Result, RunOptions, Side, SuiteRun, Worker, measure_row, read_npy,
    read_npy_raw, serve, write_npy, write_npy_raw,
};

/// One suite: its data, its cases and how many threads each side gets.
struct Suite {
    name: &'static str,
    threads: usize,
    cases: Vec<(String, String)>,
    notes: Vec<String>,
}

const PRUNE_SHAPES: [(usize, usize); 2] = [(3072, 768), (768, 3072)];
const NSEQ: usize = 128;
const SEQLEN: usize = 256;
const TOKENS: usize = 65_536;
const NEURONS: usize = 3_072;
const THRESHOLD: f64 = 1e-5;
const CL_FEATURES: usize = 11_008;
const CL_BITS: usize = 4_096;
const CL_PAIRS_FEATURES: usize = 4_096;
const CL_REFERENCE: usize = 1_234;
const CL_TOP_K: usize = 128;
/// Repetitions inside one timed call of the top-k case (ours takes ~0.3 ms: a single call is
/// at the timer's and the scheduler's resolution). The table reports the time per query.
const CL_TOP_REPS_OURS: usize = 100;
const CL_TOP_REPS_PEER: usize = 2;
const SEQ: usize = 128;
const MODELS: [&str; 2] = ["gpt2_small", "mamba_130m"];
/// GEMV shapes [out × in]: LLaMA-7B's attention and MLP matrices, TinyLlama-1.1B's MLP, and a
/// cache-resident one (the demo models' MLP).
const GEMV_SHAPES: [(usize, usize); 5] = [
    (4096, 4096),
    (11008, 4096),
    (4096, 11008),
    (5632, 2048),
    (512, 128),
];
/// Kernels per shape: ours dense, and ours masked at these activation sparsities (the peer is
/// numpy's dense `W @ x` on every row: what the masked GEMV replaces).
const GEMV_SPARSITIES: [f64; 2] = [0.5, 0.9];
/// Bytes of weight copies each side rotates through (≫ the last-level cache), so weights come
/// from memory; shapes under [`GEMV_CACHED_BYTES`] use one copy (they stay cached, as in decoding).
const GEMV_ROTATE_BYTES: usize = 1 << 30;
const GEMV_CACHED_BYTES: usize = 1 << 20;
/// GEMVs per timed call (a few ms each; the table reports the time per GEMV).
const GEMV_CALLS: usize = 48;
const GEMV_CALLS_SMALL: usize = 20_000;

fn suites() -> Vec<Suite> {
    let mut pruning = Vec::new();
    for (o, i) in PRUNE_SHAPES {
        let s = format!("{o}x{i}");
        pruning.push((
            format!("{s}/hessian"),
            "SparseGPT's Hessian, 128 sequences streamed".into(),
        ));
        pruning.push((
            format!("{s}/wanda_stats"),
            "Wanda's feature norms, 128 sequences streamed".into(),
        ));
        for p in ["u50", "2:4"] {
            pruning.push((
                format!("{s}/sparsegpt_{p}"),
                format!("SparseGPT {p} from the Hessian"),
            ));
            pruning.push((
                format!("{s}/wanda_{p}"),
                format!("Wanda {p} mask from the norms"),
            ));
        }
    }
    vec![
        Suite {
            name: "metrics",
            threads: 1,
            cases: vec![
                (
                    "neuron_stats_f64".into(),
                    "per-neuron statistics; numpy accumulating in f64".into(),
                ),
                (
                    "neuron_stats_f32".into(),
                    "the same; numpy accumulating in f32 (less precise)".into(),
                ),
                (
                    "full_report".into(),
                    "statistics, exact |a| histogram, near-zero pass, report".into(),
                ),
            ],
            notes: vec![format!(
                "Data: one [{TOKENS} × {NEURONS}] f32 activation matrix (805 MB; GELU-like, \
                 per-neuron scales over two decades, every third neuron ReLU-clipped), read by both \
                 sides from the same `.npy`. Ours: `NeuronStats` (f64 accumulators) and \
                 `analyze_activations`; peer: `benches/peers/metrics_peer.py` (numpy, one thread)."
            )],
        },
        Suite {
            name: "pruning",
            threads: 2,
            cases: pruning,
            notes: vec![format!(
                "Data per layer [out × in]: weights N(0, 0.05²) and {NSEQ} × {SEQLEN} calibration \
                 tokens with feature scales 1–5, f32, read by both sides from the same `.npy` files. \
                 Ours: `sparsity_pruning` (statistics streamed one sequence per call, SparseGPT \
                 blocksize 128 and percdamp 0.01); peer: `benches/peers/pruning_peer.py` (PyTorch \
                 CPU, the authors' algorithms)."
            )],
        },
        Suite {
            name: "clustering",
            threads: 1,
            cases: vec![
                (
                    format!("all_pairs_{CL_PAIRS_FEATURES}x{CL_BITS}"),
                    "every pair's Hamming distance (8.4 M pairs)".into(),
                ),
                (
                    format!("top{CL_TOP_K}_{CL_FEATURES}x{CL_BITS}"),
                    "the 128 nearest features of one, per query".into(),
                ),
            ],
            notes: vec![format!(
                "Data: {CL_FEATURES} features × {CL_BITS} bits (the columns of a LLaMA-7B MLP mask), \
                 i.i.d. bits of density 0.5 (`ChaCha8Rng::seed_from_u64(2024)`), one bool `.npy` read \
                 by both sides; all pairs on the first {CL_PAIRS_FEATURES} features (the full \
                 11 008 take scipy about 3 minutes a call). Ours: `sparsity_clustering::hamming` \
                 (`all_pairs`, `nearest_neighbours`) on a 1-thread rayon pool; peer: scipy's \
                 `pdist(X, \"hamming\")` and `cdist` + stable `argsort` (single-threaded kernels). \
                 The peer checks its answers against ours (sum of all pair counts, the exact top-128 \
                 list). Top-128 times are per query, from {CL_TOP_REPS_OURS} queries per timed call \
                 (ours) and {CL_TOP_REPS_PEER} (peer)."
            )],
        },
        Suite {
            name: "gemv",
            threads: 2,
            cases: GEMV_SHAPES
                .iter()
                .flat_map(|&(o, i)| {
                    let mut v = vec![(
                        format!("{o}x{i}/dense"),
                        "ours dense (every row of Wᵀ read)".to_string(),
                    )];
                    v.extend(GEMV_SPARSITIES.iter().map(|s| {
                        (
                            format!("{o}x{i}/masked_{s}"),
                            format!("ours masked, {:.0} % of the inputs skipped", s * 100.0),
                        )
                    }));
                    v
                })
                .collect(),
            notes: vec![format!(
                "Batch-1 GEMV y = W·x with f32 weights. Data per shape [out × in]: W uniform in \
                 ±1/√in and x ~ N(0, 1), written once as `.npy` and read by both sides. Each side \
                 rotates through copies of W totalling {} MiB (one copy for shapes under {} MiB, \
                 which stay cached as in decoding), {GEMV_CALLS} GEMVs per timed call \
                 ({GEMV_CALLS_SMALL} for the cached shape), divided by the kept fraction on masked \
                 rows (the peer runs as many); times are per GEMV. Ours: \
                 `sparsity_kernels` on Wᵀ [in, out] (the layout a masked GEMV needs), dense, or \
                 masked at τ = the quantile of |x| that skips the stated fraction of inputs \
                 (`ThresholdCalibration`); the kernel's default `GemvConfig` (split-K on the \
                 pool; calls under {} Ki weights on the calling thread). Peer on every row: \
                 numpy's dense `W @ x` (W [out, in], BLAS sgemv), what the masked GEMV replaces, \
                 so a masked row's ratio is its speed-up over dense numpy; ideal for ours at \
                 sparsity s is 1/(1−s) over our dense row.",
                GEMV_ROTATE_BYTES >> 20,
                GEMV_CACHED_BYTES >> 20,
                sparsity_kernels::GemvConfig::default().min_parallel_work >> 10
            )],
        },
        Suite {
            name: "models",
            threads: 2,
            cases: MODELS
                .iter()
                .flat_map(|m| {
                    [1usize, 8].map(|b| {
                        (
                            format!("{m}/{b}x{SEQ}"),
                            format!("forward to logits, {b} × {SEQ} tokens"),
                        )
                    })
                })
                .collect(),
            notes: vec![
                "Models: a GPT-2-small-shaped model (12 layers, 768 wide, 12 heads, vocab 50 257) and \
                 a Mamba-130m-shaped one (24 layers, d_model 768, d_state 16, expand 2, conv 4, \
                 time_step_rank 48, vocab 50 280), random weights written once as Hugging Face \
                 directories (`save_pretrained`) and loaded by both sides; the same token ids. \
                 Ours: `CausalLm::load_dir` + `forward` (logits, nothing recorded) on burn's `flex` \
                 CPU backend; peer: transformers' `AutoModelForCausalLM.from_pretrained` (f32, eval, \
                 `torch.inference_mode`; Mamba runs transformers' slow path, a Python loop over the \
                 sequence, because the CUDA kernels are absent)."
                    .into(),
            ],
        },
    ]
}

/// GEMVs per timed call of a gemv case (the Python peer computes the same): [`GEMV_CALLS_SMALL`]
/// for a cached shape (one copy), else [`GEMV_CALLS`] (at least one pass over the copies) divided
/// by the kept fraction, so a masked call lasts about as long as a dense one (short calls were
/// at the scheduler's resolution: spreads up to 2.5×).
fn gemv_calls(copies: usize, sparsity: f64) -> usize {
    let base = if copies == 1 {
        GEMV_CALLS_SMALL
    } else {
        GEMV_CALLS.max(copies)
    };
    (base as f64 / (1.0 - sparsity)).ceil() as usize
}

fn data_dir(suite: &str) -> PathBuf {
    harness::workspace_root()
        .join("target/bench-data")
        .join(suite)
}

fn normal() -> Normal<f32> {
    Normal::new(0.0f32, 1.0).unwrap_or_else(|_| unreachable!())
}

fn write_data(suite: &str) -> Result<()> {
    let dir = data_dir(suite);
    std::fs::create_dir_all(&dir).map_err(|e| HarnessError(format!("{}: {e}", dir.display())))?;
    match suite {
        "metrics" => {
            let mut rng = ChaCha8Rng::seed_from_u64(65_536);
            let n = normal();
            let scale: Vec<f32> = (0..NEURONS)
                .map(|j| 10f32.powf(-1.0 + 2.0 * (j % 101) as f32 / 100.0))
                .collect();
            let mut a = vec![0f32; TOKENS * NEURONS];
            for row in a.chunks_exact_mut(NEURONS) {
                for (j, x) in row.iter_mut().enumerate() {
                    let v = n.sample(&mut rng) * scale[j];
                    *x = if j % 3 == 0 { v.max(0.0) } else { v };
                }
            }
            write_npy(&dir.join("acts.npy"), &[TOKENS, NEURONS], &a)
        }
        "pruning" => {
            for (o, i) in PRUNE_SHAPES {
                let d = dir.join(format!("{o}x{i}"));
                std::fs::create_dir_all(&d)
                    .map_err(|e| HarnessError(format!("{}: {e}", d.display())))?;
                let mut rng = ChaCha8Rng::seed_from_u64(7);
                let n = normal();
                let w: Vec<f32> = (0..o * i).map(|_| n.sample(&mut rng) * 0.05).collect();
                let scale: Vec<f32> = (0..i).map(|j| 1.0 + 4.0 * (j % 97) as f32 / 97.0).collect();
                let x: Vec<f32> = (0..NSEQ * SEQLEN * i)
                    .map(|k| n.sample(&mut rng) * scale[k % i])
                    .collect();
                write_npy(&d.join("w.npy"), &[o, i], &w)?;
                write_npy(&d.join("x.npy"), &[NSEQ, SEQLEN, i], &x)?;
            }
            Ok(())
        }
        "clustering" => {
            let m = cluster_data();
            let body: Vec<u8> = (0..CL_FEATURES)
                .flat_map(|f| (0..CL_BITS).map(move |b| (f, b)))
                .map(|(f, b)| u8::from(m.get(f, b)))
                .collect();
            write_npy_raw(&dir.join("bits.npy"), "|b1", &[CL_FEATURES, CL_BITS], &body)?;
            let sub = cluster_subset(&m)?;
            let checksum: u64 = sparsity_clustering::hamming::all_pairs(&sub)
                .condensed()
                .iter()
                .map(|&c| u64::from(c))
                .sum();
            let top = sparsity_clustering::hamming::nearest_neighbours(&m, CL_REFERENCE, CL_TOP_K)
                .map_err(|e| HarnessError(e.to_string()))?;
            let meta = serde_json::json!({
                "pairs_features": CL_PAIRS_FEATURES,
                "pairs_checksum": checksum,
                "reference": CL_REFERENCE,
                "top": top.indices,
                "top_reps_peer": CL_TOP_REPS_PEER,
            });
            sparsity_io::write_atomic(&dir.join("meta.json"), meta.to_string().as_bytes())
                .map_err(|e| HarnessError(e.to_string()))
        }
        "gemv" => {
            for (o, i) in GEMV_SHAPES {
                let d = dir.join(format!("{o}x{i}"));
                std::fs::create_dir_all(&d)
                    .map_err(|e| HarnessError(format!("{}: {e}", d.display())))?;
                let mut rng = ChaCha8Rng::seed_from_u64(4096);
                let bound = 1.0 / (i as f32).sqrt();
                let w: Vec<f32> = (0..o * i)
                    .map(|_| rand::Rng::random_range(&mut rng, -bound..bound))
                    .collect();
                let n = normal();
                let x: Vec<f32> = (0..i).map(|_| n.sample(&mut rng)).collect();
                write_npy(&d.join("w.npy"), &[o, i], &w)?;
                write_npy(&d.join("x.npy"), &[i], &x)?;
            }
            let meta = serde_json::json!({
                "rotate_bytes": GEMV_ROTATE_BYTES,
                "cached_bytes": GEMV_CACHED_BYTES,
                "calls": GEMV_CALLS,
                "calls_small": GEMV_CALLS_SMALL,
            });
            sparsity_io::write_atomic(&dir.join("meta.json"), meta.to_string().as_bytes())
                .map_err(|e| HarnessError(e.to_string()))
        }
        "models" => {
            use sparsity_models::config::TimeStepRank;
            use sparsity_models::{CausalLm, Gpt2, Gpt2Config, Mamba, MambaConfig, cpu_device};
            let device = cpu_device();
            let map = |e: sparsity_models::ModelError| HarnessError(e.to_string());
            let gpt2 = CausalLm::from(Gpt2::init(&Gpt2Config::default(), 1, &device).map_err(map)?);
            let mamba_config = MambaConfig {
                num_hidden_layers: 24,
                time_step_rank: TimeStepRank::Explicit(48),
                ..MambaConfig::default()
            };
            let mamba = CausalLm::from(Mamba::init(&mamba_config, 2, &device).map_err(map)?);
            for (name, model) in MODELS.iter().zip([gpt2, mamba]) {
                model.save_pretrained(&dir.join(name)).map_err(map)?;
            }
            let mut rng = ChaCha8Rng::seed_from_u64(128);
            let ids: Vec<f32> = (0..8 * SEQ)
                .map(|_| rand::Rng::random_range(&mut rng, 0..50_000u32) as f32)
                .collect();
            write_npy(&dir.join("ids.npy"), &[8, SEQ], &ids)
        }
        _ => Err(HarnessError(format!("unknown suite {suite}"))),
    }
}

/// The clustering suite's bits (the same generator as `benches/clustering.rs`).
fn cluster_data() -> sparsity_clustering::BinaryMatrix {
    let mut rng = ChaCha8Rng::seed_from_u64(2024);
    let words: Vec<u64> = (0..CL_FEATURES * CL_BITS / 64)
        .map(|_| rand::Rng::random::<u64>(&mut rng))
        .collect();
    sparsity_clustering::BinaryMatrix::from_words(CL_FEATURES, CL_BITS, words)
        .unwrap_or_else(|e| unreachable!("{e}"))
}

fn cluster_subset(
    m: &sparsity_clustering::BinaryMatrix,
) -> Result<sparsity_clustering::BinaryMatrix> {
    m.select(&(0..CL_PAIRS_FEATURES).collect::<Vec<_>>())
        .map_err(|e| HarnessError(e.to_string()))
}

fn timed(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64()
}

/// Our side of a case: loads the data, then serves the protocol.
fn worker(suite: &str, case: &str, data: &Path) -> Result<()> {
    let versions = BTreeMap::from([(
        "sparsity-lab".to_string(),
        env!("CARGO_PKG_VERSION").to_string(),
    )]);
    match suite {
        "metrics" => {
            let (shape, v) = read_npy(&data.join("acts.npy"))?;
            let a = Array2::from_shape_vec((shape[0], shape[1]), v)
                .map_err(|e| HarnessError(e.to_string()))?;
            let params = sparsity_metrics::ReportParams {
                threshold: Some(THRESHOLD),
                ..Default::default()
            };
            match case {
                "neuron_stats_f64" | "neuron_stats_f32" => serve(versions, || {
                    timed(|| {
                        let mut s = sparsity_metrics::NeuronStatsParams::new(a.ncols())
                            .magnitude_threshold(THRESHOLD)
                            .histogram(false)
                            .build()
                            .unwrap();
                        s.update(a.view()).unwrap();
                        std::hint::black_box(s);
                    })
                }),
                "full_report" => serve(versions, || {
                    timed(|| {
                        std::hint::black_box(
                            sparsity_metrics::activations::analyze_activations(
                                a.view().into_dyn(),
                                sparsity_metrics::Aggregation::PerToken,
                                &params,
                            )
                            .unwrap(),
                        );
                    })
                }),
                _ => Err(HarnessError(format!("metrics: unknown case {case}"))),
            }
        }
        "pruning" => {
            use sparsity_pruning::{
                Calibration, HessianStats, Method, Pattern, Precision, WandaStats, prune,
            };
            let (shape, name) = case
                .split_once('/')
                .ok_or_else(|| HarnessError(format!("pruning: bad case {case}")))?;
            let d = data.join(shape);
            let (ws, wv) = read_npy(&d.join("w.npy"))?;
            let (xs, xv) = read_npy(&d.join("x.npy"))?;
            let w = Array2::from_shape_vec((ws[0], ws[1]), wv)
                .map_err(|e| HarnessError(e.to_string()))?;
            let x = Array3::from_shape_vec((xs[0], xs[1], xs[2]), xv)
                .map_err(|e| HarnessError(e.to_string()))?;
            let in_f = xs[2];
            let hessian = |x: &Array3<f32>| {
                let mut h = HessianStats::new(in_f, Precision::F32);
                for seq in x.axis_iter(Axis(0)) {
                    h.add_batch("bench", seq.into_dyn()).unwrap();
                }
                h
            };
            let wanda = |x: &Array3<f32>| {
                let mut s = WandaStats::new(in_f);
                for seq in x.axis_iter(Axis(0)) {
                    s.add_batch("bench", seq.into_dyn()).unwrap();
                }
                s
            };
            let pattern = |p: &str| match p {
                "u50" => Some(Pattern::Unstructured(0.5)),
                "2:4" => Some(Pattern::NM { n: 2, m: 4 }),
                _ => None,
            };
            match name {
                "hessian" => serve(versions, || {
                    timed(|| drop(std::hint::black_box(hessian(&x))))
                }),
                "wanda_stats" => {
                    serve(versions, || timed(|| drop(std::hint::black_box(wanda(&x)))))
                }
                other => {
                    let (method, p) = other
                        .split_once('_')
                        .ok_or_else(|| HarnessError(format!("pruning: bad case {case}")))?;
                    let pattern = pattern(p)
                        .ok_or_else(|| HarnessError(format!("pruning: bad pattern {p}")))?;
                    let (cal, method) = match method {
                        "sparsegpt" => (
                            Calibration {
                                wanda: None,
                                hessian: Some(hessian(&x)),
                            },
                            Method::sparsegpt(),
                        ),
                        "wanda" => (
                            Calibration {
                                wanda: Some(wanda(&x)),
                                hessian: None,
                            },
                            Method::Wanda,
                        ),
                        _ => return Err(HarnessError(format!("pruning: bad case {case}"))),
                    };
                    drop(x);
                    serve(versions, move || {
                        timed(|| {
                            std::hint::black_box(
                                prune("bench", w.view(), &cal, method, pattern).unwrap(),
                            );
                        })
                    })
                }
            }
        }
        "clustering" => {
            use sparsity_clustering::hamming::{all_pairs, nearest_neighbours};
            let (shape, body) = read_npy_raw(&data.join("bits.npy"), "|b1", 1)?;
            let (n, bits) = match shape[..] {
                [n, b] => (n, b),
                _ => return Err(HarnessError(format!("bits.npy: shape {shape:?}"))),
            };
            let m =
                sparsity_clustering::BinaryMatrix::from_fn(n, bits, |f, b| body[f * bits + b] != 0)
                    .map_err(|e| HarnessError(e.to_string()))?;
            drop(body);
            if case.starts_with("all_pairs") {
                let sub = cluster_subset(&m)?;
                drop(m);
                serve(versions, || {
                    timed(|| drop(std::hint::black_box(all_pairs(&sub))))
                })
            } else if case.starts_with("top") {
                serve(versions, || {
                    timed(|| {
                        for _ in 0..CL_TOP_REPS_OURS {
                            std::hint::black_box(
                                nearest_neighbours(&m, CL_REFERENCE, CL_TOP_K).unwrap(),
                            );
                        }
                    }) / CL_TOP_REPS_OURS as f64
                })
            } else {
                Err(HarnessError(format!("clustering: unknown case {case}")))
            }
        }
        "gemv" => {
            use sparsity_kernels::{
                GemvConfig, ThresholdCalibration, gemv_dense_into, gemv_masked_into,
            };
            let (shape, kernel) = case
                .split_once('/')
                .ok_or_else(|| HarnessError(format!("gemv: bad case {case}")))?;
            let (wshape, w) = read_npy(&data.join(shape).join("w.npy"))?;
            let (_, x) = read_npy(&data.join(shape).join("x.npy"))?;
            let (o, i) = match wshape[..] {
                [o, i] => (o, i),
                _ => return Err(HarnessError(format!("gemv: w.npy shape {wshape:?}"))),
            };
            let w_t = Array2::from_shape_vec((o, i), w)
                .map_err(|e| HarnessError(e.to_string()))?
                .reversed_axes()
                .as_standard_layout()
                .into_owned();
            let bytes = o * i * 4;
            let copies = if bytes < GEMV_CACHED_BYTES {
                1
            } else {
                GEMV_ROTATE_BYTES.div_ceil(bytes).max(2)
            };
            let sparsity = match kernel {
                "dense" => 0.0,
                k => k
                    .strip_prefix("masked_")
                    .and_then(|s| s.parse::<f64>().ok())
                    .filter(|s| (0.0..1.0).contains(s))
                    .ok_or_else(|| HarnessError(format!("gemv: bad case {case}")))?,
            };
            let calls = gemv_calls(copies, sparsity);
            let weights: Vec<Array2<f32>> = (0..copies).map(|_| w_t.clone()).collect();
            drop(w_t);
            let x = ndarray::Array1::from(x);
            let tau = if kernel == "dense" {
                None
            } else {
                let fit = ThresholdCalibration::new(sparsity)
                    .fit(x.view().insert_axis(Axis(0)))
                    .map_err(|e| HarnessError(e.to_string()))?;
                Some(fit.tau)
            };
            let config = GemvConfig::default();
            let mut y = ndarray::Array1::<f32>::zeros(o);
            serve(versions, move || {
                timed(|| {
                    for c in 0..calls {
                        let w = weights[c % copies].view();
                        match tau {
                            Some(t) => {
                                gemv_masked_into(w, x.view(), t, y.view_mut(), &config).unwrap();
                            }
                            None => gemv_dense_into(w, x.view(), y.view_mut(), &config).unwrap(),
                        }
                        std::hint::black_box(&y);
                    }
                }) / calls as f64
            })
        }
        "models" => {
            use sparsity_models::{Batch, Capture, CausalLm, cpu_device};
            let (model, shape) = case
                .split_once('/')
                .ok_or_else(|| HarnessError(format!("models: bad case {case}")))?;
            let b: usize = shape
                .split_once('x')
                .and_then(|(b, _)| b.parse().ok())
                .ok_or_else(|| HarnessError(format!("models: bad case {case}")))?;
            let device = cpu_device();
            let lm = CausalLm::load_dir(&data.join(model), &device)
                .map_err(|e| HarnessError(e.to_string()))?;
            let (_, ids) = read_npy(&data.join("ids.npy"))?;
            let ids: Vec<i64> = ids
                .get(..b * SEQ)
                .ok_or_else(|| {
                    HarnessError(format!(
                        "models: ids.npy holds {} ids, case {case} needs {}",
                        ids.len(),
                        b * SEQ
                    ))
                })?
                .iter()
                .map(|&x| x as i64)
                .collect();
            let batch =
                Batch::from_ids(&ids, b, SEQ, &device).map_err(|e| HarnessError(e.to_string()))?;
            serve(versions, || {
                timed(|| {
                    let out = lm.forward(&batch, &Capture::none(), None).unwrap();
                    std::hint::black_box(out.logits.into_data());
                })
            })
        }
        _ => Err(HarnessError(format!("unknown suite {suite}"))),
    }
}

fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn run_suite(
    suite: &Suite,
    python: &Path,
    options: &RunOptions,
    out: &Path,
    doc: &Path,
) -> Result<()> {
    let date = sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let dirty = !sh("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty();
    let revision = format!(
        "{}{}",
        sh("git", &["rev-parse", "--short", "HEAD"]),
        if dirty { "+changes" } else { "" }
    );
    eprintln!("[{}] writing the data", suite.name);
    write_data(suite.name)?;
    let machine = harness::machine();
    let data = data_dir(suite.name);
    let exe = std::env::current_exe().map_err(|e| HarnessError(e.to_string()))?;
    let worker_py = harness::workspace_root().join("benches/peers/worker.py");
    let threads = suite.threads.to_string();
    let mut rows = Vec::new();
    for (case, description) in &suite.cases {
        eprintln!("[{}] {case}", suite.name);
        let mut ours = || -> Result<Box<dyn Side>> {
            let mut c = Command::new(&exe);
            c.args(["worker", "--suite", suite.name, "--case", case, "--data"])
                .arg(&data)
                .env("RAYON_NUM_THREADS", &threads);
            Ok(Box::new(Worker::start(c, &format!("ours {case}"))?))
        };
        let mut peer = || -> Result<Box<dyn Side>> {
            let mut c = Command::new(python);
            c.arg(&worker_py)
                .args([
                    "--suite",
                    suite.name,
                    "--case",
                    case,
                    "--threads",
                    &threads,
                    "--data",
                ])
                .arg(&data);
            for v in ["OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"] {
                c.env(v, &threads);
            }
            Ok(Box::new(Worker::start(c, &format!("peer {case}"))?))
        };
        let row = measure_row(case, description, &mut ours, &mut peer, options)?;
        eprintln!(
            "[{}] {case}: ours {:.4} s, peer {:.4} s, {:.2}×{}",
            suite.name,
            row.ours.min,
            row.peer.min,
            row.ratio,
            row.unreliable
                .as_deref()
                .map_or(String::new(), |w| format!(" (unreliable: {w})"))
        );
        rows.push(row);
    }
    let run = SuiteRun {
        suite: suite.name.to_string(),
        command: format!(
            "cargo bench -p sparsity-benches --bench suite -- run --suite {} --workers {} \
             --rounds {} --python PY",
            suite.name, options.workers, options.rounds
        ),
        date,
        revision,
        threads: suite.threads,
        workers: options.workers,
        rounds: options.rounds,
        machine,
        rows,
        notes: suite.notes.clone(),
    };
    std::fs::create_dir_all(out).map_err(|e| HarnessError(format!("{}: {e}", out.display())))?;
    let json = serde_json::to_vec_pretty(&run).map_err(|e| HarnessError(e.to_string()))?;
    let path = out.join(format!("{}.json", suite.name));
    sparsity_io::write_atomic(&path, &json)
        .map_err(|e| HarnessError(format!("{}: {e}", path.display())))?;
    update_tables(doc, &[run])
}

fn update_tables(doc: &Path, runs: &[SuiteRun]) -> Result<()> {
    let mut text = std::fs::read_to_string(doc)
        .map_err(|e| HarnessError(format!("{}: {e}", doc.display())))?;
    for r in runs {
        text = harness::update_doc(&text, r);
    }
    sparsity_io::write_atomic(doc, text.as_bytes())
        .map_err(|e| HarnessError(format!("{}: {e}", doc.display())))
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let get = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let root = harness::workspace_root();
    let out = get("--out").map_or_else(|| root.join("docs/results/bench"), PathBuf::from);
    let doc = get("--doc").map_or_else(|| root.join("docs/benchmarks.md"), PathBuf::from);
    let result = match args.first().map(String::as_str) {
        Some("worker") => match (get("--suite"), get("--case"), get("--data")) {
            (Some(s), Some(c), Some(d)) => worker(&s, &c, Path::new(&d)),
            _ => Err(HarnessError(
                "worker: --suite, --case and --data are required".into(),
            )),
        },
        Some("run") => {
            let wanted = get("--suite").unwrap_or_else(|| "all".into());
            let python = get("--python").map_or_else(|| PathBuf::from("python3"), PathBuf::from);
            let d = RunOptions::default();
            let num = |name: &str, default: usize| {
                get(name).map_or(Ok(default), |v| {
                    v.parse::<usize>()
                        .map_err(|_| HarnessError(format!("{name}: not a count: {v}")))
                })
            };
            let options = (|| -> Result<RunOptions> {
                Ok(RunOptions {
                    workers: num("--workers", d.workers)?,
                    rounds: num("--rounds", d.rounds)?,
                    attempts: num("--attempts", d.attempts)?,
                    ..d
                })
            })();
            let options = match options {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("suite: {e}");
                    std::process::exit(2);
                }
            };
            suites()
                .iter()
                .filter(|s| wanted == "all" || wanted.split(',').any(|w| w == s.name))
                .try_for_each(|s| run_suite(s, &python, &options, &out, &doc))
        }
        Some("tables") => {
            let names: Vec<String> = std::fs::read_to_string(&doc)
                .map(|d| harness::blocks(&d).into_iter().map(|(n, _)| n).collect())
                .unwrap_or_default();
            names
                .iter()
                .map(|n| Ok((n, harness::render_block(&out, n)?)))
                .collect::<Result<Vec<_>>>()
                .and_then(|bodies| {
                    let mut text = std::fs::read_to_string(&doc)
                        .map_err(|e| HarnessError(format!("{}: {e}", doc.display())))?;
                    for (name, body) in bodies {
                        text = harness::replace_block(&text, name, &body);
                    }
                    sparsity_io::write_atomic(&doc, text.as_bytes())
                        .map_err(|e| HarnessError(format!("{}: {e}", doc.display())))
                })
        }
        // `cargo bench --workspace` runs every bench target with no arguments: nothing to do.
        None => {
            eprintln!(
                "suite: `run --suite all|metrics,pruning,clustering,gemv,models --python PY` or `tables` \
                 (see benches/suite.rs)"
            );
            Ok(())
        }
        Some(other) => Err(HarnessError(format!("unknown command {other}"))),
    };
    if let Err(e) = result {
        eprintln!("suite: {e}");
        std::process::exit(1);
    }
}
