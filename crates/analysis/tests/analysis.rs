//! The analysis stages on the tiny fixture models (saved by `transformers`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use ndarray::{Array2, Axis, s};
use sm::text::TextTokenizer;
use sm::{Batch, Capture, CausalLm, Edit, cpu_device};
use sparsity_analysis::attention::{MambaLayerAttention, rollout};
use sparsity_analysis::causal::single_neuron_impacts;
use sparsity_analysis::delta::per_text_mean_variance;
use sparsity_analysis::{AnalysisConfig, AnalysisModel, CausalMode};
use sparsity_models as sm;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models/tests/fixtures/hf")
        .join(name)
}

fn load(name: &str) -> AnalysisModel {
    let dir = fixture(name);
    AnalysisModel {
        name: name.to_string(),
        model: CausalLm::load_dir(&dir, &cpu_device()).unwrap(),
        tokenizer: TextTokenizer::from_model_dir(&dir).unwrap(),
    }
}

fn texts() -> Vec<String> {
    [
        "The river runs past the old mill.",
        "Sparse neurons fire rarely; dense ones fire often!",
        "A small model reads a short text and predicts the next token.",
        "Water boils at one hundred degrees when the pressure is normal.",
        "The quick brown fox jumps over the lazy dog near the river bank.",
        "Every layer of the network changes the residual stream a little.",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn batched_interventions_equal_one_at_a_time() {
    let device = cpu_device();
    for name in ["gpt2-tiny", "mamba-tiny"] {
        let m = load(name);
        let ids: Vec<i64> = m
            .tokenizer
            .encode(&texts()[0])
            .unwrap()
            .into_iter()
            .map(i64::from)
            .collect();
        let site = sparsity_analysis::neuron_site(&m.model, 0);
        let neurons: Vec<usize> = (0..12).collect();
        for edit in [Edit::Zero, Edit::Scale(0.1)] {
            let f = |_n: usize| Ok(edit.clone());
            let batched =
                single_neuron_impacts(&m.model, &ids, &site, &neurons, &f, 32, &device).unwrap();
            let single =
                single_neuron_impacts(&m.model, &ids, &site, &neurons, &f, 1, &device).unwrap();
            assert_eq!(batched.len(), neurons.len());
            let mut any_nonzero = false;
            for ((kb, lb), (ks, ls)) in batched.iter().zip(&single) {
                assert!(
                    (kb - ks).abs() <= 1e-6 + 1e-4 * ks.abs(),
                    "{name}: KL batched {kb} vs single {ks}"
                );
                assert!(
                    (lb - ls).abs() <= 1e-5,
                    "{name}: Δloss batched {lb} vs single {ls}"
                );
                assert!(*kb >= 0.0);
                any_nonzero |= *kb > 1e-9;
            }
            assert!(any_nonzero, "{name}: no intervention changed the output");
        }
    }
}

#[test]
fn hidden_attention_reproduces_the_scan_on_the_fixture() {
    let device = cpu_device();
    let m = load("mamba-tiny");
    let mm = m.model.downcast_ref::<sm::Mamba>().expect("not mamba");
    let ids: Vec<i64> = m
        .tokenizer
        .encode(&texts()[1])
        .unwrap()
        .into_iter()
        .map(i64::from)
        .collect();
    let len = ids.len();
    let batch = Batch::from_ids(&ids, 1, len, &device).unwrap();
    let cap = Capture::sites(["block_out.0", "mixer_gated.0", "mixer_gated.1"]);
    let out = m.model.forward(&batch, &cap, None).unwrap();
    let get = |n: &str| {
        let t = &out.sites[n];
        let d = t.dims();
        Array2::from_shape_vec((d[1], d[2]), t.to_vec().unwrap())
            .unwrap()
            .mapv(f64::from)
    };
    // layer 0's input: the embeddings
    let emb = sm::util::tensor_to_vec(&mm.embeddings.val()).unwrap();
    let hd = mm.config.hidden_size;
    let x0 = Array2::from_shape_fn((len, hd), |(t, j)| emb[ids[t] as usize * hd + j]);
    let att0 = MambaLayerAttention::compute(mm, 0, x0.view()).unwrap();
    let err0 = (&att0.gated() - &get("mixer_gated.0"))
        .mapv(f64::abs)
        .fold(0.0f64, |a, &b| a.max(b));
    assert!(err0 < 1e-4, "layer 0 reconstruction error {err0}");
    let x1 = get("block_out.0").mapv(|v| v as f32);
    let att1 = MambaLayerAttention::compute(mm, 1, x1.view()).unwrap();
    let err1 = (&att1.gated() - &get("mixer_gated.1"))
        .mapv(f64::abs)
        .fold(0.0f64, |a, &b| a.max(b));
    assert!(err1 < 1e-4, "layer 1 reconstruction error {err1}");
    // α is causal
    for d in 0..att0.alpha.dim().0 {
        for i in 0..len {
            for j in i + 1..len {
                assert_eq!(att0.alpha[[d, i, j]], 0.0);
            }
        }
    }
    // the channel-mean map is non-negative and rollout rows sum to 1
    let maps = vec![att0.channel_mean_map(), att1.channel_mean_map()];
    let r = rollout(&maps).unwrap();
    for row in r.rows() {
        assert!(
            (row.sum() - 1.0).abs() < 1e-12,
            "rollout row sums to {}",
            row.sum()
        );
        assert!(row.iter().all(|&v| v >= 0.0));
    }
    // and the rollout of the last query attends to no future position: there is none; the first query only to itself
    assert!((r[[0, 0]] - 1.0).abs() < 1e-12);
    assert!(r.slice(s![0, 1..]).iter().all(|&v| v == 0.0));
}

#[test]
fn delta_original_definition_equals_a_direct_computation() {
    let device = cpu_device();
    let m = load("mamba-tiny");
    let tok = sparsity_analysis::TokenizedTexts::new(&m.tokenizer, &texts(), 100, 64).unwrap();
    let config = AnalysisConfig {
        layers: vec![1],
        top_k: 5,
        batch_size: 4,
        ..AnalysisConfig::default()
    };
    let res = sparsity_analysis::delta::delta_sensitive(&m, &tok, &[1], &config, &device).unwrap();
    let ranking = &res[&1].rankings["mixer_output_variance"];
    // direct: one text at a time, mixer output = block_out.1 − block_out.0
    let mut means: Vec<Vec<f64>> = Vec::new();
    for seq in &tok.sequences {
        let ids: Vec<i64> = seq.iter().map(|&i| i64::from(i)).collect();
        let b = Batch::from_ids(&ids, 1, ids.len(), &device).unwrap();
        let out = m
            .model
            .forward(&b, &Capture::sites(["block_out.0", "block_out.1"]), None)
            .unwrap();
        let a = out.sites["block_out.1"].to_vec().unwrap();
        let p = out.sites["block_out.0"].to_vec().unwrap();
        let w = 64;
        let mut mean = vec![0.0f64; w];
        for t in 0..ids.len() {
            for j in 0..w {
                mean[j] += f64::from(a[t * w + j] - p[t * w + j]) / ids.len() as f64;
            }
        }
        means.push(mean);
    }
    let n = means.len() as f64;
    let var: Vec<f64> = (0..64)
        .map(|j| {
            let mu = means.iter().map(|m| m[j]).sum::<f64>() / n;
            means.iter().map(|m| (m[j] - mu).powi(2)).sum::<f64>() / n
        })
        .collect();
    let mut order: Vec<usize> = (0..64).collect();
    order.sort_by(|&a, &b| var[b].total_cmp(&var[a]).then(a.cmp(&b)));
    let got: Vec<usize> = ranking.top.iter().map(|r| r.neuron).collect();
    assert_eq!(got, order[..5].to_vec());
    for r in &ranking.top {
        assert!((r.score - var[r.neuron]).abs() <= 1e-9 + 1e-5 * var[r.neuron]);
    }
    // the helper itself on a hand-made case: texts [[1],[3]] → means 1, 3 → variance 1
    let a = Array2::from_shape_vec((1, 1), vec![1.0f32]).unwrap();
    let b = Array2::from_shape_vec((2, 1), vec![2.0f32, 4.0]).unwrap();
    let v = per_text_mean_variance(&[a.view(), b.view()]).unwrap();
    assert!((v[0] - 1.0).abs() < 1e-12);
    let _ = Axis(0);
}

#[test]
fn full_analysis_on_the_fixture_models() {
    let device = cpu_device();
    let models = vec![load("gpt2-tiny"), load("mamba-tiny")];
    let config = AnalysisConfig {
        layers: vec![0, 1],
        top_k: 5,
        enable_attention: true,
        causal_candidates: 16,
        causal_prompts: 2,
        causal_mode: CausalMode::Zero,
        ..AnalysisConfig::default()
    };
    let run = sparsity_analysis::run(&models, &texts(), &config, &device).unwrap();
    assert_eq!(run.models.len(), 2);
    for a in &run.models {
        assert!(a.failures.is_empty());
        // Ranking agreement, recomputed from the rankings themselves.
        assert!(!a.ranking_agreement.is_empty());
        assert!(a.ranking_agreement.iter().any(|g| g.spearman.is_some()));
        for g in &a.ranking_agreement {
            let top_of = |name: &str| -> Vec<usize> {
                let ids =
                    |t: &[sparsity_analysis::RankedNeuron]| t.iter().map(|r| r.neuron).collect();
                if name == "causal" {
                    ids(&a.causal.as_ref().unwrap().layers[&g.layer].top)
                } else if let Some(k) = name.strip_prefix("delta:") {
                    ids(&a.delta_sensitive.as_ref().unwrap()[&g.layer].rankings[k].top)
                } else {
                    let m = name.strip_prefix("attention:").unwrap();
                    ids(&a.attention_neurons.as_ref().unwrap().layers[&g.layer][m].top)
                }
            };
            let (x, y) = (top_of(&g.a), top_of(&g.b));
            let k = x.len().min(y.len());
            let shared = x[..k].iter().filter(|v| y[..k].contains(v)).count();
            assert_eq!((g.k, g.shared), (k, shared), "{g:?}");
            let union = 2 * k - shared;
            assert!((g.jaccard - shared as f64 / union as f64).abs() < 1e-15);
            assert!(g.chance_jaccard > 0.0 && g.chance_jaccard < 1.0);
            // Spearman, recomputed with a quadratic rank count (ties: average rank)
            let scores_of = |name: &str| -> Vec<(usize, f64)> {
                let full = |s: &[f64]| s.iter().copied().enumerate().collect::<Vec<_>>();
                if name == "causal" {
                    let lc = &a.causal.as_ref().unwrap().layers[&g.layer];
                    lc.impacts.iter().map(|i| (i.neuron, i.kl)).collect()
                } else if let Some(k) = name.strip_prefix("delta:") {
                    full(&a.delta_sensitive.as_ref().unwrap()[&g.layer].rankings[k].scores)
                } else {
                    let m = name.strip_prefix("attention:").unwrap();
                    full(&a.attention_neurons.as_ref().unwrap().layers[&g.layer][m].scores)
                }
            };
            let (sa, sb) = (scores_of(&g.a), scores_of(&g.b));
            let pairs: Vec<(f64, f64)> = sa
                .iter()
                .filter_map(|(j, v)| Some((*v, sb.iter().find(|(i, _)| i == j)?.1)))
                .collect();
            assert_eq!(g.spearman_neurons, pairs.len());
            let rank = |v: &[f64], x: f64| {
                let below = v.iter().filter(|&&y| y < x).count() as f64;
                let equal = v.iter().filter(|&&y| y == x).count() as f64;
                below + (equal + 1.0) / 2.0
            };
            let xs: Vec<f64> = pairs.iter().map(|p| p.0).collect();
            let ys: Vec<f64> = pairs.iter().map(|p| p.1).collect();
            let rx: Vec<f64> = xs.iter().map(|&x| rank(&xs, x)).collect();
            let ry: Vec<f64> = ys.iter().map(|&y| rank(&ys, y)).collect();
            let n = rx.len() as f64;
            let (mx, my) = (rx.iter().sum::<f64>() / n, ry.iter().sum::<f64>() / n);
            let cov: f64 = rx.iter().zip(&ry).map(|(x, y)| (x - mx) * (y - my)).sum();
            let vx: f64 = rx.iter().map(|x| (x - mx).powi(2)).sum();
            let vy: f64 = ry.iter().map(|y| (y - my).powi(2)).sum();
            match g.spearman {
                Some(r) => assert!((r - cov / (vx * vy).sqrt()).abs() < 1e-12, "{g:?}"),
                None => assert!(vx == 0.0 || vy == 0.0 || pairs.len() < 3, "{g:?}"),
            }
        }
        let sp = a.sparsity.as_ref().unwrap();
        assert_eq!(sp.layer_dynamics.len(), 2);
        assert_eq!(sp.layers.len(), 2);
        // The threshold sweep agrees with the report's traditional sparsity at the family's
        // threshold (a grid point: 1e-5 for GPT-2, 1e-2 for Mamba) and is monotone.
        for ls in sp.layers.values() {
            for site in [&ls.block_out, &ls.neurons] {
                let s = &site.threshold_sweep;
                assert_eq!(s.thresholds.len(), 33);
                let i = s
                    .thresholds
                    .iter()
                    .position(|&t| t == sp.threshold)
                    .unwrap();
                let trad = &site.per_sequence_mean.traditional;
                assert_eq!(trad.threshold, sp.threshold);
                assert_eq!(s.per_sequence_mean[i], trad.sparsity, "{}", site.site);
                assert!(s.per_sequence_mean.windows(2).all(|w| w[0] <= w[1]));
                assert!(s.per_token.windows(2).all(|w| w[0] <= w[1]));
            }
        }
        let c = a.causal.as_ref().unwrap();
        for lc in c.layers.values() {
            assert_eq!(lc.impacts.len(), 16);
            assert!(lc.top.windows(2).all(|w| w[0].score >= w[1].score));
            assert!(lc.perplexity_clean > 1.0);
            // inter-layer impact: later layers only, and the ablated layer itself changes
            assert_eq!(lc.inter_layer_impact.len(), 2);
        }
        assert!(
            c.cross_layer.values[1][0].is_none(),
            "layer 0 cannot change when ablating layer 1"
        );
        let at = a.attention_neurons.as_ref().unwrap();
        assert_eq!(at.layers[&0].len(), 3);
        if a.family == "mamba" {
            assert!(at.scan_reconstruction_max_abs_error.unwrap() < 1e-4);
            let ds = &a.delta_sensitive.as_ref().unwrap()[&0];
            for k in [
                "mixer_output_variance",
                "legacy_pre_softplus_delta",
                "delta_variance",
                "delta_activation_correlation",
                "delta_intervention",
                "permutation",
            ] {
                assert!(ds.rankings.contains_key(k), "missing {k}");
            }
        }
        let e = a.efficiency.as_ref().unwrap();
        assert!(e.total_parameters > 0 && e.tokens_per_second > 0.0);
    }
    let dir = tempfile::tempdir().unwrap();
    let files = sparsity_analysis::write_report(
        dir.path(),
        &dir.path().join("plots"),
        &run.models,
        &run.comparison,
        "r.json",
        "six test sentences",
    )
    .unwrap();
    let md = std::fs::read_to_string(&files.markdown).unwrap();
    assert!(md.contains("on these texts: six test sentences"));
    neuron_comparison_agrees_with_its_layers(&run, &md);
    assert!(md.contains("## gpt2-tiny") && md.contains("## mamba-tiny"));
    for p in &files.plots {
        assert!(
            std::fs::metadata(p).unwrap().len() > 1000,
            "{} is empty",
            p.display()
        );
    }
}

#[test]
fn noise_ablation_uses_each_neurons_own_sigma_and_rejects_unknown_neurons() {
    use sparsity_analysis::causal::{ChannelStats, mode_edit};
    let stats = ChannelStats {
        mean: vec![0.0, 1.0],
        std: vec![0.5, 2.0],
    };
    match mode_edit(CausalMode::Noise, &stats, 1, 9).unwrap() {
        Edit::AddNoise { std, seed } => assert_eq!((std, seed), (2.0, 9)),
        other => panic!("expected noise, got {other:?}"),
    }
    let err = mode_edit(CausalMode::Noise, &stats, 5, 9)
        .unwrap_err()
        .to_string();
    assert!(err.contains("neuron 5"), "{err}");
}

/// A copy of the gpt2-tiny fixture whose layer-0 MLP is rewritten by `edit(c_fc.weight [64, 256],
/// c_fc.bias [256], c_proj.weight [256, 64])`.
fn edited_gpt2(
    edit: impl Fn(&mut ndarray::ArrayD<f32>, &mut ndarray::ArrayD<f32>, &mut ndarray::ArrayD<f32>),
) -> (tempfile::TempDir, AnalysisModel) {
    use sparsity_io::tensors::{OutTensor, SafetensorsFile, write_safetensors};
    let src = fixture("gpt2-tiny");
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let file = SafetensorsFile::open(&src.join("model.safetensors")).unwrap();
    let mut tensors: BTreeMap<String, ndarray::ArrayD<f32>> = file
        .names()
        .into_iter()
        .map(|n| {
            let a = file.array_f32(&n).unwrap();
            (n, a)
        })
        .collect();
    let mut w_fc = tensors.remove("transformer.h.0.mlp.c_fc.weight").unwrap();
    let mut b_fc = tensors.remove("transformer.h.0.mlp.c_fc.bias").unwrap();
    let mut w_proj = tensors.remove("transformer.h.0.mlp.c_proj.weight").unwrap();
    edit(&mut w_fc, &mut b_fc, &mut w_proj);
    tensors.insert("transformer.h.0.mlp.c_fc.weight".into(), w_fc);
    tensors.insert("transformer.h.0.mlp.c_fc.bias".into(), b_fc);
    tensors.insert("transformer.h.0.mlp.c_proj.weight".into(), w_proj);
    let out: Vec<(String, OutTensor)> = tensors
        .into_iter()
        .map(|(n, a)| (n, OutTensor::F32(a)))
        .collect();
    write_safetensors(&dir.path().join("model.safetensors"), &out, None).unwrap();
    let model = AnalysisModel {
        name: "edited".into(),
        model: CausalLm::load_dir(dir.path(), &cpu_device()).unwrap(),
        tokenizer: TextTokenizer::from_model_dir(dir.path()).unwrap(),
    };
    (dir, model)
}

fn causal_only(top_k: usize) -> AnalysisConfig {
    AnalysisConfig {
        layers: vec![0],
        top_k,
        causal_candidates: 0,
        causal_prompts: 6,
        causal_mode: CausalMode::Zero,
        ..AnalysisConfig::default()
    }
}

/// One planted neuron carries layer 0's MLP output: it ranks first, and ablating it changes the
/// next-token distribution more than every one of the 99 random neurons does (p = 1/100).
#[test]
fn a_planted_neuron_ranks_first_and_beats_every_random_draw() {
    const J: usize = 17;
    let (_dir, m) = edited_gpt2(|w_fc, b_fc, w_proj| {
        for i in 0..64 {
            w_fc[[i, J]] *= 4.0;
        }
        b_fc[[J]] = 2.0;
        for o in 0..64 {
            w_proj[[J, o]] *= 60.0;
        }
    });
    let device = cpu_device();
    let config = causal_only(1);
    let tok = sparsity_analysis::TokenizedTexts::new(&m.tokenizer, &texts(), 100, 64).unwrap();
    let c = sparsity_analysis::causal::causal_neurons(&m, &tok, &[0], &config, &device).unwrap();
    let l = &c.layers[&0];
    assert_eq!(l.top[0].neuron, J, "{:?}", &l.impacts[..3]);
    let b = l.random_baseline.as_ref().unwrap();
    assert_eq!(b.random_effects.len(), 99);
    assert!(
        b.random_effects.iter().all(|&e| e < b.top_effect),
        "{} vs {:?}",
        b.top_effect,
        b.random_effects
    );
    assert_eq!(b.draws_at_least_top, 0);
    assert!((b.p_value - 0.01).abs() < 1e-15);
    assert!(
        b.significant && b.multiple_of_random.unwrap() > 10.0,
        "{b:?}"
    );
    // Independent recomputation of the top effect: mean KL at the last position of zeroing J.
    let prompts: Vec<Vec<i64>> = tok
        .sequences
        .iter()
        .take(6)
        .map(|s| s.iter().map(|&i| i64::from(i)).collect())
        .collect();
    let mut kl = 0.0;
    for p in &prompts {
        let r = sparsity_analysis::causal::single_neuron_impacts(
            &m.model,
            p,
            "mlp_act.0",
            &[J],
            &|_| Ok(Edit::Zero),
            1,
            &device,
        )
        .unwrap();
        kl += r[0].0 / prompts.len() as f64;
    }
    assert!(
        (kl - b.top_effect).abs() <= 1e-6 * kl.max(1e-12),
        "{kl} vs {}",
        b.top_effect
    );
    // Seeded: the same run gives the same draws.
    let again =
        sparsity_analysis::causal::causal_neurons(&m, &tok, &[0], &config, &device).unwrap();
    assert_eq!(again.layers[&0].random_baseline.as_ref(), Some(b));
}

/// Every neuron of layer 0's MLP is the same neuron: the top-k set is no more important than a
/// random set of others, and nothing is flagged.
#[test]
fn with_no_special_neuron_the_top_set_is_not_significant() {
    let (_dir, m) = edited_gpt2(|w_fc, b_fc, w_proj| {
        for i in 0..64 {
            let v = w_fc[[i, 0]];
            for j in 0..256 {
                w_fc[[i, j]] = v;
            }
        }
        let b0 = b_fc[[0]];
        b_fc.fill(b0);
        for o in 0..64 {
            let v = w_proj[[0, o]] / 16.0;
            for j in 0..256 {
                w_proj[[j, o]] = v;
            }
        }
    });
    let device = cpu_device();
    let tok = sparsity_analysis::TokenizedTexts::new(&m.tokenizer, &texts(), 100, 64).unwrap();
    let c = sparsity_analysis::causal::causal_neurons(&m, &tok, &[0], &causal_only(3), &device)
        .unwrap();
    let b = c.layers[&0].random_baseline.as_ref().unwrap();
    assert!(!b.significant, "{b:?}");
    assert!(b.p_holm >= 0.05);
    // The sets are interchangeable: every effect equals the top set's up to rounding.
    for e in &b.random_effects {
        assert!(
            (e - b.top_effect).abs() <= 1e-4 * b.top_effect.max(1e-12),
            "{e} vs {}",
            b.top_effect
        );
    }
}

/// Random sets: k distinct neurons each, none from the excluded set, the same for the same seed.
#[test]
fn random_sets_are_seeded_distinct_and_avoid_the_top_set() {
    use sparsity_analysis::causal::random_sets;
    let top = [3, 7, 11];
    let sets = random_sets(40, &top, 3, 50, 9);
    assert_eq!(sets.len(), 50);
    for s in &sets {
        assert_eq!(s.len(), 3);
        assert!(s.windows(2).all(|w| w[0] < w[1]), "{s:?}");
        assert!(s.iter().all(|n| *n < 40 && !top.contains(n)), "{s:?}");
    }
    assert_eq!(sets, random_sets(40, &top, 3, 50, 9));
    assert_ne!(sets, random_sets(40, &top, 3, 50, 10));
}

/// The neuron-level comparison of a run: every summarised direction has the sign of every matched
/// pair it summarises, every pair's values are the per-model curve values at those layers (the
/// plot's data), the analysed layers' Hoyer equals the per-layer table's (computed by a different
/// path: streaming `NeuronStats`), and every sentence is in the report.
fn neuron_comparison_agrees_with_its_layers(run: &sparsity_analysis::AnalysisRun, md: &str) {
    let d = run
        .comparison
        .neurons
        .as_ref()
        .expect("two models: a comparison");
    assert_eq!(d.resamples, 1000);
    assert!(md.contains("## Answers") && md.contains("Neuron_Sparsity_by_Depth.png"));
    assert!(md.find("## Answers").unwrap() < md.find("## Models").unwrap());
    for (curves, a) in d.models.iter().zip(&run.models) {
        assert_eq!(curves.layers.len(), a.num_layers);
        let sp = a.sparsity.as_ref().unwrap();
        for (l, ls) in &sp.layers {
            let table = ls.neurons.per_sequence_mean.hoyer.hoyer_sparsity;
            let h = curves.layers[*l].values["hoyer"];
            assert!(
                (h.value - table).abs() < 1e-9,
                "{} L{l}: {} vs {table}",
                a.model,
                h.value
            );
            assert!(h.lo <= h.hi);
            let g = curves.layers[*l].values["gini"].value;
            assert!((g - ls.neurons.per_sequence_mean.gini.sparsity_from_gini).abs() < 1e-9);
        }
    }
    let c = &d.comparisons[0];
    let (ca, cb) = (&d.models[0], &d.models[1]);
    for m in &c.summary {
        assert!(md.contains(&m.sentence), "sentence missing: {}", m.sentence);
        assert!(run.comparison.summary.contains(&m.sentence));
        let mut signs = Vec::new();
        for p in &c.pairs {
            let va = ca.layers[p.layer_a].values.get(&m.measure);
            let vb = cb.layers[p.layer_b].values.get(&m.measure);
            if let Some(x) = p.differences.get(&m.measure) {
                assert_eq!(x.a, va.unwrap().value);
                assert_eq!(x.b, vb.unwrap().value);
                assert!((x.difference.value - (x.a - x.b)).abs() < 1e-15);
                if let Some(s) = &x.sparser {
                    let sign = if *s == c.a { 1.0 } else { -1.0 };
                    assert!(sign * x.difference.lo > 0.0 && sign * x.difference.hi > 0.0);
                }
                signs.push(x.a - x.b);
            }
        }
        match (&m.sparser, m.difference) {
            (Some(s), Some(e)) => {
                let sign = if *s == c.a { 1.0 } else { -1.0 };
                assert!(
                    signs.iter().all(|&x| sign * x > 0.0),
                    "{}: {signs:?}",
                    m.measure
                );
                assert!(sign * e.lo > 0.0 && sign * e.value > 0.0);
                let mean = signs.iter().sum::<f64>() / signs.len() as f64;
                assert!((mean - e.value).abs() < 1e-12);
            }
            (Some(_), None) => panic!("a direction without an interval"),
            (None, _) => {}
        }
        if m.measure == "traditional" {
            // the families' default thresholds differ (1e-5 vs 0.01): never a verdict
            assert!(!m.comparable && m.sparser.is_none() && m.difference.is_none());
            assert!(m.sentence.contains("not comparable"));
        }
    }
}
