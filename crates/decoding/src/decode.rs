//! Token-by-token decoding on the CPU with the `sparsity-kernels` GEMV, dense or with TEAL-style
//! masked MLP inputs ([`crate::sparse_decode`] thresholds).
//!
//! A [`Decoder`] asks the model's family for its step decoder
//! ([`sparsity_models::HookedLm::step_decoder`]: GPT-2 with a key/value cache, Mamba with its
//! convolution window and SSM state, the recurrent form of the selective scan) and supplies its
//! linear layers: the weights copied into the kernel layout (Wᵀ [in, out], which is how burn and
//! GPT-2's Conv1D already store them), one token per [`Decoder::step`]. Every linear layer goes through the same kernel;
//! with thresholds, the MLP-input layers (GPT-2 `c_fc`, `mlp.c_proj`; Mamba `in_proj`,
//! `out_proj`) use the masked GEMV y = W·mask(x), skipping the rows of Wᵀ whose input has
//! |x_j| ≤ τ. Without thresholds the logits equal the batched forward pass (tested to 1e-4), and
//! with them they equal the forward pass under the same [`sparsity_models::Edit::Threshold`] intervention,
//! so perplexity measured either way agrees.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Instant;

use ndarray::{Array2, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2};
use serde::{Deserialize, Serialize};
pub use sparsity_kernels::bench::WeightDtype;
use sparsity_kernels::{MAX_BATCH, SparseLinear};

use crate::sparse_decode::Thresholds;
use sparsity_models::error::{ModelError, Result};
use sparsity_models::lm::CausalLm;
use sparsity_models::step::{
    LinearFactory, LinearSpec, StepDecoder, StepLinear, WeightLayout, check_rows,
};
use sparsity_models::text::Perplexity;

fn kerr(what: &str) -> impl Fn(sparsity_kernels::KernelError) -> ModelError + '_ {
    move |e| ModelError::Invalid(format!("decoder {what}: {e}"))
}

/// Kept / total inputs of the masked layers since the last reset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct KeptInputs {
    /// Inputs read.
    pub kept: usize,
    /// Inputs offered.
    pub total: usize,
}

/// Counters shared by a decoder's masked layers.
#[derive(Debug, Default)]
struct Counters {
    kept: AtomicUsize,
    total: AtomicUsize,
}

/// The kernel's weight storage, by element type.
#[derive(Debug)]
enum Weights {
    F32(SparseLinear<f32>),
    Bf16(SparseLinear<half::bf16>),
    F16(SparseLinear<half::f16>),
}

impl Weights {
    fn new(wt: Array2<f32>, dtype: WeightDtype, name: &str) -> Result<Self> {
        Ok(match dtype {
            WeightDtype::F32 => {
                Self::F32(SparseLinear::from_transposed(wt, 0.0).map_err(kerr(name))?)
            }
            WeightDtype::Bf16 => Self::Bf16(
                SparseLinear::from_transposed(wt.mapv(half::bf16::from_f32), 0.0)
                    .map_err(kerr(name))?,
            ),
            WeightDtype::F16 => Self::F16(
                SparseLinear::from_transposed(wt.mapv(half::f16::from_f32), 0.0)
                    .map_err(kerr(name))?,
            ),
        })
    }

    fn out_features(&self) -> usize {
        match self {
            Self::F32(w) => w.out_features(),
            Self::Bf16(w) => w.out_features(),
            Self::F16(w) => w.out_features(),
        }
    }

    fn masked(&self, x: ArrayView1<'_, f32>, tau: f32, y: ArrayViewMut1<'_, f32>) -> Result<usize> {
        let stats = match self {
            Self::F32(w) => w.gemv_masked(x, tau, y),
            Self::Bf16(w) => w.gemv_masked(x, tau, y),
            Self::F16(w) => w.gemv_masked(x, tau, y),
        }
        .map_err(kerr("masked gemv"))?;
        Ok(stats.kept_inputs)
    }

    /// Up to [`MAX_BATCH`] rows at once, each row of Wᵀ read once (τ = 0: the dense product).
    fn rows(&self, x: ArrayView2<'_, f32>, tau: f32, y: ArrayViewMut2<'_, f32>) -> Result<()> {
        match self {
            Self::F32(w) => w.gemm_masked(x, tau, y),
            Self::Bf16(w) => w.gemm_masked(x, tau, y),
            Self::F16(w) => w.gemm_masked(x, tau, y),
        }
        .map_err(kerr("batched gemv"))?;
        Ok(())
    }

    fn dense(&self, x: ArrayView1<'_, f32>, y: ArrayViewMut1<'_, f32>) -> Result<()> {
        match self {
            Self::F32(w) => w.gemv_dense(x, y),
            Self::Bf16(w) => w.gemv_dense(x, y),
            Self::F16(w) => w.gemv_dense(x, y),
        }
        .map_err(kerr("dense gemv"))
    }
}

/// τ of one masked layer, shared with the [`Decoder`] so thresholds can change between runs
/// (f32 bits; NaN = dense).
type SharedTau = Arc<AtomicU32>;

/// A linear layer on the kernels' GEMV, masked while its τ is set.
#[derive(Debug)]
struct KernelLinear {
    w: Weights,
    bias: Option<Vec<f32>>,
    /// τ of the masked path (NaN: dense); `None` for layers that are never masked.
    tau: Option<SharedTau>,
    counters: Arc<Counters>,
}

impl StepLinear for KernelLinear {
    fn out_features(&self) -> usize {
        self.w.out_features()
    }

    fn apply(&self, x: &[f32], y: &mut [f32]) -> Result<()> {
        let xv = ArrayView1::from(x);
        match self.tau() {
            Some(t) => {
                let kept = self.w.masked(xv, t, ArrayViewMut1::from(&mut *y))?;
                self.counters.kept.fetch_add(kept, Ordering::Relaxed);
                self.counters.total.fetch_add(x.len(), Ordering::Relaxed);
            }
            None => self.w.dense(xv, ArrayViewMut1::from(&mut *y))?,
        }
        if let Some(b) = &self.bias {
            y.iter_mut().zip(b).for_each(|(v, b)| *v += b);
        }
        Ok(())
    }

    /// Blocks of [`MAX_BATCH`] rows through the kernels' small-batch product: each kept row of Wᵀ
    /// is read once per block instead of once per row (a row is skipped only when every row of
    /// the block drops its input). The counters count each row's own kept inputs, as `apply`.
    fn apply_rows(&self, x: &[f32], rows: usize, y: &mut [f32]) -> Result<()> {
        let n_out = self.out_features();
        let (n_in, tau) = (check_rows(x, rows, y, n_out)?, self.tau());
        // one row, or a dense product over a NaN (which the small-batch product would skip as
        // "not above τ = 0"): one row at a time through `apply`
        if rows == 1 || (tau.is_none() && x.iter().any(|v| v.is_nan())) {
            for (xr, yr) in x.chunks_exact(n_in).zip(y.chunks_exact_mut(n_out)) {
                self.apply(xr, yr)?;
            }
            return Ok(());
        }
        for (xb, yb) in x
            .chunks(MAX_BATCH * n_in)
            .zip(y.chunks_mut(MAX_BATCH * n_out))
        {
            let r = xb.len() / n_in;
            let shape = |n| ModelError::Invalid(format!("apply_rows: {r} rows of {n}"));
            let xv = ArrayView2::from_shape((r, n_in), xb).map_err(|_| shape(n_in))?;
            let yv = ArrayViewMut2::from_shape((r, n_out), &mut *yb).map_err(|_| shape(n_out))?;
            self.w.rows(xv, tau.unwrap_or(0.0), yv)?;
            if let Some(t) = tau {
                let kept = xb.iter().filter(|v| v.abs() > t).count();
                self.counters.kept.fetch_add(kept, Ordering::Relaxed);
                self.counters.total.fetch_add(xb.len(), Ordering::Relaxed);
            }
            if let Some(b) = &self.bias {
                for row in yb.chunks_exact_mut(n_out) {
                    row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
                }
            }
        }
        Ok(())
    }
}

impl KernelLinear {
    /// The τ of the masked path, `None` while dense.
    fn tau(&self) -> Option<f32> {
        self.tau
            .as_ref()
            .map(|t| f32::from_bits(t.load(Ordering::Relaxed)))
            .filter(|t| !t.is_nan())
    }
}

/// Builds [`KernelLinear`]s, registering the τ of every layer with an input site.
struct KernelFactory {
    dtype: WeightDtype,
    taus: RefCell<Vec<(String, SharedTau)>>,
    counters: Arc<Counters>,
}

impl LinearFactory for KernelFactory {
    fn linear(&self, spec: LinearSpec) -> Result<Box<dyn StepLinear>> {
        let name = spec.name.as_str();
        let wt = match spec.layout {
            WeightLayout::InOut => {
                Array2::from_shape_vec((spec.in_features, spec.out_features), spec.weight)
                    .map_err(|e| ModelError::Invalid(format!("{name}: {e}")))?
            }
            WeightLayout::OutIn => {
                Array2::from_shape_vec((spec.out_features, spec.in_features), spec.weight)
                    .map_err(|e| ModelError::Invalid(format!("{name}: {e}")))?
                    .reversed_axes()
                    .as_standard_layout()
                    .into_owned()
            }
        };
        let tau = spec.input_site.map(|site| {
            let t: SharedTau = Arc::new(AtomicU32::new(f32::NAN.to_bits()));
            self.taus.borrow_mut().push((site, Arc::clone(&t)));
            t
        });
        Ok(Box::new(KernelLinear {
            w: Weights::new(wt, self.dtype, name)?,
            bias: spec.bias,
            tau,
            counters: Arc::clone(&self.counters),
        }))
    }
}

/// A single-sequence CPU decoder on the kernels' GEMV: the model family's step decoder
/// ([`sparsity_models::HookedLm::step_decoder`]) with [`SparseLinear`] layers.
#[derive(Debug)]
pub struct Decoder {
    inner: Box<dyn StepDecoder>,
    counters: Arc<Counters>,
    /// (input site, τ) of every maskable layer.
    taus: Vec<(String, SharedTau)>,
}

impl Decoder {
    /// A dense decoder (`thresholds = None`) or one masking the TEAL sites with the per-site τ of
    /// `thresholds` (sites as in [`crate::sparse_decode::mlp_input_sites`]; a missing site is an
    /// error), with f32 weights.
    pub fn new(model: &CausalLm, thresholds: Option<&Thresholds>) -> Result<Self> {
        Self::with_weights(model, thresholds, WeightDtype::F32)
    }

    /// As [`Decoder::new`], with the weights stored as `dtype` (bf16 / f16 halve the bytes each
    /// token reads; products and sums stay f32).
    pub fn with_weights(
        model: &CausalLm,
        thresholds: Option<&Thresholds>,
        dtype: WeightDtype,
    ) -> Result<Self> {
        let counters = Arc::new(Counters::default());
        let factory = KernelFactory {
            dtype,
            taus: RefCell::new(Vec::new()),
            counters: Arc::clone(&counters),
        };
        let inner = model.inner().step_decoder(&factory)?;
        let mut decoder = Self {
            inner,
            counters,
            taus: factory.taus.into_inner(),
        };
        decoder.set_thresholds(thresholds)?;
        Ok(decoder)
    }

    /// Masks the TEAL sites with the τ of `thresholds` from the next step on (`None`: dense).
    /// A site of this model missing from `thresholds` is an error, and nothing changes.
    pub fn set_thresholds(&mut self, thresholds: Option<&Thresholds>) -> Result<()> {
        let values = self
            .taus
            .iter()
            .map(|(site, _)| match thresholds {
                None => Ok(f32::NAN),
                Some(t) => t.per_site.get(site).copied().ok_or_else(|| {
                    ModelError::Invalid(format!("decoder: no threshold for site `{site}`"))
                }),
            })
            .collect::<Result<Vec<f32>>>()?;
        for ((_, t), v) in self.taus.iter().zip(values) {
            t.store(v.to_bits(), Ordering::Relaxed);
        }
        Ok(())
    }

    /// Clears the caches / states (a new sequence) and the kept-input counters.
    pub fn reset(&mut self) {
        self.inner.reset();
        self.counters.kept.store(0, Ordering::Relaxed);
        self.counters.total.store(0, Ordering::Relaxed);
    }

    /// Kept inputs of the masked layers since the last reset.
    pub fn kept_inputs(&self) -> KeptInputs {
        KeptInputs {
            kept: self.counters.kept.load(Ordering::Relaxed),
            total: self.counters.total.load(Ordering::Relaxed),
        }
    }

    /// Feeds one token and returns the next-token logits \[vocab\].
    pub fn step(&mut self, token: u32) -> Result<Vec<f32>> {
        self.inner.step(token)
    }

    /// Feeds a prompt and returns the logits after its last token, as that many
    /// [`Decoder::step`]s would (within rounding): OPT, GPT-2 and the Llama family run each
    /// layer over the whole prompt, reading every weight once per [`MAX_BATCH`] tokens
    /// ([`StepDecoder::prefill`]; Mamba steps through the prompt). Empty `tokens` is an error; a
    /// token outside the vocabulary (or, for the transformers, a position past the model's) is
    /// refused before any token runs.
    pub fn prefill(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        self.inner.prefill(tokens)
    }
}

/// Teacher-forced decoding of `sequences` one token at a time: perplexity, decode speed and the
/// fraction of MLP inputs kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecodeRun {
    /// Perplexity of the predicted tokens.
    pub perplexity: Perplexity,
    /// Tokens fed per second (wall clock, this thread plus the kernel's rayon pool).
    pub tokens_per_second: f64,
    /// Kept / offered inputs of the masked layers.
    pub kept: KeptInputs,
}

/// Runs `decoder` over each sequence from a fresh state (see [`DecodeRun`]).
pub fn decode_sequences(decoder: &mut Decoder, sequences: &[Vec<u32>]) -> Result<DecodeRun> {
    let (mut nll_sum, mut tokens, mut fed) = (0.0f64, 0usize, 0usize);
    let mut kept = KeptInputs::default();
    let start = Instant::now();
    for (row, s) in sequences.iter().enumerate() {
        decoder.reset();
        for (i, &tok) in s.iter().enumerate() {
            let logits = decoder.step(tok)?;
            fed += 1;
            if let Some(&next) = s.get(i + 1) {
                // the target is checked here, before `step` would see it
                let Some(&target) = logits.get(next as usize) else {
                    return Err(ModelError::TokenOutOfVocab {
                        id: i64::from(next),
                        row,
                        col: i + 1,
                        vocab_size: logits.len(),
                    });
                };
                let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let lse = f64::from(m)
                    + logits
                        .iter()
                        .map(|v| f64::from(v - m).exp())
                        .sum::<f64>()
                        .ln();
                nll_sum += lse - f64::from(target);
                tokens += 1;
            }
        }
        let k = decoder.kept_inputs();
        kept.kept += k.kept;
        kept.total += k.total;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(DecodeRun {
        perplexity: Perplexity::from_sums(nll_sum, tokens, "decode")?,
        tokens_per_second: fed as f64 / secs.max(1e-12),
        kept,
    })
}
