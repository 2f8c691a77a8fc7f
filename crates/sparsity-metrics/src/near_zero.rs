//! Fraction of near-zero activations relative to each neuron's own scale.
//!
//! For neuron j with scale `s_j = mean_t |a_tj|` (from a first pass, e.g.
//! [`NeuronStats::mean_abs`](crate::NeuronStats::mean_abs)), an activation is near zero when
//! `|a_tj| ≤ ε · s_j` (default ε = 0.1). Per neuron: `f_j = #{t : |a_tj| ≤ ε s_j} / T`.
//!
//! A global threshold (the traditional measure) calls every activation of a small-scale
//! neuron "zero" and none of a large-scale one; relative to the neuron's own scale the measure
//! is invariant to per-neuron rescaling and discriminates peaked (mostly ≈ 0 with rare large
//! values, f_j high) from dense (f_j ≈ 0) neurons. Two passes over the data: scales first,
//! counts second; exact, mergeable counts.

use ndarray::{Array1, ArrayView1, ArrayView2, Axis, s};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{MetricsError, Result};
use crate::neuron_stats::Activation;

/// Counts of near-zero activations per neuron, against fixed per-neuron limits `ε·s_j`.
#[derive(Debug, Clone, PartialEq)]
pub struct NearZeroCounter {
    epsilon: f64,
    limits: Vec<f64>,
    counts: Vec<u64>,
    tokens: u64,
}

/// Summary of the near-zero fractions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NearZeroSummary {
    /// ε.
    pub epsilon: f64,
    /// What the scale is (`"mean_abs"`).
    pub scale: String,
    /// Fraction of all activations that are near zero (= mean over neurons of f_j).
    pub fraction: f64,
    /// Largest per-neuron fraction.
    pub max_neuron_fraction: f64,
    /// Number of neurons near zero on more than half of the tokens.
    pub neurons_mostly_near_zero: usize,
}

impl NearZeroCounter {
    /// Limits `ε·scales[j]`; ε must be finite and ≥ 0, scales finite and ≥ 0. `scales`: `[neurons]`.
    pub fn new(scales: ArrayView1<f64>, epsilon: f64) -> Result<Self> {
        if !(epsilon.is_finite() && epsilon >= 0.0) {
            return Err(MetricsError::InvalidOption {
                name: "near_zero_epsilon".into(),
                value: epsilon.to_string(),
                reason: "must be finite and >= 0".into(),
            });
        }
        crate::error::check_values("neuron scales", scales)?;
        if let Some(i) = scales.iter().position(|&s| s < 0.0) {
            return Err(MetricsError::InvalidOption {
                name: format!("scales[{i}]"),
                value: scales[i].to_string(),
                reason: "a scale must be >= 0".into(),
            });
        }
        Ok(Self {
            epsilon,
            limits: scales.iter().map(|s| epsilon * s).collect(),
            counts: vec![0; scales.len()],
            tokens: 0,
        })
    }

    /// Counts one `[tokens, neurons]` batch (parallel over row chunks).
    pub fn update<A: Activation>(&mut self, batch: ArrayView2<'_, A>) -> Result<()> {
        let n = self.limits.len();
        if batch.ncols() != n {
            return Err(MetricsError::ShapeMismatch {
                what: "near-zero batch".into(),
                expected: n,
                got: batch.shape().to_vec(),
            });
        }
        let rows = batch.nrows();
        let chunk = ((1usize << 21) / n).max(1);
        let starts: Vec<usize> = (0..rows).step_by(chunk).collect();
        // Compared in the element's precision: |a| ≤ ε·s_j (f64) exactly when |a| is at most
        // the largest magnitude of that type not above it, and u32 lanes (a chunk has at most
        // 2²¹ rows): the loop vectorises.
        let limits: Vec<A::Mag> = self.limits.iter().map(|&l| A::mag_at_most(l)).collect();
        let count_row = |c: &mut [u32], row: &[A]| {
            for ((c, &l), &x) in c.iter_mut().zip(&limits).zip(row) {
                *c += u32::from(x.mag() <= l);
            }
        };
        let parts: Vec<Vec<u32>> = starts
            .par_iter()
            .map(|&r0| {
                let mut c = vec![0u32; n];
                let part = batch.slice(s![r0..(r0 + chunk).min(rows), ..]);
                match part.as_slice() {
                    Some(flat) => flat.chunks_exact(n).for_each(|row| count_row(&mut c, row)),
                    None => {
                        let mut buf = Vec::with_capacity(n);
                        for row in part.axis_iter(Axis(0)) {
                            buf.clear();
                            buf.extend(row.iter().copied());
                            count_row(&mut c, &buf);
                        }
                    }
                }
                c
            })
            .collect();
        for p in parts {
            for (a, b) in self.counts.iter_mut().zip(p) {
                *a += u64::from(b);
            }
        }
        self.tokens += rows as u64;
        Ok(())
    }

    /// Adds the counts of another counter built with the same limits.
    pub fn merge(&mut self, other: &NearZeroCounter) -> Result<()> {
        if other.limits != self.limits {
            return Err(MetricsError::ShapeMismatch {
                what: "near-zero merge (different limits)".into(),
                expected: self.limits.len(),
                got: vec![other.limits.len()],
            });
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.tokens += other.tokens;
        Ok(())
    }

    /// Per-neuron near-zero fractions `f_j`. `[neurons]`
    pub fn fractions(&self) -> Result<Array1<f64>> {
        if self.tokens == 0 {
            return Err(MetricsError::Empty {
                what: "near-zero counter: no tokens seen".into(),
            });
        }
        let t = self.tokens as f64;
        Ok(self.counts.iter().map(|&c| c as f64 / t).collect())
    }

    /// Summary over all neurons.
    pub fn summary(&self) -> Result<NearZeroSummary> {
        let f = self.fractions()?;
        let total: u64 = self.counts.iter().sum();
        Ok(NearZeroSummary {
            epsilon: self.epsilon,
            scale: "mean_abs".into(),
            fraction: total as f64 / (self.tokens as f64 * self.counts.len() as f64),
            max_neuron_fraction: f.iter().copied().fold(0.0, f64::max),
            neurons_mostly_near_zero: f.iter().filter(|&&x| x > 0.5).count(),
        })
    }
}

#[cfg(test)]
mod tests {
    use ndarray::{Array2, ShapeBuilder};

    use super::*;

    /// Counts `|a| ≤ ε·s_j` in f64, element by element.
    fn reference(x: &Array2<f64>, limits: &[f64]) -> Vec<u64> {
        (0..x.ncols())
            .map(|j| x.column(j).iter().filter(|a| a.abs() <= limits[j]).count() as u64)
            .collect()
    }

    /// f32 and f64 batches, contiguous and column-major, with magnitudes exactly at, just above
    /// and just below each neuron's limit (where a comparison in the wrong precision or with
    /// `<` would differ), give the f64 reference counts.
    #[test]
    fn counts_match_the_f64_comparison_at_the_limits() {
        let (rows, n) = (300, 11);
        let scales: Vec<f64> = (0..n).map(|j| 0.37 * (j as f64 + 1.0)).collect();
        let eps = 0.1;
        let limits: Vec<f64> = scales.iter().map(|s| eps * s).collect();
        let x32 = Array2::from_shape_fn((rows, n), |(i, j)| {
            let at = limits[j] as f32;
            let v = match i % 6 {
                0 => at,
                1 => at.next_up(),
                2 => at.next_down(),
                3 => 0.0,
                4 => -at,
                _ => (i as f32 * 0.013).sin() * 0.2,
            };
            if i % 2 == 0 { v } else { -v }
        });
        let x64 = x32.mapv(f64::from);
        let want = reference(&x64, &limits);
        assert!(want.iter().all(|&c| c > 0 && c < rows as u64));
        let scales = Array1::from(scales);
        let count32 = |b: ArrayView2<'_, f32>| {
            let mut c = NearZeroCounter::new(scales.view(), eps).unwrap_or_else(|e| panic!("{e}"));
            c.update(b).unwrap_or_else(|e| panic!("{e}"));
            c.counts.clone()
        };
        assert_eq!(count32(x32.view()), want, "f32, contiguous");
        let mut fortran = Array2::<f32>::zeros((rows, n).f());
        fortran.assign(&x32);
        assert_eq!(count32(fortran.view()), want, "f32, column-major");
        let mut c = NearZeroCounter::new(scales.view(), eps).unwrap_or_else(|e| panic!("{e}"));
        c.update(x64.view()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.counts, want, "f64");
        assert_eq!(c.tokens, rows as u64);
    }
}
