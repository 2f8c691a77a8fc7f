//! `SparseLinear`: a bias-free linear layer `y = W · mask(x)` that stores `Wᵀ` [in, out]
//! and a calibrated threshold τ, for sparse decoding (TEAL, arXiv 2408.14690).
//!
//! Build it once from a PyTorch-layout weight `W` [out, in] (transposed and converted
//! here, a one-off cost), then call [`SparseLinear::forward`] per decode step.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2};

use crate::element::WeightElement;
use crate::error::{KernelError, Result};
use crate::gemv::{
    GemvConfig, GemvStats, check_tau, gemm_masked_small_batch_into, gemv_dense_into,
    gemv_masked_into,
};

/// A linear map with its weight stored transposed for masked GEMV.
#[derive(Debug, Clone)]
pub struct SparseLinear<T: WeightElement> {
    /// `Wᵀ` [in, out], contiguous row-major.
    weight_t: Array2<T>,
    /// Inputs with `|x_j| <= threshold` are skipped by [`SparseLinear::forward`].
    threshold: f32,
    config: GemvConfig,
}

impl<T: WeightElement> SparseLinear<T> {
    /// From `W` [out, in] in f32 (the `nn.Linear.weight` layout), converting to `T`.
    pub fn from_weight(weight: ArrayView2<'_, f32>, threshold: f32) -> Result<Self> {
        let (n_out, n_in) = weight.dim();
        if n_out == 0 || n_in == 0 {
            return Err(KernelError::EmptyTensor {
                tensor: "weight",
                shape: vec![n_out, n_in],
            });
        }
        let weight_t = weight
            .t()
            .mapv(T::from_f32)
            .as_standard_layout()
            .into_owned();
        Self::from_transposed(weight_t, threshold)
    }

    /// From `Wᵀ` [in, out] already in `T` (made contiguous if it is not).
    pub fn from_transposed(weight_t: Array2<T>, threshold: f32) -> Result<Self> {
        check_tau(threshold)?;
        let (n_in, n_out) = weight_t.dim();
        if n_out == 0 || n_in == 0 {
            return Err(KernelError::EmptyTensor {
                tensor: "weight_t",
                shape: vec![n_in, n_out],
            });
        }
        let weight_t = if weight_t.is_standard_layout() {
            weight_t
        } else {
            weight_t.as_standard_layout().into_owned()
        };
        Ok(Self {
            weight_t,
            threshold,
            config: GemvConfig::default(),
        })
    }

    /// Replaces the CPU kernel options.
    pub fn with_config(mut self, config: GemvConfig) -> Result<Self> {
        config.validate()?;
        self.config = config;
        Ok(self)
    }

    /// Number of inputs (`in`).
    pub fn in_features(&self) -> usize {
        self.weight_t.nrows()
    }

    /// Number of outputs (`out`).
    pub fn out_features(&self) -> usize {
        self.weight_t.ncols()
    }

    /// The stored threshold τ.
    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// Sets τ (finite, ≥ 0; 0 skips exact zeros only).
    pub fn set_threshold(&mut self, threshold: f32) -> Result<()> {
        check_tau(threshold)?;
        self.threshold = threshold;
        Ok(())
    }

    /// `Wᵀ` [in, out].
    pub fn weight_t(&self) -> ArrayView2<'_, T> {
        self.weight_t.view()
    }

    /// `W · mask(x)` with the stored threshold. \[in\] → \[out\].
    pub fn forward(&self, x: ArrayView1<'_, f32>) -> Result<Array1<f32>> {
        let mut y = Array1::zeros(self.out_features());
        self.gemv_masked(x, self.threshold, y.view_mut())?;
        Ok(y)
    }

    /// `y = W · mask(x)` with an explicit τ; `x` \[in\], `y` \[out\] overwritten.
    pub fn gemv_masked(
        &self,
        x: ArrayView1<'_, f32>,
        tau: f32,
        y: ArrayViewMut1<'_, f32>,
    ) -> Result<GemvStats> {
        gemv_masked_into(self.weight_t.view(), x, tau, y, &self.config)
    }

    /// Dense `y = W · x` through the same kernel; `x` \[in\], `y` \[out\] overwritten.
    pub fn gemv_dense(&self, x: ArrayView1<'_, f32>, y: ArrayViewMut1<'_, f32>) -> Result<()> {
        gemv_dense_into(self.weight_t.view(), x, y, &self.config)
    }

    /// Small batch with an explicit τ: `x` [batch ≤ 8, in], `y` [batch, out] overwritten; each
    /// row of `Wᵀ` is read once for the whole batch (see [`gemm_masked_small_batch_into`]; τ = 0
    /// skips only exact zeros, so it also serves as the dense product).
    pub fn gemm_masked(
        &self,
        x: ArrayView2<'_, f32>,
        tau: f32,
        y: ArrayViewMut2<'_, f32>,
    ) -> Result<GemvStats> {
        gemm_masked_small_batch_into(self.weight_t.view(), x, tau, y, &self.config)
    }

    /// Small decode batch with the stored threshold: [batch ≤ 8, in] → [batch, out].
    pub fn forward_batch(&self, x: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        let mut y = Array2::zeros((x.nrows(), self.out_features()));
        gemm_masked_small_batch_into(
            self.weight_t.view(),
            x,
            self.threshold,
            y.view_mut(),
            &self.config,
        )?;
        Ok(y)
    }
}
