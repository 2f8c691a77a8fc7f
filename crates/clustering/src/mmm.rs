//! MMM (multiply–mask–multiply) block coherence of feature groups.
//!
//! For a group `G` of features (a cluster) and a block size `B`, the bits `0..n_bits` are cut
//! into blocks of `B` consecutive bits (rows of the weight matrix). Block `β` is *coherent* when
//! every feature of `G` is zero over the whole block, i.e. `(OR_{f∈G} x_f)[β] = 0`: an MMM kernel
//! that computes the group together can skip that block for all of them.
//! `coherence(G, B) = coherent blocks / total blocks`; across clusters the size-weighted mean
//! `Σ_c |c|·coherence_c / Σ_c |c|` is reported, and a value above 0.3 marks a layer where MMM
//! can pay off (issue #5).
//!
//! Ragged last block: when `B` does not divide `n_bits`, the last block has `n_bits mod B` bits.
//! [`RaggedBlock::Include`] (default) counts it as a block, coherent when its existing bits are all
//! zero (total blocks `⌈n_bits/B⌉`); [`RaggedBlock::Drop`] ignores it (total `⌊n_bits/B⌋`).
//!
//! Null model: under independent bits with per-feature densities `ρ_f`, a block of length `L`
//! is coherent with probability `Π_f (1 − ρ_f)^L`; `independence_baseline` is that probability
//! averaged over the counted blocks.
//!
//! Legacy ([`legacy_group_coherence`], original-algorithms.md §2.5, `correlation_analysis.py`):
//! the original did not block the *bits*. It sorted the clustered features by cluster label,
//! cut that order into `⌊F/8⌋` consecutive groups of 8 features (the remainder dropped, groups
//! may straddle two clusters), and for each group counted the rows (bits) on which all 8
//! features are zero, divided by the number of rows `D`; `mean_coherence` is the mean over the
//! groups. (Its README's "/ total_blocks" does not match the code, which divides by `D`.) Under
//! independent bits the expected value of a group is `(1/D)·Σ_r Π_f (1 − ρ_f)` = `Π_f (1 − ρ_f)`,
//! `(1 − ρ)^8 ≈ 0.0039` at 50 % density.

use serde::{Deserialize, Serialize};

use crate::binary::{BinaryMatrix, WORD_BITS};
use crate::error::{ClusterError, Result};

/// Default block sizes.
pub const DEFAULT_BLOCK_SIZES: [usize; 4] = [16, 32, 64, 128];
/// Coherence above which MMM is considered worthwhile.
pub const MMM_THRESHOLD: f64 = 0.3;

/// Treatment of a last block shorter than `B`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RaggedBlock {
    /// Count it; coherent when its existing bits are all zero (default).
    #[default]
    Include,
    /// Ignore it.
    Drop,
}

impl std::str::FromStr for RaggedBlock {
    type Err = ClusterError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "include" => Ok(Self::Include),
            "drop" => Ok(Self::Drop),
            _ => Err(ClusterError::InvalidParam {
                name: "ragged",
                value: s.to_string(),
                reason: "expected include or drop",
            }),
        }
    }
}

/// Coherence of one group for one block size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupCoherence {
    /// Number of features in the group.
    pub size: usize,
    /// Blocks on which every feature of the group is zero.
    pub coherent_blocks: usize,
    /// Blocks counted.
    pub total_blocks: usize,
    /// `coherent_blocks / total_blocks`.
    pub coherence: f64,
    /// Expected coherence under independent bits with the features' densities.
    pub independence_baseline: f64,
}

/// Coherence of a flat clustering for one block size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockCoherence {
    /// Block size `B` in bits.
    pub block_size: usize,
    /// Ragged-last-block rule used.
    pub ragged: RaggedBlock,
    /// Per cluster (`None` for empty clusters), `[k]`.
    pub per_cluster: Vec<Option<GroupCoherence>>,
    /// Size-weighted mean coherence over clusters.
    pub weighted_mean: f64,
    /// Size-weighted mean of the independence baselines.
    pub weighted_baseline: f64,
    /// `weighted_mean > 0.3`.
    pub mmm_candidate: bool,
}

/// Coherence of the group `features` for block size `block_size`.
pub fn group_coherence(
    data: &BinaryMatrix,
    features: &[usize],
    block_size: usize,
    ragged: RaggedBlock,
) -> Result<GroupCoherence> {
    if block_size == 0 {
        return Err(ClusterError::InvalidParam {
            name: "block",
            value: "0".into(),
            reason: "block size must be >= 1 bit",
        });
    }
    if features.is_empty() {
        return Err(ClusterError::InvalidParam {
            name: "group",
            value: "[]".into(),
            reason: "a group needs at least one feature",
        });
    }
    let nb = data.n_bits();
    let total_blocks = match ragged {
        RaggedBlock::Include => nb.div_ceil(block_size),
        RaggedBlock::Drop => nb / block_size,
    };
    if total_blocks == 0 {
        return Err(ClusterError::InvalidParam {
            name: "block",
            value: block_size.to_string(),
            reason: "no complete block fits in the bit length and the ragged block is dropped",
        });
    }
    let w = data.words_per_feature();
    let mut union = vec![0u64; w];
    let mut log_zero = 0.0f64; // Σ_f ln(1 − ρ_f)
    let mut certain_one = false;
    for &f in features {
        data.check_feature("group member", f)?;
        let words = data.feature_words(f);
        let mut ones = 0u32;
        for (u, x) in union.iter_mut().zip(words) {
            *u |= x;
            ones += x.count_ones();
        }
        let rho = f64::from(ones) / nb as f64;
        if rho >= 1.0 {
            certain_one = true;
        } else {
            log_zero += (1.0 - rho).ln();
        }
    }
    let any_in = |lo: usize, hi: usize| -> bool {
        // Any set bit of the union in [lo, hi)?
        let mut b = lo;
        while b < hi {
            let wi = b / WORD_BITS;
            let off = b % WORD_BITS;
            let take = (WORD_BITS - off).min(hi - b);
            let mask = if take == WORD_BITS {
                u64::MAX
            } else {
                ((1u64 << take) - 1) << off
            };
            if union[wi] & mask != 0 {
                return true;
            }
            b += take;
        }
        false
    };
    let mut coherent_blocks = 0;
    let mut baseline = 0.0;
    for blk in 0..total_blocks {
        let lo = blk * block_size;
        let hi = (lo + block_size).min(nb);
        if !any_in(lo, hi) {
            coherent_blocks += 1;
        }
        if !certain_one {
            baseline += (log_zero * (hi - lo) as f64).exp();
        }
    }
    Ok(GroupCoherence {
        size: features.len(),
        coherent_blocks,
        total_blocks,
        coherence: coherent_blocks as f64 / total_blocks as f64,
        independence_baseline: baseline / total_blocks as f64,
    })
}

/// Per-cluster and size-weighted coherence of `labels` (`[n_features]`) for one block size.
pub fn block_coherence(
    data: &BinaryMatrix,
    labels: &[usize],
    block_size: usize,
    ragged: RaggedBlock,
) -> Result<BlockCoherence> {
    if labels.len() != data.n_features() {
        return Err(ClusterError::LengthMismatch {
            what: "labels",
            got: labels.len(),
            expected: data.n_features(),
        });
    }
    let k = labels.iter().copied().max().map_or(0, |m| m + 1);
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); k];
    for (i, &l) in labels.iter().enumerate() {
        members[l].push(i);
    }
    let mut per_cluster = Vec::with_capacity(k);
    let (mut num, mut base, mut den) = (0.0, 0.0, 0.0);
    for m in &members {
        if m.is_empty() {
            per_cluster.push(None);
            continue;
        }
        let g = group_coherence(data, m, block_size, ragged)?;
        num += g.size as f64 * g.coherence;
        base += g.size as f64 * g.independence_baseline;
        den += g.size as f64;
        per_cluster.push(Some(g));
    }
    let weighted_mean = if den > 0.0 { num / den } else { 0.0 };
    Ok(BlockCoherence {
        block_size,
        ragged,
        per_cluster,
        weighted_mean,
        weighted_baseline: if den > 0.0 { base / den } else { 0.0 },
        mmm_candidate: weighted_mean > MMM_THRESHOLD,
    })
}

/// The original's coherence of groups of consecutive cluster-ordered features (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LegacyCoherence {
    /// Features per group (the original used 8).
    pub group_size: usize,
    /// Feature indices in cluster order (labels ascending, stable inside a cluster), `[F]`.
    pub order: Vec<usize>,
    /// Coherence of every group `g`: rows where its features are all zero / `n_bits`, `[⌊F/group⌋]`.
    pub per_group: Vec<f64>,
    /// Mean over the groups.
    pub mean_coherence: f64,
    /// Mean over the groups of `Π_f (1 − ρ_f)` (independent bits with the features' densities).
    pub independence_baseline: f64,
    /// `mean_coherence > 0.3` (the original's "block structure exists").
    pub block_structure: bool,
}

/// The original per-row coherence of groups of `group_size` cluster-ordered features
/// (original-algorithms.md §2.5); `labels` is `[n_features]`. Features are ordered by label
/// with a stable sort (the original's `argsort` was unstable), groups are consecutive in that
/// order, a last incomplete group is dropped as in the original.
pub fn legacy_group_coherence(
    data: &BinaryMatrix,
    labels: &[usize],
    group_size: usize,
) -> Result<LegacyCoherence> {
    if labels.len() != data.n_features() {
        return Err(ClusterError::LengthMismatch {
            what: "labels",
            got: labels.len(),
            expected: data.n_features(),
        });
    }
    if group_size == 0 || group_size > data.n_features() {
        return Err(ClusterError::InvalidParam {
            name: "legacy MMM group size",
            value: group_size.to_string(),
            reason: "must be in 1..=n_features",
        });
    }
    let (order, _) = crate::ordering::cluster_order(labels);
    let nb = data.n_bits();
    let w = data.words_per_feature();
    let mut per_group = Vec::with_capacity(order.len() / group_size);
    let mut baseline = 0.0;
    for group in order.chunks_exact(group_size) {
        let mut union = vec![0u64; w];
        let mut p_zero = 1.0f64;
        for &f in group {
            let mut ones = 0u32;
            for (u, x) in union.iter_mut().zip(data.feature_words(f)) {
                *u |= x;
                ones += x.count_ones();
            }
            p_zero *= 1.0 - f64::from(ones) / nb as f64;
        }
        let any: u32 = union.iter().map(|x| x.count_ones()).sum();
        per_group.push((nb - any as usize) as f64 / nb as f64);
        baseline += p_zero;
    }
    let g = per_group.len() as f64;
    let mean_coherence = per_group.iter().sum::<f64>() / g;
    Ok(LegacyCoherence {
        group_size,
        order,
        mean_coherence,
        independence_baseline: baseline / g,
        block_structure: mean_coherence > MMM_THRESHOLD,
        per_group,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_zero_block_is_coherent() {
        let m = BinaryMatrix::zeros(3, 64).unwrap();
        let g = group_coherence(&m, &[0, 1, 2], 16, RaggedBlock::Include).unwrap();
        assert_eq!((g.coherent_blocks, g.total_blocks), (4, 4));
        assert_eq!(g.coherence, 1.0);
        assert_eq!(g.independence_baseline, 1.0);
    }

    #[test]
    fn one_set_bit_breaks_exactly_one_block() {
        let mut m = BinaryMatrix::zeros(3, 64).unwrap();
        m.set(2, 17, true); // block 1 of B = 16
        let g = group_coherence(&m, &[0, 1, 2], 16, RaggedBlock::Include).unwrap();
        assert_eq!((g.coherent_blocks, g.total_blocks), (3, 4));
        assert_eq!(g.coherence, 0.75);
        // Without feature 2 the group is all zero.
        let g = group_coherence(&m, &[0, 1], 16, RaggedBlock::Include).unwrap();
        assert_eq!(g.coherence, 1.0);
        // B = 64: the single block is broken.
        let g = group_coherence(&m, &[0, 1, 2], 64, RaggedBlock::Include).unwrap();
        assert_eq!((g.coherent_blocks, g.total_blocks), (0, 1));
    }

    #[test]
    fn ragged_last_block() {
        // 70 bits, B = 32: blocks [0,32), [32,64), [64,70).
        let mut m = BinaryMatrix::zeros(2, 70).unwrap();
        m.set(0, 68, true);
        let inc = group_coherence(&m, &[0, 1], 32, RaggedBlock::Include).unwrap();
        assert_eq!((inc.coherent_blocks, inc.total_blocks), (2, 3));
        let drop = group_coherence(&m, &[0, 1], 32, RaggedBlock::Drop).unwrap();
        assert_eq!((drop.coherent_blocks, drop.total_blocks), (2, 2));
        // A set bit in the ragged block's padding region can't exist; a bit at 63 breaks block 1.
        m.set(1, 63, true);
        let inc = group_coherence(&m, &[0, 1], 32, RaggedBlock::Include).unwrap();
        assert_eq!((inc.coherent_blocks, inc.total_blocks), (1, 3));
        // Bits < B and dropping the ragged block leaves nothing: an error, not 0/0.
        let small = BinaryMatrix::zeros(1, 10).unwrap();
        assert!(group_coherence(&small, &[0], 16, RaggedBlock::Drop).is_err());
        let g = group_coherence(&small, &[0], 16, RaggedBlock::Include).unwrap();
        assert_eq!((g.coherent_blocks, g.total_blocks), (1, 1));
    }

    #[test]
    fn weighted_mean_over_clusters() {
        // Cluster 0 (3 features) all zero: coherence 1; cluster 1 (1 feature) all ones: 0.
        let m = BinaryMatrix::from_fn(4, 32, |f, _| f == 3).unwrap();
        let c = block_coherence(&m, &[0, 0, 0, 1], 16, RaggedBlock::Include).unwrap();
        assert_eq!(c.weighted_mean, 0.75);
        assert!(c.mmm_candidate);
        assert_eq!(c.per_cluster[1].as_ref().unwrap().coherence, 0.0);
        assert_eq!(
            c.per_cluster[1].as_ref().unwrap().independence_baseline,
            0.0
        );
    }

    #[test]
    fn baseline_matches_formula() {
        // Feature densities 0.5 and 0.25 over 8 bits; B = 4: (0.5·0.75)^4 per block.
        let m = BinaryMatrix::from_fn(2, 8, |f, b| if f == 0 { b % 2 == 0 } else { b % 4 == 0 })
            .unwrap();
        let g = group_coherence(&m, &[0, 1], 4, RaggedBlock::Include).unwrap();
        assert!((g.independence_baseline - (0.5f64 * 0.75).powi(4)).abs() < 1e-12);
        assert_eq!(g.coherence, 0.0);
    }

    #[test]
    fn legacy_groups_of_cluster_ordered_features() {
        // 10 features of 6 bits; labels put features {1, 3} in cluster 0, the rest in cluster 1.
        // Cluster order: 1, 3, 0, 2, 4, 5, 6, 7, 8, 9. Groups of 4: [1,3,0,2], [4,5,6,7]; 8, 9 dropped.
        let mut m = BinaryMatrix::zeros(10, 6).unwrap();
        m.set(0, 0, true); // group 0: rows 0 and 5 are used -> 4 of 6 rows all zero
        m.set(2, 5, true);
        m.set(4, 1, true); // group 1: rows 1, 2 used (twice row 2) -> 4 of 6
        m.set(5, 2, true);
        m.set(7, 2, true);
        m.set(8, 3, true); // in the dropped remainder: no effect
        let labels = [1, 0, 1, 0, 1, 1, 1, 1, 1, 1];
        let c = legacy_group_coherence(&m, &labels, 4).unwrap();
        assert_eq!(c.order, vec![1, 3, 0, 2, 4, 5, 6, 7, 8, 9]);
        assert_eq!(c.per_group, vec![4.0 / 6.0, 4.0 / 6.0]);
        assert!((c.mean_coherence - 4.0 / 6.0).abs() < 1e-15);
        assert!(c.block_structure);
        // Baseline: group 0 densities 1/6, 0, 1/6, 0 -> (5/6)^2; group 1: 1/6, 1/6, 0, 1/6 -> (5/6)^3.
        let want = 0.5 * ((5.0f64 / 6.0).powi(2) + (5.0f64 / 6.0).powi(3));
        assert!((c.independence_baseline - want).abs() < 1e-12);
        assert!(legacy_group_coherence(&m, &labels, 0).is_err());
        assert!(legacy_group_coherence(&m, &labels, 11).is_err());
        assert!(legacy_group_coherence(&m, &labels[..9], 4).is_err());
    }

    #[test]
    fn legacy_and_corrected_differ_on_the_same_data() {
        // One cluster of 8 features, 32 bits; feature f sets bit 4f: every row has at most one
        // set feature, so per-row legacy coherence = 24/32, but every block of B = 4 holds one bit.
        let m = BinaryMatrix::from_fn(8, 32, |f, b| b == 4 * f).unwrap();
        let labels = [0; 8];
        let legacy = legacy_group_coherence(&m, &labels, 8).unwrap();
        assert_eq!(legacy.per_group, vec![0.75]);
        let blocks = block_coherence(&m, &labels, 4, RaggedBlock::Include).unwrap();
        assert_eq!(blocks.weighted_mean, 0.0);
        let blocks = block_coherence(&m, &labels, 1, RaggedBlock::Include).unwrap();
        assert_eq!(blocks.weighted_mean, 0.75);
    }
}
