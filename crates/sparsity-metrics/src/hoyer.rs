//! Hoyer sparsity (Hoyer, "Non-negative Matrix Factorization with Sparseness Constraints",
//! JMLR 2004).
//!
//! `H(v) = (√n − ‖v‖₁/‖v‖₂) / (√n − 1)`, in `[0, 1]`: 0 when all |v_i| are equal, 1 for a
//! one-hot vector. Unlike percentile sparsity it is not fixed by construction; unlike the
//! fixed-threshold count it is scale-invariant, so it compares layers and models whose
//! activation scales differ. It discriminates how concentrated the mass of `v` is.

use ndarray::ArrayView1;

use crate::error::{MetricsError, Result, check_values};

/// Hoyer sparsity of `v` (`[n]`). Errors for n < 2 (the formula divides by √n − 1) and for
/// an all-zero vector (0/0): no value is made up.
pub fn hoyer_sparsity(v: ArrayView1<f64>) -> Result<f64> {
    check_values("per-neuron values", v)?;
    let n = v.len();
    if n < 2 {
        return Err(MetricsError::Undefined {
            measure: "Hoyer sparsity".into(),
            what: format!("{n} value(s)"),
            reason: "needs at least 2 values".into(),
        });
    }
    let l1: f64 = v.iter().map(|x| x.abs()).sum();
    let l2 = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if l2 == 0.0 {
        return Err(MetricsError::Undefined {
            measure: "Hoyer sparsity".into(),
            what: format!("an all-zero vector of {n} values"),
            reason: "‖v‖₂ = 0".into(),
        });
    }
    let rn = (n as f64).sqrt();
    Ok(((rn - l1 / l2) / (rn - 1.0)).clamp(0.0, 1.0))
}
