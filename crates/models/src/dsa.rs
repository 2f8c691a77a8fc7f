//! A decoder-only transformer with switchable attention: dense causal attention, or DeepSeek
//! Sparse Attention (DSA; DeepSeek-AI 2025, "DeepSeek-V3.2-Exp: Boosting Long-Context Efficiency
//! with DeepSeek Sparse Attention").
//!
//! Blocks are pre-norm: `x += Attn(LN₁(x)); x += W₂·GELU(W₁·LN₂(x))`, with **learned absolute
//! positions** (`wpe`, as GPT-2: positions are the simplest choice that keeps every other part of the
//! comparison equal between dense and sparse runs; the maximum length is `max_seq_len`) and a tied
//! output head.
//!
//! **Lightning indexer** (per layer, on the attention input `h = LN₁(x)`): `H_I` query heads of
//! dimension `d_I`, one shared key per position and one weight per head and query:
//!
//! `I[t, s] = Σ_j w[t, j] · ReLU(q[t, j] · k[s])` for `s ≤ t`.
//!
//! **Top-k selection**: with `L` the sequence length and `k = max(1, ⌊L · keep_ratio⌋)`, query `t`
//! attends to the `k` causal positions `s ≤ t` with the largest `I[t, s]` (ties: lower `s` first), and
//! to all of `0..=t` when `t + 1 ≤ k`. Future positions are never candidates: the original study took
//! a top-k over a row whose future entries were merely masked, so rows with `t + 1 < k` selected
//! future tokens (that leak is what made a published small-scale sweep reach 0.999 accuracy). When
//! `k ≥ L` every row selects all its causal positions and the layer runs the dense code path, so
//! `keep_ratio = 1` gives exactly the dense model's logits.
//!
//! Attention over the selected keys is computed by **gather** (`SparseImpl::Gather`: each query
//! gathers its `k` keys and values, in query chunks to bound memory) or by a **masked dense**
//! fallback (`SparseImpl::MaskedDense`: full scores with unselected entries masked), which the tests
//! check against each other.
//!
//! **Indexer training**: the indexer's input is always detached (`h.detach()`), so its loss trains
//! only the indexer, and the top-k choice (not differentiable) sends it no gradient from the language
//! modelling loss. Its loss is `KL(p_t ‖ softmax(I[t, ·]))` averaged over queries (per token, like the
//! language-modelling loss) and summed over layers, where `p_t` is the main heads' attention summed over heads and renormalised (detached):
//! over all causal positions during the dense warm-up, over the selected set afterwards (DeepSeek's
//! two stages). Models here are trained from scratch, so the warm-up trains the main model densely at
//! the same time (DeepSeek froze an already trained dense model); see `docs/dsa.md`.

use burn::module::{Module, Param};
use burn::tensor::activation::{gelu, log_softmax, relu, softmax};
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
use crate::gpt2::{Conv1D, LayerNorm};
use crate::util::{normal_param, tensor_to_vec};

/// Architecture of a [`DsaTransformer`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DsaConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Longest sequence (learned position table size).
    pub max_seq_len: usize,
    /// Residual width.
    pub d_model: usize,
    /// Attention heads (must divide `d_model`).
    pub n_heads: usize,
    /// Decoder blocks.
    pub n_layers: usize,
    /// MLP hidden width.
    pub d_ff: usize,
    /// Indexer heads `H_I`.
    pub index_heads: usize,
    /// Indexer head dimension `d_I`.
    pub index_dim: usize,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
}

impl DsaConfig {
    /// The original study's configuration: d_model 512, 8 heads, 6 layers, d_ff 2048 (indexer: 4 heads
    /// of 64).
    pub fn paper(vocab_size: usize, max_seq_len: usize) -> Self {
        Self {
            vocab_size,
            max_seq_len,
            d_model: 512,
            n_heads: 8,
            n_layers: 6,
            d_ff: 2048,
            index_heads: 4,
            index_dim: 64,
            layer_norm_eps: 1e-5,
        }
    }

    /// A CPU-sized preset: d_model 64, 2 layers, 4 heads, d_ff 256 (indexer: 2 heads of 16).
    pub fn tiny(vocab_size: usize, max_seq_len: usize) -> Self {
        Self {
            vocab_size,
            max_seq_len,
            d_model: 64,
            n_heads: 4,
            n_layers: 2,
            d_ff: 256,
            index_heads: 2,
            index_dim: 16,
            layer_norm_eps: 1e-5,
        }
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("max_seq_len", self.max_seq_len),
            ("d_model", self.d_model),
            ("n_heads", self.n_heads),
            ("n_layers", self.n_layers),
            ("d_ff", self.d_ff),
            ("index_heads", self.index_heads),
            ("index_dim", self.index_dim),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(ModelError::Invalid(format!(
                    "DsaConfig.{name} = 0: must be at least 1"
                )));
            }
        }
        if !self.d_model.is_multiple_of(self.n_heads) {
            return Err(ModelError::Invalid(format!(
                "DsaConfig.d_model = {} is not divisible by n_heads = {}",
                self.d_model, self.n_heads
            )));
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return Err(ModelError::Invalid(format!(
                "DsaConfig.layer_norm_eps = {} must be finite and > 0",
                self.layer_norm_eps
            )));
        }
        Ok(())
    }
}

/// How the sparse attention is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SparseImpl {
    /// Gather the selected keys/values per query (the efficient form).
    Gather,
    /// Full score matrix with the unselected entries masked (the checking form).
    MaskedDense,
}

impl SparseImpl {
    /// The name [`std::str::FromStr`] reads (`gather`, `masked-dense`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Gather => "gather",
            Self::MaskedDense => "masked-dense",
        }
    }
}

impl std::str::FromStr for SparseImpl {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "gather" => Ok(Self::Gather),
            "masked-dense" => Ok(Self::MaskedDense),
            _ => Err(ModelError::Invalid(format!(
                "sparse attention implementation `{s}`: expected gather or masked-dense"
            ))),
        }
    }
}

/// Which attention the model runs.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum AttentionMode {
    /// Dense causal attention (the baseline).
    Dense,
    /// DSA: indexer + top-k of `max(1, ⌊L · keep_ratio⌋)` causal positions per query.
    Sparse {
        /// Fraction of the sequence length kept per query, in (0, 1].
        keep_ratio: f64,
        /// Gather or masked dense.
        implementation: SparseImpl,
    },
}

impl AttentionMode {
    /// DSA with the gather implementation.
    pub fn sparse(keep_ratio: f64) -> Self {
        Self::Sparse {
            keep_ratio,
            implementation: SparseImpl::Gather,
        }
    }

    /// Keys kept per query for a sequence of `len` tokens (`None` for dense). Errors on a keep ratio
    /// outside (0, 1].
    pub fn top_k(&self, len: usize) -> Result<Option<usize>> {
        match *self {
            Self::Dense => Ok(None),
            Self::Sparse { keep_ratio, .. } => {
                if !(keep_ratio.is_finite() && keep_ratio > 0.0 && keep_ratio <= 1.0) {
                    return Err(ModelError::Invalid(format!(
                        "keep_ratio = {keep_ratio} must be in (0, 1]"
                    )));
                }
                Ok(Some(((len as f64 * keep_ratio).floor() as usize).max(1)))
            }
        }
    }
}

/// The selected key positions of every query of one or more sequences.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    /// Sequences.
    pub batch: usize,
    /// Sequence length `L`.
    pub len: usize,
    /// Keys per query `k` (rows with `t + 1 < k` hold `t + 1`).
    pub k: usize,
    /// `[batch, L, k]` key indices, each row ascending; unused slots (when `t + 1 < k`) hold 0.
    pub indices: Vec<usize>,
    /// `[batch, L, k]` whether the slot holds a selected key.
    pub valid: Vec<bool>,
}

impl Selection {
    /// The selected keys of query `t` in sequence `b`, ascending.
    pub fn keys(&self, b: usize, t: usize) -> Vec<usize> {
        let base = (b * self.len + t) * self.k;
        (0..self.k)
            .filter(|&j| self.valid[base + j])
            .map(|j| self.indices[base + j])
            .collect()
    }

    /// `[batch, L, L]` row-major: `true` where query t attends to key s.
    pub fn dense_mask(&self) -> Vec<bool> {
        let l = self.len;
        let mut mask = vec![false; self.batch * l * l];
        for row in 0..self.batch * l {
            for j in 0..self.k {
                let slot = row * self.k + j;
                if self.valid[slot] {
                    mask[row * l + self.indices[slot]] = true;
                }
            }
        }
        mask
    }
}

/// Top-k causal selection from indexer scores `[batch, L, L]` (row-major, query-major): for each
/// query `t`, the `min(k, t + 1)` positions `s ≤ t` with the largest score, ties broken towards the
/// lower `s` (scores compared with `f32::total_cmp`, so the result is deterministic even for NaN).
pub fn select_top_k(scores: &[f32], batch: usize, len: usize, k: usize) -> Result<Selection> {
    if scores.len() != batch * len * len {
        return Err(ModelError::Invalid(format!(
            "indexer scores have {} values, expected batch·L·L = {batch}·{len}·{len}",
            scores.len()
        )));
    }
    if k == 0 {
        return Err(ModelError::Invalid("top-k with k = 0".into()));
    }
    let mut indices = vec![0usize; batch * len * k];
    let mut valid = vec![false; batch * len * k];
    let mut order: Vec<usize> = Vec::with_capacity(len);
    for b in 0..batch {
        for t in 0..len {
            let row = &scores[(b * len + t) * len..(b * len + t + 1) * len];
            let base = (b * len + t) * k;
            order.clear();
            order.extend(0..=t);
            if t + 1 > k {
                let cmp = |&x: &usize, &y: &usize| row[y].total_cmp(&row[x]).then(x.cmp(&y));
                order.select_nth_unstable_by(k - 1, cmp);
                order.truncate(k);
            }
            order.sort_unstable();
            for (j, &s) in order.iter().enumerate() {
                indices[base + j] = s;
                valid[base + j] = true;
            }
        }
    }
    Ok(Selection {
        batch,
        len,
        k,
        indices,
        valid,
    })
}

/// The lightning indexer of one layer.
#[derive(Module, Debug)]
pub struct Indexer {
    /// Query projection: [d_model, H_I·d_I].
    pub wq: Conv1D,
    /// Shared key projection: [d_model, d_I].
    pub wk: Conv1D,
    /// Per-head weights: [d_model, H_I].
    pub ww: Conv1D,
}

impl Indexer {
    /// Indexer scores `I[b, t, s]` for `h` [batch, L, d_model] (future entries included: the caller
    /// restricts to `s ≤ t`).
    pub fn scores(&self, h: Tensor<3>, heads: usize, dim: usize) -> Tensor<3> {
        let [b, l, _] = h.dims();
        let q = self.wq.forward(h.clone()).reshape([b, l * heads, dim]); // [b, L·H_I, d_I]
        let k = self.wk.forward(h.clone()); // [b, L, d_I]
        let w = self.ww.forward(h); // [b, L, H_I]
        let dots = relu(q.matmul(k.swap_dims(1, 2))).reshape([b, l, heads, l]);
        (dots * w.unsqueeze_dim::<4>(3))
            .sum_dim(2)
            .reshape([b, l, l])
    }
}

/// One pre-norm decoder block with switchable attention.
#[derive(Module, Debug)]
pub struct DsaBlock {
    /// LayerNorm before attention.
    pub ln_1: LayerNorm,
    /// Fused q, k, v projection: [d_model, 3·d_model].
    pub qkv: Conv1D,
    /// Attention output projection: [d_model, d_model].
    pub proj: Conv1D,
    /// LayerNorm before the MLP.
    pub ln_2: LayerNorm,
    /// MLP up projection: [d_model, d_ff].
    pub fc: Conv1D,
    /// MLP down projection: [d_ff, d_model].
    pub fc_out: Conv1D,
    /// The lightning indexer.
    pub indexer: Indexer,
}

/// The transformer.
#[derive(Module, Debug)]
pub struct DsaTransformer {
    /// Token embedding [vocab, d_model] (tied output head).
    pub wte: Param<Tensor<2>>,
    /// Learned positions [max_seq_len, d_model].
    pub wpe: Param<Tensor<2>>,
    /// Blocks.
    pub blocks: Vec<DsaBlock>,
    /// Final LayerNorm.
    pub ln_f: LayerNorm,
    /// The architecture.
    #[module(skip)]
    pub config: DsaConfig,
    /// The attention the model runs (in training: after the warm-up).
    #[module(skip)]
    pub mode: AttentionMode,
    /// Indexer-training options.
    #[module(skip)]
    pub indexer_training: IndexerTraining,
}

/// How the indexer is trained alongside the language model.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct IndexerTraining {
    /// Optimiser steps of dense attention (indexer trained by KL to the dense attention) before the
    /// sparse phase.
    pub warmup_steps: usize,
    /// Weight of the indexer's KL loss added to the language-modelling loss.
    pub loss_weight: f64,
}

impl Default for IndexerTraining {
    fn default() -> Self {
        Self {
            warmup_steps: 100,
            loss_weight: 1.0,
        }
    }
}

/// What a forward pass returns.
#[derive(Debug, Clone)]
pub struct DsaOutput {
    /// [batch, L, vocab]
    pub logits: Tensor<3>,
    /// Indexer KL loss summed over layers (`[1]`), when requested.
    pub indexer_loss: Option<Tensor<1>>,
    /// Per layer, the selection used (sparse mode only, and only when `k < L`).
    pub selections: Vec<Option<Selection>>,
}

impl DsaTransformer {
    /// A randomly initialised model (N(0, 0.02²) weights, residual projections scaled by
    /// 1/√(2·n_layers), zero biases, unit LayerNorms), seeded.
    pub fn init(
        config: &DsaConfig,
        mode: AttentionMode,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        mode.top_k(config.max_seq_len)?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let d = config.d_model;
        let std = 0.02f32;
        let proj_std = std / (2.0 * config.n_layers as f32).sqrt();
        let wte = normal_param(&mut rng, [config.vocab_size, d], std, device);
        let wpe = normal_param(&mut rng, [config.max_seq_len, d], std, device);
        let blocks = (0..config.n_layers)
            .map(|_| DsaBlock {
                ln_1: LayerNorm::ones(d, device),
                qkv: Conv1D::init(&mut rng, d, 3 * d, std, device),
                proj: Conv1D::init(&mut rng, d, d, proj_std, device),
                ln_2: LayerNorm::ones(d, device),
                fc: Conv1D::init(&mut rng, d, config.d_ff, std, device),
                fc_out: Conv1D::init(&mut rng, config.d_ff, d, proj_std, device),
                indexer: Indexer {
                    wq: Conv1D::init(
                        &mut rng,
                        d,
                        config.index_heads * config.index_dim,
                        std,
                        device,
                    ),
                    wk: Conv1D::init(&mut rng, d, config.index_dim, std, device),
                    ww: Conv1D::init(&mut rng, d, config.index_heads, std, device),
                },
            })
            .collect();
        Ok(Self {
            wte,
            wpe,
            blocks,
            ln_f: LayerNorm::ones(d, device),
            config: config.clone(),
            mode,
            indexer_training: IndexerTraining::default(),
        })
    }

    /// Forward in the model's own mode: logits [batch, L, vocab].
    pub fn logits(&self, input_ids: Tensor<2, Int>) -> Result<Tensor<3>> {
        Ok(self.forward(input_ids, self.mode, false)?.logits)
    }

    /// Forward with an explicit attention mode; `indexer_loss` also computes the indexer's KL loss.
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        mode: AttentionMode,
        indexer_loss: bool,
    ) -> Result<DsaOutput> {
        let c = &self.config;
        let [b, l] = input_ids.dims();
        if l == 0 || l > c.max_seq_len {
            return Err(ModelError::SequenceTooLong {
                seq: l,
                max: c.max_seq_len,
            });
        }
        let top_k = mode.top_k(l)?;
        let device = input_ids.device();
        let d = c.d_model;
        let h = c.n_heads;
        let dh = d / h;
        let scale = 1.0 / (dh as f64).sqrt();

        let ids = input_ids.reshape([b * l]);
        let positions = Tensor::<1, Int>::arange(0..l as i64, &device);
        let tok = self.wte.val().select(0, ids).reshape([b, l, d]);
        let pos = self.wpe.val().select(0, positions).reshape([1, l, d]);
        let mut x = tok + pos;

        let future: Vec<bool> = (0..l * l).map(|i| (i % l) > (i / l)).collect();
        let future = Tensor::<2, Bool>::from_data(TensorData::new(future, [l, l]), &device);
        let mut total_kl: Option<Tensor<1>> = None;
        let mut selections = Vec::with_capacity(self.blocks.len());

        for blk in &self.blocks {
            let a = blk.ln_1.forward(x.clone(), c.layer_norm_eps);
            let qkv = blk.qkv.forward(a.clone());
            let split = |i: usize| {
                qkv.clone()
                    .narrow(2, i * d, d)
                    .reshape([b, l, h, dh])
                    .swap_dims(1, 2)
            };
            let (q, k, v) = (split(0), split(1), split(2));
            let sparse_k = top_k.filter(|&k| k < l);
            let need_index = sparse_k.is_some() || indexer_loss;
            let index_scores = need_index.then(|| {
                blk.indexer
                    .scores(a.detach(), c.index_heads, c.index_dim)
                    .mask_fill(future.clone().unsqueeze::<3>().expand([b, l, l]), f32::MIN)
            });

            let (o, selection, kl) = match (sparse_k, mode) {
                (Some(kk), AttentionMode::Sparse { implementation, .. }) => {
                    let scores = match &index_scores {
                        Some(s) => s.clone(),
                        None => return Err(ModelError::Backend("indexer scores missing".into())),
                    };
                    let values = tensor_to_vec(&scores)?;
                    let sel = select_top_k(&values, b, l, kk)?;
                    let (o, kl) = match implementation {
                        SparseImpl::MaskedDense => {
                            let keep = Tensor::<3, Bool>::from_data(
                                TensorData::new(sel.dense_mask(), [b, l, l]),
                                &device,
                            );
                            let drop = keep.bool_not();
                            let att = q.matmul(k.swap_dims(2, 3)).mul_scalar(scale).mask_fill(
                                drop.clone().unsqueeze_dim::<4>(1).expand([b, h, l, l]),
                                f32::MIN,
                            );
                            let probs = softmax(att, 3);
                            let kl = indexer_loss.then(|| indexer_kl(&probs, scores, drop));
                            (probs.matmul(v), kl)
                        }
                        SparseImpl::Gather => gather_attention(
                            q,
                            k,
                            v,
                            &sel,
                            scale,
                            indexer_loss.then_some(scores),
                            &device,
                        )?,
                    };
                    (o, Some(sel), kl)
                }
                _ => {
                    let causal = future.clone().unsqueeze::<3>().expand([b, l, l]);
                    let att = q.matmul(k.swap_dims(2, 3)).mul_scalar(scale).mask_fill(
                        causal.clone().unsqueeze_dim::<4>(1).expand([b, h, l, l]),
                        f32::MIN,
                    );
                    let probs = softmax(att, 3);
                    let kl = match index_scores {
                        Some(s) if indexer_loss => Some(indexer_kl(&probs, s, causal)),
                        _ => None,
                    };
                    (probs.matmul(v), None, kl)
                }
            };
            selections.push(selection);
            if let Some(kl) = kl {
                total_kl = Some(match total_kl {
                    Some(t) => t + kl,
                    None => kl,
                });
            }
            let o = o.swap_dims(1, 2).reshape([b, l, d]);
            x = x + blk.proj.forward(o);
            let m = blk.ln_2.forward(x.clone(), c.layer_norm_eps);
            x = x + blk.fc_out.forward(gelu(blk.fc.forward(m)));
        }
        let x = self.ln_f.forward(x, c.layer_norm_eps);
        let logits = burn::tensor::module::linear(x, self.wte.val().transpose(), None);
        Ok(DsaOutput {
            logits,
            indexer_loss: total_kl,
            selections,
        })
    }
}

/// KL(p ‖ q) of the indexer, averaged over queries (batch · L): `p` = the main heads'
/// attention `probs` [b, h, L, L] summed over heads and renormalised (detached), `q` = softmax of the
/// indexer `scores` [b, L, L] over the entries not in `dropped` [b, L, L].
fn indexer_kl(probs: &Tensor<4>, scores: Tensor<3>, dropped: Tensor<3, Bool>) -> Tensor<1> {
    let [b, _, l, _] = probs.dims();
    let p = probs.clone().detach().sum_dim(1).reshape([b, l, l]);
    let p = p.clone() / p.sum_dim(2);
    kl_terms(p, scores, dropped, b * l)
}

/// Σ p·(ln p − log_softmax(scores)) over the kept entries, / `queries`.
fn kl_terms<const D: usize>(
    p: Tensor<D>,
    scores: Tensor<D>,
    dropped: Tensor<D, Bool>,
    queries: usize,
) -> Tensor<1> {
    let log_q = log_softmax(scores.mask_fill(dropped.clone(), f32::MIN), D - 1)
        .mask_fill(dropped.clone(), 0.0);
    let log_p = p.clone().clamp_min(1e-30).log().mask_fill(dropped, 0.0);
    (p * (log_p - log_q)).sum().div_scalar(queries as f64)
}

/// Rows of queries processed together by the gather implementation (bounds the gathered
/// `[batch, heads, rows, k, d_h]` keys and values).
const GATHER_CHUNK: usize = 128;

/// Attention over the selected keys by gathering them per query, in chunks of queries; with
/// `index_scores`, also the indexer KL over the selected set.
fn gather_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    sel: &Selection,
    scale: f64,
    index_scores: Option<Tensor<3>>,
    device: &Device,
) -> Result<(Tensor<4>, Option<Tensor<1>>)> {
    let [b, h, l, dh] = q.dims();
    let kk = sel.k;
    let mut outs = Vec::new();
    let mut kl: Option<Tensor<1>> = None;
    let mut start = 0;
    while start < l {
        let rows = GATHER_CHUNK.min(l - start);
        let mut idx = Vec::with_capacity(b * rows * kk);
        let mut invalid = Vec::with_capacity(b * rows * kk);
        for bi in 0..b {
            let from = (bi * l + start) * kk;
            let to = from + rows * kk;
            idx.extend(sel.indices[from..to].iter().map(|&i| i as i64));
            invalid.extend(sel.valid[from..to].iter().map(|&v| !v));
        }
        let idx = Tensor::<3, Int>::from_data(TensorData::new(idx, [b, rows, kk]), device);
        let invalid = Tensor::<3, Bool>::from_data(TensorData::new(invalid, [b, rows, kk]), device);
        let gather_idx = idx
            .clone()
            .reshape([b, 1, rows * kk, 1])
            .expand([b, h, rows * kk, dh]);
        let k_sel = k
            .clone()
            .gather(2, gather_idx.clone())
            .reshape([b, h, rows, kk, dh]);
        let v_sel = v
            .clone()
            .gather(2, gather_idx)
            .reshape([b, h, rows, kk, dh]);
        let q_rows = q.clone().narrow(2, start, rows).unsqueeze_dim::<5>(3);
        let att = (q_rows * k_sel)
            .sum_dim(4)
            .reshape([b, h, rows, kk])
            .mul_scalar(scale)
            .mask_fill(
                invalid
                    .clone()
                    .unsqueeze_dim::<4>(1)
                    .expand([b, h, rows, kk]),
                f32::MIN,
            );
        let probs = softmax(att, 3);
        if let Some(scores) = &index_scores {
            let p = probs.clone().detach().sum_dim(1).reshape([b, rows, kk]);
            let p = p.clone() / p.sum_dim(2);
            let s = scores.clone().narrow(1, start, rows).gather(2, idx);
            let term = kl_terms(p, s, invalid, b * l);
            kl = Some(match kl {
                Some(t) => t + term,
                None => term,
            });
        }
        let o = (probs.unsqueeze_dim::<5>(4) * v_sel)
            .sum_dim(3)
            .reshape([b, h, rows, dh]);
        outs.push(o);
        start += rows;
    }
    Ok((Tensor::cat(outs, 2), kl))
}

impl crate::trainable::CausalLmTrain for DsaTransformer {
    fn causal_logits(
        &self,
        input_ids: Tensor<2, Int>,
    ) -> std::result::Result<Tensor<3>, Box<dyn std::error::Error + Send + Sync>> {
        Ok(self.logits(input_ids)?)
    }

    fn training_logits(
        &self,
        input_ids: Tensor<2, Int>,
        step: usize,
    ) -> std::result::Result<(Tensor<3>, Option<Tensor<1>>), Box<dyn std::error::Error + Send + Sync>>
    {
        let train = self.indexer_training;
        let mode = if step < train.warmup_steps {
            AttentionMode::Dense
        } else {
            self.mode
        };
        let out = self.forward(input_ids, mode, train.loss_weight > 0.0)?;
        let aux = out.indexer_loss.map(|kl| kl.mul_scalar(train.loss_weight));
        Ok((out.logits, aux))
    }
}
