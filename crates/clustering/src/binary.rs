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

use ndarray::{Array1, Array2, ArrayView2, Axis};
use serde::{Deserialize, Serialize};

use crate::error::{ClusterError, Result};

/// Number of bits in one storage word.
pub const WORD_BITS: usize = 64;

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

/// `n_features` binary vectors of `n_bits` bits, packed into `u64` words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryMatrix {
    n_features: usize,
    n_bits: usize,
    words_per_feature: usize,
    /// [n_features, words_per_feature], padding bits zero.
    words: Vec<u64>,
}

impl BinaryMatrix {
    /// An all-zero matrix of `n_features` × `n_bits`.
    pub fn zeros(n_features: usize, n_bits: usize) -> Result<Self> {
        if n_features == 0 || n_bits == 0 {
            return Err(ClusterError::Empty { n_features, n_bits });
        }
        let words_per_feature = n_bits.div_ceil(WORD_BITS);
        Ok(Self {
            n_features,
            n_bits,
            words_per_feature,
            words: vec![0; n_features * words_per_feature],
        })
    }

    /// Builds a matrix whose bit `(f, b)` is `bit(f, b)`.
    pub fn from_fn(
        n_features: usize,
        n_bits: usize,
        mut bit: impl FnMut(usize, usize) -> bool,
    ) -> Result<Self> {
        let mut m = Self::zeros(n_features, n_bits)?;
        for f in 0..n_features {
            for b in 0..n_bits {
                if bit(f, b) {
                    m.set(f, b, true);
                }
            }
        }
        Ok(m)
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
        let (rows, cols) = dense.dim();
        let fa = match axis {
            FeatureAxis::Columns => dense.reversed_axes(),
            FeatureAxis::Rows => dense,
        };
        let (n_features, n_bits) = match axis {
            FeatureAxis::Columns => (cols, rows),
            FeatureAxis::Rows => (rows, cols),
        };
        let mut m = Self::zeros(n_features, n_bits)?;
        let wpf = m.words_per_feature;
        for (f, (lane, out)) in fa
            .axis_iter(Axis(0))
            .zip(m.words.chunks_exact_mut(wpf))
            .enumerate()
        {
            debug_assert!(f < n_features);
            for (b, &x) in lane.iter().enumerate() {
                if rule.apply(x) {
                    out[b / WORD_BITS] |= 1u64 << (b % WORD_BITS);
                }
            }
        }
        Ok(m)
    }

    /// From a boolean mask `[rows, cols]` (e.g. a pruning keep-mask); `axis` as in [`Self::from_dense`].
    pub fn from_mask(mask: ArrayView2<bool>, axis: FeatureAxis) -> Result<Self> {
        let view = match axis {
            FeatureAxis::Columns => mask.reversed_axes(),
            FeatureAxis::Rows => mask,
        };
        let (n_features, n_bits) = view.dim();
        let mut m = Self::zeros(n_features, n_bits)?;
        let wpf = m.words_per_feature;
        for (lane, out) in view.axis_iter(Axis(0)).zip(m.words.chunks_exact_mut(wpf)) {
            for (b, &x) in lane.iter().enumerate() {
                if x {
                    out[b / WORD_BITS] |= 1u64 << (b % WORD_BITS);
                }
            }
        }
        Ok(m)
    }

    /// Neuron on/off patterns over samples: `activations [samples, neurons]` → one feature per
    /// neuron whose bit `s` is `|a[s, neuron]| > tau`.
    pub fn from_activations(activations: ArrayView2<f32>, tau: f32) -> Result<Self> {
        Self::from_dense(activations, Binarize::AbsGreater(tau), FeatureAxis::Columns)
    }

    /// From already packed words `[n_features, ⌈n_bits/64⌉]`; padding bits must be zero.
    pub fn from_words(n_features: usize, n_bits: usize, words: Vec<u64>) -> Result<Self> {
        let mut m = Self::zeros(n_features, n_bits)?;
        if words.len() != m.words.len() {
            return Err(ClusterError::LengthMismatch {
                what: "packed words",
                got: words.len(),
                expected: m.words.len(),
            });
        }
        m.words = words;
        let tail = n_bits % WORD_BITS;
        if tail != 0 {
            let pad = !((1u64 << tail) - 1);
            let wpf = m.words_per_feature;
            if let Some(f) = (0..n_features).find(|&f| m.words[f * wpf + wpf - 1] & pad != 0) {
                return Err(ClusterError::InvalidParam {
                    name: "packed words",
                    value: format!("feature {f}"),
                    reason: "padding bits past n_bits must be zero",
                });
            }
        }
        Ok(m)
    }

    /// Number of features (binary vectors).
    pub fn n_features(&self) -> usize {
        self.n_features
    }

    /// Number of bits per feature.
    pub fn n_bits(&self) -> usize {
        self.n_bits
    }

    /// Number of `u64` words per feature, `⌈n_bits / 64⌉`.
    pub fn words_per_feature(&self) -> usize {
        self.words_per_feature
    }

    /// All packed words, `[n_features, words_per_feature]` row-major.
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// The packed words of feature `f` (panics if `f` is out of range, like slice indexing).
    #[inline]
    pub fn feature_words(&self, f: usize) -> &[u64] {
        &self.words[f * self.words_per_feature..(f + 1) * self.words_per_feature]
    }

    /// Checks that `f` indexes a feature.
    pub fn check_feature(&self, what: &'static str, f: usize) -> Result<()> {
        if f < self.n_features {
            Ok(())
        } else {
            Err(ClusterError::FeatureOutOfRange {
                what,
                index: f,
                n_features: self.n_features,
            })
        }
    }

    /// Bit `b` of feature `f` (panics when out of range, like indexing).
    #[inline]
    pub fn get(&self, f: usize, b: usize) -> bool {
        assert!(
            b < self.n_bits,
            "bit {b} out of range ({} bits)",
            self.n_bits
        );
        (self.words[f * self.words_per_feature + b / WORD_BITS] >> (b % WORD_BITS)) & 1 == 1
    }

    /// Sets bit `b` of feature `f` (panics when out of range, like indexing).
    #[inline]
    pub fn set(&mut self, f: usize, b: usize, value: bool) {
        assert!(
            b < self.n_bits,
            "bit {b} out of range ({} bits)",
            self.n_bits
        );
        let w = &mut self.words[f * self.words_per_feature + b / WORD_BITS];
        let m = 1u64 << (b % WORD_BITS);
        if value { *w |= m } else { *w &= !m }
    }

    /// Feature `f` as booleans, `[n_bits]` (a row view of the features × bits matrix).
    pub fn feature(&self, f: usize) -> Result<Array1<bool>> {
        self.check_feature("feature", f)?;
        Ok((0..self.n_bits).map(|b| self.get(f, b)).collect())
    }

    /// Bit `b` across all features as booleans, `[n_features]` (a column view).
    pub fn bit(&self, b: usize) -> Result<Array1<bool>> {
        if b >= self.n_bits {
            return Err(ClusterError::InvalidParam {
                name: "bit index",
                value: b.to_string(),
                reason: "out of range for the matrix's bit length",
            });
        }
        Ok((0..self.n_features).map(|f| self.get(f, b)).collect())
    }

    /// Number of set bits of each feature, `[n_features]`.
    pub fn feature_popcounts(&self) -> Array1<u32> {
        self.words
            .chunks_exact(self.words_per_feature)
            .map(|w| w.iter().map(|x| x.count_ones()).sum())
            .collect()
    }

    /// Number of features with bit `b` set, for every bit, `[n_bits]`.
    pub fn bit_popcounts(&self) -> Array1<u32> {
        let mut out = Array1::<u32>::zeros(self.n_bits);
        for w in self.words.chunks_exact(self.words_per_feature) {
            for (wi, &word) in w.iter().enumerate() {
                let mut x = word;
                while x != 0 {
                    let t = x.trailing_zeros() as usize;
                    out[wi * WORD_BITS + t] += 1;
                    x &= x - 1;
                }
            }
        }
        out
    }

    /// Fraction of set bits over the whole matrix.
    pub fn density(&self) -> f64 {
        let ones: u64 = self.words.iter().map(|w| u64::from(w.count_ones())).sum();
        ones as f64 / (self.n_features as f64 * self.n_bits as f64)
    }

    /// The transpose: `n_bits` features of `n_features` bits.
    pub fn transpose(&self) -> BinaryMatrix {
        let mut t = BinaryMatrix {
            n_features: self.n_bits,
            n_bits: self.n_features,
            words_per_feature: self.n_features.div_ceil(WORD_BITS),
            words: vec![0; self.n_bits * self.n_features.div_ceil(WORD_BITS)],
        };
        for f in 0..self.n_features {
            for (wi, &word) in self.feature_words(f).iter().enumerate() {
                let mut x = word;
                while x != 0 {
                    let b = wi * WORD_BITS + x.trailing_zeros() as usize;
                    t.words[b * t.words_per_feature + f / WORD_BITS] |= 1u64 << (f % WORD_BITS);
                    x &= x - 1;
                }
            }
        }
        t
    }

    /// A new matrix made of the features `indices`, in that order (repeats allowed).
    pub fn select(&self, indices: &[usize]) -> Result<BinaryMatrix> {
        if indices.is_empty() {
            return Err(ClusterError::Empty {
                n_features: 0,
                n_bits: self.n_bits,
            });
        }
        let mut words = Vec::with_capacity(indices.len() * self.words_per_feature);
        for &i in indices {
            self.check_feature("selected feature", i)?;
            words.extend_from_slice(self.feature_words(i));
        }
        Ok(BinaryMatrix {
            n_features: indices.len(),
            n_bits: self.n_bits,
            words_per_feature: self.words_per_feature,
            words,
        })
    }

    /// Dense 0/1 copy, `[n_features, n_bits]`.
    pub fn to_dense(&self) -> Array2<u8> {
        Array2::from_shape_fn((self.n_features, self.n_bits), |(f, b)| {
            u8::from(self.get(f, b))
        })
    }

    /// Dense 0.0/1.0 copy, `[n_features, n_bits]` (for linfa and other float algorithms).
    pub fn to_f64(&self) -> Array2<f64> {
        Array2::from_shape_fn((self.n_features, self.n_bits), |(f, b)| {
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
