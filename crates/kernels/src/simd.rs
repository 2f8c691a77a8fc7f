//! Run-time dispatched AXPY loops: the one place the CPU kernels use the host's vector units.
//!
//! The workspace builds for baseline x86-64 (SSE2, no FMA), which is what a user's
//! `cargo build` gives unless they set `target-cpu`. Decode GEMVs are bound by memory
//! bandwidth only when the arithmetic keeps up: with 4-wide SSE2 and a separate multiply and
//! add, a bf16 GEMV (widen, multiply, add per weight) ran at 34–53 % of the copy bandwidth on
//! a 2-core AVX-512 machine where f32 reached 83–88 % (docs/kernels.md). So the AXPY loops
//! are compiled three times — portable, AVX2 + FMA, AVX-512 — from the same Rust source, and
//! [`simd_level`] picks the widest the CPU reports (`is_x86_feature_detected!`, once per
//! process). The loops are plain element-wise Rust (`f32::mul_add`, bf16 widened by a 16-bit
//! shift) that LLVM vectorises for the enabled features; there are no intrinsics, and the
//! only `unsafe` is the call into a `#[target_feature]` function after the detection says the
//! features exist.
//!
//! Results: the AVX2 and AVX-512 loops fuse each multiply–add (one rounding), the portable
//! loop rounds the product and the sum separately, so the levels can differ in the last bit;
//! each level is deterministic. `SPARSITY_KERNELS_SIMD=portable|avx2|avx512` (read once)
//! lowers the level for A/B measurements; a level the CPU lacks, or an unknown value, is
//! ignored with a `tracing` warning.

use std::sync::OnceLock;

use half::{bf16, f16};
use serde::{Deserialize, Serialize};

/// The vector instruction set the CPU kernels run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SimdLevel {
    /// The build's baseline (SSE2 on x86-64; whatever the target enables elsewhere).
    Portable,
    /// x86-64 AVX2 with FMA (8 f32 lanes).
    Avx2,
    /// x86-64 AVX-512F (16 f32 lanes).
    Avx512,
}

impl SimdLevel {
    /// Name used in benchmark JSON and in `SPARSITY_KERNELS_SIMD`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Portable => "portable",
            Self::Avx2 => "avx2",
            Self::Avx512 => "avx512",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "portable" => Some(Self::Portable),
            "avx2" => Some(Self::Avx2),
            "avx512" => Some(Self::Avx512),
            _ => None,
        }
    }
}

/// The widest level this CPU supports (detected once per process).
pub fn detected_simd_level() -> SimdLevel {
    static DETECTED: OnceLock<SimdLevel> = OnceLock::new();
    *DETECTED.get_or_init(detect)
}

fn detect() -> SimdLevel {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
        {
            return SimdLevel::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return SimdLevel::Avx2;
        }
    }
    SimdLevel::Portable
}

/// The level the kernels use: [`detected_simd_level`], lowered by `SPARSITY_KERNELS_SIMD`.
pub fn simd_level() -> SimdLevel {
    static LEVEL: OnceLock<SimdLevel> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        let detected = detected_simd_level();
        match std::env::var("SPARSITY_KERNELS_SIMD") {
            Err(_) => detected,
            Ok(value) => match SimdLevel::parse(&value) {
                Some(wanted) if wanted <= detected => wanted,
                Some(wanted) => {
                    tracing::warn!(
                        requested = wanted.name(),
                        detected = detected.name(),
                        "SPARSITY_KERNELS_SIMD asks for a level this CPU lacks; using the detected one"
                    );
                    detected
                }
                None => {
                    tracing::warn!(
                        value = value.as_str(),
                        "SPARSITY_KERNELS_SIMD is not one of portable, avx2, avx512; ignored"
                    );
                    detected
                }
            },
        }
    })
}

#[inline(always)]
fn widen_bf16(v: bf16) -> f32 {
    f32::from_bits(u32::from(v.to_bits()) << 16)
}

/// IEEE half to single without branches, so the loops vectorise: normal numbers rebias the
/// exponent, subnormals are scaled through a float subtraction (F. Giesen's `half_to_float`),
/// infinities and NaNs keep the all-ones exponent. Equal to `f16::to_f32` for every non-NaN
/// bit pattern (checked exhaustively below); NaNs stay NaNs.
#[inline(always)]
fn widen_f16(v: f16) -> f32 {
    const EXP_MASK: u32 = 0x7c00 << 13;
    const MAGIC: u32 = 113 << 23;
    let h = u32::from(v.to_bits());
    let shifted = (h & 0x7fff) << 13;
    let exp = shifted & EXP_MASK;
    let normal = shifted + ((127 - 15) << 23);
    let inf_nan = normal + ((128 - 16) << 23);
    let subnormal = (f32::from_bits(shifted + MAGIC) - f32::from_bits(MAGIC)).to_bits();
    let magnitude = if exp == EXP_MASK {
        inf_nan
    } else if exp == 0 {
        subnormal
    } else {
        normal
    };
    f32::from_bits(magnitude | ((h & 0x8000) << 16))
}

/// `acc[i] += Σ_r c[r] · widen(rows[r][i])`, fused multiply–adds in row order.
#[inline(always)]
fn axpy4_body<T: Copy>(acc: &mut [f32], rows: [&[T]; 4], c: [f32; 4], widen: impl Fn(T) -> f32) {
    let n = acc.len();
    let (r0, r1, r2, r3) = (&rows[0][..n], &rows[1][..n], &rows[2][..n], &rows[3][..n]);
    for i in 0..n {
        let mut a = acc[i];
        a = widen(r0[i]).mul_add(c[0], a);
        a = widen(r1[i]).mul_add(c[1], a);
        a = widen(r2[i]).mul_add(c[2], a);
        a = widen(r3[i]).mul_add(c[3], a);
        acc[i] = a;
    }
}

/// `acc[i] += c · widen(row[i])`, fused.
#[inline(always)]
fn axpy1_body<T: Copy>(acc: &mut [f32], row: &[T], c: f32, widen: impl Fn(T) -> f32) {
    let n = acc.len();
    for (a, &w) in acc.iter_mut().zip(&row[..n]) {
        *a = widen(w).mul_add(c, *a);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    macro_rules! level {
        ($module:ident, $features:literal) => {
            pub(super) mod $module {
                use super::super::{axpy1_body, axpy4_body, widen_bf16, widen_f16};
                use half::{bf16, f16};

                #[target_feature(enable = $features)]
                pub(in crate::simd) fn axpy4_f32(acc: &mut [f32], rows: [&[f32]; 4], c: [f32; 4]) {
                    axpy4_body(acc, rows, c, |v| v);
                }

                #[target_feature(enable = $features)]
                pub(in crate::simd) fn axpy1_f32(acc: &mut [f32], row: &[f32], c: f32) {
                    axpy1_body(acc, row, c, |v| v);
                }

                #[target_feature(enable = $features)]
                pub(in crate::simd) fn axpy4_bf16(
                    acc: &mut [f32],
                    rows: [&[bf16]; 4],
                    c: [f32; 4],
                ) {
                    axpy4_body(acc, rows, c, widen_bf16);
                }

                #[target_feature(enable = $features)]
                pub(in crate::simd) fn axpy1_bf16(acc: &mut [f32], row: &[bf16], c: f32) {
                    axpy1_body(acc, row, c, widen_bf16);
                }

                #[target_feature(enable = $features)]
                pub(in crate::simd) fn axpy4_f16(acc: &mut [f32], rows: [&[f16]; 4], c: [f32; 4]) {
                    axpy4_body(acc, rows, c, widen_f16);
                }

                #[target_feature(enable = $features)]
                pub(in crate::simd) fn axpy1_f16(acc: &mut [f32], row: &[f16], c: f32) {
                    axpy1_body(acc, row, c, widen_f16);
                }
            }
        };
    }

    level!(avx2, "avx2,fma");
    level!(avx512, "avx512f,avx2,fma");
}

/// Dispatches one AXPY to the level's compiled copy; false when the level is portable (the
/// caller runs its own portable loop). The level is capped at the detected one, so no caller
/// can reach a copy the CPU cannot run.
macro_rules! dispatch {
    ($level:expr, $kernel:ident($($arg:expr),*)) => {{
        match $level.min(detected_simd_level()) {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the level is at most `detected_simd_level()`, which is Avx512 only when
            // avx512f, avx2 and fma were detected on this CPU.
            SimdLevel::Avx512 => {
                #[allow(unsafe_code)]
                unsafe {
                    x86::avx512::$kernel($($arg),*)
                };
                true
            }
            #[cfg(target_arch = "x86_64")]
            // SAFETY: Avx2 is returned only when avx2 and fma were detected.
            SimdLevel::Avx2 => {
                #[allow(unsafe_code)]
                unsafe {
                    x86::avx2::$kernel($($arg),*)
                };
                true
            }
            _ => false,
        }
    }};
}

/// Runs `acc += Σ c[r]·rows[r]` at `level` (capped at the detected level); false when the
/// level is portable and nothing ran.
#[inline]
pub(crate) fn axpy4_f32(level: SimdLevel, acc: &mut [f32], rows: [&[f32]; 4], c: [f32; 4]) -> bool {
    dispatch!(level, axpy4_f32(acc, rows, c))
}

/// See [`axpy4_f32`].
#[inline]
pub(crate) fn axpy1_f32(level: SimdLevel, acc: &mut [f32], row: &[f32], c: f32) -> bool {
    dispatch!(level, axpy1_f32(acc, row, c))
}

/// See [`axpy4_f32`].
#[inline]
pub(crate) fn axpy4_bf16(
    level: SimdLevel,
    acc: &mut [f32],
    rows: [&[bf16]; 4],
    c: [f32; 4],
) -> bool {
    dispatch!(level, axpy4_bf16(acc, rows, c))
}

/// See [`axpy4_f32`].
#[inline]
pub(crate) fn axpy1_bf16(level: SimdLevel, acc: &mut [f32], row: &[bf16], c: f32) -> bool {
    dispatch!(level, axpy1_bf16(acc, row, c))
}

/// See [`axpy4_f32`].
#[inline]
pub(crate) fn axpy4_f16(level: SimdLevel, acc: &mut [f32], rows: [&[f16]; 4], c: [f32; 4]) -> bool {
    dispatch!(level, axpy4_f16(acc, rows, c))
}

/// See [`axpy4_f32`].
#[inline]
pub(crate) fn axpy1_f16(level: SimdLevel, acc: &mut [f32], row: &[f16], c: f32) -> bool {
    dispatch!(level, axpy1_f16(acc, row, c))
}

/// Four rows of `n` small integers (exact in f32, bf16 and f16, and so are their products and sums
/// with the tests' coefficients): kernels at any level must match a scalar loop bit for bit.
#[cfg(test)]
pub(crate) fn small_integer_rows(n: usize) -> Vec<Vec<f32>> {
    (0..4)
        .map(|r| {
            (0..n)
                .map(|i| ((i * 7 + r * 3) % 11) as f32 - 5.0)
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn levels() -> Vec<SimdLevel> {
        [SimdLevel::Portable, SimdLevel::Avx2, SimdLevel::Avx512]
            .into_iter()
            .filter(|&l| l <= detected_simd_level())
            .collect()
    }

    #[test]
    fn every_available_level_matches_a_scalar_reference() {
        // values with few significant bits: every product and sum is exact, so fused and
        // unfused loops must agree bit for bit with the reference
        for n in [0usize, 1, 7, 8, 15, 16, 17, 63, 64, 65, 130, 1000] {
            let rows = small_integer_rows(n);
            let hrows: Vec<Vec<bf16>> = rows
                .iter()
                .map(|r| r.iter().map(|&v| bf16::from_f32(v)).collect())
                .collect();
            let frows: Vec<Vec<f16>> = rows
                .iter()
                .map(|r| r.iter().map(|&v| f16::from_f32(v)).collect())
                .collect();
            let c = [0.5, -1.25, 2.0, 0.125];
            let start: Vec<f32> = (0..n).map(|i| i as f32 * 0.25).collect();
            let mut expect4 = start.clone();
            let mut expect1 = start.clone();
            for i in 0..n {
                for r in 0..4 {
                    expect4[i] += c[r] * rows[r][i];
                }
                expect1[i] += c[2] * rows[2][i];
            }
            for level in levels() {
                let mut a = start.clone();
                let ran = axpy4_f32(level, &mut a, [&rows[0], &rows[1], &rows[2], &rows[3]], c);
                assert_eq!(ran, level != SimdLevel::Portable);
                if ran {
                    assert_eq!(a, expect4, "f32 axpy4 {level:?} n = {n}");
                }
                let mut a = start.clone();
                if axpy1_f32(level, &mut a, &rows[2], c[2]) {
                    assert_eq!(a, expect1, "f32 axpy1 {level:?} n = {n}");
                }
                let mut a = start.clone();
                if axpy4_bf16(
                    level,
                    &mut a,
                    [&hrows[0], &hrows[1], &hrows[2], &hrows[3]],
                    c,
                ) {
                    assert_eq!(a, expect4, "bf16 axpy4 {level:?} n = {n}");
                }
                let mut a = start.clone();
                if axpy1_bf16(level, &mut a, &hrows[2], c[2]) {
                    assert_eq!(a, expect1, "bf16 axpy1 {level:?} n = {n}");
                }
                let mut a = start.clone();
                if axpy4_f16(
                    level,
                    &mut a,
                    [&frows[0], &frows[1], &frows[2], &frows[3]],
                    c,
                ) {
                    assert_eq!(a, expect4, "f16 axpy4 {level:?} n = {n}");
                }
                let mut a = start.clone();
                if axpy1_f16(level, &mut a, &frows[2], c[2]) {
                    assert_eq!(a, expect1, "f16 axpy1 {level:?} n = {n}");
                }
            }
        }
    }

    #[test]
    fn f16_widening_matches_half_on_every_bit_pattern() {
        for bits in 0..=u16::MAX {
            let h = f16::from_bits(bits);
            let (ours, theirs) = (widen_f16(h), h.to_f32());
            if theirs.is_nan() {
                assert!(ours.is_nan(), "{bits:#06x}");
            } else {
                assert_eq!(
                    ours.to_bits(),
                    theirs.to_bits(),
                    "{bits:#06x}: {ours} vs {theirs}"
                );
            }
        }
        // and through the vectorised loops: subnormals, infinities and signed zeros in a row
        let row: Vec<f16> = [
            0x0001u16, 0x03ff, 0x8001, 0x7c00, 0xfc00, 0x0000, 0x8000, 0x3c00,
        ]
        .into_iter()
        .cycle()
        .take(37)
        .map(f16::from_bits)
        .collect();
        for level in levels().into_iter().filter(|&l| l != SimdLevel::Portable) {
            let mut acc = vec![0.0f32; row.len()];
            assert!(axpy1_f16(level, &mut acc, &row, 1.0));
            for (a, h) in acc.iter().zip(&row) {
                assert_eq!(
                    a.to_bits(),
                    (0.0f32 + h.to_f32()).to_bits(),
                    "{level:?} {h:?}"
                );
            }
        }
    }

    #[test]
    fn fused_levels_round_once() {
        // 1 + 2^-24 · (1 + 2^-23)... pick a product whose exact value needs more than 24 bits:
        // (1 + 2^-12)^2 = 1 + 2^-11 + 2^-24; added to -1 the fused result keeps 2^-24
        let x = 1.0f32 + f32::EPSILON * 2048.0; // 1 + 2^-12
        for level in levels().into_iter().filter(|&l| l != SimdLevel::Portable) {
            let mut acc = vec![-1.0f32; 17];
            let row = vec![x; 17];
            assert!(axpy1_f32(level, &mut acc, &row, x));
            let expect = 2.0f32.powi(-11) + 2.0f32.powi(-24);
            assert!(acc.iter().all(|&v| v == expect), "{level:?}: {acc:?}");
        }
    }

    #[test]
    fn level_names_parse_back() {
        for level in [SimdLevel::Portable, SimdLevel::Avx2, SimdLevel::Avx512] {
            assert_eq!(SimdLevel::parse(level.name()), Some(level));
        }
        assert_eq!(SimdLevel::parse("sse9"), None);
        assert!(simd_level() <= detected_simd_level());
    }
}
