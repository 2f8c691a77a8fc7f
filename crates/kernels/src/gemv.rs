//! CPU masked GEMV: `y = W · mask(x)`, `mask(x)_j = x_j · 1(|x_j| > τ)`.
//!
//! The weight is stored transposed, `Wᵀ` row-major `[in, out]` (TEAL's "column-major"
//! `W`, Liu et al. 2024, *Training-Free Activation Sparsity in Large Language Models*,
//! arXiv 2408.14690), so a kept input `j` reads one contiguous row `Wᵀ[j, ·]` and a
//! skipped input costs no memory traffic at all. The kernel
//!
//! 1. gathers the kept inputs `K = { j : |x_j| > τ }` (τ = 0 skips exact zeros),
//! 2. for one vector on the pool, splits the kept inputs into one contiguous run per thread
//!    (split-K: each thread streams whole rows of one block of `Wᵀ` into a private partial
//!    `y`; the partials are added); otherwise (small batches, `split_k = false`) splits the
//!    outputs into chunks, one rayon task each (a chunk of `y` stays in L1),
//! 3. AXPYs the kept rows four at a time:
//!    `y[c] += x_a·Wᵀ[a, c] + x_b·Wᵀ[b, c] + x_c·Wᵀ[c, c] + x_d·Wᵀ[d, c]`, in f32.
//!
//! The dense GEMV is the same kernel with every input kept (no threshold test), so the
//! two differ only in the rows they read: at sparsity s the ideal speed-up is 1/(1−s).
//! Small decode batches (≤ [`MAX_BATCH`]) read each kept row once for all batch rows:
//! a row is kept when any batch row keeps it, and the others multiply it by 0.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::element::WeightElement;
use crate::error::{KernelError, Result};

/// Largest batch the small-batch kernel accepts (decode batches; prefill is a GEMM).
pub const MAX_BATCH: usize = 8;

/// Tuning knobs of the CPU kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GemvConfig {
    /// Outputs per rayon task (rounded up to a multiple of 8; at least 8). The chunk of
    /// `y` (`4 · chunk_outputs · batch` bytes) should stay in L1/L2.
    pub chunk_outputs: usize,
    /// Run the output chunks on the rayon pool (`false`: on the calling thread).
    pub parallel: bool,
    /// Smallest call (weights read: kept rows × outputs × batch) worth the pool: below it the
    /// call runs on the calling thread. On small shapes the pool costs more than the GEMV itself
    /// (criterion `gemv_small_*`: a 512 × 128 dense GEMV takes 5.9 µs on the calling thread and
    /// 12.0 µs through the pool; docs/benchmarks.md). Above 2^18 the pool wins: a 256 × 2048
    /// f32 call (a key/value projection of TinyLlama) took 235–289 µs on the calling thread and
    /// 122–163 µs on two threads (`bench_gemv_quick`, 2026-12-04).
    pub min_parallel_work: usize,
    /// Single-vector calls on the pool split the kept **inputs** among the threads (split-K):
    /// each thread AXPYs whole rows of `Wᵀ` from one contiguous run of them into a private
    /// partial `y`, and the partials are added. Each thread then streams one contiguous block of
    /// `Wᵀ`, which the hardware prefetchers follow; splitting the outputs instead (`false`) reads
    /// every row as a short segment at a stride of `out` (docs/benchmarks.md has both).
    #[serde(default = "default_split_k")]
    pub split_k: bool,
}

fn default_split_k() -> bool {
    true
}

impl Default for GemvConfig {
    fn default() -> Self {
        Self {
            chunk_outputs: 2048,
            parallel: true,
            min_parallel_work: 1 << 18,
            split_k: true,
        }
    }
}

impl GemvConfig {
    /// Checks the options.
    pub fn validate(&self) -> Result<()> {
        if self.chunk_outputs == 0 {
            return Err(KernelError::InvalidOption {
                option: "chunk_outputs",
                value: self.chunk_outputs.to_string(),
                reason: "must be at least 1",
            });
        }
        Ok(())
    }

    /// The chunk length used for `n_out` outputs: no longer than `chunk_outputs`, and
    /// short enough that every pool thread gets a chunk.
    fn chunk_len(&self, n_out: usize) -> usize {
        let threads = if self.parallel {
            rayon::current_num_threads().max(1)
        } else {
            1
        };
        let even = n_out.div_ceil(threads).next_multiple_of(8);
        self.chunk_outputs.next_multiple_of(8).min(even).max(8)
    }
}

/// What a masked call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GemvStats {
    /// Inputs whose row of `Wᵀ` was read.
    pub kept_inputs: usize,
    /// All inputs.
    pub total_inputs: usize,
}

impl GemvStats {
    /// Fraction of inputs skipped, in [0, 1].
    pub fn sparsity(&self) -> f64 {
        if self.total_inputs == 0 {
            return 0.0;
        }
        1.0 - self.kept_inputs as f64 / self.total_inputs as f64
    }
}

/// Checks τ: finite and non-negative (the threshold of every masked GEMV here and in
/// `sparsity-kernels-cuda`).
pub fn check_tau(tau: f32) -> Result<()> {
    if !tau.is_finite() || tau < 0.0 {
        return Err(KernelError::InvalidThreshold { tau });
    }
    Ok(())
}

/// The contiguous storage of `Wᵀ` [in, out], checked.
pub(crate) fn weight_slice<'a, 'b, T: WeightElement>(
    weight_t: &'b ArrayView2<'a, T>,
) -> Result<&'b [T]> {
    let (n_in, n_out) = weight_t.dim();
    if n_in == 0 || n_out == 0 {
        return Err(KernelError::EmptyTensor {
            tensor: "weight_t",
            shape: vec![n_in, n_out],
        });
    }
    weight_t
        .as_slice()
        .ok_or_else(|| KernelError::NotContiguous {
            tensor: "weight_t",
            shape: vec![n_in, n_out],
        })
}

fn check_len(
    tensor: &'static str,
    what: &'static str,
    got: usize,
    expected: usize,
    n_in: usize,
    n_out: usize,
) -> Result<()> {
    if got != expected {
        return Err(KernelError::ShapeMismatch {
            tensor,
            what,
            got,
            expected,
            context: format!("weight_t is [in, out] = [{n_in}, {n_out}]"),
        });
    }
    Ok(())
}

/// The inner loop shared by every CPU entry point.
///
/// `kept`: input rows to read; `coeff` [kept.len(), batch]: their multipliers per batch
/// row; `y` [batch, n_out]: overwritten with the result.
fn accumulate<T: WeightElement>(
    w_t: &[T],
    n_out: usize,
    kept: &[usize],
    coeff: &[f32],
    batch: usize,
    y: &mut [f32],
    config: &GemvConfig,
) {
    y.fill(0.0);
    let threads = rayon::current_num_threads();
    if batch == 1
        && config.parallel
        && config.split_k
        && threads > 1
        && kept.len() >= 8
        && kept.len() * n_out >= config.min_parallel_work
    {
        // split-K: contiguous runs of kept rows per thread, whole rows each; the first run
        // accumulates into `y` itself, the others into partials added at the end
        let per = kept.len().div_ceil(threads).next_multiple_of(4);
        let parts = kept.len().div_ceil(per);
        let mut partials = vec![vec![0.0f32; n_out]; parts - 1];
        let mut targets: Vec<&mut [f32]> = Vec::with_capacity(parts);
        targets.push(&mut *y);
        targets.extend(partials.iter_mut().map(Vec::as_mut_slice));
        targets
            .into_par_iter()
            .zip(kept.par_chunks(per).zip(coeff.par_chunks(per)))
            .for_each(|(acc, (k, c))| axpy_rows(acc, w_t, n_out, 0, k, c));
        for p in &partials {
            y.iter_mut().zip(p).for_each(|(y, p)| *y += p);
        }
        return;
    }
    let chunk = config.chunk_len(n_out);
    let n_chunks = n_out.div_ceil(chunk);
    // Regroup y [batch, n_out] into per-chunk lists of batch segments.
    let mut per_chunk: Vec<Vec<&mut [f32]>> =
        (0..n_chunks).map(|_| Vec::with_capacity(batch)).collect();
    for y_b in y.chunks_mut(n_out) {
        for (segments, seg) in per_chunk.iter_mut().zip(y_b.chunks_mut(chunk)) {
            segments.push(seg);
        }
    }
    let work = |(c, mut segs): (usize, Vec<&mut [f32]>)| {
        let start = c * chunk;
        let len = segs.first().map_or(0, |s| s.len());
        let row = |j: usize| &w_t[j * n_out + start..j * n_out + start + len];
        let mut groups = kept.chunks_exact(4);
        let mut g = 0;
        for idx in groups.by_ref() {
            let rows = [row(idx[0]), row(idx[1]), row(idx[2]), row(idx[3])];
            for (b, seg) in segs.iter_mut().enumerate() {
                let cf = [
                    coeff[g * batch + b],
                    coeff[(g + 1) * batch + b],
                    coeff[(g + 2) * batch + b],
                    coeff[(g + 3) * batch + b],
                ];
                if cf != [0.0; 4] {
                    T::axpy4(seg, rows, cf);
                }
            }
            g += 4;
        }
        for &j in groups.remainder() {
            let r = row(j);
            for (b, seg) in segs.iter_mut().enumerate() {
                let cf = coeff[g * batch + b];
                if cf != 0.0 {
                    T::axpy1(seg, r, cf);
                }
            }
            g += 1;
        }
    };
    if config.parallel && n_chunks > 1 && kept.len() * n_out * batch >= config.min_parallel_work {
        per_chunk.into_par_iter().enumerate().for_each(work);
    } else {
        per_chunk.into_iter().enumerate().for_each(work);
    }
}

/// `acc += Σ_i coeff[i] · Wᵀ[kept[i], start..start + acc.len()]` for one vector, four rows at a
/// time.
fn axpy_rows<T: WeightElement>(
    acc: &mut [f32],
    w_t: &[T],
    n_out: usize,
    start: usize,
    kept: &[usize],
    coeff: &[f32],
) {
    let len = acc.len();
    let row = |j: usize| &w_t[j * n_out + start..j * n_out + start + len];
    let mut groups = kept.chunks_exact(4);
    let mut cfs = coeff.chunks_exact(4);
    for (idx, cf) in groups.by_ref().zip(cfs.by_ref()) {
        let cf = [cf[0], cf[1], cf[2], cf[3]];
        if cf != [0.0; 4] {
            T::axpy4(
                acc,
                [row(idx[0]), row(idx[1]), row(idx[2]), row(idx[3])],
                cf,
            );
        }
    }
    for (&j, &cf) in groups.remainder().iter().zip(cfs.remainder()) {
        if cf != 0.0 {
            T::axpy1(acc, row(j), cf);
        }
    }
}

/// `y = W · mask(x)` into a caller-owned `y` (the decode hot path: no allocation of `y`).
///
/// - `weight_t`: `Wᵀ` [in, out], contiguous row-major.
/// - `x`: \[in\] activations (any stride).
/// - `tau`: keep `x_j` when `|x_j| > tau`; `tau = 0` skips exact zeros. NaN inputs are
///   dropped (`|NaN| > τ` is false), exactly as the formula reads.
/// - `y`: \[out\], overwritten.
pub fn gemv_masked_into<T: WeightElement>(
    weight_t: ArrayView2<'_, T>,
    x: ArrayView1<'_, f32>,
    tau: f32,
    mut y: ArrayViewMut1<'_, f32>,
    config: &GemvConfig,
) -> Result<GemvStats> {
    config.validate()?;
    check_tau(tau)?;
    let (n_in, n_out) = weight_t.dim();
    let w = weight_slice(&weight_t)?;
    check_len("x", "length", x.len(), n_in, n_in, n_out)?;
    check_len("y", "length", y.len(), n_out, n_in, n_out)?;
    let y_len = y.len();
    let y = y.as_slice_mut().ok_or(KernelError::NotContiguous {
        tensor: "y",
        shape: vec![y_len],
    })?;
    let (kept, coeff): (Vec<usize>, Vec<f32>) = x
        .iter()
        .enumerate()
        .filter(|(_, v)| v.abs() > tau)
        .map(|(j, &v)| (j, v))
        .unzip();
    accumulate(w, n_out, &kept, &coeff, 1, y, config);
    Ok(GemvStats {
        kept_inputs: kept.len(),
        total_inputs: n_in,
    })
}

/// `y = W · mask(x)`, allocating `y` \[out\]. See [`gemv_masked_into`].
pub fn gemv_masked<T: WeightElement>(
    weight_t: ArrayView2<'_, T>,
    x: ArrayView1<'_, f32>,
    tau: f32,
) -> Result<Array1<f32>> {
    let mut y = Array1::zeros(weight_t.ncols());
    gemv_masked_into(weight_t, x, tau, y.view_mut(), &GemvConfig::default())?;
    Ok(y)
}

/// Dense `y = W · x` with the same layout and kernel (every row of `Wᵀ` read), the
/// baseline of the masked GEMV. Shapes as in [`gemv_masked_into`].
pub fn gemv_dense_into<T: WeightElement>(
    weight_t: ArrayView2<'_, T>,
    x: ArrayView1<'_, f32>,
    mut y: ArrayViewMut1<'_, f32>,
    config: &GemvConfig,
) -> Result<()> {
    config.validate()?;
    let (n_in, n_out) = weight_t.dim();
    let w = weight_slice(&weight_t)?;
    check_len("x", "length", x.len(), n_in, n_in, n_out)?;
    check_len("y", "length", y.len(), n_out, n_in, n_out)?;
    let y_len = y.len();
    let y = y.as_slice_mut().ok_or(KernelError::NotContiguous {
        tensor: "y",
        shape: vec![y_len],
    })?;
    let kept: Vec<usize> = (0..n_in).collect();
    let coeff: Vec<f32> = x.to_vec();
    accumulate(w, n_out, &kept, &coeff, 1, y, config);
    Ok(())
}

/// Dense `y = W · x`, allocating `y` \[out\]. See [`gemv_dense_into`].
pub fn gemv_dense<T: WeightElement>(
    weight_t: ArrayView2<'_, T>,
    x: ArrayView1<'_, f32>,
) -> Result<Array1<f32>> {
    let mut y = Array1::zeros(weight_t.ncols());
    gemv_dense_into(weight_t, x, y.view_mut(), &GemvConfig::default())?;
    Ok(y)
}

/// Small-batch masked product `Y[b] = W · mask(X[b])` into a caller-owned `Y`.
///
/// - `x`: [batch, in] with `1 ≤ batch ≤ MAX_BATCH`; `y`: [batch, out], contiguous.
///
/// A row of `Wᵀ` is read once when any batch row keeps its input, and is multiplied by 0
/// for the batch rows that drop it, so the saving is the sparsity of the union.
pub fn gemm_masked_small_batch_into<T: WeightElement>(
    weight_t: ArrayView2<'_, T>,
    x: ArrayView2<'_, f32>,
    tau: f32,
    mut y: ArrayViewMut2<'_, f32>,
    config: &GemvConfig,
) -> Result<GemvStats> {
    config.validate()?;
    check_tau(tau)?;
    let (n_in, n_out) = weight_t.dim();
    let w = weight_slice(&weight_t)?;
    let (batch, x_in) = x.dim();
    if batch == 0 {
        return Err(KernelError::EmptyTensor {
            tensor: "x",
            shape: vec![batch, x_in],
        });
    }
    if batch > MAX_BATCH {
        return Err(KernelError::BatchTooLarge {
            tensor: "x",
            batch,
            max: MAX_BATCH,
        });
    }
    check_len("x", "columns", x_in, n_in, n_in, n_out)?;
    check_len("y", "rows", y.nrows(), batch, n_in, n_out)?;
    check_len("y", "columns", y.ncols(), n_out, n_in, n_out)?;
    let y_shape = vec![y.nrows(), y.ncols()];
    let y = y.as_slice_mut().ok_or(KernelError::NotContiguous {
        tensor: "y",
        shape: y_shape,
    })?;
    let mut kept = Vec::new();
    let mut coeff = Vec::new();
    for (j, column) in x.columns().into_iter().enumerate() {
        if column.iter().any(|v| v.abs() > tau) {
            kept.push(j);
            coeff.extend(column.iter().map(|&v| if v.abs() > tau { v } else { 0.0 }));
        }
    }
    accumulate(w, n_out, &kept, &coeff, batch, y, config);
    Ok(GemvStats {
        kept_inputs: kept.len(),
        total_inputs: n_in,
    })
}

/// Small-batch masked product, allocating `Y` [batch, out]. See
/// [`gemm_masked_small_batch_into`].
pub fn gemm_masked_small_batch<T: WeightElement>(
    weight_t: ArrayView2<'_, T>,
    x: ArrayView2<'_, f32>,
    tau: f32,
) -> Result<Array2<f32>> {
    let mut y = Array2::zeros((x.nrows(), weight_t.ncols()));
    gemm_masked_small_batch_into(weight_t, x, tau, y.view_mut(), &GemvConfig::default())?;
    Ok(y)
}

/// `mask(x)`: `x_j` where `|x_j| > tau`, else 0. \[in\] → \[in\].
pub fn mask_activations(x: ArrayView1<'_, f32>, tau: f32) -> Result<Array1<f32>> {
    check_tau(tau)?;
    Ok(x.mapv(|v| if v.abs() > tau { v } else { 0.0 }))
}

/// Naive reference: `W · mask(x)` in f64 from `Wᵀ` [in, out], plus the per-output error
/// scale `Σ_j |W_ij · mask(x)_j|` that tolerances are relative to. Returns (\[out\], \[out\]).
pub fn reference_gemv_masked<T: WeightElement>(
    weight_t: ArrayView2<'_, T>,
    x: ArrayView1<'_, f32>,
    tau: f32,
) -> Result<(Array1<f64>, Array1<f64>)> {
    check_tau(tau)?;
    let (n_in, n_out) = weight_t.dim();
    check_len("x", "length", x.len(), n_in, n_in, n_out)?;
    let mut y = Array1::<f64>::zeros(n_out);
    let mut scale = Array1::<f64>::zeros(n_out);
    for (row, &v) in weight_t.rows().into_iter().zip(x.iter()) {
        if v.abs() > tau {
            for ((yi, si), w) in y.iter_mut().zip(scale.iter_mut()).zip(row.iter()) {
                let p = f64::from(w.to_f32()) * f64::from(v);
                *yi += p;
                *si += p.abs();
            }
        }
    }
    Ok((y, scale))
}
