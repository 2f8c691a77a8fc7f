//! Text sources, perplexity (token-weighted, padding excluded) and the dump file format.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

mod common;

use common::{Value, max_abs_diff, read_all, split_case};
use sparsity_models::text::{TextTokenizer, perplexity, perplexity_of_sequences, read_texts};
use sparsity_models::util::tensor_to_vec;
use sparsity_models::{Batch, CausalLm, cpu_device};

#[test]
fn text_sources() {
    let t = tempfile::tempdir().unwrap();
    let txt = t.path().join("a.txt");
    std::fs::write(&txt, "first line\n\n  \nsecond line\n").unwrap();
    assert_eq!(read_texts(&txt).unwrap(), vec!["first line", "second line"]);
    let jsonl = t.path().join("a.jsonl");
    std::fs::write(
        &jsonl,
        "{\"text\": \"one\", \"id\": 1}\n\n{\"text\": \"two\\nlines\"}\n",
    )
    .unwrap();
    assert_eq!(read_texts(&jsonl).unwrap(), vec!["one", "two\nlines"]);
}

/// Reference NLL of one unpadded sequence from its own logits.
fn manual_nll(model: &CausalLm, ids: &[u32]) -> (f64, usize) {
    let d = cpu_device();
    let ids64: Vec<i64> = ids.iter().map(|&x| i64::from(x)).collect();
    let b = Batch::from_ids(&ids64, 1, ids.len(), &d).unwrap();
    let logits = tensor_to_vec(&model.logits(&b).unwrap()).unwrap();
    let v = model.vocab_size();
    let mut nll = 0.0f64;
    for t in 0..ids.len() - 1 {
        let row = &logits[t * v..(t + 1) * v];
        let m = row.iter().copied().fold(f32::MIN, f32::max) as f64;
        let lse = m + row.iter().map(|x| (*x as f64 - m).exp()).sum::<f64>().ln();
        nll += lse - row[ids[t + 1] as usize] as f64;
    }
    (nll, ids.len() - 1)
}

#[test]
fn perplexity_is_token_weighted_and_ignores_padding() {
    let d = cpu_device();
    for name in ["gpt2-tiny", "mamba-tiny", "opt-tiny", "llama-tiny"] {
        let dir = common::hf(name);
        let model = CausalLm::load_dir(&dir, &d).unwrap();
        let tok = TextTokenizer::from_model_dir(&dir).unwrap();
        let texts: Vec<String> = [
            "The river runs past the old mill.",
            "Sparse neurons fire rarely; dense ones fire often!",
            "A short one.",
        ]
        .map(String::from)
        .to_vec();
        let seqs: Vec<Vec<u32>> = texts.iter().map(|t| tok.encode(t).unwrap()).collect();
        let (mut nll, mut n) = (0.0, 0);
        for s in &seqs {
            let (a, b) = manual_nll(&model, s);
            nll += a;
            n += b;
        }
        let batched = perplexity_of_sequences(&model, &seqs, 3, None, &d).unwrap();
        let single = perplexity_of_sequences(&model, &seqs, 1, None, &d).unwrap();
        let from_text = perplexity(&model, &tok, &texts, 2, None, &d).unwrap();
        assert_eq!(batched.tokens, n);
        assert!(
            (batched.nll_sum - nll).abs() < 1e-3 * n as f64,
            "{name}: {} vs {nll}",
            batched.nll_sum
        );
        assert!((single.perplexity - batched.perplexity).abs() < 1e-4 * batched.perplexity);
        assert!((from_text.perplexity - batched.perplexity).abs() < 1e-4 * batched.perplexity);
        assert!((batched.perplexity - (nll / n as f64).exp()).abs() < 1e-3 * batched.perplexity);
    }
}

#[test]
fn dump_writes_fixture_names_and_values() {
    let d = cpu_device();
    for name in ["gpt2-tiny", "mamba-tiny", "opt-tiny", "llama-tiny"] {
        let dir = common::hf(name);
        let model = CausalLm::load_dir(&dir, &d).unwrap();
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("dump.safetensors");
        let expected_path = dir.join("expected.safetensors");
        let summary = sparsity_models::dump::dump(&model, &expected_path, &out, false, &d).unwrap();
        assert_eq!(summary.cases, 2);
        let (got, _) = read_all(&out);
        let (want, _) = read_all(&expected_path);
        let want_names: Vec<&String> = want
            .keys()
            .filter(|k| {
                let n = split_case(k).0;
                n != "input_ids" && !n.starts_with("tokenizer_ids")
            })
            .collect();
        let got_names: Vec<&String> = got.keys().collect();
        assert_eq!(got_names, want_names, "{name}");
        for k in want_names {
            let (Value::F32(s1, v1), Value::F32(s2, v2)) = (&got[k], &want[k]) else {
                panic!("{k}")
            };
            assert_eq!(s1, s2, "{k}");
            assert!(max_abs_diff(v1, v2) <= 1e-4, "{name} {k}");
        }
    }
}

#[test]
fn dump_rejects_bad_ids_file() {
    let d = cpu_device();
    let model = CausalLm::load_dir(&common::hf("gpt2-tiny"), &d).unwrap();
    let t = tempfile::tempdir().unwrap();
    // an f32 input_ids tensor is a dtype error naming the tensor
    let path = t.path().join("ids.safetensors");
    let data = vec![0u8; 8];
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1, 2], &data).unwrap();
    std::fs::write(
        &path,
        safetensors::serialize([("input_ids", view)], None).unwrap(),
    )
    .unwrap();
    let e = sparsity_models::dump::dump(&model, &path, &t.path().join("o.safetensors"), false, &d)
        .unwrap_err();
    assert!(
        e.to_string().contains("input_ids") && e.to_string().contains("F32"),
        "{e}"
    );
    assert!(!t.path().join("o.safetensors").exists());
}
