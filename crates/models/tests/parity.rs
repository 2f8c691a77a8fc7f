//! Parity with transformers (fixtures/hf, recorded by transformers 5.23.0) and with the independent numpy
//! float64 forward (fixtures/random, other configurations): logits and every site within 1e-4 absolute.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{Value, max_abs_diff, read_all, split_case};
use sparsity_models::text::TextTokenizer;
use sparsity_models::{Batch, Capture, CausalLm, cpu_device};

const TOL: f32 = 1e-4;

fn check_dir(dir: &Path) {
    let device = cpu_device();
    let model = CausalLm::load_dir(dir, &device).unwrap();
    let (expected, _) = read_all(&dir.join("expected.safetensors"));
    let mut cases = 0;
    for (key, value) in &expected {
        let (name, suffix) = split_case(key);
        if name != "input_ids" {
            continue;
        }
        cases += 1;
        let Value::I64(shape, ids) = value else {
            panic!("{key} is not i64")
        };
        let batch = Batch::from_ids(ids, shape[0], shape[1], &device).unwrap();
        let out = model.forward(&batch, &Capture::all(), None).unwrap();

        // the expected site names of this case = the sites we produce (+ logits)
        let want: BTreeSet<String> = expected
            .keys()
            .filter(|k| split_case(k).1 == suffix)
            .map(|k| split_case(k).0.to_string())
            .filter(|n| n != "input_ids" && !n.starts_with("tokenizer_ids") && n != "logits")
            .collect();
        let got: BTreeSet<String> = out.sites.keys().cloned().collect();
        assert_eq!(got, want, "{}: site set of case `{suffix}`", dir.display());

        let mut worst = (0.0f32, String::new());
        let logits_key = format!("logits{suffix}");
        let Value::F32(lshape, lvals) = &expected[&logits_key] else {
            panic!()
        };
        assert_eq!(out.logits.dims().to_vec(), *lshape);
        let d = max_abs_diff(
            &sparsity_models::util::tensor_to_vec(&out.logits).unwrap(),
            lvals,
        );
        if d >= worst.0 {
            worst = (d, logits_key.clone());
        }
        // nothing recorded: GPT-2's attention takes the backend's fused causal kernel
        let plain = model.logits(&batch).unwrap();
        let d = max_abs_diff(
            &sparsity_models::util::tensor_to_vec(&plain).unwrap(),
            lvals,
        );
        if d >= worst.0 {
            worst = (d, format!("{logits_key} (no sites recorded)"));
        }
        for name in &want {
            let Value::F32(eshape, evals) = &expected[&format!("{name}{suffix}")] else {
                panic!()
            };
            let t = &out.sites[name];
            // OPT's MLP runs on the rows flattened to [batch·seq, width]; the site keeps
            // [batch, seq, width]
            let dims = t.dims();
            let flattened = dims.len() == 3 && *eshape == vec![dims[0] * dims[1], dims[2]];
            assert!(
                dims == *eshape || flattened,
                "{}: shape of {name}{suffix}: {dims:?} vs {eshape:?}",
                dir.display()
            );
            let d = max_abs_diff(&t.to_vec().unwrap(), evals);
            if d >= worst.0 {
                worst = (d, format!("{name}{suffix}"));
            }
        }
        println!("{}: worst {:.2e} at {}", dir.display(), worst.0, worst.1);
        assert!(
            worst.0 <= TOL,
            "{}: {} differs by {:.3e} > {TOL}",
            dir.display(),
            worst.1,
            worst.0
        );
    }
    assert!(cases >= 1, "{}: no input_ids case", dir.display());
}

#[test]
fn gpt2_tiny_matches_transformers() {
    check_dir(&common::hf("gpt2-tiny"));
}

#[test]
fn mamba_tiny_matches_transformers() {
    check_dir(&common::hf("mamba-tiny"));
}

#[test]
fn opt_tiny_matches_transformers() {
    check_dir(&common::hf("opt-tiny"));
}

#[test]
fn llama_tiny_matches_transformers() {
    check_dir(&common::hf("llama-tiny"));
}

#[test]
fn opt_post_ln_with_projections_matches_transformers() {
    check_dir(&common::hf_config("opt-postln-proj"));
}

#[test]
fn opt_without_biases_affine_norms_or_final_norm_matches_transformers() {
    check_dir(&common::hf_config("opt-nobias-noaffine"));
}

#[test]
fn llama3_rope_gqa_head_dim_biases_sharded_matches_transformers() {
    check_dir(&common::hf_config("llama3-gqa-headdim-bias"));
}

#[test]
fn llama_linear_rope_matches_transformers() {
    check_dir(&common::hf_config("llama-linear-rope"));
}

#[test]
fn qwen2_sliding_layers_bf16_matches_transformers() {
    check_dir(&common::hf_config("qwen2-window-bf16"));
}

#[test]
fn mistral_window_shorter_than_sequence_matches_transformers() {
    check_dir(&common::hf_config("mistral-window"));
}

#[test]
fn gpt2_gelu_untied_unprefixed_matches_numpy() {
    check_dir(&common::random("gpt2-gelu-untied"));
}

#[test]
fn gpt2_gelu_new_inverse_layer_scaling_matches_numpy() {
    check_dir(&common::random("gpt2-newgelu-invscale"));
}

#[test]
fn mamba_biases_auto_rank_kernel3_matches_numpy() {
    check_dir(&common::random("mamba-bias-auto"));
}

#[test]
fn mamba_explicit_rank_untied_matches_numpy() {
    check_dir(&common::random("mamba-rank5-untied"));
}

fn check_tokenizer(dir: &Path) {
    let (expected, meta) = read_all(&dir.join("expected.safetensors"));
    let meta = meta.unwrap();
    let fixture: serde_json::Value = serde_json::from_str(&meta["fixture"]).unwrap();
    let sentences = fixture["sentences"].as_array().unwrap();
    let tok = TextTokenizer::from_model_dir(dir).unwrap();
    assert!(!sentences.is_empty());
    for (j, s) in sentences.iter().enumerate() {
        let s = s.as_str().unwrap();
        let Value::I64(_, ids) = &expected[&format!("tokenizer_ids.{j}")] else {
            panic!()
        };
        let got: Vec<i64> = tok.encode(s).unwrap().into_iter().map(i64::from).collect();
        assert_eq!(&got, ids, "{}: sentence {j}", dir.display());
        let back = tok.decode(&tok.encode(s).unwrap()).unwrap();
        assert_eq!(back, s, "decode round trip of sentence {j}");
    }
}

#[test]
fn tokenizer_ids_match_recorded() {
    check_tokenizer(&common::hf("gpt2-tiny"));
    check_tokenizer(&common::hf("mamba-tiny"));
    check_tokenizer(&common::hf("opt-tiny"));
    check_tokenizer(&common::hf("llama-tiny"));
}
