//! Fuzz-style test of the one loading path for model checkpoints (config.json + safetensors,
//! issues #17 and #23): seeded mutations of the GPT-2 and Mamba fixtures go through
//! `CausalLm::load_from_bytes` (the parsing and checks `load_dir` uses), and every one must give
//! a typed error or a valid model: never a panic, an abort, or a single allocation larger than
//! a bound proportional to the input's size.
//!
//! Mutation kinds (one per case, chosen by the seeded generator): the shared byte-level ones
//! (`sparsity_fuzz::mutate_bytes`: truncation, bit flips, rewritten bytes, trailing bytes, chunks
//! deleted or duplicated, extreme integers), and: truncation, byte flips
//! anywhere or inside the header, a rewritten header length, trailing bytes, a dropped tensor, a
//! tensor's dtype changed, a tensor's shape changed, an extra tensor; in config.json an integer
//! field set to 0, -1, 2^31, 2^63, 10^12 or a small number, a string field set to junk or
//! another type, a field removed, and truncated or byte-flipped JSON.
//!
//! `SPARSITY_FUZZ_CASES` sets the number of cases (default 10 000) and `SPARSITY_FUZZ_SEED` the
//! seed (default 17), so a failure reproduces from its case number.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test harness
#![allow(unsafe_code)] // the counting allocator below

mod common;

use std::path::Path;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::{Dtype, TensorView};
use sparsity_fuzz::{ABSURD_INTS as ABSURD, campaign, env_or, largest_request, reset_largest};
use sparsity_models::{CausalLm, cpu_device};

#[global_allocator]
static ALLOCATOR: sparsity_fuzz::LargestRequest = sparsity_fuzz::LargestRequest;

type Tensors = Vec<(String, Dtype, Vec<usize>, Vec<u8>)>;

fn tensors_of(bytes: &[u8]) -> Tensors {
    let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
    let mut list: Tensors = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    list.sort_by(|a, b| a.0.cmp(&b.0));
    list
}

fn serialize(list: &Tensors) -> Vec<u8> {
    let views: Vec<_> = list
        .iter()
        .filter_map(|(n, d, s, b)| {
            TensorView::new(*d, s.clone(), b)
                .ok()
                .map(|v| (n.clone(), v))
        })
        .collect();
    safetensors::serialize(views, None).unwrap()
}

fn header_len(bytes: &[u8]) -> usize {
    let mut n = [0u8; 8];
    n.copy_from_slice(&bytes[..8]);
    8 + u64::from_le_bytes(n) as usize
}

/// One mutated (config.json, model.safetensors) pair and the name of its mutation.
fn mutate(rng: &mut ChaCha8Rng, config: &str, weights: &[u8]) -> (String, Vec<u8>, &'static str) {
    let mut cfg = config.to_string();
    let mut w = weights.to_vec();
    let kind = rng.random_range(0..13);
    let name = match kind {
        // byte-level: truncation, bit flips, rewritten bytes, chunks, extreme integers
        0 | 1 => {
            let (m, k) = sparsity_fuzz::mutate_bytes(rng, &w);
            w = m;
            k
        }
        2 => {
            let end = header_len(&w).min(w.len());
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(8..end);
                w[i] = rng.random();
            }
            "flip header bytes"
        }
        3 => {
            let n: u64 = match rng.random_range(0..4) {
                0 => u64::MAX,
                1 => 1 << 40,
                2 => rng.random_range(0..64),
                _ => (header_len(&w) as u64 - 8).wrapping_add(rng.random_range(1..16)),
            };
            w[..8].copy_from_slice(&n.to_le_bytes());
            "header length"
        }
        4 => {
            let (m, k) = sparsity_fuzz::mutate_bytes(rng, &w);
            w = m;
            k
        }
        5..=8 => {
            let mut list = tensors_of(&w);
            let i = rng.random_range(0..list.len());
            let name = match kind {
                5 => {
                    list.remove(i);
                    "drop tensor"
                }
                6 => {
                    let t = &mut list[i];
                    let numel: usize = t.2.iter().product();
                    let (d, size) = [
                        (Dtype::F16, 2),
                        (Dtype::BF16, 2),
                        (Dtype::F64, 8),
                        (Dtype::I64, 8),
                        (Dtype::U8, 1),
                        (Dtype::BOOL, 1),
                    ][rng.random_range(0..6)];
                    t.1 = d;
                    t.3 = (0..numel * size).map(|_| rng.random::<u8>() & 1).collect();
                    "dtype"
                }
                7 => {
                    let t = &mut list[i];
                    match rng.random_range(0..4) {
                        0 => t.2.reverse(),
                        1 => t.2.push(1),
                        2 => {
                            let a = rng.random_range(0..t.2.len());
                            t.2[a] *= 2;
                            let extra = t.3.clone();
                            t.3.extend(extra);
                        }
                        _ => {
                            let a = rng.random_range(0..t.2.len());
                            t.2[a] = 0;
                            t.3.clear();
                        }
                    }
                    "shape"
                }
                _ => {
                    list.push((
                        "unexpected.weight".into(),
                        Dtype::F32,
                        vec![2, 2],
                        vec![0; 16],
                    ));
                    "extra tensor"
                }
            };
            w = serialize(&list);
            name
        }
        9..=11 => {
            let mut v: serde_json::Value = serde_json::from_str(&cfg).unwrap();
            let obj = v.as_object_mut().unwrap();
            let keys: Vec<String> = obj.keys().cloned().collect();
            let name = match kind {
                9 => {
                    let ints: Vec<&String> = keys
                        .iter()
                        .filter(|k| obj[k.as_str()].is_u64() || obj[k.as_str()].is_null())
                        .collect();
                    let k = ints[rng.random_range(0..ints.len())].clone();
                    let x = ABSURD[rng.random_range(0..ABSURD.len())];
                    obj[&k] = serde_json::from_str(&x.to_string()).unwrap();
                    "integer field"
                }
                10 => {
                    let k = keys[rng.random_range(0..keys.len())].clone();
                    obj[&k] = match rng.random_range(0..3) {
                        0 => serde_json::json!("junk\u{0}\u{fffd}"),
                        1 => serde_json::json!([1, 2]),
                        _ => serde_json::json!({"x": -1.5}),
                    };
                    "junk field"
                }
                _ => {
                    let k = keys[rng.random_range(0..keys.len())].clone();
                    obj.remove(&k);
                    "removed field"
                }
            };
            cfg = v.to_string();
            name
        }
        _ => {
            let mut b = cfg.into_bytes();
            if rng.random_bool(0.5) {
                b.truncate(rng.random_range(0..b.len()));
            } else {
                let i = rng.random_range(0..b.len());
                b[i] = rng.random();
            }
            cfg = String::from_utf8_lossy(&b).into_owned();
            "config bytes"
        }
    };
    (cfg, w, name)
}

#[test]
fn mutated_checkpoints_give_typed_errors_or_models() {
    let cases: usize = env_or("SPARSITY_FUZZ_CASES", 10_000);
    let seed: u64 = env_or("SPARSITY_FUZZ_SEED", 17);
    let device = cpu_device();
    let fixtures: Vec<(String, Vec<u8>)> = ["gpt2-tiny", "mamba-tiny", "opt-tiny", "llama-tiny"]
        .iter()
        .map(|m| {
            let dir = common::hf(m);
            (
                std::fs::read_to_string(dir.join("config.json")).unwrap(),
                std::fs::read(dir.join("model.safetensors")).unwrap(),
            )
        })
        .collect();
    // The valid fixtures load, and set the scale of a legitimate load's largest allocation.
    let mut baseline = 0;
    {
        let _serial = sparsity_fuzz::serial();
        for (cfg, w) in &fixtures {
            reset_largest();
            CausalLm::load_from_bytes(cfg, w.clone(), Path::new("fixture"), &device).unwrap();
            baseline = baseline.max(largest_request());
        }
    }
    let mut case = 0usize;
    let out = campaign(
        "checkpoints",
        cases,
        seed,
        |rng| {
            let (cfg, w) = &fixtures[case % fixtures.len()];
            case += 1;
            let (cfg, w, kind) = mutate(rng, cfg, w);
            ((cfg, w), kind)
        },
        // A load may allocate about twice its input (bytes + f32 values, a widened f16 copy),
        // and burn's own buffers; never anything sized by a number read from the input.
        |(cfg, w)| 4 * (w.len() + cfg.len()) + 4 * baseline + (1 << 20),
        |(cfg, w)| CausalLm::load_from_bytes(&cfg, w, Path::new("mutated"), &device),
    );
    assert_eq!(out.accepted + out.rejected, cases);
    assert!(out.rejected > cases / 2, "most mutations must be rejected");
    assert!(
        out.kinds.len() >= 12,
        "every mutation kind must run: {:?}",
        out.kinds
    );
}

/// Input-id files (`cargo xtask dump --input-ids`): 2 000 seeded mutations of the fixture's
/// `input_ids` / `input_ids_2` file through `dump::read_id_cases`, then, for the cases it
/// accepts, `Batch::from_ids` on the GPT-2 fixture's vocabulary check. Typed error or valid
/// cases, never a panic, and no allocation beyond a bound proportional to the file.
#[test]
fn mutated_input_id_files_give_typed_errors_or_cases() {
    let cases: usize = env_or("SPARSITY_FUZZ_ID_CASES", 2_000);
    let bytes = std::fs::read(common::hf("gpt2-tiny").join("expected.safetensors")).unwrap();
    let ids: Tensors = tensors_of(&bytes)
        .into_iter()
        .filter(|t| t.0.starts_with("input_ids"))
        .collect();
    let valid = serialize(&ids);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ids.safetensors");
    let device = cpu_device();
    let out = campaign(
        "input-id files",
        cases,
        23,
        |rng| mutate_ids(rng, &ids, &valid),
        |w| 8 * w.len() + (1 << 20),
        |w| {
            std::fs::write(&path, &w).map_err(|e| e.to_string())?;
            let cases = sparsity_models::dump::read_id_cases(&path).map_err(|e| e.to_string())?;
            for c in &cases {
                let batch = sparsity_models::Batch::from_ids(&c.ids, c.batch, c.seq, &device)
                    .map_err(|e| e.to_string())?;
                drop(batch);
            }
            Ok::<_, String>(cases.len())
        },
    );
    assert!(out.accepted > 0 && out.rejected > 0);
}

/// One mutation of the valid input-id file `valid` (whose tensors are `ids`).
fn mutate_ids(rng: &mut ChaCha8Rng, ids: &Tensors, valid: &[u8]) -> (Vec<u8>, &'static str) {
    let mut w = valid.to_vec();
    let kind = match rng.random_range(0..6) {
        0 | 1 => {
            let (m, k) = sparsity_fuzz::mutate_bytes(rng, &w);
            w = m;
            k
        }
        2 => {
            let mut list = ids.clone();
            let i = rng.random_range(0..list.len());
            let t = &mut list[i];
            let numel: usize = t.2.iter().product();
            let (d, size) = [
                (Dtype::I32, 4),
                (Dtype::F32, 4),
                (Dtype::U8, 1),
                (Dtype::I16, 2),
            ][rng.random_range(0..4)];
            t.1 = d;
            t.3 = (0..numel * size).map(|_| rng.random()).collect();
            w = serialize(&list);
            "dtype"
        }
        3 => {
            let mut list = ids.clone();
            let i = rng.random_range(0..list.len());
            let t = &mut list[i];
            match rng.random_range(0..3) {
                0 => t.2 = vec![t.2.iter().product()],
                1 => t.2.push(1),
                _ => {
                    t.2[0] = 0;
                    t.3.clear();
                }
            }
            w = serialize(&list);
            "shape"
        }
        4 => {
            // Every id rewritten to an extreme value: negative, huge, past the vocabulary.
            let mut list = ids.clone();
            let v: i64 = [-1, i64::MIN, i64::MAX, 1 << 40, 512][rng.random_range(0..5)];
            for t in &mut list {
                t.3 = t.3.chunks(8).flat_map(|_| v.to_le_bytes()).collect();
            }
            w = serialize(&list);
            "id values"
        }
        _ => {
            w = serialize(&Vec::new());
            "no ids"
        }
    };
    (w, kind)
}
