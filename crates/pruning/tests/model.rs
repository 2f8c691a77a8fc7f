//! Whole-model pruning on the transformers-made tiny GPT-2, Mamba, OPT and Llama fixtures (and, with
//! `--ignored`, on the trained demo models).

#![cfg(feature = "models")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sparsity_models::{Batch, Capture, CausalLm, cpu_device};
use sparsity_pruning::io::TensorFile;
use sparsity_pruning::model::{
    ModelPruneOptions, ModelPruneReport, calibration_windows, linear_groups, linear_targets,
    prune_model, read_weight, save_pruned,
};
use sparsity_pruning::{Method, Pattern, PruneError, ReconError};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models/tests/fixtures/hf")
        .join(name)
}

/// The transformers-made fixtures of every family.
const FIXTURES: [&str; 4] = ["gpt2-tiny", "mamba-tiny", "opt-tiny", "llama-tiny"];

fn load(name: &str) -> CausalLm {
    CausalLm::load_dir(&fixture(name), &cpu_device()).unwrap()
}

fn random_sequences(n: usize, len: usize, vocab: u32, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| (0..len).map(|_| rng.random_range(0..vocab)).collect())
        .collect()
}

const METHODS: [Method; 4] = [
    Method::Magnitude,
    Method::Wanda,
    Method::WandaVariant,
    Method::SparseGpt {
        blocksize: 128,
        percdamp: 0.01,
    },
];

fn run(name: &str, method: Method, pattern: Pattern) -> (CausalLm, ModelPruneReport) {
    let mut model = load(name);
    let calib = random_sequences(12, 24, 512, 1);
    let eval = random_sequences(3, 24, 512, 2);
    let mut options = ModelPruneOptions::new(method, pattern);
    options.batch_size = 5; // a ragged last batch
    let (report, _) = prune_model(&mut model, &calib, &eval, &options, &cpu_device()).unwrap();
    (model, report)
}

/// The number of entries the reference's counting rule prunes at 50 % (random weights: no ties).
fn expected_pruned(method: Method, [rows, cols]: [usize; 2]) -> Option<usize> {
    match method {
        Method::Wanda => Some(rows * (cols as f64 * 0.5) as usize),
        Method::Magnitude => Some((rows as f64 * cols as f64 * 0.5) as usize + 1),
        Method::SparseGpt { blocksize, .. } => Some(
            (0..cols)
                .step_by(blocksize)
                .map(|c| {
                    let bc = blocksize.min(cols - c);
                    (rows as f64 * bc as f64 * 0.5) as usize + 1
                })
                .sum(),
        ),
        Method::WandaVariant => None,
    }
}

#[test]
fn every_method_prunes_every_layer_to_the_requested_sparsity() {
    for name in FIXTURES {
        for method in METHODS {
            let (model, report) = run(name, method, Pattern::Unstructured(0.5));
            let n_targets = linear_targets(&model, &[]).unwrap().len();
            assert_eq!(n_targets, 0, "an empty selection selects nothing");
            // 2 blocks × (GPT-2, Mamba: 4; OPT: q, k, v, out, fc1, fc2; Llama: q, k, v, o, gate, up, down)
            let per_block = match name {
                "opt-tiny" => 6,
                "llama-tiny" => 7,
                _ => 4,
            };
            let expected_layers = 2 * per_block;
            assert_eq!(report.layers.len(), expected_layers, "{name} {method:?}");
            for l in &report.layers {
                let r = &l.report;
                match expected_pruned(method, r.shape) {
                    Some(k) => assert_eq!(r.pruned, k, "{name} {method:?} {}", r.layer),
                    None => assert!(
                        (r.sparsity - 0.5).abs() <= 0.02,
                        "{name} variant {}: {}",
                        r.layer,
                        r.sparsity
                    ),
                }
                let e = l.rel_recon_error.unwrap();
                assert!(
                    e.is_finite() && e > 0.0 && e < 1.5,
                    "{name} {}: {e}",
                    r.layer
                );
            }
            let (before, after) = (
                report.perplexity_before.unwrap(),
                report.perplexity_after.unwrap(),
            );
            assert_eq!(before.tokens, after.tokens);
            assert_ne!(before.nll_sum, after.nll_sum, "{name} {method:?}");
        }
    }
}

#[test]
fn n_m_keeps_n_of_every_m_in_the_hf_layout() {
    for name in FIXTURES {
        let mut model = load(name);
        let calib = random_sequences(4, 16, 512, 3);
        let options = ModelPruneOptions::new(Method::Wanda, Pattern::NM { n: 2, m: 4 });
        let (report, masks) =
            prune_model(&mut model, &calib, &[], &options, &cpu_device()).unwrap();
        assert!(report.perplexity_before.is_none());
        for l in &report.layers {
            assert_eq!(l.report.sparsity, 0.5);
            // back to [out, in] and count per group of 4 inputs
            let m = &masks[&l.target.name];
            let m: Array2<u8> = if l.target.hf_in_out {
                m.t().to_owned()
            } else {
                m.clone()
            };
            assert_eq!([m.nrows(), m.ncols()], l.target.shape);
            for row in m.rows() {
                let row: Vec<u8> = row.to_vec();
                for g in row.chunks(4) {
                    assert_eq!(g.iter().map(|&v| v as usize).sum::<usize>(), 2);
                }
            }
        }
    }
}

#[test]
fn reconstruction_error_equals_the_streamed_definition() {
    // Block 0's first layer sees the same inputs before and after pruning, so the error can be
    // recomputed from activations captured on the dense model.
    for (name, site) in [
        ("gpt2-tiny", "attn_in.0"),
        ("mamba-tiny", "mixer_in.0"),
        ("opt-tiny", "attn_in.0"),
        ("llama-tiny", "attn_in.0"),
    ] {
        let device = cpu_device();
        let mut dense = load(name);
        let calib = random_sequences(6, 20, 512, 4);
        let targets = linear_targets(&dense, &linear_groups(&dense)).unwrap();
        let first = &targets[0];
        assert_eq!(first.input_site, site);
        let w_dense = read_weight(&mut dense, first).unwrap();
        let mut model = load(name);
        let options = ModelPruneOptions::new(Method::Wanda, Pattern::Unstructured(0.5));
        let (report, _) = prune_model(&mut model, &calib, &[], &options, &device).unwrap();
        let w_pruned = read_weight(&mut model, first).unwrap();
        let mut acc = ReconError::new(&first.name, w_dense.view(), w_pruned.view()).unwrap();
        let ids: Vec<i64> = calib.iter().flatten().map(|&t| i64::from(t)).collect();
        let batch = Batch::from_ids(&ids, 6, 20, &device).unwrap();
        let out = dense
            .forward(&batch, &Capture::sites([site]), None)
            .unwrap();
        let x = out.sites[site].to_vec().unwrap();
        let x = ndarray::ArrayD::from_shape_vec(out.sites[site].dims(), x).unwrap();
        acc.add_batch(x.view()).unwrap();
        let got = report.layers[0].rel_recon_error.unwrap();
        assert!(
            (got - acc.value()).abs() <= 1e-9 * acc.value().max(1e-12),
            "{name}: {got} vs {}",
            acc.value()
        );
    }
}

#[test]
fn saved_directory_reloads_with_identical_logits_and_masks() {
    for name in FIXTURES {
        let device = cpu_device();
        let mut model = load(name);
        let calib = random_sequences(4, 16, 512, 5);
        let options = ModelPruneOptions::new(Method::sparsegpt(), Pattern::Unstructured(0.5));
        let (report, masks) = prune_model(&mut model, &calib, &[], &options, &device).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("pruned");
        save_pruned(
            &model,
            &report,
            &masks,
            Some(&fixture(name).join("tokenizer.json")),
            &out,
        )
        .unwrap();
        for f in [
            "config.json",
            "model.safetensors",
            "masks.safetensors",
            "pruning.json",
            "tokenizer.json",
        ] {
            assert!(out.join(f).is_file(), "{name}: {f} missing");
        }
        // an earlier output is replaced; an unrelated directory is refused and left intact
        save_pruned(&model, &report, &masks, None, &out).unwrap();
        let unrelated = dir.path().join("notes");
        std::fs::create_dir(&unrelated).unwrap();
        std::fs::write(unrelated.join("keep.txt"), "mine").unwrap();
        let e = save_pruned(&model, &report, &masks, None, &unrelated).unwrap_err();
        assert!(e.to_string().contains("refusing"), "{e}");
        assert_eq!(
            std::fs::read_to_string(unrelated.join("keep.txt")).unwrap(),
            "mine"
        );
        save_pruned(
            &model,
            &report,
            &masks,
            Some(&fixture(name).join("tokenizer.json")),
            &out,
        )
        .unwrap();
        let back = CausalLm::load_dir(&out, &device).unwrap();
        let batch = Batch::from_ids(&[3, 1, 4, 1, 5, 9, 2, 6], 1, 8, &device).unwrap();
        let a = model.logits(&batch).unwrap().to_data();
        let b = back.logits(&batch).unwrap().to_data();
        assert_eq!(a, b, "{name}: reloaded logits differ");
        let weights = TensorFile::open(&out.join("model.safetensors")).unwrap();
        let saved_masks = TensorFile::open(&out.join("masks.safetensors")).unwrap();
        assert_eq!(saved_masks.names().len(), report.layers.len());
        for (key, mask) in &masks {
            let w = weights.array2_f32(key).unwrap();
            assert_eq!(w.dim(), mask.dim(), "{name} {key}: mask layout");
            for (wv, mv) in w.iter().zip(mask.iter()) {
                assert_eq!(*mv == 1, *wv == 0.0, "{name} {key}");
            }
            let m = saved_masks.array2_f32(key).unwrap();
            assert!(m.iter().zip(mask.iter()).all(|(a, b)| *a == f32::from(*b)));
        }
    }
}

#[test]
fn sparsegpt_reconstructs_better_than_wanda_better_than_magnitude() {
    for name in FIXTURES {
        let mean = |method| {
            let (_, r) = run(name, method, Pattern::Unstructured(0.5));
            r.mean_recon_error().unwrap()
        };
        let (s, w, m) = (mean(METHODS[3]), mean(METHODS[1]), mean(METHODS[0]));
        assert!(
            s <= w && w <= m,
            "{name}: sparsegpt {s}, wanda {w}, magnitude {m}"
        );
    }
}

#[test]
fn bad_requests_are_errors_and_leave_the_model_untouched() {
    let device = cpu_device();
    let mut model = load("mamba-tiny");
    let targets = linear_targets(&model, &linear_groups(&model)).unwrap();
    let before = read_weight(&mut model, &targets[0]).unwrap();
    let calib = random_sequences(2, 8, 512, 6);
    // dt_proj has 4 inputs: 4:8 cannot apply
    let nm = ModelPruneOptions::new(Method::Wanda, Pattern::NM { n: 4, m: 8 });
    let e = prune_model(&mut model, &calib, &[], &nm, &device).unwrap_err();
    assert!(matches!(e, PruneError::NmNotDivisible { .. }), "{e}");
    assert!(e.to_string().contains("dt_proj"), "{e}");
    assert_eq!(read_weight(&mut model, &targets[0]).unwrap(), before);
    // ragged calibration
    let mut ragged = calib.clone();
    ragged[1].pop();
    let ok = ModelPruneOptions::new(Method::Wanda, Pattern::Unstructured(0.5));
    let e = prune_model(&mut model, &ragged, &[], &ok, &device).unwrap_err();
    assert!(e.to_string().contains("sequence 1 has 7 tokens"), "{e}");
    // a GPT-2 group on a Mamba model
    let mut wrong = ok.clone();
    wrong.groups = vec!["attention".to_string()];
    let e = prune_model(&mut model, &calib, &[], &wrong, &device).unwrap_err();
    assert!(
        e.to_string()
            .contains("its groups: in_proj, x_proj, dt_proj, out_proj"),
        "{e}"
    );
    // a token id outside the vocabulary
    let e = prune_model(&mut model, &[vec![9999; 8]], &[], &ok, &device).unwrap_err();
    assert!(e.to_string().contains("9999"), "{e}");
    assert_eq!(read_weight(&mut model, &targets[0]).unwrap(), before);
}

#[test]
fn calibration_windows_are_seeded_and_in_range() {
    let tokens: Vec<u32> = (0..100).collect();
    let a = calibration_windows(&tokens, 10, 5, 7).unwrap();
    assert_eq!(a, calibration_windows(&tokens, 10, 5, 7).unwrap());
    assert_ne!(a, calibration_windows(&tokens, 10, 5, 8).unwrap());
    for w in &a {
        assert_eq!(w.len(), 10);
        assert!(w.windows(2).all(|p| p[1] == p[0] + 1));
    }
    assert!(calibration_windows(&tokens, 101, 1, 0).is_err());
}

/// The ordering on the trained demo models, GPT-2, Mamba, OPT and Llama (trains them on first
/// use: several minutes; run with
/// `cargo test -p sparsity-pruning --test model -- --ignored`; `DEMO_EXP=<cache entry>` points it
/// at another cache entry). SparseGPT has the smallest mean per-layer error and Wanda beats
/// magnitude on both (measured on the 1200-step demo GPT-2: 1.53e-3 / 9.73e-3 / 1.04e-2). On the
/// former 400-step GPT-2 Wanda lost to magnitude (1.6e-3 / 1.03e-2 / 9.6e-3): its LayerNorm-fed
/// layers still had near-uniform input norms; the same happened to the 1200-step demo Llama
/// (Wanda 1.53e-2 vs magnitude 1.48e-2), which is why it trains 2400 steps (5.74e-3 / 1.64e-2 /
/// 1.86e-2). See docs/pruning.md.
#[test]
#[ignore = "trains the demo models on first use (several minutes)"]
fn demo_models_order_sparsegpt_wanda_magnitude() {
    let device = cpu_device();
    let (gpt2_dir, mamba_dir, tok_path) = match std::env::var_os("DEMO_EXP") {
        Some(d) => {
            let d = std::path::PathBuf::from(d);
            (d.join("gpt2"), d.join("mamba"), d.join("tokenizer.json"))
        }
        None => {
            let demo = sparsity_demo::demo::ensure_demo_models(&workspace_demo_cache()).unwrap();
            (demo.gpt2_dir, demo.mamba_dir, demo.tokenizer_path)
        }
    };
    let mut dirs = vec![gpt2_dir, mamba_dir];
    if std::env::var_os("DEMO_EXP").is_none() {
        // the demo OPT and Llama (trained on first use, on the same corpus and tokenizer)
        for which in sparsity_demo::ExtraDemo::ALL {
            dirs.push(
                sparsity_demo::ensure_extra_demo(&workspace_demo_cache(), which)
                    .unwrap()
                    .dir,
            );
        }
    }
    let tok = sparsity_models::text::TextTokenizer::from_file(&tok_path).unwrap();
    // fresh texts from the demo corpus generator (another seed than training's)
    let corpus = sparsity_demo::corpus::generate(1234, 200).join("\n");
    let ids = tok.encode(&corpus).unwrap();
    for dir in &dirs {
        let calib = calibration_windows(&ids, 32, 32, 0).unwrap();
        let mut errs = Vec::new();
        for method in [METHODS[3], METHODS[1], METHODS[0]] {
            let mut model = CausalLm::load_dir(dir, &device).unwrap();
            let options = ModelPruneOptions::new(method, Pattern::Unstructured(0.5));
            let (r, _) = prune_model(&mut model, &calib, &[], &options, &device).unwrap();
            errs.push(r.mean_recon_error().unwrap());
        }
        eprintln!("{}: sparsegpt, wanda, magnitude = {errs:?}", dir.display());
        assert!(
            errs[0] <= errs[1] && errs[0] <= errs[2],
            "{}: {errs:?}",
            dir.display()
        );
        assert!(errs[1] <= errs[2], "{}: {errs:?}", dir.display());
    }
}

/// The demo cache `cargo xtask` uses (the workspace's target directory), so tests share it.
fn workspace_demo_cache() -> std::path::PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    sparsity_demo::demo::cache_dir_in_target(&target)
}
