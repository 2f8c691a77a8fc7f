//! Wanda, SparseGPT and magnitude pruning of linear layers, exact to the authors' code,
//! plus mask comparison (Jaccard, Hamming, cosine) on bit-packed masks.
//!
//! Mask convention everywhere: **1 = pruned**. Weights are [out, in] (`nn.Linear`); GPT-2's
//! Conv1D weights go through [`layout`] first.
//!
//! * [`WandaStats`] / [`HessianStats`]: streamed calibration statistics (never the activations);
//! * [`prune()`] / [`LayerPruner`]: one layer, any [`Method`] × [`Pattern`];
//! * [`ReconError`]: ‖WXᵀ − WₚXᵀ‖²_F / ‖WXᵀ‖²_F;
//! * [`compare`]: mask comparison per row / column / layer on bit-packed masks (`sparsity_io::BitMatrix`);
//!
//! Default features are empty: the crate then depends on ndarray, rayon, serde, thiserror,
//! tracing and `sparsity-io`'s bit matrix only. Opt-in features:
//! * `safetensors`: `io`, `layer_file` and `pt` (safetensors layers and masks, the original
//!   study's `.pt` files);
//! * `plots`: `plot` (mask-comparison histograms, PNG or SVG);
//! * `models`: `model`, sequential whole-model pruning of the `sparsity-models` GPT-2 and
//!   Mamba, saved as a Hugging Face directory with its masks (pulls in burn).
//!
//! ```
//! use ndarray::Array2;
//! use sparsity_pruning::{LayerPruner, Method, Pattern};
//!
//! // A 4 x 8 layer and two calibration sequences of 3 tokens.
//! let weight = Array2::from_shape_fn((4, 8), |(i, j)| ((i * 8 + j) as f32 * 0.37).sin());
//! let calib = ndarray::Array3::from_shape_fn((2, 3, 8), |(b, t, j)| 1.0 + (b + t + j) as f32 * 0.1);
//!
//! let mut pruner = LayerPruner::new("mlp.fc1", [4, 8], Method::Wanda, Pattern::NM { n: 2, m: 4 })?;
//! pruner.add_batch(calib.view().into_dyn())?;
//! let pruned = pruner.prune(weight.view())?;
//! assert_eq!(pruned.report.sparsity, 0.5);
//! // Every group of 4 columns keeps exactly 2 weights.
//! for row in pruned.mask.rows() {
//!     for group in row.as_slice().unwrap().chunks(4) {
//!         assert_eq!(group.iter().map(|&m| m as usize).sum::<usize>(), 2);
//!     }
//! }
//! # Ok::<(), sparsity_pruning::PruneError>(())
//! ```

mod calibration;
pub mod compare;
pub mod config;
pub mod error;
#[cfg(feature = "safetensors")]
pub mod io;
#[cfg(feature = "safetensors")]
pub mod layer_file;
pub mod layout;
pub mod linalg;
pub mod magnitude;
#[cfg(feature = "models")]
pub mod model;
#[cfg(feature = "plots")]
pub mod plot;
pub mod prune;
#[cfg(feature = "safetensors")]
pub mod pt;
pub mod recon;
pub mod sparsegpt;
pub mod wanda;

pub use config::{Method, Pattern};
pub use error::{PruneError, Result};
pub use layout::WeightLayout;
pub use prune::{Calibration, LayerPruner, PruneReport, Pruned, prune, prune_with};
pub use recon::{ReconError, relative_reconstruction_error};
pub use sparsegpt::{HessianStats, Precision, SparseGptParams, sparsegpt};
pub use wanda::WandaStats;

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
