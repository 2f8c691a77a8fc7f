//! Magnitude pruning (the baseline of the Wanda and SparseGPT papers; reference:
//! `prune_magnitude` in locuslab/wanda `lib/prune.py`).
//!
//! Unstructured: one threshold for the whole layer, t = sort(|W|)[int(numel · ratio)], and
//! every |W_ij| ≤ t is pruned (so int(numel · ratio) + 1 entries when values are distinct).
//! N:M: in every group of m consecutive input columns of a row, the n smallest |W|.

use ndarray::{Array2, ArrayView2};

use crate::wanda::nm_mask;

/// [out, in] unstructured magnitude mask (1 = pruned) with the reference's layer-wide threshold.
pub fn magnitude_unstructured_mask(weight: ArrayView2<f32>, ratio: f64) -> Array2<u8> {
    let abs = weight.mapv(f32::abs);
    let mut flat: Vec<f32> = abs.iter().copied().collect();
    if flat.is_empty() {
        return Array2::zeros(weight.raw_dim());
    }
    let k = ((flat.len() as f64 * ratio) as usize).min(flat.len() - 1);
    let (_, &mut thresh, _) = flat.select_nth_unstable_by(k, |a, b| a.total_cmp(b));
    abs.mapv(|v| u8::from(v <= thresh))
}

/// [out, in] N:M magnitude mask (1 = pruned).
pub fn magnitude_nm_mask(weight: ArrayView2<f32>, n: usize, m: usize) -> Array2<u8> {
    nm_mask(weight.mapv(f32::abs).view(), n, m)
}
