//! Parity with the authors' code: every case of `tests/fixtures/prune/` (made by the
//! reference repositories) and `tests/fixtures/prune_gen/` (made by the torch port in
//! `benches/peers/pruning_peer.py`, validated against the former) is pruned through the
//! `prune-layer` library path and compared: masks exactly, SparseGPT weights within 1e-4,
//! other weights exactly, reconstruction errors within 1e-3 relative of the sidecar.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use ndarray::{Array1, Array2, Axis};
use sparsity_pruning::io::TensorFile;
use sparsity_pruning::layer_file::prune_layer_file;
use sparsity_pruning::{HessianStats, Method, Pattern, Precision, WandaStats};

fn cases(dir: &str) -> Vec<(PathBuf, serde_json::Value)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("index.json")).unwrap()).unwrap();
    index["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let name = c.as_str().unwrap();
            let side: serde_json::Value =
                serde_json::from_slice(&std::fs::read(root.join(format!("{name}.json"))).unwrap())
                    .unwrap();
            (root.join(format!("{name}.safetensors")), side)
        })
        .collect()
}

fn pattern_of(side: &serde_json::Value) -> Pattern {
    let n = side["prune_n"].as_u64().unwrap() as usize;
    let m = side["prune_m"].as_u64().unwrap() as usize;
    if n == 0 {
        Pattern::Unstructured(side["sparsity_ratio"].as_f64().unwrap())
    } else {
        Pattern::NM { n, m }
    }
}

fn check_dir(dir: &str) {
    let all = cases(dir);
    assert!(!all.is_empty());
    for (path, side) in all {
        let file = TensorFile::open(&path).unwrap();
        let pattern = pattern_of(&side);
        let seq_len = side["seqlen"].as_u64().unwrap() as usize;
        let mut methods = vec![
            ("magnitude", Method::Magnitude),
            ("wanda", Method::Wanda),
            (
                "sparsegpt",
                Method::SparseGpt {
                    blocksize: side["blocksize"].as_u64().unwrap() as usize,
                    percdamp: side["percdamp"].as_f64().unwrap(),
                },
            ),
        ];
        if matches!(pattern, Pattern::Unstructured(_)) {
            methods.push(("wanda_variant", Method::WandaVariant));
        }
        for (key, method) in methods {
            let out = prune_layer_file(&path, method, pattern, Some(seq_len), None)
                .unwrap_or_else(|e| panic!("{}: {key}: {e}", path.display()));
            let ref_mask = file
                .array2_f32(&format!("{key}.mask"))
                .unwrap()
                .mapv(|v| v as u8);
            let ref_w = file.array2_f32(&format!("{key}.weight")).unwrap();
            let diff = (&out.pruned.mask.mapv(i32::from) - &ref_mask.mapv(i32::from))
                .iter()
                .filter(|&&d| d != 0)
                .count();
            assert_eq!(
                diff,
                0,
                "{}: {key}: {diff} mask entries differ",
                path.display()
            );
            let tol = if key == "sparsegpt" { 1e-4 } else { 0.0 };
            let max_err = (&out.pruned.weight - &ref_w)
                .iter()
                .fold(0f32, |a, &d| a.max(d.abs()));
            assert!(
                max_err <= tol,
                "{}: {key}: weight max |diff| {max_err}",
                path.display()
            );
            let want = side["rel_recon_error"][key].as_f64().unwrap();
            let rel = (out.rel_recon_error - want).abs() / want;
            assert!(
                rel <= 1e-3,
                "{}: {key}: recon {} vs {want}",
                path.display(),
                out.rel_recon_error
            );
            let zeros = side["zero_counts"][key].as_u64().unwrap() as usize;
            assert_eq!(
                out.pruned.report.pruned,
                zeros,
                "{}: {key}: pruned count",
                path.display()
            );
            if key == "wanda_variant" {
                let alpha = side["wanda_variant"]["alpha"].as_f64().unwrap();
                assert_eq!(
                    out.pruned.report.variant_alpha,
                    Some(alpha),
                    "{}",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn reference_fixtures_match_exactly() {
    check_dir("prune");
}

#[test]
fn generated_cases_match_exactly() {
    check_dir("prune_gen");
}

/// The statistics themselves: Wanda's scaler_row bit-exact, the Hessian to f32 rounding.
#[test]
fn statistics_match_reference() {
    for dir in ["prune", "prune_gen"] {
        for (path, side) in cases(dir) {
            let file = TensorFile::open(&path).unwrap();
            let calib = file.array2_f32("calib").unwrap();
            let l = side["seqlen"].as_u64().unwrap() as usize;
            let mut ws = WandaStats::new(calib.ncols());
            let mut hs = HessianStats::new(calib.ncols(), Precision::F32);
            let mut hs64 = HessianStats::new(calib.ncols(), Precision::F64);
            // Feed half the sequences one at a time and the rest as one [batch, seq, in] call
            // of single sequences: the running average must not depend on the split.
            for chunk in calib.axis_chunks_iter(Axis(0), l) {
                ws.add_batch("t", chunk.into_dyn()).unwrap();
                hs.add_batch("t", chunk.into_dyn()).unwrap();
                let c3 = chunk.insert_axis(Axis(0));
                hs64.add_batch("t", c3.into_dyn()).unwrap();
            }
            let want: Array1<f32> = file
                .array_f32("wanda.scaler_row")
                .unwrap()
                .into_dimensionality()
                .unwrap();
            assert_eq!(ws.scaler_row(), want.view(), "{}", path.display());
            assert_eq!(ws.nsamples(), calib.nrows() / l);
            let h_ref: Array2<f32> = file.array2_f32("sparsegpt.H").unwrap();
            let scale = h_ref.iter().fold(0f32, |a, v| a.max(v.abs()));
            for h in [hs.hessian(), hs64.hessian()] {
                let max = (&h - &h_ref).iter().fold(0f32, |a, v| a.max(v.abs()));
                assert!(
                    max <= 1e-5 * scale,
                    "{}: H max diff {max} (scale {scale})",
                    path.display()
                );
            }
        }
    }
}
