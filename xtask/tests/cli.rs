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
