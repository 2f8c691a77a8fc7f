//! Invariants on random configurations (no reference implementation needed): save → load round trip,
//! batching, padding on either side, determinism of init, autodiff.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

mod common;

use sparsity_models::text::{BatchOptions, PaddedBatch, PaddingSide};
use sparsity_models::util::tensor_to_vec;
use sparsity_models::{
    Batch, Capture, CausalLm, Gpt2, Gpt2Config, Llama, LlamaConfig, Mamba, MambaConfig, Opt,
    OptConfig, TimeStepRank, cpu_device,
};

fn gpt2_configs() -> Vec<Gpt2Config> {
    vec![
        Gpt2Config {
            vocab_size: 37,
            n_positions: 20,
            n_embd: 12,
            n_layer: 2,
            n_head: 3,
            activation_function: "gelu".into(),
            ..Default::default()
        },
        Gpt2Config {
            vocab_size: 29,
            n_positions: 16,
            n_embd: 16,
            n_layer: 3,
            n_head: 2,
            n_inner: Some(24),
            activation_function: "gelu_new".into(),
            tie_word_embeddings: false,
            scale_attn_by_inverse_layer_idx: true,
            ..Default::default()
        },
    ]
}

fn mamba_configs() -> Vec<MambaConfig> {
    vec![
        MambaConfig {
            vocab_size: 31,
            hidden_size: 12,
            state_size: 3,
            num_hidden_layers: 2,
            conv_kernel: 3,
            time_step_rank: TimeStepRank::Explicit(2),
            use_bias: true,
            use_conv_bias: false,
            ..Default::default()
        },
        MambaConfig {
            vocab_size: 23,
            hidden_size: 20,
            state_size: 4,
            num_hidden_layers: 3,
            intermediate_size: Some(28),
            tie_word_embeddings: false,
            ..Default::default()
        },
    ]
}

fn opt_configs() -> Vec<OptConfig> {
    vec![
        OptConfig {
            vocab_size: 40,
            hidden_size: 16,
            num_hidden_layers: 2,
            ffn_dim: 24,
            max_position_embeddings: 32,
            num_attention_heads: 2,
            ..Default::default()
        },
        OptConfig {
            vocab_size: 37,
            hidden_size: 16,
            num_hidden_layers: 2,
            ffn_dim: 20,
            max_position_embeddings: 24,
            num_attention_heads: 4,
            do_layer_norm_before: false,
            word_embed_proj_dim: Some(12),
            tie_word_embeddings: false,
            activation_function: "gelu".into(),
            ..Default::default()
        },
    ]
}

fn llama_configs() -> Vec<LlamaConfig> {
    let base = LlamaConfig {
        vocab_size: 41,
        hidden_size: 16,
        intermediate_size: 24,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: Some(2),
        max_position_embeddings: 32,
        ..Default::default()
    };
    vec![
        LlamaConfig {
            head_dim: Some(6),
            attention_bias: true,
            mlp_bias: true,
            tie_word_embeddings: true,
            rope_parameters: Some(
                serde_json::json!({"rope_type": "llama3", "rope_theta": 500000.0,
                "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8}),
            ),
            ..base.clone()
        },
        LlamaConfig {
            model_type: "qwen2".into(),
            use_sliding_window: Some(true),
            sliding_window: Some(3),
            max_window_layers: Some(1),
            ..base.clone()
        },
        LlamaConfig {
            model_type: "mistral".into(),
            num_key_value_heads: Some(1),
            sliding_window: Some(4),
            ..base
        },
    ]
}

fn models() -> Vec<CausalLm> {
    let device = cpu_device();
    let mut out: Vec<CausalLm> = gpt2_configs()
        .iter()
        .enumerate()
        .map(|(i, c)| Gpt2::init(c, 10 + i as u64, &device).unwrap().into())
        .collect();
    out.extend(
        mamba_configs()
            .iter()
            .enumerate()
            .map(|(i, c)| CausalLm::from(Mamba::init(c, 20 + i as u64, &device).unwrap())),
    );
    out.extend(
        opt_configs()
            .iter()
            .enumerate()
            .map(|(i, c)| CausalLm::new(Opt::init(c, 30 + i as u64, &device).unwrap())),
    );
    out.extend(
        llama_configs()
            .iter()
            .enumerate()
            .map(|(i, c)| CausalLm::new(Llama::init(c, 40 + i as u64, &device).unwrap())),
    );
    out
}

fn ids(vocab: usize, n: usize, salt: usize) -> Vec<u32> {
    (0..n)
        .map(|i| ((i * 7 + salt * 13 + 3) % vocab) as u32)
        .collect()
}

fn logits_vec(model: &CausalLm, batch: &Batch) -> Vec<f32> {
    tensor_to_vec(&model.logits(batch).unwrap()).unwrap()
}

#[test]
fn save_load_round_trip_gives_identical_logits() {
    let device = cpu_device();
    for model in models() {
        let dir = tempfile::tempdir().unwrap();
        model.save_pretrained(dir.path()).unwrap();
        let back = CausalLm::load_dir(dir.path(), &device).unwrap();
        assert_eq!(
            back.config().to_json_string().unwrap(),
            model.config().to_json_string().unwrap()
        );
        let v = model.vocab_size();
        let seq: Vec<i64> = ids(v, 9, 1).into_iter().map(i64::from).collect();
        let batch = Batch::from_ids(&seq, 1, 9, &device).unwrap();
        assert_eq!(
            logits_vec(&model, &batch),
            logits_vec(&back, &batch),
            "{:?}",
            model.family()
        );
    }
}

#[test]
fn init_is_deterministic_per_seed() {
    let device = cpu_device();
    let c = &gpt2_configs()[0];
    let a = CausalLm::from(Gpt2::init(c, 5, &device).unwrap());
    let b = CausalLm::from(Gpt2::init(c, 5, &device).unwrap());
    let d = CausalLm::from(Gpt2::init(c, 6, &device).unwrap());
    let batch = Batch::from_ids(&[1, 2, 3], 1, 3, &device).unwrap();
    assert_eq!(logits_vec(&a, &batch), logits_vec(&b, &batch));
    assert_ne!(logits_vec(&a, &batch), logits_vec(&d, &batch));
}

#[test]
fn batch_of_two_equals_two_batches_of_one() {
    let device = cpu_device();
    for model in models() {
        let v = model.vocab_size();
        let a: Vec<i64> = ids(v, 8, 1).into_iter().map(i64::from).collect();
        let b: Vec<i64> = ids(v, 8, 2).into_iter().map(i64::from).collect();
        let both: Vec<i64> = a.iter().chain(&b).copied().collect();
        let lb = logits_vec(&model, &Batch::from_ids(&both, 2, 8, &device).unwrap());
        let la = logits_vec(&model, &Batch::from_ids(&a, 1, 8, &device).unwrap());
        let lbb = logits_vec(&model, &Batch::from_ids(&b, 1, 8, &device).unwrap());
        let half = la.len();
        assert!(common::max_abs_diff(&lb[..half], &la) < 1e-5);
        assert!(common::max_abs_diff(&lb[half..], &lbb) < 1e-5);
    }
}

/// A short and a long sequence padded together: the short one's real positions equal its unpadded run,
/// for both padding sides, in logits and in every site.
#[test]
fn padded_batch_equals_unpadded_on_real_positions() {
    let device = cpu_device();
    for model in models() {
        let v = model.vocab_size();
        let short = ids(v, 5, 3);
        let long = ids(v, 11, 4);
        let vocab_sites = Capture::all();
        let alone = model
            .forward(
                &PaddedBatch::new(std::slice::from_ref(&short), &BatchOptions::default())
                    .unwrap()
                    .to_batch(&device)
                    .unwrap(),
                &vocab_sites,
                None,
            )
            .unwrap();
        let alone_logits = tensor_to_vec(&alone.logits).unwrap();
        for side in [PaddingSide::Left, PaddingSide::Right] {
            let opts = BatchOptions {
                max_length: None,
                padding_side: side,
                pad_id: model.pad_token_id(),
            };
            let pb = PaddedBatch::new(&[long.clone(), short.clone()], &opts).unwrap();
            assert_eq!(pb.lengths, vec![11, 5]);
            let out = model
                .forward(&pb.to_batch(&device).unwrap(), &vocab_sites, None)
                .unwrap();
            let lg = tensor_to_vec(&out.logits).unwrap();
            let vs = v;
            let offset = if side == PaddingSide::Left { 6 } else { 0 };
            for t in 0..5 {
                let got = &lg[(11 + offset + t) * vs..(11 + offset + t + 1) * vs];
                let want = &alone_logits[t * vs..(t + 1) * vs];
                assert!(
                    common::max_abs_diff(got, want) < 1e-5,
                    "{:?} {side:?} position {t}",
                    model.family()
                );
            }
            // per-token sites of the short row at real positions
            for (name, t) in &out.sites {
                let Some(t3) = t.as_rank3() else { continue };
                let [_, s, w] = t3.dims();
                let vals = tensor_to_vec(t3).unwrap();
                let ref_vals = alone.sites[name].to_vec().unwrap();
                for p in 0..5 {
                    let got = &vals[(s + offset + p) * w..(s + offset + p + 1) * w];
                    let want = &ref_vals[p * w..(p + 1) * w];
                    assert!(
                        common::max_abs_diff(got, want) < 1e-5,
                        "{:?} {side:?} {name} position {p}",
                        model.family()
                    );
                }
            }
        }
    }
}

#[test]
fn truncation_keeps_the_first_tokens() {
    let opts = BatchOptions {
        max_length: Some(3),
        ..Default::default()
    };
    let pb = PaddedBatch::new(&[vec![5, 6, 7, 8], vec![9]], &opts).unwrap();
    assert_eq!(pb.seq, 3);
    assert_eq!(pb.ids, vec![5, 6, 7, 9, 0, 0]);
    assert_eq!(pb.mask, vec![1.0, 1.0, 1.0, 1.0, 0.0, 0.0]);
}

#[test]
fn gradients_flow_on_an_autodiff_device() {
    let device = cpu_device().autodiff();
    for (i, c) in gpt2_configs().iter().enumerate() {
        let m = CausalLm::from(Gpt2::init(c, i as u64, &device).unwrap());
        let batch = Batch::from_ids(&[1, 2, 3, 4], 1, 4, &device).unwrap();
        let loss = m.logits(&batch).unwrap().square().sum();
        let grads = loss.backward();
        let g = m.downcast_ref::<Gpt2>().unwrap();
        let gw = g.blocks[0]
            .c_fc
            .weight
            .val()
            .grad(&grads)
            .expect("c_fc gradient");
        let total: f32 = tensor_to_vec(&gw.abs().sum()).unwrap()[0];
        assert!(total > 0.0);
    }
    for (i, c) in mamba_configs().iter().enumerate() {
        let m = Mamba::init(c, i as u64, &device).unwrap();
        let ids = burn::tensor::Tensor::<2, burn::tensor::Int>::from_data(
            burn::tensor::TensorData::new(vec![1i64, 2, 3, 4], [1, 4]),
            &device,
        );
        let loss = m.forward(ids, None).unwrap().logits.square().sum();
        let grads = loss.backward();
        let ga = m.layers[0]
            .mixer
            .a_log
            .val()
            .grad(&grads)
            .expect("A_log gradient");
        let total: f32 = tensor_to_vec(&ga.abs().sum()).unwrap()[0];
        assert!(total > 0.0);
    }
}

use sparsity_models::burn;

/// The fused inference scan equals the tensor scan (materialised states, read out with C) on a
/// shape whose channel count is not a multiple of the scan's channel block.
#[test]
fn fused_scan_equals_tensor_scan() {
    use burn::tensor::{Tensor, TensorData};
    use sparsity_models::mamba::{ScanDims, fused_scan, selective_scan};
    let device = cpu_device();
    let (b, s, e, n) = (2usize, 7usize, 70usize, 5usize);
    let val = |i: usize, salt: usize| (((i * 7919 + salt * 104_729) % 1000) as f32) / 1000.0;
    let delta: Vec<f32> = (0..b * s * e).map(|i| 0.01 + val(i, 1)).collect();
    let a: Vec<f32> = (0..e * n).map(|i| -0.1 - 3.0 * val(i, 2)).collect();
    let bm: Vec<f32> = (0..b * s * n).map(|i| val(i, 3) - 0.5).collect();
    let cm: Vec<f32> = (0..b * s * n).map(|i| val(i, 4) - 0.5).collect();
    let x: Vec<f32> = (0..b * s * e).map(|i| 2.0 * val(i, 5) - 1.0).collect();
    let dims = ScanDims { b, s, e, n };
    let fused = fused_scan(&delta, &a, &bm, &cm, &x, dims).unwrap();
    let err = fused_scan(&delta, &a[1..], &bm, &cm, &x, dims).unwrap_err();
    assert!(err.to_string().contains("`a` has 349 values"), "{err}");

    let t = |v: &[f32], shape: [usize; 4]| {
        Tensor::<4>::from_data(TensorData::new(v.to_vec(), shape), &device)
    };
    let delta4 = t(&delta, [b, s, e, 1]);
    let d_a = (delta4.clone() * t(&a, [1, 1, e, n])).exp();
    let d_bu = delta4 * t(&bm, [b, s, 1, n]) * t(&x, [b, s, e, 1]);
    let states = selective_scan(d_a, d_bu);
    let y = (states * t(&cm, [b, s, 1, n]))
        .sum_dim(3)
        .reshape([b, s, e]);
    let reference = tensor_to_vec(&y).unwrap();
    assert_eq!(fused.len(), reference.len());
    for (i, (f, r)) in fused.iter().zip(&reference).enumerate() {
        assert!(
            (f - r).abs() <= 1e-5 * (1.0 + r.abs()),
            "y[{i}]: fused {f} vs tensor {r}"
        );
    }
}

/// The polynomial exp is within 2 ulp-ish (3e-7 relative) of f64's over the range the scan uses
/// and beyond, and clamps instead of returning inf or subnormals.
#[test]
fn polynomial_exp_is_accurate() {
    use sparsity_models::mamba::exp_f32;
    let mut worst = 0f64;
    for i in 0..=200_000 {
        let x = -87.0 + 175.0 * i as f32 / 200_000.0;
        let want = f64::from(x).exp();
        let got = f64::from(exp_f32(x));
        worst = worst.max((got - want).abs() / want);
    }
    assert!(worst < 3e-7, "worst relative error {worst:e}");
    assert!(exp_f32(-1000.0) > 0.0 && exp_f32(-1000.0).is_normal());
    assert!(exp_f32(1000.0).is_finite());
    assert_eq!(exp_f32(0.0), 1.0);
}

/// A Mamba forward that records `ssm_state` (tensor scan) and one that does not (fused scan)
/// give the same logits.
#[test]
fn mamba_scan_paths_agree_on_logits() {
    let device = cpu_device();
    for (i, c) in mamba_configs().iter().enumerate() {
        let model = CausalLm::from(Mamba::init(c, 30 + i as u64, &device).unwrap());
        let seq: Vec<i64> = ids(c.vocab_size, 2 * 11, 4)
            .into_iter()
            .map(i64::from)
            .collect();
        let batch = Batch::from_ids(&seq, 2, 11, &device).unwrap();
        let fused = tensor_to_vec(
            &model
                .forward(&batch, &Capture::none(), None)
                .unwrap()
                .logits,
        )
        .unwrap();
        let sites: Vec<String> = (0..c.num_hidden_layers)
            .map(|l| format!("ssm_state.{l}"))
            .collect();
        let tensor = tensor_to_vec(
            &model
                .forward(&batch, &Capture::sites(sites), None)
                .unwrap()
                .logits,
        )
        .unwrap();
        for (f, t) in fused.iter().zip(&tensor) {
            assert!(
                (f - t).abs() <= 1e-5 * (1.0 + t.abs()),
                "fused {f} vs tensor {t}"
            );
        }
    }
}

/// GPT-2's fused causal attention (nothing recorded, no padding) equals the explicit
/// softmax path (taken when `attn_probs` is recorded) on random configurations.
#[test]
fn gpt2_fused_and_explicit_attention_agree() {
    let device = cpu_device();
    for (i, c) in gpt2_configs().iter().enumerate() {
        let model = CausalLm::from(Gpt2::init(c, 50 + i as u64, &device).unwrap());
        let seq: Vec<i64> = ids(c.vocab_size, 3 * 13, 5)
            .into_iter()
            .map(i64::from)
            .collect();
        let batch = Batch::from_ids(&seq, 3, 13, &device).unwrap();
        let fused = logits_vec(&model, &batch);
        let sites: Vec<String> = (0..c.n_layer).map(|l| format!("attn_probs.{l}")).collect();
        let explicit = tensor_to_vec(
            &model
                .forward(&batch, &Capture::sites(sites), None)
                .unwrap()
                .logits,
        )
        .unwrap();
        assert_eq!(fused.len(), explicit.len());
        for (f, e) in fused.iter().zip(&explicit) {
            assert!(
                (f - e).abs() <= 1e-5 * (1.0 + e.abs()),
                "config {i}: fused {f} vs explicit {e}"
            );
        }
    }
}
