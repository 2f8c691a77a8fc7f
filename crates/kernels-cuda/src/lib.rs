//! The sparse GEMV `y = W · mask(x)` of [`sparsity_kernels`] on NVIDIA GPUs: the same CubeCL
//! split-K kernel (pass 1 per input split, pass 2 reducing the splits, no float atomics,
//! vectorised loads, launch tuned per shape and sparsity bin by
//! [`sparsity_kernels::cube_launch::LaunchTuner`]) on cubecl 0.10's CUDA runtime.
//!
//! Why a separate crate: cubecl 0.11's CUDA runtime (the one burn-cuda 0.22 uses) depends on
//! `cubecl-llvm`, whose build script downloads LLVM, so it cannot be built offline; cubecl
//! 0.10's CUDA runtime has no LLVM dependency and loads `libcuda` at run time. The cubecl
//! macros emit paths under the crate name `cubecl`, so the two versions cannot share one crate.
//!
//! Everything GPU-side is behind the `cuda` feature, which CI does not build. Without it this
//! crate is empty apart from [`ENABLED`]. Build on a GPU machine with
//! `CUDARC_CUDA_VERSION=13000 cargo test -p sparsity-kernels-cuda --features cuda` (the
//! version matches the driver's CUDA version: 13.0 for driver 580).
//!
//! ```
//! // Compiled with or without the feature; runs the GPU only when built with `cuda`.
//! if sparsity_kernels_cuda::ENABLED {
//!     #[cfg(feature = "cuda")]
//!     {
//!         use sparsity_kernels_cuda::{CudaGemv, cuda_client};
//!         let w_t = ndarray::array![[1.0f32, 4.0], [2.0, 5.0], [3.0, 6.0]]; // Wᵀ [in 3, out 2]
//!         if let Ok(client) = cuda_client(0) {
//!             let g = CudaGemv::new_typed(client, w_t.view())?;
//!             // |0.05| <= 0.1: input 0 is skipped, y = W · [0, -1, 2]
//!             assert_eq!(g.gemv_masked(&[0.05, -1.0, 2.0], 0.1)?, vec![4.0, 7.0]);
//!         }
//!     }
//! }
//! # Ok::<(), sparsity_kernels::KernelError>(())
//! ```

/// Whether this build has the CUDA client (feature `cuda`).
pub const ENABLED: bool = cfg!(feature = "cuda");

#[cfg(feature = "cuda")]
mod gemv;

#[cfg(feature = "cuda")]
pub use gemv::{
    CudaGemv, CudaWeight, GpuBenchRow, bench_gpu, bench_shapes, cuda_client, device_copy_bandwidth,
    format_table,
};

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
