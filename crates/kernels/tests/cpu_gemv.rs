//! CPU masked GEMV against the naive f64 reference on the masked input.
#![allow(clippy::unwrap_used)]

use half::{bf16, f16};
use ndarray::{Array1, Array2, Axis, array};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sparsity_kernels::*;

fn random_weight_t<T: WeightElement>(rng: &mut ChaCha8Rng, n_in: usize, n_out: usize) -> Array2<T> {
    Array2::from_shape_simple_fn((n_in, n_out), || {
        T::from_f32(rng.random_range(-1.0f32..1.0))
    })
}

fn random_x(rng: &mut ChaCha8Rng, n: usize) -> Array1<f32> {
    Array1::from_shape_simple_fn(n, || rng.random_range(-2.0f32..2.0))
}

/// |y - ref| <= tol * (Σ|W·x| + tiny) elementwise.
fn assert_close(
    y: &Array1<f32>,
    reference: &Array1<f64>,
    scale: &Array1<f64>,
    tol: f64,
    what: &str,
) {
    assert_eq!(y.len(), reference.len());
    for (i, ((&a, &b), &s)) in y.iter().zip(reference).zip(scale).enumerate() {
        let err = (f64::from(a) - b).abs();
        assert!(
            err <= tol * (s + 1e-30),
            "{what}: y[{i}] = {a}, reference {b}, error {err} > {tol} * {s}"
        );
    }
}

fn check_type<T: WeightElement>(tol: f64) {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    // shapes that are not multiples of 4 rows, 8 lanes, 64-wide tiles or chunks
    for &(n_in, n_out) in &[
        (1usize, 1usize),
        (3, 5),
        (17, 9),
        (130, 67),
        (257, 1031),
        (1000, 2051),
        (33, 4099),
    ] {
        let w_t = random_weight_t::<T>(&mut rng, n_in, n_out);
        let x = random_x(&mut rng, n_in);
        for &tau in &[0.0f32, 0.5, 1.3] {
            let (reference, scale) = reference_gemv_masked(w_t.view(), x.view(), tau).unwrap();
            let y = gemv_masked(w_t.view(), x.view(), tau).unwrap();
            assert_close(
                &y,
                &reference,
                &scale,
                tol,
                &format!("{} masked {n_in}x{n_out} tau {tau}", T::NAME),
            );
            // sequential and tiny chunks give the same answer
            let cfg = GemvConfig {
                chunk_outputs: 24,
                parallel: false,
                ..GemvConfig::default()
            };
            let mut y2 = Array1::zeros(n_out);
            let stats = gemv_masked_into(w_t.view(), x.view(), tau, y2.view_mut(), &cfg).unwrap();
            assert_close(&y2, &reference, &scale, tol, "sequential");
            // the rayon path forced on every size, with small chunks
            for split_k in [false, true] {
                let par = GemvConfig {
                    chunk_outputs: 16,
                    parallel: true,
                    min_parallel_work: 0,
                    split_k,
                };
                let mut y3 = Array1::zeros(n_out);
                gemv_masked_into(w_t.view(), x.view(), tau, y3.view_mut(), &par).unwrap();
                assert_close(
                    &y3,
                    &reference,
                    &scale,
                    tol,
                    &format!("parallel split_k {split_k}"),
                );
                let mut yd = Array1::zeros(n_out);
                gemv_dense_into(w_t.view(), x.view(), yd.view_mut(), &par).unwrap();
                let (dense_ref, dense_scale) =
                    reference_gemv_masked(w_t.view(), x.view(), 0.0).unwrap();
                // exact zeros in x are skipped by the reference at τ = 0 and add 0 in the dense path
                assert_close(
                    &yd,
                    &dense_ref,
                    &dense_scale,
                    tol,
                    &format!("dense split_k {split_k}"),
                );
            }
            let kept = x.iter().filter(|v| v.abs() > tau).count();
            assert_eq!(stats.kept_inputs, kept);
            assert_eq!(stats.total_inputs, n_in);
        }
        // dense = masked at tau 0 for inputs without zeros, and = reference on x
        let (reference, scale) = reference_gemv_masked(w_t.view(), x.view(), 0.0).unwrap();
        let y = gemv_dense(w_t.view(), x.view()).unwrap();
        assert_close(&y, &reference, &scale, tol, "dense");
    }
}

#[test]
fn f32_matches_reference() {
    check_type::<f32>(1e-5);
}

#[test]
fn bf16_matches_reference() {
    check_type::<bf16>(1e-2);
}

#[test]
fn f16_matches_reference() {
    check_type::<f16>(1e-2);
}

#[test]
fn masking_actually_drops_inputs() {
    // W [out = 2, in = 4]; inputs 0 and 2 are at or below tau = 0.5
    let w = array![[1.0f32, 10.0, 100.0, 1000.0], [2.0, 20.0, 200.0, 2000.0]];
    let w_t = w.t().as_standard_layout().into_owned();
    let x = array![0.5f32, -1.0, 0.25, 2.0];
    let y = gemv_masked(w_t.view(), x.view(), 0.5).unwrap();
    assert_eq!(y.to_vec(), vec![-10.0 + 2000.0, -20.0 + 4000.0]);
    let y0 = gemv_masked(w_t.view(), x.view(), 0.0).unwrap();
    assert_eq!(
        y0.to_vec(),
        vec![0.5 - 10.0 + 25.0 + 2000.0, 1.0 - 20.0 + 50.0 + 4000.0]
    );
}

#[test]
fn all_zero_input_and_tau_above_every_input_give_zero() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let w_t = random_weight_t::<f32>(&mut rng, 77, 301);
    let zeros = Array1::<f32>::zeros(77);
    let mut y = Array1::from_elem(301, 5.0f32); // stale values must be overwritten
    let stats = gemv_masked_into(
        w_t.view(),
        zeros.view(),
        0.0,
        y.view_mut(),
        &GemvConfig::default(),
    )
    .unwrap();
    assert_eq!(stats.kept_inputs, 0);
    assert!(y.iter().all(|&v| v == 0.0));
    let x = random_x(&mut rng, 77);
    let tau = x.iter().fold(0.0f32, |m, v| m.max(v.abs())) + 0.01;
    let y = gemv_masked(w_t.view(), x.view(), tau).unwrap();
    assert!(y.iter().all(|&v| v == 0.0));
    let dense_zero = gemv_dense(w_t.view(), zeros.view()).unwrap();
    assert!(dense_zero.iter().all(|&v| v == 0.0));
}

#[test]
fn small_batch_matches_per_row_reference() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let (n_in, n_out) = (203, 517);
    let w_t = random_weight_t::<f32>(&mut rng, n_in, n_out);
    for batch in [1usize, 2, 5, 8] {
        let x = Array2::from_shape_simple_fn((batch, n_in), || rng.random_range(-2.0f32..2.0));
        let y = gemm_masked_small_batch(w_t.view(), x.view(), 0.8).unwrap();
        assert_eq!(y.dim(), (batch, n_out));
        for (b, row) in x.axis_iter(Axis(0)).enumerate() {
            let (reference, scale) = reference_gemv_masked(w_t.view(), row, 0.8).unwrap();
            assert_close(
                &y.row(b).to_owned(),
                &reference,
                &scale,
                1e-5,
                &format!("batch {batch} row {b}"),
            );
        }
    }
    let too_big = Array2::<f32>::zeros((9, n_in));
    assert!(matches!(
        gemm_masked_small_batch(w_t.view(), too_big.view(), 0.0),
        Err(KernelError::BatchTooLarge {
            batch: 9,
            max: 8,
            ..
        })
    ));
}

#[test]
fn shape_errors_name_the_operand() {
    let w_t = Array2::<f32>::zeros((10, 6));
    let x = Array1::<f32>::zeros(9);
    let err = gemv_masked(w_t.view(), x.view(), 0.0).unwrap_err();
    assert!(
        matches!(
            err,
            KernelError::ShapeMismatch {
                tensor: "x",
                got: 9,
                expected: 10,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("[10, 6]"), "{err}");
    let x = Array1::<f32>::zeros(10);
    let mut y = Array1::<f32>::zeros(5);
    let err =
        gemv_dense_into(w_t.view(), x.view(), y.view_mut(), &GemvConfig::default()).unwrap_err();
    assert!(
        matches!(
            err,
            KernelError::ShapeMismatch {
                tensor: "y",
                got: 5,
                expected: 6,
                ..
            }
        ),
        "{err}"
    );
    // a transposed view is not contiguous row-major
    let w = Array2::<f32>::zeros((6, 10));
    let err = gemv_masked(w.t(), x.view(), 0.0).unwrap_err();
    assert!(
        matches!(
            err,
            KernelError::NotContiguous {
                tensor: "weight_t",
                ..
            }
        ),
        "{err}"
    );
    assert!(matches!(
        gemv_masked(w_t.view(), x.view(), -1.0),
        Err(KernelError::InvalidThreshold { .. })
    ));
    assert!(matches!(
        gemv_masked(w_t.view(), x.view(), f32::NAN),
        Err(KernelError::InvalidThreshold { .. })
    ));
    let empty = Array2::<f32>::zeros((0, 6));
    assert!(matches!(
        gemv_masked(empty.view(), Array1::zeros(0).view(), 0.0),
        Err(KernelError::EmptyTensor {
            tensor: "weight_t",
            ..
        })
    ));
}

#[test]
fn sparse_linear_from_pytorch_layout() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let w = Array2::from_shape_simple_fn((37, 53), || rng.random_range(-1.0f32..1.0)); // [out, in]
    let x = random_x(&mut rng, 53);
    let layer = SparseLinear::<bf16>::from_weight(w.view(), 0.7).unwrap();
    assert_eq!((layer.in_features(), layer.out_features()), (53, 37));
    let y = layer.forward(x.view()).unwrap();
    let masked = mask_activations(x.view(), 0.7).unwrap();
    let exact = w.dot(&masked);
    for (a, b) in y.iter().zip(exact.iter()) {
        let scale: f32 = w.iter().map(|v| v.abs()).sum::<f32>() / 37.0 * 2.0;
        assert!((a - b).abs() <= 1e-2 * scale, "{a} vs {b}");
    }
    let xb = x.clone().insert_axis(Axis(0));
    let yb = layer.forward_batch(xb.view()).unwrap();
    assert_eq!(yb.row(0), y);
    let mut layer = layer;
    assert!(layer.set_threshold(-0.1).is_err());
    layer.set_threshold(0.0).unwrap();
    let mut y_dense = Array1::zeros(37);
    layer.gemv_dense(x.view(), y_dense.view_mut()).unwrap();
    assert_eq!(layer.forward(x.view()).unwrap(), y_dense);
}

#[test]
fn calibration_hits_the_target_quantile() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let acts = Array2::from_shape_simple_fn((64, 100), || rng.random_range(-3.0f32..3.0));
    for s in [0.0, 0.25, 0.5, 0.9] {
        let t = ThresholdCalibration::new(s).fit(acts.view()).unwrap();
        let dropped = acts.iter().filter(|v| v.abs() <= t.tau).count();
        assert_eq!(dropped, (s * 6400.0).floor() as usize, "s = {s}");
        assert!((t.achieved_sparsity - s).abs() < 1e-9);
        assert_eq!(t.n_values, 6400);
    }
    assert_eq!(
        ThresholdCalibration::new(0.0).fit(acts.view()).unwrap().tau,
        0.0
    );
    assert!(ThresholdCalibration::new(1.0).fit(acts.view()).is_err());
    let mut bad = acts.clone();
    bad[[3, 4]] = f32::NAN;
    assert!(matches!(
        ThresholdCalibration::new(0.5).fit(bad.view()),
        Err(KernelError::NonFiniteActivation { index: 304 })
    ));
}
