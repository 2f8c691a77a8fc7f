//! Invariants (proptest), streaming = one-shot, merge associativity, errors, layer dynamics, plots.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ndarray::{Array1, Array2, Array3, Axis, s};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sparsity_metrics::{
    ActivationHistogram, Aggregation, MetricsError, NeuronStats, NeuronStatsParams, ReportParams,
    SparsityReport, ThresholdSource, gini_sparsity, hoyer_sparsity, layer_dynamics,
    optimal_threshold, percentile_sparsity,
};

fn random(rows: usize, cols: usize, seed: u64) -> Array2<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Array2::from_shape_fn((rows, cols), |(_, j)| {
        let x: f32 = rng.random_range(-1.0..1.0);
        if j % 3 == 0 {
            x.max(0.0) * (j as f32 + 1.0)
        } else {
            x * 3.0 + 1.0
        }
    })
}

fn close(a: &Array1<f64>, b: &Array1<f64>, tol: f64) {
    for (x, y) in a.iter().zip(b) {
        assert!(
            (x - y).abs() <= tol * x.abs().max(y.abs()).max(1e-300),
            "{x} vs {y}"
        );
    }
}

fn stats(n: usize) -> NeuronStats {
    NeuronStatsParams::new(n)
        .aggregation(Aggregation::PerToken)
        .build()
        .unwrap()
}

fn assert_same(a: &NeuronStats, b: &NeuronStats) {
    assert_eq!(a.sample_count(), b.sample_count());
    assert_eq!(a.token_count(), b.token_count());
    close(&a.mean().unwrap(), &b.mean().unwrap(), 1e-12);
    close(&a.variance().unwrap(), &b.variance().unwrap(), 1e-12);
    close(&a.mean_abs().unwrap(), &b.mean_abs().unwrap(), 1e-12);
    assert_eq!(a.max_abs().unwrap(), b.max_abs().unwrap());
    assert_eq!(a.zero_fraction().unwrap(), b.zero_fraction().unwrap());
    assert_eq!(
        a.below_threshold_fraction().unwrap(),
        b.below_threshold_fraction().unwrap()
    );
    assert_eq!(a.histogram(), b.histogram());
}

#[test]
fn variance_matches_two_pass_reference() {
    let x = random(500, 17, 1);
    let mut st = stats(17);
    st.update(x.view()).unwrap();
    let x64 = x.mapv(f64::from);
    let mean = x64.mean_axis(Axis(0)).unwrap();
    let var = x64.var_axis(Axis(0), 0.0);
    close(&st.mean().unwrap(), &mean, 1e-12);
    close(&st.variance().unwrap(), &var, 1e-12);
    close(
        &st.variance_ddof(1).unwrap(),
        &x64.var_axis(Axis(0), 1.0),
        1e-12,
    );
}

#[test]
fn per_sequence_mean_is_variance_of_sequence_means() {
    let x = random(6 * 9, 5, 2)
        .into_shape_with_order((6, 9, 5))
        .unwrap();
    let mut st = NeuronStatsParams::new(5).build().unwrap();
    st.update_sequences(x.view()).unwrap();
    let means = x.mapv(f64::from).mean_axis(Axis(1)).unwrap();
    close(
        &st.variance().unwrap(),
        &means.var_axis(Axis(0), 0.0),
        1e-12,
    );
    assert_eq!(st.sample_count(), 6);
    assert_eq!(st.token_count(), 54);
}

#[test]
fn thread_count_does_not_change_results() {
    let x = random(3000, 1024, 3);
    let run = |threads| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut st = stats(1024);
            st.update(x.view()).unwrap();
            st
        })
    };
    let (a, b) = (run(1), run(2));
    assert_eq!(a.variance().unwrap(), b.variance().unwrap());
    assert_eq!(a.histogram(), b.histogram());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn streaming_over_any_split_equals_one_shot(rows in 2usize..300, cols in 1usize..40, seed in 0u64..1000, cuts in proptest::collection::vec(0usize..300, 0..5)) {
        let x = random(rows, cols, seed);
        let mut one = stats(cols);
        one.update(x.view()).unwrap();
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % rows).collect();
        cuts.push(0);
        cuts.push(rows);
        cuts.sort();
        cuts.dedup();
        let mut streamed = stats(cols);
        for w in cuts.windows(2) {
            streamed.update(x.slice(s![w[0]..w[1], ..])).unwrap();
        }
        assert_same(&one, &streamed);
    }

    #[test]
    fn merge_is_associative(rows in 3usize..200, cols in 1usize..20, seed in 0u64..1000) {
        let x = random(rows, cols, seed);
        let third = rows / 3;
        let parts: Vec<NeuronStats> = [0..third, third..2 * third, 2 * third..rows].into_iter().map(|r| {
            let mut st = stats(cols);
            if !r.is_empty() { st.update(x.slice(s![r, ..])).unwrap(); }
            st
        }).collect();
        let mut left = parts[0].clone();
        left.merge(&parts[1]).unwrap();
        left.merge(&parts[2]).unwrap();
        let mut bc = parts[1].clone();
        bc.merge(&parts[2]).unwrap();
        let mut right = parts[0].clone();
        right.merge(&bc).unwrap();
        assert_same(&left, &right);
    }

    #[test]
    fn gini_of_constant_is_zero_and_one_hot_is_n_minus_1_over_n(n in 1usize..500, c in 0.001f64..1e6, hot in 0usize..500) {
        let g = gini_sparsity(Array1::from_elem(n, c).view()).unwrap();
        prop_assert!(g.gini_coefficient.abs() < 1e-9);
        let mut v = Array1::zeros(n);
        v[hot % n] = c;
        let g = gini_sparsity(v.view()).unwrap();
        prop_assert!((g.gini_coefficient - (n as f64 - 1.0) / n as f64).abs() < 1e-9);
        if n >= 2 {
            prop_assert!((hoyer_sparsity(v.view()).unwrap() - 1.0).abs() < 1e-9);
        }
    }

    #[test]
    fn every_sparsity_is_in_unit_interval(v in proptest::collection::vec(-1e3f64..1e3, 2..300)) {
        let v = Array1::from(v);
        prop_assume!(v.iter().any(|x| *x != 0.0));
        let r = SparsityReport::from_values(v.view(), &ReportParams::default()).unwrap();
        for (m, s) in r.method_sparsities() {
            prop_assert!((0.0..=1.0).contains(&s), "{} = {}", m, s);
        }
    }
}

#[test]
fn errors_name_the_fault_instead_of_making_up_values() {
    let mut st = stats(4);
    let mut x = Array2::<f32>::ones((70, 4));
    x[[65, 2]] = f32::NAN;
    match st.update(x.view()) {
        Err(MetricsError::NonFinite { position, .. }) => assert_eq!(position, vec![65, 2]),
        other => panic!("{other:?}"),
    }
    assert_eq!(st.token_count(), 0, "failed batch must not be counted");
    let mut x3 = Array3::<f64>::ones((3, 5, 4));
    x3[[2, 1, 3]] = f64::INFINITY;
    let mut st3 = NeuronStatsParams::new(4)
        .aggregation(Aggregation::PerToken)
        .build()
        .unwrap();
    match st3.update_sequences(x3.view()) {
        Err(MetricsError::NonFinite { position, .. }) => assert_eq!(position, vec![2, 1, 3]),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        st.update(Array2::<f32>::ones((2, 5)).view()),
        Err(MetricsError::ShapeMismatch { expected: 4, .. })
    ));
    assert!(matches!(
        st.update(Array2::<f32>::ones((0, 4)).view()),
        Err(MetricsError::Empty { .. })
    ));
    assert!(matches!(st.variance(), Err(MetricsError::Empty { .. })));
    let v = Array1::from(vec![1.0, 2.0, 3.0]);
    assert!(matches!(
        percentile_sparsity(v.view(), &[101.0]),
        Err(MetricsError::PercentileOutOfRange(_))
    ));
    assert!(matches!(
        optimal_threshold(v.view(), 1.5),
        Err(MetricsError::TargetOutOfRange { .. })
    ));
    assert!(matches!(
        SparsityReport::from_values(Array1::<f64>::zeros(0).view(), &ReportParams::default()),
        Err(MetricsError::Empty { .. })
    ));
    let bad = Array1::from(vec![1.0, f64::NAN]);
    assert!(matches!(
        SparsityReport::from_values(bad.view(), &ReportParams::default()),
        Err(MetricsError::NonFinite { .. })
    ));
    let msg = hoyer_sparsity(Array1::<f64>::zeros(5).view())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("Hoyer"), "{msg}");
}

#[test]
fn layer_dynamics_keeps_the_fallback_rule_and_reports_it() {
    let tiny = Array1::from_iter((1..=100).map(|i| i as f64 * 1e-6)); // all below 0.01
    let spread = Array1::from_iter((1..=100).map(|i| i as f64 * 1e-3)); // 9 % below 0.01
    let d = layer_dynamics(&[tiny.view(), spread.view()], 0.01, 0.3).unwrap();
    assert_eq!(d[0].threshold_source, ThresholdSource::OptimalFallback);
    assert_eq!(d[0].traditional_sparsity, 1.0);
    assert!((d[0].sparsity - 0.30).abs() < 1e-12);
    assert_eq!(d[1].threshold_source, ThresholdSource::Traditional);
    assert!((d[1].sparsity - 0.09).abs() < 1e-12);
    assert!((d[1].mean_variance - 0.0505).abs() < 1e-12);
}

#[test]
fn calibrated_threshold_sparsity_is_exact() {
    let x = random(400, 50, 9);
    let mut st = stats(50);
    st.update(x.view()).unwrap();
    let h: &ActivationHistogram = st.histogram().unwrap();
    for target in [0.0, 0.1, 0.4, 0.5, 0.9, 1.0] {
        let c = h.calibrate(target).unwrap();
        let direct = x
            .iter()
            .filter(|a| f64::from(a.abs()) <= c.threshold)
            .count() as f64
            / x.len() as f64;
        assert_eq!(c.sparsity, direct);
        if target > 0.1 {
            assert!(
                (c.sparsity - target).abs() < 0.02,
                "{target}: {}",
                c.sparsity
            );
        } else {
            // A third of the columns are ReLU'd: the exact zeros (≈ 1/6 of all values) are
            // dropped by the smallest τ (as τ = 0 drops them in `teal_threshold`), so 0 and 0.1
            // calibrate to the zero mass.
            assert_eq!(c.threshold, f64::from(f32::from_bits((1 << 16) - 1)));
            let zeros = x.iter().filter(|a| **a == 0.0).count() as f64 / x.len() as f64;
            assert_eq!(c.sparsity, zeros);
        }
    }
}

#[cfg(feature = "plots")]
#[test]
fn plots_are_written_as_png_and_svg() {
    let dir = tempfile::tempdir().unwrap();
    let a = Array1::from_iter((1..=300).map(|i| (i as f64 * 0.37).sin().abs() * 1e-2));
    let b = Array1::from_iter((1..=300).map(|i| (i as f64).powi(2) * 1e-6));
    let ra = SparsityReport::from_values(a.view(), &ReportParams::default()).unwrap();
    let rb = SparsityReport::from_values(b.view(), &ReportParams::default()).unwrap();
    let reports = [("mamba", &ra), ("gpt2", &rb)];
    for ext in ["png", "svg"] {
        let m = dir.path().join(format!("methods.{ext}"));
        let p = dir.path().join(format!("percentiles.{ext}"));
        sparsity_metrics::plot_methods(&m, &reports).unwrap();
        sparsity_metrics::plot_percentiles(&p, &reports).unwrap();
        assert!(std::fs::metadata(&m).unwrap().len() > 5000);
        assert!(std::fs::metadata(&p).unwrap().len() > 5000);
    }
    let svg = std::fs::read_to_string(dir.path().join("methods.svg")).unwrap();
    assert!(svg.contains("gini") && svg.contains("mamba"));
    assert!(sparsity_metrics::plot_methods(&dir.path().join("x.txt"), &reports).is_err());
}

/// The one TEAL calibration: numpy's linear-interpolation quantile of |x| (recomputed here
/// from its definition), `|x| ≤ τ` drops the target fraction, τ = 0 at target 0, typed errors.
#[test]
fn teal_threshold_is_the_linear_quantile_and_drops_the_target() {
    use sparsity_metrics::{teal_threshold, teal_threshold_f32};
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let mut mags: Vec<f64> = (0..12_000)
        .map(|_| f64::from(rng.random_range(-1.0f32..1.0).abs()))
        .collect();
    mags.sort_by(f64::total_cmp);
    let n = mags.len();
    for s in [0.1, 0.25, 0.5, 0.731, 0.9] {
        let h = (n - 1) as f64 * s;
        let (lo, hi) = (mags[h.floor() as usize], mags[h.ceil() as usize]);
        let want = lo + (hi - lo) * (h - h.floor());
        let tau = teal_threshold(&mags, s).unwrap();
        assert!(
            (tau - want).abs() <= 1e-12 * want.max(1.0),
            "{s}: {tau} vs {want}"
        );
        let t32 = teal_threshold_f32(&mags, s).unwrap();
        assert!(f64::from(t32) <= tau);
        let dropped = mags.iter().filter(|m| **m <= f64::from(t32)).count();
        assert_eq!(dropped, mags.iter().filter(|m| **m <= tau).count());
        assert!(
            (dropped as f64 / n as f64 - s).abs() <= 1.0 / n as f64 + 1e-12,
            "{s}"
        );
    }
    assert_eq!(teal_threshold(&mags, 0.0).unwrap(), 0.0);
    assert!(teal_threshold(&mags, 1.0).is_err());
    assert!(teal_threshold(&[2.0, 1.0], 0.5).is_err());
    assert!(teal_threshold(&[0.0, f64::NAN], 0.5).is_err());
}
