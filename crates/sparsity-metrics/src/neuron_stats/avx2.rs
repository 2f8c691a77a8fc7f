//! The f32 tile kernel for AVX2 + FMA, in `std::arch` intrinsics: the same per-neuron
//! arithmetic, in the same order, as [`super::kernel::tile_kernel`] (so results are
//! bit-identical to the portable path), with the zero and below-threshold counts kept as lane
//! masks subtracted from two 16-bit counters per lane (the auto-vectoriser packed each
//! comparison to bytes and back, which doubled the work), and the magnitude histogram counted
//! in the same loop.

use std::arch::x86_64::{
    __m256, __m256d, __m256i, _CMP_EQ_OQ, _CMP_LT_OQ, _mm_loadu_ps, _mm256_add_pd, _mm256_and_pd,
    _mm256_and_ps, _mm256_blend_epi16, _mm256_castps_si256, _mm256_castsi256_pd,
    _mm256_castsi256_ps, _mm256_cmp_ps, _mm256_cvtps_pd, _mm256_fmadd_pd, _mm256_loadu_pd,
    _mm256_loadu_ps, _mm256_loadu_si256, _mm256_max_ps, _mm256_set1_epi32, _mm256_set1_epi64x,
    _mm256_set1_ps, _mm256_setzero_ps, _mm256_srli_epi32, _mm256_store_si256, _mm256_storeu_pd,
    _mm256_storeu_ps, _mm256_storeu_si256, _mm256_sub_epi16, _mm256_sub_pd,
};

use super::BLOCK_ROWS;
use super::kernel::{BlockAcc, TILE, TileAcc, Walk, block_stats_impl};
use crate::activation_sparsity::{ActivationHistogram, BUCKETS};

// The kernel holds one tile as two f64x4 and one 32-bit x8 vector per quantity.
const _: () = assert!(TILE == 8);

/// [`super::kernel::block_stats`] for f32 activations.
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

/// One tile's accumulators as vectors: the shifted sums `s`, squares `q` and |a| sums `a`
/// (low and high 4 lanes as f64x4), the max |a| `mx` (f32x8) and the packed zero and
/// below-threshold counters `zb` (two 16-bit counters per 32-bit lane).
#[derive(Clone, Copy)]
struct Sums {
    s0: __m256d,
    s1: __m256d,
    q0: __m256d,
    q1: __m256d,
    a0: __m256d,
    a1: __m256d,
    mx: __m256,
    zb: __m256i,
}

/// The loop constants: the shift (low and high lanes), the f64 and f32 magnitude masks and
/// the magnitude threshold.
#[derive(Clone, Copy)]
struct Consts {
    k0: __m256d,
    k1: __m256d,
    abs64: __m256d,
    abs32: __m256,
    tmv: __m256,
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
    // SAFETY (all loads and stores of `acc` and `shift`): every array has TILE = 8 lanes,
    // read and written as two f64x4 or one 32-bit x8 vector.
    let c = unsafe {
        Consts {
            k0: _mm256_loadu_pd(shift.as_ptr()),
            k1: _mm256_loadu_pd(shift.as_ptr().add(4)),
            abs64: _mm256_castsi256_pd(_mm256_set1_epi64x(0x7fff_ffff_ffff_ffff)),
            abs32: _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff)),
            tmv: _mm256_set1_ps(tm),
        }
    };
    // SAFETY: as above.
    let mut v = unsafe {
        Sums {
            s0: _mm256_loadu_pd(acc.s.as_ptr()),
            s1: _mm256_loadu_pd(acc.s.as_ptr().add(4)),
            q0: _mm256_loadu_pd(acc.q.as_ptr()),
            q1: _mm256_loadu_pd(acc.q.as_ptr().add(4)),
            a0: _mm256_loadu_pd(acc.sa.as_ptr()),
            a1: _mm256_loadu_pd(acc.sa.as_ptr().add(4)),
            mx: _mm256_loadu_ps(acc.mx.as_ptr()),
            zb: _mm256_loadu_si256(acc.zb.as_ptr().cast()),
        }
    };
    if end > r0 {
        // SAFETY: rows r0..end of the tile lie inside `src` (above), so each of the
        // end − r0 rows that `rows_loop` reads, at `src + off + r·stride` (r0 ≤ r < end),
        // is 8 elements of `src`; the CPU supports AVX2 and FMA (this function's
        // requirement). Without a histogram `counts` is empty and never touched; with one
        // it has BUCKETS entries.
        unsafe {
            let p = src.as_ptr().add(off + r0 * stride);
            match hist {
                None => rows_loop::<SQ, false>(p, end - r0, stride, c, &mut v, &mut []),
                Some(counts) => rows_loop::<SQ, true>(p, end - r0, stride, c, &mut v, counts),
            }
        }
    }
    // SAFETY: as above.
    unsafe {
        _mm256_storeu_pd(acc.s.as_mut_ptr(), v.s0);
        _mm256_storeu_pd(acc.s.as_mut_ptr().add(4), v.s1);
        if SQ {
            _mm256_storeu_pd(acc.q.as_mut_ptr(), v.q0);
            _mm256_storeu_pd(acc.q.as_mut_ptr().add(4), v.q1);
        }
        _mm256_storeu_pd(acc.sa.as_mut_ptr(), v.a0);
        _mm256_storeu_pd(acc.sa.as_mut_ptr().add(4), v.a1);
        _mm256_storeu_ps(acc.mx.as_mut_ptr(), v.mx);
        _mm256_storeu_si256(acc.zb.as_mut_ptr().cast(), v.zb);
    }
}

/// The row loop of [`tile`]: `rows` rows of 8 f32 from `p`, `stride` elements apart. The
/// operations and their order are those of the portable tile (the kernel test checks the
/// bits): the magnitude |a| (f32) feeds max and the two counters (zero test in the high,
/// threshold test in the low 16 bits, one 16-bit subtract), then each half widened to f64
/// adds |a| to `a`, and a − k to `s` and (a − k)² to `q` (fused). With `HIST`, the 8
/// buckets (|a| bits >> 16) go through an aligned buffer to 8 scalar increments, which run
/// on the integer side of the core while the vector units do the rest; without it the loop
/// has no histogram code.
///
/// # Safety
/// The CPU must support AVX2 and FMA; for every `r < rows`, the 8 f32 at `p + r·stride` are
/// readable; with `HIST`, `counts` has at least `BUCKETS` entries.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn rows_loop<const SQ: bool, const HIST: bool>(
    mut p: *const f32,
    rows: usize,
    stride: usize,
    c: Consts,
    v: &mut Sums,
    counts: &mut [u64],
) {
    debug_assert!(!HIST || counts.len() >= BUCKETS);
    let Sums {
        mut s0,
        mut s1,
        mut q0,
        mut q1,
        mut a0,
        mut a1,
        mut mx,
        mut zb,
    } = *v;
    let Consts {
        k0,
        k1,
        abs64,
        abs32,
        tmv,
    } = c;
    // 32-byte aligned, so the vector store never splits across cache lines (which would
    // stop it forwarding to the 8 loads).
    #[repr(align(32))]
    struct Buf([u32; TILE]);
    let mut buf = Buf([0; TILE]);
    for _ in 0..rows {
        // SAFETY: `p` is one of the `rows` readable rows of 8 f32 (this function's
        // requirement).
        let x = unsafe { _mm256_loadu_ps(p) };
        let t0 = _mm256_and_ps(x, abs32);
        if HIST {
            // SAFETY: `buf` is 8 aligned u32; a bucket index is the magnitude's bits >> 16,
            // below 2^15 = BUCKETS since the sign bit is cleared, and `counts` has BUCKETS
            // entries with `HIST` (this function's requirement).
            unsafe {
                _mm256_store_si256(
                    buf.0.as_mut_ptr().cast(),
                    _mm256_srli_epi32::<16>(_mm256_castps_si256(t0)),
                );
                for k in 0..TILE {
                    // A volatile read keeps the store and 8 reloads through `buf`, on the load
                    // ports; the compiler would otherwise extract each index from the vector
                    // register with shuffles, on the vector ports the rest of the loop uses.
                    let i = std::ptr::read_volatile(buf.0.as_ptr().add(k));
                    *counts.get_unchecked_mut(i as usize) += 1;
                }
            }
        }
        // max(a, mx) returns mx unless a > mx: the portable `if a > mx { a } else { mx }`.
        mx = _mm256_max_ps(t0, mx);
        // A true comparison is an all-ones lane: with the zero test in the high 16 bits and
        // the threshold test in the low 16 bits of each lane (one blend), subtracting it as
        // 16-bit lanes counts one in each half that holds.
        let lt = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LT_OQ>(t0, tmv));
        let eq = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_EQ_OQ>(t0, _mm256_setzero_ps()));
        zb = _mm256_sub_epi16(zb, _mm256_blend_epi16::<0xAA>(lt, eq));
        // SAFETY: as above; the two halves of the same 8 elements.
        let (v0, v1) = unsafe {
            (
                _mm256_cvtps_pd(_mm_loadu_ps(p)),
                _mm256_cvtps_pd(_mm_loadu_ps(p.add(4))),
            )
        };
        a0 = _mm256_add_pd(a0, _mm256_and_pd(v0, abs64));
        a1 = _mm256_add_pd(a1, _mm256_and_pd(v1, abs64));
        let d0 = _mm256_sub_pd(v0, k0);
        let d1 = _mm256_sub_pd(v1, k1);
        s0 = _mm256_add_pd(s0, d0);
        s1 = _mm256_add_pd(s1, d1);
        if SQ {
            q0 = _mm256_fmadd_pd(d0, d0, q0);
            q1 = _mm256_fmadd_pd(d1, d1, q1);
        }
        // The last row's successor is never read (wrapping: it may lie past `src`).
        p = p.wrapping_add(stride);
    }
    *v = Sums {
        s0,
        s1,
        q0,
        q1,
        a0,
        a1,
        mx,
        zb,
    };
}
