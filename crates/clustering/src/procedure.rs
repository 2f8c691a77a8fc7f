//! The original study's procedure as one call, and its multi-execution over seeded references.
//!
//! For one reference feature (given, or drawn with a seeded `ChaCha8Rng`): take its
//! `n_neighbours` nearest features by Hamming distance (the reference excluded, ties by lower
//! index) and prepend the reference — the 1 + 128 = 129 features of the committed JSON results
//! (original-algorithms.md §2.4B). Cluster them on their bits for every `k` (Hamming k-means by
//! default; linfa k-means or a Ward dendrogram cut), and report cluster sizes, exact
//! within/between distances and the separation ratio ([`crate::metrics`]), and MMM block
//! coherence for every block size ([`crate::mmm`]). Multi-execution repeats this for several
//! distinct references drawn from one seeded stream (execution `i` clusters with seed
//! `seed + i`, as the original's `random_state = s + i`) and summarises the separation ratios.

use rand::SeedableRng;
use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::binary::BinaryMatrix;
use crate::error::{ClusterError, Result};
use crate::hamming::nearest_neighbours;
use crate::kmeans::HammingKMeansParams;
use crate::linfa_kmeans::{LinfaKMeansParams, linfa_kmeans};
use crate::metrics::{
    CentroidMetrics, ClusterMetrics, ClusterMetricsParams, centroid_metrics, cluster_metrics,
};
use crate::mmm::{
    BlockCoherence, DEFAULT_BLOCK_SIZES, LegacyCoherence, RaggedBlock, block_coherence,
    legacy_group_coherence,
};
use crate::ward::ward;

/// Clustering algorithm for the neighbourhood.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ClusterMethod {
    /// Majority-vote k-medians in Hamming space ([`crate::kmeans`]). Default.
    #[default]
    #[serde(rename = "hamming-kmeans")]
    HammingKMeans,
    /// linfa's Euclidean k-means on 0/1 floats ([`crate::linfa_kmeans`]).
    #[serde(rename = "linfa-kmeans")]
    LinfaKMeans,
    /// Ward agglomerative clustering cut at `k` clusters ([`crate::ward`]).
    Ward,
}

impl std::str::FromStr for ClusterMethod {
    type Err = ClusterError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "hamming-kmeans" | "kmeans" => Ok(Self::HammingKMeans),
            "linfa-kmeans" | "linfa" => Ok(Self::LinfaKMeans),
            "ward" => Ok(Self::Ward),
            _ => Err(ClusterError::InvalidParam {
                name: "method",
                value: s.to_string(),
                reason: "expected hamming-kmeans, linfa-kmeans or ward",
            }),
        }
    }
}

/// How the reference feature is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReferenceChoice {
    /// This feature index.
    Index(usize),
    /// Uniform over features from `ChaCha8Rng::seed_from_u64(seed)`.
    Seeded(u64),
}

/// Parameters of [`neighbourhood_clustering`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NeighbourhoodParams {
    /// Reference feature.
    pub reference: ReferenceChoice,
    /// Nearest neighbours taken besides the reference (default 128).
    pub n_neighbours: usize,
    /// Cluster counts (default 4, 8, 16).
    pub ks: Vec<usize>,
    /// Algorithm (default Hamming k-means).
    pub method: ClusterMethod,
    /// Seed of the clustering (default 42).
    pub seed: u64,
    /// Restarts of the k-means methods (default 10).
    pub n_init: usize,
    /// MMM block sizes in bits (default 16, 32, 64, 128).
    pub block_sizes: Vec<usize>,
    /// Ragged last block rule.
    pub ragged: RaggedBlock,
    /// Within/between definitions.
    pub metrics: ClusterMetricsParams,
    /// Also report the original's per-row coherence of groups of this many cluster-ordered
    /// features ([`crate::mmm::legacy_group_coherence`]; the original used 8). Default `None`.
    #[serde(default)]
    pub legacy_mmm_group: Option<usize>,
}

impl Default for NeighbourhoodParams {
    fn default() -> Self {
        Self {
            reference: ReferenceChoice::Seeded(42),
            n_neighbours: 128,
            ks: vec![4, 8, 16],
            method: ClusterMethod::HammingKMeans,
            seed: 42,
            n_init: 10,
            block_sizes: DEFAULT_BLOCK_SIZES.to_vec(),
            ragged: RaggedBlock::Include,
            metrics: ClusterMetricsParams::default(),
            legacy_mmm_group: None,
        }
    }
}

/// Clustering of the neighbourhood for one `k`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KClustering {
    /// Number of clusters.
    pub k: usize,
    /// Cluster of each subset feature (subset order: reference first), `[1 + n_neighbours]`.
    pub labels: Vec<usize>,
    /// Members per cluster, `[k]`.
    pub sizes: Vec<usize>,
    /// Within/between distances and separation ratio.
    pub metrics: ClusterMetrics,
    /// The original procedure B's centroid-based within/between/separation (raw bit units),
    /// for comparison with its committed numbers.
    pub centroid_metrics: CentroidMetrics,
    /// MMM block coherence per block size.
    pub coherence: Vec<BlockCoherence>,
    /// The original's group coherence, when [`NeighbourhoodParams::legacy_mmm_group`] is set.
    pub legacy_coherence: Option<LegacyCoherence>,
}

/// Result of [`neighbourhood_clustering`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NeighbourhoodReport {
    /// Reference feature index.
    pub reference: usize,
    /// Features in the whole matrix.
    pub n_features: usize,
    /// Bits per feature.
    pub n_bits: usize,
    /// Neighbour indices, nearest first, `[n_neighbours]`.
    pub neighbours: Vec<usize>,
    /// Raw Hamming counts of the neighbours to the reference, `[n_neighbours]`.
    pub neighbour_counts: Vec<u32>,
    /// Normalised distances of the neighbours, `[n_neighbours]`.
    pub neighbour_distances: Vec<f64>,
    /// The clustered features: reference then neighbours, `[1 + n_neighbours]`.
    pub subset: Vec<usize>,
    /// Algorithm used.
    pub method: ClusterMethod,
    /// One entry per `k`.
    pub per_k: Vec<KClustering>,
}

fn validate(data: &BinaryMatrix, p: &NeighbourhoodParams) -> Result<()> {
    let n = data.n_features();
    if p.n_neighbours == 0 || p.n_neighbours >= n {
        return Err(ClusterError::InvalidParam {
            name: "neighbors",
            value: p.n_neighbours.to_string(),
            reason: "must be in 1..n_features",
        });
    }
    if p.ks.is_empty() {
        return Err(ClusterError::InvalidParam {
            name: "k",
            value: "[]".into(),
            reason: "give at least one cluster count",
        });
    }
    if let Some(&k) = p.ks.iter().find(|&&k| k == 0 || k > p.n_neighbours + 1) {
        return Err(ClusterError::TooManyClusters {
            k,
            n_features: p.n_neighbours + 1,
        });
    }
    if let Some(g) = p.legacy_mmm_group
        && (g == 0 || g > p.n_neighbours + 1)
    {
        return Err(ClusterError::InvalidParam {
            name: "legacy MMM group size",
            value: g.to_string(),
            reason: "must be in 1..=1 + neighbors",
        });
    }
    if let Some(&b) = p.block_sizes.iter().find(|&&b| b == 0) {
        return Err(ClusterError::InvalidParam {
            name: "block",
            value: b.to_string(),
            reason: "block sizes must be >= 1",
        });
    }
    Ok(())
}

/// Labels of `subset` for `k` clusters with `method`.
pub fn cluster_labels(
    subset: &BinaryMatrix,
    k: usize,
    method: ClusterMethod,
    seed: u64,
    n_init: usize,
) -> Result<Vec<usize>> {
    match method {
        ClusterMethod::HammingKMeans => Ok(HammingKMeansParams::new(k)
            .seed(seed)
            .n_init(n_init)
            .fit(subset)?
            .labels),
        ClusterMethod::LinfaKMeans => {
            let mut p = LinfaKMeansParams::new(k).seed(seed);
            p.n_runs = n_init.max(1);
            Ok(linfa_kmeans(subset, &p)?.labels)
        }
        ClusterMethod::Ward => ward(subset)?.cut(k),
    }
}

/// Runs the original's procedure for one reference (see the module docs).
pub fn neighbourhood_clustering(
    data: &BinaryMatrix,
    params: &NeighbourhoodParams,
) -> Result<NeighbourhoodReport> {
    validate(data, params)?;
    let reference = match params.reference {
        ReferenceChoice::Index(i) => {
            data.check_feature("reference", i)?;
            i
        }
        ReferenceChoice::Seeded(s) => {
            use rand::Rng;
            ChaCha8Rng::seed_from_u64(s).random_range(0..data.n_features())
        }
    };
    let nn = nearest_neighbours(data, reference, params.n_neighbours)?;
    let mut subset_idx = vec![reference];
    subset_idx.extend_from_slice(&nn.indices);
    let subset = data.select(&subset_idx)?;
    // Ward's dendrogram does not depend on k: build it once.
    let dendrogram = match params.method {
        ClusterMethod::Ward => Some(ward(&subset)?),
        _ => None,
    };
    let mut per_k = Vec::with_capacity(params.ks.len());
    for &k in &params.ks {
        let labels = match &dendrogram {
            Some(d) => d.cut(k)?,
            None => cluster_labels(&subset, k, params.method, params.seed, params.n_init)?,
        };
        let metrics = cluster_metrics(&subset, &labels, params.metrics)?;
        let centroid_metrics = centroid_metrics(&subset, &labels)?;
        let coherence = params
            .block_sizes
            .iter()
            .map(|&b| block_coherence(&subset, &labels, b, params.ragged))
            .collect::<Result<Vec<_>>>()?;
        let legacy_coherence = params
            .legacy_mmm_group
            .map(|g| legacy_group_coherence(&subset, &labels, g))
            .transpose()?;
        tracing::debug!(reference, k, separation = ?metrics.separation_ratio, "clustered neighbourhood");
        per_k.push(KClustering {
            k,
            sizes: metrics.cluster_sizes.clone(),
            labels,
            metrics,
            centroid_metrics,
            coherence,
            legacy_coherence,
        });
    }
    Ok(NeighbourhoodReport {
        reference,
        n_features: data.n_features(),
        n_bits: data.n_bits(),
        neighbours: nn.indices,
        neighbour_counts: nn.counts,
        neighbour_distances: nn.distances,
        subset: subset_idx,
        method: params.method,
        per_k,
    })
}

/// Summary of separation ratios over executions for one `k`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeparationSummary {
    /// Number of clusters.
    pub k: usize,
    /// Ratio of every execution (`None` where undefined), `[n_executions]`.
    pub ratios: Vec<Option<f64>>,
    /// Executions with an undefined ratio.
    pub n_undefined: usize,
    /// Mean of the defined ratios.
    pub mean: Option<f64>,
    /// Std (ddof 0) of the defined ratios.
    pub std: Option<f64>,
    /// Minimum defined ratio.
    pub min: Option<f64>,
    /// Median defined ratio (mean of the middle two for an even count).
    pub median: Option<f64>,
    /// Maximum defined ratio.
    pub max: Option<f64>,
}

/// Result of [`multi_execution`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MultiExecutionReport {
    /// Seed of the reference stream.
    pub seed: u64,
    /// One report per execution, in draw order.
    pub executions: Vec<NeighbourhoodReport>,
    /// Separation-ratio distribution per `k`.
    pub per_k: Vec<SeparationSummary>,
}

fn summarise(k: usize, ratios: Vec<Option<f64>>) -> SeparationSummary {
    let mut v: Vec<f64> = ratios.iter().flatten().copied().collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let mean = (n > 0).then(|| v.iter().sum::<f64>() / n as f64);
    let std = mean.map(|m| (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n as f64).sqrt());
    let median = (n > 0).then(|| {
        if n % 2 == 1 {
            v[n / 2]
        } else {
            0.5 * (v[n / 2 - 1] + v[n / 2])
        }
    });
    SeparationSummary {
        k,
        n_undefined: ratios.len() - n,
        ratios,
        mean,
        std,
        min: v.first().copied(),
        median,
        max: v.last().copied(),
    }
}

/// Runs [`neighbourhood_clustering`] for `n_executions` distinct references drawn (without
/// replacement) from `ChaCha8Rng::seed_from_u64(seed)`; execution `i` clusters with
/// `base.seed + i`. `base.reference` is ignored.
pub fn multi_execution(
    data: &BinaryMatrix,
    base: &NeighbourhoodParams,
    n_executions: usize,
    seed: u64,
) -> Result<MultiExecutionReport> {
    if n_executions == 0 || n_executions > data.n_features() {
        return Err(ClusterError::InvalidParam {
            name: "executions",
            value: n_executions.to_string(),
            reason: "must be in 1..=n_features (references are distinct)",
        });
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let refs = sample(&mut rng, data.n_features(), n_executions).into_vec();
    let mut executions = Vec::with_capacity(n_executions);
    for (i, &r) in refs.iter().enumerate() {
        let p = NeighbourhoodParams {
            reference: ReferenceChoice::Index(r),
            seed: base.seed.wrapping_add(i as u64),
            ..base.clone()
        };
        executions.push(neighbourhood_clustering(data, &p)?);
    }
    let per_k = base
        .ks
        .iter()
        .enumerate()
        .map(|(ki, &k)| {
            summarise(
                k,
                executions
                    .iter()
                    .map(|e| e.per_k[ki].metrics.separation_ratio)
                    .collect(),
            )
        })
        .collect();
    Ok(MultiExecutionReport {
        seed,
        executions,
        per_k,
    })
}
