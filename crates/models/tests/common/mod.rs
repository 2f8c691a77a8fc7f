//! Shared test helpers: fixture paths and reading expected tensors.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::Dtype;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn hf(name: &str) -> PathBuf {
    fixtures().join("hf").join(name)
}

/// A transformers-made fixture of another configuration (`fixtures/gen_hf_fixtures.py`).
#[allow(dead_code)] // not every test binary uses every fixture set
pub fn hf_config(name: &str) -> PathBuf {
    fixtures().join("hf-configs").join(name)
}

pub fn random(name: &str) -> PathBuf {
    fixtures().join("random").join(name)
}

/// A tensor read from a safetensors file: shape and values (f32 or i64 as f64-free vectors).
#[derive(Debug, Clone)]
pub enum Value {
    F32(Vec<usize>, Vec<f32>),
    I64(Vec<usize>, Vec<i64>),
}

pub fn read_all(
    path: &Path,
) -> (
    BTreeMap<String, Value>,
    Option<std::collections::HashMap<String, String>>,
) {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let shape = view.shape().to_vec();
        let v = match view.dtype() {
            Dtype::F32 => Value::F32(
                shape,
                view.data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            ),
            Dtype::I64 => Value::I64(
                shape,
                view.data()
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            ),
            d => panic!("unexpected dtype {d:?} for {name}"),
        };
        out.insert(name, v);
    }
    (out, meta.metadata().clone())
}

/// "mlp_act.1_2" -> ("mlp_act.1", "_2")
pub fn split_case(key: &str) -> (&str, &str) {
    if let Some(pos) = key.rfind('_') {
        let tail = &key[pos + 1..];
        if !tail.is_empty()
            && tail.chars().all(|c| c.is_ascii_digit())
            && key[..pos].contains('.')
                | key[..pos].ends_with("input_ids")
                | key.starts_with("logits")
        {
            return (&key[..pos], &key[pos..]);
        }
    }
    (key, "")
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
