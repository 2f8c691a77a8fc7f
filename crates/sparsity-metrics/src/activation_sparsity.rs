//! Activation-level sparsity at a calibrated magnitude threshold (TEAL-style), and the one TEAL
//! threshold calibration of the workspace.
//!
//! TEAL (Liu et al., "Training-Free Activation Sparsity in Large Language Models", 2024) zeroes
//! every individual activation with a small magnitude, with τ chosen per site from calibration
//! data so that a target fraction `s` of activations is dropped. **One inequality everywhere in
//! sparsity-lab: an activation is dropped when `|a| ≤ τ`** (the masked GEMV of
//! `sparsity-kernels`, `Edit::Threshold` of `sparsity-models`, the decoder of
//! `sparsity-decoding` and this module all use it).
//!
//! **The calibration, [`teal_threshold`]:** τ is the linear-interpolation quantile `s` of the
//! calibration magnitudes (numpy's default `np.quantile`, torch's `torch.quantile`, TEAL's
//! "s-quantile of |x|"); `s = 0` gives τ = 0 (drop exact zeros only). `sparsity-kernels`'
//! `ThresholdCalibration` and `sparsity-decoding`'s per-site thresholds call it.
//!
//! **Streaming approximation, [`ActivationHistogram`]:** when the activations are streamed
//! (the sparsity report), they cannot all be kept, so an exact log-scale histogram of `|a|`
//! stands in. Every magnitude is rounded to f32 and put in the bucket given by the top 16 bits
//! of its IEEE-754 pattern (sign dropped): 32 768 buckets, each spanning a relative width of
//! 2⁻⁷ ≈ 0.78 % (one exponent, 7 mantissa bits). Counts are exact and mergeable, memory is
//! 256 KiB per layer whatever the token count. Candidate thresholds are the largest f32 below
//! each bucket edge, so the fraction with `|a| ≤ τ` reported for a candidate is **exact**; the
//! calibrated τ is the candidate whose exact sparsity is closest to the target, within 0.78 %
//! (relative) of the exact quantile. TEAL's own sketch (10 000 linear bins between the 1 % and
//! 99 % quantiles, `icdf(0.5 + s/2)` on signed values) assumes a zero-mean symmetric
//! distribution; neither calibration here does.

use serde::{Deserialize, Serialize};

use crate::error::{Result, check_target};

/// Bits of the f32 pattern dropped to form a bucket index.
const BUCKET_SHIFT: u32 = 16;
/// Number of buckets: every non-negative f32 bit pattern `>> 16`.
pub const BUCKETS: usize = 1 << 15;

/// Exact histogram of activation magnitudes on f32 bit-pattern buckets. Mergeable.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivationHistogram {
    counts: Vec<u64>,
    total: u64,
}

impl Default for ActivationHistogram {
    fn default() -> Self {
        Self::new()
    }
}

/// The bucket of a magnitude given as f32 bits (sign bit ignored).
#[inline(always)]
pub(crate) fn bucket_of_bits(bits: u32) -> usize {
    ((bits & 0x7fff_ffff) >> BUCKET_SHIFT) as usize
}

/// The lower edge of bucket `k` (`k == BUCKETS` gives +∞).
pub fn bucket_lower_edge(k: usize) -> f64 {
    if k >= BUCKETS {
        f64::INFINITY
    } else {
        f64::from(f32::from_bits((k as u32) << BUCKET_SHIFT))
    }
}

/// The largest f32 below the lower edge of bucket `k` (k ≥ 1): `|a| ≤` it ⟺ `a` lies in a
/// bucket below `k`.
fn candidate_threshold(k: usize) -> f64 {
    if k >= BUCKETS {
        f64::from(f32::MAX)
    } else {
        f64::from(f32::from_bits(
            ((k as u32) << BUCKET_SHIFT).saturating_sub(1),
        ))
    }
}

/// The one TEAL threshold calibration: τ for target sparsity `target` ∈ [0, 1) over calibration
/// magnitudes `|x|` sorted ascending, so that activations with `|x| ≤ τ` are dropped. τ is the
/// linear-interpolation quantile (numpy's `np.quantile` default, `torch.quantile`); `target = 0`
/// gives τ = 0 (exact zeros only).
pub fn teal_threshold(sorted_magnitudes: &[f64], target: f64) -> Result<f64> {
    if !(0.0..1.0).contains(&target) {
        return Err(crate::MetricsError::InvalidOption {
            name: "target sparsity".into(),
            value: target.to_string(),
            reason: "must lie in [0, 1)".into(),
        });
    }
    if let Some((i, bad)) = sorted_magnitudes
        .iter()
        .enumerate()
        .find(|(_, v)| !(v.is_finite() && **v >= 0.0))
    {
        return Err(crate::MetricsError::NonFinite {
            what: "calibration magnitudes (finite, non-negative)".into(),
            position: vec![i],
            value: *bad,
        });
    }
    if sorted_magnitudes.is_sorted() {
        if target == 0.0 {
            return Ok(0.0);
        }
        return crate::percentile::percentile_sorted(sorted_magnitudes, target * 100.0);
    }
    Err(crate::MetricsError::InvalidOption {
        name: "calibration magnitudes".into(),
        value: format!("{} values", sorted_magnitudes.len()),
        reason: "must be sorted ascending".into(),
    })
}

/// [`teal_threshold`] as the largest f32 not above τ, so that `|x| ≤ τ` selects the same f32
/// activations in f32 as in f64.
pub fn teal_threshold_f32(sorted_magnitudes: &[f64], target: f64) -> Result<f32> {
    let tau = teal_threshold(sorted_magnitudes, target)?;
    let t = tau as f32;
    Ok(if f64::from(t) > tau { t.next_down() } else { t })
}

/// A threshold calibrated on the magnitude histogram.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CalibratedThreshold {
    /// The requested fraction of activations dropped.
    pub target: f64,
    /// τ: activations with `|a| ≤ τ` would be zeroed.
    pub threshold: f64,
    /// The exact fraction of activations with `|a| ≤ τ` (in f32 magnitudes).
    pub sparsity: f64,
    /// Number of activations the histogram holds.
    pub activations: u64,
}

impl ActivationHistogram {
    /// An empty histogram (256 KiB).
    pub fn new() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            total: 0,
        }
    }

    /// Empties the histogram, keeping its buffer.
    pub(crate) fn clear(&mut self) {
        self.counts.fill(0);
        self.total = 0;
    }

    /// The bucket counts as a fixed-size array, for kernels that count in place.
    pub(crate) fn bucket_counts(&mut self) -> Option<&mut [u64; BUCKETS]> {
        <&mut [u64; BUCKETS]>::try_from(self.counts.as_mut_slice()).ok()
    }

    /// Adds `k` to the number of magnitudes recorded (after counting them in place).
    pub(crate) fn add_total(&mut self, k: u64) {
        self.total += k;
    }

    /// Adds one magnitude given as f32 bits (finite values only; the caller checks).
    #[inline(always)]
    pub(crate) fn add_bits(&mut self, bits: u32) {
        // Finite magnitudes lie below 0x7f80_0000, so the index is < BUCKETS.
        if let Some(c) = self.counts.get_mut(bucket_of_bits(bits)) {
            *c += 1;
        }
    }

    /// Adds the counts of a slice of f32 values.
    pub(crate) fn add_f32(&mut self, xs: &[f32]) {
        for &x in xs {
            self.add_bits(x.to_bits());
        }
        self.total += xs.len() as u64;
    }

    /// Adds the counts of a slice of f64 values (rounded to f32 first).
    pub(crate) fn add_f64(&mut self, xs: &[f64]) {
        for &x in xs {
            self.add_bits((x as f32).to_bits());
        }
        self.total += xs.len() as u64;
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &ActivationHistogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += *b;
        }
        self.total += other.total;
    }

    /// Number of magnitudes recorded.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The raw bucket counts (`BUCKETS` entries; bucket `k` holds `edge(k) ≤ |a| < edge(k+1)`).
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// Exact number of magnitudes below the lower edge of bucket `k`.
    pub fn count_below_bucket(&self, k: usize) -> u64 {
        self.counts.iter().take(k).sum()
    }

    /// Calibrates τ for a target fraction of activations with `|a| ≤ τ`: the candidate (largest
    /// f32 below a bucket edge) whose exact sparsity is closest to `target`, the lowest on ties.
    /// The smallest candidate drops the exact zeros (and subnormals below 2⁻¹²⁶·2⁻⁷…), as τ = 0
    /// does in [`teal_threshold`].
    pub fn calibrate(&self, target: f64) -> Result<CalibratedThreshold> {
        let target = check_target("activation target", target)?;
        if self.total == 0 {
            return Err(crate::MetricsError::Empty {
                what: "activation histogram (no activations recorded)".into(),
            });
        }
        let n = self.total as f64;
        let mut best_k = 1usize;
        let mut best_err = f64::INFINITY;
        let mut below = 0u64;
        for k in 1..=BUCKETS {
            below += self.counts[k - 1];
            let err = (below as f64 / n - target).abs();
            if err < best_err {
                best_err = err;
                best_k = k;
            }
        }
        let sparsity = self.count_below_bucket(best_k) as f64 / n;
        Ok(CalibratedThreshold {
            target,
            threshold: candidate_threshold(best_k),
            sparsity,
            activations: self.total,
        })
    }
}
