//! Every report key against numpy's values (tests/data/generate_reference.py), to 1e-9 relative.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use ndarray::Array1;
use serde_json::Value;
use sparsity_metrics::{
    Aggregation, EntropyMode, ReportParams, SparsityReport, analyze_tensor, load_safetensors,
};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(data("expected.json")).unwrap()).unwrap()
}

/// Compares every key present in `want` (recursively) with `got`.
fn compare(path: &str, got: &Value, want: &Value, checked: &mut usize) {
    match want {
        Value::Object(m) => {
            for (k, w) in m {
                let g = got
                    .get(k)
                    .unwrap_or_else(|| panic!("missing key {path}.{k} in {got}"));
                compare(&format!("{path}.{k}"), g, w, checked);
            }
        }
        Value::Array(a) => {
            let ga = got
                .as_array()
                .unwrap_or_else(|| panic!("{path} not an array"));
            assert_eq!(ga.len(), a.len(), "{path} length");
            for (i, (g, w)) in ga.iter().zip(a).enumerate() {
                compare(&format!("{path}[{i}]"), g, w, checked);
            }
        }
        Value::Number(w) => {
            let w = w.as_f64().unwrap();
            let g = got
                .as_f64()
                .unwrap_or_else(|| panic!("{path}: {got} not a number"));
            let tol = 1e-9 * w.abs().max(g.abs()) + 1e-15;
            assert!((g - w).abs() <= tol, "{path}: rust {g} vs numpy {w}");
            *checked += 1;
        }
        other => {
            assert_eq!(got, other, "{path}");
            *checked += 1;
        }
    }
}

fn mode(m: &str) -> EntropyMode {
    if m == "legacy" {
        EntropyMode::Legacy
    } else {
        EntropyMode::Shannon
    }
}

#[test]
fn acceptance_tensor_matches_numpy_for_every_key() {
    let exp = expected();
    let tensor = load_safetensors(&data("acts_10x64x768.safetensors"), "acts").unwrap();
    assert_eq!(tensor.shape(), &[10, 64, 768]);
    let mut checked = 0;
    for (agg_name, agg) in [
        ("per-sequence-mean", Aggregation::PerSequenceMean),
        ("per-token", Aggregation::PerToken),
    ] {
        for m in ["shannon", "legacy"] {
            let params = ReportParams {
                entropy_mode: mode(m),
                ..ReportParams::default()
            };
            let got = analyze_tensor(&tensor, agg, &params).unwrap();
            let got = serde_json::to_value(&got.report).unwrap();
            compare(
                &format!("{agg_name}/{m}"),
                &got,
                &exp["reports"][agg_name][m],
                &mut checked,
            );
        }
    }
    assert!(checked > 4 * 50, "only {checked} values compared");
}

#[test]
fn vectors_match_numpy_per_measure() {
    let exp = expected();
    for (name, entry) in exp["vectors"].as_object().unwrap() {
        let v: Array1<f64> = entry["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        for m in ["shannon", "legacy"] {
            let params = ReportParams {
                entropy_mode: mode(m),
                ..ReportParams::default()
            };
            let got = SparsityReport::from_values(v.view(), &params).unwrap();
            let got = serde_json::to_value(&got).unwrap();
            let mut checked = 0;
            compare(&format!("{name}/{m}"), &got, &entry[m], &mut checked);
            assert!(checked > 30);
        }
    }
}

#[test]
fn report_json_has_exactly_the_original_keys_plus_new_ones() {
    let v = Array1::from_iter((1..=100).map(|i| i as f64 * 0.001));
    let r = SparsityReport::from_values(v.view(), &ReportParams::default()).unwrap();
    let j = serde_json::to_value(&r).unwrap();
    let keys: Vec<&str> = j.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    for k in [
        "percentile",
        "entropy",
        "gini",
        "traditional",
        "optimal",
        "most_reasonable",
        "hoyer",
        "notes",
        "config",
    ] {
        assert!(keys.contains(&k), "missing {k}");
    }
    let mut p: Vec<&str> = j["percentile"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    p.sort();
    assert_eq!(p, ["p10", "p25", "p5", "p50", "p75", "p90", "p95"]);
    // Serialised in the given percentile order, as the original dict.
    let text = serde_json::to_string(&r).unwrap();
    let pos: Vec<usize> = ["\"p5\"", "\"p10\"", "\"p25\"", "\"p50\"", "\"p95\""]
        .iter()
        .map(|k| text.find(k).unwrap())
        .collect();
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "{pos:?}");
    let mut e: Vec<&str> = j["entropy"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    e.sort();
    assert_eq!(
        e,
        [
            "entropy",
            "normalized_entropy",
            "num_bins",
            "sparsity_from_entropy"
        ]
    );
    let mut o: Vec<&str> = j["optimal"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    o.sort();
    assert_eq!(o, ["sparsity", "threshold"]);
    // Distinct values: percentile sparsity is tautological and flagged.
    assert!(r.notes.iter().any(|n| n.measure == "percentile"));
    assert!(r.notes.iter().any(|n| n.measure == "optimal"));
    // Round trip.
    let back: SparsityReport = serde_json::from_str(&text).unwrap();
    assert_eq!(back.percentile.0.len(), 7);
    assert_eq!(back.most_reasonable, r.most_reasonable);
    assert_eq!(back.notes, r.notes);
}

#[test]
fn legacy_entropy_sparsity_is_at_least_one() {
    let v = Array1::from_iter((0..300).map(|i| ((i * 37) % 101) as f64));
    let params = ReportParams {
        entropy_mode: EntropyMode::Legacy,
        ..ReportParams::default()
    };
    let r = SparsityReport::from_values(v.view(), &params).unwrap();
    assert!(r.entropy.sparsity_from_entropy >= 1.0);
    let s = SparsityReport::from_values(v.view(), &ReportParams::default()).unwrap();
    assert!((0.0..=1.0).contains(&s.entropy.sparsity_from_entropy));
}
