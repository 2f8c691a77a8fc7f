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

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use ndarray::{Array2, ArrayView1, ArrayViewMut1};
use serde::{Deserialize, Serialize};
use sparsity_kernels::SparseLinear;

use crate::sparse_decode::Thresholds;
use sparsity_models::error::{ModelError, Result};
use sparsity_models::lm::CausalLm;
use sparsity_models::step::{LinearFactory, LinearSpec, StepDecoder, StepLinear, WeightLayout};
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

/// A linear layer on the kernels' GEMV, masked when it has a τ.
#[derive(Debug)]
struct KernelLinear {
    w: SparseLinear<f32>,
    bias: Option<Vec<f32>>,
    /// τ of the masked path (`None`: dense).
    tau: Option<f32>,
    counters: Arc<Counters>,
}

impl StepLinear for KernelLinear {
    fn out_features(&self) -> usize {
        self.w.out_features()
    }

    fn apply(&self, x: &[f32], y: &mut [f32]) -> Result<()> {
        let xv = ArrayView1::from(x);
        match self.tau {
            Some(t) => {
                let kept = self
                    .w
                    .gemv_masked(xv, t, ArrayViewMut1::from(&mut *y))
                    .map_err(kerr("masked gemv"))?
                    .kept_inputs;
                self.counters.kept.fetch_add(kept, Ordering::Relaxed);
                self.counters.total.fetch_add(x.len(), Ordering::Relaxed);
            }
            None => {
                self.w
                    .gemv_dense(xv, ArrayViewMut1::from(&mut *y))
                    .map_err(kerr("dense gemv"))?;
            }
        }
        if let Some(b) = &self.bias {
            y.iter_mut().zip(b).for_each(|(v, b)| *v += b);
        }
        Ok(())
    }
}

/// Builds [`KernelLinear`]s, with τ from the thresholds for the masked sites.
struct KernelFactory<'a> {
    thresholds: Option<&'a Thresholds>,
    counters: Arc<Counters>,
}

impl LinearFactory for KernelFactory<'_> {
    fn linear(&self, spec: LinearSpec) -> Result<Box<dyn StepLinear>> {
        let tau = match (self.thresholds, &spec.input_site) {
            (Some(t), Some(site)) => Some(t.per_site.get(site).copied().ok_or_else(|| {
                ModelError::Invalid(format!("decoder: no threshold for site `{site}`"))
            })?),
            _ => None,
        };
        let name = spec.name.as_str();
        let w = match spec.layout {
            WeightLayout::InOut => {
                let wt = Array2::from_shape_vec((spec.in_features, spec.out_features), spec.weight)
                    .map_err(|e| ModelError::Invalid(format!("{name}: {e}")))?;
                SparseLinear::from_transposed(wt, tau.unwrap_or(0.0)).map_err(kerr(name))?
            }
            WeightLayout::OutIn => {
                let w = Array2::from_shape_vec((spec.out_features, spec.in_features), spec.weight)
                    .map_err(|e| ModelError::Invalid(format!("{name}: {e}")))?;
                SparseLinear::from_weight(w.view(), tau.unwrap_or(0.0)).map_err(kerr(name))?
            }
        };
        Ok(Box::new(KernelLinear {
            w,
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
}

impl Decoder {
    /// A dense decoder (`thresholds = None`) or one masking the MLP inputs with the per-site τ of
    /// `thresholds` (sites as in [`crate::sparse_decode::mlp_input_sites`]; a missing site is an
    /// error).
    pub fn new(model: &CausalLm, thresholds: Option<&Thresholds>) -> Result<Self> {
        let counters = Arc::new(Counters::default());
        let factory = KernelFactory {
            thresholds,
            counters: Arc::clone(&counters),
        };
        Ok(Self {
            inner: model.inner().step_decoder(&factory)?,
            counters,
        })
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

    /// Feeds one token and returns the next-token logits [vocab].
    pub fn step(&mut self, token: u32) -> Result<Vec<f32>> {
        self.inner.step(token)
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
