//! # sparsity-clustering
//!
//! Do the features of a pruned layer switch off together? This crate answers it exactly with
//! bit-packed sparsity patterns: features (columns of a weight mask, or neurons' on/off patterns
//! over samples) become `u64`-packed bit vectors ([`BinaryMatrix`]), Hamming distances are
//! XOR + popcount ([`hamming`]: one-vs-all, blocked parallel all-pairs, top-k neighbours), and
//! clusters come from Hamming k-means ([`kmeans`]), linfa k-means ([`linfa_kmeans`]) or Ward
//! ([`ward`]). [`metrics`] gives exact within/between distances and the separation ratio,
//! [`mmm`] the multiply–mask–multiply block coherence, [`procedure`] the original study's
//! "reference + 128 nearest, k = 4, 8, 16" procedure (and its multi-execution), [`ordering`]
//! and [`plot`] the pictures; [`report`] runs the whole `cargo xtask cluster` analysis of a
//! safetensors tensor and defines the `clusters.json` schema.
//!
//! ```
//! use ndarray::array;
//! use sparsity_clustering::{BinaryMatrix, Binarize, FeatureAxis};
//! use sparsity_clustering::{hamming, kmeans::HammingKMeansParams, metrics};
//!
//! // A pruned weight W [out = 4, in = 4]; features are its columns.
//! let w = array![
//!     [0.5f32, -0.2, 0.0, 0.0],
//!     [0.1, 0.3, 0.0, 0.0],
//!     [0.0, 0.0, 0.7, -0.4],
//!     [0.0, 0.0, 0.2, 0.9],
//! ];
//! let bits = BinaryMatrix::from_dense(w.view(), Binarize::NonZero, FeatureAxis::Columns)?;
//! let d = hamming::all_pairs(&bits);
//! assert_eq!(d.count(0, 1), 0);
//! assert_eq!(d.count(0, 2), 4);
//! let fit = HammingKMeansParams::new(2).seed(7).fit(&bits)?;
//! assert_eq!(fit.labels, vec![0, 0, 1, 1]);
//! let m = metrics::cluster_metrics(&bits, &fit.labels, Default::default())?;
//! assert_eq!(m.within_mean, Some(0.0));
//! assert_eq!(m.separation_ratio, None); // within is 0: undefined, not 0
//! # Ok::<(), sparsity_clustering::ClusterError>(())
//! ```

pub mod binary;
pub mod error;
pub mod hamming;
pub mod io;
pub mod kmeans;
pub mod linfa_kmeans;
pub mod metrics;
pub mod mmm;
pub mod ordering;
#[cfg(feature = "plots")]
pub mod plot;
pub mod procedure;
pub mod report;
pub mod ward;

pub use binary::{Binarize, BinaryMatrix, FeatureAxis};
pub use error::{ClusterError, Result};

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
