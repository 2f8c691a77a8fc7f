//! Where the models meet the kernels: token-by-token CPU decoding of a [`sparsity_models::CausalLm`]
//! on the `sparsity-kernels` GEMV ([`decode`]), dense or with TEAL-style masked MLP inputs, and the
//! threshold calibration and sparsity sweep that choose the masks ([`sparse_decode`]).
//!
//! Thresholds: [`sparse_decode::calibrate_thresholds`] calls the workspace's one TEAL calibration,
//! [`sparsity_metrics::teal_threshold`] (the linear-interpolation quantile of |x| over the
//! calibration entries); an entry is dropped when `|x| ≤ τ`, the inequality of
//! `sparsity_kernels::SparseLinear` and [`sparsity_models::Edit::Threshold`].
//!
//! Feature `plots`: the sweep figure ([`sparse_decode::plot_sweep`]).

pub mod decode;
pub mod sparse_decode;
