//! Behaviour beyond the fixtures: errors, layouts, streaming, mask structure, comparisons.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use approx::assert_abs_diff_eq;
use ndarray::{Array2, Array3, Axis, array, s};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sparsity_pruning::compare::{MaskedLayer, Summary, compare_layers};
use sparsity_pruning::layout::{WeightLayout, from_out_in, to_out_in};
use sparsity_pruning::{
    Calibration, HessianStats, LayerPruner, Method, Pattern, Precision, PruneError,
    SparseGptParams, WandaStats, prune, relative_reconstruction_error, sparsegpt,
};

fn random(rows: usize, cols: usize, seed: u64) -> Array2<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Array2::from_shape_fn((rows, cols), |_| rng.random_range(-1.0f32..1.0))
}

fn stats_for(x: &Array2<f32>) -> Calibration {
    let mut w = WandaStats::new(x.ncols());
    let mut h = HessianStats::new(x.ncols(), Precision::F32);
    for chunk in x.axis_chunks_iter(Axis(0), 8) {
        w.add_batch("t", chunk.into_dyn()).unwrap();
        h.add_batch("t", chunk.into_dyn()).unwrap();
    }
    Calibration {
        wanda: Some(w),
        hessian: Some(h),
    }
}

#[test]
fn invalid_options_are_typed_errors_naming_the_layer() {
    let w = random(4, 12, 1);
    let cal = stats_for(&random(16, 12, 2));
    let e = prune(
        "blk.0.fc",
        w.view(),
        &cal,
        Method::Wanda,
        Pattern::Unstructured(1.0),
    )
    .unwrap_err();
    assert!(matches!(e, PruneError::InvalidRatio { .. }));
    assert!(e.to_string().contains("blk.0.fc"));
    let e = prune(
        "l",
        w.view(),
        &cal,
        Method::Wanda,
        Pattern::Unstructured(-0.1),
    )
    .unwrap_err();
    assert!(matches!(e, PruneError::InvalidRatio { .. }));
    let e = prune(
        "l",
        w.view(),
        &cal,
        Method::Magnitude,
        Pattern::NM { n: 4, m: 4 },
    )
    .unwrap_err();
    assert!(matches!(e, PruneError::InvalidNm { n: 4, m: 4, .. }));
    let e = prune(
        "l",
        w.view(),
        &cal,
        Method::Magnitude,
        Pattern::NM { n: 2, m: 5 },
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            PruneError::NmNotDivisible {
                in_features: 12,
                m: 5,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("[4, 12]"));
    let mut bad = w.clone();
    bad[[2, 3]] = f32::NAN;
    let e = prune(
        "l",
        bad.view(),
        &cal,
        Method::Magnitude,
        Pattern::Unstructured(0.5),
    )
    .unwrap_err();
    match e {
        PruneError::NonFinite { index, what, .. } => {
            assert_eq!(index, vec![2, 3]);
            assert_eq!(what, "weight");
        }
        other => panic!("{other}"),
    }
    let e = prune(
        "l",
        w.view(),
        &Calibration::default(),
        Method::Wanda,
        Pattern::Unstructured(0.5),
    )
    .unwrap_err();
    assert!(matches!(e, PruneError::MissingStats { .. }));
    let e = prune(
        "l",
        w.view(),
        &cal,
        Method::SparseGpt {
            blocksize: 0,
            percdamp: 0.01,
        },
        Pattern::Unstructured(0.5),
    )
    .unwrap_err();
    assert!(matches!(e, PruneError::InvalidOption { .. }));
}

#[test]
fn calibration_batches_are_checked() {
    let mut p =
        LayerPruner::new("attn.q", [3, 6], Method::Wanda, Pattern::Unstructured(0.5)).unwrap();
    let e = p
        .add_batch(Array2::<f32>::zeros((4, 5)).into_dyn().view())
        .unwrap_err();
    assert!(matches!(e, PruneError::ShapeMismatch { .. }), "{e}");
    let e = p
        .add_batch(ndarray::Array1::<f32>::zeros(6).into_dyn().view())
        .unwrap_err();
    assert!(matches!(e, PruneError::BatchRank { .. }));
    let mut x = Array2::<f32>::ones((4, 6));
    x[[1, 5]] = f32::INFINITY;
    let e = p.add_batch(x.into_dyn().view()).unwrap_err();
    assert!(matches!(e, PruneError::NonFinite { ref index, .. } if index == &vec![1, 5]));
    let e = p.prune(Array2::<f32>::zeros((6, 3)).view()).unwrap_err();
    assert!(matches!(e, PruneError::ShapeMismatch { .. }));
}

#[test]
fn damping_retries_are_reported_and_exhaustion_fails_with_the_layer() {
    // Eigenvalues 2.05 and -0.05: percdamp 0.01 (damp 0.01) fails, 0.1 succeeds.
    let h = array![[1.0f32, 1.05], [1.05, 1.0]];
    let w = array![[0.5f32, -0.25], [0.1, 0.3]];
    let out = sparsegpt(
        "mlp.up",
        w.view(),
        h.view(),
        Pattern::Unstructured(0.5),
        &SparseGptParams::default(),
    )
    .unwrap();
    assert_eq!(out.damp_retries, 1);
    assert_abs_diff_eq!(out.percdamp_used, 0.1, epsilon = 1e-12);
    let params = SparseGptParams {
        max_damp_retries: 0,
        ..SparseGptParams::default()
    };
    let e = sparsegpt(
        "mlp.up",
        w.view(),
        h.view(),
        Pattern::Unstructured(0.5),
        &params,
    )
    .unwrap_err();
    assert!(matches!(
        e,
        PruneError::NotPositiveDefinite {
            retries: 0,
            n: 2,
            ..
        }
    ));
    assert!(e.to_string().contains("mlp.up"));
    // A negative-definite Hessian never recovers.
    let neg = array![[-1.0f32, 0.0], [0.0, -1.0]];
    let e = sparsegpt(
        "x",
        w.view(),
        neg.view(),
        Pattern::Unstructured(0.5),
        &SparseGptParams::default(),
    )
    .unwrap_err();
    assert!(matches!(
        e,
        PruneError::NotPositiveDefinite { retries: 4, .. }
    ));
}

#[test]
fn conv1d_layout_round_trips_and_prunes_like_linear() {
    let w_out_in = random(6, 16, 3);
    let conv = from_out_in(w_out_in.clone(), WeightLayout::Conv1D);
    assert_eq!(conv.dim(), (16, 6));
    assert_eq!(conv[[5, 2]], w_out_in[[2, 5]]);
    let view = to_out_in(conv.view(), WeightLayout::Conv1D);
    assert_eq!(view, w_out_in.view());
    let cal = stats_for(&random(32, 16, 4));
    let a = prune(
        "c",
        view,
        &cal,
        Method::sparsegpt(),
        Pattern::NM { n: 2, m: 4 },
    )
    .unwrap();
    let b = prune(
        "c",
        w_out_in.view(),
        &cal,
        Method::sparsegpt(),
        Pattern::NM { n: 2, m: 4 },
    )
    .unwrap();
    assert_eq!(a.mask, b.mask);
    assert_eq!(a.weight, b.weight);
    let back = from_out_in(a.mask.clone(), WeightLayout::Conv1D);
    assert_eq!(back.t(), a.mask);
}

#[test]
fn a_batch_of_sequences_equals_the_sequences_one_by_one() {
    let x = random(24, 10, 5).mapv(|v| v * 3.0);
    let mut one = WandaStats::new(10);
    let mut h_one = HessianStats::new(10, Precision::F64);
    for chunk in x.axis_chunks_iter(Axis(0), 8) {
        one.add_batch("t", chunk.into_dyn()).unwrap();
        h_one.add_batch("t", chunk.into_dyn()).unwrap();
    }
    let x3: Array3<f32> = x.clone().into_shape_with_order((3, 8, 10)).unwrap();
    let mut all = WandaStats::new(10);
    let mut h_all = HessianStats::new(10, Precision::F64);
    all.add_batch("t", x3.view().into_dyn()).unwrap();
    h_all.add_batch("t", x3.view().into_dyn()).unwrap();
    assert_eq!(one.nsamples(), 3);
    assert_eq!(all.nsamples(), 3);
    for (a, b) in one.scaler_row().iter().zip(all.scaler_row().iter()) {
        assert_abs_diff_eq!(a, b, epsilon = 1e-4 * a.abs().max(1.0));
    }
    // scaler_row_j = Σ x_j² / N (N = sequences).
    let direct = x.mapv(|v| v * v).sum_axis(Axis(0)) / 3.0;
    for (a, b) in one.scaler_row().iter().zip(direct.iter()) {
        assert_abs_diff_eq!(a, b, epsilon = 1e-4 * b.abs().max(1.0));
    }
    // H = 2/N Σ x xᵀ.
    let x64 = x.mapv(|v| v as f64);
    let want = x64.t().dot(&x64) * (2.0 / 3.0);
    for (a, b) in h_one.hessian_f64().iter().zip(want.iter()) {
        assert_abs_diff_eq!(a, b, epsilon = 1e-9 * b.abs().max(1.0));
    }
    for (a, b) in h_all.hessian_f64().iter().zip(want.iter()) {
        assert_abs_diff_eq!(a, b, epsilon = 1e-9 * b.abs().max(1.0));
    }
}

#[test]
fn reconstruction_error_is_zero_unpruned_and_matches_a_hand_value() {
    let w = array![[1.0f32, 2.0], [0.0, 1.0]];
    let x = array![[1.0f32, 1.0], [2.0, 0.0]];
    assert_eq!(
        relative_reconstruction_error("r", w.view(), w.view(), x.view()).unwrap(),
        0.0
    );
    let p = array![[1.0f32, 0.0], [0.0, 1.0]];
    // W Xᵀ = [[3, 2], [1, 0]] (‖·‖² = 14); (W − P) Xᵀ = [[2, 0], [0, 0]] (‖·‖² = 4).
    let e = relative_reconstruction_error("r", w.view(), p.view(), x.view()).unwrap();
    assert_abs_diff_eq!(e, 4.0 / 14.0, epsilon = 1e-12);
}

#[test]
fn comparison_matches_hand_counts() {
    // 1 = pruned.
    let a = array![[1u8, 0, 0, 1], [0, 0, 1, 1]];
    let b = array![[1u8, 1, 0, 0], [0, 0, 1, 1]];
    let c = compare_layers(
        &MaskedLayer::from_mask("l", a.view()),
        &MaskedLayer::from_mask("l", b.view()),
    )
    .unwrap();
    // Row 0: kept A = {1,2}, kept B = {2,3}: Jaccard 1/3, Hamming 2/4. Row 1 identical.
    assert_abs_diff_eq!(c.rows.jaccard[0], 1.0 / 3.0, epsilon = 1e-12);
    assert_abs_diff_eq!(c.rows.hamming[0], 0.5, epsilon = 1e-12);
    assert_eq!(c.rows.jaccard[1], 1.0);
    assert_eq!(c.rows.hamming[1], 0.0);
    // Columns: col 1 kept A = {0,1}, kept B = {1}: 1/2; col 3 both pruned everywhere except A row 0? A col3 = [1,1] → none kept; B col3 = [0,1] → {0}.
    assert_abs_diff_eq!(c.columns.jaccard[1], 0.5, epsilon = 1e-12);
    assert_eq!(c.columns.jaccard[3], 0.0);
    assert_abs_diff_eq!(c.layer.jaccard, 3.0 / 5.0, epsilon = 1e-12);
    assert_abs_diff_eq!(c.layer.hamming, 2.0 / 8.0, epsilon = 1e-12);
    assert!(c.layer.cosine.is_none());
    let wa = array![[0.0f32, 1.0], [2.0, 0.0]];
    let wb = array![[0.0f32, 1.0], [0.0, 3.0]];
    let c = compare_layers(
        &MaskedLayer::from_weight("w", wa),
        &MaskedLayer::from_weight("w", wb),
    )
    .unwrap();
    assert_abs_diff_eq!(
        c.layer.cosine.unwrap(),
        1.0 / (5f64.sqrt() * 10f64.sqrt()),
        epsilon = 1e-12
    );
    assert_eq!(c.rows.cosine.as_ref().unwrap()[1], 0.0);
    let e = compare_layers(
        &MaskedLayer::from_mask("l", a.view()),
        &MaskedLayer::from_mask("l", a.slice(s![.., ..3])),
    )
    .unwrap_err();
    assert!(matches!(e, PruneError::ShapeMismatch { .. }));
}

#[test]
fn summary_uses_numpy_linear_quantiles() {
    let s = Summary::of(&[4.0, 1.0, 3.0, 2.0]);
    assert_eq!(s.median, 2.5);
    assert_abs_diff_eq!(s.q25, 1.75, epsilon = 1e-12);
    assert_abs_diff_eq!(s.std, 1.25f64.sqrt(), epsilon = 1e-12);
    assert_eq!((s.min, s.max, s.count), (1.0, 4.0, 4));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn mask_structure_holds_for_every_method(rows in 1usize..12, groups in 1usize..20, seed in 0u64..1000, nm in prop::sample::select(vec![(2usize, 4usize), (4, 8), (1, 4)]), ratio in 0.0f64..0.95) {
        let (n, m) = nm;
        let cols = groups * m;
        let w = random(rows, cols, seed);
        let cal = stats_for(&random(16, cols, seed + 1));
        for method in [Method::Magnitude, Method::Wanda, Method::WandaVariant, Method::sparsegpt()] {
            let p = prune("p", w.view(), &cal, method, Pattern::NM { n, m }).unwrap();
            for row in p.mask.rows() {
                for g in row.to_vec().chunks(m) {
                    prop_assert_eq!(g.iter().filter(|&&v| v == 1).count(), n);
                }
            }
            for (wv, mv) in p.weight.iter().zip(p.mask.iter()) {
                if *mv == 1 { prop_assert_eq!(*wv, 0.0); }
            }
            let u = prune("p", w.view(), &cal, method, Pattern::Unstructured(ratio)).unwrap();
            for (wv, mv) in u.weight.iter().zip(u.mask.iter()) {
                if *mv == 1 { prop_assert_eq!(*wv, 0.0); }
            }
            let k = (cols as f64 * ratio) as usize;
            match method {
                Method::Wanda => for row in u.mask.rows() {
                    prop_assert_eq!(row.iter().filter(|&&v| v == 1).count(), k);
                },
                Method::Magnitude => {
                    // Distinct values: exactly int(numel·ratio) + 1.
                    prop_assert_eq!(u.report.pruned, ((rows * cols) as f64 * ratio) as usize + 1);
                }
                _ => {}
            }
        }
    }

    #[test]
    fn identical_masks_compare_as_identical(rows in 1usize..20, cols in 1usize..200, seed in 0u64..100) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let m = Array2::from_shape_fn((rows, cols), |_| u8::from(rng.random_bool(0.5)));
        let c = compare_layers(&MaskedLayer::from_mask("a", m.view()), &MaskedLayer::from_mask("a", m.view())).unwrap();
        prop_assert_eq!(c.layer.hamming, 0.0);
        for (j, row) in c.rows.jaccard.iter().zip(m.rows()) {
            let kept = row.iter().any(|&v| v == 0);
            prop_assert_eq!(*j, if kept { 1.0 } else { 0.0 });
        }
        let packed = sparsity_io::BitMatrix::from_view(m.view(), |&v| v != 0);
        prop_assert_eq!(packed.to_u8(), m.clone());
        prop_assert_eq!(packed.transpose().to_u8(), m.t().to_owned());
    }
}

#[cfg(feature = "safetensors")]
#[test]
fn pytorch_pt_files_read_like_safetensors() {
    use sparsity_pruning::io::TensorFile;
    use sparsity_pruning::pt::{layer_key_from_file_name, read_pt};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pt");
    let want = TensorFile::open(&dir.join("expected.safetensors")).unwrap();
    let a = read_pt(&dir.join("layer1-mlp.down_proj-0-0-0.5.pt")).unwrap();
    assert_eq!(a.len(), 1);
    assert!(!a[0].1.integer);
    assert_eq!(a[0].1.values, want.array_f32("a").unwrap());
    // A transposed view: the reader must follow the strides.
    let q = read_pt(&dir.join("layer1-self_attn.q_proj-2-4-0.5.pt")).unwrap();
    assert_eq!(q[0].1.values, want.array_f32("qt").unwrap());
    let d = read_pt(&dir.join("dict.pt")).unwrap();
    let m = d.iter().find(|(k, _)| k == "m").unwrap();
    assert!(m.1.integer);
    assert_eq!(m.1.values, want.array_f32("m").unwrap());
    let w = d.iter().find(|(k, _)| k == "w").unwrap();
    assert_eq!(w.1.values, want.array_f32("w").unwrap());
    assert_eq!(
        layer_key_from_file_name(std::path::Path::new("x/layer12-mlp.up_proj-2-4-0.5.pt")),
        "layer12-mlp.up_proj"
    );
    // The study's mask = W != 0: comparing the .pt with itself through the loader.
    let layers =
        sparsity_pruning::io::load_masked_input(&dir.join("layer1-mlp.down_proj-0-0-0.5.pt"))
            .unwrap();
    assert_eq!(layers[0].name, "layer1-mlp.down_proj");
    let zeros = want
        .array_f32("a")
        .unwrap()
        .iter()
        .filter(|&&v| v == 0.0)
        .count() as u64;
    assert_eq!(layers[0].mask.count_ones(), zeros);
    let e = read_pt(&dir.join("expected.safetensors")).unwrap_err();
    assert!(e.to_string().contains("expected.safetensors"));
}
