//! Hamming k-means: k-medians in Hamming space on bit-packed features.
//!
//! Objective: minimise `Σ_i d_H(x_i, c_{label(i)})` over labels and binary centroids. The
//! Lloyd-style alternation assigns each feature to its nearest centroid (ties → lower cluster
//! index) and sets each centroid bit to the majority vote of its members (`2·ones > size` → 1,
//! `2·ones < size` → 0, an exact tie keeps the previous bit), which is the exact minimiser of
//! the L1 / Hamming cost per bit (the coordinate-wise median; "k-modes" of Huang 1998 on binary
//! data). Seeding is k-means++ (Arthur & Vassilvitskii 2007) with weights `d_H` (= squared
//! Euclidean distance for 0/1 vectors, what scikit-learn's k-means++ would use), drawn from a
//! `ChaCha8Rng` seeded by the caller. Iteration stops when no label changes or at
//! `max_iterations`; the best of `n_init` seeded runs (lowest cost, then earliest) is kept.
//! Clusters are renumbered by first appearance, so feature 0 is in cluster 0. An emptied
//! cluster is re-seeded with the feature farthest from its centroid.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::binary::{BinaryMatrix, WORD_BITS};
use crate::error::{ClusterError, Result};
use crate::hamming::hamming_count;

/// Parameters of [`HammingKMeans`] (builder; check with [`HammingKMeansParams::check`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HammingKMeansParams {
    /// Number of clusters `k`.
    pub n_clusters: usize,
    /// Independent k-means++ restarts; the lowest-cost run is kept (default 10, as scikit-learn's `n_init`).
    pub n_init: usize,
    /// Iteration cap per run (default 300).
    pub max_iterations: usize,
    /// Seed of the `ChaCha8Rng` that drives the seeding (default 42).
    pub seed: u64,
}

/// [`HammingKMeansParams`] that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct HammingKMeansValidParams(HammingKMeansParams);

impl HammingKMeansParams {
    /// Defaults for `n_clusters` clusters.
    pub fn new(n_clusters: usize) -> Self {
        Self {
            n_clusters,
            n_init: 10,
            max_iterations: 300,
            seed: 42,
        }
    }

    /// Sets the number of restarts.
    pub fn n_init(mut self, n_init: usize) -> Self {
        self.n_init = n_init;
        self
    }

    /// Sets the iteration cap.
    pub fn max_iterations(mut self, max_iterations: usize) -> Self {
        self.max_iterations = max_iterations;
        self
    }

    /// Sets the seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Validates the parameters.
    pub fn check(self) -> Result<HammingKMeansValidParams> {
        if self.n_clusters == 0 {
            return Err(ClusterError::InvalidParam {
                name: "k",
                value: "0".into(),
                reason: "need at least one cluster",
            });
        }
        if self.n_init == 0 {
            return Err(ClusterError::InvalidParam {
                name: "n_init",
                value: "0".into(),
                reason: "need at least one run",
            });
        }
        if self.max_iterations == 0 {
            return Err(ClusterError::InvalidParam {
                name: "max_iterations",
                value: "0".into(),
                reason: "need at least one iteration",
            });
        }
        Ok(HammingKMeansValidParams(self))
    }

    /// Validates and fits in one call.
    pub fn fit(self, data: &BinaryMatrix) -> Result<HammingKMeans> {
        self.check()?.fit(data)
    }
}

/// A fitted Hamming k-means model.
#[derive(Debug, Clone, PartialEq)]
pub struct HammingKMeans {
    /// Cluster of every feature, numbered by first appearance, `[n_features]`.
    pub labels: Vec<usize>,
    /// Majority-vote centroids, `k` features of `n_bits` bits.
    pub centroids: BinaryMatrix,
    /// Members per cluster, `[k]` (0 only when there are fewer distinct features than `k`).
    pub sizes: Vec<usize>,
    /// `Σ_i d_H(x_i, c_{label(i)})` in raw bit counts.
    pub cost: u64,
    /// Iterations of the kept run.
    pub n_iterations: usize,
    /// Whether the kept run stopped because no label changed (not at the cap).
    pub converged: bool,
}

impl HammingKMeansValidParams {
    /// The validated parameters.
    pub fn params(&self) -> &HammingKMeansParams {
        &self.0
    }

    /// Clusters the features of `data`.
    pub fn fit(&self, data: &BinaryMatrix) -> Result<HammingKMeans> {
        let p = &self.0;
        let n = data.n_features();
        if p.n_clusters > n {
            return Err(ClusterError::TooManyClusters {
                k: p.n_clusters,
                n_features: n,
            });
        }
        let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
        let mut best: Option<Run> = None;
        for _ in 0..p.n_init {
            let seeds = kmeans_pp(data, p.n_clusters, &mut rng);
            let run = lloyd(data, seeds, p.max_iterations)?;
            if best.as_ref().is_none_or(|b| run.cost < b.cost) {
                best = Some(run);
            }
        }
        let run = best.ok_or(ClusterError::InvalidParam {
            name: "n_init",
            value: "0".into(),
            reason: "need at least one run",
        })?;
        canonical(data, run, p.n_clusters)
    }
}

struct Run {
    labels: Vec<usize>,
    centroids: BinaryMatrix,
    cost: u64,
    n_iterations: usize,
    converged: bool,
}

/// k-means++ seeding with weights `d_H(x, nearest chosen seed)`.
fn kmeans_pp(data: &BinaryMatrix, k: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let n = data.n_features();
    let first = rng.random_range(0..n);
    let mut seeds = vec![first];
    let mut nearest: Vec<u32> = (0..n)
        .map(|i| hamming_count(data.feature_words(i), data.feature_words(first)))
        .collect();
    while seeds.len() < k {
        let total: u64 = nearest.iter().map(|&d| u64::from(d)).sum();
        let next = if total == 0 {
            // Every feature equals a seed already: any feature is as good as another.
            rng.random_range(0..n)
        } else {
            let r = rng.random_range(0..total);
            let mut acc = 0u64;
            let mut pick = n - 1;
            for (i, &d) in nearest.iter().enumerate() {
                acc += u64::from(d);
                if acc > r {
                    pick = i;
                    break;
                }
            }
            pick
        };
        seeds.push(next);
        let c = data.feature_words(next);
        for (i, d) in nearest.iter_mut().enumerate() {
            *d = (*d).min(hamming_count(data.feature_words(i), c));
        }
    }
    seeds
}

fn assign(data: &BinaryMatrix, centroids: &BinaryMatrix) -> Vec<(usize, u32)> {
    (0..data.n_features())
        .into_par_iter()
        .map(|i| {
            let x = data.feature_words(i);
            let mut best = (0usize, u32::MAX);
            for c in 0..centroids.n_features() {
                let d = hamming_count(x, centroids.feature_words(c));
                if d < best.1 {
                    best = (c, d);
                }
            }
            best
        })
        .collect()
}

fn lloyd(data: &BinaryMatrix, seeds: Vec<usize>, max_iterations: usize) -> Result<Run> {
    let k = seeds.len();
    let nb = data.n_bits();
    let mut centroids = data.select(&seeds)?;
    let mut labels: Vec<usize> = vec![usize::MAX; data.n_features()];
    let mut n_iterations = 0;
    let mut converged = false;
    let mut assigned = assign(data, &centroids);
    loop {
        n_iterations += 1;
        let changed = assigned.iter().zip(&labels).any(|(a, &l)| a.0 != l);
        for (l, a) in labels.iter_mut().zip(&assigned) {
            *l = a.0;
        }
        if !changed {
            converged = true;
            break;
        }
        if n_iterations >= max_iterations {
            break;
        }
        // Majority vote per bit.
        let mut ones = vec![0u32; k * nb];
        let mut sizes = vec![0usize; k];
        for (i, &l) in labels.iter().enumerate() {
            sizes[l] += 1;
            for (wi, &word) in data.feature_words(i).iter().enumerate() {
                let mut x = word;
                while x != 0 {
                    ones[l * nb + wi * WORD_BITS + x.trailing_zeros() as usize] += 1;
                    x &= x - 1;
                }
            }
        }
        let mut reseeded: Vec<usize> = Vec::new();
        for c in 0..k {
            if sizes[c] == 0 {
                // Re-seed an empty cluster with the feature farthest from its centroid.
                let far = assigned
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !reseeded.contains(i))
                    .max_by(|a, b| a.1.1.cmp(&b.1.1).then(b.0.cmp(&a.0)))
                    .map(|(i, _)| i);
                if let Some(i) = far {
                    reseeded.push(i);
                    for b in 0..nb {
                        centroids.set(c, b, data.get(i, b));
                    }
                }
                continue;
            }
            for b in 0..nb {
                let twice = 2 * ones[c * nb + b] as usize;
                if twice > sizes[c] {
                    centroids.set(c, b, true);
                } else if twice < sizes[c] {
                    centroids.set(c, b, false);
                }
            }
        }
        assigned = assign(data, &centroids);
    }
    let cost = assigned.iter().map(|a| u64::from(a.1)).sum();
    Ok(Run {
        labels,
        centroids,
        cost,
        n_iterations,
        converged,
    })
}

/// Renumbers clusters by first appearance (empty clusters last, in their old order).
fn canonical(data: &BinaryMatrix, run: Run, k: usize) -> Result<HammingKMeans> {
    let mut map = vec![usize::MAX; k];
    let mut next = 0;
    for &l in &run.labels {
        if map[l] == usize::MAX {
            map[l] = next;
            next += 1;
        }
    }
    for m in map.iter_mut() {
        if *m == usize::MAX {
            *m = next;
            next += 1;
        }
    }
    let mut order = vec![0usize; k];
    for (old, &new) in map.iter().enumerate() {
        order[new] = old;
    }
    let centroids = run.centroids.select(&order)?;
    let labels: Vec<usize> = run.labels.iter().map(|&l| map[l]).collect();
    let mut sizes = vec![0usize; k];
    for &l in &labels {
        sizes[l] += 1;
    }
    debug_assert_eq!(data.n_features(), labels.len());
    Ok(HammingKMeans {
        labels,
        centroids,
        sizes,
        cost: run.cost,
        n_iterations: run.n_iterations,
        converged: run.converged,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_obvious_groups() {
        let m = BinaryMatrix::from_fn(10, 40, |f, b| if f < 5 { b < 20 } else { b >= 20 }).unwrap();
        let fit = HammingKMeansParams::new(2).seed(1).fit(&m).unwrap();
        assert_eq!(fit.labels, vec![0, 0, 0, 0, 0, 1, 1, 1, 1, 1]);
        assert_eq!(fit.cost, 0);
        assert_eq!(fit.sizes, vec![5, 5]);
        assert!(fit.converged);
    }

    #[test]
    fn too_many_clusters_and_bad_params() {
        let m = BinaryMatrix::from_fn(3, 8, |f, b| f == b).unwrap();
        assert!(matches!(
            HammingKMeansParams::new(4).fit(&m),
            Err(ClusterError::TooManyClusters { .. })
        ));
        assert!(HammingKMeansParams::new(0).check().is_err());
        assert!(HammingKMeansParams::new(2).n_init(0).check().is_err());
    }

    #[test]
    fn identical_features_do_not_crash() {
        let m = BinaryMatrix::from_fn(6, 8, |_, b| b % 2 == 0).unwrap();
        let fit = HammingKMeansParams::new(3).fit(&m).unwrap();
        assert_eq!(fit.cost, 0);
        assert_eq!(fit.sizes.iter().sum::<usize>(), 6);
    }

    #[test]
    fn same_seed_same_result() {
        let m = BinaryMatrix::from_fn(50, 70, |f, b| (f * f + 3 * b) % 11 < 4).unwrap();
        let a = HammingKMeansParams::new(4).seed(9).fit(&m).unwrap();
        let b = HammingKMeansParams::new(4).seed(9).fit(&m).unwrap();
        assert_eq!(a, b);
    }
}
