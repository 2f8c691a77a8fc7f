//! Fuzz tests of the two results formats read back by the project (issue #23): the DSA sweep's
//! JSON-lines results file (`read_results`, then for one case in 10 `summarize`, and for one in
//! 100 the whole report with its figures) and the Parquet results store (`results::read_rows`). Seeded
//! mutations of valid files must give a typed error or a valid result: never a panic, an abort,
//! or an allocation beyond a bound proportional to the file. `SPARSITY_FUZZ_JSONL_CASES`,
//! `SPARSITY_FUZZ_PARQUET_CASES` (default 2 000 each) and `SPARSITY_FUZZ_SEED` override.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test harness

use rand::Rng;
use sparsity_experiments::dsa_sweep::{read_results, summarize, write_report};
use sparsity_experiments::results::{ResultRow, append_rows, read_rows};
use sparsity_fuzz::{campaign, env_or, mutate_bytes, mutate_json};

#[global_allocator]
static ALLOCATOR: sparsity_fuzz::LargestRequest = sparsity_fuzz::LargestRequest;

/// A valid results file: 2 lengths × (dense, keep 0.25, keep 0.5) × 3 seeds.
fn valid_lines() -> Vec<serde_json::Value> {
    let mut lines = Vec::new();
    for length in [32usize, 64] {
        for (ratio, label) in [(None, "dense"), (Some(0.25), "r0.25"), (Some(0.5), "r0.5")] {
            for seed in 0..3u64 {
                let loss = 2.0 + 0.1 * seed as f64 + ratio.unwrap_or(1.0) * 0.05;
                lines.push(serde_json::json!({
                    "spec": {
                        "id": format!("L{length}-{label}-s{seed}"),
                        "length": length,
                        "ratio": ratio,
                        "keep_ratio": ratio,
                        "top_k": ratio.map_or(length, |r| (r * length as f64) as usize),
                        "seed": seed,
                    },
                    "preset": "tiny",
                    "n_params": 123_456,
                    "final_val_loss": loss,
                    "final_val_accuracy": 0.4,
                    "val_curve": [
                        {"step": 10, "val_loss": loss + 0.5, "train_loss": loss + 0.6, "val_accuracy": 0.3},
                        {"step": 20, "val_loss": loss, "train_loss": loss + 0.1, "val_accuracy": 0.4},
                    ],
                    "final_train_loss": loss + 0.1,
                    "final_indexer_kl": ratio.map(|_| 0.2),
                    "train_seconds": 10.0 + seed as f64,
                    "train_tokens_per_second": 1000.0,
                    "mean_kept_fraction": ratio.unwrap_or(1.0),
                    "peak_rss_bytes": 1_000_000,
                }));
            }
        }
    }
    lines
}

fn join(lines: &[serde_json::Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for l in lines {
        out.extend(serde_json::to_vec(l).unwrap());
        out.push(b'\n');
    }
    out
}

#[test]
fn mutated_sweep_results_give_typed_errors_or_reports() {
    let lines = valid_lines();
    let valid = join(&lines);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("runs.jsonl");
    std::fs::write(&file, &valid).unwrap();
    let report = summarize(&read_results(&file).unwrap()).unwrap();
    assert_eq!(report.runs, 18);

    let cases: usize = env_or("SPARSITY_FUZZ_JSONL_CASES", 2_000);
    let mut case = 0usize;
    let out = campaign(
        "sweep JSONL",
        cases,
        env_or("SPARSITY_FUZZ_SEED", 43),
        |rng| {
            if rng.random_bool(0.7) {
                let mut l = lines.clone();
                for _ in 0..rng.random_range(1..4) {
                    let i = rng.random_range(0..l.len());
                    l[i] = mutate_json(rng, &l[i]).0;
                }
                (join(&l), "line fields")
            } else {
                mutate_bytes(rng, &valid)
            }
        },
        |w| 64 * w.len() + (16 << 20),
        |w| {
            case += 1;
            std::fs::write(&file, &w).unwrap();
            let results = read_results(&file)?;
            // The statistics (about 0.4 s per length: the power search) for one case in 10,
            // the whole report with its figures for one in 100.
            if case.is_multiple_of(10) {
                let report = summarize(&results)?;
                if case.is_multiple_of(100) {
                    write_report(
                        &report,
                        std::slice::from_ref(&file),
                        &dir.path().join("report"),
                    )?;
                }
            }
            Ok::<_, sparsity_models::ModelError>(results.len())
        },
    );
    assert_eq!(out.accepted + out.rejected, cases);
    assert!(out.accepted > 0 && out.rejected > 0, "{out:?}");
}

fn rows() -> Vec<ResultRow> {
    (0..40)
        .map(|i| ResultRow {
            run_id: "20261203-run".into(),
            timestamp_us: 1_700_000_000_000_000 + i,
            git_rev: "abc123".into(),
            command: "sparsity".into(),
            model: "demo-gpt2".into(),
            layer: (i % 3 != 0).then_some(i / 3),
            site: format!("mlp_act.{}", i % 4),
            method: "gini".into(),
            metric: "sparsity".into(),
            value: i as f64 * 0.125,
            parameters: r#"{"threshold":0.01}"#.into(),
        })
        .collect()
}

#[test]
fn results_store_rows_read_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let rows = rows();
    let path = append_rows(dir.path(), &rows).unwrap();
    assert_eq!(read_rows(&path).unwrap(), rows);
    // a file of another kind is an error naming it
    std::fs::write(dir.path().join("x.parquet"), b"PAR1 not really").unwrap();
    let e = read_rows(&dir.path().join("x.parquet"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("x.parquet"), "{e}");
}

#[test]
fn mutated_results_store_files_give_typed_errors_or_rows() {
    let dir = tempfile::tempdir().unwrap();
    let valid = std::fs::read(append_rows(dir.path(), &rows()).unwrap()).unwrap();
    let file = dir.path().join("mutated.parquet");
    let cases: usize = env_or("SPARSITY_FUZZ_PARQUET_CASES", 2_000);
    let out = campaign(
        "Parquet store",
        cases,
        env_or("SPARSITY_FUZZ_SEED", 47),
        |rng| mutate_bytes(rng, &valid),
        |w| 64 * w.len() + (16 << 20),
        |w| {
            std::fs::write(&file, &w).unwrap();
            read_rows(&file)
        },
    );
    assert_eq!(out.accepted + out.rejected, cases);
    assert!(out.rejected > cases / 2, "{out:?}");
}
