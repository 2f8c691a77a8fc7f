//! Interventions: edits change downstream activations, leave upstream ones bit-identical, respect channel
//! restrictions, and per-example edits equal separate runs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

mod common;

use std::collections::BTreeMap;

use sparsity_models::util::tensor_to_vec;
use sparsity_models::{
    Batch, Capture, CausalLm, Channels, Edit, Intervention, MeanSource, SiteTensor, cpu_device,
};

fn load(name: &str) -> CausalLm {
    CausalLm::load_dir(&common::hf(name), &cpu_device()).unwrap()
}

fn batch(model: &CausalLm, b: usize, s: usize) -> Batch {
    let v = model.vocab_size() as i64;
    let ids: Vec<i64> = (0..(b * s) as i64).map(|i| (i * 37 + 11) % v).collect();
    Batch::from_ids(&ids, b, s, &cpu_device()).unwrap()
}

fn values(sites: &BTreeMap<String, SiteTensor>) -> BTreeMap<String, Vec<f32>> {
    sites
        .iter()
        .map(|(k, v)| (k.clone(), v.to_vec().unwrap()))
        .collect()
}

/// Zeroing `site` leaves `upstream` sites bit-identical and changes every `downstream` site and the logits.
fn check_zero(model: &CausalLm, site: &str, upstream: &[&str], downstream: &[&str]) {
    let b = batch(model, 2, 7);
    let names: Vec<&str> = upstream
        .iter()
        .chain(downstream)
        .copied()
        .chain([site])
        .collect();
    let cap = Capture::sites(names.iter().copied());
    let clean = model.forward(&b, &cap, None).unwrap();
    let iv = Intervention::new().edit(site, Edit::Zero);
    let edited = model.forward(&b, &cap, Some(&iv)).unwrap();
    let (c, e) = (values(&clean.sites), values(&edited.sites));
    assert!(e[site].iter().all(|x| *x == 0.0), "{site} not zeroed");
    for u in upstream {
        assert_eq!(c[*u], e[*u], "{site}: upstream {u} changed");
    }
    for d in downstream {
        assert!(
            common::max_abs_diff(&c[*d], &e[*d]) > 1e-4,
            "{site}: downstream {d} unchanged"
        );
    }
    let (lc, le) = (
        tensor_to_vec(&clean.logits).unwrap(),
        tensor_to_vec(&edited.logits).unwrap(),
    );
    assert!(common::max_abs_diff(&lc, &le) > 1e-4);
}

#[test]
fn gpt2_zeroing_changes_downstream_only() {
    let m = load("gpt2-tiny");
    check_zero(
        &m,
        "mlp_act.0",
        &["hidden_states.0", "attn_probs.0"],
        &[
            "block_out.0",
            "attn_probs.1",
            "mlp_act.1",
            "block_out.1",
            "hidden_states.2",
        ],
    );
    check_zero(
        &m,
        "attn_probs.1",
        &["block_out.0", "mlp_act.0", "hidden_states.1"],
        &["mlp_act.1", "block_out.1"],
    );
    check_zero(
        &m,
        "block_out.0",
        &["mlp_act.0"],
        &["attn_probs.1", "mlp_act.1"],
    );
}

#[test]
fn mamba_zeroing_changes_downstream_only() {
    let m = load("mamba-tiny");
    check_zero(
        &m,
        "mixer_gated.0",
        &["mixer_dt.0"],
        &[
            "block_out.0",
            "mixer_dt.1",
            "mixer_gated.1",
            "hidden_states.2",
        ],
    );
    check_zero(
        &m,
        "mixer_dt.1",
        &["block_out.0", "mixer_gated.0"],
        &["mixer_gated.1", "block_out.1"],
    );
}

#[test]
fn channel_restricted_edit_touches_only_those_channels() {
    let m = load("gpt2-tiny");
    let b = batch(&m, 2, 5);
    let cap = Capture::sites(["mlp_act.0"]);
    let clean = values(&m.forward(&b, &cap, None).unwrap().sites);
    let iv = Intervention::new().edit_channels(
        "mlp_act.0",
        Edit::Scale(3.0),
        Channels::Only(vec![4, 9]),
    );
    let edited = values(&m.forward(&b, &cap, Some(&iv)).unwrap().sites);
    let (c, e) = (&clean["mlp_act.0"], &edited["mlp_act.0"]);
    let w = 256;
    for (i, (x, y)) in c.iter().zip(e).enumerate() {
        if i % w == 4 || i % w == 9 {
            assert_eq!(*y, *x * 3.0);
        } else {
            assert_eq!(x.to_bits(), y.to_bits());
        }
    }
}

#[test]
fn per_example_ablation_equals_separate_runs() {
    for (name, site) in [("gpt2-tiny", "mlp_act.0"), ("mamba-tiny", "mixer_gated.0")] {
        let m = load(name);
        let one = batch(&m, 1, 6);
        let ids = tensor_to_vec(&one.input_ids.clone().float()).unwrap();
        let ids: Vec<i64> = ids.iter().map(|x| *x as i64).collect();
        let channels = [3usize, 17, 40];
        let rep: Vec<i64> = ids
            .iter()
            .copied()
            .cycle()
            .take(ids.len() * channels.len())
            .collect();
        let three = Batch::from_ids(&rep, channels.len(), ids.len(), &cpu_device()).unwrap();
        let iv = Intervention::per_example(site, Edit::Zero, &channels);
        let batched = tensor_to_vec(
            &m.forward(&three, &Capture::none(), Some(&iv))
                .unwrap()
                .logits,
        )
        .unwrap();
        let per = batched.len() / channels.len();
        for (i, &c) in channels.iter().enumerate() {
            let single =
                Intervention::new().edit_channels(site, Edit::Zero, Channels::Only(vec![c]));
            let alone = tensor_to_vec(
                &m.forward(&one, &Capture::none(), Some(&single))
                    .unwrap()
                    .logits,
            )
            .unwrap();
            assert!(
                common::max_abs_diff(&batched[i * per..(i + 1) * per], &alone) < 1e-5,
                "{name} channel {c}"
            );
        }
        // the three ablations differ from each other
        assert!(common::max_abs_diff(&batched[..per], &batched[per..2 * per]) > 1e-6);
    }
}

#[test]
fn mean_scale_noise_and_set_edits() {
    let m = load("mamba-tiny");
    let b = batch(&m, 2, 4);
    let cap = Capture::sites(["mixer_dt.0"]);
    let clean = values(&m.forward(&b, &cap, None).unwrap().sites)["mixer_dt.0"].clone();
    let w = 128;

    // batch mean: every position holds the per-channel mean of the clean values
    let iv = Intervention::new().edit("mixer_dt.0", Edit::Mean(MeanSource::Batch));
    let got = values(&m.forward(&b, &cap, Some(&iv)).unwrap().sites)["mixer_dt.0"].clone();
    for ch in [0, 5, 127] {
        let mean: f32 = (0..8).map(|p| clean[p * w + ch]).sum::<f32>() / 8.0;
        for p in 0..8 {
            assert!((got[p * w + ch] - mean).abs() < 1e-6);
        }
    }
    // given means
    let given: Vec<f32> = (0..w).map(|i| i as f32 * 0.01).collect();
    let iv = Intervention::new().edit("mixer_dt.0", Edit::Mean(MeanSource::Given(given.clone())));
    let got = values(&m.forward(&b, &cap, Some(&iv)).unwrap().sites)["mixer_dt.0"].clone();
    assert_eq!(&got[w..2 * w], &given[..]);
    // noise: deterministic per seed, different across seeds
    let noisy = |seed| {
        let iv = Intervention::new().edit("mixer_dt.0", Edit::AddNoise { std: 0.1, seed });
        values(&m.forward(&b, &cap, Some(&iv)).unwrap().sites)["mixer_dt.0"].clone()
    };
    let (n1, n1b, n2) = (noisy(1), noisy(1), noisy(2));
    assert_eq!(n1, n1b);
    assert_ne!(n1, n2);
    assert!(common::max_abs_diff(&n1, &clean) > 0.01);
    // set: a given tensor replaces the site
    let set =
        sparsity_models::loader::tensor_from_vec(vec![0.5; 2 * 4 * w], [2, 4, w], &cpu_device());
    let iv = Intervention::new().edit("mixer_dt.0", Edit::Set(SiteTensor::Rank3(set)));
    let got = values(&m.forward(&b, &cap, Some(&iv)).unwrap().sites)["mixer_dt.0"].clone();
    assert!(got.iter().all(|x| *x == 0.5));
    // set with a wrong shape is an error naming the site
    let bad = sparsity_models::loader::tensor_from_vec(vec![0.5; 4 * w], [1, 4, w], &cpu_device());
    let iv = Intervention::new().edit("mixer_dt.0", Edit::Set(SiteTensor::Rank3(bad)));
    let err = m.forward(&b, &cap, Some(&iv)).unwrap_err().to_string();
    assert!(err.contains("mixer_dt.0"), "{err}");
}

#[test]
fn invalid_interventions_are_errors() {
    let m = load("gpt2-tiny");
    let b = batch(&m, 2, 3);
    let cases = [
        Intervention::new().edit("mlp_act.7", Edit::Zero),
        Intervention::new().edit("mixer_dt.0", Edit::Zero),
        Intervention::new().edit_channels("mlp_act.0", Edit::Zero, Channels::Only(vec![256])),
        Intervention::per_example("mlp_act.0", Edit::Zero, &[1, 2, 3]),
    ];
    for iv in cases {
        assert!(
            m.forward(&b, &Capture::none(), Some(&iv)).is_err(),
            "{iv:?}"
        );
    }
    let mamba = load("mamba-tiny");
    let iv = Intervention::new().edit("ssm_state.0", Edit::Zero);
    let err = mamba
        .forward(&batch(&mamba, 1, 3), &Capture::none(), Some(&iv))
        .unwrap_err();
    assert!(err.to_string().contains("read-only"));
}

#[test]
fn ssm_state_recorded_on_request_and_consistent_with_the_scan_output() {
    let m = load("mamba-tiny");
    let b = batch(&m, 1, 5);
    let out = m.forward(&b, &Capture::all(), None).unwrap();
    assert!(!out.sites.contains_key("ssm_state.0"));
    let out = m
        .forward(&b, &Capture::sites(["ssm_state.1", "mixer_dt.1"]), None)
        .unwrap();
    assert_eq!(out.sites["ssm_state.1"].dims(), vec![1, 5, 128, 8]);
    // the state is nonzero after the first step
    let st = out.sites["ssm_state.1"].to_vec().unwrap();
    assert!(st.iter().any(|x| x.abs() > 1e-6));
}

#[test]
fn threshold_edit_zeroes_exactly_the_small_magnitudes() {
    for (name, site) in [("gpt2-tiny", "mlp_act.0"), ("mamba-tiny", "mixer_gated.1")] {
        let model = load(name);
        let b = batch(&model, 2, 6);
        let dense = model.forward(&b, &Capture::sites([site]), None).unwrap();
        let x = dense.sites[site].to_vec().unwrap();
        let mut mags: Vec<f32> = x.iter().map(|v| v.abs()).collect();
        mags.sort_by(f32::total_cmp);
        let tau = mags[mags.len() / 2];
        let iv = Intervention::new().edit(site, Edit::Threshold(tau));
        let masked = model
            .forward(&b, &Capture::sites([site]), Some(&iv))
            .unwrap();
        let y = masked.sites[site].to_vec().unwrap();
        for (a, m) in x.iter().zip(&y) {
            let want = if a.abs() <= tau { 0.0 } else { *a };
            assert_eq!(*m, want, "{name}");
        }
        // τ = 0 changes nothing (no exact zeros in these activations)
        let iv0 = Intervention::new().edit(site, Edit::Threshold(0.0));
        let same = model.forward(&b, &Capture::none(), Some(&iv0)).unwrap();
        assert_eq!(same.logits.to_data(), dense.logits.to_data(), "{name}");
        let bad = Intervention::new().edit(site, Edit::Threshold(f32::NAN));
        assert!(model.forward(&b, &Capture::none(), Some(&bad)).is_err());
    }
}

#[test]
fn sparse_decode_thresholds_reach_their_targets() {
    use sparsity_models::sparse_decode::{calibrate_thresholds, mlp_input_sites, sparsity_sweep};
    let device = cpu_device();
    for name in ["gpt2-tiny", "mamba-tiny"] {
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
        assert_eq!(sites.len(), 2 * model.num_layers());
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
            assert!(
                (frac - 0.5).abs() <= 1.0 / x.len() as f64 + 1e-12,
                "{name} {site}: {frac}"
            );
        }
        let report =
            sparsity_sweep(&model, &calib, &seqs(2, 4), &[0.0, 0.5, 0.9], 4, &device).unwrap();
        assert_eq!(
            report.rows[0].perplexity, report.dense,
            "{name}: target 0 is dense"
        );
        assert!(report.rows[0].achieved_sparsity < 0.01);
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
    use sparsity_models::sparse_decode::{
        Allocation, calibrate_thresholds_with, mlp_input_weights, sparsity_sweep_with,
    };
    let device = cpu_device();
    for name in ["gpt2-tiny", "mamba-tiny"] {
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
        assert_eq!(weights.len(), 2 * model.num_layers());
        for (t, target) in th.iter().zip(targets) {
            assert_eq!(t.target, target);
            for pair in weights.chunks(2) {
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
    use sparsity_models::decode::{Decoder, decode_sequences};
    use sparsity_models::sparse_decode::calibrate_thresholds;
    let device = cpu_device();
    for name in ["gpt2-tiny", "mamba-tiny"] {
        let model = load(name);
        let v = model.vocab_size() as u32;
        let seq: Vec<u32> = (0..12u32).map(|t| (t * 53 + 7) % v).collect();
        let ids: Vec<i64> = seq.iter().map(|&t| i64::from(t)).collect();
        let b = Batch::from_ids(&ids, 1, seq.len(), &device).unwrap();
        let calib: Vec<Vec<u32>> = (0..4u32)
            .map(|i| (0..12u32).map(|t| (i * 101 + t * 29 + 3) % v).collect())
            .collect();
        let th = calibrate_thresholds(&model, &calib, &[0.5], 2, &device).unwrap();
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
