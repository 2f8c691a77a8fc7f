//! Bit-packed masks: one bit per weight (1 = pruned), rows padded to whole u64 words, so
//! mask comparisons are XOR / AND / OR + popcount over words.

use ndarray::{Array2, ArrayView2};
use rayon::prelude::*;

/// A [rows, cols] mask packed row-major into u64 words (bit set = pruned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BitMask {
    rows: usize,
    cols: usize,
    words_per_row: usize,
    bits: Vec<u64>,
}

impl BitMask {
    fn zeroed(rows: usize, cols: usize) -> Self {
        let words_per_row = cols.div_ceil(64);
        Self {
            rows,
            cols,
            words_per_row,
            bits: vec![0; rows * words_per_row],
        }
    }

    fn from_pred<T: Sync>(a: ArrayView2<T>, pruned: impl Fn(&T) -> bool + Sync) -> Self {
        let (rows, cols) = a.dim();
        let mut m = Self::zeroed(rows, cols);
        let wpr = m.words_per_row;
        if wpr == 0 {
            return m;
        }
        m.bits
            .par_chunks_mut(wpr)
            .enumerate()
            .for_each(|(r, words)| {
                for (c, v) in a.row(r).iter().enumerate() {
                    if pruned(v) {
                        words[c / 64] |= 1u64 << (c % 64);
                    }
                }
            });
        m
    }

    /// From a u8 mask [rows, cols] (non-zero = pruned).
    pub fn from_mask(mask: ArrayView2<u8>) -> Self {
        Self::from_pred(mask, |&v| v != 0)
    }

    /// From a pruned weight [rows, cols]: exact zeros count as pruned (the original study's
    /// convention, mask = W == 0).
    pub fn from_weight_zeros(weight: ArrayView2<f32>) -> Self {
        Self::from_pred(weight, |&v| v == 0.0)
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Whether (r, c) is pruned.
    pub fn get(&self, r: usize, c: usize) -> bool {
        (self.bits[r * self.words_per_row + c / 64] >> (c % 64)) & 1 == 1
    }

    /// The packed words of row `r` (padding bits are 0).
    pub fn row_words(&self, r: usize) -> &[u64] {
        &self.bits[r * self.words_per_row..(r + 1) * self.words_per_row]
    }

    /// Mask of the valid bits of word `w` of a row (the last word may be partial).
    pub fn valid_bits(&self, w: usize) -> u64 {
        let last = self.words_per_row.saturating_sub(1);
        if w == last && !self.cols.is_multiple_of(64) {
            (1u64 << (self.cols % 64)) - 1
        } else {
            u64::MAX
        }
    }

    /// Total number of pruned entries.
    pub fn count_pruned(&self) -> u64 {
        self.bits.iter().map(|w| w.count_ones() as u64).sum()
    }

    /// The [cols, rows] transpose (columns become rows, for per-column metrics).
    pub fn transpose(&self) -> Self {
        let mut t = Self::zeroed(self.cols, self.rows);
        let wpr = t.words_per_row;
        if wpr == 0 {
            return t;
        }
        t.bits
            .par_chunks_mut(wpr)
            .enumerate()
            .for_each(|(c, words)| {
                for r in 0..self.rows {
                    if self.get(r, c) {
                        words[r / 64] |= 1u64 << (r % 64);
                    }
                }
            });
        t
    }

    /// Unpacks to a u8 mask [rows, cols].
    pub fn to_u8(&self) -> Array2<u8> {
        Array2::from_shape_fn((self.rows, self.cols), |(r, c)| u8::from(self.get(r, c)))
    }
}
