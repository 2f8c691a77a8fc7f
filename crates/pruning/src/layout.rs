//! Weight layouts. PyTorch `nn.Linear` stores [out, in]; GPT-2's `Conv1D` stores [in, out].
//! Every pruning function here works on [out, in]: transpose Conv1D weights before pruning
//! and transpose the result (weight and mask) back after.

use ndarray::{Array2, ArrayView2};

/// How a checkpoint stores a linear layer's weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightLayout {
    /// [out, in] (`nn.Linear`).
    Linear,
    /// [in, out] (GPT-2 `Conv1D`).
    Conv1D,
}

/// [out, in] view of a weight stored in `layout` (no copy).
pub fn to_out_in<T>(weight: ArrayView2<'_, T>, layout: WeightLayout) -> ArrayView2<'_, T> {
    match layout {
        WeightLayout::Linear => weight,
        WeightLayout::Conv1D => weight.reversed_axes(),
    }
}

/// Owned array in `layout` from an [out, in] array (standard memory order).
pub fn from_out_in<T: Clone>(weight: Array2<T>, layout: WeightLayout) -> Array2<T> {
    match layout {
        WeightLayout::Linear => weight,
        WeightLayout::Conv1D => weight.reversed_axes().as_standard_layout().into_owned(),
    }
}
