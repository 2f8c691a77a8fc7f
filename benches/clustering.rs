//! Criterion benchmarks of sparsity-clustering against scipy (issue #5).
//!
//! Data: 11 008 features × 4 096 bits (the columns of a LLaMA-7B MLP weight `W [4096, 11008]`
//! binarised per column), i.i.d. bits of density 0.5 from `ChaCha8Rng::seed_from_u64(2024)`.
//! The same bits are written to `target/clustering-bench/bits.npy` (bool `[11008, 4096]`) with
//! `meta.txt` (sum of all pair counts, reference, top-128 neighbours) so the scipy peer
//! (`benches/peers/clustering_peer.py`) times `pdist(metric="hamming")` and
//! `cdist` + stable argsort on identical data and checks its answers against ours. Set
//! `CLUSTERING_PEER_PYTHON=/path/to/python` to run the peer inside this same run (before the
//! criterion measurements, so the two never share the cores); its report is printed and saved
//! to `target/clustering-bench/peer.json`.
//!
//! Groups: `hamming_all_pairs_11008x4096` and `hamming_top128_11008x4096`, each with
//! `threads=1` (a one-thread rayon pool) and `threads=<all cores>`.
//!
//! ```text
//! CLUSTERING_PEER_PYTHON=/work/venv/bin/python cargo bench -p sparsity-benches --bench clustering
//! ```
#![allow(missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sparsity_clustering::BinaryMatrix;
use sparsity_clustering::hamming::{
    all_pairs, kernel_name, nearest_neighbours, thread_pool, with_threads,
};

const N_FEATURES: usize = 11_008;
const N_BITS: usize = 4_096;
const TOP_K: usize = 128;
const REFERENCE: usize = 1_234;

fn data() -> BinaryMatrix {
    let mut rng = ChaCha8Rng::seed_from_u64(2024);
    let w = N_BITS / 64;
    let words: Vec<u64> = (0..N_FEATURES * w).map(|_| rng.random::<u64>()).collect();
    BinaryMatrix::from_words(N_FEATURES, N_BITS, words).unwrap()
}

fn out_dir() -> PathBuf {
    let root = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    root.join("clustering-bench")
}

/// Writes the bits as a NumPy `.npy` (bool, C order) plus the reference answers.
fn export(m: &BinaryMatrix) -> PathBuf {
    let dir = out_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let mut body = Vec::with_capacity(m.n_features() * m.n_bits());
    for f in 0..m.n_features() {
        for (wi, &word) in m.feature_words(f).iter().enumerate() {
            let bits = (m.n_bits() - wi * 64).min(64);
            body.extend((0..bits).map(|b| u8::from((word >> b) & 1 == 1)));
        }
    }
    let npy = dir.join("bits.npy");
    sparsity_benches::harness::write_npy_raw(&npy, "|b1", &[m.n_features(), m.n_bits()], &body)
        .unwrap();
    let pd = all_pairs(m);
    let checksum: u64 = pd.condensed().iter().map(|&c| u64::from(c)).sum();
    let nn = nearest_neighbours(m, REFERENCE, TOP_K).unwrap();
    let mut meta = String::new();
    writeln!(meta, "checksum {checksum}").unwrap();
    writeln!(meta, "reference {REFERENCE}").unwrap();
    let idx: Vec<String> = nn.indices.iter().map(|i| i.to_string()).collect();
    writeln!(meta, "top{TOP_K} {}", idx.join(",")).unwrap();
    sparsity_io::write_atomic(&dir.join("meta.txt"), meta.as_bytes()).unwrap();
    npy
}

fn run_peer(npy: &Path) {
    let Some(python) = std::env::var_os("CLUSTERING_PEER_PYTHON") else {
        eprintln!("CLUSTERING_PEER_PYTHON not set: skipping the scipy peer");
        return;
    };
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers/clustering_peer.py");
    let dir = out_dir();
    let mut cmd = std::process::Command::new(python);
    cmd.arg(script)
        .arg("--data")
        .arg(npy)
        .arg("--meta")
        .arg(dir.join("meta.txt"))
        .arg("--out")
        .arg(dir.join("peer.json"));
    if std::env::var_os("CLUSTERING_PEER_SKIP_PDIST").is_some() {
        cmd.arg("--skip-pdist");
    }
    let status = cmd.status().unwrap();
    assert!(status.success(), "scipy peer failed: {status}");
}

fn bench(c: &mut Criterion) {
    let m = data();
    eprintln!("popcount kernel: {}", kernel_name());
    let npy = export(&m);
    run_peer(&npy);
    let all = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads: Vec<usize> = if all > 1 { vec![1, all] } else { vec![1] };

    let mut g = c.benchmark_group("hamming_all_pairs_11008x4096");
    g.sample_size(10);
    g.sampling_mode(SamplingMode::Flat);
    g.warm_up_time(Duration::from_secs(1));
    for &t in &threads {
        g.bench_function(format!("threads={t}"), |b| {
            b.iter(|| with_threads(t, || black_box(all_pairs(black_box(&m)))).unwrap())
        });
    }
    g.finish();

    let mut g = c.benchmark_group("hamming_top128_11008x4096");
    for &t in &threads {
        // Build the pool once: time the search, not the thread start-up.
        let pool = thread_pool(t).unwrap();
        g.bench_function(format!("threads={t}"), |b| {
            b.iter(|| pool.install(|| nearest_neighbours(black_box(&m), REFERENCE, TOP_K).unwrap()))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    // No criterion plots: plotters here has no system fonts (same as `-- --noplot`).
    config = Criterion::default().without_plots();
    targets = bench
}
criterion_main!(benches);
