//! Token-by-token decoding on the CPU with the `sparsity-kernels` GEMV, dense or with TEAL-style
//! masked MLP inputs ([`crate::sparse_decode`] thresholds).
//!
//! A [`Decoder`] copies the weights of a loaded [`CausalLm`] into the kernel layout (Wᵀ
//! [in, out], which is how burn and GPT-2's Conv1D already store them) and runs one token per
//! [`Decoder::step`]: GPT-2 with a key/value cache, Mamba with its convolution window and SSM state
//! (the recurrent form of the selective scan). Every linear layer goes through the same kernel;
//! with thresholds, the MLP-input layers (GPT-2 `c_fc`, `mlp.c_proj`; Mamba `in_proj`,
//! `out_proj`) use the masked GEMV y = W·mask(x), skipping the rows of Wᵀ whose input has
//! |x_j| ≤ τ. Without thresholds the logits equal the batched forward pass (tested to 1e-4), and
//! with them they equal the forward pass under the same [`sparsity_models::Edit::Threshold`] intervention,
//! so perplexity measured either way agrees.

use std::time::Instant;

use ndarray::{Array2, ArrayView1, ArrayViewMut1};
use serde::{Deserialize, Serialize};
use sparsity_kernels::SparseLinear;

use crate::sparse_decode::Thresholds;
use burn::module::Param;
use burn::tensor::Tensor;
use sparsity_models::config::Activation;
use sparsity_models::error::{ModelError, Result};
use sparsity_models::lm::CausalLm;
use sparsity_models::text::Perplexity;
use sparsity_models::util::tensor_to_vec;

fn kerr(what: &str) -> impl Fn(sparsity_kernels::KernelError) -> ModelError + '_ {
    move |e| ModelError::Invalid(format!("decoder {what}: {e}"))
}

fn vals<const D: usize>(p: &Param<Tensor<D>>) -> Result<Vec<f32>> {
    tensor_to_vec(&p.val())
}

/// A linear layer in kernel layout with an optional bias.
#[derive(Debug, Clone)]
struct Lin {
    w: SparseLinear<f32>,
    bias: Option<Vec<f32>>,
    /// τ of the masked path (`None`: dense).
    tau: Option<f32>,
}

impl Lin {
    /// From a weight stored [in, out] (burn / Conv1D layout).
    fn new(
        name: &str,
        w: &Param<Tensor<2>>,
        bias: Option<&Param<Tensor<1>>>,
        tau: Option<f32>,
    ) -> Result<Self> {
        let [i, o] = w.val().dims();
        let wt = Array2::from_shape_vec((i, o), vals(w)?)
            .map_err(|e| ModelError::Invalid(format!("{name}: {e}")))?;
        Ok(Self {
            w: SparseLinear::from_transposed(wt, tau.unwrap_or(0.0)).map_err(kerr(name))?,
            bias: bias.map(vals).transpose()?,
            tau,
        })
    }

    fn out(&self) -> usize {
        self.w.out_features()
    }

    /// y = W·x (+ b), masked when the layer has a τ; returns the kept inputs.
    fn apply(&self, x: &[f32], y: &mut [f32]) -> Result<usize> {
        let xv = ArrayView1::from(x);
        let kept = match self.tau {
            Some(t) => {
                self.w
                    .gemv_masked(xv, t, ArrayViewMut1::from(&mut *y))
                    .map_err(kerr("masked gemv"))?
                    .kept_inputs
            }
            None => {
                self.w
                    .gemv_dense(xv, ArrayViewMut1::from(&mut *y))
                    .map_err(kerr("dense gemv"))?;
                x.len()
            }
        };
        if let Some(b) = &self.bias {
            y.iter_mut().zip(b).for_each(|(v, b)| *v += b);
        }
        Ok(kept)
    }
}

fn act(a: Activation, x: f32) -> f32 {
    let sig = |v: f32| 1.0 / (1.0 + (-v).exp());
    match a {
        Activation::GeluTanh => {
            let c = (2.0f32 / std::f32::consts::PI).sqrt();
            0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
        }
        Activation::GeluErf => {
            (0.5 * f64::from(x) * (1.0 + statrs::function::erf::erf(f64::from(x) / 2f64.sqrt())))
                as f32
        }
        Activation::QuickGelu => x * sig(1.702 * x),
        Activation::Relu => x.max(0.0),
        Activation::Silu => x * sig(x),
        Activation::Tanh => x.tanh(),
        Activation::Sigmoid => sig(x),
        Activation::Identity => x,
    }
}

fn layer_norm(x: &[f32], w: &[f32], b: &[f32], eps: f64) -> Vec<f32> {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    let inv = 1.0 / (var + eps as f32).sqrt();
    x.iter()
        .zip(w.iter().zip(b))
        .map(|(v, (w, b))| (v - mean) * inv * w + b)
        .collect()
}

fn rms_norm(x: &[f32], w: &[f32], eps: f64) -> Vec<f32> {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let inv = 1.0 / (ms + eps as f32).sqrt();
    x.iter().zip(w).map(|(v, w)| v * inv * w).collect()
}

#[derive(Debug, Clone)]
struct Gpt2Block {
    ln1: (Vec<f32>, Vec<f32>),
    c_attn: Lin,
    attn_proj: Lin,
    ln2: (Vec<f32>, Vec<f32>),
    c_fc: Lin,
    mlp_proj: Lin,
    k: Vec<f32>,
    v: Vec<f32>,
}

#[derive(Debug, Clone)]
struct MambaLayer {
    norm: Vec<f32>,
    in_proj: Lin,
    conv_w: Vec<f32>,
    conv_b: Option<Vec<f32>>,
    x_proj: Lin,
    dt_proj: Lin,
    a: Vec<f32>,
    d: Vec<f32>,
    out_proj: Lin,
    window: Vec<f32>,
    h: Vec<f32>,
}

#[derive(Debug, Clone)]
enum Body {
    Gpt2 {
        wte: Vec<f32>,
        wpe: Vec<f32>,
        n_positions: usize,
        blocks: Vec<Gpt2Block>,
        ln_f: (Vec<f32>, Vec<f32>),
        heads: usize,
        scale_weights: bool,
        inverse_layer_idx: bool,
    },
    Mamba {
        emb: Vec<f32>,
        layers: Vec<MambaLayer>,
        norm_f: Vec<f32>,
        e: usize,
        n: usize,
        r: usize,
        k: usize,
    },
}

/// Kept / total inputs of the masked layers since the last reset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct KeptInputs {
    /// Inputs read.
    pub kept: usize,
    /// Inputs offered.
    pub total: usize,
}

/// A single-sequence CPU decoder; see the module docs.
#[derive(Debug, Clone)]
pub struct Decoder {
    body: Body,
    head: Lin,
    hidden: usize,
    eps: f64,
    act: Activation,
    pos: usize,
    kept: KeptInputs,
}

impl Decoder {
    /// A dense decoder (`thresholds = None`) or one masking the MLP inputs with the per-site τ of
    /// `thresholds` (sites as in [`crate::sparse_decode::mlp_input_sites`]; a missing site is an
    /// error).
    pub fn new(model: &CausalLm, thresholds: Option<&Thresholds>) -> Result<Self> {
        let tau = |site: String| -> Result<Option<f32>> {
            match thresholds {
                None => Ok(None),
                Some(t) => t.per_site.get(&site).copied().map(Some).ok_or_else(|| {
                    ModelError::Invalid(format!("decoder: no threshold for site `{site}`"))
                }),
            }
        };
        match model {
            CausalLm::Gpt2(m) => {
                let c = &m.config;
                let mut blocks = Vec::with_capacity(m.blocks.len());
                for (l, b) in m.blocks.iter().enumerate() {
                    blocks.push(Gpt2Block {
                        ln1: (vals(&b.ln_1.weight)?, vals(&b.ln_1.bias)?),
                        c_attn: Lin::new("c_attn", &b.c_attn.weight, Some(&b.c_attn.bias), None)?,
                        attn_proj: Lin::new(
                            "attn.c_proj",
                            &b.attn_c_proj.weight,
                            Some(&b.attn_c_proj.bias),
                            None,
                        )?,
                        ln2: (vals(&b.ln_2.weight)?, vals(&b.ln_2.bias)?),
                        c_fc: Lin::new(
                            "c_fc",
                            &b.c_fc.weight,
                            Some(&b.c_fc.bias),
                            tau(format!("mlp_in.{l}"))?,
                        )?,
                        mlp_proj: Lin::new(
                            "mlp.c_proj",
                            &b.mlp_c_proj.weight,
                            Some(&b.mlp_c_proj.bias),
                            tau(format!("mlp_act.{l}"))?,
                        )?,
                        k: Vec::new(),
                        v: Vec::new(),
                    });
                }
                let head = head_lin(m.lm_head.as_ref().unwrap_or(&m.wte))?;
                Ok(Self {
                    body: Body::Gpt2 {
                        wte: vals(&m.wte)?,
                        wpe: vals(&m.wpe)?,
                        n_positions: c.n_positions,
                        blocks,
                        ln_f: (vals(&m.ln_f.weight)?, vals(&m.ln_f.bias)?),
                        heads: c.n_head,
                        scale_weights: c.scale_attn_weights,
                        inverse_layer_idx: c.scale_attn_by_inverse_layer_idx,
                    },
                    head,
                    hidden: c.n_embd,
                    eps: c.layer_norm_epsilon,
                    act: c.activation()?,
                    pos: 0,
                    kept: KeptInputs::default(),
                })
            }
            CausalLm::Mamba(m) => {
                let c = &m.config;
                let (e, n, r, k) = (c.inner_size(), c.state_size, c.dt_rank(), c.conv_kernel);
                let mut layers = Vec::with_capacity(m.layers.len());
                for (l, b) in m.layers.iter().enumerate() {
                    let x = &b.mixer;
                    layers.push(MambaLayer {
                        norm: vals(&b.norm)?,
                        in_proj: Lin::new(
                            "in_proj",
                            &x.in_proj.weight,
                            x.in_proj.bias.as_ref(),
                            tau(format!("mixer_in.{l}"))?,
                        )?,
                        conv_w: vals(&x.conv_weight)?,
                        conv_b: x.conv_bias.as_ref().map(vals).transpose()?,
                        x_proj: Lin::new("x_proj", &x.x_proj, None, None)?,
                        dt_proj: Lin::new(
                            "dt_proj",
                            &x.dt_proj.weight,
                            x.dt_proj.bias.as_ref(),
                            None,
                        )?,
                        a: vals(&x.a_log)?.iter().map(|v| -v.exp()).collect(),
                        d: vals(&x.d)?,
                        out_proj: Lin::new(
                            "out_proj",
                            &x.out_proj.weight,
                            x.out_proj.bias.as_ref(),
                            tau(format!("mixer_gated.{l}"))?,
                        )?,
                        window: vec![0.0; e * k],
                        h: vec![0.0; e * n],
                    });
                }
                let head = head_lin(m.lm_head.as_ref().unwrap_or(&m.embeddings))?;
                Ok(Self {
                    body: Body::Mamba {
                        emb: vals(&m.embeddings)?,
                        layers,
                        norm_f: vals(&m.norm_f)?,
                        e,
                        n,
                        r,
                        k,
                    },
                    head,
                    hidden: c.hidden_size,
                    eps: c.layer_norm_epsilon,
                    act: c.activation()?,
                    pos: 0,
                    kept: KeptInputs::default(),
                })
            }
        }
    }

    /// Clears the caches / states (a new sequence) and the kept-input counters.
    pub fn reset(&mut self) {
        self.pos = 0;
        self.kept = KeptInputs::default();
        match &mut self.body {
            Body::Gpt2 { blocks, .. } => blocks.iter_mut().for_each(|b| {
                b.k.clear();
                b.v.clear();
            }),
            Body::Mamba { layers, .. } => layers.iter_mut().for_each(|l| {
                l.window.iter_mut().for_each(|v| *v = 0.0);
                l.h.iter_mut().for_each(|v| *v = 0.0);
            }),
        }
    }

    /// Kept inputs of the masked layers since the last reset.
    pub fn kept_inputs(&self) -> KeptInputs {
        self.kept
    }

    /// Feeds one token and returns the next-token logits [vocab].
    pub fn step(&mut self, token: u32) -> Result<Vec<f32>> {
        let d = self.hidden;
        let vocab = self.head.out();
        let t = token as usize;
        if t >= vocab {
            return Err(ModelError::TokenOutOfVocab {
                id: i64::from(token),
                row: 0,
                col: self.pos,
                vocab_size: vocab,
            });
        }
        let (eps, a_fn, pos) = (self.eps, self.act, self.pos);
        let mut kept = self.kept;
        let mut count = |lin: &Lin, k: usize, n: usize| {
            if lin.tau.is_some() {
                kept.kept += k;
                kept.total += n;
            }
        };
        let x = match &mut self.body {
            Body::Gpt2 {
                wte,
                wpe,
                n_positions,
                blocks,
                ln_f,
                heads,
                scale_weights,
                inverse_layer_idx,
            } => {
                if pos >= *n_positions {
                    return Err(ModelError::SequenceTooLong {
                        seq: pos + 1,
                        max: *n_positions,
                    });
                }
                let mut x: Vec<f32> = (0..d).map(|i| wte[t * d + i] + wpe[pos * d + i]).collect();
                let h = *heads;
                let dh = d / h;
                for (l, b) in blocks.iter_mut().enumerate() {
                    let a = layer_norm(&x, &b.ln1.0, &b.ln1.1, eps);
                    let mut qkv = vec![0.0; 3 * d];
                    b.c_attn.apply(&a, &mut qkv)?;
                    b.k.extend_from_slice(&qkv[d..2 * d]);
                    b.v.extend_from_slice(&qkv[2 * d..]);
                    let steps = pos + 1;
                    let mut scale = if *scale_weights {
                        1.0 / (dh as f32).sqrt()
                    } else {
                        1.0
                    };
                    if *inverse_layer_idx {
                        scale /= (l + 1) as f32;
                    }
                    let mut o = vec![0.0f32; d];
                    for hh in 0..h {
                        let q = &qkv[hh * dh..(hh + 1) * dh];
                        let scores: Vec<f32> = (0..steps)
                            .map(|s| {
                                let k = &b.k[s * d + hh * dh..s * d + (hh + 1) * dh];
                                q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() * scale
                            })
                            .collect();
                        let m = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                        let ex: Vec<f32> = scores.iter().map(|s| (s - m).exp()).collect();
                        let z: f32 = ex.iter().sum();
                        for (s, p) in ex.iter().enumerate() {
                            let v = &b.v[s * d + hh * dh..s * d + (hh + 1) * dh];
                            for (oi, vi) in o[hh * dh..(hh + 1) * dh].iter_mut().zip(v) {
                                *oi += p / z * vi;
                            }
                        }
                    }
                    let mut y = vec![0.0; d];
                    b.attn_proj.apply(&o, &mut y)?;
                    x.iter_mut().zip(&y).for_each(|(x, y)| *x += y);
                    let m = layer_norm(&x, &b.ln2.0, &b.ln2.1, eps);
                    let mut hidden = vec![0.0; b.c_fc.out()];
                    let k = b.c_fc.apply(&m, &mut hidden)?;
                    count(&b.c_fc, k, m.len());
                    hidden.iter_mut().for_each(|v| *v = act(a_fn, *v));
                    let k = b.mlp_proj.apply(&hidden, &mut y)?;
                    count(&b.mlp_proj, k, hidden.len());
                    x.iter_mut().zip(&y).for_each(|(x, y)| *x += y);
                }
                layer_norm(&x, &ln_f.0, &ln_f.1, eps)
            }
            Body::Mamba {
                emb,
                layers,
                norm_f,
                e,
                n,
                r,
                k,
            } => {
                let (e, n, r, kk) = (*e, *n, *r, *k);
                let mut x: Vec<f32> = emb[t * d..(t + 1) * d].to_vec();
                for lay in layers.iter_mut() {
                    let u = rms_norm(&x, &lay.norm, eps);
                    let mut xz = vec![0.0; 2 * e];
                    let kept_in = lay.in_proj.apply(&u, &mut xz)?;
                    count(&lay.in_proj, kept_in, u.len());
                    // shift the convolution window and append x_t
                    let mut xc = vec![0.0f32; e];
                    for c in 0..e {
                        let w = &mut lay.window[c * kk..(c + 1) * kk];
                        w.rotate_left(1);
                        w[kk - 1] = xz[c];
                        let mut s = lay.conv_b.as_ref().map_or(0.0, |b| b[c]);
                        for (cw, wv) in lay.conv_w[c * kk..(c + 1) * kk].iter().zip(w.iter()) {
                            s += cw * wv;
                        }
                        xc[c] = act(a_fn, s);
                    }
                    let mut ssm = vec![0.0; r + 2 * n];
                    lay.x_proj.apply(&xc, &mut ssm)?;
                    let mut delta = vec![0.0; e];
                    lay.dt_proj.apply(&ssm[..r], &mut delta)?;
                    let (bm, cm) = (&ssm[r..r + n], &ssm[r + n..]);
                    let mut gated = vec![0.0f32; e];
                    for c in 0..e {
                        let dv = delta[c];
                        let dv = if dv > 20.0 { dv } else { dv.exp().ln_1p() };
                        let mut y = 0.0f32;
                        for s in 0..n {
                            let i = c * n + s;
                            lay.h[i] = (dv * lay.a[i]).exp() * lay.h[i] + dv * bm[s] * xc[c];
                            y += lay.h[i] * cm[s];
                        }
                        y += xc[c] * lay.d[c];
                        gated[c] = y * act(a_fn, xz[e + c]);
                    }
                    let mut out = vec![0.0; d];
                    let kept_out = lay.out_proj.apply(&gated, &mut out)?;
                    count(&lay.out_proj, kept_out, gated.len());
                    x.iter_mut().zip(&out).for_each(|(x, y)| *x += y);
                }
                rms_norm(&x, norm_f, eps)
            }
        };
        self.kept = kept;
        let mut logits = vec![0.0; vocab];
        self.head.apply(&x, &mut logits)?;
        self.pos += 1;
        Ok(logits)
    }
}

fn head_lin(w: &Param<Tensor<2>>) -> Result<Lin> {
    // [vocab, hidden] (nn.Linear / embedding layout) → Wᵀ [hidden, vocab]
    let [v, h] = w.val().dims();
    let a = Array2::from_shape_vec((v, h), vals(w)?)
        .map_err(|e| ModelError::Invalid(format!("lm_head: {e}")))?;
    Ok(Lin {
        w: SparseLinear::from_weight(a.view(), 0.0).map_err(kerr("lm_head"))?,
        bias: None,
        tau: None,
    })
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
