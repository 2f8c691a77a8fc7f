//! The block kernel: one pass over a block of rows adds each neuron's shifted sums (and
//! squares) and magnitude counters to its tile's accumulators (8 neurons a tile, in vector
//! registers), with the portable tile here and the f32 AVX2 + FMA tile in [`super::avx2`]; the
//! block epilogues merge the block moments into the running state (Chan's update) or add the
//! row sums.

use super::{Activation, BLOCK_ROWS};
use crate::activation_sparsity::ActivationHistogram;

/// Neurons per register tile of the block kernel (8 f64 accumulators of each kind stay in
/// vector registers while the tile's rows stream past).
pub(super) const TILE: usize = 8;
/// Rows of a block that each tile walks before the kernel moves to the next tile. Eight rows
/// of one tile touch eight cache lines, which stay in L1 for the neighbouring tile that reads
/// the other half of the same lines even when the rows are a multiple of 4 KiB apart (they
/// then share one 8-way L1 set), and the hardware prefetchers see eight sequential streams.
const SUB_ROWS: usize = 8;
/// Rows after which the 16-bit tile counters are folded into the u64 totals: a fold follows
/// the block that reaches this, so a counter sees at most FOLD_ROWS − 1 + BLOCK_ROWS = 65 535
/// rows.
pub(super) const FOLD_ROWS: usize = 65_536 - BLOCK_ROWS;
const _: () = assert!(FOLD_ROWS - 1 + BLOCK_ROWS <= u16::MAX as usize);

/// Accumulators of one tile of `TILE` neurons: the block's shifted sums `s`, `q` (reset at
/// every block) and the magnitude accumulators `sa`, `mx` and `zb` (kept over a run of
/// blocks, then folded into the statistics). `zb` holds two 16-bit counters per neuron: exact
/// zeros in the high half, magnitudes below the threshold in the low half (one vector
/// register for both in the AVX2 kernel).
#[derive(Clone, Copy)]
pub(super) struct TileAcc<A: Activation> {
    pub(super) s: [f64; TILE],
    pub(super) q: [f64; TILE],
    pub(super) sa: [f64; TILE],
    pub(super) mx: [A::Mag; TILE],
    pub(super) zb: [u32; TILE],
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
pub(super) struct RestAcc {
    pub(super) s: f64,
    pub(super) q: f64,
    pub(super) sa: f64,
    pub(super) mx: f64,
    pub(super) z: u64,
    pub(super) b: u64,
}

/// The kernel state over a run of blocks of one row chunk: the tile and remainder
/// accumulators, and the magnitude threshold in the element's precision.
pub(super) struct BlockAcc<A: Activation> {
    pub(super) n: usize,
    pub(super) t: f64,
    pub(super) tm: A::Mag,
    pub(super) tiles: Vec<TileAcc<A>>,
    pub(super) rest: Vec<RestAcc>,
    pub(super) rows: usize,
}

/// The per-worker buffers of [`super::NeuronStats::accumulate_rows`], allocated once per rayon
/// worker ([`super::parallel::ordered_waves`]) and reused for every row chunk it takes: allocating
/// them per chunk made the allocator hand pages back and fault them in again, which cost about a
/// fifth of the streaming time. Their contents never carry from one chunk to the next (the block
/// accumulators are folded and zeroed at the end of each chunk, the rest is overwritten), so
/// results do not depend on which worker ran which chunk.
pub(super) struct RowScratch<A: Activation> {
    pub(super) acc: BlockAcc<A>,
    pub(super) total_sum: Vec<f64>,
    pub(super) shift: Vec<f64>,
    /// The worker's magnitude histogram (when the statistics keep one). Its counts are exact
    /// integers, so one per worker, summed at the end in any order, gives the same histogram
    /// as one per chunk, without a 256 KiB histogram per chunk to clear and merge.
    pub(super) hist: Option<ActivationHistogram>,
}

impl<A: Activation> RowScratch<A> {
    pub(super) fn new(n: usize, t: f64, histogram: bool) -> Self {
        Self {
            acc: BlockAcc::new(n, t),
            total_sum: vec![0.0; n],
            shift: vec![0.0; n],
            hist: histogram.then(ActivationHistogram::new),
        }
    }
}

impl<A: Activation> BlockAcc<A> {
    pub(super) fn new(n: usize, t: f64) -> Self {
        Self {
            n,
            t,
            tm: A::mag_threshold(t),
            tiles: vec![TileAcc::zero(); n / TILE],
            rest: vec![RestAcc::default(); n % TILE],
            rows: 0,
        }
    }

    /// The block epilogue of the variance path, in one pass over the block sums (which it zeroes
    /// for the next block): per neuron, the block's mean `k + s/rows` and centred sum of squares
    /// `max(q − s²/rows, 0)` merged into `(samples, mean, m2)` by Chan's update
    /// ([`super::parallel::merge_moments`], same arithmetic). The first block (`first_shift` given,
    /// `samples` = 0) was shifted by `first_shift` and becomes the state; later blocks were shifted
    /// by the running mean itself. Returns false when a block sum is not finite (the state is then
    /// garbage; the caller reports the error and drops it).
    pub(super) fn merge_block(
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
    pub(super) fn add_block_sums(&mut self, total: &mut [f64]) -> bool {
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
    pub(super) fn clear(&mut self) {
        self.tiles.fill(TileAcc::zero());
        self.rest.fill(RestAcc::default());
        self.rows = 0;
    }

    /// Adds the magnitude accumulators to the running counters and resets them.
    pub(super) fn fold(
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
pub(super) fn block_stats<A: Activation>(
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
                super::avx2::block_stats_f32(block, shift, acc, squares, hist)
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
pub(super) type Walk = (usize, usize, usize, usize);

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
pub(super) fn block_stats_portable<A: Activation>(
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
pub(super) fn block_stats_impl<A: Activation>(
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

/// One element of Chan's merge of (mean_b, m2_b) into (mean_a, m2_a), with `fb = n_b/n` and
/// `w = n_a·n_b/n`: `δ = mean_b − mean_a`, `mean_a += δ·fb`, `m2_a += m2_b + δ²·w`.
#[inline(always)]
pub(super) fn chan_step(mean_a: &mut f64, m2_a: &mut f64, mean_b: f64, m2_b: f64, fb: f64, w: f64) {
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
