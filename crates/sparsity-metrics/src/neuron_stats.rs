//! Streaming per-neuron statistics: count, mean and variance (Welford), mean |a|, max |a|,
//! fraction of exact zeros, fraction below a magnitude threshold, and optionally an exact
//! magnitude histogram for activation-level sparsity.
//!
//! Moments use blocks of 32 rows, read once: per neuron, the shifted sums `S = Σ (a − k)` and
//! `Q = Σ (a − k)²` are accumulated in f64 with the shift `k` = the running mean (the first
//! row for the first block), so that no large values cancel; the block's mean is `k + S/n_b`
//! and its centred sum of squares `M2_b = Q − S²/n_b`. Blocks are merged into the running
//! state with the update of Chan, Golub & LeVeque (1979):
//!
//! `δ = mean_b − mean_a`, `mean = mean_a + δ·n_b/n`, `M2 = M2_a + M2_b + δ²·n_a·n_b/n`.
//!
//! The same merge combines the partial statistics of row chunks processed in parallel with
//! rayon. Chunk boundaries depend only on the batch shape, never on the thread count, and the
//! partials are merged in order, so results are bit-identical on 1 or N threads.
//! Memory is O(neurons) (plus 256 KiB for the histogram), never O(tokens × neurons).
//!
//! Aggregation ([`Aggregation`]) decides what one *sample* of the variance is:
//! - `PerToken`: every token row is a sample (variance across all tokens);
//! - `PerSequenceMean`: the original study's: for a `[batch, seq, neurons]` batch, the mean over
//!   each sequence's tokens is one sample, and the variance is taken across sequences
//!   (population variance, ddof = 0).
//!
//! The magnitude counters (mean |a|, max |a|, zeros, below-threshold, histogram) always count
//! individual token activations, whatever the aggregation.

use ndarray::{Array1, ArrayView2, ArrayView3, Axis, s};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::activation_sparsity::ActivationHistogram;
use crate::error::{MetricsError, Result};

/// Rows per moment block (a tile's accumulators stay in registers over a block).
const BLOCK_ROWS: usize = 32;
/// Target elements per parallel chunk (chunk rows depend only on the neuron count).
const CHUNK_ELEMS: usize = 1 << 21;

/// An activation element type that can be accumulated in f64.
pub trait Activation: Copy + Default + Send + Sync + 'static {
    /// The magnitude type: |a| in the element's own precision (exact), compared there.
    #[doc(hidden)]
    type Mag: Copy + PartialOrd + Default + 'static;
    /// The value as f64.
    fn to_f64(self) -> f64;
    /// |a| in the element's precision.
    #[doc(hidden)]
    fn mag(self) -> Self::Mag;
    /// A magnitude as f64 (exact).
    #[doc(hidden)]
    fn mag_to_f64(m: Self::Mag) -> f64;
    /// The smallest magnitude `m` with `a < m ⇔ f64::from(a) < t` for every element `a`.
    #[doc(hidden)]
    fn mag_threshold(t: f64) -> Self::Mag;
    /// Adds a slice to a magnitude histogram.
    #[doc(hidden)]
    fn add_to_histogram(xs: &[Self], hist: &mut ActivationHistogram);
    /// The slice as f32 when the element type is f32 (selects the explicit SIMD kernel).
    #[doc(hidden)]
    fn as_f32(xs: &[Self]) -> Option<&[f32]>;
}

impl Activation for f32 {
    type Mag = f32;
    #[inline(always)]
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    #[inline(always)]
    fn mag(self) -> f32 {
        self.abs()
    }
    #[inline(always)]
    fn mag_to_f64(m: f32) -> f64 {
        f64::from(m)
    }
    fn mag_threshold(t: f64) -> f32 {
        // The smallest f32 >= t: then a < t (in f64) exactly when a < that f32.
        let r = t as f32;
        if f64::from(r) < t { r.next_up() } else { r }
    }
    fn add_to_histogram(xs: &[Self], hist: &mut ActivationHistogram) {
        hist.add_f32(xs);
    }
    fn as_f32(xs: &[Self]) -> Option<&[f32]> {
        Some(xs)
    }
}

impl Activation for f64 {
    type Mag = f64;
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn mag(self) -> f64 {
        self.abs()
    }
    #[inline(always)]
    fn mag_to_f64(m: f64) -> f64 {
        m
    }
    fn mag_threshold(t: f64) -> f64 {
        t
    }
    fn add_to_histogram(xs: &[Self], hist: &mut ActivationHistogram) {
        hist.add_f64(xs);
    }
    fn as_f32(_: &[Self]) -> Option<&[f32]> {
        None
    }
}

/// What one sample of the per-neuron variance is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Aggregation {
    /// Mean over each sequence's tokens, then variance across sequences (the original study's).
    #[default]
    PerSequenceMean,
    /// Variance over all tokens.
    PerToken,
}

impl std::fmt::Display for Aggregation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::PerSequenceMean => "per-sequence-mean",
            Self::PerToken => "per-token",
        })
    }
}

/// Parameters of [`NeuronStats`] (validated by [`NeuronStatsParams::build`]).
#[derive(Debug, Clone, PartialEq)]
pub struct NeuronStatsParams {
    /// Number of neurons (the last axis of every batch).
    pub neurons: usize,
    /// What a variance sample is.
    pub aggregation: Aggregation,
    /// Magnitude threshold `t` of the "fraction below" counter (`|a| < t`); default 0.01.
    pub magnitude_threshold: f64,
    /// Keep an exact magnitude histogram for calibrated activation sparsity (default true).
    pub histogram: bool,
}

impl NeuronStatsParams {
    /// Defaults: per-sequence-mean aggregation, threshold 0.01, histogram on.
    pub fn new(neurons: usize) -> Self {
        Self {
            neurons,
            aggregation: Aggregation::default(),
            magnitude_threshold: 0.01,
            histogram: true,
        }
    }

    /// Sets the aggregation mode.
    pub fn aggregation(mut self, aggregation: Aggregation) -> Self {
        self.aggregation = aggregation;
        self
    }

    /// Sets the magnitude threshold of the below-threshold counter.
    pub fn magnitude_threshold(mut self, t: f64) -> Self {
        self.magnitude_threshold = t;
        self
    }

    /// Turns the magnitude histogram on or off.
    pub fn histogram(mut self, on: bool) -> Self {
        self.histogram = on;
        self
    }

    /// Validates the parameters and returns empty statistics.
    pub fn build(self) -> Result<NeuronStats> {
        if self.neurons == 0 {
            return Err(MetricsError::InvalidOption {
                name: "neurons".into(),
                value: "0".into(),
                reason: "at least one neuron is needed".into(),
            });
        }
        if !(self.magnitude_threshold.is_finite() && self.magnitude_threshold >= 0.0) {
            return Err(MetricsError::InvalidOption {
                name: "magnitude_threshold".into(),
                value: self.magnitude_threshold.to_string(),
                reason: "must be finite and >= 0".into(),
            });
        }
        let n = self.neurons;
        Ok(NeuronStats {
            samples: 0,
            mean: vec![0.0; n],
            m2: vec![0.0; n],
            tokens: 0,
            sum_abs: vec![0.0; n],
            max_abs: vec![0.0; n],
            zeros: vec![0; n],
            below: vec![0; n],
            histogram: self.histogram.then(ActivationHistogram::new),
            params: self,
        })
    }
}

/// Streaming, mergeable per-neuron statistics. Build with [`NeuronStatsParams`].
#[derive(Debug, Clone, PartialEq)]
pub struct NeuronStats {
    params: NeuronStatsParams,
    samples: u64,
    mean: Vec<f64>,
    m2: Vec<f64>,
    tokens: u64,
    sum_abs: Vec<f64>,
    max_abs: Vec<f64>,
    zeros: Vec<u64>,
    below: Vec<u64>,
    histogram: Option<ActivationHistogram>,
}

/// Neurons per register tile of the block kernel (8 f64 accumulators of each kind stay in
/// vector registers while the tile's rows stream past).
const TILE: usize = 8;
/// Rows of a block that each tile walks before the kernel moves to the next tile. Eight rows
/// of one tile touch eight cache lines, which stay in L1 for the neighbouring tile that reads
/// the other half of the same lines even when the rows are a multiple of 4 KiB apart (they
/// then share one 8-way L1 set), and the hardware prefetchers see eight sequential streams.
const SUB_ROWS: usize = 8;
/// Rows after which the u32 tile counters are folded into the u64 totals (far below 2³²).
const FOLD_ROWS: usize = 1 << 30;

/// Accumulators of one tile of `TILE` neurons: the block's shifted sums `s`, `q` (reset at
/// every block) and the magnitude accumulators `sa`, `mx`, `z`, `b` (kept over a run of
/// blocks, then folded into the statistics).
#[derive(Clone, Copy)]
struct TileAcc<A: Activation> {
    s: [f64; TILE],
    q: [f64; TILE],
    sa: [f64; TILE],
    mx: [A::Mag; TILE],
    z: [u32; TILE],
    b: [u32; TILE],
}

impl<A: Activation> TileAcc<A> {
    fn zero() -> Self {
        Self {
            s: [0.0; TILE],
            q: [0.0; TILE],
            sa: [0.0; TILE],
            mx: [A::Mag::default(); TILE],
            z: [0; TILE],
            b: [0; TILE],
        }
    }
}

/// Accumulators of the `n % TILE` neurons after the last full tile (scalar code).
#[derive(Clone, Copy, Default)]
struct RestAcc {
    sa: f64,
    mx: f64,
    z: u64,
    b: u64,
}

/// The kernel state over a run of blocks of one row chunk: the tile and remainder
/// accumulators, and the magnitude threshold in the element's precision.
struct BlockAcc<A: Activation> {
    n: usize,
    t: f64,
    tm: A::Mag,
    tiles: Vec<TileAcc<A>>,
    rest: Vec<RestAcc>,
    rows: usize,
}

impl<A: Activation> BlockAcc<A> {
    fn new(n: usize, t: f64) -> Self {
        Self {
            n,
            t,
            tm: A::mag_threshold(t),
            tiles: vec![TileAcc::zero(); n / TILE],
            rest: vec![RestAcc::default(); n % TILE],
            rows: 0,
        }
    }

    /// Adds the magnitude accumulators to the running counters and resets them.
    fn fold(
        &mut self,
        sum_abs: &mut [f64],
        max_abs: &mut [f64],
        zeros: &mut [u64],
        below: &mut [u64],
    ) {
        let full = self.tiles.len() * TILE;
        for (i, acc) in self.tiles.iter_mut().enumerate() {
            for k in 0..TILE {
                let j = i * TILE + k;
                let m = A::mag_to_f64(acc.mx[k]);
                sum_abs[j] += acc.sa[k];
                max_abs[j] = if m > max_abs[j] { m } else { max_abs[j] };
                zeros[j] += u64::from(acc.z[k]);
                below[j] += u64::from(acc.b[k]);
            }
            *acc = TileAcc::zero();
        }
        for (k, acc) in self.rest.iter_mut().enumerate() {
            let j = full + k;
            sum_abs[j] += acc.sa;
            max_abs[j] = if acc.mx > max_abs[j] {
                acc.mx
            } else {
                max_abs[j]
            };
            zeros[j] += acc.z;
            below[j] += acc.b;
            *acc = RestAcc::default();
        }
        self.rows = 0;
    }
}

/// One block of `rows × n` activations (`rows ≤ BLOCK_ROWS`, `block.len() = rows·n`) in one
/// pass: per-neuron shifted sums `Σ (a − shift)` into `sum` and (when `sq` is given)
/// `Σ (a − shift)²` into `sq`; the magnitude work goes to `acc`. The arithmetic per neuron is
/// sequential over rows, so the vectorised (AVX2 + FMA) and portable paths give bit-identical
/// results.
fn block_stats<A: Activation>(
    block: &[A],
    shift: &[f64],
    acc: &mut BlockAcc<A>,
    sum: &mut [f64],
    sq: Option<&mut [f64]>,
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        let acc_f32 = (&mut *acc as &mut dyn std::any::Any).downcast_mut::<BlockAcc<f32>>();
        if let (Some(block), Some(acc)) = (A::as_f32(block), acc_f32) {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above); the function has no
            // other requirement.
            #[allow(unsafe_code)]
            unsafe {
                avx2::block_stats_f32(block, shift, acc, sum, sq)
            };
            return;
        }
        // SAFETY: as above.
        #[allow(unsafe_code)]
        unsafe {
            block_stats_avx2(block, shift, acc, sum, sq)
        };
        return;
    }
    block_stats_portable(block, shift, acc, sum, sq)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn block_stats_avx2<A: Activation>(
    block: &[A],
    shift: &[f64],
    acc: &mut BlockAcc<A>,
    sum: &mut [f64],
    sq: Option<&mut [f64]>,
) {
    block_stats_portable(block, shift, acc, sum, sq)
}

/// The `TILE` elements of `block` from `start` as an array (a fixed length lets the tile loop
/// vectorise); `None` past the end.
#[inline(always)]
fn tile_row<A>(block: &[A], start: usize) -> Option<&[A; TILE]> {
    block
        .get(start..start + TILE)
        .and_then(|x| <&[A; TILE]>::try_from(x).ok())
}

/// Rows and placement of one tile walk: `(first row, rows, row stride, first element)`.
type Walk = (usize, usize, usize, usize);

/// Streams rows `r0..r0 + rows` of one tile (element `off + r·stride` starts row r) through
/// the accumulators. `SQ` adds the shifted squares.
#[inline(always)]
fn tile_kernel<A: Activation, const SQ: bool>(
    src: &[A],
    (r0, rows, stride, off): Walk,
    shift: &[f64; TILE],
    tm: A::Mag,
    acc: &mut TileAcc<A>,
) {
    let zero = A::Mag::default();
    let mut a = *acc;
    for r in r0..r0 + rows {
        let Some(x) = tile_row(src, r * stride + off) else {
            break;
        };
        for k in 0..TILE {
            let v = x[k].to_f64();
            let m = x[k].mag();
            let d = v - shift[k];
            a.s[k] += d;
            if SQ {
                a.q[k] = d.mul_add(d, a.q[k]);
            }
            a.sa[k] += v.abs();
            a.mx[k] = if m > a.mx[k] { m } else { a.mx[k] };
            // |a| == 0 exactly when a == 0 (either sign of zero)
            a.z[k] += u32::from(m == zero);
            a.b[k] += u32::from(m < tm);
        }
    }
    *acc = a;
}

#[inline(always)]
fn block_stats_portable<A: Activation>(
    block: &[A],
    shift: &[f64],
    acc: &mut BlockAcc<A>,
    sum: &mut [f64],
    sq: Option<&mut [f64]>,
) {
    if sq.is_some() {
        block_stats_impl(block, shift, acc, sum, sq, tile_kernel::<A, true>)
    } else {
        block_stats_impl(block, shift, acc, sum, sq, tile_kernel::<A, false>)
    }
}

/// The block loop around a tile kernel `tile(src, walk, shift, magnitude threshold, acc)`,
/// which adds the shifted squares exactly when `sq` is given.
#[inline(always)]
fn block_stats_impl<A: Activation>(
    block: &[A],
    shift: &[f64],
    acc: &mut BlockAcc<A>,
    sum: &mut [f64],
    mut sq: Option<&mut [f64]>,
    tile: impl Fn(&[A], Walk, &[f64; TILE], A::Mag, &mut TileAcc<A>),
) {
    let n = acc.n;
    let rows = (block.len() / n).min(BLOCK_ROWS);
    if rows == 0 {
        return;
    }
    let tm = acc.tm;
    let shift_of = |j0: usize| -> [f64; TILE] {
        let mut k = [0.0; TILE];
        k.copy_from_slice(&shift[j0..j0 + TILE]);
        k
    };
    for a in &mut acc.tiles {
        a.s = [0.0; TILE];
        a.q = [0.0; TILE];
    }
    let mut r0 = 0;
    while r0 < rows {
        let sub = SUB_ROWS.min(rows - r0);
        for (i, a) in acc.tiles.iter_mut().enumerate() {
            let j0 = i * TILE;
            tile(block, (r0, sub, n, j0), &shift_of(j0), tm, a);
        }
        r0 += sub;
    }
    for (i, a) in acc.tiles.iter().enumerate() {
        let j0 = i * TILE;
        sum[j0..j0 + TILE].copy_from_slice(&a.s);
        if let Some(sq) = sq.as_deref_mut() {
            sq[j0..j0 + TILE].copy_from_slice(&a.q);
        }
    }
    let full = acc.tiles.len() * TILE;
    let t = acc.t;
    for (k, ra) in acc.rest.iter_mut().enumerate() {
        let j = full + k;
        let (mut s, mut q) = (0f64, 0f64);
        for r in 0..rows {
            let v = block[r * n + j].to_f64();
            let a = v.abs();
            let d = v - shift[j];
            s += d;
            q = d.mul_add(d, q);
            ra.sa += a;
            ra.mx = if a > ra.mx { a } else { ra.mx };
            ra.z += u64::from(v == 0.0);
            ra.b += u64::from(a < t);
        }
        sum[j] = s;
        if let Some(sq) = sq.as_deref_mut() {
            sq[j] = q;
        }
    }
    acc.rows += rows;
}

/// Chan et al. merge of (n_b, mean_b, m2_b) into (n_a, mean_a, m2_a).
fn merge_moments(
    n_a: u64,
    mean_a: &mut [f64],
    m2_a: &mut [f64],
    n_b: u64,
    mean_b: &[f64],
    m2_b: &[f64],
) {
    if n_b == 0 {
        return;
    }
    if n_a == 0 {
        mean_a.copy_from_slice(mean_b);
        m2_a.copy_from_slice(m2_b);
        return;
    }
    let n = (n_a + n_b) as f64;
    let fb = n_b as f64 / n;
    let w = n_a as f64 * n_b as f64 / n;
    for ((ma, qa), (mb, qb)) in mean_a
        .iter_mut()
        .zip(m2_a.iter_mut())
        .zip(mean_b.iter().zip(m2_b))
    {
        let d = mb - *ma;
        *ma += d * fb;
        *qa += qb + d * d * w;
    }
}

/// Finds the first non-finite element of a row-major block.
fn first_non_finite<A: Activation>(rows: &[A], n: usize) -> Option<(usize, usize, f64)> {
    rows.iter()
        .position(|x| !x.to_f64().is_finite())
        .map(|i| (i / n, i % n, rows[i].to_f64()))
}

impl NeuronStats {
    /// The parameters these statistics were built with.
    pub fn params(&self) -> &NeuronStatsParams {
        &self.params
    }

    /// Number of neurons.
    pub fn neurons(&self) -> usize {
        self.params.neurons
    }

    /// Number of variance samples seen (tokens, or sequences for `PerSequenceMean`).
    pub fn sample_count(&self) -> u64 {
        self.samples
    }

    /// Number of token rows seen (every row of every batch).
    pub fn token_count(&self) -> u64 {
        self.tokens
    }

    fn empty_like(&self) -> NeuronStats {
        let n = self.params.neurons;
        NeuronStats {
            params: self.params.clone(),
            samples: 0,
            mean: vec![0.0; n],
            m2: vec![0.0; n],
            tokens: 0,
            sum_abs: vec![0.0; n],
            max_abs: vec![0.0; n],
            zeros: vec![0; n],
            below: vec![0; n],
            histogram: self.histogram.as_ref().map(|_| ActivationHistogram::new()),
        }
    }

    fn check_neurons(&self, what: &str, shape: &[usize]) -> Result<()> {
        if shape.last().copied() != Some(self.params.neurons) {
            return Err(MetricsError::ShapeMismatch {
                what: what.into(),
                expected: self.params.neurons,
                got: shape.to_vec(),
            });
        }
        if shape.contains(&0) {
            return Err(MetricsError::Empty {
                what: format!("{what} of shape {shape:?}"),
            });
        }
        Ok(())
    }

    /// Feeds one `[samples, neurons]` batch: every row is one sample and one token
    /// (in both aggregation modes). Parallel over row chunks (rayon's current pool).
    /// On error (shape, NaN/Inf with its `[row, neuron]` position) the statistics are unchanged.
    pub fn update<A: Activation>(&mut self, batch: ArrayView2<'_, A>) -> Result<()> {
        self.check_neurons("batch", batch.shape())?;
        let n = self.params.neurons;
        let chunk_rows = (CHUNK_ELEMS / n).max(1);
        let rows = batch.nrows();
        let starts: Vec<usize> = (0..rows).step_by(chunk_rows).collect();
        let partials: Vec<Result<NeuronStats>> = starts
            .par_iter()
            .map(|&r0| {
                let r1 = (r0 + chunk_rows).min(rows);
                let mut p = self.empty_like();
                p.accumulate_rows(batch.slice(s![r0..r1, ..]), true)
                    .map_err(|e| offset_error(e, r0))?;
                Ok(p)
            })
            .collect();
        let mut total = self.empty_like();
        for p in partials {
            total.merge_unchecked(&p?);
        }
        self.merge_unchecked(&total);
        Ok(())
    }

    /// Feeds one `[batch, seq, neurons]` batch, aggregated as the parameters say.
    /// NaN/Inf errors give the `[sequence, token, neuron]` position.
    pub fn update_sequences<A: Activation>(&mut self, batch: ArrayView3<'_, A>) -> Result<()> {
        self.check_neurons("batch", batch.shape())?;
        let (b, seq, n) = batch.dim();
        match self.params.aggregation {
            Aggregation::PerToken => match batch.into_shape_with_order((b * seq, n)) {
                Ok(rows) => self.update(rows).map_err(|e| token_error(e, seq)),
                Err(_) => {
                    // Not contiguous: feed the sequences one by one, all or nothing.
                    let mut total = self.empty_like();
                    for i in 0..b {
                        total
                            .update(batch.index_axis(Axis(0), i))
                            .map_err(|e| seq_error(e, i))?;
                    }
                    self.merge_unchecked(&total);
                    Ok(())
                }
            },
            Aggregation::PerSequenceMean => {
                let group = (CHUNK_ELEMS / (seq * n)).max(1);
                let starts: Vec<usize> = (0..b).step_by(group).collect();
                type Part = (NeuronStats, Vec<Vec<f64>>);
                let partials: Vec<Result<Part>> = starts
                    .par_iter()
                    .map(|&i0| {
                        let mut p = self.empty_like();
                        let mut means = Vec::new();
                        for i in i0..(i0 + group).min(b) {
                            let sums = p
                                .accumulate_rows(batch.index_axis(Axis(0), i), false)
                                .map_err(|e| seq_error(e, i))?;
                            means.push(sums.iter().map(|s| s / seq as f64).collect());
                        }
                        Ok((p, means))
                    })
                    .collect();
                let mut total = self.empty_like();
                for p in partials {
                    let (p, means) = p?;
                    total.merge_unchecked(&p);
                    for m in &means {
                        total.push_sample(m);
                    }
                }
                self.merge_unchecked(&total);
                Ok(())
            }
        }
    }

    /// Welford update with one sample vector.
    fn push_sample(&mut self, x: &[f64]) {
        self.samples += 1;
        let inv = 1.0 / self.samples as f64;
        for ((m, q), &x) in self.mean.iter_mut().zip(self.m2.iter_mut()).zip(x) {
            let d = x - *m;
            *m += d * inv;
            *q += d * (x - *m);
        }
    }

    /// Sequentially accumulates rows. With `as_samples` the rows are variance samples;
    /// otherwise only the token counters are updated and the per-neuron row sums returned.
    fn accumulate_rows<A: Activation>(
        &mut self,
        rows: ArrayView2<'_, A>,
        as_samples: bool,
    ) -> Result<Vec<f64>> {
        let n = self.params.neurons;
        let t = self.params.magnitude_threshold;
        let rows = rows.as_standard_layout();
        let data = rows.as_slice().unwrap_or(&[]);
        let mut total_sum = vec![0.0; n];
        let mut shift = vec![0.0; n];
        let mut bsum = vec![0.0; n];
        let mut bsq = vec![0.0; n];
        let mut bmean = vec![0.0; n];
        let mut done_rows = 0usize;
        let mut acc = BlockAcc::<A>::new(n, t);
        for block in data.chunks(BLOCK_ROWS * n) {
            let brows = block.len() / n;
            if as_samples {
                // Shifted sums stay small (no cancellation): shift by the running mean, or by
                // the first row for the first block.
                if self.samples == 0 {
                    for (k, a) in shift.iter_mut().zip(&block[..n]) {
                        *k = a.to_f64();
                    }
                } else {
                    shift.copy_from_slice(&self.mean);
                }
            }
            block_stats(
                block,
                &shift,
                &mut acc,
                &mut bsum,
                as_samples.then_some(&mut bsq[..]),
            );
            if acc.rows >= FOLD_ROWS {
                acc.fold(
                    &mut self.sum_abs,
                    &mut self.max_abs,
                    &mut self.zeros,
                    &mut self.below,
                );
            }
            if bsum.iter().any(|s| !s.is_finite())
                && let Some((r, c, v)) = first_non_finite(block, n)
            {
                return Err(MetricsError::NonFinite {
                    what: "activations".into(),
                    position: vec![done_rows + r, c],
                    value: v,
                });
            }
            if let Some(h) = self.histogram.as_mut() {
                A::add_to_histogram(block, h);
            }
            self.tokens += brows as u64;
            if as_samples {
                let inv = 1.0 / brows as f64;
                for ((m, q), (&k, &s)) in bmean
                    .iter_mut()
                    .zip(bsq.iter_mut())
                    .zip(shift.iter().zip(&bsum))
                {
                    *m = k + s * inv;
                    // Σ (a − mean_b)² = Σ (a − k)² − (Σ (a − k))² / rows, never below 0
                    *q = (*q - s * s * inv).max(0.0);
                }
                merge_moments(
                    self.samples,
                    &mut self.mean,
                    &mut self.m2,
                    brows as u64,
                    &bmean,
                    &bsq,
                );
                self.samples += brows as u64;
            } else {
                for (ts, bs) in total_sum.iter_mut().zip(&bsum) {
                    *ts += bs;
                }
            }
            done_rows += brows;
        }
        acc.fold(
            &mut self.sum_abs,
            &mut self.max_abs,
            &mut self.zeros,
            &mut self.below,
        );
        Ok(total_sum)
    }

    /// Merges another set of statistics (e.g. from a parallel worker) into this one.
    /// Errors if the neuron count, aggregation, threshold or histogram setting differ.
    pub fn merge(&mut self, other: &NeuronStats) -> Result<()> {
        if other.params != self.params {
            return Err(MetricsError::ShapeMismatch {
                what: format!("merge (parameters {:?} vs {:?})", self.params, other.params),
                expected: self.params.neurons,
                got: vec![other.params.neurons],
            });
        }
        self.merge_unchecked(other);
        Ok(())
    }

    fn merge_unchecked(&mut self, o: &NeuronStats) {
        merge_moments(
            self.samples,
            &mut self.mean,
            &mut self.m2,
            o.samples,
            &o.mean,
            &o.m2,
        );
        self.samples += o.samples;
        self.tokens += o.tokens;
        for (a, b) in self.sum_abs.iter_mut().zip(&o.sum_abs) {
            *a += b;
        }
        for (a, b) in self.max_abs.iter_mut().zip(&o.max_abs) {
            *a = a.max(*b);
        }
        for (a, b) in self.zeros.iter_mut().zip(&o.zeros) {
            *a += b;
        }
        for (a, b) in self.below.iter_mut().zip(&o.below) {
            *a += b;
        }
        if let (Some(h), Some(oh)) = (self.histogram.as_mut(), o.histogram.as_ref()) {
            h.merge(oh);
        }
    }

    fn need_samples(&self, min: u64, what: &str) -> Result<()> {
        if self.samples < min {
            return Err(MetricsError::Empty {
                what: format!("{what}: {} samples seen, {min} needed", self.samples),
            });
        }
        Ok(())
    }

    fn need_tokens(&self, what: &str) -> Result<()> {
        if self.tokens == 0 {
            return Err(MetricsError::Empty {
                what: format!("{what}: no tokens seen"),
            });
        }
        Ok(())
    }

    /// Per-neuron mean over the samples. `[neurons]`
    pub fn mean(&self) -> Result<Array1<f64>> {
        self.need_samples(1, "mean")?;
        Ok(Array1::from(self.mean.clone()))
    }

    /// Per-neuron population variance (ddof = 0) over the samples. `[neurons]`
    pub fn variance(&self) -> Result<Array1<f64>> {
        self.variance_ddof(0)
    }

    /// Per-neuron variance with `ddof` delta degrees of freedom (`M2 / (n − ddof)`). `[neurons]`
    pub fn variance_ddof(&self, ddof: u64) -> Result<Array1<f64>> {
        self.need_samples(ddof + 1, "variance")?;
        let d = (self.samples - ddof) as f64;
        Ok(self.m2.iter().map(|q| q / d).collect())
    }

    /// Per-neuron mean |a| over all tokens. `[neurons]`
    pub fn mean_abs(&self) -> Result<Array1<f64>> {
        self.need_tokens("mean |a|")?;
        let t = self.tokens as f64;
        Ok(self.sum_abs.iter().map(|s| s / t).collect())
    }

    /// Per-neuron max |a| over all tokens. `[neurons]`
    pub fn max_abs(&self) -> Result<Array1<f64>> {
        self.need_tokens("max |a|")?;
        Ok(Array1::from(self.max_abs.clone()))
    }

    /// Per-neuron fraction of tokens where the activation is exactly 0. `[neurons]`
    pub fn zero_fraction(&self) -> Result<Array1<f64>> {
        self.need_tokens("zero fraction")?;
        let t = self.tokens as f64;
        Ok(self.zeros.iter().map(|&z| z as f64 / t).collect())
    }

    /// Per-neuron fraction of tokens with `|a| < magnitude_threshold`. `[neurons]`
    pub fn below_threshold_fraction(&self) -> Result<Array1<f64>> {
        self.need_tokens("below-threshold fraction")?;
        let t = self.tokens as f64;
        Ok(self.below.iter().map(|&z| z as f64 / t).collect())
    }

    /// The exact magnitude histogram over all activations, if enabled.
    pub fn histogram(&self) -> Option<&ActivationHistogram> {
        self.histogram.as_ref()
    }
}

fn offset_error(e: MetricsError, row0: usize) -> MetricsError {
    match e {
        MetricsError::NonFinite {
            what,
            mut position,
            value,
        } => {
            if let Some(r) = position.first_mut() {
                *r += row0;
            }
            MetricsError::NonFinite {
                what,
                position,
                value,
            }
        }
        e => e,
    }
}

fn token_error(e: MetricsError, seq: usize) -> MetricsError {
    match e {
        MetricsError::NonFinite {
            what,
            position,
            value,
        } if position.len() == 2 => {
            let position = vec![position[0] / seq, position[0] % seq, position[1]];
            MetricsError::NonFinite {
                what,
                position,
                value,
            }
        }
        e => e,
    }
}

fn seq_error(e: MetricsError, seq: usize) -> MetricsError {
    match e {
        MetricsError::NonFinite {
            what,
            mut position,
            value,
        } => {
            position.insert(0, seq);
            MetricsError::NonFinite {
                what,
                position,
                value,
            }
        }
        e => e,
    }
}

/// The f32 tile kernel written with AVX2 + FMA intrinsics: the same per-neuron arithmetic, in
/// the same order, as [`tile_kernel`] (so results are bit-identical to the portable path), but
/// with the zero and below-threshold counts kept as lane masks subtracted from u32 counters
/// (the auto-vectoriser packed each comparison to bytes and back, which doubled the work).
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    use std::arch::x86_64::{
        _CMP_EQ_OQ, _CMP_LT_OQ, _mm_loadu_ps, _mm256_add_pd, _mm256_and_pd, _mm256_and_ps,
        _mm256_castps_si256, _mm256_castsi256_pd, _mm256_castsi256_ps, _mm256_cmp_ps,
        _mm256_cvtps_pd, _mm256_fmadd_pd, _mm256_loadu_pd, _mm256_loadu_ps, _mm256_loadu_si256,
        _mm256_max_ps, _mm256_set1_epi32, _mm256_set1_epi64x, _mm256_set1_ps, _mm256_setzero_ps,
        _mm256_storeu_pd, _mm256_storeu_ps, _mm256_storeu_si256, _mm256_sub_epi32, _mm256_sub_pd,
    };

    use super::{BlockAcc, TILE, TileAcc, Walk, block_stats_impl};

    // The kernel holds one tile as two f64x4 and one 32-bit x8 vector per quantity.
    const _: () = assert!(TILE == 8);

    /// [`super::block_stats`] for f32 activations.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn block_stats_f32(
        block: &[f32],
        shift: &[f64],
        acc: &mut BlockAcc<f32>,
        sum: &mut [f64],
        sq: Option<&mut [f64]>,
    ) {
        if sq.is_some() {
            // SAFETY: this function runs only where AVX2 and FMA are available.
            block_stats_impl(block, shift, acc, sum, sq, |s, w, k, tm, a| unsafe {
                tile::<true>(s, w, k, tm, a)
            })
        } else {
            // SAFETY: as above.
            block_stats_impl(block, shift, acc, sum, sq, |s, w, k, tm, a| unsafe {
                tile::<false>(s, w, k, tm, a)
            })
        }
    }

    /// Streams rows `r0..r0 + rows` of the 8-neuron tile starting at `src[off]` (row stride
    /// `stride`) through the accumulators; rows past the end of `src` are not read.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn tile<const SQ: bool>(
        src: &[f32],
        (r0, rows, stride, off): Walk,
        shift: &[f64; TILE],
        tm: f32,
        acc: &mut TileAcc<f32>,
    ) {
        // Rows whose TILE elements lie inside `src`.
        let end = match src.len().checked_sub(off + TILE) {
            Some(last) => (r0 + rows).min(last / stride.max(1) + 1),
            None => 0,
        };
        let abs64 = _mm256_castsi256_pd(_mm256_set1_epi64x(0x7fff_ffff_ffff_ffff));
        let abs32 = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
        let tmv = _mm256_set1_ps(tm);
        let zero = _mm256_setzero_ps();
        // SAFETY (all loads and stores of `acc` and `shift`): every array has TILE = 8 lanes,
        // read and written as two f64x4 or one 32-bit x8 vector.
        let (k0, k1) = unsafe {
            (
                _mm256_loadu_pd(shift.as_ptr()),
                _mm256_loadu_pd(shift.as_ptr().add(4)),
            )
        };
        let (mut s0, mut s1, mut q0, mut q1, mut a0, mut a1, mut mx, mut zc, mut bc) = unsafe {
            (
                _mm256_loadu_pd(acc.s.as_ptr()),
                _mm256_loadu_pd(acc.s.as_ptr().add(4)),
                _mm256_loadu_pd(acc.q.as_ptr()),
                _mm256_loadu_pd(acc.q.as_ptr().add(4)),
                _mm256_loadu_pd(acc.sa.as_ptr()),
                _mm256_loadu_pd(acc.sa.as_ptr().add(4)),
                _mm256_loadu_ps(acc.mx.as_ptr()),
                _mm256_loadu_si256(acc.z.as_ptr().cast()),
                _mm256_loadu_si256(acc.b.as_ptr().cast()),
            )
        };
        let base = src.as_ptr().wrapping_add(off);
        for r in r0..end {
            // SAFETY: r < end, so the row's TILE elements `off + r·stride ..` are in `src`.
            let (x, v0, v1) = unsafe {
                let p = base.add(r * stride);
                (
                    _mm256_loadu_ps(p),
                    _mm256_cvtps_pd(_mm_loadu_ps(p)),
                    _mm256_cvtps_pd(_mm_loadu_ps(p.add(4))),
                )
            };
            let d0 = _mm256_sub_pd(v0, k0);
            let d1 = _mm256_sub_pd(v1, k1);
            s0 = _mm256_add_pd(s0, d0);
            s1 = _mm256_add_pd(s1, d1);
            if SQ {
                q0 = _mm256_fmadd_pd(d0, d0, q0);
                q1 = _mm256_fmadd_pd(d1, d1, q1);
            }
            a0 = _mm256_add_pd(a0, _mm256_and_pd(v0, abs64));
            a1 = _mm256_add_pd(a1, _mm256_and_pd(v1, abs64));
            let a = _mm256_and_ps(x, abs32);
            // max(a, mx) returns mx unless a > mx: the portable `if a > mx { a } else { mx }`.
            mx = _mm256_max_ps(a, mx);
            // A true comparison is an all-ones lane (−1 as i32): subtracting it counts one.
            zc = _mm256_sub_epi32(
                zc,
                _mm256_castps_si256(_mm256_cmp_ps::<_CMP_EQ_OQ>(a, zero)),
            );
            bc = _mm256_sub_epi32(bc, _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LT_OQ>(a, tmv)));
        }
        unsafe {
            _mm256_storeu_pd(acc.s.as_mut_ptr(), s0);
            _mm256_storeu_pd(acc.s.as_mut_ptr().add(4), s1);
            _mm256_storeu_pd(acc.q.as_mut_ptr(), q0);
            _mm256_storeu_pd(acc.q.as_mut_ptr().add(4), q1);
            _mm256_storeu_pd(acc.sa.as_mut_ptr(), a0);
            _mm256_storeu_pd(acc.sa.as_mut_ptr().add(4), a1);
            _mm256_storeu_ps(acc.mx.as_mut_ptr(), mx);
            _mm256_storeu_si256(acc.z.as_mut_ptr().cast(), zc);
            _mm256_storeu_si256(acc.b.as_mut_ptr().cast(), bc);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Block outputs and folded counters of one kernel run.
    #[derive(Debug, PartialEq)]
    struct Out {
        sum: Vec<u64>,
        sq: Vec<u64>,
        sum_abs: Vec<u64>,
        max_abs: Vec<u64>,
        zeros: Vec<u64>,
        below: Vec<u64>,
    }

    /// A block kernel over f32 activations (dispatched or portable).
    type Kernel = fn(&[f32], &[f64], &mut BlockAcc<f32>, &mut [f64], Option<&mut [f64]>);

    /// Runs the consecutive blocks of `data` (`BLOCK_ROWS × n` each, the last one partial)
    /// through a kernel, folds the counters, and returns everything as bits (the sums are the
    /// last block's).
    fn run(kernel: Kernel, data: &[f32], n: usize, shift: &[f64], squares: bool) -> Out {
        let mut acc = BlockAcc::<f32>::new(n, 1e-3);
        let (mut sum, mut sq) = (vec![0.0; n], vec![0.0; n]);
        let (mut sum_abs, mut max_abs) = (vec![0.0; n], vec![0.0; n]);
        let (mut zeros, mut below) = (vec![0; n], vec![0; n]);
        for block in data.chunks(BLOCK_ROWS * n) {
            kernel(
                block,
                shift,
                &mut acc,
                &mut sum,
                squares.then_some(&mut sq[..]),
            );
        }
        acc.fold(&mut sum_abs, &mut max_abs, &mut zeros, &mut below);
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        Out {
            sum: bits(&sum),
            sq: bits(&sq),
            sum_abs: bits(&sum_abs),
            max_abs: bits(&max_abs),
            zeros,
            below,
        }
    }

    /// The dispatched (AVX2 + FMA where present) block kernel equals the portable one bit for
    /// bit and a plain per-element reference, for neuron counts that are and are not multiples
    /// of TILE, blocks of full and partial height (and partial sub-blocks of SUB_ROWS), runs of
    /// several blocks, and with and without the squares (the per-sequence path).
    #[test]
    fn block_kernel_matches_portable_and_reference() {
        for (n, rows) in [
            (1usize, 5usize),
            (7, 5),
            (8, 32),
            (13, 5),
            (16, 7),
            (24, 32),
            (37, 3),
            (16, 9),
            (40, 77),
        ]
        .into_iter()
        .chain([(256, 32), (256, 9), (264, 32), (512, 1), (1024, 40)])
        {
            let data: Vec<f32> = (0..rows * n)
                .map(|i| {
                    let v = ((i * 7919) % 23) as f32 / 7.0 - 1.5;
                    if i % 5 == 0 {
                        0.0
                    } else {
                        v * 1e-3_f32.powi((i % 3) as i32)
                    }
                })
                .collect();
            let shift: Vec<f64> = (0..n).map(|j| j as f64 * 0.01 - 0.1).collect();
            let fast = run(block_stats, &data, n, &shift, true);
            let portable = run(block_stats_portable, &data, n, &shift, true);
            assert_eq!(fast, portable, "n = {n}, rows = {rows}");
            // Without squares: the same sums and counters, and no squares written.
            let plain = run(block_stats, &data, n, &shift, false);
            assert!(plain.sq.iter().all(|q| *q == 0), "n = {n}: squares written");
            assert_eq!(
                Out {
                    sq: fast.sq.clone(),
                    ..plain
                },
                fast,
                "n = {n}, rows = {rows}"
            );
            // Reference, per neuron: sums over the last block, counters over all rows.
            let last0 = (rows - 1) / BLOCK_ROWS * BLOCK_ROWS;
            let f = |b: u64| f64::from_bits(b);
            for j in 0..n {
                let col: Vec<f64> = (0..rows).map(|r| f64::from(data[r * n + j])).collect();
                let k = shift[j];
                let sum: f64 = col[last0..].iter().map(|x| x - k).sum();
                let sq: f64 = col[last0..].iter().map(|x| (x - k) * (x - k)).sum();
                assert!((f(fast.sum[j]) - sum).abs() <= 1e-12, "n = {n}, j = {j}");
                assert!((f(fast.sq[j]) - sq).abs() <= 1e-12 * sq.max(1e-30));
                let abs: f64 = col.iter().map(|x| x.abs()).sum();
                assert!((f(fast.sum_abs[j]) - abs).abs() <= 1e-12 * abs.max(1.0));
                let max = col.iter().fold(0f64, |m, x| m.max(x.abs()));
                assert_eq!(f(fast.max_abs[j]), max);
                assert_eq!(
                    fast.zeros[j],
                    col.iter().filter(|x| **x == 0.0).count() as u64
                );
                assert_eq!(
                    fast.below[j],
                    col.iter().filter(|x| x.abs() < 1e-3).count() as u64
                );
            }
        }
    }

    /// The f32 comparison threshold gives the f64 comparison's answer for every f32 near it.
    #[test]
    fn f32_magnitude_threshold_is_exact() {
        for t in [0.0, 1e-5, 0.01, 0.1, 1.0 / 3.0, 1.0, 1e-45, 3.5e38, 1e300] {
            let tm = <f32 as Activation>::mag_threshold(t);
            let r = t as f32;
            let mut probes = vec![0.0f32, r, r.next_up(), r.next_down(), tm, tm.next_down()];
            probes.retain(|p| p.is_finite() && *p >= 0.0);
            for a in probes {
                assert_eq!(f64::from(a) < t, a < tm, "t = {t:e}, a = {a:e}");
            }
        }
    }
}
