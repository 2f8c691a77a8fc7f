//! Bit-packed matrices: each row is a bit vector packed into `u64` words (bit `c` of row `r`
//! is bit `c % 64` of word `r·W + c / 64`, with `W = ⌈cols / 64⌉`). Padding bits past `cols`
//! are always zero, so XOR / AND / OR + popcount over whole words give exact counts.
//!
//! This is the one bit-packed type of the workspace: pruning's mask comparison (a row = an
//! output row of a pruned layer, bit set = pruned) and clustering's Hamming code (a row = a
//! feature, e.g. a weight column or a neuron's on/off pattern) are both built on it, with the
//! popcount loops below.

use ndarray::{Array2, ArrayView2};
use rayon::prelude::*;

use crate::error::{IoError, Result};

/// Number of bits in one storage word.
pub const WORD_BITS: usize = 64;

/// `rows` bit vectors of `cols` bits, packed row-major into `u64` words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BitMatrix {
    rows: usize,
    cols: usize,
    words_per_row: usize,
    /// [rows, words_per_row], padding bits zero.
    words: Vec<u64>,
}

impl BitMatrix {
    /// An all-zero matrix.
    pub fn zeros(rows: usize, cols: usize) -> Self {
        let words_per_row = cols.div_ceil(WORD_BITS);
        Self {
            rows,
            cols,
            words_per_row,
            words: vec![0; rows * words_per_row],
        }
    }

    /// Bit `(r, c)` set where `pred(a[r, c])` holds; rows are packed in parallel.
    pub fn from_view<T: Sync>(a: ArrayView2<T>, pred: impl Fn(&T) -> bool + Sync) -> Self {
        let (rows, cols) = a.dim();
        let mut m = Self::zeros(rows, cols);
        let wpr = m.words_per_row;
        if wpr == 0 {
            return m;
        }
        m.words
            .par_chunks_mut(wpr)
            .enumerate()
            .for_each(|(r, words)| {
                for (c, v) in a.row(r).iter().enumerate() {
                    if pred(v) {
                        words[c / WORD_BITS] |= 1u64 << (c % WORD_BITS);
                    }
                }
            });
        m
    }

    /// Bit `(r, c)` set where `bit(r, c)` holds.
    pub fn from_fn(rows: usize, cols: usize, mut bit: impl FnMut(usize, usize) -> bool) -> Self {
        let mut m = Self::zeros(rows, cols);
        for r in 0..rows {
            for c in 0..cols {
                if bit(r, c) {
                    m.set(r, c, true);
                }
            }
        }
        m
    }

    /// From already packed words `[rows, ⌈cols/64⌉]`; the length must match and padding bits
    /// must be zero.
    pub fn from_words(rows: usize, cols: usize, words: Vec<u64>) -> Result<Self> {
        let mut m = Self::zeros(rows, cols);
        if words.len() != m.words.len() {
            return Err(IoError::Bits {
                reason: format!(
                    "{} packed words given for {rows} rows of {cols} bits ({} expected)",
                    words.len(),
                    m.words.len()
                ),
            });
        }
        m.words = words;
        let tail = cols % WORD_BITS;
        if tail != 0 {
            let pad = !((1u64 << tail) - 1);
            let wpr = m.words_per_row;
            if let Some(r) = (0..rows).find(|&r| m.words[r * wpr + wpr - 1] & pad != 0) {
                return Err(IoError::Bits {
                    reason: format!("row {r}: padding bits past column {cols} must be zero"),
                });
            }
        }
        Ok(m)
    }

    /// Number of rows (bit vectors).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of bits per row.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Number of `u64` words per row, `⌈cols / 64⌉`.
    pub fn words_per_row(&self) -> usize {
        self.words_per_row
    }

    /// All packed words, `[rows, words_per_row]` row-major.
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// The packed words of row `r` (panics if `r` is out of range, like slice indexing).
    #[inline]
    pub fn row_words(&self, r: usize) -> &[u64] {
        &self.words[r * self.words_per_row..(r + 1) * self.words_per_row]
    }

    /// Bit `(r, c)` (panics when out of range, like indexing).
    #[inline]
    pub fn get(&self, r: usize, c: usize) -> bool {
        assert!(c < self.cols, "bit {c} out of range ({} bits)", self.cols);
        (self.words[r * self.words_per_row + c / WORD_BITS] >> (c % WORD_BITS)) & 1 == 1
    }

    /// Sets bit `(r, c)` (panics when out of range, like indexing).
    #[inline]
    pub fn set(&mut self, r: usize, c: usize, value: bool) {
        assert!(c < self.cols, "bit {c} out of range ({} bits)", self.cols);
        let w = &mut self.words[r * self.words_per_row + c / WORD_BITS];
        let m = 1u64 << (c % WORD_BITS);
        if value { *w |= m } else { *w &= !m }
    }

    /// Total number of set bits.
    pub fn count_ones(&self) -> u64 {
        count_ones(&self.words)
    }

    /// Set bits of each row, `[rows]`.
    pub fn row_popcounts(&self) -> Vec<u32> {
        if self.words_per_row == 0 {
            return vec![0; self.rows];
        }
        self.words
            .chunks_exact(self.words_per_row)
            .map(|w| w.iter().map(|x| x.count_ones()).sum())
            .collect()
    }

    /// Rows with bit `c` set, for every column, `[cols]`.
    pub fn col_popcounts(&self) -> Vec<u32> {
        let mut out = vec![0u32; self.cols];
        if self.words_per_row == 0 {
            return out;
        }
        for w in self.words.chunks_exact(self.words_per_row) {
            for (wi, &word) in w.iter().enumerate() {
                let mut x = word;
                while x != 0 {
                    out[wi * WORD_BITS + x.trailing_zeros() as usize] += 1;
                    x &= x - 1;
                }
            }
        }
        out
    }

    /// The transpose: `cols` rows of `rows` bits.
    pub fn transpose(&self) -> Self {
        let mut t = Self::zeros(self.cols, self.rows);
        if self.words_per_row == 0 {
            return t;
        }
        for r in 0..self.rows {
            for (wi, &word) in self.row_words(r).iter().enumerate() {
                let mut x = word;
                while x != 0 {
                    let c = wi * WORD_BITS + x.trailing_zeros() as usize;
                    t.words[c * t.words_per_row + r / WORD_BITS] |= 1u64 << (r % WORD_BITS);
                    x &= x - 1;
                }
            }
        }
        t
    }

    /// A new matrix of the rows `indices`, in that order (repeats allowed); an index out of
    /// range is an error naming it.
    pub fn select_rows(&self, indices: &[usize]) -> Result<Self> {
        let mut words = Vec::with_capacity(indices.len().saturating_mul(self.words_per_row));
        for &i in indices {
            if i >= self.rows {
                return Err(IoError::Bits {
                    reason: format!("row {i} out of range ({} rows)", self.rows),
                });
            }
            words.extend_from_slice(self.row_words(i));
        }
        Ok(Self {
            rows: indices.len(),
            cols: self.cols,
            words_per_row: self.words_per_row,
            words,
        })
    }

    /// Dense 0/1 copy, `[rows, cols]`.
    pub fn to_u8(&self) -> Array2<u8> {
        Array2::from_shape_fn((self.rows, self.cols), |(r, c)| u8::from(self.get(r, c)))
    }
}

/// Set bits of a word slice.
#[inline]
pub fn count_ones(words: &[u64]) -> u64 {
    words.iter().map(|w| u64::from(w.count_ones())).sum()
}

/// Hamming distance of two packed bit vectors (XOR + popcount over the common words).
#[inline]
pub fn hamming(a: &[u64], b: &[u64]) -> u32 {
    a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
}

/// Counts of set bits shared by two packed bit vectors of equal length.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PairCounts {
    /// Bits set in both (|a ∩ b|).
    pub both: u64,
    /// Bits set in either (|a ∪ b|).
    pub either: u64,
    /// Bits set in exactly one (|a ⊕ b|, the Hamming distance).
    pub differ: u64,
}

/// [`PairCounts`] of two packed bit vectors (padding bits zero, as in [`BitMatrix`]).
#[inline]
pub fn pair_counts(a: &[u64], b: &[u64]) -> PairCounts {
    let mut p = PairCounts::default();
    for (&x, &y) in a.iter().zip(b) {
        p.both += u64::from((x & y).count_ones());
        p.either += u64::from((x | y).count_ones());
        p.differ += u64::from((x ^ y).count_ones());
    }
    p
}

mod kernel {
    //! Runtime-dispatched XOR + popcount of one bit vector against a run of others.

    use std::sync::OnceLock;

    #[inline(always)]
    fn portable(a: &[u64], others: &[u64], out: &mut [u32]) {
        let w = a.len();
        for (o, b) in out.iter_mut().zip(others.chunks_exact(w)) {
            let mut s = 0u64;
            for (x, y) in a.iter().zip(b) {
                s += u64::from((x ^ y).count_ones());
            }
            *o = s as u32;
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512vpopcntdq,popcnt")]
    fn avx512(a: &[u64], others: &[u64], out: &mut [u32]) {
        portable(a, others, out)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "popcnt")]
    fn popcnt(a: &[u64], others: &[u64], out: &mut [u32]) {
        portable(a, others, out)
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) enum Level {
        Portable,
        #[cfg(target_arch = "x86_64")]
        Popcnt,
        #[cfg(target_arch = "x86_64")]
        Avx512,
    }

    pub(crate) fn level() -> Level {
        static LEVEL: OnceLock<Level> = OnceLock::new();
        *LEVEL.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                if std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512vpopcntdq")
                    && std::is_x86_feature_detected!("popcnt")
                {
                    return Level::Avx512;
                }
                if std::is_x86_feature_detected!("popcnt") {
                    return Level::Popcnt;
                }
            }
            Level::Portable
        })
    }

    /// `out[j] = popcount(a XOR others[j])`, `others` = `out.len()` features of `a.len()` words.
    #[inline]
    #[allow(unsafe_code)]
    pub(super) fn xor_popcount_many(a: &[u64], others: &[u64], out: &mut [u32]) {
        debug_assert_eq!(others.len(), a.len() * out.len());
        match level() {
            Level::Portable => portable(a, others, out),
            // SAFETY: `level()` returned Avx512 only after detecting avx512f, avx512vpopcntdq
            // and popcnt on this CPU at run time.
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => unsafe { avx512(a, others, out) },
            // SAFETY: `level()` returned Popcnt only after detecting popcnt at run time.
            #[cfg(target_arch = "x86_64")]
            Level::Popcnt => unsafe { popcnt(a, others, out) },
        }
    }

    /// Name of the kernel in use, for logs and benchmark tables.
    pub(super) fn name() -> &'static str {
        match level() {
            Level::Portable => "portable",
            #[cfg(target_arch = "x86_64")]
            Level::Popcnt => "popcnt",
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => "avx512-vpopcntdq",
        }
    }
}

/// Hamming distances of one packed bit vector `a` against a run of others:
/// `out[j] = popcount(a XOR others[j])`, where `others` holds `out.len()` vectors of
/// `a.len()` words each. The XOR + popcount loop is compiled for AVX-512 VPOPCNTDQ and for
/// POPCNT and picked at run time; a portable version covers everything else.
#[inline]
pub fn hamming_many(a: &[u64], others: &[u64], out: &mut [u32]) {
    kernel::xor_popcount_many(a, others, out)
}

/// Name of the kernel [`hamming_many`] uses on this CPU (`avx512-vpopcntdq`, `popcnt` or
/// `portable`), for logs and benchmark tables.
pub fn hamming_kernel_name() -> &'static str {
    kernel::name()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dense(rows: usize, cols: usize, seed: u64) -> Array2<u8> {
        Array2::from_shape_fn((rows, cols), |(r, c)| {
            let h = (r as u64 * 1_000_003 + c as u64 * 7_919 + seed)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15);
            u8::from(h >> 61 < 3)
        })
    }

    proptest! {
        #[test]
        fn counts_match_dense(rows in 0usize..9, cols in 0usize..200, seed in 0u64..1000) {
            let d = dense(rows, cols, seed);
            let m = BitMatrix::from_view(d.view(), |&v| v != 0);
            prop_assert_eq!(m.to_u8(), d.clone());
            prop_assert_eq!(m.count_ones(), d.iter().map(|&v| u64::from(v)).sum::<u64>());
            let rp: Vec<u32> = d.rows().into_iter().map(|r| r.iter().map(|&v| u32::from(v)).sum()).collect();
            prop_assert_eq!(m.row_popcounts(), rp);
            let cp: Vec<u32> = d.columns().into_iter().map(|c| c.iter().map(|&v| u32::from(v)).sum()).collect();
            prop_assert_eq!(m.col_popcounts(), cp);
            prop_assert_eq!(m.transpose().to_u8(), d.t().to_owned());
            prop_assert_eq!(m.transpose().transpose(), m.clone());
            let m2 = BitMatrix::from_words(rows, cols, m.words().to_vec());
            prop_assert_eq!(m2.ok(), Some(m.clone()));
            if rows >= 2 {
                let (a, b) = (d.row(0), d.row(1));
                let p = pair_counts(m.row_words(0), m.row_words(1));
                let both = a.iter().zip(b).filter(|(x, y)| **x == 1 && **y == 1).count() as u64;
                let either = a.iter().zip(b).filter(|(x, y)| **x == 1 || **y == 1).count() as u64;
                let differ = a.iter().zip(b).filter(|(x, y)| x != y).count() as u64;
                prop_assert_eq!(p, PairCounts { both, either, differ });
                prop_assert_eq!(u64::from(hamming(m.row_words(0), m.row_words(1))), differ);
            }
        }
    }

    #[test]
    fn bad_words_are_errors() {
        assert!(BitMatrix::from_words(2, 70, vec![0; 3]).is_err());
        assert!(BitMatrix::from_words(1, 70, vec![0, 1 << 8]).is_err());
        assert!(BitMatrix::from_words(1, 70, vec![0, 1 << 5]).is_ok());
        let m = BitMatrix::zeros(3, 5);
        assert!(m.select_rows(&[0, 3]).is_err());
        assert_eq!(m.select_rows(&[2, 2]).map(|s| s.rows()).ok(), Some(2));
    }
}
