//! Exact Hamming distances between bit-packed features.
//!
//! `d(x, y) = popcount(x XOR y)` summed over the `u64` words of two features (raw count);
//! the normalised distance is `d / n_bits ∈ [0, 1]` (scipy's `pdist(metric="hamming")`).
//! For 0/1 vectors `d(x, y) = ‖x − y‖²`, so Euclidean-squared methods (k-means, Ward) see
//! the same geometry.
//!
//! All-pairs distances fill the upper triangle in scipy's condensed order, blocked so a
//! group of rows is compared against a cache-sized block of columns, and parallel over
//! row groups with rayon (run inside a 1-thread `rayon::ThreadPool` for a single-threaded
//! measurement). The XOR + popcount kernel is compiled for AVX-512 VPOPCNTDQ and for
//! POPCNT and picked at run time; a portable version covers everything else.

use ndarray::{Array1, Array2};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::binary::BinaryMatrix;
use crate::error::{ClusterError, Result};

/// Rows per parallel task in [`all_pairs`].
const ROW_GROUP: usize = 16;
/// Columns per cache block in [`all_pairs`] (256 features × 4096 bits = 128 KiB).
const COL_BLOCK_BYTES: usize = 128 * 1024;

/// Name of the XOR + popcount kernel selected for this CPU (`avx512-vpopcntdq`, `popcnt` or `portable`).
pub fn kernel_name() -> &'static str {
    sparsity_io::bits::hamming_kernel_name()
}

/// A dedicated rayon pool of `threads` threads (1 = single-threaded): `pool.install(|| ...)`
/// runs the parallel functions of this crate on exactly that many cores. Build it once and
/// reuse it when timing short calls.
pub fn thread_pool(threads: usize) -> Result<rayon::ThreadPool> {
    if threads == 0 {
        return Err(ClusterError::InvalidParam {
            name: "threads",
            value: "0".into(),
            reason: "must be >= 1",
        });
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|_| ClusterError::InvalidParam {
            name: "threads",
            value: threads.to_string(),
            reason: "could not build the rayon thread pool",
        })
}

/// Runs `f` inside a new [`thread_pool`] of `threads` threads (1 = single-threaded), so the
/// parallel functions of this crate use exactly that many cores.
pub fn with_threads<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> Result<T> {
    Ok(thread_pool(threads)?.install(f))
}

/// Raw Hamming count between two packed features of equal word length.
#[inline]
pub fn hamming_count(a: &[u64], b: &[u64]) -> u32 {
    sparsity_io::bits::hamming(a, b)
}

/// Raw Hamming counts from feature `reference` to every feature (itself included, 0), `[n_features]`.
pub fn one_vs_all(data: &BinaryMatrix, reference: usize) -> Result<Array1<u32>> {
    data.check_feature("reference", reference)?;
    let a = data.feature_words(reference);
    let mut out = vec![0u32; data.n_features()];
    let w = data.words_per_feature();
    out.par_chunks_mut(1024)
        .zip(data.words().par_chunks(1024 * w))
        .for_each(|(o, others)| sparsity_io::bits::hamming_many(a, others, o));
    Ok(Array1::from(out))
}

/// Raw Hamming counts between every feature of `a` (rows) and every feature of `b` (columns),
/// `[a.n_features, b.n_features]` (scipy's `cdist`).
pub fn cross(a: &BinaryMatrix, b: &BinaryMatrix) -> Result<Array2<u32>> {
    if a.n_bits() != b.n_bits() {
        return Err(ClusterError::BitsMismatch {
            what: "second matrix",
            got: b.n_bits(),
            expected: a.n_bits(),
        });
    }
    let nb = b.n_features();
    let mut out = vec![0u32; a.n_features() * nb];
    out.par_chunks_mut(nb)
        .enumerate()
        .for_each(|(i, row)| sparsity_io::bits::hamming_many(a.feature_words(i), b.words(), row));
    Array2::from_shape_vec((a.n_features(), nb), out).map_err(|e| ClusterError::InvalidParam {
        name: "cross distances",
        value: e.to_string(),
        reason: "internal shape error",
    })
}

/// All-pairs Hamming counts, the strict upper triangle in scipy's condensed order:
/// pair `(i, j)`, `i < j`, is at `n·i − i(i+1)/2 + (j − i − 1)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairwiseHamming {
    n_features: usize,
    n_bits: usize,
    /// [n(n−1)/2]
    counts: Vec<u32>,
}

impl PairwiseHamming {
    /// Number of features.
    pub fn n_features(&self) -> usize {
        self.n_features
    }

    /// Bits per feature (the normaliser).
    pub fn n_bits(&self) -> usize {
        self.n_bits
    }

    /// The condensed upper triangle of raw counts, `[n(n−1)/2]`.
    pub fn condensed(&self) -> &[u32] {
        &self.counts
    }

    /// Position of pair `(i, j)`, `i < j < n`, in the condensed vector.
    #[inline]
    pub fn index(&self, i: usize, j: usize) -> usize {
        debug_assert!(i < j && j < self.n_features);
        self.n_features * i - i * (i + 1) / 2 + (j - i - 1)
    }

    /// Raw count between `i` and `j` (0 when `i == j`; symmetric). Panics when out of range.
    #[inline]
    pub fn count(&self, i: usize, j: usize) -> u32 {
        assert!(
            i < self.n_features && j < self.n_features,
            "pair ({i}, {j}) out of range"
        );
        match i.cmp(&j) {
            std::cmp::Ordering::Equal => 0,
            std::cmp::Ordering::Less => self.counts[self.index(i, j)],
            std::cmp::Ordering::Greater => self.counts[self.index(j, i)],
        }
    }

    /// Normalised distance `count / n_bits` between `i` and `j`.
    #[inline]
    pub fn distance(&self, i: usize, j: usize) -> f64 {
        f64::from(self.count(i, j)) / self.n_bits as f64
    }

    /// The full symmetric matrix of raw counts with a zero diagonal, `[n, n]`.
    pub fn to_square(&self) -> Array2<u32> {
        let n = self.n_features;
        Array2::from_shape_fn((n, n), |(i, j)| self.count(i, j))
    }

    /// All normalised distances of the upper triangle, condensed order.
    pub fn normalised(&self) -> Vec<f64> {
        let nb = self.n_bits as f64;
        self.counts.iter().map(|&c| f64::from(c) / nb).collect()
    }
}

/// Exact Hamming counts between every pair of features (see [`PairwiseHamming`]).
///
/// Memory: `4·n(n−1)/2` bytes (242 MB for 11 008 features).
pub fn all_pairs(data: &BinaryMatrix) -> PairwiseHamming {
    let n = data.n_features();
    let w = data.words_per_feature();
    let total = n * (n.saturating_sub(1)) / 2;
    let mut counts = vec![0u32; total];
    // Split the condensed vector into one slice per row, then group rows for the tasks.
    let mut rows: Vec<&mut [u32]> = Vec::with_capacity(n);
    let mut rest: &mut [u32] = &mut counts;
    for i in 0..n {
        let (row, tail) = rest.split_at_mut(n - 1 - i);
        rows.push(row);
        rest = tail;
    }
    let col_block = (COL_BLOCK_BYTES / (8 * w)).max(8);
    let words = data.words();
    let mut groups: Vec<(usize, Vec<&mut [u32]>)> = Vec::with_capacity(n.div_ceil(ROW_GROUP));
    let mut i0 = 0;
    let mut iter = rows.into_iter();
    while i0 < n {
        let g: Vec<&mut [u32]> = iter.by_ref().take(ROW_GROUP).collect();
        let len = g.len();
        groups.push((i0, g));
        i0 += len;
    }
    groups.into_par_iter().for_each(|(i0, mut g)| {
        let mut jb = i0 + 1;
        while jb < n {
            let je = (jb + col_block).min(n);
            for (r, row) in g.iter_mut().enumerate() {
                let i = i0 + r;
                let j0 = jb.max(i + 1);
                if j0 >= je {
                    continue;
                }
                sparsity_io::bits::hamming_many(
                    &words[i * w..(i + 1) * w],
                    &words[j0 * w..je * w],
                    &mut row[j0 - i - 1..je - i - 1],
                );
            }
            jb = je;
        }
    });
    PairwiseHamming {
        n_features: n,
        n_bits: data.n_bits(),
        counts,
    }
}

/// The `k` nearest features of a reference (the reference itself excluded).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Neighbours {
    /// Index of the reference feature.
    pub reference: usize,
    /// Neighbour feature indices, nearest first (ties by lower index), `[k]`.
    pub indices: Vec<usize>,
    /// Raw Hamming counts to the reference, `[k]`.
    pub counts: Vec<u32>,
    /// Normalised Hamming distances (`count / n_bits`), `[k]`.
    pub distances: Vec<f64>,
}

/// The `k` features nearest to `reference` by Hamming distance, excluding the reference
/// itself; ties are broken by the lower feature index (a stable sort, deterministic).
pub fn nearest_neighbours(data: &BinaryMatrix, reference: usize, k: usize) -> Result<Neighbours> {
    data.check_feature("reference", reference)?;
    let n = data.n_features();
    if k == 0 || k >= n {
        return Err(ClusterError::InvalidParam {
            name: "neighbors",
            value: k.to_string(),
            reason: "must be in 1..n_features (the reference is excluded)",
        });
    }
    let d = one_vs_all(data, reference)?;
    let mut keys: Vec<(u32, usize)> = d
        .iter()
        .enumerate()
        .filter(|&(j, _)| j != reference)
        .map(|(j, &c)| (c, j))
        .collect();
    if k < keys.len() {
        keys.select_nth_unstable(k - 1);
        keys.truncate(k);
    }
    keys.sort_unstable();
    let nb = data.n_bits() as f64;
    Ok(Neighbours {
        reference,
        indices: keys.iter().map(|&(_, j)| j).collect(),
        counts: keys.iter().map(|&(c, _)| c).collect(),
        distances: keys.iter().map(|&(c, _)| f64::from(c) / nb).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(data: &BinaryMatrix, i: usize, j: usize) -> u32 {
        (0..data.n_bits())
            .filter(|&b| data.get(i, b) != data.get(j, b))
            .count() as u32
    }

    #[test]
    fn kernels_agree() {
        let m = BinaryMatrix::from_fn(9, 300, |f, b| (f * 31 + b * 17) % 7 < 3).unwrap();
        let all = all_pairs(&m);
        for i in 0..9 {
            for j in 0..9 {
                assert_eq!(all.count(i, j), naive(&m, i, j));
            }
        }
        assert!(!kernel_name().is_empty());
    }

    #[test]
    fn neighbours_tie_break_by_index() {
        // Features 1..=4 are all at distance 1 from feature 0; 5 is at distance 2.
        let m = BinaryMatrix::from_fn(6, 10, |f, b| match f {
            0 => false,
            5 => b < 2,
            _ => b == f,
        })
        .unwrap();
        let nn = nearest_neighbours(&m, 0, 3).unwrap();
        assert_eq!(nn.indices, vec![1, 2, 3]);
        assert_eq!(nn.counts, vec![1, 1, 1]);
        let nn = nearest_neighbours(&m, 3, 5).unwrap();
        assert_eq!(nn.indices, vec![0, 1, 2, 4, 5]);
        assert!(nearest_neighbours(&m, 0, 6).is_err());
        assert!(nearest_neighbours(&m, 6, 1).is_err());
    }
}
