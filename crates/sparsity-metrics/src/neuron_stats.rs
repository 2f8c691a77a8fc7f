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
//! Memory is O(neurons) (plus 256 KiB for the histogram, and during an update one more per
//! worker), never O(tokens × neurons).
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
    type Mag: Copy + PartialOrd + Default + Send + Sync + 'static;
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
    /// The largest magnitude `m` with `a ≤ m ⇔ f64::from(a) ≤ l` for every magnitude `a`.
    #[doc(hidden)]
    fn mag_at_most(l: f64) -> Self::Mag;
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
    fn mag_at_most(l: f64) -> f32 {
        // The largest f32 <= l: then a <= l (in f64) exactly when a <= that f32.
        let r = l as f32;
        if f64::from(r) > l { r.next_down() } else { r }
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
    fn mag_at_most(l: f64) -> f64 {
        l
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
/// Rows after which the 16-bit tile counters are folded into the u64 totals: a fold follows
/// the block that reaches this, so a counter sees at most FOLD_ROWS − 1 + BLOCK_ROWS = 65 535
/// rows.
const FOLD_ROWS: usize = 65_536 - BLOCK_ROWS;
const _: () = assert!(FOLD_ROWS - 1 + BLOCK_ROWS <= u16::MAX as usize);

/// Accumulators of one tile of `TILE` neurons: the block's shifted sums `s`, `q` (reset at
/// every block) and the magnitude accumulators `sa`, `mx` and `zb` (kept over a run of
/// blocks, then folded into the statistics). `zb` holds two 16-bit counters per neuron: exact
/// zeros in the high half, magnitudes below the threshold in the low half (one vector
/// register for both in the AVX2 kernel).
#[derive(Clone, Copy)]
struct TileAcc<A: Activation> {
    s: [f64; TILE],
    q: [f64; TILE],
    sa: [f64; TILE],
    mx: [A::Mag; TILE],
    zb: [u32; TILE],
}

impl<A: Activation> TileAcc<A> {
    fn zero() -> Self {
        Self {
            s: [0.0; TILE],
            q: [0.0; TILE],
            sa: [0.0; TILE],
            mx: [A::Mag::default(); TILE],
            zb: [0; TILE],
        }
    }
}

/// Accumulators of the `n % TILE` neurons after the last full tile (scalar code): the
/// block's shifted sums `s`, `q` and the magnitude accumulators, as in [`TileAcc`].
#[derive(Clone, Copy, Default)]
struct RestAcc {
    s: f64,
    q: f64,
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

/// The per-worker buffers of [`NeuronStats::accumulate_rows`], allocated once per rayon
/// worker ([`ordered_waves`]) and reused for every row chunk it takes: allocating them per chunk
/// made the allocator hand pages back and fault them in again, which cost about a fifth of
/// the streaming time. Their contents never carry from one chunk to the next (the block
/// accumulators are folded and zeroed at the end of each chunk, the rest is overwritten), so
/// results do not depend on which worker ran which chunk.
struct RowScratch<A: Activation> {
    acc: BlockAcc<A>,
    total_sum: Vec<f64>,
    shift: Vec<f64>,
    /// The worker's magnitude histogram (when the statistics keep one). Its counts are exact
    /// integers, so one per worker, summed at the end in any order, gives the same histogram
    /// as one per chunk, without a 256 KiB histogram per chunk to clear and merge.
    hist: Option<ActivationHistogram>,
}

impl<A: Activation> RowScratch<A> {
    fn new(n: usize, t: f64, histogram: bool) -> Self {
        Self {
            acc: BlockAcc::new(n, t),
            total_sum: vec![0.0; n],
            shift: vec![0.0; n],
            hist: histogram.then(ActivationHistogram::new),
        }
    }
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

    /// The block epilogue of the variance path, in one pass over the block sums (which it
    /// zeroes for the next block): per neuron, the block's mean `k + s/rows` and centred sum
    /// of squares `max(q − s²/rows, 0)` merged into `(samples, mean, m2)` by Chan's update
    /// ([`merge_moments`], same arithmetic). The first block (`first_shift` given, `samples`
    /// = 0) was shifted by `first_shift` and becomes the state; later blocks were shifted by
    /// the running mean itself. Returns false when a block sum is not finite (the state is
    /// then garbage; the caller reports the error and drops it).
    fn merge_block(
        &mut self,
        first_shift: Option<&[f64]>,
        samples: u64,
        rows: usize,
        mean: &mut [f64],
        m2: &mut [f64],
    ) -> bool {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above); no other requirement.
            #[allow(unsafe_code)]
            return unsafe { self.merge_block_avx2(first_shift, samples, rows, mean, m2) };
        }
        self.merge_block_impl(first_shift, samples, rows, mean, m2)
    }

    /// [`Self::merge_block`] compiled for AVX2 (4-wide f64 vectors; the same operations, so
    /// the same bits).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn merge_block_avx2(
        &mut self,
        first_shift: Option<&[f64]>,
        samples: u64,
        rows: usize,
        mean: &mut [f64],
        m2: &mut [f64],
    ) -> bool {
        self.merge_block_impl(first_shift, samples, rows, mean, m2)
    }

    #[inline(always)]
    fn merge_block_impl(
        &mut self,
        first_shift: Option<&[f64]>,
        samples: u64,
        rows: usize,
        mean: &mut [f64],
        m2: &mut [f64],
    ) -> bool {
        let inv = 1.0 / rows as f64;
        let n_b = rows as u64;
        let total = (samples + n_b) as f64;
        let fb = n_b as f64 / total;
        let w = samples as f64 * n_b as f64 / total;
        let full = self.tiles.len() * TILE;
        let (mean_t, mean_r) = mean.split_at_mut(full);
        let (m2_t, m2_r) = m2.split_at_mut(full);
        // s·0 is NaN exactly when s is not finite; a sum of them is NaN if any is.
        let mut check = [0.0; TILE];
        let means = mean_t
            .chunks_exact_mut(TILE)
            .zip(m2_t.chunks_exact_mut(TILE));
        match first_shift {
            // The first block: its moments are the state.
            Some(f) => {
                let shifts = f.chunks_exact(TILE);
                for ((a, (m, q)), k) in self.tiles.iter_mut().zip(means).zip(shifts) {
                    for i in 0..TILE {
                        check[i] += a.s[i] * 0.0;
                        (m[i], q[i]) = block_moments(k[i], a.s[i], a.q[i], inv);
                    }
                    (a.s, a.q) = ([0.0; TILE], [0.0; TILE]);
                }
            }
            // Shifted by the running mean itself.
            None => {
                for (a, (m, q)) in self.tiles.iter_mut().zip(means) {
                    for i in 0..TILE {
                        check[i] += a.s[i] * 0.0;
                        let (mb, qb) = block_moments(m[i], a.s[i], a.q[i], inv);
                        chan_step(&mut m[i], &mut q[i], mb, qb, fb, w);
                    }
                    (a.s, a.q) = ([0.0; TILE], [0.0; TILE]);
                }
            }
        }
        for (k, a) in self.rest.iter_mut().enumerate() {
            check[0] += a.s * 0.0;
            let shift = first_shift.map_or(mean_r[k], |f| f[full + k]);
            let (mb, qb) = block_moments(shift, a.s, a.q, inv);
            if first_shift.is_some() {
                (mean_r[k], m2_r[k]) = (mb, qb);
            } else {
                chan_step(&mut mean_r[k], &mut m2_r[k], mb, qb, fb, w);
            }
            (a.s, a.q) = (0.0, 0.0);
        }
        !check.iter().any(|c| c.is_nan())
    }

    /// The block epilogue of the row-sum path: adds the block sums to `total` and zeroes
    /// them. Returns false when a block sum is not finite.
    fn add_block_sums(&mut self, total: &mut [f64]) -> bool {
        let full = self.tiles.len() * TILE;
        let (total_t, total_r) = total.split_at_mut(full);
        let mut check = [0.0; TILE];
        for (a, t) in self.tiles.iter_mut().zip(total_t.chunks_exact_mut(TILE)) {
            for i in 0..TILE {
                check[i] += a.s[i] * 0.0;
                t[i] += a.s[i];
            }
            (a.s, a.q) = ([0.0; TILE], [0.0; TILE]);
        }
        for (a, t) in self.rest.iter_mut().zip(total_r) {
            check[0] += a.s * 0.0;
            *t += a.s;
            (a.s, a.q) = (0.0, 0.0);
        }
        !check.iter().any(|c| c.is_nan())
    }

    /// Zeroes every accumulator (as after a fold), discarding what they held.
    fn clear(&mut self) {
        self.tiles.fill(TileAcc::zero());
        self.rest.fill(RestAcc::default());
        self.rows = 0;
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
                zeros[j] += u64::from(acc.zb[k] >> 16);
                below[j] += u64::from(acc.zb[k] & 0xffff);
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
/// pass into `acc`: per-neuron shifted sums `Σ (a − shift)` and (with `squares`)
/// `Σ (a − shift)²` added to the block sums (zero at the start of a block; the block
/// epilogues [`BlockAcc::merge_block`] and [`BlockAcc::add_block_sums`] read and zero them),
/// and the magnitude accumulators. The arithmetic per neuron is sequential over rows, so the
/// vectorised (AVX2 + FMA) and portable paths give bit-identical results.
fn block_stats<A: Activation>(
    block: &[A],
    shift: &[f64],
    acc: &mut BlockAcc<A>,
    squares: bool,
    hist: Option<&mut ActivationHistogram>,
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        let acc_f32 = (&mut *acc as &mut dyn std::any::Any).downcast_mut::<BlockAcc<f32>>();
        if let (Some(block), Some(acc)) = (A::as_f32(block), acc_f32) {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above); the function has no
            // other requirement.
            #[allow(unsafe_code)]
            unsafe {
                avx2::block_stats_f32(block, shift, acc, squares, hist)
            };
            return;
        }
        // SAFETY: as above.
        #[allow(unsafe_code)]
        unsafe {
            block_stats_avx2(block, shift, acc, squares)
        };
        if let Some(h) = hist {
            A::add_to_histogram(block, h);
        }
        return;
    }
    block_stats_portable(block, shift, acc, squares);
    if let Some(h) = hist {
        A::add_to_histogram(block, h);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn block_stats_avx2<A: Activation>(
    block: &[A],
    shift: &[f64],
    acc: &mut BlockAcc<A>,
    squares: bool,
) {
    block_stats_portable(block, shift, acc, squares)
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
            a.zb[k] += (u32::from(m == zero) << 16) | u32::from(m < tm);
        }
    }
    *acc = a;
}

#[inline(always)]
fn block_stats_portable<A: Activation>(
    block: &[A],
    shift: &[f64],
    acc: &mut BlockAcc<A>,
    squares: bool,
) {
    if squares {
        block_stats_impl(block, shift, acc, true, tile_kernel::<A, true>)
    } else {
        block_stats_impl(block, shift, acc, false, tile_kernel::<A, false>)
    }
}

/// The block loop around a tile kernel `tile(src, walk, shift, magnitude threshold, acc)`,
/// which adds the shifted squares exactly when `squares` is set.
#[inline(always)]
fn block_stats_impl<A: Activation>(
    block: &[A],
    shift: &[f64],
    acc: &mut BlockAcc<A>,
    squares: bool,
    mut tile: impl FnMut(&[A], Walk, &[f64; TILE], A::Mag, &mut TileAcc<A>),
) {
    let n = acc.n;
    let rows = (block.len() / n).min(BLOCK_ROWS);
    if rows == 0 {
        return;
    }
    let tm = acc.tm;
    let mut r0 = 0;
    while r0 < rows {
        let sub = SUB_ROWS.min(rows - r0);
        let tiles = acc.tiles.iter_mut().zip(shift.chunks_exact(TILE));
        for (i, (a, k)) in tiles.enumerate() {
            if let Ok(k) = <&[f64; TILE]>::try_from(k) {
                tile(block, (r0, sub, n, i * TILE), k, tm, a);
            }
        }
        r0 += sub;
    }
    let full = acc.tiles.len() * TILE;
    let t = acc.t;
    for (k, ra) in acc.rest.iter_mut().enumerate() {
        let j = full + k;
        let (mut s, mut q) = (ra.s, ra.q);
        for r in 0..rows {
            let v = block[r * n + j].to_f64();
            let a = v.abs();
            let d = v - shift[j];
            s += d;
            if squares {
                q = d.mul_add(d, q);
            }
            ra.sa += a;
            ra.mx = if a > ra.mx { a } else { ra.mx };
            ra.z += u64::from(v == 0.0);
            ra.b += u64::from(a < t);
        }
        (ra.s, ra.q) = (s, q);
    }
    acc.rows += rows;
}

/// Items per worker in one wave of [`ordered_waves`].
const WAVE_PER_WORKER: usize = 8;

/// Runs `work(scratch, item, out)` over `items` on rayon's current pool and hands every
/// output to `sink` in item order, stopping at the first error (in item order; nothing after
/// it reaches `sink`).
///
/// The items run in waves of [`WAVE_PER_WORKER`] per worker. The outputs of a wave are reused
/// by the next (`work` must overwrite its `out` completely) and every worker keeps one
/// scratch for all its items, so a long batch allocates a wave's outputs and one scratch per
/// worker instead of both per item (fresh allocations fault their pages in again, which cost
/// about a fifth of the streaming time). Which worker runs which item never changes an output.
/// On success the scratches are returned (for what they accumulate across items whatever the
/// order, such as exact counts).
fn ordered_waves<I, O, S>(
    items: &[I],
    new_out: impl Fn() -> O,
    new_scratch: impl Fn() -> S + Sync,
    work: impl Fn(&mut S, &I, &mut O) -> Result<()> + Sync,
    mut sink: impl FnMut(&O),
) -> Result<Vec<S>>
where
    I: Sync,
    O: Send,
    S: Send,
{
    let workers = rayon::current_num_threads().max(1);
    let wave = (workers * WAVE_PER_WORKER).min(items.len());
    let scratch: Vec<std::sync::Mutex<Option<S>>> =
        (0..workers).map(|_| std::sync::Mutex::new(None)).collect();
    let mut outs: Vec<O> = (0..wave).map(|_| new_out()).collect();
    for group in items.chunks(wave.max(1)) {
        let results: Vec<Result<()>> = outs[..group.len()]
            .par_iter_mut()
            .zip(group)
            .map(|(out, item)| {
                let slot = rayon::current_thread_index().unwrap_or(0) % workers;
                // A poisoned slot only means a panic elsewhere; its scratch is still valid.
                let mut guard = scratch[slot]
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let sc = guard.get_or_insert_with(&new_scratch);
                work(sc, item, out)
            })
            .collect();
        for (out, r) in outs.iter().zip(results) {
            r?;
            sink(out);
        }
    }
    Ok(scratch
        .into_iter()
        .filter_map(|m| {
            m.into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        })
        .collect())
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
    for ((ma, qa), (&mb, &qb)) in mean_a
        .iter_mut()
        .zip(m2_a.iter_mut())
        .zip(mean_b.iter().zip(m2_b))
    {
        chan_step(ma, qa, mb, qb, fb, w);
    }
}

/// One element of Chan's merge of (mean_b, m2_b) into (mean_a, m2_a), with `fb = n_b/n` and
/// `w = n_a·n_b/n`: `δ = mean_b − mean_a`, `mean_a += δ·fb`, `m2_a += m2_b + δ²·w`.
#[inline(always)]
fn chan_step(mean_a: &mut f64, m2_a: &mut f64, mean_b: f64, m2_b: f64, fb: f64, w: f64) {
    let d = mean_b - *mean_a;
    *mean_a += d * fb;
    *m2_a += m2_b + d * d * w;
}

/// A block's mean and centred sum of squares from its sums shifted by `k`:
/// `k + s/rows` and `Σ (a − mean_b)² = q − s²/rows` (never below 0), with `inv = 1/rows`.
#[inline(always)]
fn block_moments(k: f64, s: f64, q: f64, inv: f64) -> (f64, f64) {
    (k + s * inv, (q - s * s * inv).max(0.0))
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

    /// Empties the statistics, keeping the buffers (as [`Self::empty_like`] would make them).
    fn clear(&mut self) {
        self.samples = 0;
        self.tokens = 0;
        self.mean.fill(0.0);
        self.m2.fill(0.0);
        self.sum_abs.fill(0.0);
        self.max_abs.fill(0.0);
        self.zeros.fill(0);
        self.below.fill(0);
        if let Some(h) = self.histogram.as_mut() {
            h.clear();
        }
    }

    /// Like [`Self::empty_like`] but without a histogram: the partial of one chunk, whose
    /// activations a worker's histogram counts.
    fn empty_partial(&self) -> NeuronStats {
        self.empty_with_histogram(false)
    }

    /// Adds the histograms of the workers' scratches (exact counts, any order).
    fn add_worker_histograms<A: Activation>(&mut self, scratches: &[RowScratch<A>]) {
        if let Some(h) = self.histogram.as_mut() {
            for wh in scratches.iter().filter_map(|sc| sc.hist.as_ref()) {
                h.merge(wh);
            }
        }
    }

    /// Empty statistics with the same parameters (and a histogram if these keep one).
    fn empty_like(&self) -> NeuronStats {
        self.empty_with_histogram(self.histogram.is_some())
    }

    fn empty_with_histogram(&self, histogram: bool) -> NeuronStats {
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
            histogram: histogram.then(ActivationHistogram::new),
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
        self.update_chunked(batch, (CHUNK_ELEMS / self.params.neurons).max(1))
    }

    /// [`Self::update`] over row chunks of `chunk_rows` rows (the batch is checked).
    fn update_chunked<A: Activation>(
        &mut self,
        batch: ArrayView2<'_, A>,
        chunk_rows: usize,
    ) -> Result<()> {
        let n = self.params.neurons;
        let rows = batch.nrows();
        let starts: Vec<usize> = (0..rows).step_by(chunk_rows).collect();
        let t = self.params.magnitude_threshold;
        let hist = self.histogram.is_some();
        let mut total = self.empty_partial();
        let scratches = ordered_waves(
            &starts,
            || self.empty_partial(),
            || RowScratch::<A>::new(n, t, hist),
            |sc, &r0, p| {
                p.clear();
                let r1 = (r0 + chunk_rows).min(rows);
                p.accumulate_rows(batch.slice(s![r0..r1, ..]), true, sc)
                    .map_err(|e| offset_error(e, r0))
            },
            |p| total.merge_unchecked(p),
        )?;
        self.merge_unchecked(&total);
        self.add_worker_histograms(&scratches);
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
                self.update_sequence_means(batch, (CHUNK_ELEMS / (seq * n)).max(1))
            }
        }
    }

    /// The per-sequence-mean update over groups of `group` sequences (the batch is checked).
    fn update_sequence_means<A: Activation>(
        &mut self,
        batch: ArrayView3<'_, A>,
        group: usize,
    ) -> Result<()> {
        let (b, seq, n) = batch.dim();
        let starts: Vec<usize> = (0..b).step_by(group).collect();
        let t = self.params.magnitude_threshold;
        let hist = self.histogram.is_some();
        let mut total = self.empty_partial();
        let scratches = ordered_waves(
            &starts,
            || (self.empty_partial(), Vec::new()),
            || RowScratch::<A>::new(n, t, hist),
            |sc, &i0, (p, means): &mut (NeuronStats, Vec<Vec<f64>>)| {
                p.clear();
                means.clear();
                for i in i0..(i0 + group).min(b) {
                    p.accumulate_rows(batch.index_axis(Axis(0), i), false, sc)
                        .map_err(|e| seq_error(e, i))?;
                    means.push(sc.total_sum.iter().map(|s| s / seq as f64).collect());
                }
                Ok(())
            },
            |(p, means)| {
                total.merge_unchecked(p);
                for m in means {
                    total.push_sample(m);
                }
            },
        )?;
        self.merge_unchecked(&total);
        self.add_worker_histograms(&scratches);
        Ok(())
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

    /// Sequentially accumulates rows, with the buffers of `sc` (made for this neuron count
    /// and threshold). With `as_samples` the rows are variance samples; otherwise only the
    /// token counters are updated and the per-neuron row sums left in `sc.total_sum`.
    fn accumulate_rows<A: Activation>(
        &mut self,
        rows: ArrayView2<'_, A>,
        as_samples: bool,
        sc: &mut RowScratch<A>,
    ) -> Result<()> {
        let n = self.params.neurons;
        let rows = rows.as_standard_layout();
        let data = rows.as_slice().unwrap_or(&[]);
        let RowScratch {
            acc,
            total_sum,
            shift,
            hist,
        } = sc;
        total_sum.fill(0.0);
        // A chunk that stopped at an error left its accumulators unfolded.
        if acc.rows != 0 {
            acc.clear();
        }
        if !as_samples {
            // Row sums are plain sums.
            shift.fill(0.0);
        }
        let mut done_rows = 0usize;
        for block in data.chunks(BLOCK_ROWS * n) {
            let brows = block.len() / n;
            // Shifted sums stay small (no cancellation): shift by the running mean, or by the
            // first row for the first block.
            let first = as_samples && self.samples == 0;
            if first {
                for (k, a) in shift.iter_mut().zip(&block[..n]) {
                    *k = a.to_f64();
                }
            }
            let finite = if as_samples {
                let k = if first { &shift[..] } else { &self.mean[..] };
                block_stats(block, k, acc, true, hist.as_mut());
                let first_shift = first.then_some(&shift[..]);
                let ok = acc.merge_block(
                    first_shift,
                    self.samples,
                    brows,
                    &mut self.mean,
                    &mut self.m2,
                );
                self.samples += brows as u64;
                ok
            } else {
                block_stats(block, shift, acc, false, hist.as_mut());
                acc.add_block_sums(total_sum)
            };
            if acc.rows >= FOLD_ROWS {
                acc.fold(
                    &mut self.sum_abs,
                    &mut self.max_abs,
                    &mut self.zeros,
                    &mut self.below,
                );
            }
            if !finite && let Some((r, c, v)) = first_non_finite(block, n) {
                return Err(MetricsError::NonFinite {
                    what: "activations".into(),
                    position: vec![done_rows + r, c],
                    value: v,
                });
            }
            self.tokens += brows as u64;
            done_rows += brows;
        }
        acc.fold(
            &mut self.sum_abs,
            &mut self.max_abs,
            &mut self.zeros,
            &mut self.below,
        );
        Ok(())
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

/// The f32 tile kernel for AVX2 + FMA (intrinsics around an inline-assembly row loop): the
/// same per-neuron arithmetic, in the same order, as [`tile_kernel`] (so results are
/// bit-identical to the portable path), with the zero and below-threshold counts kept as lane
/// masks subtracted from two 16-bit counters per lane (the auto-vectoriser packed each
/// comparison to bytes and back, which doubled the work), and the magnitude histogram counted
/// in the same loop.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    use std::arch::x86_64::{
        _mm256_castsi256_pd, _mm256_castsi256_ps, _mm256_loadu_pd, _mm256_loadu_ps,
        _mm256_loadu_si256, _mm256_set1_epi32, _mm256_set1_epi64x, _mm256_set1_ps,
        _mm256_storeu_pd, _mm256_storeu_ps, _mm256_storeu_si256,
    };

    use super::{BLOCK_ROWS, BlockAcc, TILE, TileAcc, Walk, block_stats_impl};
    use crate::activation_sparsity::{ActivationHistogram, BUCKETS};

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
        squares: bool,
        mut hist: Option<&mut ActivationHistogram>,
    ) {
        let mut counts = hist
            .as_deref_mut()
            .and_then(ActivationHistogram::bucket_counts);
        let fused = counts.is_some();
        if squares {
            // SAFETY: this function runs only where AVX2 and FMA are available.
            block_stats_impl(block, shift, acc, true, |s, w, k, tm, a| unsafe {
                tile::<true>(s, w, k, tm, a, counts.as_deref_mut())
            })
        } else {
            // SAFETY: as above.
            block_stats_impl(block, shift, acc, false, |s, w, k, tm, a| unsafe {
                tile::<false>(s, w, k, tm, a, counts.as_deref_mut())
            })
        }
        if let Some(h) = hist {
            if fused {
                // The tiles counted their columns; the remainder columns here.
                let n = acc.n;
                let rows = (block.len() / n).min(BLOCK_ROWS);
                let full = acc.tiles.len() * TILE;
                for row in block.chunks_exact(n).take(rows) {
                    for x in &row[full..] {
                        h.add_bits(x.to_bits());
                    }
                }
                h.add_total((rows * n) as u64);
            } else {
                h.add_f32(block);
            }
        }
    }

    /// The row loop of [`tile`], first part: load the 8 elements, t0 = |a| (f32).
    macro_rules! row_head {
        () => {
            concat!(
                "2:\n",
                "vmovups {t0}, ymmword ptr [{p}]\n",
                "vandps {t0}, {t0}, {abs32}\n",
            )
        };
    }

    /// Optional part of the row loop: the 8 histogram buckets of t0 = |a|, counted.
    macro_rules! row_hist {
        () => {
            concat!(
                "vpsrld {t2}, {t0}, 16\n",
                "vmovdqu ymmword ptr [{buf}], {t2}\n",
                "mov {i:e}, dword ptr [{buf}]\n",
                "inc qword ptr [{h} + 8*{i}]\n",
                "mov {i:e}, dword ptr [{buf} + 4]\n",
                "inc qword ptr [{h} + 8*{i}]\n",
                "mov {i:e}, dword ptr [{buf} + 8]\n",
                "inc qword ptr [{h} + 8*{i}]\n",
                "mov {i:e}, dword ptr [{buf} + 12]\n",
                "inc qword ptr [{h} + 8*{i}]\n",
                "mov {i:e}, dword ptr [{buf} + 16]\n",
                "inc qword ptr [{h} + 8*{i}]\n",
                "mov {i:e}, dword ptr [{buf} + 20]\n",
                "inc qword ptr [{h} + 8*{i}]\n",
                "mov {i:e}, dword ptr [{buf} + 24]\n",
                "inc qword ptr [{h} + 8*{i}]\n",
                "mov {i:e}, dword ptr [{buf} + 28]\n",
                "inc qword ptr [{h} + 8*{i}]\n",
            )
        };
    }

    /// The row loop of [`tile`], second part: max, the two counters, the f64 sums, next row.
    macro_rules! row_tail {
        () => {
            concat!(
                "vmaxps {mx}, {t0}, {mx}\n",
                "vcmpps {t1}, {t0}, {tmv}, 0x11\n",
                "vxorps {t2:x}, {t2:x}, {t2:x}\n",
                "vcmpps {t2}, {t0}, {t2}, 0\n",
                "vpblendw {t1}, {t1}, {t2}, 0xAA\n",
                "vpsubw {zb}, {zb}, {t1}\n",
                "vcvtps2pd {t0}, xmmword ptr [{p}]\n",
                "vcvtps2pd {t1}, xmmword ptr [{p} + 16]\n",
                "vandpd {t2}, {t0}, {abs64}\n",
                "vaddpd {a0}, {a0}, {t2}\n",
                "vandpd {t2}, {t1}, {abs64}\n",
                "vaddpd {a1}, {a1}, {t2}\n",
                "vsubpd {t0}, {t0}, {k0}\n",
                "vsubpd {t1}, {t1}, {k1}\n",
                "vaddpd {s0}, {s0}, {t0}\n",
                "vaddpd {s1}, {s1}, {t1}\n",
                "vfmadd231pd {q0}, {t0}, {t0}\n",
                "vfmadd231pd {q1}, {t1}, {t1}\n",
                "add {p}, {step}\n",
                "dec {n}\n",
                "jnz 2b\n",
            )
        };
    }

    /// Streams rows `r0..r0 + rows` of the 8-neuron tile starting at `src[off]` (row stride
    /// `stride`) through the accumulators, and counts the magnitudes into `hist` if given;
    /// rows past the end of `src` are not read.
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
        hist: Option<&mut [u64; BUCKETS]>,
    ) {
        // Rows whose TILE elements lie inside `src`: all of them in the block loop (checked
        // with one multiplication), else found by a division.
        // (No closures here: they would not be inlined into this AVX2 function.)
        let mut all_inside = rows == 0;
        if rows > 0
            && let Some(o) = (r0 + rows - 1).checked_mul(stride)
            && let Some(e) = o.checked_add(off + TILE)
        {
            all_inside = e <= src.len();
        }
        let end = if all_inside {
            r0 + rows
        } else {
            match src.len().checked_sub(off + TILE) {
                Some(last) => (r0 + rows).min(last / stride.max(1) + 1),
                None => 0,
            }
        };
        let abs64 = _mm256_castsi256_pd(_mm256_set1_epi64x(0x7fff_ffff_ffff_ffff));
        let abs32 = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
        let tmv = _mm256_set1_ps(tm);
        // SAFETY (all loads and stores of `acc` and `shift`): every array has TILE = 8 lanes,
        // read and written as two f64x4 or one 32-bit x8 vector.
        let (k0, k1) = unsafe {
            (
                _mm256_loadu_pd(shift.as_ptr()),
                _mm256_loadu_pd(shift.as_ptr().add(4)),
            )
        };
        let (mut s0, mut s1, mut q0, mut q1, mut a0, mut a1, mut mx, mut zb) = unsafe {
            (
                _mm256_loadu_pd(acc.s.as_ptr()),
                _mm256_loadu_pd(acc.s.as_ptr().add(4)),
                _mm256_loadu_pd(acc.q.as_ptr()),
                _mm256_loadu_pd(acc.q.as_ptr().add(4)),
                _mm256_loadu_pd(acc.sa.as_ptr()),
                _mm256_loadu_pd(acc.sa.as_ptr().add(4)),
                _mm256_loadu_ps(acc.mx.as_ptr()),
                _mm256_loadu_si256(acc.zb.as_ptr().cast()),
            )
        };
        if end > r0 {
            // The row loop in assembly: with 8 accumulators and 5 constants there are three
            // vector registers left for temporaries, and the compiler's allocation of the same
            // intrinsics spilled a shift vector and shuffled the threshold between registers
            // every row. The operations and their order are those of the portable tile (the
            // test checks the bits): the magnitude |a| (f32) feeds max and the two counters
            // (zero test in the high, threshold test in the low 16 bits, one 16-bit subtract),
            // then each half widened to f64 adds |a| to `sa`, and a − k to `s` and (a − k)² to
            // `q` (fused). Without `SQ` the squares are computed and dropped. With a histogram,
            // the 8 buckets (|a| bits >> 16) go through `buf` to 8 scalar increments, which run
            // on the integer side while the vector units do the rest.
            // SAFETY: rows r0..end of the tile lie inside `src` (above), so every load at
            // `p = src + off + r·stride` (r0 ≤ r < end) reads 8 elements of `src`; the loop runs
            // end − r0 ≥ 1 times; the stack is not used. With a histogram, `buf` is 8 u32 and
            // every bucket index is below 2^15 = BUCKETS (the sign bit is cleared before the
            // shift), so each increment stays inside `counts`.
            let p = unsafe { src.as_ptr().add(off + r0 * stride) };
            let (n, step) = (end - r0, stride * size_of::<f32>());
            // The loop with its operands; the histogram variant adds template lines, operands
            // and writes memory (`buf`, `counts`).
            macro_rules! row_loop {
                ([$($lines:expr),*], [$($extra:tt)*], $options:tt) => {
                    std::arch::asm!(
                        row_head!(),
                        $($lines,)*
                        row_tail!(),
                        p = inout(reg) p => _,
                        n = inout(reg) n => _,
                        step = in(reg) step,
                        t0 = out(ymm_reg) _,
                        t1 = out(ymm_reg) _,
                        t2 = out(ymm_reg) _,
                        s0 = inout(ymm_reg) s0,
                        s1 = inout(ymm_reg) s1,
                        q0 = inout(ymm_reg) q0,
                        q1 = inout(ymm_reg) q1,
                        a0 = inout(ymm_reg) a0,
                        a1 = inout(ymm_reg) a1,
                        mx = inout(ymm_reg) mx,
                        zb = inout(ymm_reg) zb,
                        k0 = in(ymm_reg) k0,
                        k1 = in(ymm_reg) k1,
                        abs64 = in(ymm_reg) abs64,
                        abs32 = in(ymm_reg) abs32,
                        tmv = in(ymm_reg) tmv,
                        $($extra)*
                        options $options,
                    )
                };
            }
            match hist {
                None => unsafe { row_loop!([], [], (nostack, readonly)) },
                Some(counts) => unsafe {
                    // 32-byte aligned, so the vector store never splits across cache lines
                    // (which would stop it forwarding to the 8 loads).
                    #[repr(align(32))]
                    struct Buf([u32; TILE]);
                    let mut buf = Buf([0; TILE]);
                    row_loop!(
                        [row_hist!()],
                        [
                            buf = in(reg) buf.0.as_mut_ptr(),
                            h = in(reg) counts.as_mut_ptr(),
                            i = out(reg) _,
                        ],
                        (nostack)
                    )
                },
            }
        }
        unsafe {
            _mm256_storeu_pd(acc.s.as_mut_ptr(), s0);
            _mm256_storeu_pd(acc.s.as_mut_ptr().add(4), s1);
            if SQ {
                _mm256_storeu_pd(acc.q.as_mut_ptr(), q0);
                _mm256_storeu_pd(acc.q.as_mut_ptr().add(4), q1);
            }
            _mm256_storeu_pd(acc.sa.as_mut_ptr(), a0);
            _mm256_storeu_pd(acc.sa.as_mut_ptr().add(4), a1);
            _mm256_storeu_ps(acc.mx.as_mut_ptr(), mx);
            _mm256_storeu_si256(acc.zb.as_mut_ptr().cast(), zb);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Block outputs and folded counters of one kernel run.
    #[derive(Debug, PartialEq)]
    struct Out {
        hist: Vec<u64>,
        sum: Vec<u64>,
        sq: Vec<u64>,
        sum_abs: Vec<u64>,
        max_abs: Vec<u64>,
        zeros: Vec<u64>,
        below: Vec<u64>,
    }

    /// A block kernel over f32 activations (dispatched or portable).
    type Kernel = fn(&[f32], &[f64], &mut BlockAcc<f32>, bool, Option<&mut ActivationHistogram>);

    /// The portable block kernel with the histogram counted the portable way.
    fn portable(
        block: &[f32],
        shift: &[f64],
        acc: &mut BlockAcc<f32>,
        squares: bool,
        hist: Option<&mut ActivationHistogram>,
    ) {
        block_stats_portable(block, shift, acc, squares);
        if let Some(h) = hist {
            h.add_f32(block);
        }
    }

    /// Runs the consecutive blocks of `data` (`BLOCK_ROWS × n` each, the last one partial)
    /// through a kernel, folds the counters, and returns everything as bits (the sums are the
    /// last block's).
    fn run(kernel: Kernel, data: &[f32], n: usize, shift: &[f64], squares: bool) -> Out {
        let mut acc = BlockAcc::<f32>::new(n, 1e-3);
        let (mut sum, mut sq) = (vec![0.0; n], vec![0.0; n]);
        let (mut sum_abs, mut max_abs) = (vec![0.0; n], vec![0.0; n]);
        let (mut zeros, mut below) = (vec![0; n], vec![0; n]);
        let mut hist = ActivationHistogram::new();
        for block in data.chunks(BLOCK_ROWS * n) {
            kernel(block, shift, &mut acc, squares, Some(&mut hist));
            // A block epilogue: take the block sums and zero them.
            for (i, a) in acc.tiles.iter_mut().enumerate() {
                sum[i * TILE..(i + 1) * TILE].copy_from_slice(&a.s);
                sq[i * TILE..(i + 1) * TILE].copy_from_slice(&a.q);
                (a.s, a.q) = ([0.0; TILE], [0.0; TILE]);
            }
            let full = acc.tiles.len() * TILE;
            for (k, a) in acc.rest.iter_mut().enumerate() {
                (sum[full + k], sq[full + k]) = (a.s, a.q);
                (a.s, a.q) = (0.0, 0.0);
            }
        }
        acc.fold(&mut sum_abs, &mut max_abs, &mut zeros, &mut below);
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(hist.total(), data.len() as u64);
        Out {
            hist: hist.counts().to_vec(),
            sum: bits(&sum),
            sq: bits(&sq),
            sum_abs: bits(&sum_abs),
            max_abs: bits(&max_abs),
            zeros,
            below,
        }
    }

    /// The dispatched (AVX2 + FMA where present) block kernel, histogram included, equals the
    /// portable one bit for bit and a plain per-element reference, for neuron counts that are and are not multiples
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
            let portable = run(portable, &data, n, &shift, true);
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
            // Reference histogram: every element in the bucket of its f32 magnitude.
            let mut want = vec![0u64; crate::activation_sparsity::BUCKETS];
            for x in &data {
                want[crate::activation_sparsity::bucket_of_bits(x.to_bits())] += 1;
            }
            assert_eq!(fast.hist, want, "n = {n}, rows = {rows}: histogram");
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

    /// Runs `f` on a fresh rayon pool of `threads` workers.
    fn on_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
        match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
            Ok(pool) => pool.install(f),
            Err(e) => panic!("rayon pool of {threads}: {e}"),
        }
    }

    /// Seeded activations with exact zeros and values on both sides of 1e-3.
    fn activations(len: usize, seed: u64) -> Vec<f32> {
        let mut st = seed;
        (0..len)
            .map(|i| {
                st = st
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let u = (st >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                match i % 7 {
                    0 => 0.0,
                    1 => u * 1e-3,
                    _ => u * (1.0 + (i % 5) as f32),
                }
            })
            .collect()
    }

    /// Every output of the statistics as bits.
    fn bits(st: &NeuronStats) -> Vec<Vec<u64>> {
        let b = |r: Result<Array1<f64>>| match r {
            Ok(a) => a.iter().map(|x| x.to_bits()).collect(),
            Err(e) => panic!("{e}"),
        };
        vec![
            vec![st.sample_count(), st.token_count()],
            b(st.mean()),
            b(st.variance()),
            b(st.mean_abs()),
            b(st.max_abs()),
            b(st.zero_fraction()),
            b(st.below_threshold_fraction()),
        ]
    }

    fn close(a: &[f64], b: &[f64], tol: f64) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= tol * y.abs().max(1.0), "{x} vs {y}");
        }
    }

    fn params(n: usize, aggregation: Aggregation) -> NeuronStats {
        match NeuronStatsParams::new(n)
            .aggregation(aggregation)
            .magnitude_threshold(1e-3)
            .build()
        {
            Ok(st) => st,
            Err(e) => panic!("{e}"),
        }
    }

    /// Outputs go to the sink in item order for any worker count and wave boundary, each
    /// worker's scratch is reused and returned, and the first error in item order stops the
    /// run with nothing after it sunk.
    #[test]
    fn ordered_waves_keep_item_order_and_stop_at_the_first_error() {
        let items: Vec<usize> = (0..50).collect();
        for threads in [1, 2, 3] {
            for fail in [None, Some(37), Some(3)] {
                let made = std::sync::atomic::AtomicUsize::new(0);
                let mut sunk = Vec::new();
                let r = on_pool(threads, || {
                    ordered_waves(
                        &items,
                        || usize::MAX,
                        || {
                            made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            0usize
                        },
                        |uses, &i, out| {
                            *uses += 1;
                            *out = i * 10;
                            if fail == Some(i) || fail.is_some_and(|f| i == f + 4) {
                                return Err(MetricsError::Empty {
                                    what: format!("item {i}"),
                                });
                            }
                            Ok(())
                        },
                        |&o| sunk.push(o),
                    )
                });
                let want: Vec<usize> = (0..fail.unwrap_or(50)).map(|i| i * 10).collect();
                assert_eq!(sunk, want, "threads {threads}, fail {fail:?}");
                match (fail, r) {
                    (None, Ok(scratches)) => {
                        // Every item ran with one of the returned scratches.
                        assert!(scratches.len() <= threads);
                        assert_eq!(scratches.iter().sum::<usize>(), items.len());
                    }
                    (Some(f), Err(MetricsError::Empty { what })) => {
                        assert_eq!(what, format!("item {f}"))
                    }
                    (f, r) => panic!("threads {threads}, fail {f:?}: {r:?}"),
                }
                assert!(made.into_inner() <= threads, "one scratch per worker");
            }
        }
    }

    /// Many row chunks (several waves, reused outputs and scratch): the result does not depend
    /// on the worker count (bit for bit), matches one chunk to 1e-12 with exact counters, and
    /// a NaN in a late chunk gives its position and leaves the statistics unchanged.
    #[test]
    fn chunked_update_over_many_waves_is_exact_and_thread_independent() {
        let (rows, n) = (300, 37);
        let data = activations(rows * n, 7);
        let Ok(x) = ArrayView2::from_shape((rows, n), &data) else {
            panic!("shape")
        };
        let run = |threads, chunk_rows| {
            on_pool(threads, || {
                let mut st = params(n, Aggregation::PerToken);
                match st.update_chunked(x, chunk_rows) {
                    Ok(()) => st,
                    Err(e) => panic!("{e}"),
                }
            })
        };
        let one = run(1, 7);
        assert!(
            one.histogram()
                .is_some_and(|h| h.total() == (rows * n) as u64)
        );
        for threads in [2, 3] {
            let other = run(threads, 7);
            assert_eq!(bits(&other), bits(&one), "threads {threads}");
            assert_eq!(other.histogram(), one.histogram(), "threads {threads}");
        }
        let whole = run(1, rows);
        assert_eq!(whole.histogram(), one.histogram());
        assert_eq!(bits(&one)[0], bits(&whole)[0]);
        let f = |v: &[u64]| v.iter().map(|x| f64::from_bits(*x)).collect::<Vec<_>>();
        for (a, b) in bits(&one).iter().zip(bits(&whole)).skip(1) {
            close(&f(a), &f(&b), 1e-12);
        }
        assert_eq!(
            bits(&one)[4..7],
            bits(&whole)[4..7],
            "max and fractions exact"
        );

        let mut bad = data.clone();
        bad[250 * n + 5] = f32::NAN;
        let Ok(xb) = ArrayView2::from_shape((rows, n), &bad) else {
            panic!("shape")
        };
        for threads in [1, 2] {
            let mut st = run(1, 7);
            let before = bits(&st);
            let r = on_pool(threads, || st.update_chunked(xb, 7));
            match r {
                Err(MetricsError::NonFinite { position, .. }) => {
                    assert_eq!(position, vec![250, 5])
                }
                other => panic!("threads {threads}: {other:?}"),
            }
            assert_eq!(bits(&st), before, "unchanged after the error");
            assert!(
                st.histogram()
                    .is_some_and(|h| h.total() == (rows * n) as u64)
            );
        }
    }

    /// The per-sequence-mean path over many groups: thread-independent bit for bit, and the
    /// variance of the sequence means (to 1e-12 against one group).
    #[test]
    fn sequence_means_over_many_waves_are_exact_and_thread_independent() {
        let (b, seq, n) = (40, 6, 13);
        let data = activations(b * seq * n, 11);
        let Ok(x) = ArrayView3::from_shape((b, seq, n), &data) else {
            panic!("shape")
        };
        let run = |threads, group| {
            on_pool(threads, || {
                let mut st = params(n, Aggregation::PerSequenceMean);
                match st.update_sequence_means(x, group) {
                    Ok(()) => st,
                    Err(e) => panic!("{e}"),
                }
            })
        };
        let one = run(1, 1);
        for threads in [2, 3] {
            let other = run(threads, 1);
            assert_eq!(bits(&other), bits(&one), "threads {threads}");
            assert_eq!(other.histogram(), one.histogram(), "threads {threads}");
        }
        assert_eq!(run(1, b).histogram(), one.histogram());
        assert!(
            one.histogram()
                .is_some_and(|h| h.total() == (b * seq * n) as u64)
        );
        assert_eq!(one.sample_count(), 40);
        assert_eq!(one.token_count(), 240);
        let means = x.mapv(f64::from).mean_axis(Axis(1));
        let Some(means) = means else { panic!("means") };
        let (Ok(v), Ok(w)) = (one.variance(), run(1, b).variance()) else {
            panic!("variance")
        };
        let want = means.var_axis(Axis(0), 0.0);
        close(
            v.as_slice().unwrap_or(&[]),
            want.as_slice().unwrap_or(&[]),
            1e-12,
        );
        close(
            v.as_slice().unwrap_or(&[]),
            w.as_slice().unwrap_or(&[]),
            1e-12,
        );
    }

    /// The 16-bit tile counters are folded before they overflow: one chunk of more than 2¹⁶
    /// rows (n = 9: one tile and one remainder neuron) where every counter exceeds 65 535.
    #[test]
    fn counters_fold_before_sixteen_bits_overflow() {
        let (rows, n) = (140_000usize, 9usize);
        assert!((CHUNK_ELEMS / n) >= rows, "one chunk");
        let data: Vec<f32> = (0..rows * n)
            .map(|i| match (i % n, i / n % 4) {
                (0 | 8, _) => 0.0,
                (1, _) => 1e-4,
                (_, 0) => 0.0,
                (j, _) => j as f32,
            })
            .collect();
        let Ok(x) = ArrayView2::from_shape((rows, n), &data) else {
            panic!("shape")
        };
        let mut st = params(n, Aggregation::PerToken);
        if let Err(e) = st.update(x) {
            panic!("{e}")
        }
        let (Ok(z), Ok(b)) = (st.zero_fraction(), st.below_threshold_fraction()) else {
            panic!("fractions")
        };
        for j in 0..n {
            let col = (0..rows).map(|r| data[r * n + j]);
            let zeros = col.clone().filter(|v| *v == 0.0).count();
            let below = col.filter(|v| v.abs() < 1e-3).count();
            assert_eq!(z[j], zeros as f64 / rows as f64, "zeros, neuron {j}");
            assert_eq!(b[j], below as f64 / rows as f64, "below, neuron {j}");
        }
        assert_eq!(z[0], 1.0);
        assert_eq!(b[1], 1.0);
    }
}
