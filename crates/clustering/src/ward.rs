//! Ward agglomerative clustering over Hamming distances.
//!
//! Ward (1963) merges, at every step, the two clusters whose union increases the total
//! within-cluster sum of squares the least. With `D(x, y) = ‖x − y‖²` between singletons —
//! for 0/1 features exactly the raw Hamming count — the Lance–Williams update after merging
//! `i` and `j` is
//! `D(k, i∪j) = [(n_i + n_k)·D(k, i) + (n_j + n_k)·D(k, j) − n_k·D(i, j)] / (n_i + n_j + n_k)`,
//! and the merge height is `√D(i, j)`, the convention of `scipy.cluster.hierarchy.linkage(X,
//! "ward")` on the 0/1 matrix (`√(2·n_i·n_j/(n_i+n_j))·‖c_i − c_j‖`). The merges are found with
//! the nearest-neighbour-chain algorithm (Müllner 2011, arXiv:1109.2378), `O(n²)` time and one
//! condensed `f64` distance matrix of memory (`4·n²` bytes: fine for a few thousand features),
//! then sorted by height and numbered like scipy (cluster `n + s` is made by step `s`).
//! Ties between candidate neighbours go to the previous chain element, then to the lower index.

use serde::{Deserialize, Serialize};

use crate::binary::BinaryMatrix;
use crate::error::{ClusterError, Result};
use crate::hamming::all_pairs;

/// One merge of the dendrogram (a row of scipy's linkage matrix).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Merge {
    /// First merged cluster id (`< n`: an original feature; `n + s`: the cluster made by step `s`); the smaller id.
    pub a: usize,
    /// Second merged cluster id; the larger id.
    pub b: usize,
    /// Ward merge height `√ΔD` (raw Hamming units before the square root).
    pub height: f64,
    /// Number of features in the new cluster.
    pub size: usize,
}

/// A full Ward dendrogram of `n` features (`n − 1` merges, heights non-decreasing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dendrogram {
    /// Number of original features.
    pub n_features: usize,
    /// Merges in order of height.
    pub merges: Vec<Merge>,
}

impl Dendrogram {
    /// Flat clustering with exactly `k` clusters (the first `n − k` merges), labels numbered by
    /// first appearance, `[n_features]`.
    pub fn cut(&self, k: usize) -> Result<Vec<usize>> {
        let n = self.n_features;
        if k == 0 || k > n {
            return Err(ClusterError::TooManyClusters { k, n_features: n });
        }
        let mut parent: Vec<usize> = (0..2 * n).collect();
        fn find(parent: &mut [usize], mut x: usize) -> usize {
            while parent[x] != x {
                parent[x] = parent[parent[x]];
                x = parent[x];
            }
            x
        }
        for (s, m) in self.merges.iter().take(n - k).enumerate() {
            parent[m.a] = n + s;
            parent[m.b] = n + s;
        }
        let mut map = std::collections::HashMap::new();
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            let r = find(&mut parent, i);
            let next = map.len();
            labels.push(*map.entry(r).or_insert(next));
        }
        Ok(labels)
    }
}

/// Ward clustering of the features of `data` by Hamming distance.
pub fn ward(data: &BinaryMatrix) -> Result<Dendrogram> {
    let pd = all_pairs(data);
    let d2: Vec<f64> = pd.condensed().iter().map(|&c| f64::from(c)).collect();
    ward_from_squared(data.n_features(), d2)
}

#[inline]
fn cidx(n: usize, i: usize, j: usize) -> usize {
    let (i, j) = if i < j { (i, j) } else { (j, i) };
    n * i - i * (i + 1) / 2 + (j - i - 1)
}

/// Ward linkage from condensed squared Euclidean distances `[n(n−1)/2]` (scipy order).
pub fn ward_from_squared(n: usize, mut d2: Vec<f64>) -> Result<Dendrogram> {
    if n == 0 {
        return Err(ClusterError::Empty {
            n_features: 0,
            n_bits: 0,
        });
    }
    if d2.len() != n * (n - 1) / 2 {
        return Err(ClusterError::LengthMismatch {
            what: "condensed squared distances",
            got: d2.len(),
            expected: n * (n - 1) / 2,
        });
    }
    if let Some(v) = d2.iter().find(|v| !v.is_finite() || **v < 0.0) {
        return Err(ClusterError::InvalidParam {
            name: "squared distance",
            value: v.to_string(),
            reason: "must be finite and >= 0",
        });
    }
    let mut size = vec![1usize; n];
    let mut active = vec![true; n];
    // Raw merges: (representative slot a, slot b, squared height).
    let mut raw: Vec<(usize, usize, f64)> = Vec::with_capacity(n.saturating_sub(1));
    let mut chain: Vec<usize> = Vec::with_capacity(n);
    while raw.len() + 1 < n {
        if chain.is_empty()
            && let Some(first) = active.iter().position(|&a| a)
        {
            chain.push(first);
        }
        let (a, b, dab) = loop {
            let Some(&a) = chain.last() else {
                return Err(ClusterError::InvalidParam {
                    name: "ward chain",
                    value: "empty".into(),
                    reason: "internal error: no active cluster",
                });
            };
            let prev = if chain.len() >= 2 {
                Some(chain[chain.len() - 2])
            } else {
                None
            };
            let mut best: Option<(usize, f64)> = prev.map(|p| (p, d2[cidx(n, a, p)]));
            for x in 0..n {
                if !active[x] || x == a || Some(x) == prev {
                    continue;
                }
                let d = d2[cidx(n, a, x)];
                match best {
                    Some((_, bd)) if d >= bd => {}
                    _ => best = Some((x, d)),
                }
            }
            let Some((b, dab)) = best else {
                return Err(ClusterError::InvalidParam {
                    name: "ward chain",
                    value: "no neighbour".into(),
                    reason: "internal error: a single active cluster left",
                });
            };
            if Some(b) == prev {
                chain.pop();
                chain.pop();
                break (a, b, dab);
            }
            chain.push(b);
        };
        // Merge b into a's slot? Keep the larger slot as the new cluster (arbitrary, consistent).
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        let (nl, nh) = (size[lo] as f64, size[hi] as f64);
        for k in 0..n {
            if !active[k] || k == lo || k == hi {
                continue;
            }
            let nk = size[k] as f64;
            let dkl = d2[cidx(n, k, lo)];
            let dkh = d2[cidx(n, k, hi)];
            let v = ((nl + nk) * dkl + (nh + nk) * dkh - nk * dab) / (nl + nh + nk);
            d2[cidx(n, k, hi)] = v.max(0.0);
        }
        active[lo] = false;
        size[hi] += size[lo];
        raw.push((lo, hi, dab));
    }
    // Sort by height (stable) and number like scipy with a union-find over original points.
    let mut order: Vec<usize> = (0..raw.len()).collect();
    order.sort_by(|&x, &y| raw[x].2.total_cmp(&raw[y].2));
    let mut parent: Vec<usize> = (0..2 * n).collect();
    fn find(parent: &mut [usize], mut x: usize) -> usize {
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    }
    let mut csize = vec![1usize; 2 * n];
    let mut merges = Vec::with_capacity(raw.len());
    for (s, &o) in order.iter().enumerate() {
        let (x, y, h2) = raw[o];
        let rx = find(&mut parent, x);
        let ry = find(&mut parent, y);
        let new = n + s;
        parent[rx] = new;
        parent[ry] = new;
        csize[new] = csize[rx] + csize[ry];
        merges.push(Merge {
            a: rx.min(ry),
            b: rx.max(ry),
            height: h2.sqrt(),
            size: csize[new],
        });
    }
    Ok(Dendrogram {
        n_features: n,
        merges,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// O(n³) Ward from centroids: height = √(2·na·nb/(na+nb))·‖ca − cb‖.
    fn naive_heights(points: &[Vec<f64>]) -> Vec<f64> {
        let mut clusters: Vec<(Vec<f64>, usize)> = points.iter().map(|p| (p.clone(), 1)).collect();
        let mut heights = vec![];
        while clusters.len() > 1 {
            let mut best = (0, 1, f64::INFINITY);
            for i in 0..clusters.len() {
                for j in i + 1..clusters.len() {
                    let (ca, na) = &clusters[i];
                    let (cb, nb) = &clusters[j];
                    let d2: f64 = ca.iter().zip(cb).map(|(x, y)| (x - y) * (x - y)).sum();
                    let (na, nb) = (*na as f64, *nb as f64);
                    let h = (2.0 * na * nb / (na + nb) * d2).sqrt();
                    if h < best.2 {
                        best = (i, j, h);
                    }
                }
            }
            let (i, j, h) = best;
            heights.push(h);
            let (cb, nb) = clusters.remove(j);
            let (ca, na) = &mut clusters[i];
            let t = (*na + nb) as f64;
            for (x, y) in ca.iter_mut().zip(&cb) {
                *x = (*x * *na as f64 + y * nb as f64) / t;
            }
            *na += nb;
        }
        heights
    }

    #[test]
    fn matches_naive_ward_on_random_points() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for n in [2usize, 3, 7, 20, 33] {
            let pts: Vec<Vec<f64>> = (0..n)
                .map(|_| (0..3).map(|_| rng.random::<f64>()).collect())
                .collect();
            let mut d2 = vec![];
            for i in 0..n {
                for j in i + 1..n {
                    d2.push(
                        pts[i]
                            .iter()
                            .zip(&pts[j])
                            .map(|(x, y)| (x - y) * (x - y))
                            .sum(),
                    );
                }
            }
            let dg = ward_from_squared(n, d2).unwrap();
            let mut want = naive_heights(&pts);
            want.sort_by(f64::total_cmp);
            let got: Vec<f64> = dg.merges.iter().map(|m| m.height).collect();
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-9, "n={n}: {g} vs {w}");
            }
            assert_eq!(dg.merges.last().unwrap().size, n);
            assert!(got.windows(2).all(|w| w[0] <= w[1]));
        }
    }

    #[test]
    fn cut_gives_k_clusters() {
        let m = BinaryMatrix::from_fn(12, 30, |f, b| match f % 3 {
            0 => b < 10,
            1 => (10..20).contains(&b),
            _ => b >= 20,
        } ^ (b == f))
        .unwrap();
        let dg = ward(&m).unwrap();
        let l = dg.cut(3).unwrap();
        for f in 0..12 {
            assert_eq!(l[f], l[f % 3]);
        }
        assert_eq!(l[..3], [0, 1, 2]);
        assert_eq!(dg.cut(12).unwrap(), (0..12).collect::<Vec<_>>());
        assert!(dg.cut(1).unwrap().iter().all(|&x| x == 0));
        assert!(dg.cut(13).is_err());
    }
}
