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
//! bundler downloads LLVM), so no CUDA client is wired in yet. Weights are f32, f16 or bf16
//! ([`CubeWeight`]), accumulated in f32.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use cubecl::prelude::*;
use ndarray::ArrayView2;

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

/// Launch parameters of the split-K kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct CubeLaunch {
    /// Units per cube along the outputs.
    pub block: u32,
    /// Number of input splits (cubes along y).
    pub splits: u32,
    /// Outputs per unit, loaded as one vector (1 = scalar loads; 4 needs `out` divisible by 4,
    /// else the scalar kernel runs).
    #[serde(default = "one")]
    pub vector: u32,
}

fn one() -> u32 {
    1
}

impl CubeLaunch {
    /// The candidates the tuner times.
    pub const CANDIDATES: [CubeLaunch; 9] = [
        CubeLaunch::new(64, 1, 1),
        CubeLaunch::new(64, 4, 1),
        CubeLaunch::new(128, 8, 1),
        CubeLaunch::new(128, 16, 1),
        CubeLaunch::new(256, 16, 1),
        CubeLaunch::new(256, 32, 1),
        CubeLaunch::new(64, 8, 4),
        CubeLaunch::new(128, 16, 4),
        CubeLaunch::new(256, 32, 4),
    ];

    /// `block` units per cube, `splits` input splits, `vector` outputs per unit.
    pub const fn new(block: u32, splits: u32, vector: u32) -> Self {
        Self {
            block,
            splits,
            vector,
        }
    }
}

/// Sparsity bin of an input for the tuning key (tenths, like the original's `SPARSITY_BIN`).
pub fn sparsity_bin(x: &[f32], tau: f32) -> u8 {
    if x.is_empty() {
        return 0;
    }
    let dropped = x.iter().filter(|v| v.abs() <= tau).count();
    ((dropped * 10) / x.len()).min(9) as u8
}

/// Pass-1 launch geometry.
#[derive(Clone, Copy)]
struct Pass1 {
    blocks: u32,
    splits: usize,
    block: u32,
    vector: usize,
    units: usize,
    rows_per_split: usize,
    tau: f32,
}

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
    tuned: Mutex<HashMap<(usize, usize, u8), CubeLaunch>>,
}

impl std::fmt::Debug for CubeGemv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CubeGemv")
            .field("n_in", &self.n_in)
            .field("n_out", &self.n_out)
            .finish_non_exhaustive()
    }
}

/// Element type of a weight on the device (accumulation is always f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CubeWeightType {
    /// f32.
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
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
            tuned: Mutex::new(HashMap::new()),
        })
    }

    /// `y = W · mask(x)` with explicit launch parameters.
    pub fn gemv_with(&self, x: &[f32], tau: f32, launch: CubeLaunch) -> Result<Vec<f32>> {
        self.check(x)?;
        self.run(x, tau, launch)
    }

    fn check(&self, x: &[f32]) -> Result<()> {
        if x.len() != self.n_in {
            return Err(KernelError::ShapeMismatch {
                tensor: "x",
                what: "length",
                got: x.len(),
                expected: self.n_in,
                context: format!("weight_t is [in, out] = [{}, {}]", self.n_in, self.n_out),
            });
        }
        Ok(())
    }

    #[allow(unsafe_code)] // launch_unchecked: indices are bounds-checked inside the kernels
    fn run(&self, x: &[f32], tau: f32, launch: CubeLaunch) -> Result<Vec<f32>> {
        if launch.block == 0 || launch.splits == 0 || !matches!(launch.vector, 1 | 2 | 4) {
            return Err(KernelError::Device(format!(
                "launch {launch:?}: block and splits must be at least 1, vector 1, 2 or 4"
            )));
        }
        let splits = (launch.splits as usize).min(self.n_in);
        let rows_per_split = self.n_in.div_ceil(splits);
        let splits = self.n_in.div_ceil(rows_per_split);
        // the requested width when it divides the outputs, else scalar loads
        let vector = match launch.vector as usize {
            v if self.n_out.is_multiple_of(v) => v,
            _ => 1,
        };
        let units = self.n_out / vector;
        let blocks = units.div_ceil(launch.block as usize) as u32;
        let x_h = self.client.create_from_slice(f32::as_bytes(x));
        let partial = self.client.empty(splits * self.n_out * 4);
        let y = self.client.empty(self.n_out * 4);
        let args = Pass1 {
            blocks,
            splits,
            block: launch.block,
            vector,
            units,
            rows_per_split,
            tau,
        };
        // SAFETY: `partial` holds splits · n_out f32 and `x_h` n_in (pass1's contract).
        unsafe {
            match self.dtype {
                CubeWeightType::F32 => self.pass1::<f32>(x_h, &partial, args),
                CubeWeightType::F16 => self.pass1::<half::f16>(x_h, &partial, args),
                CubeWeightType::Bf16 => self.pass1::<half::bf16>(x_h, &partial, args),
            }
        }
        // SAFETY: every index the kernel touches is bounds-checked against n_out, and the buffers
        // have exactly the lengths given.
        unsafe {
            reduce_splits::launch_unchecked(
                &self.client,
                CubeCount::Static(self.n_out.div_ceil(launch.block as usize) as u32, 1, 1),
                CubeDim::new_1d(launch.block),
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
        a: Pass1,
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
                a.tau,
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
        if let Some(l) = self.tuned.lock().map_err(dev)?.get(&key) {
            return Ok(*l);
        }
        let mut best: Option<(f64, CubeLaunch)> = None;
        for cand in CubeLaunch::CANDIDATES {
            let mut times = Vec::with_capacity(3);
            for _ in 0..3 {
                let t = Instant::now();
                self.run(x, tau, cand)?;
                times.push(t.elapsed().as_secs_f64());
            }
            times.sort_by(f64::total_cmp);
            if best.is_none_or(|(b, _)| times[1] < b) {
                best = Some((times[1], cand));
            }
        }
        let chosen = best.map_or(CubeLaunch::CANDIDATES[0], |(_, c)| c);
        tracing::debug!(?key, ?chosen, "cube gemv tuned");
        self.tuned.lock().map_err(dev)?.insert(key, chosen);
        Ok(chosen)
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
