//! # sparsity-io
//!
//! The one I/O foundation every sparsity-lab crate shares, so that each of these exists once
//! in the workspace:
//! - [`tensors`]: safetensors files as ndarray arrays (every numeric dtype, converted exactly
//!   where the target type can hold it) and atomic safetensors output;
//! - [`atomic`]: [`write_atomic`], a temporary file beside the target renamed over it, so a
//!   failed run never leaves a half-written file;
//! - [`bits`]: [`BitMatrix`], rows of bits packed into `u64` words, with the popcount loops
//!   (row and column counts, Hamming distance, pair counts) that mask comparison and Hamming
//!   clustering are built on.
//!
//! Features: `safetensors` (default) brings [`tensors`]; without it the crate has only
//! `ndarray`, `rayon` and `thiserror` as dependencies (what pruning's mask comparison needs).
//!
//! Every failure is an [`IoError`] naming the file, tensor, dtype or shape at fault.
//!
//! ```
//! # #[cfg(feature = "safetensors")] {
//! use ndarray::{ArrayD, IxDyn};
//! use sparsity_io::tensors::{OutTensor, SafetensorsFile, write_safetensors};
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("w.safetensors");
//! let w = ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![0.0f32, 1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
//! write_safetensors(&path, &[("w".to_string(), OutTensor::F32(w.clone()))], None)?;
//! let file = SafetensorsFile::open(&path)?;
//! assert_eq!(file.array_f32("w")?, w);
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod atomic;
pub mod bits;
pub mod budget;
pub mod error;
#[cfg(feature = "safetensors")]
pub mod tensors;

pub use atomic::{write_atomic, write_new};
pub use bits::BitMatrix;
pub use error::{IoError, Result};
#[cfg(feature = "safetensors")]
pub use tensors::{
    OutTensor, SafetensorsFile, TensorMeta, decode_f32, decode_f64, read_header,
    write_f32_streaming,
};

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
