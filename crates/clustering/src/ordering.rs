//! Feature orderings for pictures.
//!
//! *Hamming gradient* (the original's "co-activation gradient", original-algorithms.md §2.3):
//! the reference first, then every other feature by increasing Hamming distance to it, ties by
//! lower index (a stable order; the original's `correlation_analysis.py` off-by-one is not
//! reproduced). *Cluster order*: features grouped by cluster label, stable inside a cluster.

use crate::binary::BinaryMatrix;
use crate::error::{ClusterError, Result};
use crate::hamming::one_vs_all;

/// Feature indices ordered by Hamming distance to `reference` (reference first), `[n_features]`.
pub fn hamming_gradient(data: &BinaryMatrix, reference: usize) -> Result<Vec<usize>> {
    let d = one_vs_all(data, reference)?;
    let mut order: Vec<usize> = (0..data.n_features()).filter(|&j| j != reference).collect();
    order.sort_by_key(|&j| (d[j], j));
    order.insert(0, reference);
    Ok(order)
}

/// Positions `0..labels.len()` grouped by label (ascending), original order kept inside a
/// cluster; also returns the cluster boundaries (start position of every cluster after the first).
pub fn cluster_order(labels: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let mut order: Vec<usize> = (0..labels.len()).collect();
    order.sort_by_key(|&i| labels[i]);
    let boundaries = order
        .windows(2)
        .enumerate()
        .filter(|(_, w)| labels[w[0]] != labels[w[1]])
        .map(|(p, _)| p + 1)
        .collect();
    (order, boundaries)
}

/// Checks that `order` is a permutation of `0..n`.
pub fn check_permutation(order: &[usize], n: usize) -> Result<()> {
    if order.len() != n {
        return Err(ClusterError::LengthMismatch {
            what: "feature order",
            got: order.len(),
            expected: n,
        });
    }
    let mut seen = vec![false; n];
    for &i in order {
        if i >= n || seen[i] {
            return Err(ClusterError::InvalidParam {
                name: "feature order",
                value: i.to_string(),
                reason: "not a permutation of the features (out of range or repeated)",
            });
        }
        seen[i] = true;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gradient_sorted_and_stable() {
        let m = BinaryMatrix::from_fn(5, 8, |f, b| match f {
            0 => false,
            1 => b < 3,
            2 => b < 1,
            3 => b < 1,
            _ => b < 2,
        })
        .unwrap();
        assert_eq!(hamming_gradient(&m, 0).unwrap(), vec![0, 2, 3, 4, 1]);
        assert_eq!(hamming_gradient(&m, 3).unwrap(), vec![3, 2, 0, 4, 1]);
        assert!(hamming_gradient(&m, 5).is_err());
    }

    #[test]
    fn cluster_order_groups() {
        let (o, b) = cluster_order(&[1, 0, 1, 2, 0]);
        assert_eq!(o, vec![1, 4, 0, 2, 3]);
        assert_eq!(b, vec![2, 4]);
        assert!(check_permutation(&o, 5).is_ok());
        assert!(check_permutation(&[0, 0, 1], 3).is_err());
    }
}
