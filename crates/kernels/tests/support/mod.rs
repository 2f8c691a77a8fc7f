//! Helpers shared by the GPU-kernel tests of `sparsity-kernels` (lavapipe) and
//! `sparsity-kernels-cuda` (CUDA), which include this file by path.

use ndarray::{Array1, Array2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A seeded random `Wᵀ` [n_in, n_out] and `x` [n_in], entries uniform in [−1, 1).
pub fn case(n_out: usize, n_in: usize, seed: u64) -> (Array2<f32>, Vec<f32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let w_t = Array2::from_shape_simple_fn((n_in, n_out), || rng.random_range(-1.0f32..1.0));
    let x = (0..n_in).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    (w_t, x)
}

/// `got` within `rel` relative to the per-output scale Σ|W_ij x_j| of the f64 reference `want`
/// (as `reference_gemv_masked` returns it).
pub fn check(got: &[f32], want: &(Array1<f64>, Array1<f64>), rel: f64, what: &str) {
    let (y, scale) = want;
    assert_eq!(got.len(), y.len(), "{what}");
    for (i, g) in got.iter().enumerate() {
        let err = (f64::from(*g) - y[i]).abs();
        assert!(
            err <= rel * scale[i] + 1e-30,
            "{what} [{i}]: {g} vs {}",
            y[i]
        );
    }
}
