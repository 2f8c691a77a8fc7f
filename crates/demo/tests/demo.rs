//! The embedded default: corpus, tokenizer, training loop and demo cache (fast, micro sizes).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;

use sparsity_demo::corpus::{self, CorpusSplits, SplitSizes};
use sparsity_demo::demo::{self, DemoConfig};
use sparsity_demo::demo_tokenizer::{self, END_OF_TEXT};
use sparsity_demo::train::{self, TrainConfig};
use sparsity_models::{CausalLm, Gpt2, Gpt2Config, Mamba, MambaConfig, cpu_device};

#[test]
fn corpus_is_deterministic_and_prefix_stable() {
    let a = corpus::generate(11, 40);
    let b = corpus::generate(11, 40);
    assert_eq!(a, b);
    let longer = corpus::generate(11, 60);
    assert_eq!(&longer[..40], &a[..]);
    let other = corpus::generate(12, 40);
    assert_ne!(a, other);
    assert_eq!(corpus::generate_range(11, 10, 20), a[10..20].to_vec());
}

#[test]
fn splits_are_disjoint_index_ranges() {
    let sizes = SplitSizes {
        train: 300,
        validation: 40,
        held_out: 30,
    };
    let s = CorpusSplits::generate(5, sizes).unwrap();
    assert_eq!(s.sizes(), sizes);
    assert_eq!(s.validation, corpus::generate_range(5, 300, 340));
    assert_eq!(s.held_out, corpus::generate_range(5, 340, 370));
    let train: HashSet<&String> = s.train.iter().collect();
    let val: HashSet<&String> = s.validation.iter().collect();
    let held: HashSet<&String> = s.held_out.iter().collect();
    assert!(train.is_disjoint(&val));
    assert!(train.is_disjoint(&held));
    assert!(val.is_disjoint(&held));
    let empty = SplitSizes {
        validation: 0,
        ..sizes
    };
    let e = CorpusSplits::generate(5, empty).unwrap_err();
    assert!(e.to_string().contains("validation"), "{e}");
}

#[test]
fn unigram_entropy_matches_closed_forms() {
    let h = corpus::unigram_entropy([0u32, 1, 0, 1]).unwrap();
    assert!((h - 2f64.ln()).abs() < 1e-12);
    let h = corpus::unigram_entropy([3u32, 4, 5, 6, 3, 4, 5, 6]).unwrap();
    assert!((h - 4f64.ln()).abs() < 1e-12);
    let h = corpus::unigram_entropy([9u32; 7]).unwrap();
    assert_eq!(h, 0.0);
    // p = (3/4, 1/4)
    let h = corpus::unigram_entropy([1u32, 1, 1, 2]).unwrap();
    let want = -(0.75f64 * 0.75f64.ln() + 0.25 * 0.25f64.ln());
    assert!((h - want).abs() < 1e-12);
    assert!(corpus::unigram_entropy(Vec::<u32>::new()).is_err());
}

#[test]
fn tokenizer_round_trips_and_is_deterministic() {
    let texts = corpus::generate(3, 300);
    let tok = demo_tokenizer::train_bpe_tokenizer(&texts, 400).unwrap();
    assert_eq!(tok.token_to_id(END_OF_TEXT), Some(0));
    assert_eq!(tok.get_vocab_size(true), 400);
    // Unseen texts (and arbitrary UTF-8) decode back exactly: byte-level BPE covers every byte.
    let mut unseen = corpus::generate_range(3, 300, 310);
    unseen.push("Ünïcode — and 12345 unseen  spaces\n".to_string());
    for t in &unseen {
        let enc = tok.encode(t.as_str(), false).unwrap();
        assert!(enc.get_ids().iter().all(|&id| (id as usize) < 400));
        let back = tok.decode(enc.get_ids(), false).unwrap();
        assert_eq!(&back, t);
    }
    // Merges were learned: frequent words take fewer tokens than bytes.
    let enc = tok.encode(texts[0].as_str(), false).unwrap();
    assert!(enc.get_ids().len() * 2 < texts[0].len());
    // Same texts → same tokenizer.
    let again = demo_tokenizer::train_bpe_tokenizer(&texts, 400).unwrap();
    assert_eq!(
        tok.to_string(false).unwrap(),
        again.to_string(false).unwrap()
    );
    // Saved file reloads to the same ids; the stream separates texts with id 0.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    demo_tokenizer::save_tokenizer(&tok, &path).unwrap();
    let loaded = tokenizers::Tokenizer::from_file(&path).unwrap();
    let stream = demo_tokenizer::encode_stream(&loaded, &unseen[..2]).unwrap();
    let first = tok.encode(unseen[0].as_str(), false).unwrap();
    let n = first.get_ids().len();
    assert_eq!(&stream[..n], first.get_ids());
    assert_eq!(stream[n], 0);
    assert_eq!(*stream.last().unwrap(), 0);
    assert!(demo_tokenizer::train_bpe_tokenizer(&texts, 100).is_err());
    assert!(demo_tokenizer::train_bpe_tokenizer(&[], 400).is_err());
}

fn micro_streams() -> (Vec<u32>, Vec<u32>, usize) {
    let splits = CorpusSplits::generate(
        9,
        SplitSizes {
            train: 200,
            validation: 20,
            held_out: 1,
        },
    )
    .unwrap();
    let tok = demo_tokenizer::train_bpe_tokenizer(&splits.train, 320).unwrap();
    let train = demo_tokenizer::encode_stream(&tok, &splits.train).unwrap();
    let val = demo_tokenizer::encode_stream(&tok, &splits.validation).unwrap();
    (train, val, tok.get_vocab_size(true))
}

fn micro_train_config() -> TrainConfig {
    TrainConfig {
        steps: 25,
        batch_size: 4,
        seq_len: 16,
        learning_rate: 1e-2,
        warmup_steps: 3,
        eval_every: 0,
        eval_batches: Some(4),
        seed: 1,
        ..TrainConfig::default()
    }
}

#[test]
fn a_few_steps_reduce_the_loss_of_micro_gpt2_and_mamba() {
    let (train_ids, val_ids, vocab) = micro_streams();
    let device = cpu_device().autodiff();
    let config = micro_train_config();
    let gpt2 = Gpt2::init(
        &Gpt2Config {
            vocab_size: vocab,
            n_positions: 32,
            n_embd: 16,
            n_layer: 1,
            n_head: 2,
            ..Gpt2Config::default()
        },
        1,
        &device,
    )
    .unwrap();
    let before = train::evaluate(&gpt2, &val_ids, vocab, 16, 4, Some(4), &device).unwrap();
    let (_, record) = train::train(gpt2, &train_ids, &val_ids, vocab, &config, &device).unwrap();
    let after = record.final_val_loss().unwrap();
    assert!(
        after < before - 0.5,
        "gpt2 validation loss {before} -> {after}"
    );

    let mamba = Mamba::init(
        &MambaConfig {
            vocab_size: vocab,
            hidden_size: 16,
            state_size: 4,
            num_hidden_layers: 1,
            ..MambaConfig::default()
        },
        1,
        &device,
    )
    .unwrap();
    let before = train::evaluate(&mamba, &val_ids, vocab, 16, 4, Some(4), &device).unwrap();
    let (_, record) = train::train(mamba, &train_ids, &val_ids, vocab, &config, &device).unwrap();
    let after = record.final_val_loss().unwrap();
    assert!(
        after < before - 0.5,
        "mamba validation loss {before} -> {after}"
    );
}

/// A demo configuration small enough for a test: a few hundred texts, 1-layer 16-wide models.
fn micro_demo(seed: u64) -> DemoConfig {
    let mut c = DemoConfig::new(seed).with_steps(4);
    c.splits = SplitSizes {
        train: 150,
        validation: 10,
        held_out: 10,
    };
    c.vocab_size = 300;
    c.gpt2.n_embd = 16;
    c.gpt2.n_head = 2;
    c.gpt2.n_layer = 1;
    c.gpt2.n_positions = 32;
    c.mamba.hidden_size = 16;
    c.mamba.state_size = 4;
    c.mamba.num_hidden_layers = 1;
    for t in [&mut c.gpt2_train, &mut c.mamba_train] {
        t.batch_size = 2;
        t.seq_len = 16;
        t.show_progress = false;
    }
    c
}

#[test]
fn demo_pipeline_is_bit_identical_for_a_seed_and_cached() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let config = micro_demo(3);
    let first = demo::ensure_demo_models_with(a.path(), &config, false).unwrap();
    assert!(first.trained);
    let second = demo::ensure_demo_models_with(b.path(), &config, false).unwrap();
    for (x, y) in [
        (&first.gpt2_dir, &second.gpt2_dir),
        (&first.mamba_dir, &second.mamba_dir),
    ] {
        for file in ["model.safetensors", "config.json", "tokenizer.json"] {
            let bx = std::fs::read(x.join(file)).unwrap();
            let by = std::fs::read(y.join(file)).unwrap();
            assert!(
                bx == by,
                "{file} differs between two runs with the same seed"
            );
        }
    }
    assert_eq!(
        first.record.gpt2.train.train_losses,
        second.record.gpt2.train.train_losses
    );
    assert_eq!(
        first.record.mamba.train.train_losses,
        second.record.mamba.train.train_losses
    );
    assert!(first.record.unigram_entropy > 1.0);

    // A second call finds the cache entry instead of training.
    let cached = demo::ensure_demo_models_with(a.path(), &config, false).unwrap();
    assert!(!cached.trained);
    assert_eq!(cached.record, first.record);

    // The saved directories load back as Hugging Face models with the tokenizer's vocabulary.
    let device = cpu_device();
    for dir in [&first.gpt2_dir, &first.mamba_dir] {
        let model = CausalLm::load_dir(dir, &device).unwrap();
        let batch = sparsity_models::Batch::from_ids(&[0, 5, 7, 9], 1, 4, &device).unwrap();
        let out = model
            .forward(&batch, &sparsity_models::Capture::none(), None)
            .unwrap();
        assert_eq!(out.logits.dims(), [1, 4, first.record.tokenizer_vocab_size]);
    }

    // Another seed gives other weights.
    let c = tempfile::tempdir().unwrap();
    let other = demo::ensure_demo_models_with(c.path(), &micro_demo(4), false).unwrap();
    let wa = std::fs::read(first.gpt2_dir.join("model.safetensors")).unwrap();
    let wc = std::fs::read(other.gpt2_dir.join("model.safetensors")).unwrap();
    assert_ne!(wa, wc);
}

#[test]
fn cache_key_names_the_seed_and_changes_with_options() {
    assert_eq!(DemoConfig::new(42).cache_key(), "seed-42");
    let k = DemoConfig::new(42).with_steps(10).cache_key();
    assert!(k.starts_with("seed-42-") && k != "seed-42", "{k}");
    assert_ne!(k, DemoConfig::new(42).with_steps(11).cache_key());
}

/// The full default demo (minutes): run with
/// `SPARSITY_LAB_CACHE=/tmp/x cargo test -p sparsity-models --test demo -- --ignored --nocapture`.
#[test]
#[ignore = "trains the full demo models (minutes)"]
fn full_default_demo_beats_the_unigram_entropy() {
    // SPARSITY_DEMO_STEPS=N runs a shorter schedule (to measure the time per step).
    let config = match std::env::var("SPARSITY_DEMO_STEPS") {
        Ok(n) => DemoConfig::new(demo::DEFAULT_SEED).with_steps(n.parse().unwrap()),
        Err(_) => DemoConfig::new(demo::DEFAULT_SEED),
    };
    let models = demo::ensure_demo_models_with(&workspace_demo_cache(), &config, false).unwrap();
    let r = &models.record;
    eprintln!(
        "unigram entropy {:.4}; gpt2 val {:.4} held-out {:.4} ({:.1} s, {} params); mamba val {:.4} held-out {:.4} ({:.1} s, {} params); total {:.1} s",
        r.unigram_entropy,
        r.gpt2.val_loss,
        r.gpt2.held_out_loss,
        r.gpt2.train.seconds,
        r.gpt2.n_params,
        r.mamba.val_loss,
        r.mamba.held_out_loss,
        r.mamba.train.seconds,
        r.mamba.n_params,
        r.seconds_total
    );
    if std::env::var("SPARSITY_DEMO_STEPS").is_err() {
        assert!(r.gpt2.val_loss < r.unigram_entropy - 0.5);
        assert!(r.mamba.val_loss < r.unigram_entropy - 0.5);
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
