//! Acceptance tests of issue #5: Hamming vs naive (proptest, odd sizes), symmetry, planted
//! partition recovery, uniform-random null, procedure invariants.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sparsity_clustering::hamming::{
    all_pairs, cross, nearest_neighbours, one_vs_all, with_threads,
};
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
    fn hamming_equals_naive(n in 2usize..40, bits in (1usize..300).prop_filter("odd size: not a multiple of 64 bits", |b| b % 64 != 0), density in 0.05f64..0.95, seed in any::<u64>()) {
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

#[test]
fn word_boundary_bit_lengths_match_naive() {
    // Exactly around the u64 word boundaries, where padding bugs would show.
    for bits in [1usize, 63, 64, 65, 127, 128, 129, 191, 4097] {
        let (m, dense) = random_bits(7, bits, 0.5, bits as u64);
        assert_eq!(m.words_per_feature(), bits.div_ceil(64));
        let all = all_pairs(&m);
        for i in 0..7 {
            for j in 0..7 {
                assert_eq!(all.count(i, j), naive(&dense[i], &dense[j]), "bits {bits}");
            }
        }
        // All-ones features: the distance to all-zeros is exactly n_bits (no padding counted).
        let ones = BinaryMatrix::from_fn(2, bits, |f, _| f == 0).unwrap();
        assert_eq!(all_pairs(&ones).count(0, 1) as usize, bits);
    }
}

#[test]
fn thread_count_does_not_change_results() {
    let (m, _) = random_bits(301, 777, 0.3, 4);
    let one = with_threads(1, || all_pairs(&m)).unwrap();
    let two = with_threads(2, || all_pairs(&m)).unwrap();
    assert_eq!(one, two);
    let nn1 = with_threads(1, || nearest_neighbours(&m, 17, 40).unwrap()).unwrap();
    let nn2 = with_threads(2, || nearest_neighbours(&m, 17, 40).unwrap()).unwrap();
    assert_eq!(nn1, nn2);
    assert!(with_threads(0, || ()).is_err());
}

#[test]
fn legacy_sampled_metrics_are_seeded() {
    let (m, truth) = planted(4, 10, 300, 0.05, 12);
    let a = cluster_metrics(&m, &truth, ClusterMetricsParams::legacy(5)).unwrap();
    let b = cluster_metrics(&m, &truth, ClusterMetricsParams::legacy(5)).unwrap();
    assert_eq!(a, b);
    let exact = cluster_metrics(&m, &truth, ClusterMetricsParams::default()).unwrap();
    // 100 pairs per cluster pair, 50 sampled: an estimate close to, but not always equal to, the exact mean.
    let (ea, eb) = (a.between_mean.unwrap(), exact.between_mean.unwrap());
    assert!((ea - eb).abs() < 0.03, "sampled {ea} vs exact {eb}");
}

#[test]
fn mmm_coherence_of_planted_zero_blocks() {
    // Two clusters over 200 bits (B = 32 leaves a ragged block of 8 bits): cluster 0 is zero on
    // bits 0..96 and on the ragged tail 192..200, cluster 1 is zero on bits 96..192.
    let m = BinaryMatrix::from_fn(6, 200, |f, b| {
        if f < 3 {
            (96..192).contains(&b) && (b + f) % 3 == 0
        } else {
            !(96..192).contains(&b) && (b + f) % 2 == 0
        }
    })
    .unwrap();
    let labels = [0, 0, 0, 1, 1, 1];
    let c = sparsity_clustering::mmm::block_coherence(
        &m,
        &labels,
        32,
        sparsity_clustering::mmm::RaggedBlock::Include,
    )
    .unwrap();
    let g0 = c.per_cluster[0].as_ref().unwrap();
    let g1 = c.per_cluster[1].as_ref().unwrap();
    assert_eq!((g0.coherent_blocks, g0.total_blocks), (4, 7)); // 3 full + the ragged tail
    assert_eq!((g1.coherent_blocks, g1.total_blocks), (3, 7));
    assert!((c.weighted_mean - 0.5).abs() < 1e-12);
    assert!(c.mmm_candidate);
    let d = sparsity_clustering::mmm::block_coherence(
        &m,
        &labels,
        32,
        sparsity_clustering::mmm::RaggedBlock::Drop,
    )
    .unwrap();
    assert_eq!(d.per_cluster[0].as_ref().unwrap().total_blocks, 6);
    assert!((d.weighted_mean - 0.5).abs() < 1e-12);
}

#[cfg(feature = "plots")]
#[test]
fn report_on_planted_data_with_plots() {
    use sparsity_clustering::report::{
        ClusterReport, TensorClusterParams, cluster_binary, separation_heatmap_of,
    };
    let (m, truth) = planted(4, 20, 200, 0.05, 21);
    let dir = tempfile::tempdir().unwrap();
    let params = TensorClusterParams {
        neighbourhood: NeighbourhoodParams {
            reference: ReferenceChoice::Index(0),
            n_neighbours: 79,
            ks: vec![4, 6],
            legacy_mmm_group: Some(8),
            ..NeighbourhoodParams::default()
        },
        executions: Some(3),
        ..TensorClusterParams::default()
    };
    let t = cluster_binary(&m, "planted", [200, 80], &params, Some(dir.path())).unwrap();
    assert_eq!(t.subset.len(), 80);
    // k = 4 recovers the planted partition (subset order: reference, then neighbours).
    let k4 = &t.per_k[0];
    let truth_subset: Vec<usize> = t.subset.iter().map(|&f| truth[f]).collect();
    assert_eq!(adjusted_rand_index(&truth_subset, &k4.labels).unwrap(), 1.0);
    assert!(k4.metrics.separation_ratio.unwrap() > 5.0);
    assert!(k4.centroid_metrics.separation_ratio.unwrap() > 1.0);
    assert_eq!(t.separation_by_method.len(), 3);
    assert!(
        t.separation_by_method
            .iter()
            .all(|s| s.per_k[0].ari_vs_main == 1.0)
    );
    let me = t.multi_execution.as_ref().unwrap();
    assert_eq!(me.references.len(), 3);
    assert_eq!(t.plots.len(), 5);
    for p in &t.plots {
        let bytes = std::fs::read(dir.path().join(p)).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "{p}");
    }
    let heat = dir.path().join("heat.png");
    separation_heatmap_of(std::slice::from_ref(&t), &heat).unwrap();
    assert!(heat.is_file());
    assert!(separation_heatmap_of(&[], &heat).is_err());
    // The report round-trips through JSON.
    let mut r = ClusterReport::new(std::path::Path::new("x.safetensors"), &params, "rev".into());
    r.tensors.push(t);
    let back: ClusterReport = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(back.params, r.params);
    let (b, t) = (&back.tensors[0], &r.tensors[0]);
    assert_eq!(b.subset, t.subset);
    assert_eq!(b.neighbour_counts, t.neighbour_counts);
    for (bk, tk) in b.per_k.iter().zip(&t.per_k) {
        assert_eq!(bk.labels, tk.labels);
        let (x, y) = (bk.metrics.separation_ratio, tk.metrics.separation_ratio);
        assert!((x.unwrap() - y.unwrap()).abs() < 1e-12);
    }
}
