//! Dense linear algebra SparseGPT needs, blocked and parallel: a Cholesky factorisation and
//! the upper Cholesky factor of an inverse, U = chol(H⁻¹, upper), computed without forming H⁻¹.
//!
//! With P the exchange (index-reversal) matrix and P H P = L̃ L̃ᵀ, H = R Rᵀ where R = P L̃ P is
//! upper triangular, so H⁻¹ = R⁻ᵀ R⁻¹ = Uᵀ U with U = R⁻¹ = P L̃⁻¹ P — upper triangular with a
//! positive diagonal, hence exactly the upper Cholesky factor of H⁻¹ (which the reference
//! computes as `cholesky(cholesky_inverse(cholesky(H)), upper=True)`, twice the flops).

use ndarray::{Array2, ArrayView2, ArrayViewMut2, Axis, LinalgScalar, linalg::general_mat_mul, s};
use rayon::prelude::*;

/// Floating-point element types the SparseGPT solver runs in (f32, like the reference, or f64).
pub trait Real:
    LinalgScalar + PartialOrd + Send + Sync + std::fmt::Debug + std::fmt::Display + 'static
{
    /// Square root.
    fn sqrt(self) -> Self;
    /// Conversion from f64 (rounding).
    fn from_f64(v: f64) -> Self;
    /// Conversion to f64 (exact).
    fn to_f64(self) -> f64;
    /// Conversion from f32 (exact).
    fn from_f32(v: f32) -> Self;
    /// Conversion to f32 (rounding).
    fn to_f32(self) -> f32;
    /// Total order for sorting.
    fn total_cmp(&self, other: &Self) -> std::cmp::Ordering;
}

impl Real for f32 {
    fn sqrt(self) -> Self {
        f32::sqrt(self)
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_f32(v: f32) -> Self {
        v
    }
    fn to_f32(self) -> f32 {
        self
    }
    fn total_cmp(&self, other: &Self) -> std::cmp::Ordering {
        f32::total_cmp(self, other)
    }
}

impl Real for f64 {
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
    fn from_f64(v: f64) -> Self {
        v
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f32(v: f32) -> Self {
        v as f64
    }
    fn to_f32(self) -> f32 {
        self as f32
    }
    fn total_cmp(&self, other: &Self) -> std::cmp::Ordering {
        f64::total_cmp(self, other)
    }
}

const NB: usize = 96;

/// In-place lower Cholesky factorisation A = L Lᵀ (only the lower triangle of `a` is read;
/// the strict upper triangle is left untouched). Returns the pivot index where the matrix
/// stopped being positive definite.
pub(crate) fn cholesky_lower<T: Real>(a: &mut Array2<T>) -> Result<(), usize> {
    let n = a.nrows();
    let mut k0 = 0;
    while k0 < n {
        let k1 = (k0 + NB).min(n);
        // Diagonal block, unblocked (earlier panels are already subtracted).
        for j in k0..k1 {
            let mut d = a[[j, j]];
            for p in k0..j {
                d = d - a[[j, p]] * a[[j, p]];
            }
            if d.partial_cmp(&T::zero()) != Some(std::cmp::Ordering::Greater) {
                return Err(j);
            }
            let ljj = d.sqrt();
            a[[j, j]] = ljj;
            for i in j + 1..k1 {
                let mut v = a[[i, j]];
                for p in k0..j {
                    v = v - a[[i, p]] * a[[j, p]];
                }
                a[[i, j]] = v / ljj;
            }
        }
        if k1 < n {
            let lkk = a.slice(s![k0..k1, k0..k1]).to_owned();
            // Panel: L21 = A21 · L11⁻ᵀ, row by row.
            a.slice_mut(s![k1.., k0..k1])
                .axis_iter_mut(Axis(0))
                .into_par_iter()
                .for_each(|mut row| {
                    for j in 0..row.len() {
                        let mut v = row[j];
                        for p in 0..j {
                            v = v - row[p] * lkk[[j, p]];
                        }
                        row[j] = v / lkk[[j, j]];
                    }
                });
            // Trailing update of the lower triangle: A22 -= L21 L21ᵀ.
            let panel = a.slice(s![k1.., k0..k1]).to_owned();
            let mut a22 = a.slice_mut(s![k1.., k1..]);
            syrk_lower_sub(&mut a22, panel.view());
        }
        k0 = k1;
    }
    Ok(())
}

/// C (lower triangle, row blocks in parallel) -= P Pᵀ.
fn syrk_lower_sub<T: Real>(c: &mut ArrayViewMut2<T>, p: ArrayView2<T>) {
    let rb = 64;
    c.axis_chunks_iter_mut(Axis(0), rb)
        .into_par_iter()
        .enumerate()
        .for_each(|(ci, mut chunk)| {
            let r0 = ci * rb;
            let r1 = r0 + chunk.nrows();
            let lhs = p.slice(s![r0..r1, ..]);
            let rhs = p.slice(s![..r1, ..]);
            let mut dst = chunk.slice_mut(s![.., ..r1]);
            general_mat_mul(T::zero() - T::one(), &lhs, &rhs.t(), T::one(), &mut dst);
        });
}

/// X = L⁻¹ for a lower-triangular L (strict upper triangle of `l` ignored), column blocks in
/// parallel with blocked forward substitution.
pub(crate) fn lower_triangular_inverse<T: Real>(l: ArrayView2<T>) -> Array2<T> {
    let n = l.nrows();
    let w = 64;
    let starts: Vec<usize> = (0..n).step_by(w).collect();
    let blocks: Vec<(usize, Array2<T>)> = starts
        .into_par_iter()
        .map(|c0| {
            let c1 = (c0 + w).min(n);
            let width = c1 - c0;
            let m = n - c0;
            // Y [m, width] solves L[c0.., c0..] Y = I[c0.., c0..c1].
            let mut y = Array2::<T>::zeros((m, width));
            let mut r0 = 0;
            while r0 < m {
                let r1 = (r0 + NB).min(m);
                let mut rhs = Array2::<T>::zeros((r1 - r0, width));
                for i in r0..r1 {
                    if i < width {
                        rhs[[i - r0, i]] = T::one();
                    }
                }
                if r0 > 0 {
                    let lhs = l.slice(s![c0 + r0..c0 + r1, c0..c0 + r0]);
                    general_mat_mul(
                        T::zero() - T::one(),
                        &lhs,
                        &y.slice(s![..r0, ..]),
                        T::one(),
                        &mut rhs,
                    );
                }
                for i in 0..r1 - r0 {
                    let gi = c0 + r0 + i;
                    let diag = l[[gi, gi]];
                    for p in 0..i {
                        let lip = l[[gi, c0 + r0 + p]];
                        if lip != T::zero() {
                            for c in 0..width {
                                let v = rhs[[p, c]];
                                rhs[[i, c]] = rhs[[i, c]] - lip * v;
                            }
                        }
                    }
                    for c in 0..width {
                        rhs[[i, c]] = rhs[[i, c]] / diag;
                    }
                }
                y.slice_mut(s![r0..r1, ..]).assign(&rhs);
                r0 = r1;
            }
            (c0, y)
        })
        .collect();
    let mut x = Array2::<T>::zeros((n, n));
    for (c0, y) in blocks {
        let width = y.ncols();
        x.slice_mut(s![c0.., c0..c0 + width]).assign(&y);
    }
    x
}

/// U = chol(H⁻¹, upper) for a symmetric positive-definite H (only its lower triangle is read,
/// after index reversal, i.e. effectively its upper triangle). Err(pivot) if H is not PD.
pub(crate) fn upper_cholesky_of_inverse<T: Real>(h: ArrayView2<T>) -> Result<Array2<T>, usize> {
    let n = h.nrows();
    let mut flipped = h.slice(s![..;-1, ..;-1]).to_owned();
    cholesky_lower(&mut flipped).map_err(|p| n - 1 - p)?;
    let inv = lower_triangular_inverse(flipped.view());
    Ok(inv.slice(s![..;-1, ..;-1]).to_owned())
}
