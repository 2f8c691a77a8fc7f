//! Sparse GEMV with dynamic activation masking (TEAL-style), on the CPU and through
//! CubeCL.
//!
//! Decoding is a chain of matrix–vector products bound by memory bandwidth. When an
//! input activation is (or is thresholded to) zero, the weight column it multiplies need
//! not be read, so at activation sparsity `s` a GEMV can be up to `1/(1−s)` faster
//! (Liu et al. 2024, *Training-Free Activation Sparsity in LLMs*, arXiv 2408.14690).
//!
//! `y = W · mask(x)`, `mask(x)_j = x_j · 1(|x_j| > τ)`, with `W` [out, in] stored as
//! `Wᵀ` [in, out] row-major so a kept input reads one contiguous row.
//!
//! - [`gemv`]: CPU kernels (gather kept inputs → AXPY rows of `Wᵀ`, split-K on the rayon
//!   pool), dense baseline of the same layout, small batches ≤ 8, f32 / bf16 / f16 weights
//!   with f32 accumulation.
//! - [`simd`]: the AXPY loops at the CPU's widest vector level (AVX-512, AVX2 + FMA or the
//!   build's baseline), chosen at run time.
//! - [`SparseLinear`]: `Wᵀ` plus a threshold, the API sparse decoding calls.
//! - [`calibrate`]: τ for a target sparsity (quantile of `|x|`).
//! - [`bench`](mod@bench): the measurements behind `cargo xtask bench-gemv`.
//! - `cube` (feature `cubecl-wgpu`): the split-K CubeCL kernel.
//!
//! ```
//! use ndarray::{array, Array2};
//! use sparsity_kernels::{SparseLinear, gemv_masked};
//!
//! // W [out = 2, in = 3]
//! let w = array![[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]];
//! let x = array![0.05f32, -1.0, 2.0];
//! // |0.05| <= 0.1, so input 0 is skipped: y = W · [0, -1, 2]
//! let layer = SparseLinear::<f32>::from_weight(w.view(), 0.1)?;
//! let y = layer.forward(x.view())?;
//! assert_eq!(y.to_vec(), vec![4.0, 7.0]);
//!
//! // the free function takes Wᵀ [in, out] directly
//! let w_t: Array2<f32> = w.t().as_standard_layout().into_owned();
//! let y2 = gemv_masked(w_t.view(), x.view(), 0.1)?;
//! assert_eq!(y, y2);
//! # Ok::<(), sparsity_kernels::KernelError>(())
//! ```

pub mod bench;
pub mod calibrate;
#[cfg(feature = "cubecl-wgpu")]
pub mod cube;
pub mod cube_launch;
pub mod element;
pub mod error;
pub mod gemv;
pub mod simd;
pub mod sparse_linear;

pub use calibrate::{CalibratedThreshold, ThresholdCalibration};
pub use element::WeightElement;
pub use error::{KernelError, Result};
pub use gemv::{
    GemvConfig, GemvStats, MAX_BATCH, gemm_masked_small_batch, gemm_masked_small_batch_into,
    gemv_dense, gemv_dense_into, gemv_masked, gemv_masked_into, mask_activations,
    reference_gemv_masked,
};
pub use simd::{SimdLevel, detected_simd_level, simd_level};
pub use sparse_linear::SparseLinear;

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
