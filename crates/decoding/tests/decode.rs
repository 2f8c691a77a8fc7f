//! The sparse decoder: TEAL thresholds reach their targets, the greedy allocation reaches each
//! layer's target, and the token-by-token CPU decoder equals the forward pass, dense and masked.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

use std::path::{Path, PathBuf};

use sparsity_models::util::tensor_to_vec;
use sparsity_models::{Batch, Capture, CausalLm, cpu_device};

fn hf(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models/tests/fixtures/hf")
        .join(name)
}

fn load(name: &str) -> CausalLm {
    let dir = if hf(name).is_dir() {
        hf(name)
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../models/tests/fixtures/hf-configs")
            .join(name)
    };
    CausalLm::load_dir(&dir, &cpu_device()).unwrap()
}

/// Every family, and the configurations beyond the fixtures: post-LN OPT with projections, sliding
/// windows shorter than the sequence, llama3 RoPE with GQA, an explicit head_dim and biases.
const DECODER_CONFIGS: [&str; 8] = [
    "gpt2-tiny",
    "mamba-tiny",
    "opt-tiny",
    "llama-tiny",
    "opt-postln-proj",
    "mistral-window",
    "qwen2-window-bf16",
    "llama3-gqa-headdim-bias",
];

/// A decoder test's model, its 12-token sequence (and as a batch), and 50 % thresholds calibrated
/// on four other sequences.
fn decoder_case(
    name: &str,
) -> (
    CausalLm,
    Vec<u32>,
    Batch,
    Vec<sparsity_decoding::sparse_decode::Thresholds>,
) {
    let device = cpu_device();
    let model = load(name);
    let v = model.vocab_size() as u32;
    let seq: Vec<u32> = (0..12u32).map(|t| (t * 53 + 7) % v).collect();
    let ids: Vec<i64> = seq.iter().map(|&t| i64::from(t)).collect();
    let b = Batch::from_ids(&ids, 1, seq.len(), &device).unwrap();
    let calib: Vec<Vec<u32>> = (0..4u32)
        .map(|i| (0..12u32).map(|t| (i * 101 + t * 29 + 3) % v).collect())
        .collect();
    let th =
        sparsity_decoding::sparse_decode::calibrate_thresholds(&model, &calib, &[0.5], 2, &device)
            .unwrap();
    (model, seq, b, th)
}

#[allow(dead_code)]
fn batch(model: &CausalLm, b: usize, s: usize) -> Batch {
    let v = model.vocab_size() as i64;
    let ids: Vec<i64> = (0..(b * s) as i64).map(|i| (i * 37 + 11) % v).collect();
    Batch::from_ids(&ids, b, s, &cpu_device()).unwrap()
}

#[test]
fn sparse_decode_thresholds_reach_their_targets() {
    use sparsity_decoding::sparse_decode::{calibrate_thresholds, mlp_input_sites, sparsity_sweep};
    let device = cpu_device();
    for name in ["gpt2-tiny", "mamba-tiny", "opt-tiny", "llama-tiny"] {
        let model = load(name);
        let v = model.vocab_size() as u32;
        let seqs = |seed: u32, n: u32| -> Vec<Vec<u32>> {
            (0..n)
                .map(|i| {
                    (0..16u32)
                        .map(|t| (seed * 7919 + i * 131 + t * 37) % v)
                        .collect()
                })
                .collect()
        };
        let calib = seqs(1, 6);
        let sites = mlp_input_sites(&model);
        // GPT-2, Mamba: the MLP's two inputs; OPT, Llama: every linear layer's input (TEAL's set:
        // attention input, attention context, MLP input, MLP activation)
        let per_layer = if name.starts_with("gpt2") || name.starts_with("mamba") {
            2
        } else {
            4
        };
        assert_eq!(
            sites.len(),
            per_layer * model.num_layers(),
            "{name}: {sites:?}"
        );
        let th = calibrate_thresholds(&model, &calib, &[0.0, 0.5], 4, &device).unwrap();
        assert!(th[0].per_site.values().all(|t| *t == 0.0));
        // on the calibration text itself, each site is masked at (almost exactly) the target when
        // masked alone
        for site in &sites {
            let tau = th[1].per_site[site];
            let ids: Vec<i64> = calib.iter().flatten().map(|&t| i64::from(t)).collect();
            let b = Batch::from_ids(&ids, 6, 16, &device).unwrap();
            let out = model
                .forward(&b, &Capture::sites([site.as_str()]), None)
                .unwrap();
            let x = out.sites[site].to_vec().unwrap();
            let frac = x.iter().filter(|a| a.abs() <= tau).count() as f64 / x.len() as f64;
            if tau == 0.0 {
                // more than half exact zeros (OPT's ReLU): τ = 0 masks exactly those
                let zeros = x.iter().filter(|a| **a == 0.0).count() as f64 / x.len() as f64;
                assert!(zeros >= 0.5 && frac == zeros, "{name} {site}: {frac}");
            } else {
                assert!(
                    (frac - 0.5).abs() <= 1.0 / x.len() as f64 + 1e-12,
                    "{name} {site}: {frac}"
                );
            }
        }
        let report =
            sparsity_sweep(&model, &calib, &seqs(2, 4), &[0.0, 0.5, 0.9], 4, &device).unwrap();
        assert_eq!(
            report.rows[0].perplexity, report.dense,
            "{name}: target 0 is dense"
        );
        // target 0 masks exact zeros only: none after GELU / SiLU, OPT's ReLU gives many
        let natural = if name == "opt-tiny" { 0.3 } else { 0.01 };
        assert!(report.rows[0].achieved_sparsity < natural, "{name}");
        let s50 = report.rows[1].achieved_sparsity;
        assert!((0.3..0.7).contains(&s50), "{name}: achieved {s50}");
        assert!(report.rows[2].achieved_sparsity > s50);
        assert_ne!(report.rows[2].perplexity, report.dense);
        assert!(sparsity_sweep(&model, &calib, &seqs(2, 4), &[1.0], 4, &device).is_err());
    }
}

/// TEAL's greedy allocation: per layer, the weight-weighted mean calibration level reaches the
/// target within one step; levels are whole steps in [0, 0.99]; a harder target never lowers a
/// site's level; the same inputs give the same thresholds; a bad step is an error.
#[test]
fn greedy_allocation_reaches_each_layers_target() {
    use sparsity_decoding::sparse_decode::{
        Allocation, calibrate_thresholds_with, mlp_input_weights, sparsity_sweep_with,
    };
    let device = cpu_device();
    for name in ["gpt2-tiny", "mamba-tiny", "opt-tiny", "llama-tiny"] {
        let model = load(name);
        let v = model.vocab_size() as u32;
        let calib: Vec<Vec<u32>> = (0..4u32)
            .map(|i| (0..12u32).map(|t| (i * 211 + t * 41 + 5) % v).collect())
            .collect();
        let step = 0.1;
        let alloc = Allocation::Greedy { step };
        let targets = [0.5, 0.0, 0.3];
        let th = calibrate_thresholds_with(&model, &calib, &targets, alloc, 2, &device).unwrap();
        assert_eq!(
            th,
            calibrate_thresholds_with(&model, &calib, &targets, alloc, 2, &device).unwrap()
        );
        assert!(th[1].per_site.values().all(|t| *t == 0.0), "{name}");
        let weights = mlp_input_weights(&model);
        let per_layer = weights.len() / model.num_layers();
        assert_eq!(weights.len(), per_layer * model.num_layers());
        for (t, target) in th.iter().zip(targets) {
            assert_eq!(t.target, target);
            for pair in weights.chunks(per_layer) {
                let total: f64 = pair.iter().map(|(_, w)| *w as f64).sum();
                let mean: f64 = pair
                    .iter()
                    .map(|(s, w)| *w as f64 * t.levels[s])
                    .sum::<f64>()
                    / total;
                assert!(
                    mean >= target - 1e-9 && mean < target + step,
                    "{name} {pair:?}: {mean} for {target}"
                );
                for (s, _) in pair {
                    let l = t.levels[s];
                    assert!((0.0..=0.99).contains(&l), "{name} {s}: {l}");
                    assert!(
                        ((l / step).round() * step - l).abs() < 1e-9,
                        "{name} {s}: {l}"
                    );
                    // nested: the 0.5 allocation is at least the 0.3 one at every site
                    assert!(th[0].levels[s] >= th[2].levels[s], "{name} {s}");
                }
            }
        }
        let report =
            sparsity_sweep_with(&model, &calib, &calib, &[0.3], alloc, 2, &device).unwrap();
        assert_eq!(report.allocation, alloc);
        let w = report.rows[0].weight_sparsity;
        assert!((0.15..0.6).contains(&w), "{name}: weight sparsity {w}");
        for bad in [0.0, -0.1, 0.6, f64::NAN] {
            let e = calibrate_thresholds_with(
                &model,
                &calib,
                &[0.5],
                Allocation::Greedy { step: bad },
                2,
                &device,
            )
            .unwrap_err();
            assert!(e.to_string().contains("step"), "{e}");
        }
    }
}

#[test]
fn cpu_decoder_equals_the_forward_pass_dense_and_masked() {
    use sparsity_decoding::decode::{Decoder, decode_sequences};
    for name in DECODER_CONFIGS {
        let (model, seq, b, th) = decoder_case(name);
        let v = model.vocab_size() as u32;
        for thresholds in [None, Some(&th[0])] {
            let iv = thresholds.map(|t| t.intervention());
            let out = model.forward(&b, &Capture::none(), iv.as_ref()).unwrap();
            let want = tensor_to_vec(&out.logits).unwrap();
            let mut dec = Decoder::new(&model, thresholds).unwrap();
            let vocab = model.vocab_size();
            for (i, &tok) in seq.iter().enumerate() {
                let got = dec.step(tok).unwrap();
                let row = &want[i * vocab..(i + 1) * vocab];
                let diff = got
                    .iter()
                    .zip(row)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                assert!(
                    diff < 1e-4,
                    "{name} masked={} step {i}: {diff}",
                    thresholds.is_some()
                );
            }
            let kept = dec.kept_inputs();
            if thresholds.is_some() {
                let frac = kept.kept as f64 / kept.total as f64;
                assert!((0.2..0.8).contains(&frac), "{name}: kept {frac}");
            } else {
                assert_eq!(kept.total, 0);
            }
            // teacher-forced perplexity equals the batched one
            let run = decode_sequences(&mut dec, std::slice::from_ref(&seq)).unwrap();
            let (nll, n) = sparsity_models::text::nll_of_logits(out.logits.clone(), &b).unwrap();
            assert_eq!(run.perplexity.tokens, n);
            assert!(
                (run.perplexity.nll_sum - nll).abs() < 1e-3 * nll.abs(),
                "{name}"
            );
        }
        let mut dec = Decoder::new(&model, None).unwrap();
        assert!(dec.step(v).is_err(), "{name}: token outside the vocabulary");
        // an out-of-vocabulary *target* (the last token) is an error too, not a panic
        let e = decode_sequences(&mut dec, &[vec![1, v]]).unwrap_err();
        assert!(e.to_string().contains(&v.to_string()), "{name}: {e}");
    }
}

/// A prompt fed at once (`prefill`: every layer over the whole prompt, the weights read once per
/// eight tokens) gives the forward pass's logits at its last token, and the steps after it continue
/// from the same caches: dense and masked on every family and configuration (Mamba through the
/// default token-by-token prefill), and bf16 weights equal to stepping them. Bad tokens are refused
/// before anything runs.
#[test]
fn prefill_equals_the_forward_pass_and_stepping_continues() {
    use sparsity_decoding::decode::{Decoder, WeightDtype};
    let max_diff = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max)
    };
    for name in DECODER_CONFIGS {
        let (model, seq, b, th) = decoder_case(name);
        let v = model.vocab_size() as u32;
        let vocab = model.vocab_size();
        for thresholds in [None, Some(&th[0])] {
            let masked = thresholds.is_some();
            let iv = thresholds.map(|t| t.intervention());
            let out = model.forward(&b, &Capture::none(), iv.as_ref()).unwrap();
            let want = tensor_to_vec(&out.logits).unwrap();
            let row = |i: usize| row_of(&want, i, vocab);
            let mut dec = Decoder::new(&model, thresholds).unwrap();
            // one token, one block of eight, a block and a part
            for split in [1, 8, 11] {
                dec.reset();
                let got = dec.prefill(&seq[..split]).unwrap();
                let diff = max_diff(&got, row(split - 1));
                assert!(
                    diff < 1e-4,
                    "{name} masked={masked} prefill {split}: {diff}"
                );
                for (i, &tok) in seq.iter().enumerate().skip(split) {
                    let diff = max_diff(&dec.step(tok).unwrap(), row(i));
                    assert!(
                        diff < 1e-4,
                        "{name} masked={masked} step {i} after prefill {split}: {diff}"
                    );
                }
            }
            // the kept-input counters count each token's own inputs, as stepping does
            dec.reset();
            dec.prefill(&seq).unwrap();
            let at_once = dec.kept_inputs();
            dec.reset();
            seq.iter().for_each(|&t| {
                dec.step(t).unwrap();
            });
            let stepped = dec.kept_inputs();
            assert_eq!(at_once.total, stepped.total, "{name}");
            assert!(
                at_once.kept.abs_diff(stepped.kept) * 100 <= stepped.total.max(1),
                "{name}: kept {} prefilled against {} stepped",
                at_once.kept,
                stepped.kept
            );
            if masked {
                assert!(stepped.total > 0 && stepped.kept < stepped.total, "{name}");
            }
        }
        // refused before anything runs: the decoder is where it was
        let mut dec = Decoder::new(&model, None).unwrap();
        assert!(dec.prefill(&[]).is_err(), "{name}: empty prompt");
        let e = dec.prefill(&[seq[0], v, seq[1]]).unwrap_err();
        assert!(e.to_string().contains(&v.to_string()), "{name}: {e}");
        let dense = model.forward(&b, &Capture::none(), None).unwrap();
        let dense = tensor_to_vec(&dense.logits).unwrap();
        let diff = max_diff(&dec.prefill(&seq[..3]).unwrap(), row_of(&dense, 2, vocab));
        assert!(diff < 1e-4, "{name}: after a refused prompt: {diff}");
        // bf16 weights: prefilling equals stepping (same rounded weights, other summation order)
        let mut half = Decoder::with_weights(&model, None, WeightDtype::Bf16).unwrap();
        let prefilled = half.prefill(&seq).unwrap();
        half.reset();
        let mut stepped = Vec::new();
        for &t in &seq {
            stepped = half.step(t).unwrap();
        }
        let diff = max_diff(&prefilled, &stepped);
        assert!(diff < 1e-4, "{name} bf16: {diff}");
    }
}

fn row_of(want: &[f32], i: usize, vocab: usize) -> &[f32] {
    &want[i * vocab..(i + 1) * vocab]
}

/// `set_thresholds` on a built decoder gives exactly what a decoder built with those thresholds
/// gives; a site missing from the thresholds is an error that changes nothing; bf16 / f16
/// weights stay within their rounding of the f32 decoder.
#[test]
fn thresholds_set_in_place_and_half_precision_weights() {
    use sparsity_decoding::decode::{Decoder, WeightDtype};
    use sparsity_decoding::sparse_decode::calibrate_thresholds;
    let device = cpu_device();
    for name in ["llama-tiny", "opt-tiny"] {
        let model = load(name);
        let v = model.vocab_size() as u32;
        let seq: Vec<u32> = (0..10u32).map(|t| (t * 71 + 5) % v).collect();
        let calib: Vec<Vec<u32>> = (0..3u32)
            .map(|i| (0..12u32).map(|t| (i * 97 + t * 31 + 1) % v).collect())
            .collect();
        let th = calibrate_thresholds(&model, &calib, &[0.5], 2, &device).unwrap();
        let run = |dec: &mut Decoder| -> Vec<f32> {
            dec.reset();
            seq.iter().flat_map(|&t| dec.step(t).unwrap()).collect()
        };
        let mut fresh = Decoder::new(&model, Some(&th[0])).unwrap();
        let mut reused = Decoder::new(&model, None).unwrap();
        let dense = run(&mut reused);
        reused.set_thresholds(Some(&th[0])).unwrap();
        assert_eq!(run(&mut fresh), run(&mut reused), "{name}");
        reused.set_thresholds(None).unwrap();
        assert_eq!(run(&mut reused), dense, "{name}: back to dense");
        let mut missing = th[0].clone();
        let first = missing.per_site.keys().next().cloned().unwrap();
        missing.per_site.remove(&first);
        let e = reused.set_thresholds(Some(&missing)).unwrap_err();
        assert!(e.to_string().contains(&first), "{e}");
        assert_eq!(
            run(&mut reused),
            dense,
            "{name}: a failed set changes nothing"
        );
        let scale = dense.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        for dtype in [WeightDtype::Bf16, WeightDtype::F16] {
            let mut half = Decoder::with_weights(&model, None, dtype).unwrap();
            let got = run(&mut half);
            let worst = got
                .iter()
                .zip(&dense)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            let tol = if dtype == WeightDtype::Bf16 {
                0.05
            } else {
                0.01
            };
            assert!(
                worst <= tol * scale,
                "{name} {dtype:?}: {worst} vs scale {scale}"
            );
            assert!(
                worst > 0.0,
                "{name} {dtype:?}: the weights were not rounded"
            );
        }
    }
}
