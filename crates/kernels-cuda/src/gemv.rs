//! The split-K kernel in cubecl 0.10's dialect, its CUDA client and the GPU benchmark.
//!
//! Pass 1 (`gemv_split_k`): cube (bx, s) handles outputs [bx·B·N, (bx+1)·B·N) over input rows
//! [s·R, (s+1)·R); each unit owns `N` consecutive outputs and reads one `N`-wide vector of each
//! kept row of Wᵀ [in, out], so a cube's loads of one row are contiguous (coalesced), and all
//! units of a cube test the same x_j: skipping a masked row is a uniform branch that reads no
//! weight. Pass 2 (`reduce_splits`) sums the splits' partials. Same algorithm, launch plan and
//! tuner as `sparsity_kernels::cube` (cubecl 0.11, wgpu).

use std::time::Instant;

use cubecl::cuda::{CudaDevice, CudaRuntime};
use cubecl::prelude::*;
use cubecl::server::Handle;
use ndarray::ArrayView2;
use serde::Serialize;
use sparsity_kernels::KernelError;
use sparsity_kernels::cube_launch::{
    CubeLaunch, CubeWeightType, LaunchPlan, LaunchTuner, check_input, sparsity_bin,
};

type Result<T> = std::result::Result<T, KernelError>;
type Client = ComputeClient<CudaRuntime>;

#[cube(launch_unchecked)]
fn gemv_split_k<E: Float, N: Size>(
    w_t: &Array<Vector<E, N>>,
    x: &Array<f32>,
    partial: &mut Array<Vector<f32, N>>,
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

#[cube(launch_unchecked)]
fn reduce_splits(partial: &Array<f32>, y: &mut Array<f32>, splits: usize, n_out: usize) {
    let o = (CUBE_POS_X * CUBE_DIM_X + UNIT_POS_X) as usize;
    if o < n_out {
        let mut acc = 0.0f32;
        for s in 0..splits {
            acc += partial[s * n_out + o];
        }
        y[o] = acc;
    }
}

/// A STREAM-like device copy (4-wide loads and stores), for the bandwidth probe.
#[cube(launch_unchecked)]
fn copy_vec(
    src: &Array<Vector<f32, Const<4>>>,
    dst: &mut Array<Vector<f32, Const<4>>>,
    n_vec: usize,
) {
    if ABSOLUTE_POS < n_vec {
        dst[ABSOLUTE_POS] = src[ABSOLUTE_POS];
    }
}

fn dev(e: impl std::fmt::Display) -> KernelError {
    KernelError::Device(e.to_string())
}

/// Waits until every launch queued on `client` has finished.
fn sync(client: &Client) -> Result<()> {
    cubecl::future::block_on(client.sync()).map_err(|e| dev(format!("{e:?}")))
}

/// The client of CUDA device `index`; an error (not a panic) when no driver or device is found.
pub fn cuda_client(index: usize) -> Result<Client> {
    let device = CudaDevice { index };
    std::panic::catch_unwind(|| CudaRuntime::client(&device)).map_err(|p| {
        let why = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_string()))
            .unwrap_or_else(|| "unknown cause".into());
        KernelError::Device(format!(
            "CUDA device {index}: cannot create a client ({why}); the NVIDIA driver's libcuda.so must be loadable and the device present"
        ))
    })
}

/// A weight element the CUDA client takes (f32, f16, bf16; accumulation is f32).
pub trait CudaWeight:
    sparsity_kernels::WeightElement + CubeElement + Float + Scalar + CubePrimitive
{
    /// Its [`CubeWeightType`].
    const TYPE: CubeWeightType;
}
impl CudaWeight for f32 {
    const TYPE: CubeWeightType = CubeWeightType::F32;
}
impl CudaWeight for half::f16 {
    const TYPE: CubeWeightType = CubeWeightType::F16;
}
impl CudaWeight for half::bf16 {
    const TYPE: CubeWeightType = CubeWeightType::Bf16;
}

/// A weight resident on a CUDA device (optionally in several copies, which the benchmark
/// rotates so that weights come from HBM, not L2), ready for masked GEMVs.
pub struct CudaGemv {
    client: Client,
    weights: Vec<Handle>,
    dtype: CubeWeightType,
    n_in: usize,
    n_out: usize,
    tuner: LaunchTuner,
}

impl std::fmt::Debug for CudaGemv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaGemv")
            .field("n_in", &self.n_in)
            .field("n_out", &self.n_out)
            .field("dtype", &self.dtype)
            .field("copies", &self.weights.len())
            .finish_non_exhaustive()
    }
}

/// Device buffers of one GEMV (input, split partials, output).
struct Buffers {
    x: Handle,
    partial: Handle,
    y: Handle,
    splits: usize,
}

impl CudaGemv {
    /// Uploads an f32, f16 or bf16 `Wᵀ` [in, out] (contiguous row-major); errors when the
    /// device cannot hold and convert that type.
    pub fn new_typed<T: CudaWeight>(client: Client, weight_t: ArrayView2<'_, T>) -> Result<Self> {
        Self::with_copies(client, weight_t, 1)
    }

    fn with_copies<T: CudaWeight>(
        client: Client,
        weight_t: ArrayView2<'_, T>,
        copies: usize,
    ) -> Result<Self> {
        use cubecl::ir::features::TypeUsage;
        let uses = <T as CubePrimitive>::supported_uses(&client);
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
        let weights = (0..copies.max(1))
            .map(|_| client.create_from_slice(T::as_bytes(w)))
            .collect();
        Ok(Self {
            client,
            weights,
            dtype: T::TYPE,
            n_in,
            n_out,
            tuner: LaunchTuner::new(),
        })
    }

    /// The element type of the resident weight.
    pub fn weight_type(&self) -> CubeWeightType {
        self.dtype
    }

    fn buffers(&self, x: &[f32], plan: &LaunchPlan) -> Buffers {
        Buffers {
            x: self.client.create_from_slice(f32::as_bytes(x)),
            partial: self.client.empty(plan.splits * self.n_out * 4),
            y: self.client.empty(self.n_out * 4),
            splits: plan.splits,
        }
    }

    /// Enqueues both passes with weight copy `copy` (no read back).
    #[allow(unsafe_code)] // launch_unchecked: every index is bounds-checked inside the kernels
    fn enqueue(&self, copy: usize, b: &Buffers, plan: &LaunchPlan, tau: f32) {
        let w = &self.weights[copy % self.weights.len()];
        // SAFETY: the weight holds n_in · n_out elements, `x` n_in f32, `partial` splits · n_out
        // f32 and `y` n_out f32 (allocated by `buffers` for this plan); the kernels compare every
        // index with n_in / n_out before use.
        unsafe {
            match self.dtype {
                CubeWeightType::F32 => self.pass1::<f32>(w, b, plan, tau),
                CubeWeightType::F16 => self.pass1::<half::f16>(w, b, plan, tau),
                CubeWeightType::Bf16 => self.pass1::<half::bf16>(w, b, plan, tau),
            }
            reduce_splits::launch_unchecked::<CudaRuntime>(
                &self.client,
                CubeCount::Static(plan.reduce_blocks, 1, 1),
                CubeDim::new_1d(plan.block),
                ArrayArg::from_raw_parts(b.partial.clone(), b.splits * self.n_out),
                ArrayArg::from_raw_parts(b.y.clone(), self.n_out),
                b.splits,
                self.n_out,
            );
        }
    }

    /// # Safety
    /// As [`Self::enqueue`]: the buffers match `plan` and the weight's shape.
    #[allow(unsafe_code)]
    unsafe fn pass1<E: Float + CubeElement>(
        &self,
        w: &Handle,
        b: &Buffers,
        plan: &LaunchPlan,
        tau: f32,
    ) {
        // SAFETY: see the function's contract.
        unsafe {
            gemv_split_k::launch_unchecked::<E, CudaRuntime>(
                &self.client,
                CubeCount::Static(plan.blocks, plan.splits as u32, 1),
                CubeDim::new_1d(plan.block),
                plan.vector,
                ArrayArg::from_raw_parts(w.clone(), self.n_in * self.n_out),
                ArrayArg::from_raw_parts(b.x.clone(), self.n_in),
                ArrayArg::from_raw_parts(b.partial.clone(), plan.splits * self.n_out),
                tau,
                self.n_in,
                plan.units,
                plan.rows_per_split,
            );
        }
    }

    fn read(&self, y: &Handle) -> Result<Vec<f32>> {
        let bytes = self.client.read_one(y.clone()).map_err(dev)?;
        Ok(f32::from_bytes(&bytes).to_vec())
    }

    fn run(&self, x: &[f32], tau: f32, launch: CubeLaunch) -> Result<Vec<f32>> {
        let plan = LaunchPlan::new(self.n_in, self.n_out, launch)?;
        let b = self.buffers(x, &plan);
        self.enqueue(0, &b, &plan, tau);
        self.read(&b.y)
    }

    /// Seconds per GEMV: `reps` launches (rotating the weight copies) with `x` resident,
    /// synchronised by one read of `y` at the end.
    fn time_resident(&self, x: &[f32], tau: f32, launch: CubeLaunch, reps: usize) -> Result<f64> {
        let plan = LaunchPlan::new(self.n_in, self.n_out, launch)?;
        let b = self.buffers(x, &plan);
        // warm-up (compilation, first touch)
        self.enqueue(0, &b, &plan, tau);
        self.read(&b.y)?;
        let start = Instant::now();
        for r in 0..reps.max(1) {
            self.enqueue(r, &b, &plan, tau);
        }
        sync(&self.client)?;
        Ok(start.elapsed().as_secs_f64() / reps.max(1) as f64)
    }

    /// `y = W · mask(x)` with explicit launch parameters.
    pub fn gemv_with(&self, x: &[f32], tau: f32, launch: CubeLaunch) -> Result<Vec<f32>> {
        check_input(x, self.n_in, self.n_out)?;
        self.run(x, tau, launch)
    }

    /// The launch for this shape and `x`'s sparsity bin: every candidate timed once per key
    /// (kernel time with `x` resident, median of 3), then cached.
    pub fn tuned_launch(&self, x: &[f32], tau: f32) -> Result<CubeLaunch> {
        check_input(x, self.n_in, self.n_out)?;
        let key = (self.n_out, self.n_in, sparsity_bin(x, tau));
        self.tuner
            .get_or_tune(key, |cand| self.time_resident(x, tau, cand, 10).map(drop))
    }

    /// `y = W · mask(x)` (keep x_j when |x_j| > τ; τ = 0 skips exact zeros), tuned launch.
    pub fn gemv_masked(&self, x: &[f32], tau: f32) -> Result<Vec<f32>> {
        sparsity_kernels::gemv::check_tau(tau)?;
        let launch = self.tuned_launch(x, tau)?;
        self.run(x, tau, launch)
    }

    /// Dense `y = W · x`: the same kernel with nothing masked (τ = −1).
    pub fn gemv_dense(&self, x: &[f32]) -> Result<Vec<f32>> {
        let launch = self.tuned_launch(x, -1.0)?;
        self.run(x, -1.0, launch)
    }
}

/// Device-to-device copy bandwidth in GB/s (bytes read + written per second) over a buffer of
/// `bytes`, median of `reps` copies.
#[allow(unsafe_code)] // launch_unchecked: the kernel bounds-checks against the vector count
pub fn device_copy_bandwidth(client: &Client, bytes: usize, reps: usize) -> Result<f64> {
    let n = (bytes / 16).max(1) * 4; // f32 count, a multiple of the vector width
    let src = client.create_from_slice(f32::as_bytes(&vec![1.0f32; n]));
    let dst = client.empty(n * 4);
    let block = 256u32;
    let cubes = (n / 4).div_ceil(block as usize) as u32;
    let launch = || {
        // SAFETY: both buffers hold n f32 = n / 4 vectors; the kernel checks against n / 4.
        unsafe {
            copy_vec::launch_unchecked::<CudaRuntime>(
                client,
                CubeCount::Static(cubes, 1, 1),
                CubeDim::new_1d(block),
                ArrayArg::from_raw_parts(src.clone(), n),
                ArrayArg::from_raw_parts(dst.clone(), n),
                n / 4,
            );
        }
    };
    launch();
    sync(client)?;
    let mut times = Vec::with_capacity(reps.max(1));
    for _ in 0..reps.max(1) {
        let start = Instant::now();
        for _ in 0..10 {
            launch();
        }
        sync(client)?;
        times.push(start.elapsed().as_secs_f64() / 10.0);
    }
    times.sort_by(f64::total_cmp);
    Ok(2.0 * (n * 4) as f64 / times[times.len() / 2] / 1e9)
}

/// One row of the GPU benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct GpuBenchRow {
    /// Outputs.
    pub out: usize,
    /// Inputs.
    pub r#in: usize,
    /// Weight element type.
    pub dtype: CubeWeightType,
    /// Requested input sparsity (`None`: the dense path, τ = −1).
    pub sparsity: Option<f64>,
    /// Measured fraction of skipped inputs.
    pub measured_sparsity: f64,
    /// The tuned launch.
    pub launch: CubeLaunch,
    /// Seconds per GEMV (weights rotated over copies larger than L2 in total).
    pub seconds: f64,
    /// Weight bytes actually read per second, in GB/s.
    pub effective_gbps: f64,
    /// Dense path time / this row's time.
    pub speedup_vs_dense: f64,
}

/// Times the dense path and the masked path at each sparsity for an `out × in` weight of type
/// `T`, rotating copies of the weight so that at least `rotate_bytes` are cycled (set it to
/// several times the L2 size). Inputs are deterministic (`seed`); τ is the sparsity quantile of
/// |x|.
pub fn bench_gpu<T: CudaWeight>(
    client: &Client,
    out: usize,
    inp: usize,
    sparsities: &[f64],
    rotate_bytes: usize,
    reps: usize,
    seed: u64,
) -> Result<Vec<GpuBenchRow>> {
    sparsity_kernels::bench::check_sparsities(sparsities)?;
    let elem = std::mem::size_of::<T>();
    let copies = rotate_bytes.div_ceil(out * inp * elem).max(1);
    // a deterministic pseudo-random weight and input (xorshift, no made-up results: only inputs)
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    };
    let w: Vec<T> = (0..inp * out).map(|_| T::from_f32(next() * 0.05)).collect();
    let w =
        ArrayView2::from_shape((inp, out), &w).map_err(|e| KernelError::Device(e.to_string()))?;
    let g = CudaGemv::with_copies(client.clone(), w, copies)?;
    let x: Vec<f32> = (0..inp).map(|_| next()).collect();
    let xs =
        ArrayView2::from_shape((1, inp), &x).map_err(|e| KernelError::Device(e.to_string()))?;
    let mut rows = Vec::new();
    let case = |sparsity: Option<f64>| -> Result<GpuBenchRow> {
        // τ from the workspace's one TEAL calibration (dense path: τ = −1 skips nothing)
        let tau = match sparsity {
            None => -1.0,
            Some(s) => sparsity_kernels::ThresholdCalibration::new(s).fit(xs)?.tau,
        };
        let launch = g.tuned_launch(&x, tau)?;
        let seconds = g.time_resident(&x, tau, launch, reps)?;
        let skipped = x.iter().filter(|v| v.abs() <= tau).count() as f64 / inp as f64;
        let read = (1.0 - skipped) * (out * inp * elem) as f64;
        Ok(GpuBenchRow {
            out,
            r#in: inp,
            dtype: T::TYPE,
            sparsity,
            measured_sparsity: skipped,
            launch,
            seconds,
            effective_gbps: read / seconds / 1e9,
            speedup_vs_dense: 0.0,
        })
    };
    let dense = case(None)?;
    rows.push(dense.clone());
    for &s in sparsities {
        rows.push(case(Some(s))?);
    }
    for r in &mut rows {
        r.speedup_vs_dense = dense.seconds / r.seconds;
    }
    tracing::info!(out, inp, copies, "gpu gemv bench done");
    Ok(rows)
}

/// [`bench_gpu`] for every `(out, in)` shape with weights of type `dtype`, in order.
pub fn bench_shapes(
    client: &Client,
    shapes: &[(usize, usize)],
    dtype: sparsity_kernels::bench::WeightDtype,
    sparsities: &[f64],
    rotate_bytes: usize,
    reps: usize,
    seed: u64,
) -> Result<Vec<GpuBenchRow>> {
    use half::{bf16, f16};
    use sparsity_kernels::bench::WeightDtype;
    let mut rows = Vec::new();
    for &(o, i) in shapes {
        let (sp, r) = (sparsities, reps.max(1));
        rows.extend(match dtype {
            WeightDtype::F32 => bench_gpu::<f32>(client, o, i, sp, rotate_bytes, r, seed)?,
            WeightDtype::F16 => bench_gpu::<f16>(client, o, i, sp, rotate_bytes, r, seed)?,
            WeightDtype::Bf16 => bench_gpu::<bf16>(client, o, i, sp, rotate_bytes, r, seed)?,
        });
    }
    Ok(rows)
}

/// The benchmark rows as a text table: time, effective GB/s, % of the copy bandwidth and speed-up
/// over the dense path.
pub fn format_table(rows: &[GpuBenchRow], copy_gbps: f64) -> String {
    let mut t = format!(
        "{:<12} {:<5} {:>8} {:>8} {:>10} {:>9} {:>9} {:>8}  launch\n",
        "shape", "dtype", "target_s", "actual_s", "us", "eff_GB/s", "%copy_bw", "x_dense"
    );
    for r in rows {
        t += &format!(
            "{:<12} {:<5} {:>8} {:>8.3} {:>10.2} {:>9.0} {:>9.1} {:>8.2}  {:?}\n",
            format!("{}x{}", r.out, r.r#in),
            format!("{:?}", r.dtype).to_lowercase(),
            r.sparsity.map_or("dense".into(), |s| format!("{s:.2}")),
            r.measured_sparsity,
            r.seconds * 1e6,
            r.effective_gbps,
            100.0 * r.effective_gbps / copy_gbps,
            r.speedup_vs_dense,
            r.launch,
        );
    }
    t
}
