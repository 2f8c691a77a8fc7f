//! Cluster quality in Hamming space: within/between distances, separation ratio, ARI.
//!
//! Default (exact, corrected): every unordered pair of features is either *within* a cluster
//! or *between* two clusters; `mean_within` / `mean_between` are the means of the normalised
//! Hamming distance over all such pairs (so within is size-weighted and singletons, which have
//! no within pairs, contribute nothing), standard deviations are over pairs (ddof 0), and
//! `separation_ratio = mean_between / mean_within`, `None` when there is no within pair or the
//! within mean is 0.
//!
//! Legacy (`WithinMean::LegacyUnweighted` + `BetweenEstimate::Sampled`, the original
//! `feature_clustering_analysis.py`, see original-algorithms.md §2.4A): within = the
//! *unweighted* mean over clusters of each cluster's mean pair distance, where a singleton
//! cluster counts as 0.0 (the artefact that inflated the reported 17× ratios); between for each
//! cluster pair is the mean over `min(50, |c|·|c′|)` random pairs drawn with replacement
//! (seeded `ChaCha8Rng` instead of Python's `random`), averaged over cluster pairs.
//!
//! Centroid variant ([`centroid_metrics`], the original `hamming_cluster_analysis.py`, §2.4B, the
//! committed JSON numbers): centroids are the member means (fractional), `within` = mean over
//! all points of the Euclidean distance to their own centroid, `between` = mean Euclidean
//! distance over centroid pairs, in raw bit units (for 0/1 vectors `‖x − y‖₂ = √Hamming`),
//! ratio = between / within (`None` when within is 0), plus the inertia `Σ ‖x − c‖²`.
//!
//! Adjusted Rand index: Hubert & Arabie (1985).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::binary::BinaryMatrix;
use crate::error::{ClusterError, Result};
use crate::hamming::hamming_count;

/// How the within-cluster mean is formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum WithinMean {
    /// Mean over all within-cluster pairs (size-weighted; singletons contribute no pair). Default.
    #[default]
    Pooled,
    /// The original: unweighted mean of per-cluster means, a singleton cluster counted as 0.0.
    LegacyUnweighted,
}

/// How the between-cluster mean is estimated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum BetweenEstimate {
    /// Exact over all between-cluster pairs (pooled). Default.
    #[default]
    Exact,
    /// The original's estimate: per cluster pair, `min(pairs, |c|·|c′|)` random pairs with
    /// replacement; the mean over cluster pairs of those means.
    Sampled {
        /// Pairs per cluster pair (the original used 50).
        pairs: usize,
        /// Seed of the sampling `ChaCha8Rng`.
        seed: u64,
    },
}

/// Options of [`cluster_metrics`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ClusterMetricsParams {
    /// Within-cluster mean.
    pub within: WithinMean,
    /// Between-cluster mean.
    pub between: BetweenEstimate,
}

impl ClusterMetricsParams {
    /// The original §2.4A definitions (singletons as 0, 50 sampled pairs with replacement).
    pub fn legacy(seed: u64) -> Self {
        Self {
            within: WithinMean::LegacyUnweighted,
            between: BetweenEstimate::Sampled { pairs: 50, seed },
        }
    }
}

/// Which within/between definitions to use, by name (`exact` or `legacy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MetricsChoice {
    /// Exact over all pairs, pooled within mean (singletons contribute no pair). Default.
    #[default]
    Exact,
    /// The original's: unweighted within mean with singletons as 0, 50 sampled between pairs.
    Legacy,
}

impl MetricsChoice {
    /// The parameters (`seed` drives the legacy sampling).
    pub fn params(self, seed: u64) -> ClusterMetricsParams {
        match self {
            Self::Exact => ClusterMetricsParams::default(),
            Self::Legacy => ClusterMetricsParams::legacy(seed),
        }
    }
}

impl std::str::FromStr for MetricsChoice {
    type Err = ClusterError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "exact" => Ok(Self::Exact),
            "legacy" => Ok(Self::Legacy),
            _ => Err(ClusterError::InvalidParam {
                name: "metrics",
                value: s.to_string(),
                reason: "expected exact or legacy",
            }),
        }
    }
}

/// Within/between distances of a flat clustering (normalised Hamming, `[0, 1]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterMetrics {
    /// Number of clusters `k` (labels are `0..k`).
    pub k: usize,
    /// Members per cluster, `[k]`.
    pub cluster_sizes: Vec<usize>,
    /// Clusters with exactly one member.
    pub singleton_clusters: usize,
    /// Mean pair distance inside each cluster, `[k]` (`None` for clusters with < 2 members).
    pub within_per_cluster: Vec<Option<f64>>,
    /// Exact mean distance between each pair of clusters, `[k][k]` symmetric (`None` on the
    /// diagonal and for empty clusters).
    pub between_per_pair: Vec<Vec<Option<f64>>>,
    /// Mean within-cluster distance (see [`WithinMean`]); `None` without any within pair.
    pub within_mean: Option<f64>,
    /// Std of the within-cluster distance (over pairs, or over clusters in legacy mode).
    pub within_std: Option<f64>,
    /// Mean between-cluster distance (see [`BetweenEstimate`]); `None` with a single cluster.
    pub between_mean: Option<f64>,
    /// Std of the between-cluster distance (over pairs, or over cluster pairs when sampled).
    pub between_std: Option<f64>,
    /// `between_mean / within_mean`; `None` when either is undefined or within is 0.
    pub separation_ratio: Option<f64>,
    /// Number of within-cluster pairs.
    pub n_within_pairs: u64,
    /// Number of between-cluster pairs.
    pub n_between_pairs: u64,
    /// The options used.
    pub params: ClusterMetricsParams,
}

fn check_labels(data: &BinaryMatrix, labels: &[usize]) -> Result<usize> {
    if labels.len() != data.n_features() {
        return Err(ClusterError::LengthMismatch {
            what: "labels",
            got: labels.len(),
            expected: data.n_features(),
        });
    }
    Ok(labels.iter().copied().max().map_or(0, |m| m + 1))
}

/// Sums over pairs per cluster pair: `[k·k]` of (count, Σd, Σd²) in raw bit counts.
fn pair_sums(data: &BinaryMatrix, labels: &[usize], k: usize) -> Vec<(u64, u64, u128)> {
    let n = data.n_features();
    (0..n)
        .into_par_iter()
        .fold(
            || vec![(0u64, 0u64, 0u128); k * k],
            |mut acc, i| {
                let xi = data.feature_words(i);
                let li = labels[i];
                for (j, &lj) in labels.iter().enumerate().skip(i + 1) {
                    let d = u64::from(hamming_count(xi, data.feature_words(j)));
                    let (a, b) = if li <= lj { (li, lj) } else { (lj, li) };
                    let e = &mut acc[a * k + b];
                    e.0 += 1;
                    e.1 += d;
                    e.2 += u128::from(d * d);
                }
                acc
            },
        )
        .reduce(
            || vec![(0u64, 0u64, 0u128); k * k],
            |mut a, b| {
                for (x, y) in a.iter_mut().zip(b) {
                    x.0 += y.0;
                    x.1 += y.1;
                    x.2 += y.2;
                }
                a
            },
        )
}

fn mean_std(count: u64, sum: f64, sumsq: f64) -> (Option<f64>, Option<f64>) {
    if count == 0 {
        return (None, None);
    }
    let c = count as f64;
    let m = sum / c;
    let var = (sumsq / c - m * m).max(0.0);
    (Some(m), Some(var.sqrt()))
}

fn mean_std_of(values: &[f64]) -> (Option<f64>, Option<f64>) {
    let s: f64 = values.iter().sum();
    let s2: f64 = values.iter().map(|v| v * v).sum();
    mean_std(values.len() as u64, s, s2)
}

/// Within/between statistics and the separation ratio of `labels` (`[n_features]`, values
/// `0..k`) on `data`. Exact over all `n(n−1)/2` pairs by default.
pub fn cluster_metrics(
    data: &BinaryMatrix,
    labels: &[usize],
    params: ClusterMetricsParams,
) -> Result<ClusterMetrics> {
    let k = check_labels(data, labels)?;
    let nb = data.n_bits() as f64;
    let mut sizes = vec![0usize; k];
    for &l in labels {
        sizes[l] += 1;
    }
    let sums = pair_sums(data, labels, k);
    let norm = |s: &(u64, u64, u128)| (s.0, s.1 as f64 / nb, s.2 as f64 / (nb * nb));
    let within_per_cluster: Vec<Option<f64>> = (0..k)
        .map(|c| mean_std(sums[c * k + c].0, norm(&sums[c * k + c]).1, 0.0).0)
        .collect();
    let mut between_per_pair = vec![vec![None; k]; k];
    for a in 0..k {
        for b in a + 1..k {
            let (cnt, s, _) = norm(&sums[a * k + b]);
            let m = mean_std(cnt, s, 0.0).0;
            between_per_pair[a][b] = m;
            between_per_pair[b][a] = m;
        }
    }
    let (mut wc, mut ws, mut ws2, mut bc, mut bs, mut bs2) = (0u64, 0.0, 0.0, 0u64, 0.0, 0.0);
    for a in 0..k {
        for b in a..k {
            let (cnt, s, s2) = norm(&sums[a * k + b]);
            if a == b {
                wc += cnt;
                ws += s;
                ws2 += s2;
            } else {
                bc += cnt;
                bs += s;
                bs2 += s2;
            }
        }
    }
    let (within_mean, within_std) = match params.within {
        WithinMean::Pooled => mean_std(wc, ws, ws2),
        WithinMean::LegacyUnweighted => {
            let per: Vec<f64> = (0..k)
                .filter(|&c| sizes[c] > 0)
                .map(|c| within_per_cluster[c].unwrap_or(0.0))
                .collect();
            mean_std_of(&per)
        }
    };
    let (between_mean, between_std) = match params.between {
        BetweenEstimate::Exact => mean_std(bc, bs, bs2),
        BetweenEstimate::Sampled { pairs, seed } => {
            if pairs == 0 {
                return Err(ClusterError::InvalidParam {
                    name: "sampled between pairs",
                    value: "0".into(),
                    reason: "need at least one pair per cluster pair",
                });
            }
            let mut members: Vec<Vec<usize>> = vec![Vec::new(); k];
            for (i, &l) in labels.iter().enumerate() {
                members[l].push(i);
            }
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut per = Vec::new();
            for a in 0..k {
                for b in a + 1..k {
                    let (ma, mb) = (&members[a], &members[b]);
                    if ma.is_empty() || mb.is_empty() {
                        continue;
                    }
                    let m = pairs.min(ma.len() * mb.len());
                    let mut s = 0.0;
                    for _ in 0..m {
                        let i = ma[rng.random_range(0..ma.len())];
                        let j = mb[rng.random_range(0..mb.len())];
                        s += f64::from(hamming_count(data.feature_words(i), data.feature_words(j)))
                            / nb;
                    }
                    per.push(s / m as f64);
                }
            }
            mean_std_of(&per)
        }
    };
    let separation_ratio = match (between_mean, within_mean) {
        (Some(b), Some(w)) if w > 0.0 => Some(b / w),
        _ => None,
    };
    Ok(ClusterMetrics {
        k,
        singleton_clusters: sizes.iter().filter(|&&s| s == 1).count(),
        cluster_sizes: sizes,
        within_per_cluster,
        between_per_pair,
        within_mean,
        within_std,
        between_mean,
        between_std,
        separation_ratio,
        n_within_pairs: wc,
        n_between_pairs: bc,
        params,
    })
}

/// The original procedure B's centroid-based separation (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CentroidMetrics {
    /// Mean Euclidean distance of every feature to its cluster's mean, raw bit units.
    pub within: f64,
    /// Mean Euclidean distance between the means of every pair of non-empty clusters
    /// (`None` with fewer than two clusters).
    pub between: Option<f64>,
    /// `between / within`; `None` when either is undefined or within is 0.
    pub separation_ratio: Option<f64>,
    /// `Σ_i ‖x_i − c_label(i)‖²` (scikit-learn's inertia for these centroids).
    pub inertia: f64,
}

/// Centroid-based within/between of `labels` (`[n_features]`) on `data`, as the original
/// `hamming_cluster_analysis.py` computed them from its k-means centroids (here the member means
/// of any clustering; for a converged k-means they are the same).
pub fn centroid_metrics(data: &BinaryMatrix, labels: &[usize]) -> Result<CentroidMetrics> {
    let k = check_labels(data, labels)?;
    let nb = data.n_bits();
    let mut sums = vec![0f64; k * nb];
    let mut sizes = vec![0usize; k];
    for (i, &l) in labels.iter().enumerate() {
        sizes[l] += 1;
        for (wi, &word) in data.feature_words(i).iter().enumerate() {
            let mut x = word;
            while x != 0 {
                sums[l * nb + wi * crate::binary::WORD_BITS + x.trailing_zeros() as usize] += 1.0;
                x &= x - 1;
            }
        }
    }
    for (c, &n) in sizes.iter().enumerate() {
        if n > 0 {
            for v in &mut sums[c * nb..(c + 1) * nb] {
                *v /= n as f64;
            }
        }
    }
    let centroid = |c: usize| &sums[c * nb..(c + 1) * nb];
    // ‖x − c‖² = Σ_b (x_b − c_b)², x_b ∈ {0, 1}.
    let mut within_sum = 0.0;
    let mut inertia = 0.0;
    for (i, &l) in labels.iter().enumerate() {
        let d2: f64 = centroid(l)
            .iter()
            .enumerate()
            .map(|(b, &cb)| {
                let x = if data.get(i, b) { 1.0 } else { 0.0 };
                (x - cb) * (x - cb)
            })
            .sum();
        inertia += d2;
        within_sum += d2.sqrt();
    }
    let within = within_sum / labels.len() as f64;
    let live: Vec<usize> = (0..k).filter(|&c| sizes[c] > 0).collect();
    let mut between_sum = 0.0;
    let mut n_pairs = 0usize;
    for (a, &ca) in live.iter().enumerate() {
        for &cb in &live[a + 1..] {
            let d2: f64 = centroid(ca)
                .iter()
                .zip(centroid(cb))
                .map(|(x, y)| (x - y) * (x - y))
                .sum();
            between_sum += d2.sqrt();
            n_pairs += 1;
        }
    }
    let between = (n_pairs > 0).then(|| between_sum / n_pairs as f64);
    let separation_ratio = match between {
        Some(b) if within > 0.0 => Some(b / within),
        _ => None,
    };
    Ok(CentroidMetrics {
        within,
        between,
        separation_ratio,
        inertia,
    })
}

/// Adjusted Rand index between two labelings of the same items (1.0 = identical partitions up
/// to renaming; ≈ 0 for independent ones). Two all-in-one-cluster (or all-singleton) labelings give 1.0.
pub fn adjusted_rand_index(a: &[usize], b: &[usize]) -> Result<f64> {
    if a.len() != b.len() {
        return Err(ClusterError::LengthMismatch {
            what: "second labeling",
            got: b.len(),
            expected: a.len(),
        });
    }
    let n = a.len();
    let ka = a.iter().copied().max().map_or(0, |m| m + 1);
    let kb = b.iter().copied().max().map_or(0, |m| m + 1);
    let mut table = vec![0u64; ka * kb];
    let mut ra = vec![0u64; ka];
    let mut rb = vec![0u64; kb];
    for (&x, &y) in a.iter().zip(b) {
        table[x * kb + y] += 1;
        ra[x] += 1;
        rb[y] += 1;
    }
    let c2 = |x: u64| (x * x.saturating_sub(1) / 2) as f64;
    let index: f64 = table.iter().map(|&x| c2(x)).sum();
    let sa: f64 = ra.iter().map(|&x| c2(x)).sum();
    let sb: f64 = rb.iter().map(|&x| c2(x)).sum();
    let total = c2(n as u64);
    if total == 0.0 {
        return Ok(1.0);
    }
    let expected = sa * sb / total;
    let max = 0.5 * (sa + sb);
    if max == expected {
        return Ok(1.0);
    }
    Ok((index - expected) / (max - expected))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ari_known_values() {
        assert_eq!(
            adjusted_rand_index(&[0, 0, 1, 1], &[1, 1, 0, 0]).unwrap(),
            1.0
        );
        // sklearn.metrics.adjusted_rand_score([0,0,1,1],[0,0,1,2]) = 0.5714285714285715
        let v = adjusted_rand_index(&[0, 0, 1, 1], &[0, 0, 1, 2]).unwrap();
        assert!((v - 0.571_428_571_428_571_5).abs() < 1e-12, "{v}");
        // By hand: index 0, Σa 6, Σb 3, C(6,2) 15 → (0 − 1.2)/(4.5 − 1.2) = −4/11
        let v = adjusted_rand_index(&[0, 0, 0, 1, 1, 1], &[0, 1, 2, 0, 1, 2]).unwrap();
        assert!((v + 4.0 / 11.0).abs() < 1e-12, "{v}");
    }

    #[test]
    fn exact_metrics_by_hand() {
        // 4 features of 4 bits: {0,1} identical pair, {2} singleton, {3} singleton.
        let m = BinaryMatrix::from_fn(4, 4, |f, b| match f {
            0 | 1 => b == 0,
            2 => b < 3,
            _ => true,
        })
        .unwrap();
        let met = cluster_metrics(&m, &[0, 0, 1, 2], ClusterMetricsParams::default()).unwrap();
        assert_eq!(met.cluster_sizes, vec![2, 1, 1]);
        assert_eq!(met.singleton_clusters, 2);
        assert_eq!(met.within_mean, Some(0.0));
        assert_eq!(met.separation_ratio, None);
        // Between pairs: d(0,2)=d(1,2)=2, d(0,3)=d(1,3)=3, d(2,3)=1 → mean 11/5 bits / 4.
        assert!((met.between_mean.unwrap() - 11.0 / 20.0).abs() < 1e-12);
        assert_eq!(met.n_between_pairs, 5);
        let met = cluster_metrics(&m, &[0, 1, 0, 1], ClusterMetricsParams::default()).unwrap();
        // within: d(0,2)=2, d(1,3)=3 → 5/8; between: d(0,1)=0, d(0,3)=3, d(2,1)=2, d(2,3)=1 → 6/16
        assert!((met.within_mean.unwrap() - 5.0 / 8.0).abs() < 1e-12);
        assert!((met.between_mean.unwrap() - 6.0 / 16.0).abs() < 1e-12);
        assert!((met.separation_ratio.unwrap() - 0.6).abs() < 1e-12);
    }

    #[test]
    fn legacy_singletons_drag_within_down() {
        let m = BinaryMatrix::from_fn(5, 8, |f, b| (f + b) % 3 == 0 || f == b).unwrap();
        let labels = [0, 0, 0, 1, 2];
        let exact = cluster_metrics(&m, &labels, ClusterMetricsParams::default()).unwrap();
        let legacy = cluster_metrics(&m, &labels, ClusterMetricsParams::legacy(1)).unwrap();
        let w = exact.within_mean.unwrap();
        assert!((legacy.within_mean.unwrap() - w / 3.0).abs() < 1e-12);
        // 1x1 cluster pairs have a single possible pair: sampling is exact there.
        assert!(legacy.separation_ratio.unwrap() > exact.separation_ratio.unwrap());
    }

    #[test]
    fn centroid_metrics_by_hand() {
        // Cluster 0 = {1100, 1000}: mean (1, .5, 0, 0); cluster 1 = {0011}: mean (0, 0, 1, 1).
        let m = BinaryMatrix::from_fn(3, 4, |f, b| match f {
            0 => b < 2,
            1 => b == 0,
            _ => b >= 2,
        })
        .unwrap();
        let c = centroid_metrics(&m, &[0, 0, 1]).unwrap();
        // Distances to own centroid: 0.5, 0.5, 0 -> within 1/3; inertia 0.25 + 0.25.
        assert!((c.within - 1.0 / 3.0).abs() < 1e-12);
        assert!((c.inertia - 0.5).abs() < 1e-12);
        // Between: ‖(1, .5, -1, -1)‖ = √3.25.
        assert!((c.between.unwrap() - 3.25f64.sqrt()).abs() < 1e-12);
        assert!((c.separation_ratio.unwrap() - 3.0 * 3.25f64.sqrt()).abs() < 1e-12);
        // One cluster: no between; identical members: within 0 -> ratio undefined.
        assert_eq!(centroid_metrics(&m, &[0, 0, 0]).unwrap().between, None);
        let same = BinaryMatrix::from_fn(4, 8, |f, b| (f < 2) == (b < 4)).unwrap();
        let c = centroid_metrics(&same, &[0, 0, 1, 1]).unwrap();
        assert_eq!(c.within, 0.0);
        assert_eq!(c.separation_ratio, None);
        assert!(centroid_metrics(&m, &[0, 1]).is_err());
    }
}
