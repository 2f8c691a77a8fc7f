//! Bit-packed binary feature matrices.
//!
//! A [`BinaryMatrix`] stores `n_features` binary vectors of `n_bits` bits each, packed
//! into `u64` words (bit `b` of feature `f` is bit `b % 64` of word `f·W + b / 64`, with
//! `W = ⌈n_bits / 64⌉`; padding bits past `n_bits` are always zero, so XOR + popcount over
//! whole words gives exact Hamming counts).
//!
//! In the Wanda/SparseGPT study a *feature* is a column of a pruned weight matrix
//! `W [out, in]` and its bits are the `out` rows (mask `W ≠ 0`); for activations
//! `A [samples, neurons]` a feature is a neuron and its bits are the samples (`|a| > τ`).
//! Both are "features = columns" ([`FeatureAxis::Columns`], the default).

use std::str::FromStr;

use ndarray::{Array1, Array2, ArrayView2};
use serde::{Deserialize, Serialize};
pub use sparsity_io::bits::{BitMatrix, WORD_BITS};

use crate::error::{ClusterError, Result};

/// How a dense value becomes a bit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "rule", content = "threshold", rename_all = "kebab-case")]
pub enum Binarize {
    /// `x != 0` (the correct mask of a pruned weight; default).
    #[default]
    #[serde(rename = "nonzero")]
    NonZero,
    /// `x > 0`: reproduces the original scripts, which drop every negative weight (a bug for masks).
    Positive,
    /// `|x| > τ` (activation sparsity with a magnitude threshold).
    #[serde(rename = "abs-gt")]
    AbsGreater(f32),
}

impl Binarize {
    /// Applies the rule to one value.
    #[inline]
    pub fn apply(self, x: f32) -> bool {
        match self {
            Binarize::NonZero => x != 0.0,
            Binarize::Positive => x > 0.0,
            Binarize::AbsGreater(t) => x.abs() > t,
        }
    }
}

impl FromStr for Binarize {
    type Err = ClusterError;
    /// Parses `nonzero`, `positive` or `abs-gt:T`.
    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim();
        match t {
            "nonzero" | "non-zero" | "ne0" => Ok(Binarize::NonZero),
            "positive" | "gt0" => Ok(Binarize::Positive),
            _ => {
                let v = t
                    .strip_prefix("abs-gt:")
                    .and_then(|v| v.parse::<f32>().ok())
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .ok_or_else(|| ClusterError::ParseBinarize(s.to_string()))?;
                Ok(Binarize::AbsGreater(v))
            }
        }
    }
}

impl std::fmt::Display for Binarize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Binarize::NonZero => write!(f, "nonzero"),
            Binarize::Positive => write!(f, "positive"),
            Binarize::AbsGreater(t) => write!(f, "abs-gt:{t}"),
        }
    }
}

/// Which axis of a dense `[rows, cols]` matrix holds the features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FeatureAxis {
    /// Features are columns, bits are rows (`W [out, in]` → `in` features of `out` bits; default).
    #[default]
    Columns,
    /// Features are rows, bits are columns.
    Rows,
}

impl FromStr for FeatureAxis {
    type Err = ClusterError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "columns" => Ok(Self::Columns),
            "rows" => Ok(Self::Rows),
            _ => Err(ClusterError::InvalidParam {
                name: "features",
                value: s.to_string(),
                reason: "expected columns or rows",
            }),
        }
    }
}

/// `n_features` binary vectors of `n_bits` bits, packed into `u64` words: the workspace's one
/// bit-packed type ([`BitMatrix`], a row per feature) with clustering's vocabulary, its
/// non-empty invariant and typed errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryMatrix {
    bits: BitMatrix,
}

impl BinaryMatrix {
    fn check_size(n_features: usize, n_bits: usize) -> Result<()> {
        if n_features == 0 || n_bits == 0 {
            return Err(ClusterError::Empty { n_features, n_bits });
        }
        Ok(())
    }

    /// An all-zero matrix of `n_features` × `n_bits`.
    pub fn zeros(n_features: usize, n_bits: usize) -> Result<Self> {
        Self::check_size(n_features, n_bits)?;
        Ok(Self {
            bits: BitMatrix::zeros(n_features, n_bits),
        })
    }

    /// Builds a matrix whose bit `(f, b)` is `bit(f, b)`.
    pub fn from_fn(
        n_features: usize,
        n_bits: usize,
        bit: impl FnMut(usize, usize) -> bool,
    ) -> Result<Self> {
        Self::check_size(n_features, n_bits)?;
        Ok(Self {
            bits: BitMatrix::from_fn(n_features, n_bits, bit),
        })
    }

    /// The packed bits (a row per feature).
    pub fn bits(&self) -> &BitMatrix {
        &self.bits
    }

    /// Binarises a dense matrix `[rows, cols]` with `rule`; `axis` says which axis holds the
    /// features (default [`FeatureAxis::Columns`]). Non-finite entries are an error.
    pub fn from_dense(dense: ArrayView2<f32>, rule: Binarize, axis: FeatureAxis) -> Result<Self> {
        if let Binarize::AbsGreater(t) = rule
            && !(t.is_finite() && t >= 0.0)
        {
            return Err(ClusterError::InvalidParam {
                name: "abs-gt threshold",
                value: t.to_string(),
                reason: "must be finite and >= 0",
            });
        }
        if let Some(((row, col), &value)) = dense.indexed_iter().find(|(_, v)| !v.is_finite()) {
            return Err(ClusterError::NonFinite {
                what: "dense input",
                row,
                col,
                value,
            });
        }
        let view = match axis {
            FeatureAxis::Columns => dense.reversed_axes(),
            FeatureAxis::Rows => dense,
        };
        Self::check_size(view.nrows(), view.ncols())?;
        Ok(Self {
            bits: BitMatrix::from_view(view, |&x| rule.apply(x)),
        })
    }

    /// From a boolean mask `[rows, cols]` (e.g. a pruning keep-mask); `axis` as in [`Self::from_dense`].
    pub fn from_mask(mask: ArrayView2<bool>, axis: FeatureAxis) -> Result<Self> {
        let view = match axis {
            FeatureAxis::Columns => mask.reversed_axes(),
            FeatureAxis::Rows => mask,
        };
        Self::check_size(view.nrows(), view.ncols())?;
        Ok(Self {
            bits: BitMatrix::from_view(view, |&x| x),
        })
    }

    /// Neuron on/off patterns over samples: `activations [samples, neurons]` → one feature per
    /// neuron whose bit `s` is `|a[s, neuron]| > tau`.
    pub fn from_activations(activations: ArrayView2<f32>, tau: f32) -> Result<Self> {
        Self::from_dense(activations, Binarize::AbsGreater(tau), FeatureAxis::Columns)
    }

    /// From already packed words `[n_features, ⌈n_bits/64⌉]`; padding bits must be zero.
    pub fn from_words(n_features: usize, n_bits: usize, words: Vec<u64>) -> Result<Self> {
        Self::check_size(n_features, n_bits)?;
        let expected = n_features * n_bits.div_ceil(WORD_BITS);
        if words.len() != expected {
            return Err(ClusterError::LengthMismatch {
                what: "packed words",
                got: words.len(),
                expected,
            });
        }
        let bits = BitMatrix::from_words(n_features, n_bits, words).map_err(|e| {
            ClusterError::InvalidParam {
                name: "packed words",
                value: e.to_string(),
                reason: "padding bits past n_bits must be zero",
            }
        })?;
        Ok(Self { bits })
    }

    /// Number of features (binary vectors).
    pub fn n_features(&self) -> usize {
        self.bits.rows()
    }

    /// Number of bits per feature.
    pub fn n_bits(&self) -> usize {
        self.bits.cols()
    }

    /// Number of `u64` words per feature, `⌈n_bits / 64⌉`.
    pub fn words_per_feature(&self) -> usize {
        self.bits.words_per_row()
    }

    /// All packed words, `[n_features, words_per_feature]` row-major.
    pub fn words(&self) -> &[u64] {
        self.bits.words()
    }

    /// The packed words of feature `f` (panics if `f` is out of range, like slice indexing).
    #[inline]
    pub fn feature_words(&self, f: usize) -> &[u64] {
        self.bits.row_words(f)
    }

    /// Checks that `f` indexes a feature.
    pub fn check_feature(&self, what: &'static str, f: usize) -> Result<()> {
        if f < self.n_features() {
            Ok(())
        } else {
            Err(ClusterError::FeatureOutOfRange {
                what,
                index: f,
                n_features: self.n_features(),
            })
        }
    }

    /// Bit `b` of feature `f` (panics when out of range, like indexing).
    #[inline]
    pub fn get(&self, f: usize, b: usize) -> bool {
        self.bits.get(f, b)
    }

    /// Sets bit `b` of feature `f` (panics when out of range, like indexing).
    #[inline]
    pub fn set(&mut self, f: usize, b: usize, value: bool) {
        self.bits.set(f, b, value)
    }

    /// Feature `f` as booleans, `[n_bits]` (a row view of the features × bits matrix).
    pub fn feature(&self, f: usize) -> Result<Array1<bool>> {
        self.check_feature("feature", f)?;
        Ok((0..self.n_bits()).map(|b| self.get(f, b)).collect())
    }

    /// Bit `b` across all features as booleans, `[n_features]` (a column view).
    pub fn bit(&self, b: usize) -> Result<Array1<bool>> {
        if b >= self.n_bits() {
            return Err(ClusterError::InvalidParam {
                name: "bit index",
                value: b.to_string(),
                reason: "out of range for the matrix's bit length",
            });
        }
        Ok((0..self.n_features()).map(|f| self.get(f, b)).collect())
    }

    /// Number of set bits of each feature, `[n_features]`.
    pub fn feature_popcounts(&self) -> Array1<u32> {
        Array1::from(self.bits.row_popcounts())
    }

    /// Number of features with bit `b` set, for every bit, `[n_bits]`.
    pub fn bit_popcounts(&self) -> Array1<u32> {
        Array1::from(self.bits.col_popcounts())
    }

    /// Fraction of set bits over the whole matrix.
    pub fn density(&self) -> f64 {
        self.bits.count_ones() as f64 / (self.n_features() as f64 * self.n_bits() as f64)
    }

    /// The transpose: `n_bits` features of `n_features` bits.
    pub fn transpose(&self) -> BinaryMatrix {
        Self {
            bits: self.bits.transpose(),
        }
    }

    /// A new matrix made of the features `indices`, in that order (repeats allowed).
    pub fn select(&self, indices: &[usize]) -> Result<BinaryMatrix> {
        if indices.is_empty() {
            return Err(ClusterError::Empty {
                n_features: 0,
                n_bits: self.n_bits(),
            });
        }
        for &i in indices {
            self.check_feature("selected feature", i)?;
        }
        let bits = self
            .bits
            .select_rows(indices)
            .map_err(|e| ClusterError::InvalidParam {
                name: "selected feature",
                value: e.to_string(),
                reason: "out of range",
            })?;
        Ok(Self { bits })
    }

    /// Dense 0/1 copy, `[n_features, n_bits]`.
    pub fn to_dense(&self) -> Array2<u8> {
        self.bits.to_u8()
    }

    /// Dense 0.0/1.0 copy, `[n_features, n_bits]` (for linfa and other float algorithms).
    pub fn to_f64(&self) -> Array2<f64> {
        Array2::from_shape_fn((self.n_features(), self.n_bits()), |(f, b)| {
            if self.get(f, b) { 1.0 } else { 0.0 }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn binarise_rules_and_axes() {
        let w = array![[0.0f32, -1.0, 2.0], [0.5, 0.0, -0.1]];
        let nz =
            BinaryMatrix::from_dense(w.view(), Binarize::NonZero, FeatureAxis::Columns).unwrap();
        assert_eq!((nz.n_features(), nz.n_bits()), (3, 2));
        assert_eq!(nz.feature(1).unwrap().to_vec(), vec![true, false]);
        let pos =
            BinaryMatrix::from_dense(w.view(), Binarize::Positive, FeatureAxis::Columns).unwrap();
        assert_eq!(pos.feature(1).unwrap().to_vec(), vec![false, false]);
        let abs = BinaryMatrix::from_dense(w.view(), Binarize::AbsGreater(0.2), FeatureAxis::Rows)
            .unwrap();
        assert_eq!(abs.feature(1).unwrap().to_vec(), vec![true, false, false]);
        assert_eq!(nz.feature_popcounts().to_vec(), vec![1, 1, 2]);
        assert_eq!(nz.bit_popcounts().to_vec(), vec![2, 2]);
    }

    #[test]
    fn non_finite_is_an_error() {
        let w = array![[0.0f32, f32::NAN]];
        let e = BinaryMatrix::from_dense(w.view(), Binarize::NonZero, FeatureAxis::Columns)
            .unwrap_err();
        assert!(e.to_string().contains("[0, 1]"), "{e}");
    }

    #[test]
    fn parse_rules() {
        assert_eq!("nonzero".parse::<Binarize>().unwrap(), Binarize::NonZero);
        assert_eq!("positive".parse::<Binarize>().unwrap(), Binarize::Positive);
        assert_eq!(
            "abs-gt:0.5".parse::<Binarize>().unwrap(),
            Binarize::AbsGreater(0.5)
        );
        assert!("abs-gt:-1".parse::<Binarize>().is_err());
        assert!("bogus".parse::<Binarize>().is_err());
    }

    #[test]
    fn transpose_roundtrip_odd_sizes() {
        let m = BinaryMatrix::from_fn(67, 131, |f, b| (f * 7 + b * 3) % 5 == 0).unwrap();
        let t = m.transpose();
        assert_eq!((t.n_features(), t.n_bits()), (131, 67));
        for f in 0..67 {
            for b in 0..131 {
                assert_eq!(m.get(f, b), t.get(b, f));
            }
        }
        assert_eq!(t.transpose(), m);
    }

    #[test]
    fn from_words_rejects_padding() {
        assert!(BinaryMatrix::from_words(1, 3, vec![0b1000]).is_err());
        assert!(BinaryMatrix::from_words(1, 3, vec![0b111]).is_ok());
    }
}
