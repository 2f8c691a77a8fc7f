//! Bandwidth benchmark of the masked GEMV against its dense baseline, `ndarray`'s `dot`
//! and a STREAM-like copy measured in the same run (what `cargo xtask bench-gemv` runs).
//!
//! A GEMV reads every weight byte once, so its floor is `t ≥ bytes(W) / BW`. To measure
//! memory and not cache, every timed call uses the next of several copies of the weight
//! whose total size (`rotate_bytes`, default 1 GiB) exceeds the last-level cache.
//! Activations `x ~ N(0, 1)` (seeded `ChaCha8Rng`) are masked at exactly the target
//! sparsity by a τ calibrated on `x` itself, so the skipped inputs are random positions.
//!
//! Reported per point: median time, effective GB/s (`bytes of the weight rows actually
//! read / t`), dense-equivalent GB/s (`bytes(W) / t`) and speed-ups over the crate's
//! dense GEMV and over `ndarray`'s `dot` (f32 only).

use std::hint::black_box;
use std::time::Instant;

use ndarray::{Array1, Array2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{StandardNormal, StandardUniform};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::calibrate::ThresholdCalibration;
use crate::element::WeightElement;
use crate::error::{KernelError, Result};
use crate::gemv::{GemvConfig, gemv_dense_into, gemv_masked_into};

/// A weight shape in `nn.Linear` order: `W` is [out, in].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GemvShape {
    /// Output features (rows of `W`).
    pub out_features: usize,
    /// Input features (columns of `W`, rows of `Wᵀ`).
    pub in_features: usize,
}

impl std::str::FromStr for GemvShape {
    type Err = KernelError;

    /// Parses `"OUTxIN"`, e.g. `"11008x4096"`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || KernelError::InvalidOption {
            option: "shapes",
            value: s.to_string(),
            reason: "expected OUTxIN with positive integers, e.g. 11008x4096",
        };
        let (o, i) = s.trim().split_once(['x', 'X']).ok_or_else(bad)?;
        let out_features: usize = o.trim().parse().map_err(|_| bad())?;
        let in_features: usize = i.trim().parse().map_err(|_| bad())?;
        if out_features == 0 || in_features == 0 {
            return Err(bad());
        }
        Ok(Self {
            out_features,
            in_features,
        })
    }
}

impl std::fmt::Display for GemvShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.out_features, self.in_features)
    }
}

/// Weight element type of a benchmark run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightDtype {
    /// 32-bit float.
    F32,
    /// bfloat16.
    Bf16,
    /// IEEE half.
    F16,
}

impl std::str::FromStr for WeightDtype {
    type Err = KernelError;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(Self::F32),
            "bf16" => Ok(Self::Bf16),
            "f16" => Ok(Self::F16),
            _ => Err(KernelError::InvalidOption {
                option: "dtype",
                value: s.to_string(),
                reason: "expected one of f32, bf16, f16",
            }),
        }
    }
}

/// Benchmark parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GemvBenchConfig {
    /// Shapes to run.
    pub shapes: Vec<GemvShape>,
    /// Target activation sparsities in [0, 1).
    pub sparsities: Vec<f64>,
    /// Weight element type.
    pub dtype: WeightDtype,
    /// Total bytes of rotated weight copies per shape (≫ last-level cache).
    pub rotate_bytes: usize,
    /// Timed calls per point (at least one full rotation is added as warm-up).
    pub reps: usize,
    /// Seed of weights and activations.
    pub seed: u64,
    /// CPU kernel options.
    pub kernel: GemvConfig,
    /// Also time `ndarray`'s `W.dot(&x)` on `W` [out, in] (f32 only).
    pub ndarray_peer: bool,
}

impl Default for GemvBenchConfig {
    fn default() -> Self {
        Self {
            shapes: vec![
                GemvShape {
                    out_features: 4096,
                    in_features: 4096,
                },
                GemvShape {
                    out_features: 11008,
                    in_features: 4096,
                },
                GemvShape {
                    out_features: 4096,
                    in_features: 11008,
                },
            ],
            sparsities: vec![0.0, 0.25, 0.5, 0.75, 0.9],
            dtype: WeightDtype::F32,
            rotate_bytes: 1 << 30,
            reps: 40,
            seed: 0,
            kernel: GemvConfig::default(),
            ndarray_peer: true,
        }
    }
}

/// Checks benchmark target sparsities: each in [0, 1) (NaN rejected); shared with the GPU
/// benchmark of `sparsity-kernels-cuda`.
pub fn check_sparsities(sparsities: &[f64]) -> Result<()> {
    if let Some(s) = sparsities.iter().find(|s| !(0.0..1.0).contains(*s)) {
        return Err(KernelError::InvalidOption {
            option: "sparsity",
            value: s.to_string(),
            reason: "each must lie in [0, 1)",
        });
    }
    Ok(())
}

impl GemvBenchConfig {
    /// Checks the options.
    pub fn validate(&self) -> Result<()> {
        if self.shapes.is_empty() {
            return Err(KernelError::InvalidOption {
                option: "shapes",
                value: "[]".into(),
                reason: "give at least one shape",
            });
        }
        check_sparsities(&self.sparsities)?;
        if self.reps == 0 {
            return Err(KernelError::InvalidOption {
                option: "reps",
                value: "0".into(),
                reason: "must be at least 1",
            });
        }
        self.kernel.validate()
    }
}

/// One measured point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GemvBenchRow {
    /// `W` shape `OUTxIN`.
    pub shape: GemvShape,
    /// Weight element type.
    pub dtype: WeightDtype,
    /// `"dense"` (this crate, same layout), `"masked"`, or `"ndarray_dot"`.
    pub kernel: String,
    /// Requested activation sparsity (0 for the dense kernels).
    pub target_sparsity: f64,
    /// Fraction of inputs actually skipped.
    pub achieved_sparsity: f64,
    /// Median time per call, microseconds.
    pub median_us: f64,
    /// Fastest call, microseconds.
    pub min_us: f64,
    /// Bytes of weight rows actually read / median time, GB/s (1e9 B/s).
    pub effective_gbs: f64,
    /// `bytes(W)` / median time, GB/s: the dense-equivalent rate.
    pub dense_equivalent_gbs: f64,
    /// Dense time of this crate / this time.
    pub speedup_vs_dense: f64,
    /// `ndarray` dot time / this time (when measured).
    pub speedup_vs_ndarray: Option<f64>,
}

/// Machine bandwidth measured in the same run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BandwidthProbe {
    /// STREAM "copy" rate: `2 · bytes / t` (read + write, as STREAM counts it), GB/s.
    pub copy_gbs: f64,
    /// Read-only rate (sum of a buffer), GB/s: the access pattern of a GEMV.
    pub read_gbs: f64,
    /// Bytes per buffer.
    pub buffer_bytes: usize,
    /// Threads used (rayon pool).
    pub threads: usize,
}

/// The whole result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GemvBenchReport {
    /// Parameters.
    pub config: GemvBenchConfig,
    /// Bandwidth probe.
    pub bandwidth: BandwidthProbe,
    /// Points, shape by shape.
    pub rows: Vec<GemvBenchRow>,
    /// The vector instructions the kernels ran with ([`crate::simd_level`]; empty in reports
    /// from before run-time dispatch).
    #[serde(default)]
    pub simd: String,
}

impl GemvBenchReport {
    /// The report as a text table: the bandwidth probe, then one line per point with its time,
    /// effective bandwidth, share of the copy bandwidth and speed-ups.
    pub fn table(&self) -> String {
        let bw = &self.bandwidth;
        let mut t = format!(
            "bandwidth ({} threads, {} MiB buffers): copy {:.1} GB/s, read {:.1} GB/s; kernels: {}\n",
            bw.threads,
            bw.buffer_bytes >> 20,
            bw.copy_gbs,
            bw.read_gbs,
            if self.simd.is_empty() {
                "unrecorded"
            } else {
                &self.simd
            }
        );
        t += &format!(
            "{:<12} {:<5} {:<12} {:>8} {:>8} {:>11} {:>9} {:>9} {:>9} {:>9}\n",
            "shape",
            "dtype",
            "kernel",
            "target_s",
            "actual_s",
            "median_us",
            "eff_GB/s",
            "%copy_bw",
            "x_dense",
            "x_ndarray"
        );
        for r in &self.rows {
            t += &format!(
                "{:<12} {:<5} {:<12} {:>8.2} {:>8.3} {:>11.1} {:>9.1} {:>9.1} {:>9.2} {:>9}\n",
                r.shape.to_string(),
                format!("{:?}", r.dtype).to_lowercase(),
                r.kernel,
                r.target_sparsity,
                r.achieved_sparsity,
                r.median_us,
                r.effective_gbs,
                100.0 * r.effective_gbs / bw.copy_gbs,
                r.speedup_vs_dense,
                r.speedup_vs_ndarray
                    .map_or("-".to_string(), |s| format!("{s:.2}")),
            );
        }
        t
    }
}

fn median_and_min(mut t: Vec<f64>) -> (f64, f64) {
    t.sort_by(f64::total_cmp);
    let n = t.len();
    let median = if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        t[n / 2]
    } else {
        0.5 * (t[n / 2 - 1] + t[n / 2])
    };
    (median, t.first().copied().unwrap_or(f64::NAN))
}

/// STREAM "copy" kernel on the rayon pool: `dst = src` (equal lengths; a shorter side
/// bounds the copy).
pub fn stream_copy(dst: &mut [f32], src: &[f32]) {
    dst.par_chunks_mut(1 << 16)
        .zip(src.par_chunks(1 << 16))
        .for_each(|(d, s)| {
            let n = d.len().min(s.len());
            d[..n].copy_from_slice(&s[..n]);
        });
}

/// STREAM-like copy and read over `buffer_bytes`-sized buffers on the rayon pool
/// (best of `reps` passes, as STREAM reports).
pub fn measure_bandwidth(buffer_bytes: usize, reps: usize) -> BandwidthProbe {
    let n = (buffer_bytes / 4).max(1024);
    let src: Vec<f32> = (0..n).map(|i| (i % 1000) as f32).collect();
    let mut dst = vec![0.0f32; n];
    let chunk = 1 << 16;
    let mut copy_best = f64::INFINITY;
    let mut read_best = f64::INFINITY;
    for _ in 0..reps.max(1) {
        let t0 = Instant::now();
        stream_copy(&mut dst, &src);
        copy_best = copy_best.min(t0.elapsed().as_secs_f64());
        black_box(&dst);
        let t0 = Instant::now();
        let s: f32 = src
            .par_chunks(chunk)
            .map(|c| {
                // eight partial sums so the loop vectorises
                let mut acc = [0.0f32; 8];
                let (body, tail) = c.as_chunks::<8>();
                for b in body {
                    for k in 0..8 {
                        acc[k] += b[k];
                    }
                }
                acc.iter().sum::<f32>() + tail.iter().sum::<f32>()
            })
            .sum();
        read_best = read_best.min(t0.elapsed().as_secs_f64());
        black_box(s);
    }
    let bytes = (n * 4) as f64;
    BandwidthProbe {
        copy_gbs: 2.0 * bytes / copy_best / 1e9,
        read_gbs: bytes / read_best / 1e9,
        buffer_bytes: n * 4,
        threads: rayon::current_num_threads(),
    }
}

/// Times `f(copy_index)` over `n_copies` rotating buffers: one warm-up rotation, then
/// `reps` timed calls. Returns (median, min) in microseconds.
fn time_rotating(
    n_copies: usize,
    reps: usize,
    mut f: impl FnMut(usize) -> Result<()>,
) -> Result<(f64, f64)> {
    for i in 0..n_copies {
        f(i)?;
    }
    let mut times = Vec::with_capacity(reps);
    for r in 0..reps {
        let t0 = Instant::now();
        f(r % n_copies)?;
        times.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    Ok(median_and_min(times))
}

/// One finished measurement point of [`run_gemv_bench_with`], for a caller's progress display.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchProgress {
    /// What is being measured (`"4096x4096 f32"`).
    pub stage: String,
    /// Points of this shape done.
    pub done: usize,
    /// Points of this shape in all.
    pub total: usize,
}

/// Runs the benchmark for every shape and sparsity (progress as `tracing` spans only).
pub fn run_gemv_bench(config: &GemvBenchConfig) -> Result<GemvBenchReport> {
    run_gemv_bench_with(config, &mut |_| {})
}

/// [`run_gemv_bench`], calling `progress` after every measured point (the library never
/// draws on the terminal; a driver turns these calls into a progress bar).
pub fn run_gemv_bench_with(
    config: &GemvBenchConfig,
    progress: &mut dyn FnMut(BenchProgress),
) -> Result<GemvBenchReport> {
    config.validate()?;
    let bandwidth = measure_bandwidth(config.rotate_bytes.max(1 << 28) / 2, 5);
    tracing::info!(
        copy_gbs = bandwidth.copy_gbs,
        read_gbs = bandwidth.read_gbs,
        threads = bandwidth.threads,
        "bandwidth probe"
    );
    let mut rows = Vec::new();
    for &shape in &config.shapes {
        let shape_rows = match config.dtype {
            WeightDtype::F32 => bench_shape::<f32>(config, shape, progress)?,
            WeightDtype::Bf16 => bench_shape::<half::bf16>(config, shape, progress)?,
            WeightDtype::F16 => bench_shape::<half::f16>(config, shape, progress)?,
        };
        rows.extend(shape_rows);
    }
    Ok(GemvBenchReport {
        config: config.clone(),
        bandwidth,
        rows,
        simd: crate::simd_level().name().into(),
    })
}

fn bench_shape<T: WeightElement>(
    config: &GemvBenchConfig,
    shape: GemvShape,
    report: &mut dyn FnMut(BenchProgress),
) -> Result<Vec<GemvBenchRow>> {
    let (n_out, n_in) = (shape.out_features, shape.in_features);
    let weight_bytes = n_out * n_in * T::BYTES;
    let n_copies = config.rotate_bytes.div_ceil(weight_bytes).max(2);
    let reps = config.reps.max(n_copies);
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let scale = 1.0 / (n_in as f32).sqrt();
    let base: Array2<T> = Array2::from_shape_simple_fn((n_in, n_out), || {
        T::from_f32((rng.sample::<f32, _>(StandardUniform) * 2.0 - 1.0) * scale)
    });
    let copies: Vec<Array2<T>> = (0..n_copies).map(|_| base.clone()).collect();
    drop(base);
    let x: Array1<f32> = Array1::from_shape_simple_fn(n_in, || rng.sample(StandardNormal));
    let mut y = Array1::<f32>::zeros(n_out);

    let n_points =
        1 + config.sparsities.len() + usize::from(config.ndarray_peer && T::NAME == "f32");
    let stage = format!("{shape} {}", T::NAME);
    let _span = tracing::info_span!("bench_gemv_shape", shape = %stage).entered();
    let mut done = 0;
    let mut tick = || {
        done += 1;
        report(BenchProgress {
            stage: stage.clone(),
            done,
            total: n_points,
        });
    };

    let gbs = |bytes: f64, us: f64| bytes / (us * 1e-6) / 1e9;
    let mut out = Vec::new();
    let (dense_med, dense_min) = time_rotating(n_copies, reps, |i| {
        gemv_dense_into(copies[i].view(), x.view(), y.view_mut(), &config.kernel)?;
        black_box(&y);
        Ok(())
    })?;
    tick();
    let mut ndarray_med = None;
    if config.ndarray_peer && T::NAME == "f32" {
        // W [out, in] row-major, the layout `W.dot(&x)` expects.
        let w_copies: Vec<Array2<f32>> = copies
            .iter()
            .map(|c| c.t().mapv(T::to_f32).as_standard_layout().into_owned())
            .collect();
        let (med, min) = time_rotating(n_copies, reps, |i| {
            black_box(w_copies[i].dot(&x));
            Ok(())
        })?;
        ndarray_med = Some(med);
        out.push(GemvBenchRow {
            shape,
            dtype: config.dtype,
            kernel: "ndarray_dot".into(),
            target_sparsity: 0.0,
            achieved_sparsity: 0.0,
            median_us: med,
            min_us: min,
            effective_gbs: gbs((n_in * n_out * 4) as f64, med),
            dense_equivalent_gbs: gbs((n_in * n_out * 4) as f64, med),
            speedup_vs_dense: dense_med / med,
            speedup_vs_ndarray: Some(1.0),
        });
        tick();
    }
    out.insert(
        0,
        GemvBenchRow {
            shape,
            dtype: config.dtype,
            kernel: "dense".into(),
            target_sparsity: 0.0,
            achieved_sparsity: 0.0,
            median_us: dense_med,
            min_us: dense_min,
            effective_gbs: gbs(weight_bytes as f64, dense_med),
            dense_equivalent_gbs: gbs(weight_bytes as f64, dense_med),
            speedup_vs_dense: 1.0,
            speedup_vs_ndarray: ndarray_med.map(|n| n / dense_med),
        },
    );
    let x2 = x.clone().insert_axis(ndarray::Axis(0));
    for &s in &config.sparsities {
        let tau = ThresholdCalibration::new(s).fit(x2.view())?.tau;
        let mut kept = 0;
        let (med, min) = time_rotating(n_copies, reps, |i| {
            kept = gemv_masked_into(
                copies[i].view(),
                x.view(),
                tau,
                y.view_mut(),
                &config.kernel,
            )?
            .kept_inputs;
            black_box(&y);
            Ok(())
        })?;
        let read_bytes = (kept * n_out * T::BYTES) as f64;
        out.push(GemvBenchRow {
            shape,
            dtype: config.dtype,
            kernel: "masked".into(),
            target_sparsity: s,
            achieved_sparsity: 1.0 - kept as f64 / n_in as f64,
            median_us: med,
            min_us: min,
            effective_gbs: gbs(read_bytes, med),
            dense_equivalent_gbs: gbs(weight_bytes as f64, med),
            speedup_vs_dense: dense_med / med,
            speedup_vs_ndarray: ndarray_med.map(|n| n / med),
        });
        tick();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_sparsities_outside_0_1_are_named() {
        assert!(check_sparsities(&[0.0, 0.5, 0.9]).is_ok());
        for bad in [1.0, -0.1, f64::NAN, 1.5] {
            let e = check_sparsities(&[0.5, bad]).unwrap_err().to_string();
            assert!(
                e.contains("sparsity") && e.contains(&bad.to_string()),
                "{e}"
            );
        }
    }
}
