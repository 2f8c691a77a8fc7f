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

/// OPT and the Llama family: every site kind (the linear-layer inputs included) edits only what
/// follows it.
#[test]
fn opt_and_llama_zeroing_changes_downstream_only() {
    for name in ["opt-tiny", "llama-tiny"] {
        let m = load(name);
        check_zero(
            &m,
            "mlp_act.0",
            &["hidden_states.0", "attn_probs.0", "attn_ctx.0", "mlp_in.0"],
            &[
                "block_out.0",
                "attn_in.1",
                "attn_probs.1",
                "mlp_act.1",
                "hidden_states.2",
            ],
        );
        check_zero(
            &m,
            "attn_probs.1",
            &["block_out.0", "mlp_act.0", "attn_in.1"],
            &["attn_ctx.1", "mlp_in.1", "mlp_act.1", "block_out.1"],
        );
        check_zero(
            &m,
            "attn_in.0",
            &["hidden_states.0"],
            &["attn_probs.0", "attn_ctx.0", "mlp_act.0", "block_out.1"],
        );
    }
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
    for (name, site) in [
        ("gpt2-tiny", "mlp_act.0"),
        ("mamba-tiny", "mixer_gated.1"),
        ("llama-tiny", "attn_ctx.1"),
    ] {
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
