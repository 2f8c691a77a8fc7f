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
//!
//! ```
//! use sparsity_decoding::decode::Decoder;
//! use sparsity_models::{Batch, Capture, CausalLm, Gpt2, Gpt2Config, cpu_device};
//!
//! let device = cpu_device();
//! let config = Gpt2Config { vocab_size: 32, n_positions: 16, n_embd: 8, n_layer: 2, n_head: 2, ..Default::default() };
//! let model = CausalLm::from(Gpt2::init(&config, 7, &device)?);
//! // Token by token on the kernels' GEMV with a KV cache (dense: no thresholds) ...
//! let mut decoder = Decoder::new(&model, None)?;
//! let mut last = Vec::new();
//! for token in [1u32, 2, 3, 4] {
//!     last = decoder.step(token)?;
//! }
//! // ... equals the last position of one batched forward pass.
//! let out = model.forward(&Batch::from_ids(&[1, 2, 3, 4], 1, 4, &device)?, &Capture::none(), None)?;
//! let full: Vec<f32> = out.logits.into_data().to_vec().map_err(|e| format!("{e:?}"))?;
//! for (a, b) in last.iter().zip(&full[3 * 32..]) {
//!     assert!((a - b).abs() < 1e-4);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod decode;
pub mod sparse_decode;

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
