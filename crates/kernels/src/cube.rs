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
//! CubeCL runtime has). `gemv_split_k_vec` is pass 1 with vectorised loads: each unit owns
//! `CubeLaunch::vector` consecutive outputs and reads one vector per kept row.
//!
//! Runtime here: cubecl 0.11.3's wgpu runtime on Mesa's software Vulkan driver (lavapipe,
//! Debian `mesa-vulkan-drivers`), so the kernel is tested without a GPU. The same kernel code
//! runs on any CubeCL runtime; cubecl 0.11's CUDA runtime does not build offline (its LLVM
//! bundler downloads LLVM), so no CUDA client is wired in yet. f32 weights only.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use cubecl::prelude::*;
use ndarray::ArrayView2;

use crate::error::{KernelError, Result};
use crate::gemv::check_tau;

/// Pass 1: partial sums of y over one split of the input rows.
#[cube(launch_unchecked)]
fn gemv_split_k(
    w_t: &[f32],
    x: &[f32],
    partial: &mut [f32],
    tau: f32,
    n_in: usize,
    n_out: usize,
    rows_per_split: usize,
) {
    let o = (CUBE_POS_X * CUBE_DIM_X + UNIT_POS_X) as usize;
    let s = CUBE_POS_Y as usize;
    if o < n_out {
        let start = s * rows_per_split;
        let mut end = start + rows_per_split;
        if end > n_in {
            end = n_in;
        }
        let mut acc = 0.0f32;
        for j in start..end {
            let xv = x[j];
            if xv.abs() > tau {
                acc += xv * w_t[j * n_out + o];
            }
        }
        partial[s * n_out + o] = acc;
    }
}

/// Pass 1 with vectorised loads: unit u owns the `N` consecutive outputs of vector u, reading
/// one `N`-wide vector per kept row of Wᵀ (needs `n_out` divisible by `N`). Same arithmetic per
/// output as [`gemv_split_k`].
#[cube(launch_unchecked)]
fn gemv_split_k_vec<N: Size>(
    w_t: &[Vector<f32, N>],
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
                acc += Vector::<f32, N>::new(xv) * w_t[j * n_out_vec + o];
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

fn dev(e: impl std::fmt::Display) -> KernelError {
    KernelError::Device(e.to_string())
}

/// A weight resident on a CubeCL device, ready for masked GEMVs.
pub struct CubeGemv {
    client: cubecl::client::Client,
    weight: cubecl::server::Handle,
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

/// The wgpu client (Vulkan; lavapipe when no GPU is present).
pub fn wgpu_client() -> Result<cubecl::client::Client> {
    let device = cubecl::Device::vulkan(Default::default()).map_err(dev)?;
    Ok(device.client())
}

impl CubeGemv {
    /// Uploads `Wᵀ` [in, out] (contiguous row-major) to `client`.
    pub fn new(client: cubecl::client::Client, weight_t: ArrayView2<'_, f32>) -> Result<Self> {
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
        let weight = client.create_from_slice(f32::as_bytes(w));
        Ok(Self {
            client,
            weight,
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
        let vector = launch.vector as usize;
        let vectorised = vector > 1 && self.n_out.is_multiple_of(vector);
        let units = if vectorised {
            self.n_out / vector
        } else {
            self.n_out
        };
        let blocks = units.div_ceil(launch.block as usize) as u32;
        let x_h = self.client.create_from_slice(f32::as_bytes(x));
        let partial = self.client.empty(splits * self.n_out * 4);
        let y = self.client.empty(self.n_out * 4);
        // SAFETY: every index the kernels touch is bounds-checked against n_in / n_out, and the
        // buffers have exactly the lengths given.
        unsafe {
            if vectorised {
                gemv_split_k_vec::launch_unchecked(
                    &self.client,
                    CubeCount::Static(blocks, splits as u32, 1),
                    CubeDim::new_1d(launch.block),
                    vector,
                    BufferArg::from_raw_parts(self.weight.clone(), self.n_in * self.n_out),
                    BufferArg::from_raw_parts(x_h, self.n_in),
                    BufferArg::from_raw_parts(partial.clone(), splits * self.n_out),
                    tau,
                    self.n_in,
                    units,
                    rows_per_split,
                );
            } else {
                gemv_split_k::launch_unchecked(
                    &self.client,
                    CubeCount::Static(blocks, splits as u32, 1),
                    CubeDim::new_1d(launch.block),
                    BufferArg::from_raw_parts(self.weight.clone(), self.n_in * self.n_out),
                    BufferArg::from_raw_parts(x_h, self.n_in),
                    BufferArg::from_raw_parts(partial.clone(), splits * self.n_out),
                    tau,
                    self.n_in,
                    self.n_out,
                    rows_per_split,
                );
            }
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
