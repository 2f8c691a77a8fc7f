//! The masked GEMV as a CubeCL kernel (feature `cubecl-wgpu`): split-K over the input
//! dimension with a portable two-pass reduction, the dense path being the same kernel with
//! nothing masked, and launch parameters tuned per shape and sparsity bin.
//!
//! Pass 1 (`gemv_split_k`): cube (bx, s) handles output columns [bx·B, (bx+1)·B) over input
//! rows [s·R, (s+1)·R): each unit owns one output column and walks its rows of Wᵀ [in, out];
//! unit u of a cube reads element u of each row, so a cube's loads of one row are contiguous
//! (coalesced), and every unit of a cube tests the same x_j, so skipping a masked row is a
//! uniform branch that reads no weight at all. It writes partial[s, o].
//! Pass 2 (`reduce_splits`): y[o] = Σ_s partial[s, o] (no float atomics, which not every
//! CubeCL runtime has). With `CubeLaunch::vector` > 1 each unit of pass 1 owns that many
//! consecutive outputs and reads one vector per kept row (vectorised loads).
//!
//! Runtime here: cubecl 0.11.3's wgpu runtime on Mesa's software Vulkan driver (lavapipe,
//! Debian `mesa-vulkan-drivers`), so the kernel is tested without a GPU. The same kernel code
//! runs on any CubeCL runtime; cubecl 0.11's CUDA runtime does not build offline (its LLVM
//! bundler downloads LLVM), so the CUDA client lives in the crate `sparsity-kernels-cuda`
//! (cubecl 0.10), sharing [`crate::cube_launch`]. Weights are f32, f16 or bf16
//! ([`CubeWeight`]), accumulated in f32.

use cubecl::prelude::*;
use ndarray::ArrayView2;

use crate::cube_launch::check_input;
use crate::error::{KernelError, Result};
use crate::gemv::check_tau;

/// Pass 1: partial sums of y over one split of the input rows. Unit u owns the `N` consecutive
/// outputs of vector u and reads one `N`-wide vector per kept row of Wᵀ (`n_out` divisible by
/// `N`; `N` = 1 is the scalar kernel).
#[cube(launch_unchecked)]
fn gemv_split_k<E: Float, N: Size>(
    w_t: &[Vector<E, N>],
    x: &[f32],
    partial: &mut [Vector<f32, N>],
    tau: f32,
    n_in: usize,
    n_out_vec: usize,
    rows_per_split: usize,
) {
    let o = (CUBE_POS_X * CUBE_DIM_X + UNIT_POS_X) as usize;
    let s = CUBE_POS_Y as usize;
    if o < n_out_vec {
        let start = s * rows_per_split;
        let mut end = start + rows_per_split;
        if end > n_in {
            end = n_in;
        }
        let mut acc = Vector::<f32, N>::new(0.0f32);
        for j in start..end {
            let xv = x[j];
            if xv.abs() > tau {
                acc +=
                    Vector::<f32, N>::new(xv) * Vector::<f32, N>::cast_from(w_t[j * n_out_vec + o]);
            }
        }
        partial[s * n_out_vec + o] = acc;
    }
}

/// Pass 2: y[o] = Σ_s partial[s, o].
#[cube(launch_unchecked)]
fn reduce_splits(partial: &[f32], y: &mut [f32], splits: usize, n_out: usize) {
    let o = (CUBE_POS_X * CUBE_DIM_X + UNIT_POS_X) as usize;
    if o < n_out {
        let mut acc = 0.0f32;
        for s in 0..splits {
            acc += partial[s * n_out + o];
        }
        y[o] = acc;
    }
}

pub use crate::cube_launch::{CubeLaunch, CubeWeightType, LaunchPlan, LaunchTuner, sparsity_bin};

fn dev(e: impl std::fmt::Display) -> KernelError {
    KernelError::Device(e.to_string())
}

/// A weight resident on a CubeCL device, ready for masked GEMVs.
pub struct CubeGemv {
    client: cubecl::client::Client,
    weight: cubecl::server::Handle,
    dtype: CubeWeightType,
    n_in: usize,
    n_out: usize,
    tuner: LaunchTuner,
}

impl std::fmt::Debug for CubeGemv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CubeGemv")
            .field("n_in", &self.n_in)
            .field("n_out", &self.n_out)
            .finish_non_exhaustive()
    }
}

/// A weight element that can be uploaded to a CubeCL device.
pub trait CubeWeight: crate::element::WeightElement + CubeElement + Float + Scalar {
    /// Its [`CubeWeightType`].
    const TYPE: CubeWeightType;
}

impl CubeWeight for f32 {
    const TYPE: CubeWeightType = CubeWeightType::F32;
}
impl CubeWeight for half::f16 {
    const TYPE: CubeWeightType = CubeWeightType::F16;
}
impl CubeWeight for half::bf16 {
    const TYPE: CubeWeightType = CubeWeightType::Bf16;
}

/// The wgpu client (Vulkan; lavapipe when no GPU is present).
pub fn wgpu_client() -> Result<cubecl::client::Client> {
    let device = cubecl::Device::vulkan(Default::default()).map_err(dev)?;
    Ok(device.client())
}

impl CubeGemv {
    /// Uploads `Wᵀ` [in, out] (contiguous row-major) to `client`.
    pub fn new(client: cubecl::client::Client, weight_t: ArrayView2<'_, f32>) -> Result<Self> {
        Self::new_typed(client, weight_t)
    }

    /// Uploads an f32, f16 or bf16 `Wᵀ` [in, out] (contiguous row-major) to `client`; errors when
    /// the device cannot hold and convert that type.
    pub fn new_typed<T: CubeWeight>(
        client: cubecl::client::Client,
        weight_t: ArrayView2<'_, T>,
    ) -> Result<Self> {
        use cubecl::ir::features::TypeUsage;
        let uses = <T as Scalar>::supported_uses(&client);
        if !(uses.contains(TypeUsage::Buffer) && uses.contains(TypeUsage::Conversion)) {
            return Err(KernelError::Device(format!(
                "{:?} weights are not supported by this device (buffer and conversion support needed)",
                T::TYPE
            )));
        }
        let (n_in, n_out) = weight_t.dim();
        if n_in == 0 || n_out == 0 {
            return Err(KernelError::EmptyTensor {
                tensor: "weight_t",
                shape: vec![n_in, n_out],
            });
        }
        let w = weight_t.as_slice().ok_or(KernelError::NotContiguous {
            tensor: "weight_t",
            shape: vec![n_in, n_out],
        })?;
        let weight = client.create_from_slice(T::as_bytes(w));
        Ok(Self {
            client,
            weight,
            dtype: T::TYPE,
            n_in,
            n_out,
            tuner: LaunchTuner::new(),
        })
    }

    /// `y = W · mask(x)` with explicit launch parameters.
    pub fn gemv_with(&self, x: &[f32], tau: f32, launch: CubeLaunch) -> Result<Vec<f32>> {
        self.check(x)?;
        self.run(x, tau, launch)
    }

    fn check(&self, x: &[f32]) -> Result<()> {
        check_input(x, self.n_in, self.n_out)
    }

    #[allow(unsafe_code)] // launch_unchecked: indices are bounds-checked inside the kernels
    fn run(&self, x: &[f32], tau: f32, launch: CubeLaunch) -> Result<Vec<f32>> {
        let plan = LaunchPlan::new(self.n_in, self.n_out, launch)?;
        let splits = plan.splits;
        let x_h = self.client.create_from_slice(f32::as_bytes(x));
        let partial = self.client.empty(splits * self.n_out * 4);
        let y = self.client.empty(self.n_out * 4);
        // SAFETY: `partial` holds splits · n_out f32 and `x_h` n_in (pass1's contract).
        unsafe {
            match self.dtype {
                CubeWeightType::F32 => self.pass1::<f32>(x_h, &partial, plan, tau),
                CubeWeightType::F16 => self.pass1::<half::f16>(x_h, &partial, plan, tau),
                CubeWeightType::Bf16 => self.pass1::<half::bf16>(x_h, &partial, plan, tau),
            }
        }
        // SAFETY: every index the kernel touches is bounds-checked against n_out, and the buffers
        // have exactly the lengths given.
        unsafe {
            reduce_splits::launch_unchecked(
                &self.client,
                CubeCount::Static(plan.reduce_blocks, 1, 1),
                CubeDim::new_1d(plan.block),
                BufferArg::from_raw_parts(partial, splits * self.n_out),
                BufferArg::from_raw_parts(y.clone(), self.n_out),
                splits,
                self.n_out,
            );
        }
        let bytes = self.client.read_one(y).map_err(dev)?;
        Ok(f32::from_bytes(&bytes).to_vec())
    }

    /// Launches pass 1 for weight element `E`.
    ///
    /// # Safety
    /// `partial` holds `splits · n_out` f32 and `x` `n_in`; the kernels bounds-check every index
    /// against `n_in` / `n_out`.
    #[allow(unsafe_code)]
    unsafe fn pass1<E: Float + CubeElement>(
        &self,
        x: cubecl::server::Handle,
        partial: &cubecl::server::Handle,
        a: LaunchPlan,
        tau: f32,
    ) {
        let count = CubeCount::Static(a.blocks, a.splits as u32, 1);
        // SAFETY: see the function's contract.
        unsafe {
            let w = BufferArg::from_raw_parts(self.weight.clone(), self.n_in * self.n_out);
            let x = BufferArg::from_raw_parts(x, self.n_in);
            let p = BufferArg::from_raw_parts(partial.clone(), a.splits * self.n_out);
            gemv_split_k::launch_unchecked::<E>(
                &self.client,
                count,
                CubeDim::new_1d(a.block),
                a.vector,
                w,
                x,
                p,
                tau,
                self.n_in,
                a.units,
                a.rows_per_split,
            );
        }
    }

    /// The element type of the resident weight.
    pub fn weight_type(&self) -> CubeWeightType {
        self.dtype
    }

    /// The launch parameters for this shape and `x`'s sparsity bin: timed once per key over
    /// [`CubeLaunch::CANDIDATES`] (median of 3 runs each), then cached.
    pub fn tuned_launch(&self, x: &[f32], tau: f32) -> Result<CubeLaunch> {
        self.check(x)?;
        let key = (self.n_out, self.n_in, sparsity_bin(x, tau));
        self.tuner
            .get_or_tune(key, |cand| self.run(x, tau, cand).map(drop))
    }

    /// `y = W · mask(x)` (keep x_j when |x_j| > τ; τ = 0 skips exact zeros), tuned launch.
    pub fn gemv_masked(&self, x: &[f32], tau: f32) -> Result<Vec<f32>> {
        check_tau(tau)?;
        let launch = self.tuned_launch(x, tau)?;
        self.run(x, tau, launch)
    }

    /// Dense `y = W · x`: the same kernel with nothing masked (τ = −1).
    pub fn gemv_dense(&self, x: &[f32]) -> Result<Vec<f32>> {
        let launch = self.tuned_launch(x, -1.0)?;
        self.run(x, -1.0, launch)
    }
}
