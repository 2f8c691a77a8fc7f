//! Weight element types (f32, bf16, f16) and their AXPY micro-kernels.
//!
//! Every kernel accumulates in f32: a half-precision weight row is widened to f32 in
//! registers (bf16 by a 16-bit shift, f16 through `half`'s F16C path when the CPU has
//! it), multiplied by the kept activation and added to the output accumulator.
//! Rows of every type run the loops of [`crate::simd`] at the widest level the CPU has
//! (AVX-512 or AVX2 + FMA, chosen at run time). On other CPUs (or
//! `SPARSITY_KERNELS_SIMD=portable`) `wide::f32x8` carries the f32 arithmetic (SSE2 pairs on
//! baseline x86-64, AVX when the build enables it) and half-precision rows are widened a tile
//! at a time first.

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use wide::f32x8;

use crate::simd::{self, simd_level};

/// Outputs widened per step by the half-precision micro-kernels.
const TILE: usize = 64;

/// A weight element the CPU kernels can read; accumulation is always in f32.
pub trait WeightElement: Copy + Send + Sync + std::fmt::Debug + 'static {
    /// Short name used in benchmark tables and JSON (`"f32"`, `"bf16"`, `"f16"`).
    const NAME: &'static str;
    /// Size of one element in bytes.
    const BYTES: usize = std::mem::size_of::<Self>();

    /// Widens to f32.
    fn to_f32(self) -> f32;
    /// Narrows from f32 (round to nearest even).
    fn from_f32(value: f32) -> Self;

    /// `acc[i] += Σ_r coeff[r] · rows[r][i]` for four rows of equal length `acc.len()`.
    fn axpy4(acc: &mut [f32], rows: [&[Self]; 4], coeff: [f32; 4]);

    /// `acc[i] += coeff · row[i]`.
    fn axpy1(acc: &mut [f32], row: &[Self], coeff: f32);
}

#[inline]
fn load8(chunk: &[f32; 8]) -> f32x8 {
    f32x8::from(*chunk)
}

impl WeightElement for f32 {
    const NAME: &'static str = "f32";

    #[inline]
    fn to_f32(self) -> f32 {
        self
    }

    #[inline]
    fn from_f32(value: f32) -> Self {
        value
    }

    #[inline]
    fn axpy4(acc: &mut [f32], rows: [&[f32]; 4], coeff: [f32; 4]) {
        if simd::axpy4_f32(simd_level(), acc, rows, coeff) {
            return;
        }
        let n = acc.len();
        let (acc_c, acc_t) = acc.as_chunks_mut::<8>();
        let (r0, t0) = rows[0][..n].as_chunks::<8>();
        let (r1, t1) = rows[1][..n].as_chunks::<8>();
        let (r2, t2) = rows[2][..n].as_chunks::<8>();
        let (r3, t3) = rows[3][..n].as_chunks::<8>();
        let [c0, c1, c2, c3] = coeff.map(f32x8::splat);
        for ((((a, w0), w1), w2), w3) in acc_c.iter_mut().zip(r0).zip(r1).zip(r2).zip(r3) {
            let mut v = load8(a);
            v = load8(w0).mul_add(c0, v);
            v = load8(w1).mul_add(c1, v);
            v = load8(w2).mul_add(c2, v);
            v = load8(w3).mul_add(c3, v);
            *a = v.to_array();
        }
        for (i, a) in acc_t.iter_mut().enumerate() {
            *a += coeff[0] * t0[i] + coeff[1] * t1[i] + coeff[2] * t2[i] + coeff[3] * t3[i];
        }
    }

    #[inline]
    fn axpy1(acc: &mut [f32], row: &[f32], coeff: f32) {
        if simd::axpy1_f32(simd_level(), acc, row, coeff) {
            return;
        }
        let n = acc.len();
        let (acc_c, acc_t) = acc.as_chunks_mut::<8>();
        let (r, t) = row[..n].as_chunks::<8>();
        let c = f32x8::splat(coeff);
        for (a, w) in acc_c.iter_mut().zip(r) {
            *a = load8(w).mul_add(c, load8(a)).to_array();
        }
        for (a, w) in acc_t.iter_mut().zip(t) {
            *a += coeff * w;
        }
    }
}

/// Widens up to [`TILE`] half-precision values into `dst` (same length).
trait Widen: Copy {
    fn widen(src: &[Self], dst: &mut [f32]);
}

impl Widen for bf16 {
    #[inline]
    fn widen(src: &[Self], dst: &mut [f32]) {
        // bf16 is the top half of an f32: a shift, which the compiler vectorises.
        for (d, s) in dst.iter_mut().zip(src) {
            *d = f32::from_bits(u32::from(s.to_bits()) << 16);
        }
    }
}

impl Widen for f16 {
    #[inline]
    fn widen(src: &[Self], dst: &mut [f32]) {
        src.convert_to_f32_slice(dst);
    }
}

#[inline]
fn half_axpy4<T: Widen>(acc: &mut [f32], rows: [&[T]; 4], coeff: [f32; 4]) {
    let n = acc.len();
    let mut buf = [[0.0f32; TILE]; 4];
    let mut start = 0;
    while start < n {
        let len = TILE.min(n - start);
        for (b, row) in buf.iter_mut().zip(rows) {
            T::widen(&row[start..start + len], &mut b[..len]);
        }
        let tile = &mut acc[start..start + len];
        let [b0, b1, b2, b3] = &buf;
        <f32 as WeightElement>::axpy4(
            tile,
            [&b0[..len], &b1[..len], &b2[..len], &b3[..len]],
            coeff,
        );
        start += len;
    }
}

#[inline]
fn half_axpy1<T: Widen>(acc: &mut [f32], row: &[T], coeff: f32) {
    let n = acc.len();
    let mut buf = [0.0f32; TILE];
    let mut start = 0;
    while start < n {
        let len = TILE.min(n - start);
        T::widen(&row[start..start + len], &mut buf[..len]);
        <f32 as WeightElement>::axpy1(&mut acc[start..start + len], &buf[..len], coeff);
        start += len;
    }
}

impl WeightElement for bf16 {
    const NAME: &'static str = "bf16";

    #[inline]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }

    #[inline]
    fn from_f32(value: f32) -> Self {
        bf16::from_f32(value)
    }

    #[inline]
    fn axpy4(acc: &mut [f32], rows: [&[Self]; 4], coeff: [f32; 4]) {
        if !simd::axpy4_bf16(simd_level(), acc, rows, coeff) {
            half_axpy4(acc, rows, coeff);
        }
    }

    #[inline]
    fn axpy1(acc: &mut [f32], row: &[Self], coeff: f32) {
        if !simd::axpy1_bf16(simd_level(), acc, row, coeff) {
            half_axpy1(acc, row, coeff);
        }
    }
}

impl WeightElement for f16 {
    const NAME: &'static str = "f16";

    #[inline]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }

    #[inline]
    fn from_f32(value: f32) -> Self {
        f16::from_f32(value)
    }

    #[inline]
    fn axpy4(acc: &mut [f32], rows: [&[Self]; 4], coeff: [f32; 4]) {
        if !simd::axpy4_f16(simd_level(), acc, rows, coeff) {
            half_axpy4(acc, rows, coeff);
        }
    }

    #[inline]
    fn axpy1(acc: &mut [f32], row: &[Self], coeff: f32) {
        if !simd::axpy1_f16(simd_level(), acc, row, coeff) {
            half_axpy1(acc, row, coeff);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axpy4_matches_scalar_on_odd_lengths() {
        for n in [1usize, 7, 8, 9, 63, 64, 65, 130] {
            let rows = crate::simd::small_integer_rows(n);
            let coeff = [0.5, -1.25, 2.0, 0.125];
            let mut acc: Vec<f32> = (0..n).map(|i| i as f32).collect();
            let mut expect = acc.clone();
            for i in 0..n {
                for r in 0..4 {
                    expect[i] += coeff[r] * rows[r][i];
                }
            }
            f32::axpy4(&mut acc, [&rows[0], &rows[1], &rows[2], &rows[3]], coeff);
            assert_eq!(acc, expect, "n = {n}");

            let hrows: Vec<Vec<bf16>> = rows
                .iter()
                .map(|r| r.iter().map(|&v| bf16::from_f32(v)).collect())
                .collect();
            let mut hacc: Vec<f32> = (0..n).map(|i| i as f32).collect();
            bf16::axpy4(
                &mut hacc,
                [&hrows[0], &hrows[1], &hrows[2], &hrows[3]],
                coeff,
            );
            // small integers are exact in bf16, so the result is exact too
            assert_eq!(hacc, expect, "bf16 n = {n}");

            let frows: Vec<Vec<f16>> = rows
                .iter()
                .map(|r| r.iter().map(|&v| f16::from_f32(v)).collect())
                .collect();
            let mut facc: Vec<f32> = (0..n).map(|i| i as f32).collect();
            f16::axpy1(&mut facc, &frows[1], coeff[1]);
            for i in 0..n {
                assert_eq!(
                    facc[i],
                    i as f32 + coeff[1] * rows[1][i],
                    "f16 n = {n} i = {i}"
                );
            }
        }
    }
}
