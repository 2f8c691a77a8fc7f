//! Acceptance tests of issue #5: Hamming vs naive (proptest, odd sizes), symmetry, planted
//! partition recovery, uniform-random null, procedure invariants.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sparsity_clustering::hamming::{all_pairs, cross, nearest_neighbours, one_vs_all};
use sparsity_clustering::kmeans::HammingKMeansParams;
use sparsity_clustering::metrics::{ClusterMetricsParams, adjusted_rand_index, cluster_metrics};
use sparsity_clustering::procedure::{
    ClusterMethod, NeighbourhoodParams, ReferenceChoice, multi_execution, neighbourhood_clustering,
};
use sparsity_clustering::ward::ward;
use sparsity_clustering::{Binarize, BinaryMatrix, FeatureAxis};

fn random_bits(n: usize, bits: usize, density: f64, seed: u64) -> (BinaryMatrix, Vec<Vec<bool>>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dense: Vec<Vec<bool>> = (0..n)
        .map(|_| (0..bits).map(|_| rng.random_bool(density)).collect())
        .collect();
    let m = BinaryMatrix::from_fn(n, bits, |f, b| dense[f][b]).unwrap();
    (m, dense)
}

fn naive(a: &[bool], b: &[bool]) -> u32 {
    a.iter().zip(b).filter(|(x, y)| x != y).count() as u32
}

/// `k` random prototypes, `per` features each (interleaved), every bit flipped with prob `noise`.
fn planted(k: usize, per: usize, bits: usize, noise: f64, seed: u64) -> (BinaryMatrix, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let protos: Vec<Vec<bool>> = (0..k)
        .map(|_| (0..bits).map(|_| rng.random_bool(0.5)).collect())
        .collect();
    let truth: Vec<usize> = (0..k * per).map(|i| i % k).collect();
    let rows: Vec<Vec<bool>> = truth
        .iter()
        .map(|&c| {
            protos[c]
                .iter()
                .map(|&b| b ^ rng.random_bool(noise))
                .collect()
        })
        .collect();
    (
        BinaryMatrix::from_fn(k * per, bits, |f, b| rows[f][b]).unwrap(),
        truth,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn hamming_equals_naive(n in 2usize..40, bits in 1usize..300, density in 0.05f64..0.95, seed in any::<u64>()) {
        let (m, dense) = random_bits(n, bits, density, seed);
        let all = all_pairs(&m);
        prop_assert_eq!(all.condensed().len(), n * (n - 1) / 2);
        let sq = all.to_square();
        for i in 0..n {
            prop_assert_eq!(sq[[i, i]], 0);
            let ova = one_vs_all(&m, i).unwrap();
            for j in 0..n {
                let want = naive(&dense[i], &dense[j]);
                prop_assert_eq!(sq[[i, j]], want);
                prop_assert_eq!(sq[[i, j]], sq[[j, i]]);
                prop_assert_eq!(ova[j], want);
                prop_assert!((all.distance(i, j) - f64::from(want) / bits as f64).abs() < 1e-15);
            }
        }
        let c = cross(&m, &m).unwrap();
        prop_assert_eq!(c, sq);
    }

    #[test]
    fn neighbours_equal_naive_sort(n in 3usize..60, bits in 1usize..200, seed in any::<u64>(), r in any::<prop::sample::Index>(), kf in 0.0f64..1.0) {
        let (m, dense) = random_bits(n, bits, 0.3, seed);
        let reference = r.index(n);
        let k = 1 + ((n - 2) as f64 * kf) as usize;
        let nn = nearest_neighbours(&m, reference, k).unwrap();
        let mut want: Vec<(u32, usize)> = (0..n).filter(|&j| j != reference).map(|j| (naive(&dense[reference], &dense[j]), j)).collect();
        want.sort();
        want.truncate(k);
        prop_assert_eq!(nn.indices, want.iter().map(|w| w.1).collect::<Vec<_>>());
        prop_assert_eq!(nn.counts, want.iter().map(|w| w.0).collect::<Vec<_>>());
    }

    #[test]
    fn transpose_and_dense_roundtrip(rows in 1usize..90, cols in 1usize..90, seed in any::<u64>()) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let w = ndarray::Array2::from_shape_fn((rows, cols), |_| if rng.random_bool(0.4) { rng.random::<f32>() - 0.5 } else { 0.0 });
        let cols_m = BinaryMatrix::from_dense(w.view(), Binarize::NonZero, FeatureAxis::Columns).unwrap();
        let rows_m = BinaryMatrix::from_dense(w.view(), Binarize::NonZero, FeatureAxis::Rows).unwrap();
        prop_assert_eq!(cols_m.transpose(), rows_m.clone());
        let mask = w.mapv(|x| x != 0.0);
        prop_assert_eq!(BinaryMatrix::from_mask(mask.view(), FeatureAxis::Rows).unwrap(), rows_m);
    }
}

#[test]
fn planted_partition_recovered_exactly() {
    for (k, seed) in [(4usize, 1u64), (8, 2), (16, 3)] {
        let (m, truth) = planted(k, 16, 1000, 0.05, seed);
        let fit = HammingKMeansParams::new(k).seed(11).fit(&m).unwrap();
        let ari = adjusted_rand_index(&truth, &fit.labels).unwrap();
        assert_eq!(ari, 1.0, "k = {k}: ARI {ari}");
        let met = cluster_metrics(&m, &fit.labels, ClusterMetricsParams::default()).unwrap();
        let sep = met.separation_ratio.unwrap();
        assert!(sep > 5.0, "k = {k}: separation {sep}");
        // Ward on the same data recovers it too.
        let wl = ward(&m).unwrap().cut(k).unwrap();
        assert_eq!(
            adjusted_rand_index(&truth, &wl).unwrap(),
            1.0,
            "ward k = {k}"
        );
    }
}

#[test]
fn linfa_kmeans_agrees_on_planted_data() {
    let (m, truth) = planted(4, 12, 400, 0.05, 5);
    let r = sparsity_clustering::linfa_kmeans::linfa_kmeans(
        &m,
        &sparsity_clustering::linfa_kmeans::LinfaKMeansParams::new(4).seed(3),
    )
    .unwrap();
    assert_eq!(adjusted_rand_index(&truth, &r.labels).unwrap(), 1.0);
    assert_eq!(r.centroids.dim(), (4, 400));
}

#[test]
fn uniform_random_separation_is_about_one() {
    let (m, _) = random_bits(256, 2048, 0.5, 99);
    for k in [4, 8, 16] {
        let fit = HammingKMeansParams::new(k).seed(1).fit(&m).unwrap();
        let met = cluster_metrics(&m, &fit.labels, ClusterMetricsParams::default()).unwrap();
        let sep = met.separation_ratio.unwrap();
        assert!((0.95..1.1).contains(&sep), "k = {k}: separation {sep}");
    }
}

#[test]
fn procedure_defaults_and_determinism() {
    let (m, _) = planted(8, 40, 512, 0.05, 8);
    let p = NeighbourhoodParams::default();
    let a = neighbourhood_clustering(&m, &p).unwrap();
    let b = neighbourhood_clustering(&m, &p).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.subset.len(), 129);
    assert_eq!(a.subset[0], a.reference);
    assert!(!a.neighbours.contains(&a.reference));
    assert!(a.neighbour_counts.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(
        a.per_k.iter().map(|r| r.k).collect::<Vec<_>>(),
        vec![4, 8, 16]
    );
    for r in &a.per_k {
        assert_eq!(r.labels.len(), 129);
        assert_eq!(r.sizes.iter().sum::<usize>(), 129);
        assert_eq!(r.coherence.len(), 4);
    }
    // The reference's 39 cluster mates are its nearest neighbours (5 % noise vs 50 %).
    let mates = a.neighbours[..39]
        .iter()
        .filter(|&&j| j % 8 == a.reference % 8)
        .count();
    assert_eq!(mates, 39);
    let ward_p = NeighbourhoodParams {
        method: ClusterMethod::Ward,
        reference: ReferenceChoice::Index(3),
        ..p.clone()
    };
    let w = neighbourhood_clustering(&m, &ward_p).unwrap();
    assert_eq!(w.reference, 3);
    let multi = multi_execution(&m, &p, 5, 42).unwrap();
    assert_eq!(multi.executions.len(), 5);
    let refs: std::collections::BTreeSet<usize> =
        multi.executions.iter().map(|e| e.reference).collect();
    assert_eq!(refs.len(), 5);
    for s in &multi.per_k {
        assert_eq!(s.ratios.len(), 5);
        assert!(s.min <= s.median && s.median <= s.max);
    }
    assert!(
        neighbourhood_clustering(
            &m,
            &NeighbourhoodParams {
                n_neighbours: 320,
                ..p.clone()
            }
        )
        .is_err()
    );
    assert!(neighbourhood_clustering(&m, &NeighbourhoodParams { ks: vec![200], ..p }).is_err());
}
