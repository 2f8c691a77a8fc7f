//! Streaming per-neuron statistics: count, mean and variance (Welford), mean |a|, max |a|,
//! fraction of exact zeros, fraction below a magnitude threshold, and optionally an exact
//! magnitude histogram for activation-level sparsity.
//!
//! Moments use blocks of 32 rows, read once: per neuron, the shifted sums `S = Σ (a − k)` and
//! `Q = Σ (a − k)²` are accumulated in f64 with the shift `k` = the running mean (the first
//! row for the first block), so that no large values cancel; the block's mean is `k + S/n_b`
//! and its centred sum of squares `M2_b = Q − S²/n_b`. Blocks are merged into the running
//! state with the update of Chan, Golub & LeVeque (1979):
//!
//! `δ = mean_b − mean_a`, `mean = mean_a + δ·n_b/n`, `M2 = M2_a + M2_b + δ²·n_a·n_b/n`.
//!
//! The same merge combines the partial statistics of row chunks processed in parallel with
//! rayon. Chunk boundaries depend only on the batch shape, never on the thread count, and the
//! partials are merged in order, so results are bit-identical on 1 or N threads.
//! Memory is O(neurons) (plus 256 KiB for the histogram, and during an update one more per
//! worker), never O(tokens × neurons).
//!
//! Aggregation ([`Aggregation`]) decides what one *sample* of the variance is:
//! - `PerToken`: every token row is a sample (variance across all tokens);
//! - `PerSequenceMean`: the original study's: for a `[batch, seq, neurons]` batch, the mean over
//!   each sequence's tokens is one sample, and the variance is taken across sequences
//!   (population variance, ddof = 0).
//!
//! The magnitude counters (mean |a|, max |a|, zeros, below-threshold, histogram) always count
//! individual token activations, whatever the aggregation.

// Layout: `element` (the `Activation` element types), `kernel` (the block and tile
// accumulation and its portable tile), `avx2` (the f32 tile for AVX2 + FMA, in intrinsics),
// `parallel` (ordered row-chunk waves on rayon and the merge of partial moments); this file
// holds the parameters, the statistics and their update and merge.

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2;
mod element;
mod kernel;
mod parallel;
#[cfg(test)]
mod tests;

use ndarray::{Array1, ArrayView2, ArrayView3, Axis, s};
use serde::{Deserialize, Serialize};

use crate::activation_sparsity::ActivationHistogram;
use crate::error::{MetricsError, Result};

pub use element::Activation;
use kernel::{FOLD_ROWS, RowScratch, block_stats};
use parallel::{merge_moments, ordered_waves};

/// Rows per moment block (a tile's accumulators stay in registers over a block).
const BLOCK_ROWS: usize = 32;
/// Target elements per parallel chunk (chunk rows depend only on the neuron count).
const CHUNK_ELEMS: usize = 1 << 21;

/// What one sample of the per-neuron variance is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Aggregation {
    /// Mean over each sequence's tokens, then variance across sequences (the original study's).
    #[default]
    PerSequenceMean,
    /// Variance over all tokens.
    PerToken,
}

impl std::str::FromStr for Aggregation {
    type Err = crate::MetricsError;
    /// The names [`std::fmt::Display`] prints.
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        [Self::PerSequenceMean, Self::PerToken]
            .into_iter()
            .find(|v| v.to_string() == s)
            .ok_or_else(|| crate::MetricsError::InvalidOption {
                name: "aggregate".into(),
                value: s.into(),
                reason: "expected per-sequence-mean or per-token".into(),
            })
    }
}

impl std::fmt::Display for Aggregation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::PerSequenceMean => "per-sequence-mean",
            Self::PerToken => "per-token",
        })
    }
}

/// Parameters of [`NeuronStats`] (validated by [`NeuronStatsParams::build`]).
#[derive(Debug, Clone, PartialEq)]
pub struct NeuronStatsParams {
    /// Number of neurons (the last axis of every batch).
    pub neurons: usize,
    /// What a variance sample is.
    pub aggregation: Aggregation,
    /// Magnitude threshold `t` of the "fraction below" counter (`|a| < t`); default 0.01.
    pub magnitude_threshold: f64,
    /// Keep an exact magnitude histogram for calibrated activation sparsity (default true).
    pub histogram: bool,
}

impl NeuronStatsParams {
    /// Defaults: per-sequence-mean aggregation, threshold 0.01, histogram on.
    pub fn new(neurons: usize) -> Self {
        Self {
            neurons,
            aggregation: Aggregation::default(),
            magnitude_threshold: 0.01,
            histogram: true,
        }
    }

    /// Sets the aggregation mode.
    pub fn aggregation(mut self, aggregation: Aggregation) -> Self {
        self.aggregation = aggregation;
        self
    }

    /// Sets the magnitude threshold of the below-threshold counter.
    pub fn magnitude_threshold(mut self, t: f64) -> Self {
        self.magnitude_threshold = t;
        self
    }

    /// Turns the magnitude histogram on or off.
    pub fn histogram(mut self, on: bool) -> Self {
        self.histogram = on;
        self
    }

    /// Validates the parameters and returns empty statistics.
    pub fn build(self) -> Result<NeuronStats> {
        if self.neurons == 0 {
            return Err(MetricsError::InvalidOption {
                name: "neurons".into(),
                value: "0".into(),
                reason: "at least one neuron is needed".into(),
            });
        }
        if !(self.magnitude_threshold.is_finite() && self.magnitude_threshold >= 0.0) {
            return Err(MetricsError::InvalidOption {
                name: "magnitude_threshold".into(),
                value: self.magnitude_threshold.to_string(),
                reason: "must be finite and >= 0".into(),
            });
        }
        let n = self.neurons;
        Ok(NeuronStats {
            samples: 0,
            mean: vec![0.0; n],
            m2: vec![0.0; n],
            tokens: 0,
            sum_abs: vec![0.0; n],
            max_abs: vec![0.0; n],
            zeros: vec![0; n],
            below: vec![0; n],
            histogram: self.histogram.then(ActivationHistogram::new),
            params: self,
        })
    }
}

/// Streaming, mergeable per-neuron statistics. Build with [`NeuronStatsParams`].
#[derive(Debug, Clone, PartialEq)]
pub struct NeuronStats {
    params: NeuronStatsParams,
    samples: u64,
    mean: Vec<f64>,
    m2: Vec<f64>,
    tokens: u64,
    sum_abs: Vec<f64>,
    max_abs: Vec<f64>,
    zeros: Vec<u64>,
    below: Vec<u64>,
    histogram: Option<ActivationHistogram>,
}

/// Finds the first non-finite element of a row-major block.
fn first_non_finite<A: Activation>(rows: &[A], n: usize) -> Option<(usize, usize, f64)> {
    rows.iter()
        .position(|x| !x.to_f64().is_finite())
        .map(|i| (i / n, i % n, rows[i].to_f64()))
}

impl NeuronStats {
    /// The parameters these statistics were built with.
    pub fn params(&self) -> &NeuronStatsParams {
        &self.params
    }

    /// Number of neurons.
    pub fn neurons(&self) -> usize {
        self.params.neurons
    }

    /// Number of variance samples seen (tokens, or sequences for `PerSequenceMean`).
    pub fn sample_count(&self) -> u64 {
        self.samples
    }

    /// Number of token rows seen (every row of every batch).
    pub fn token_count(&self) -> u64 {
        self.tokens
    }

    /// Empties the statistics, keeping the buffers (as [`Self::empty_like`] would make them).
    fn clear(&mut self) {
        self.samples = 0;
        self.tokens = 0;
        self.mean.fill(0.0);
        self.m2.fill(0.0);
        self.sum_abs.fill(0.0);
        self.max_abs.fill(0.0);
        self.zeros.fill(0);
        self.below.fill(0);
        if let Some(h) = self.histogram.as_mut() {
            h.clear();
        }
    }

    /// Like [`Self::empty_like`] but without a histogram: the partial of one chunk, whose
    /// activations a worker's histogram counts.
    fn empty_partial(&self) -> NeuronStats {
        self.empty_with_histogram(false)
    }

    /// Adds the histograms of the workers' scratches (exact counts, any order).
    fn add_worker_histograms<A: Activation>(&mut self, scratches: &[RowScratch<A>]) {
        if let Some(h) = self.histogram.as_mut() {
            for wh in scratches.iter().filter_map(|sc| sc.hist.as_ref()) {
                h.merge(wh);
            }
        }
    }

    /// Empty statistics with the same parameters (and a histogram if these keep one).
    fn empty_like(&self) -> NeuronStats {
        self.empty_with_histogram(self.histogram.is_some())
    }

    fn empty_with_histogram(&self, histogram: bool) -> NeuronStats {
        let n = self.params.neurons;
        NeuronStats {
            params: self.params.clone(),
            samples: 0,
            mean: vec![0.0; n],
            m2: vec![0.0; n],
            tokens: 0,
            sum_abs: vec![0.0; n],
            max_abs: vec![0.0; n],
            zeros: vec![0; n],
            below: vec![0; n],
            histogram: histogram.then(ActivationHistogram::new),
        }
    }

    fn check_neurons(&self, what: &str, shape: &[usize]) -> Result<()> {
        if shape.last().copied() != Some(self.params.neurons) {
            return Err(MetricsError::ShapeMismatch {
                what: what.into(),
                expected: self.params.neurons,
                got: shape.to_vec(),
            });
        }
        if shape.contains(&0) {
            return Err(MetricsError::Empty {
                what: format!("{what} of shape {shape:?}"),
            });
        }
        Ok(())
    }

    /// Feeds one `[samples, neurons]` batch: every row is one sample and one token
    /// (in both aggregation modes). Parallel over row chunks (rayon's current pool).
    /// On error (shape, NaN/Inf with its `[row, neuron]` position) the statistics are unchanged.
    pub fn update<A: Activation>(&mut self, batch: ArrayView2<'_, A>) -> Result<()> {
        self.check_neurons("batch", batch.shape())?;
        self.update_chunked(batch, (CHUNK_ELEMS / self.params.neurons).max(1))
    }

    /// [`Self::update`] over row chunks of `chunk_rows` rows (the batch is checked).
    fn update_chunked<A: Activation>(
        &mut self,
        batch: ArrayView2<'_, A>,
        chunk_rows: usize,
    ) -> Result<()> {
        let n = self.params.neurons;
        let rows = batch.nrows();
        let starts: Vec<usize> = (0..rows).step_by(chunk_rows).collect();
        let t = self.params.magnitude_threshold;
        let hist = self.histogram.is_some();
        let mut total = self.empty_partial();
        let scratches = ordered_waves(
            &starts,
            || self.empty_partial(),
            || RowScratch::<A>::new(n, t, hist),
            |sc, &r0, p| {
                p.clear();
                let r1 = (r0 + chunk_rows).min(rows);
                p.accumulate_rows(batch.slice(s![r0..r1, ..]), true, sc)
                    .map_err(|e| offset_error(e, r0))
            },
            |p| total.merge_unchecked(p),
        )?;
        self.merge_unchecked(&total);
        self.add_worker_histograms(&scratches);
        Ok(())
    }

    /// Feeds one `[batch, seq, neurons]` batch, aggregated as the parameters say.
    /// NaN/Inf errors give the `[sequence, token, neuron]` position.
    pub fn update_sequences<A: Activation>(&mut self, batch: ArrayView3<'_, A>) -> Result<()> {
        self.check_neurons("batch", batch.shape())?;
        let (b, seq, n) = batch.dim();
        match self.params.aggregation {
            Aggregation::PerToken => match batch.into_shape_with_order((b * seq, n)) {
                Ok(rows) => self.update(rows).map_err(|e| token_error(e, seq)),
                Err(_) => {
                    // Not contiguous: feed the sequences one by one, all or nothing.
                    let mut total = self.empty_like();
                    for i in 0..b {
                        total
                            .update(batch.index_axis(Axis(0), i))
                            .map_err(|e| seq_error(e, i))?;
                    }
                    self.merge_unchecked(&total);
                    Ok(())
                }
            },
            Aggregation::PerSequenceMean => {
                self.update_sequence_means(batch, (CHUNK_ELEMS / (seq * n)).max(1))
            }
        }
    }

    /// The per-sequence-mean update over groups of `group` sequences (the batch is checked).
    fn update_sequence_means<A: Activation>(
        &mut self,
        batch: ArrayView3<'_, A>,
        group: usize,
    ) -> Result<()> {
        let (b, seq, n) = batch.dim();
        let starts: Vec<usize> = (0..b).step_by(group).collect();
        let t = self.params.magnitude_threshold;
        let hist = self.histogram.is_some();
        let mut total = self.empty_partial();
        let scratches = ordered_waves(
            &starts,
            || (self.empty_partial(), Vec::new()),
            || RowScratch::<A>::new(n, t, hist),
            |sc, &i0, (p, means): &mut (NeuronStats, Vec<Vec<f64>>)| {
                p.clear();
                means.clear();
                for i in i0..(i0 + group).min(b) {
                    p.accumulate_rows(batch.index_axis(Axis(0), i), false, sc)
                        .map_err(|e| seq_error(e, i))?;
                    means.push(sc.total_sum.iter().map(|s| s / seq as f64).collect());
                }
                Ok(())
            },
            |(p, means)| {
                total.merge_unchecked(p);
                for m in means {
                    total.push_sample(m);
                }
            },
        )?;
        self.merge_unchecked(&total);
        self.add_worker_histograms(&scratches);
        Ok(())
    }

    /// Welford update with one sample vector.
    fn push_sample(&mut self, x: &[f64]) {
        self.samples += 1;
        let inv = 1.0 / self.samples as f64;
        for ((m, q), &x) in self.mean.iter_mut().zip(self.m2.iter_mut()).zip(x) {
            let d = x - *m;
            *m += d * inv;
            *q += d * (x - *m);
        }
    }

    /// Sequentially accumulates rows, with the buffers of `sc` (made for this neuron count
    /// and threshold). With `as_samples` the rows are variance samples; otherwise only the
    /// token counters are updated and the per-neuron row sums left in `sc.total_sum`.
    fn accumulate_rows<A: Activation>(
        &mut self,
        rows: ArrayView2<'_, A>,
        as_samples: bool,
        sc: &mut RowScratch<A>,
    ) -> Result<()> {
        let n = self.params.neurons;
        let rows = rows.as_standard_layout();
        let data = rows.as_slice().unwrap_or(&[]);
        let RowScratch {
            acc,
            total_sum,
            shift,
            hist,
        } = sc;
        total_sum.fill(0.0);
        // A chunk that stopped at an error left its accumulators unfolded.
        if acc.rows != 0 {
            acc.clear();
        }
        if !as_samples {
            // Row sums are plain sums.
            shift.fill(0.0);
        }
        let mut done_rows = 0usize;
        for block in data.chunks(BLOCK_ROWS * n) {
            let brows = block.len() / n;
            // Shifted sums stay small (no cancellation): shift by the running mean, or by the
            // first row for the first block.
            let first = as_samples && self.samples == 0;
            if first {
                for (k, a) in shift.iter_mut().zip(&block[..n]) {
                    *k = a.to_f64();
                }
            }
            let finite = if as_samples {
                let k = if first { &shift[..] } else { &self.mean[..] };
                block_stats(block, k, acc, true, hist.as_mut());
                let first_shift = first.then_some(&shift[..]);
                let ok = acc.merge_block(
                    first_shift,
                    self.samples,
                    brows,
                    &mut self.mean,
                    &mut self.m2,
                );
                self.samples += brows as u64;
                ok
            } else {
                block_stats(block, shift, acc, false, hist.as_mut());
                acc.add_block_sums(total_sum)
            };
            if acc.rows >= FOLD_ROWS {
                acc.fold(
                    &mut self.sum_abs,
                    &mut self.max_abs,
                    &mut self.zeros,
                    &mut self.below,
                );
            }
            if !finite && let Some((r, c, v)) = first_non_finite(block, n) {
                return Err(MetricsError::NonFinite {
                    what: "activations".into(),
                    position: vec![done_rows + r, c],
                    value: v,
                });
            }
            self.tokens += brows as u64;
            done_rows += brows;
        }
        acc.fold(
            &mut self.sum_abs,
            &mut self.max_abs,
            &mut self.zeros,
            &mut self.below,
        );
        Ok(())
    }

    /// Merges another set of statistics (e.g. from a parallel worker) into this one.
    /// Errors if the neuron count, aggregation, threshold or histogram setting differ.
    pub fn merge(&mut self, other: &NeuronStats) -> Result<()> {
        if other.params != self.params {
            return Err(MetricsError::ShapeMismatch {
                what: format!("merge (parameters {:?} vs {:?})", self.params, other.params),
                expected: self.params.neurons,
                got: vec![other.params.neurons],
            });
        }
        self.merge_unchecked(other);
        Ok(())
    }

    fn merge_unchecked(&mut self, o: &NeuronStats) {
        merge_moments(
            self.samples,
            &mut self.mean,
            &mut self.m2,
            o.samples,
            &o.mean,
            &o.m2,
        );
        self.samples += o.samples;
        self.tokens += o.tokens;
        for (a, b) in self.sum_abs.iter_mut().zip(&o.sum_abs) {
            *a += b;
        }
        for (a, b) in self.max_abs.iter_mut().zip(&o.max_abs) {
            *a = a.max(*b);
        }
        for (a, b) in self.zeros.iter_mut().zip(&o.zeros) {
            *a += b;
        }
        for (a, b) in self.below.iter_mut().zip(&o.below) {
            *a += b;
        }
        if let (Some(h), Some(oh)) = (self.histogram.as_mut(), o.histogram.as_ref()) {
            h.merge(oh);
        }
    }

    fn need_samples(&self, min: u64, what: &str) -> Result<()> {
        if self.samples < min {
            return Err(MetricsError::Empty {
                what: format!("{what}: {} samples seen, {min} needed", self.samples),
            });
        }
        Ok(())
    }

    fn need_tokens(&self, what: &str) -> Result<()> {
        if self.tokens == 0 {
            return Err(MetricsError::Empty {
                what: format!("{what}: no tokens seen"),
            });
        }
        Ok(())
    }

    /// Per-neuron mean over the samples. `[neurons]`
    pub fn mean(&self) -> Result<Array1<f64>> {
        self.need_samples(1, "mean")?;
        Ok(Array1::from(self.mean.clone()))
    }

    /// Per-neuron population variance (ddof = 0) over the samples. `[neurons]`
    pub fn variance(&self) -> Result<Array1<f64>> {
        self.variance_ddof(0)
    }

    /// Per-neuron variance with `ddof` delta degrees of freedom (`M2 / (n − ddof)`). `[neurons]`
    pub fn variance_ddof(&self, ddof: u64) -> Result<Array1<f64>> {
        self.need_samples(ddof + 1, "variance")?;
        let d = (self.samples - ddof) as f64;
        Ok(self.m2.iter().map(|q| q / d).collect())
    }

    /// Per-neuron mean |a| over all tokens. `[neurons]`
    pub fn mean_abs(&self) -> Result<Array1<f64>> {
        self.need_tokens("mean |a|")?;
        let t = self.tokens as f64;
        Ok(self.sum_abs.iter().map(|s| s / t).collect())
    }

    /// Per-neuron max |a| over all tokens. `[neurons]`
    pub fn max_abs(&self) -> Result<Array1<f64>> {
        self.need_tokens("max |a|")?;
        Ok(Array1::from(self.max_abs.clone()))
    }

    /// Per-neuron fraction of tokens where the activation is exactly 0. `[neurons]`
    pub fn zero_fraction(&self) -> Result<Array1<f64>> {
        self.need_tokens("zero fraction")?;
        let t = self.tokens as f64;
        Ok(self.zeros.iter().map(|&z| z as f64 / t).collect())
    }

    /// Per-neuron fraction of tokens with `|a| < magnitude_threshold`. `[neurons]`
    pub fn below_threshold_fraction(&self) -> Result<Array1<f64>> {
        self.need_tokens("below-threshold fraction")?;
        let t = self.tokens as f64;
        Ok(self.below.iter().map(|&z| z as f64 / t).collect())
    }

    /// The exact magnitude histogram over all activations, if enabled.
    pub fn histogram(&self) -> Option<&ActivationHistogram> {
        self.histogram.as_ref()
    }
}

fn offset_error(e: MetricsError, row0: usize) -> MetricsError {
    match e {
        MetricsError::NonFinite {
            what,
            mut position,
            value,
        } => {
            if let Some(r) = position.first_mut() {
                *r += row0;
            }
            MetricsError::NonFinite {
                what,
                position,
                value,
            }
        }
        e => e,
    }
}

fn token_error(e: MetricsError, seq: usize) -> MetricsError {
    match e {
        MetricsError::NonFinite {
            what,
            position,
            value,
        } if position.len() == 2 => {
            let position = vec![position[0] / seq, position[0] % seq, position[1]];
            MetricsError::NonFinite {
                what,
                position,
                value,
            }
        }
        e => e,
    }
}

fn seq_error(e: MetricsError, seq: usize) -> MetricsError {
    match e {
        MetricsError::NonFinite {
            what,
            mut position,
            value,
        } => {
            position.insert(0, seq);
            MetricsError::NonFinite {
                what,
                position,
                value,
            }
        }
        e => e,
    }
}
