//! The `xtask` binary end to end: bad input gives a non-zero exit, a message naming what is at
//! fault, and no half-written output. (Building this test also builds the binary with the
//! workspace's test features, which `.ci/run` reuses for its DuckDB step.)

use std::process::Command;

fn xtask() -> Command {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
}

#[test]
fn missing_activations_file_is_named_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-acts.safetensors");
    let out = dir.path().join("report.json");
    let run = xtask()
        .args(["sparsity", "--activations"])
        .arg(&missing)
        .args(["--tensor", "acts", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("no-such-acts.safetensors"), "{err}");
    assert!(!out.exists());
}

#[test]
fn zero_training_steps_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for flag in ["--steps", "--gpt2-steps", "--mamba-steps"] {
        let run = xtask()
            .args(["train-demo", "--cache"])
            .arg(dir.path())
            .args([flag, "0"])
            .output()
            .unwrap();
        assert!(!run.status.success(), "{flag}");
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(err.contains(&format!("{flag} must be at least 1")), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "{flag}");
    }
}

#[test]
fn bench_gemv_backend_errors_name_the_option_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench.json");
    for (backend, needle) in [
        ("tpu", "--backend tpu: expected cpu or cuda"),
        // a CI build has no CUDA client: the message names the feature to build with
        ("cuda", "--features cubecl-cuda"),
    ] {
        let run = xtask()
            .args([
                "bench-gemv",
                "--shapes",
                "8x8",
                "--backend",
                backend,
                "--out",
            ])
            .arg(&out)
            .output()
            .unwrap();
        assert!(!run.status.success(), "{backend}");
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(err.contains(needle), "{backend}: {err}");
        assert!(!out.exists(), "{backend}");
    }
}

/// Issue #23: a sweep length no machine can hold is refused before anything is allocated, with
/// the memory estimate in the message; `--dry-run` prints the plan and the estimate.
#[test]
fn dsa_sweep_states_its_memory_estimate_and_refuses_absurd_lengths() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("runs.jsonl");
    let started = std::time::Instant::now();
    let run = xtask()
        .args([
            "dsa-sweep",
            "--lengths",
            "4000000000",
            "--seeds",
            "1",
            "--results",
        ])
        .arg(&results)
        .output()
        .unwrap();
    assert!(!run.status.success());
    assert!(started.elapsed().as_secs_f64() < 10.0);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("estimated") && err.contains("4000000000"),
        "{err}"
    );
    assert!(!results.exists());

    // The same with an explicit budget, and a plan that fits it.
    let run = xtask()
        .args([
            "dsa-sweep",
            "--lengths",
            "1024",
            "--max-memory",
            "1M",
            "--results",
        ])
        .arg(&results)
        .output()
        .unwrap();
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("--max-memory"));
    let run = xtask()
        .args([
            "dsa-sweep",
            "--lengths",
            "64,128",
            "--keep-ratios",
            "0.5",
            "--seeds",
            "2",
        ])
        .args(["--max-memory", "8G", "--dry-run", "--results"])
        .arg(&results)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(
        out.contains("8 runs") && out.contains("peak memory per run"),
        "{out}"
    );
    assert!(!results.exists());
}
