#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! DeepSeek sparse attention: causality for every keep ratio, keep 1.0 = dense exactly, gather =
//! masked dense, no future keys, top-k = brute-force sort, detached indexer, training.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sparsity_demo::train::{TrainConfig, train};
use sparsity_models::burn::tensor::{Int, Tensor, TensorData};
use sparsity_models::dsa::{
    AttentionMode, DsaConfig, DsaTransformer, IndexerTraining, SparseImpl, select_top_k,
};
use sparsity_models::util::tensor_to_vec;
use sparsity_models::{ModelError, cpu_device};

fn config() -> DsaConfig {
    DsaConfig {
        vocab_size: 40,
        max_seq_len: 40,
        d_model: 16,
        n_heads: 2,
        n_layers: 2,
        d_ff: 32,
        index_heads: 2,
        index_dim: 8,
        layer_norm_eps: 1e-5,
    }
}

fn ids(values: &[i64], batch: usize) -> Tensor<2, Int> {
    let seq = values.len() / batch;
    Tensor::from_data(
        TensorData::new(values.to_vec(), [batch, seq]),
        &cpu_device(),
    )
}

fn random_ids(n: usize, vocab: usize, seed: u64) -> Vec<i64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(0..vocab as i64)).collect()
}

fn modes() -> Vec<AttentionMode> {
    let mut m = vec![AttentionMode::Dense];
    for keep in [0.1, 0.25, 0.5, 0.75, 1.0] {
        for implementation in [SparseImpl::Gather, SparseImpl::MaskedDense] {
            m.push(AttentionMode::Sparse {
                keep_ratio: keep,
                implementation,
            });
        }
    }
    m
}

#[test]
fn outputs_before_a_changed_token_are_bit_identical_for_every_keep_ratio() {
    let cfg = config();
    let model = DsaTransformer::init(&cfg, AttentionMode::Dense, 3, &cpu_device()).unwrap();
    let len = 24;
    let base = random_ids(2 * len, cfg.vocab_size, 1);
    for t in [0usize, 3, 11, 23] {
        let mut changed = base.clone();
        for b in 0..2 {
            changed[b * len + t] = (changed[b * len + t] + 7) % cfg.vocab_size as i64;
        }
        for mode in modes() {
            let a =
                tensor_to_vec(&model.forward(ids(&base, 2), mode, false).unwrap().logits).unwrap();
            let c = tensor_to_vec(&model.forward(ids(&changed, 2), mode, false).unwrap().logits)
                .unwrap();
            let v = cfg.vocab_size;
            for b in 0..2 {
                for pos in 0..t {
                    let row = (b * len + pos) * v;
                    assert_eq!(
                        a[row..row + v],
                        c[row..row + v],
                        "{mode:?}: output at {pos} changed when token {t} changed"
                    );
                }
                // and the change is visible at t itself (the test can fail)
                let row = (b * len + t) * v;
                assert_ne!(
                    a[row..row + v],
                    c[row..row + v],
                    "{mode:?}: token {t} ignored"
                );
            }
        }
    }
}

#[test]
fn keep_ratio_one_equals_dense_exactly() {
    let cfg = config();
    let model = DsaTransformer::init(&cfg, AttentionMode::Dense, 5, &cpu_device()).unwrap();
    let x = random_ids(3 * 17, cfg.vocab_size, 2);
    let dense = tensor_to_vec(
        &model
            .forward(ids(&x, 3), AttentionMode::Dense, false)
            .unwrap()
            .logits,
    )
    .unwrap();
    for implementation in [SparseImpl::Gather, SparseImpl::MaskedDense] {
        let mode = AttentionMode::Sparse {
            keep_ratio: 1.0,
            implementation,
        };
        let sparse =
            tensor_to_vec(&model.forward(ids(&x, 3), mode, false).unwrap().logits).unwrap();
        assert_eq!(dense, sparse, "{implementation:?}");
    }
    // and a real sparse ratio does change them
    let sparse = tensor_to_vec(
        &model
            .forward(ids(&x, 3), AttentionMode::sparse(0.25), false)
            .unwrap()
            .logits,
    )
    .unwrap();
    assert_ne!(dense, sparse);
}

#[test]
fn gather_equals_masked_dense() {
    let cfg = config();
    let model = DsaTransformer::init(&cfg, AttentionMode::Dense, 9, &cpu_device()).unwrap();
    // 150 > the gather chunk of 128 queries would need max_seq_len ≥ 150: use a longer config.
    let long = DsaConfig {
        max_seq_len: 160,
        ..cfg.clone()
    };
    let long_model = DsaTransformer::init(&long, AttentionMode::Dense, 9, &cpu_device()).unwrap();
    for (m, len) in [(&model, 31usize), (&long_model, 150)] {
        let x = random_ids(2 * len, cfg.vocab_size, len as u64);
        for keep in [0.05, 0.3, 0.5, 0.9] {
            let g = m
                .forward(
                    ids(&x, 2),
                    AttentionMode::Sparse {
                        keep_ratio: keep,
                        implementation: SparseImpl::Gather,
                    },
                    true,
                )
                .unwrap();
            let d = m
                .forward(
                    ids(&x, 2),
                    AttentionMode::Sparse {
                        keep_ratio: keep,
                        implementation: SparseImpl::MaskedDense,
                    },
                    true,
                )
                .unwrap();
            assert_eq!(g.selections, d.selections);
            let gl = tensor_to_vec(&g.logits).unwrap();
            let dl = tensor_to_vec(&d.logits).unwrap();
            for (a, b) in gl.iter().zip(&dl) {
                assert!(
                    (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                    "{a} vs {b} (keep {keep}, L {len})"
                );
            }
            let gk: f32 = g.indexer_loss.unwrap().into_scalar();
            let dk: f32 = d.indexer_loss.unwrap().into_scalar();
            assert!(
                gk >= 0.0 && (gk - dk).abs() <= 1e-4 * (1.0 + dk.abs()),
                "KL {gk} vs {dk}"
            );
        }
    }
}

#[test]
fn selections_never_include_future_positions() {
    let cfg = config();
    let model = DsaTransformer::init(&cfg, AttentionMode::Dense, 11, &cpu_device()).unwrap();
    let len = 37;
    let x = random_ids(2 * len, cfg.vocab_size, 4);
    for keep in [0.02, 0.2, 0.5, 0.8, 0.99] {
        let out = model
            .forward(ids(&x, 2), AttentionMode::sparse(keep), false)
            .unwrap();
        let k = ((len as f64 * keep).floor() as usize).max(1);
        assert_eq!(out.selections.len(), cfg.n_layers);
        for sel in out.selections.iter() {
            let sel = sel.as_ref().expect("k < L gives a selection");
            assert_eq!(sel.k, k);
            for b in 0..2 {
                for t in 0..len {
                    let keys = sel.keys(b, t);
                    assert_eq!(keys.len(), k.min(t + 1), "query {t}");
                    assert!(keys.iter().all(|&s| s <= t), "query {t} selected {keys:?}");
                }
            }
        }
    }
}

#[test]
fn top_k_equals_brute_force_sort() {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    for trial in 0..40 {
        let batch = 1 + trial % 3;
        let len = 1 + rng.random_range(0..30usize);
        let k = 1 + rng.random_range(0..len + 3);
        // a coarse grid makes ties common, so the tie rule is exercised
        let scores: Vec<f32> = (0..batch * len * len)
            .map(|_| rng.random_range(-4..4) as f32 * 0.5)
            .collect();
        let sel = select_top_k(&scores, batch, len, k).unwrap();
        for b in 0..batch {
            for t in 0..len {
                let row = &scores[(b * len + t) * len..(b * len + t + 1) * len];
                let mut order: Vec<usize> = (0..=t).collect();
                order.sort_by(|&x, &y| row[y].partial_cmp(&row[x]).unwrap().then(x.cmp(&y)));
                order.truncate(k);
                order.sort();
                assert_eq!(sel.keys(b, t), order, "trial {trial} b {b} t {t} k {k}");
            }
        }
    }
}

#[test]
fn indexer_loss_trains_only_the_indexer() {
    let device = cpu_device().autodiff();
    let cfg = config();
    let model = DsaTransformer::init(&cfg, AttentionMode::sparse(0.25), 13, &device).unwrap();
    let x = random_ids(2 * 20, cfg.vocab_size, 8);
    let input = Tensor::<2, Int>::from_data(TensorData::new(x, [2, 20]), &device);
    for mode in [AttentionMode::Dense, AttentionMode::sparse(0.25)] {
        let out = model.forward(input.clone(), mode, true).unwrap();
        let grads = out.indexer_loss.unwrap().backward();
        let blk = &model.blocks[0];
        assert!(
            blk.indexer.wq.weight.val().grad(&grads).is_some(),
            "{mode:?}"
        );
        assert!(
            blk.indexer.wk.weight.val().grad(&grads).is_some(),
            "{mode:?}"
        );
        assert!(blk.qkv.weight.val().grad(&grads).is_none(), "{mode:?}");
        assert!(model.wte.val().grad(&grads).is_none(), "{mode:?}");
    }
}

#[test]
fn bad_options_are_errors() {
    let cfg = config();
    let device = cpu_device();
    for keep in [0.0, -0.5, 1.5, f64::NAN] {
        let err = DsaTransformer::init(&cfg, AttentionMode::sparse(keep), 1, &device).unwrap_err();
        assert!(
            matches!(err, ModelError::Invalid(ref m) if m.contains("keep_ratio")),
            "{err}"
        );
    }
    let bad = DsaConfig {
        d_model: 15,
        ..cfg.clone()
    };
    let err = DsaTransformer::init(&bad, AttentionMode::Dense, 1, &device).unwrap_err();
    assert!(err.to_string().contains("n_heads"), "{err}");
    let model = DsaTransformer::init(&cfg, AttentionMode::Dense, 1, &device).unwrap();
    let too_long = random_ids(cfg.max_seq_len + 1, cfg.vocab_size, 1);
    assert!(matches!(
        model.forward(ids(&too_long, 1), AttentionMode::Dense, false),
        Err(ModelError::SequenceTooLong { .. })
    ));
}

#[test]
fn training_with_warm_up_lowers_the_loss_and_the_indexer_kl() {
    let device = cpu_device().autodiff();
    let cfg = DsaConfig {
        vocab_size: 12,
        max_seq_len: 16,
        ..config()
    };
    let mut model = DsaTransformer::init(&cfg, AttentionMode::sparse(0.5), 17, &device).unwrap();
    model.indexer_training = IndexerTraining {
        warmup_steps: 20,
        loss_weight: 1.0,
    };
    // a periodic stream: every token is predictable from the one 3 back
    let stream: Vec<u32> = (0..600).map(|i| ((i * 5 + i / 3) % 12) as u32).collect();
    let tc = TrainConfig {
        steps: 60,
        batch_size: 4,
        seq_len: 16,
        learning_rate: 1e-2,
        warmup_steps: 5,
        eval_every: 0,
        seed: 3,
        ..TrainConfig::default()
    };
    let fresh = DsaTransformer::init(&cfg, AttentionMode::sparse(0.5), 17, &device).unwrap();
    let (trained, record) = train(model, &stream[..500], &stream[500..], 12, &tc, &device).unwrap();
    assert_eq!(record.aux_losses.len(), 60);
    let first = record.train_losses[..5].iter().sum::<f32>() / 5.0;
    let last = record.train_losses[55..].iter().sum::<f32>() / 5.0;
    assert!(last < 0.7 * first, "LM loss {first} -> {last}");
    // The trained indexer matches the trained model's attention better than the initial indexer
    // does (same main weights: only the indexers are swapped).
    let held_out: Vec<i64> = stream[500..564].iter().map(|&t| t as i64).collect();
    let input = Tensor::<2, Int>::from_data(TensorData::new(held_out, [4, 16]), &device);
    let kl = |m: &DsaTransformer, mode| -> f32 {
        m.forward(input.clone(), mode, true)
            .unwrap()
            .indexer_loss
            .unwrap()
            .into_scalar()
    };
    let mut swapped = trained.clone();
    for (blk, init) in swapped.blocks.iter_mut().zip(&fresh.blocks) {
        blk.indexer = init.indexer.clone();
    }
    for mode in [AttentionMode::Dense, AttentionMode::sparse(0.5)] {
        let (t, u) = (kl(&trained, mode), kl(&swapped, mode));
        assert!(
            t < 0.8 * u,
            "{mode:?}: trained indexer KL {t} vs initial {u}"
        );
    }
}

mod sweep {
    use sparsity_experiments::dsa_sweep::{
        RatioSemantics, RunResult, RunSpec, SweepAction, SweepData, SweepOutcome, SweepParams,
        SweepRun, append_result, check_resume, completed_ids, read_results, run_list, run_one,
        run_sweep, shard, slurm_script, summarize, write_report,
    };
    use sparsity_models::dsa::SparseImpl;
    use sparsity_models::{ModelError, cpu_device};

    fn params() -> SweepParams {
        SweepParams::tiny(vec![16, 32], vec![0.25, 0.5], 2)
    }

    #[test]
    fn run_list_order_ids_and_top_k() {
        let runs = run_list(&params()).unwrap();
        assert_eq!(runs.len(), 2 * 3 * 2);
        let ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
        let h = params().run_options().hash();
        assert_eq!(h.len(), 8);
        let want: Vec<String> = [
            "L16-dense-s0",
            "L16-dense-s1",
            "L16-r0.25-s0",
            "L16-r0.25-s1",
            "L16-r0.5-s0",
            "L16-r0.5-s1",
        ]
        .iter()
        .map(|s| format!("{s}-{h}"))
        .collect();
        assert_eq!(&ids[..6], want);
        assert_eq!(runs[2].top_k, 4);
        assert_eq!(runs[0].top_k, 16);
        // legacy semantics: the ratio is the fraction dropped
        let legacy = with(params(), |o| o.semantics = RatioSemantics::LegacyDropped);
        let runs = run_list(&legacy).unwrap();
        assert_eq!(runs[2].top_k, 12);
        assert_eq!(runs[2].keep_ratio, Some(0.75));
        // mean kept fraction: k = 4 at L = 16 → Σ min(4, t+1)/(t+1) / 16
        let spec = &run_list(&params()).unwrap()[2];
        let expected = (0..16)
            .map(|t| (4.min(t + 1)) as f64 / (t + 1) as f64)
            .sum::<f64>()
            / 16.0;
        assert!((spec.mean_kept_fraction() - expected).abs() < 1e-12);
        // beyond 2^20 the closed form: against the term-by-term sum, and instant at 2^63
        for (length, top_k) in [(3_000_000usize, 1_000usize), (2_000_000, 1_500_000)] {
            let big = RunSpec {
                length,
                top_k,
                ..spec.clone()
            };
            let brute = (0..length)
                .map(|t| (top_k.min(t + 1)) as f64 / (t + 1) as f64)
                .sum::<f64>()
                / length as f64;
            assert!(
                (big.mean_kept_fraction() - brute).abs() < 1e-9,
                "{length} {top_k}"
            );
        }
        let hostile = RunSpec {
            length: 1 << 63,
            top_k: 1 << 62,
            ..spec.clone()
        };
        assert!(hostile.mean_kept_fraction().is_finite());
        let bad = SweepParams {
            ratios: vec![1.5],
            ..params()
        };
        assert!(matches!(run_list(&bad), Err(ModelError::Invalid(m)) if m.contains("1.5")));
    }

    #[test]
    fn shards_partition_the_run_list() {
        let all = run_list(&params()).unwrap();
        let mut seen: Vec<String> = Vec::new();
        for i in 0..5 {
            seen.extend(shard(all.clone(), i, 5).unwrap().into_iter().map(|r| r.id));
        }
        seen.sort();
        let mut ids: Vec<String> = all.iter().map(|r| r.id.clone()).collect();
        ids.sort();
        assert_eq!(seen, ids);
        assert!(shard(all.clone(), 5, 5).is_err());
        assert!(shard(all, 0, 0).is_err());
        let script = slurm_script(
            &["--lengths".to_string(), "16".to_string()],
            4,
            std::path::Path::new("out"),
            "j",
            "1:00:00",
            2,
        )
        .unwrap();
        assert!(script.contains("#SBATCH --array=0-3"));
        assert!(script.contains("--shard \"${SLURM_ARRAY_TASK_ID}/4\""));
        assert!(script.contains("cargo xtask dsa-sweep --lengths 16 \\\n"));
    }

    fn tiny_data() -> SweepData {
        // a deterministic stream with structure (period 7) over a 20-token vocabulary
        let stream: Vec<u32> = (0..4000u32).map(|i| (i * 3 + i / 7) % 20).collect();
        SweepData {
            train: stream[..3000].to_vec(),
            validation: stream[3000..3500].to_vec(),
            test: stream[3500..].to_vec(),
            vocab_size: 20,
            source: "test".into(),
        }
    }

    fn quick() -> SweepParams {
        with(SweepParams::tiny(vec![16], vec![0.25, 1.0], 2), |o| {
            o.steps = 3;
            o.batch_size = 2;
            o.indexer_warmup_steps = 1;
            o.eval_every = 0;
        })
    }

    /// `p` with its run options changed by `f`.
    fn with(
        mut p: SweepParams,
        f: impl FnOnce(&mut sparsity_experiments::dsa_sweep::RunOptions),
    ) -> SweepParams {
        f(&mut p.options);
        p
    }

    #[test]
    fn runs_are_deterministic_resumable_and_keep_one_equals_dense() {
        let device = cpu_device().autodiff();
        let data = tiny_data();
        let p = quick();
        let runs = run_list(&p).unwrap();
        let dense = run_one(&runs[0], &p, &data, &device).unwrap();
        let again = run_one(&runs[0], &p, &data, &device).unwrap();
        assert_eq!(dense.final_val_loss, again.final_val_loss);
        assert_eq!(dense.final_train_loss, again.final_train_loss);
        let keep_one = runs
            .iter()
            .find(|r| r.id.starts_with("L16-r1-s0-"))
            .unwrap();
        let one = run_one(keep_one, &p, &data, &device).unwrap();
        assert_eq!(
            dense.final_val_loss, one.final_val_loss,
            "keep 1.0 must train exactly like dense"
        );
        let sparse = runs
            .iter()
            .find(|r| r.id.starts_with("L16-r0.25-s0-"))
            .unwrap();
        let s = run_one(sparse, &p, &data, &device).unwrap();
        assert_ne!(dense.final_val_loss, s.final_val_loss);
        assert!(s.final_val_accuracy >= 0.0 && s.final_val_accuracy <= 1.0);

        // append-only results with a truncated last line (an interrupted append)
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.jsonl");
        append_result(&path, &dense).unwrap();
        append_result(&path, &s).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(b"{\"spec\": {\"id\": \"L16-r1-s0\"");
        std::fs::write(&path, &bytes).unwrap();
        let done = completed_ids(&path).unwrap();
        assert_eq!(done.len(), 2);
        assert!(done.contains(&dense.spec.id) && done.contains(&s.spec.id));
        append_result(&path, &one).unwrap();
        let back = read_results(&path).unwrap();
        assert_eq!(
            back.len(),
            3,
            "the partial record is cut off, the new one appended"
        );
        assert_eq!(back[2], one);
        // a malformed line in the middle is an error naming the line
        let text = std::fs::read_to_string(&path).unwrap();
        let broken = text.replacen("\n", "\n{oops\n", 1);
        std::fs::write(&path, broken).unwrap();
        assert!(matches!(
            read_results(&path),
            Err(ModelError::Jsonl { line: 2, .. })
        ));
    }

    /// Every result-affecting option changes the run ids' hash; the rest do not.
    #[test]
    fn run_ids_carry_every_result_affecting_option() {
        use sparsity_models::dsa::SparseImpl;
        let base = params();
        let h = base.run_options().hash();
        let changed: Vec<(&str, SweepParams)> = vec![
            (
                "preset",
                with(params(), |o| {
                    o.preset = sparsity_experiments::dsa_sweep::Preset::Paper
                }),
            ),
            (
                "semantics",
                with(params(), |o| o.semantics = RatioSemantics::LegacyDropped),
            ),
            ("steps", with(params(), |o| o.steps = 201)),
            ("batch_size", with(params(), |o| o.batch_size = 9)),
            (
                "learning_rate",
                with(params(), |o| o.learning_rate = 3.1e-3),
            ),
            (
                "indexer_warmup_steps",
                with(params(), |o| o.indexer_warmup_steps = 51),
            ),
            (
                "indexer_loss_weight",
                with(params(), |o| o.indexer_loss_weight = 0.9),
            ),
            ("eval_every", with(params(), |o| o.eval_every = 49)),
            ("eval_batches", with(params(), |o| o.eval_batches = 5)),
            (
                "implementation",
                with(params(), |o| o.implementation = SparseImpl::Gather),
            ),
            ("data_seed", with(params(), |o| o.data_seed = 43)),
            ("vocab", with(params(), |o| o.vocab = 1000)),
        ];
        for (name, p) in &changed {
            let o = p.run_options();
            assert_ne!(o.hash(), h, "{name} does not change the hash");
            let diff = base.run_options().differences(&o);
            assert_eq!(diff.len(), 1, "{name}: {diff:?}");
            assert!(diff[0].starts_with(name), "{name}: {diff:?}");
        }
        // The grid itself (lengths, ratios, seeds, dense) is in each id, not in the hash.
        let grid = SweepParams {
            lengths: vec![64],
            ratios: vec![0.5],
            seeds: 5,
            base_seed: 3,
            dense_baseline: false,
            ..params()
        };
        assert_eq!(grid.run_options().hash(), h);
        // Pinned: a change of the hashing breaks every results file's resumption.
        assert_eq!(h, params().run_options().hash());
        assert_eq!(
            h, PINNED_TINY_HASH,
            "the run-id hash of the tiny defaults changed"
        );
    }

    /// The hash of `SweepParams::tiny`'s options, recomputed independently in Python (64-bit
    /// FNV-1a over the options' JSON `{"preset":"tiny","semantics":"keep","steps":200,...}`,
    /// high and low halves XORed) when run identities were introduced.
    const PINNED_TINY_HASH: &str = "6e78ee00";

    /// Resuming into a file made with other options fails naming them; a shard writes no report.
    #[test]
    fn resume_checks_options_and_shards_leave_the_report_to_the_merge() {
        let device = cpu_device().autodiff();
        let data = tiny_data();
        let p = quick();
        let all = run_list(&p).unwrap();
        let mine = shard(all, 0, 3).unwrap();
        assert_eq!(mine.len(), 2);
        let dir = tempfile::tempdir().unwrap();
        let results = dir.path().join("shard-0.jsonl");
        let mut done = Vec::new();
        for spec in &mine {
            let r = run_one(spec, &p, &data, &device).unwrap();
            append_result(&results, &r).unwrap();
            done.push(r);
        }
        check_resume(&results, &done, &p.run_options()).unwrap();
        let run = |params: SweepParams| SweepRun {
            params,
            command_args: Vec::new(),
            shard: Some((0, 3)),
            results: results.clone(),
            report_dir: Some(dir.path().join("report")),
            results_dir: dir.path().join("store"),
            max_memory: None,
            action: SweepAction::Run,
        };
        // Every run of the shard is in the file: nothing to train, and no report.
        match run_sweep(&run(p.clone())).unwrap() {
            SweepOutcome::ShardDone { runs, results: r } => {
                assert_eq!(runs, 2);
                assert_eq!(r, results);
            }
            other => panic!("expected ShardDone, got {other:?}"),
        }
        assert!(
            !dir.path().join("report").exists(),
            "a shard wrote a report"
        );
        // Other options: an error naming each differing option, nothing run or written.
        let before = std::fs::read(&results).unwrap();
        let other = with(p.clone(), |o| {
            o.steps = 4;
            o.learning_rate = 1e-3;
        });
        let err = run_sweep(&run(other)).unwrap_err().to_string();
        assert!(
            err.contains("steps: 3 vs 4") && err.contains("learning_rate"),
            "{err}"
        );
        assert_eq!(std::fs::read(&results).unwrap(), before);
        // A run recorded without options (an older file) cannot be resumed into.
        let legacy = RunResult {
            options: None,
            ..done[0].clone()
        };
        let err = check_resume(&results, std::slice::from_ref(&legacy), &p.run_options())
            .unwrap_err()
            .to_string();
        assert!(err.contains("no recorded options"), "{err}");
        // A report never mixes runs made with different options.
        let mixed = vec![
            done[0].clone(),
            RunResult {
                options: Some(other_options()),
                ..done[1].clone()
            },
        ];
        let err = summarize(&mixed).unwrap_err().to_string();
        assert!(
            err.contains("different options") && err.contains("steps"),
            "{err}"
        );
        assert!(summarize(&[legacy, done[1].clone()]).is_err());
    }

    fn other_options() -> sparsity_experiments::dsa_sweep::RunOptions {
        with(quick(), |o| o.steps = 99).run_options()
    }

    #[test]
    fn report_has_statistics_with_two_seeds() {
        let device = cpu_device().autodiff();
        let data = tiny_data();
        let p = with(quick(), |o| o.implementation = SparseImpl::MaskedDense);
        let p = SweepParams {
            ratios: vec![0.25, 0.5],
            ..p
        };
        let results: Vec<RunResult> = run_list(&p)
            .unwrap()
            .iter()
            .map(|r| run_one(r, &p, &data, &device).unwrap())
            .collect();
        let report = summarize(&results).unwrap();
        assert_eq!(report.runs, 6);
        assert_eq!(report.cells.len(), 3);
        let l = &report.lengths[0];
        let st = l
            .statistics
            .as_ref()
            .expect("two seeds per group give statistics");
        assert_eq!(st.labels, ["0.25", "0.5"]);
        assert_eq!(st.versus_baseline.len(), 2);
        assert!(st.anova.p_value >= 0.0 && st.anova.p_value <= 1.0);
        let best = l.lowest_mean_arm.clone().unwrap();
        let means: Vec<(String, f64)> = report
            .cells
            .iter()
            .filter(|c| c.keep_ratio.is_some())
            .map(|c| (c.arm.clone(), c.val_loss_mean))
            .collect();
        let min = means.iter().min_by(|a, b| a.1.total_cmp(&b.1)).unwrap();
        assert_eq!(best, min.0);
        let dir = tempfile::tempdir().unwrap();
        let md = write_report(&report, &[], dir.path()).unwrap();
        let text = std::fs::read_to_string(md).unwrap();
        assert!(text.contains("One-way ANOVA"));
        assert!(dir.path().join("loss_vs_ratio.png").is_file());
        assert!(dir.path().join("report.json").is_file());
        assert!(text.contains("## Answer (paired by seed)"));
    }

    /// A result record with a planted loss (no training).
    fn planted(length: usize, ratio: Option<f64>, seed: u64, loss: f64) -> RunResult {
        let arm = ratio.map_or("dense".to_string(), |r| format!("r{r}"));
        RunResult {
            spec: RunSpec {
                id: format!("L{length}-{arm}-s{seed}-planted"),
                length,
                ratio,
                keep_ratio: ratio,
                top_k: ratio.map_or(length, |r| ((length as f64 * r) as usize).max(1)),
                seed,
            },
            preset: sparsity_experiments::dsa_sweep::Preset::Tiny,
            n_params: 1,
            final_val_loss: loss,
            final_val_accuracy: 0.5,
            val_curve: Vec::new(),
            final_train_loss: loss,
            final_indexer_kl: None,
            train_seconds: 1.0,
            train_tokens_per_second: 1.0,
            mean_kept_fraction: 1.0,
            peak_rss_bytes: None,
            options: Some(quick().run_options()),
            test_loss: None,
            test_accuracy: None,
            validation_recall: None,
            test_recall: None,
        }
    }

    // Five seeds with large seed effects shared by every arm and small per-run noise.
    const SEED_EFFECT: [f64; 5] = [0.30, -0.25, 0.10, -0.05, 0.20];
    const NOISE: [[f64; 5]; 3] = [
        [0.004, -0.003, 0.001, -0.002, 0.000],
        [-0.002, 0.003, 0.000, 0.002, -0.003],
        [0.001, 0.000, -0.004, 0.003, 0.001],
    ];

    fn sweep_with(gaps: [f64; 2], dense_seed_of: impl Fn(u64) -> u64) -> Vec<RunResult> {
        let mut out = Vec::new();
        for s in 0..5u64 {
            let base = 3.0 + SEED_EFFECT[s as usize];
            let dense_base = 3.0 + SEED_EFFECT[dense_seed_of(s) as usize];
            out.push(planted(64, None, s, dense_base + NOISE[0][s as usize]));
            out.push(planted(
                64,
                Some(0.25),
                s,
                base + gaps[0] + NOISE[1][s as usize],
            ));
            out.push(planted(
                64,
                Some(0.5),
                s,
                base + gaps[1] + NOISE[2][s as usize],
            ));
        }
        out
    }

    /// Planted: keep 0.25 lowers the loss by 0.05 against dense, 0.5 changes nothing. Paired by
    /// seed, the 0.25 − dense interval excludes 0 and contains −0.05, and 0.25 is optimal; the
    /// same numbers with the dense runs' seeds shuffled give a much wider interval.
    #[test]
    fn paired_statistics_find_a_planted_difference() {
        let report = summarize(&sweep_with([-0.05, 0.0], |s| s)).unwrap();
        let a = report.lengths[0].paired.as_ref().unwrap();
        let v = a.versus_dense.iter().find(|v| v.arm == "0.25").unwrap();
        assert_eq!(v.seeds, vec![0, 1, 2, 3, 4]);
        assert!(v.difference.ci_high < 0.0, "{v:?}");
        assert!(
            v.difference.ci_low <= -0.05 && -0.05 <= v.difference.ci_high,
            "{v:?}"
        );
        assert!(v.significant);
        // Independent recomputation of the mean difference and its sd from the planted numbers.
        let d: Vec<f64> = (0..5).map(|s| -0.05 + NOISE[1][s] - NOISE[0][s]).collect();
        let m = d.iter().sum::<f64>() / 5.0;
        let sd = (d.iter().map(|x| (x - m).powi(2)).sum::<f64>() / 4.0).sqrt();
        assert!((v.difference.mean_diff - m).abs() < 1e-12);
        assert!((v.difference.sd_diff - sd).abs() < 1e-12);
        let b = a.best_vs_runner_up.as_ref().unwrap();
        assert_eq!((b.best.as_str(), b.runner_up.as_str()), ("0.25", "0.5"));
        assert!(
            (b.alpha_corrected - 0.05).abs() < 1e-15,
            "one pair of ratios"
        );
        assert_eq!(a.optimal_arm.as_deref(), Some("0.25"));
        assert!(
            a.verdict.starts_with("keep ratio 0.25 is optimal"),
            "{}",
            a.verdict
        );

        // Pairing broken: dense seed s is another seed's run.
        let shuffled = summarize(&sweep_with([-0.05, 0.0], |s| (s + 2) % 5)).unwrap();
        let w = shuffled.lengths[0].paired.as_ref().unwrap();
        let w = w.versus_dense.iter().find(|v| v.arm == "0.25").unwrap();
        let width = |d: &sparsity_stats::PairedDifference| d.ci_high - d.ci_low;
        assert!(width(&w.difference) > 10.0 * width(&v.difference));
        assert!(w.difference.ci_low < 0.0 && w.difference.ci_high > 0.0);
    }

    /// Planted null: every arm equals dense up to noise. No optimal ratio is claimed, and the
    /// report says so with the smallest detectable difference.
    #[test]
    fn paired_statistics_claim_nothing_under_a_planted_null() {
        let report = summarize(&sweep_with([0.0, 0.0], |s| s)).unwrap();
        let l = &report.lengths[0];
        let a = l.paired.as_ref().unwrap();
        assert_eq!(a.optimal_arm, None);
        assert!(
            a.verdict.starts_with("no keep ratio is distinguishable"),
            "{}",
            a.verdict
        );
        let mdd = a.min_detectable_difference.unwrap();
        assert!(mdd > 0.0 && mdd < 0.1, "{mdd}");
        assert!(a.versus_dense.iter().all(|v| !v.significant));
        let dir = tempfile::tempdir().unwrap();
        let md = write_report(&report, &[], dir.path()).unwrap();
        let text = std::fs::read_to_string(md).unwrap();
        assert!(text.contains("no keep ratio is distinguishable"), "{text}");
        assert!(text.contains("none distinguishable"));
    }
}

#[test]
fn loop_accuracy_equals_the_sweep_evaluator() {
    use sparsity_demo::train::evaluate_with_accuracy;
    use sparsity_experiments::dsa_sweep::evaluate_full;
    use sparsity_models::burn::module::Module;
    let device = cpu_device();
    let cfg = DsaConfig {
        vocab_size: 20,
        max_seq_len: 16,
        ..config()
    };
    let model = DsaTransformer::init(&cfg, AttentionMode::sparse(0.5), 2, &device).unwrap();
    let stream: Vec<u32> = (0..700u32).map(|i| (i * 3 + i / 7) % 20).collect();
    let (loss, acc) = evaluate_with_accuracy(&model, &stream, 20, 16, 4, None, &device).unwrap();
    let (loss2, acc2) = evaluate_full(&model.valid(), &stream, 16, 4).unwrap();
    assert!((loss - loss2).abs() < 1e-6, "{loss} vs {loss2}");
    assert_eq!(acc, acc2);
    assert!(acc > 0.0 && acc < 1.0, "{acc}");
}

#[test]
fn the_test_split_is_disjoint_from_training_and_validation() {
    use sparsity_demo::corpus::{CorpusSplits, SplitSizes};
    use sparsity_experiments::dsa_sweep::SweepData;
    let splits = CorpusSplits::generate(42, SplitSizes::default()).unwrap();
    let seen: std::collections::HashSet<&String> =
        splits.train.iter().chain(&splits.validation).collect();
    assert!(!splits.held_out.is_empty());
    for t in &splits.held_out {
        assert!(!seen.contains(t), "test text also in train/validation: {t}");
    }
    let val: std::collections::HashSet<&String> = splits.validation.iter().collect();
    assert!(splits.train.iter().all(|t| !val.contains(t)));
    // the sweep's test stream is the held-out split's, encoded
    let data = SweepData::demo_corpus(42, 300).unwrap();
    assert!(data.test.len() > 1000);
    assert_ne!(data.test[..500], data.validation[..500]);
}

/// The recall numbers of `evaluate_split`, recomputed from the model's own selections, on a
/// random model: accuracy at the query positions and the fraction of (query, layer) whose top-k
/// holds the fact; dense reports no indexer recall and keep 1.0 holds every fact.
#[test]
fn recall_accuracy_and_indexer_recall_equal_a_direct_count() {
    use sparsity_experiments::dsa_recall::{RecallTask, build_recall_stream};
    use sparsity_experiments::dsa_sweep::evaluate_split;
    use sparsity_models::burn::module::Module;
    let device = cpu_device();
    let task = RecallTask {
        pairs: 2,
        keys: 4,
        values: 4,
    };
    let (base, len) = (10usize, 32usize);
    let text: Vec<u32> = (0..900u32).map(|i| (i * 7 + i / 5) % 10).collect();
    let s = build_recall_stream(&text, len, &task, base, 3).unwrap();
    let cfg = DsaConfig {
        vocab_size: base + task.extra_tokens(),
        max_seq_len: len,
        ..config()
    };
    for (mode, keep) in [
        (AttentionMode::sparse(0.125), Some(0.125)),
        (AttentionMode::sparse(1.0), Some(1.0)),
        (AttentionMode::Dense, None),
    ] {
        let model = DsaTransformer::init(&cfg, mode, 4, &device)
            .unwrap()
            .valid();
        let e = evaluate_split(&model, &s.ids, len, 3, &s.queries).unwrap();
        let r = e.recall.unwrap();
        assert_eq!(r.queries, s.queries.len());
        let (mut hits, mut held, mut pairs) = (0usize, 0usize, 0usize);
        let windows = (s.ids.len() - 1) / len;
        for w in 0..windows {
            let input: Vec<i64> = s.ids[w * len..w * len + len]
                .iter()
                .map(|&x| i64::from(x))
                .collect();
            let out = model.forward(ids(&input, 1), mode, false).unwrap();
            let pred = tensor_to_vec(&out.logits.argmax(2).float()).unwrap();
            for q in s.queries.iter().filter(|q| q.window == w) {
                hits += usize::from(pred[q.position] as u32 == q.value);
                for sel in &out.selections {
                    pairs += 1;
                    held += usize::from(
                        sel.as_ref()
                            .is_none_or(|sel| sel.keys(0, q.position).contains(&q.source)),
                    );
                }
            }
        }
        assert!((r.accuracy - hits as f64 / s.queries.len() as f64).abs() < 1e-12);
        match keep {
            None => assert_eq!(r.indexer_recall, None),
            Some(k) => {
                let got = r.indexer_recall.unwrap();
                assert!((got - held as f64 / pairs as f64).abs() < 1e-12, "{got}");
                if k == 1.0 {
                    assert_eq!(got, 1.0);
                } else {
                    // k = 4 of 32: a random indexer misses some facts
                    assert!(got < 1.0, "{got}");
                }
            }
        }
    }
}
