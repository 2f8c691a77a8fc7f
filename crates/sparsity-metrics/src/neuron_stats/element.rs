//! The activation element types: f32 and f64, accumulated in f64, with their magnitudes
//! compared in the element's own precision.

use crate::activation_sparsity::ActivationHistogram;

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
