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

/// `cluster` end to end on a small planted mask: 2 tensors, JSON schema, plots, results rows,
/// the `positive` rule, and argument errors.
#[test]
fn cluster_end_to_end_on_a_planted_mask() {
    let dir = tempfile::tempdir().unwrap();
    // W [out = 96, in = 60]: column j follows prototype j % 3 (rows 32p..32p+32 kept), with a
    // few flipped bits; a second tensor is its negation (same mask, all weights < 0).
    let w: Vec<f32> = (0..96 * 60)
        .map(|i| {
            let (r, c) = (i / 60, i % 60);
            let on = (r / 32 == c % 3) ^ ((r * 7 + c * 13) % 97 == 0);
            if on { 0.5 + (r % 5) as f32 } else { 0.0 }
        })
        .collect();
    let neg: Vec<f32> = w.iter().map(|x| -x).collect();
    let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let (b1, b2) = (bytes(&w), bytes(&neg));
    let t1 =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![96, 60], &b1).unwrap();
    let t2 =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![96, 60], &b2).unwrap();
    let input = dir.path().join("mask.safetensors");
    safetensors::serialize_to_file(
        [
            ("model.layers.3.mlp.up_proj.weight", t1),
            ("model.layers.3.mlp.neg.weight", t2),
        ],
        None,
        &input,
    )
    .unwrap();
    let out = dir.path().join("out");
    let results = dir.path().join("results");
    let run = xtask()
        .args(["cluster", "--input"])
        .arg(&input)
        .args([
            "--tensor",
            "model.layers.3.mlp.up_proj.weight,model.layers.3.mlp.neg.weight",
            "--neighbors",
            "29",
            "--k",
            "3,4",
            "--reference",
            "0",
            "--block",
            "16,32,40",
            "--legacy-mmm",
            "--out",
        ])
        .arg(&out)
        .arg("--results-dir")
        .arg(&results)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("clusters.json")).unwrap()).unwrap();
    let t = &json["tensors"][0];
    assert_eq!(t["n_features"], 60);
    assert_eq!(t["n_bits"], 96);
    assert_eq!(t["reference"], 0);
    let neighbours: Vec<u64> = t["neighbours"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(neighbours.len(), 29);
    // The 19 other members of prototype 0 are the nearest.
    assert!(neighbours[..19].iter().all(|j| j % 3 == 0));
    let k3 = &t["per_k"][0];
    assert_eq!(k3["k"], 3);
    assert!(k3["metrics"]["separation_ratio"].as_f64().unwrap() > 5.0);
    assert!(k3["centroid_metrics"]["separation_ratio"].as_f64().unwrap() > 1.0);
    assert_eq!(k3["coherence"].as_array().unwrap().len(), 3);
    assert_eq!(k3["legacy_coherence"]["group_size"], 8);
    let methods = t["separation_by_method"].as_array().unwrap();
    assert_eq!(methods.len(), 3);
    // On this planted mask all three methods find the same 3 clusters.
    for m in methods {
        assert_eq!(m["per_k"][0]["ari_vs_main"], 1.0, "{}", m["method"]);
    }
    // Default rule `nonzero` keeps negative weights: the negated tensor has the same mask.
    let n = &json["tensors"][1];
    assert_eq!(n["neighbours"], t["neighbours"]);
    assert_eq!(n["per_k"][0]["labels"], k3["labels"]);
    assert_eq!(json["binarize"], "nonzero");
    let plots: Vec<&str> = t["plots"]
        .as_array()
        .unwrap()
        .iter()
        .chain(n["plots"].as_array().unwrap())
        .map(|p| p.as_str().unwrap())
        .collect();
    for p in &plots {
        let png = std::fs::read(out.join(p)).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{p}");
    }
    assert_eq!(t["plots"].as_array().unwrap().len(), 5);
    assert_eq!(json["heatmap"], "separation_heatmap.png");
    assert!(out.join("separation_heatmap.png").is_file());
    assert_eq!(std::fs::read_dir(&results).unwrap().count(), 1);
    // `positive` (the original's `> 0`) drops every negative weight: the negated tensor's mask
    // becomes all zero, every distance 0, and the separation ratio undefined (null).
    let out2 = dir.path().join("out2");
    let run = xtask()
        .args(["cluster", "--input"])
        .arg(&input)
        .args([
            "--tensor",
            "model.layers.3.mlp.neg.weight",
            "--binarize",
            "positive",
            "--k",
            "2",
            "--neighbors",
            "5",
            "--no-plots",
            "--no-compare",
            "--out",
        ])
        .arg(&out2)
        .arg("--results-dir")
        .arg(&results)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out2.join("clusters.json")).unwrap()).unwrap();
    assert_eq!(json["binarize"], "positive");
    assert_eq!(json["tensors"][0]["density"], 0.0);
    assert!(json["tensors"][0]["per_k"][0]["metrics"]["separation_ratio"].is_null());
    assert!(json["heatmap"].is_null());
    assert_eq!(std::fs::read_dir(&results).unwrap().count(), 2);
    for bad in [
        &["--binarize", "gt:1"][..],
        &["--reference", "1", "--seed", "2"][..],
        &["--features", "diagonal"][..],
        &["--method", "dbscan"][..],
    ] {
        let run = xtask()
            .args(["cluster", "--input", "x", "--tensor", "t", "--out", "o"])
            .args(bad)
            .output()
            .unwrap();
        assert!(!run.status.success(), "{bad:?}");
    }
}

/// `cluster`, `bench-gemv` and `decode-bench` estimate their peak memory before allocating:
/// `--dry-run` prints the estimate, and an estimate over `--max-memory` (or over the memory
/// available, for absurd sizes) is refused with the estimate stated and nothing written.
#[test]
fn commands_sized_by_their_arguments_state_their_memory_estimate() {
    let dir = tempfile::tempdir().unwrap();
    let b: Vec<u8> = (0..64 * 48)
        .flat_map(|i| ((i % 3) as f32).to_le_bytes())
        .collect();
    let t =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![64, 48], &b).unwrap();
    let input = dir.path().join("w.safetensors");
    safetensors::serialize_to_file([("w", t)], None, &input).unwrap();
    let out = dir.path().join("out");
    let cluster = |extra: &[&str]| {
        xtask()
            .args(["cluster", "--input"])
            .arg(&input)
            .args(["--tensor", "w", "--no-plots", "--out"])
            .arg(&out)
            .args(extra)
            .output()
            .unwrap()
    };
    let run = cluster(&["--dry-run"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let plan = String::from_utf8_lossy(&run.stdout);
    // 48 features of 64 bits: the f32 tensor alone is 64 × 48 × 4 = 12 KiB
    assert!(
        plan.contains("estimated peak memory") && plan.contains("tensor (f32): 12.000 KiB"),
        "{plan}"
    );
    assert!(!out.exists(), "a dry run writes nothing");
    let run = cluster(&["--max-memory", "10K"]);
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("needs an estimated") && err.contains("10.000 KiB of --max-memory"),
        "{err}"
    );
    assert!(!out.exists());

    let started = std::time::Instant::now();
    let run = xtask()
        .args(["bench-gemv", "--shapes", "4000000000x4000000000", "--out"])
        .arg(dir.path().join("gemv.json"))
        .output()
        .unwrap();
    assert!(!run.status.success());
    assert!(started.elapsed().as_secs_f64() < 10.0);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("bench-gemv")
            && err.contains("needs an estimated")
            && err.contains("weight copies"),
        "{err}"
    );
    assert!(!dir.path().join("gemv.json").exists());
    let run = xtask()
        .args(["bench-gemv", "--rotate-mib", "18446744073709551615"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&run.stderr).contains("--rotate-mib"));

    let run = xtask()
        .args(["decode-bench", "--dry-run", "--layers", "2"])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let plan = String::from_utf8_lossy(&run.stdout);
    assert!(
        plan.contains("decode-bench of a 2 layer") && plan.contains("key/value caches"),
        "{plan}"
    );
    let run = xtask()
        .args(["decode-bench", "--layers", "2000000", "--work-dir"])
        .arg(dir.path().join("work"))
        .output()
        .unwrap();
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("needs an estimated") && err.contains("--layers"),
        "{err}"
    );
    assert!(!dir.path().join("work").exists());
}

/// `sparse-decode` and `analyze` check one forward pass's activations against `--max-memory`
/// after loading each model and before running any text; the refusal states the estimate.
#[test]
fn sparse_decode_and_analyze_refuse_a_forward_pass_over_budget() {
    let dir = tempfile::tempdir().unwrap();
    let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/models/tests/fixtures/hf/gpt2-tiny");
    let texts = dir.path().join("texts.txt");
    std::fs::write(
        &texts,
        "the cat sat on the mat and looked at the dog\n".repeat(40),
    )
    .unwrap();
    let out = dir.path().join("out");
    let run = xtask()
        .args(["sparse-decode", "--model"])
        .arg(&model)
        .arg("--calib-texts")
        .arg(&texts)
        .arg("--eval-texts")
        .arg(&texts)
        .args(["--seq-len", "16", "--max-memory", "4K", "--out-dir"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("a forward pass of gpt2 over 8 × 16 tokens needs an estimated")
            && err.contains("4.000 KiB of --max-memory"),
        "{err}"
    );
    assert!(!out.exists());
    let run = xtask()
        .args(["analyze", "--model"])
        .arg(&model)
        .arg("--texts")
        .arg(&texts)
        .args(["--layers", "0", "--max-memory", "4K", "--out-dir"])
        .arg(&out)
        .arg("--results-dir")
        .arg(dir.path().join("results"))
        .output()
        .unwrap();
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("needs an estimated") && err.contains("--max-memory"),
        "{err}"
    );
}

/// `cargo xtask analyze` on the transformers fixture models: numbers in
/// `neuron_analysis_results.json` against an independent recomputation from the models' own
/// forward pass (per-text mean of each neuron over its tokens, population variance over texts,
/// Hoyer by its formula, the threshold sweep by counting).
#[test]
fn analyze_numbers_match_an_independent_recomputation() {
    use sparsity_models::text::TextTokenizer;
    use sparsity_models::{Batch, Capture, CausalLm, cpu_device};

    let fixtures = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/models/tests/fixtures/hf");
    let texts = [
        "The river runs past the old mill.",
        "Sparse neurons fire rarely; dense ones fire often!",
        "A small model reads a short text and predicts the next token.",
        "Water boils at one hundred degrees when the pressure is normal.",
        "Every layer of the network changes the residual stream a little.",
    ];
    let dir = tempfile::tempdir().unwrap();
    let texts_file = dir.path().join("texts.txt");
    std::fs::write(&texts_file, texts.join("\n")).unwrap();
    let out_dir = dir.path().join("out");
    let run = xtask()
        .args(["analyze", "--model"])
        .arg(fixtures.join("gpt2-tiny"))
        .arg("--model")
        .arg(fixtures.join("mamba-tiny"))
        .arg("--texts")
        .arg(&texts_file)
        .arg("--out-dir")
        .arg(&out_dir)
        .arg("--plots-dir")
        .arg(dir.path().join("plots"))
        .arg("--results-dir")
        .arg(dir.path().join("results"))
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out_dir.join("neuron_analysis_results.json")).unwrap(),
    )
    .unwrap();
    let device = cpu_device();
    for (i, (name, site)) in [("gpt2-tiny", "mlp_act.0"), ("mamba-tiny", "mixer_gated.0")]
        .into_iter()
        .enumerate()
    {
        let model_json = &json["models"][i];
        assert!(model_json["model"].as_str().unwrap().ends_with(name));
        assert_eq!(model_json["num_texts"], texts.len());
        let model = CausalLm::load_dir(&fixtures.join(name), &device).unwrap();
        let tok = TextTokenizer::from_model_dir(&fixtures.join(name)).unwrap();
        // Per text: the mean over its tokens of each neuron.
        let mut means: Vec<Vec<f64>> = Vec::new();
        for text in texts {
            let ids: Vec<i64> = tok
                .encode(text)
                .unwrap()
                .into_iter()
                .map(i64::from)
                .collect();
            let batch = Batch::from_ids(&ids, 1, ids.len(), &device).unwrap();
            let out = model
                .forward(&batch, &Capture::sites([site]), None)
                .unwrap();
            let a = &out.sites[site];
            let dims = a.dims();
            let values = a.to_vec().unwrap();
            let (len, width) = (dims[1], dims[2]);
            means.push(
                (0..width)
                    .map(|c| {
                        (0..len)
                            .map(|t| f64::from(values[t * width + c]))
                            .sum::<f64>()
                            / len as f64
                    })
                    .collect(),
            );
        }
        let width = means[0].len();
        let k = means.len() as f64;
        let v: Vec<f64> = (0..width)
            .map(|c| {
                let m = means.iter().map(|x| x[c]).sum::<f64>() / k;
                means.iter().map(|x| (x[c] - m).powi(2)).sum::<f64>() / k
            })
            .collect();
        let n = width as f64;
        let l1: f64 = v.iter().map(|x| x.abs()).sum();
        let l2: f64 = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        let hoyer = (n.sqrt() - l1 / l2) / (n.sqrt() - 1.0);

        let neurons = &model_json["sparsity"]["layers"]["0"]["neurons"];
        assert_eq!(neurons["site"], site);
        let got = neurons["per_sequence_mean"]["hoyer"]["hoyer_sparsity"]
            .as_f64()
            .unwrap();
        assert!(
            (got - hoyer).abs() < 1e-6,
            "{name}: Hoyer {got} vs recomputed {hoyer}"
        );
        let mean_var = neurons["mean_variance"].as_f64().unwrap();
        let want = v.iter().sum::<f64>() / n;
        assert!(
            ((mean_var - want) / want).abs() < 1e-5,
            "{name}: mean variance {mean_var} vs {want}"
        );
        // The neuron-level comparison's value at layer 0 (its own per-text pass) and the
        // summary's direction: the sign of the mean difference over the matched pairs.
        let curves = &json["comparison"]["neurons"]["models"][i];
        let h = curves["layers"][0]["values"]["hoyer"]["value"]
            .as_f64()
            .unwrap();
        assert!(
            (h - hoyer).abs() < 1e-6,
            "{name}: comparison Hoyer {h} vs {hoyer}"
        );
        // The threshold sweep: the fraction of recomputed variances below each threshold.
        let sweep = &neurons["threshold_sweep"];
        let thresholds = sweep["thresholds"].as_array().unwrap();
        assert_eq!(thresholds.len(), 33);
        for (t, s) in thresholds
            .iter()
            .zip(sweep["per_sequence_mean"].as_array().unwrap())
        {
            let t = t.as_f64().unwrap();
            let count = v.iter().filter(|x| x.abs() < t).count() as f64;
            assert_eq!(s.as_f64().unwrap(), count / n, "{name}: sweep at {t}");
        }
    }
    let cmp = &json["comparison"]["neurons"]["comparisons"][0];
    for m in cmp["summary"].as_array().unwrap() {
        let Some(sparser) = m["sparser"].as_str() else {
            continue;
        };
        let sign = if sparser == cmp["a"].as_str().unwrap() {
            1.0
        } else {
            -1.0
        };
        for p in cmp["pairs"].as_array().unwrap() {
            let d = &p["differences"][m["measure"].as_str().unwrap()];
            let diff = d["a"].as_f64().unwrap() - d["b"].as_f64().unwrap();
            assert!(sign * diff > 0.0, "{m}: pair {p}");
        }
    }
    let md = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    assert!(md.contains("## Answers") && md.contains("Neuron_Sparsity_by_Depth.png"));
    assert!(
        md.contains("Threshold_Sweep.png"),
        "the sweep plot is referenced from report.md"
    );
    assert!(dir.path().join("plots/Threshold_Sweep.png").is_file());
}
