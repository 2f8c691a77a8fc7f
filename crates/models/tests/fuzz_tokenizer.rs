//! Fuzz test of `tokenizer.json` loading (issue #23): seeded mutations of the fixture's
//! tokenizer (structural JSON mutations anywhere in the document: numbers set to 0, −1, 2^31,
//! 2^63, 10^12, huge floats; strings set to junk; values of another type; fields and elements
//! removed; arrays and objects emptied; and byte-level mutations of the file) go through
//! `TextTokenizer::from_file`, then encode and decode a text. Each must give a typed error or a
//! working tokenizer: never a panic, an abort, or an allocation beyond a bound proportional to
//! the file. `SPARSITY_FUZZ_TOKENIZER_CASES` (default 2 000) and `SPARSITY_FUZZ_SEED` override.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test harness

mod common;

use rand::Rng;
use sparsity_fuzz::{campaign, env_or, mutate_bytes, mutate_json};
use sparsity_models::text::TextTokenizer;

#[global_allocator]
static ALLOCATOR: sparsity_fuzz::LargestRequest = sparsity_fuzz::LargestRequest;

const TEXT: &str = "The quick brown fox, 42 times: «ünïcödé» \u{1F600}\n\tend.";

#[test]
fn mutated_tokenizer_files_give_typed_errors_or_tokenizers() {
    let path = common::hf("gpt2-tiny").join("tokenizer.json");
    let valid = std::fs::read(&path).unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&valid).unwrap();
    // The fixture itself loads and round-trips the text's ASCII part.
    let tok = TextTokenizer::from_file(&path).unwrap();
    assert!(!tok.encode(TEXT).unwrap().is_empty());

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokenizer.json");
    let cases: usize = env_or("SPARSITY_FUZZ_TOKENIZER_CASES", 2_000);
    let seed: u64 = env_or("SPARSITY_FUZZ_SEED", 31);
    let out = campaign(
        "tokenizer.json",
        cases,
        seed,
        |rng| {
            if rng.random_bool(0.75) {
                let (v, kind) = mutate_json(rng, &doc);
                (serde_json::to_vec(&v).unwrap(), kind)
            } else {
                mutate_bytes(rng, &valid)
            }
        },
        // Parsing builds maps of the vocabulary and merges: a bounded multiple of the file.
        |w| 64 * w.len() + (4 << 20),
        |w| {
            std::fs::write(&file, &w).unwrap();
            let tok = TextTokenizer::from_file(&file)?;
            let ids = tok.encode(TEXT)?;
            tok.decode(&ids)?;
            Ok::<_, sparsity_models::ModelError>(ids.len())
        },
    );
    assert_eq!(out.accepted + out.rejected, cases);
    assert!(out.accepted > 0 && out.rejected > 0, "{out:?}");
}
