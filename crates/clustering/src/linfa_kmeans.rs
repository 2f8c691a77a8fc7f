//! linfa-clustering's standard k-means on the 0/1 features (the one module that touches linfa).
//!
//! For 0/1 vectors `‖x − y‖² = d_H(x, y)`, so Lloyd's k-means with Euclidean distance minimises
//! the Hamming distance to *fractional* centroids (means, not majority votes). Useful as the
//! standard algorithm and to cross-check [`crate::kmeans`]. linfa 0.8 draws from
//! `rand_xoshiro::Xoshiro256Plus` (rand_core 0.6), seeded here from the caller's `u64`; data
//! cross the boundary as a dense `f64` array (ndarray 0.16, the workspace's version).

use linfa::DatasetBase;
use linfa::traits::{Fit, Predict};
use linfa_clustering::KMeans;
use ndarray::Array2;
use rand_xoshiro::Xoshiro256Plus;
use rand_xoshiro::rand_core::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::binary::BinaryMatrix;
use crate::error::{ClusterError, Result};

/// Parameters of [`linfa_kmeans`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinfaKMeansParams {
    /// Number of clusters.
    pub n_clusters: usize,
    /// Restarts (linfa's `n_runs`, default 10).
    pub n_runs: usize,
    /// Iteration cap (default 300).
    pub max_iterations: u64,
    /// Convergence tolerance on centroid movement (default 1e-4).
    pub tolerance: f64,
    /// Seed of the Xoshiro256Plus generator (default 42).
    pub seed: u64,
}

impl LinfaKMeansParams {
    /// linfa's defaults for `n_clusters`.
    pub fn new(n_clusters: usize) -> Self {
        Self {
            n_clusters,
            n_runs: 10,
            max_iterations: 300,
            tolerance: 1e-4,
            seed: 42,
        }
    }

    /// Sets the seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

/// Result of [`linfa_kmeans`].
#[derive(Debug, Clone, PartialEq)]
pub struct LinfaKMeansResult {
    /// Cluster per feature, `[n_features]` (linfa's numbering).
    pub labels: Vec<usize>,
    /// Fractional centroids, `[k, n_bits]`.
    pub centroids: Array2<f64>,
    /// Mean squared distance to the nearest centroid (linfa's `inertia`).
    pub inertia: f64,
}

/// Runs linfa's KMeans on the features of `data` as 0.0/1.0 vectors.
pub fn linfa_kmeans(data: &BinaryMatrix, params: &LinfaKMeansParams) -> Result<LinfaKMeansResult> {
    let k = params.n_clusters;
    if k == 0 || k > data.n_features() {
        return Err(ClusterError::TooManyClusters {
            k,
            n_features: data.n_features(),
        });
    }
    let records = data.to_f64();
    let dataset = DatasetBase::from(records.view());
    let rng = Xoshiro256Plus::seed_from_u64(params.seed);
    let model = KMeans::params_with_rng(k, rng)
        .n_runs(params.n_runs)
        .max_n_iterations(params.max_iterations)
        .tolerance(params.tolerance)
        .fit(&dataset)
        .map_err(|e| ClusterError::Linfa {
            k,
            message: e.to_string(),
        })?;
    let labels = model.predict(&records);
    Ok(LinfaKMeansResult {
        labels: labels.to_vec(),
        centroids: model.centroids().clone(),
        inertia: model.inertia(),
    })
}
