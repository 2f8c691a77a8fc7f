//! Mamba-1 (Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces"), exact to
//! `transformers.MambaForCausalLM` on its pure-PyTorch slow path (sequential selective scan).
//!
//! Per block: u = RMSNorm(x); [x̃, z] = u·W_in; x̃ = act(causal_depthwise_conv(x̃)); [δ, B, C] = x̃·W_x;
//! Δ = softplus(δ·W_dt + b_dt); A = −exp(A_log);
//! h_t = exp(Δ_t·A) ⊙ h_{t−1} + (Δ_t·B_t) ⊙ x̃_t;  y_t = h_t·C_t + D ⊙ x̃_t;  x += (y ⊙ act(z))·W_out;
//! logits = RMSNorm_f(x)·embeddingsᵀ (tied).
//!
//! `nn.Linear` weights ([out, in] in the checkpoint) are held transposed as [in, out]; `conv1d.weight`
//! [E, 1, K] is held as [E, K]. As in transformers, the SSM input is multiplied by the attention mask before
//! and after the convolution, so left padding leaves the state at zero and real positions unchanged.

use burn::module::{Module, Param};
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::config::{Activation, MambaConfig};
use crate::error::{ModelError, Result};
use crate::sites::Hooks;
use crate::util::{const_param, normal_param, param, rms_norm, softplus, tensor_to_vec};

mod decode;
mod hooked;

pub use crate::nn::Dense;

/// `backbone.layers.{l}.mixer`.
#[derive(Module, Debug)]
pub struct MambaMixer {
    /// `in_proj`: [hidden, 2·E]
    pub in_proj: Dense,
    /// `conv1d.weight` as [E, K]
    pub conv_weight: Param<Tensor<2>>,
    /// `conv1d.bias`: \[E\]
    pub conv_bias: Option<Param<Tensor<1>>>,
    /// `x_proj`: [E, R + 2N], no bias
    pub x_proj: Param<Tensor<2>>,
    /// `dt_proj`: [R, E] with bias \[E\]
    pub dt_proj: Dense,
    /// `A_log`: [E, N]
    pub a_log: Param<Tensor<2>>,
    /// `D`: \[E\]
    pub d: Param<Tensor<1>>,
    /// `out_proj`: [E, hidden]
    pub out_proj: Dense,
}

/// `backbone.layers.{l}`: RMSNorm then mixer, residual added.
#[derive(Module, Debug)]
pub struct MambaBlock {
    /// `norm.weight`: \[hidden\]
    pub norm: Param<Tensor<1>>,
    /// The mixer.
    pub mixer: MambaMixer,
}

/// Mamba language model (`MambaForCausalLM`).
#[derive(Module, Debug)]
pub struct Mamba {
    /// `backbone.embeddings.weight`: [vocab, hidden]
    pub embeddings: Param<Tensor<2>>,
    /// Blocks.
    pub layers: Vec<MambaBlock>,
    /// `backbone.norm_f.weight`: \[hidden\]
    pub norm_f: Param<Tensor<1>>,
    /// Untied `lm_head.weight` [vocab, hidden] (None when tied).
    pub lm_head: Option<Param<Tensor<2>>>,
    /// The configuration.
    #[module(skip)]
    pub config: MambaConfig,
}

/// What a Mamba forward pass returns.
#[derive(Debug, Clone)]
pub struct MambaOutput {
    /// [batch, seq, vocab]
    pub logits: Tensor<3>,
}

fn uniform(rng: &mut ChaCha8Rng, n: usize, bound: f32) -> Vec<f32> {
    (0..n)
        .map(|_| (rng.random::<f32>() * 2.0 - 1.0) * bound)
        .collect()
}

impl Mamba {
    /// A randomly initialised model following transformers' `MambaPreTrainedModel._init_weights`
    /// (embeddings / in_proj / x_proj N(0, 0.1²), conv1d and out_proj U(±1/√fan_in), dt_proj weight
    /// U(±R^−½), dt_proj bias = softplus⁻¹(Δ₀) with Δ₀ log-uniform in [time_step_min, time_step_max],
    /// A_log = log(1..N), D = 1, zero biases), seeded.
    pub fn init(config: &MambaConfig, seed: u64, device: &Device) -> Result<Self> {
        config.validate(std::path::Path::new("<MambaConfig>"))?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let hd = config.hidden_size;
        let e = config.inner_size();
        let n = config.state_size;
        let r = config.dt_rank();
        let k = config.conv_kernel;
        let std = 0.1f32;
        let embeddings = normal_param(&mut rng, [config.vocab_size, hd], std, device);
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for _ in 0..config.num_hidden_layers {
            let bias = |width: usize, on: bool| on.then(|| const_param([width], 0.0, device));
            let in_proj = Dense {
                weight: normal_param(&mut rng, [hd, 2 * e], std, device),
                bias: bias(2 * e, config.use_bias),
            };
            let conv_weight = param(
                uniform(&mut rng, e * k, 1.0 / (k as f32).sqrt()),
                [e, k],
                device,
            );
            let conv_bias = config
                .use_conv_bias
                .then(|| param(uniform(&mut rng, e, 1.0 / (k as f32).sqrt()), [e], device));
            let x_proj = normal_param(&mut rng, [e, r + 2 * n], std, device);
            let dt_w = uniform(&mut rng, r * e, (r as f32).powf(-0.5));
            let (lo, hi) = (config.time_step_min.ln(), config.time_step_max.ln());
            let dt_b: Vec<f32> = (0..e)
                .map(|_| {
                    let dt = (rng.random::<f64>() * (hi - lo) + lo)
                        .exp()
                        .max(config.time_step_floor);
                    (dt + (-(-dt).exp_m1()).ln()) as f32
                })
                .collect();
            let dt_proj = Dense {
                weight: param(dt_w, [r, e], device),
                bias: Some(param(dt_b, [e], device)),
            };
            let a_log: Vec<f32> = (0..e)
                .flat_map(|_| (1..=n).map(|i| (i as f32).ln()))
                .collect();
            let out_proj = Dense {
                weight: param(
                    uniform(&mut rng, e * hd, 1.0 / (e as f32).sqrt()),
                    [e, hd],
                    device,
                ),
                bias: bias(hd, config.use_bias),
            };
            layers.push(MambaBlock {
                norm: const_param([hd], 1.0, device),
                mixer: MambaMixer {
                    in_proj,
                    conv_weight,
                    conv_bias,
                    x_proj,
                    dt_proj,
                    a_log: param(a_log, [e, n], device),
                    d: const_param([e], 1.0, device),
                    out_proj,
                },
            });
        }
        let lm_head = (!config.tie_word_embeddings)
            .then(|| normal_param(&mut rng, [config.vocab_size, hd], std, device));
        Ok(Self {
            embeddings,
            layers,
            norm_f: const_param([hd], 1.0, device),
            lm_head,
            config: config.clone(),
        })
    }

    /// Number of blocks.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Plain forward: logits [batch, seq, vocab] for `input_ids` [batch, seq] and an optional
    /// `attention_mask` [batch, seq] (1 = token, 0 = padding).
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2>>,
    ) -> Result<MambaOutput> {
        let logits = crate::family::HookedLm::plain_logits(self, input_ids, attention_mask)?;
        Ok(MambaOutput { logits })
    }

    /// The input of block 0: the token embeddings, [batch, seq, hidden].
    pub fn embed(&self, input_ids: Tensor<2, Int>) -> Tensor<3> {
        let [b, s] = input_ids.dims();
        self.embeddings
            .val()
            .select(0, input_ids.reshape([b * s]))
            .reshape([b, s, self.config.hidden_size])
    }

    pub(crate) fn forward_hooked(
        &self,
        input_ids: Tensor<2, Int>,
        mask: Tensor<2>,
        hooks: &mut Hooks<'_>,
    ) -> Result<Tensor<3>> {
        let c = &self.config;
        let [b, s] = input_ids.dims();
        let eps = c.layer_norm_epsilon;
        let act = c.activation()?;
        let mut x = self.embed(input_ids);
        let mask3 = mask.clone().reshape([b, s, 1]);
        let n_layer = self.layers.len();
        for (l, blk) in self.layers.iter().enumerate() {
            let u = rms_norm(x.clone(), blk.norm.val(), eps);
            let y = blk.mixer.forward(u, &mask3, act, l, c, hooks)?;
            x = x + y;
            x = hooks.site3(|| format!("block_out.{l}"), x)?;
            x = hooks.site3(|| format!("hidden_states.{l}"), x)?;
        }
        let x = rms_norm(x, self.norm_f.val(), eps);
        let x = hooks.site3(|| format!("hidden_states.{n_layer}"), x)?;
        let head = match &self.lm_head {
            Some(w) => w.val(),
            None => self.embeddings.val(),
        };
        Ok(crate::util::lm_head(x, head))
    }
}

impl MambaMixer {
    /// u [batch, seq, hidden] → mixer output [batch, seq, hidden].
    fn forward(
        &self,
        u: Tensor<3>,
        mask3: &Tensor<3>,
        act: Activation,
        l: usize,
        c: &MambaConfig,
        hooks: &mut Hooks<'_>,
    ) -> Result<Tensor<3>> {
        let [b, s, _] = u.dims();
        let e = c.inner_size();
        let n = c.state_size;
        let r = c.dt_rank();
        let k = c.conv_kernel;
        let u = hooks.site3(|| format!("mixer_in.{l}"), u)?;
        let xz = self.in_proj.forward(u);
        let xs = xz.clone().narrow(2, 0, e) * mask3.clone();
        let z = xz.narrow(2, e, e);

        // causal depthwise conv: out[t] = bias + Σ_j w[:, j] · x[t − (K−1) + j]
        let device = xs.device();
        let padded = Tensor::cat(vec![Tensor::zeros([b, k - 1, e], &device), xs], 1);
        let w = self.conv_weight.val();
        let mut conv = padded
            .clone()
            .narrow(1, 0, s)
            .mul(w.clone().narrow(1, 0, 1).reshape([1, 1, e]));
        for j in 1..k {
            conv = conv
                + padded
                    .clone()
                    .narrow(1, j, s)
                    .mul(w.clone().narrow(1, j, 1).reshape([1, 1, e]));
        }
        if let Some(bias) = &self.conv_bias {
            conv = conv + bias.val().reshape([1, 1, e]);
        }
        let xc = act.apply(conv)? * mask3.clone();
        let xc = hooks.site3(|| format!("mixer_conv.{l}"), xc)?;

        let ssm = burn::tensor::module::linear(xc.clone(), self.x_proj.val(), None);
        let dt_raw = ssm.clone().narrow(2, 0, r);
        let dt_raw = hooks.site3(|| format!("mixer_dt_in.{l}"), dt_raw)?;
        let bm = ssm.clone().narrow(2, r, n);
        let cm = ssm.narrow(2, r + n, n);
        let delta = softplus(self.dt_proj.forward(dt_raw));
        let delta = hooks.site3(|| format!("mixer_dt.{l}"), delta)?;

        let a = self.a_log.val().exp().neg(); // [E, N]
        let state_site = format!("ssm_state.{l}");
        let y = if delta.is_autodiff() || hooks.wants(&state_site) {
            // Tensor path: differentiable, and materialises every state for the hook.
            let delta4 = delta.clone().reshape([b, s, e, 1]);
            let d_a = (delta4.clone() * a.reshape([1, 1, e, n])).exp(); // [b, s, E, N]
            let d_bu = delta4 * bm.reshape([b, s, 1, n]) * xc.clone().reshape([b, s, e, 1]);
            let states = selective_scan(d_a, d_bu); // [b, s, E, N]
            let y = (states.clone() * cm.reshape([b, s, 1, n]))
                .sum_dim(3)
                .reshape([b, s, e]);
            if hooks.wants(&state_site) {
                hooks.record4(state_site, states);
            }
            y
        } else {
            // Inference: the same recurrence fused on the host, O(batch·seq·E) memory.
            let dims = ScanDims { b, s, e, n };
            let y = fused_scan(
                &tensor_to_vec(&delta)?,
                &tensor_to_vec(&a)?,
                &tensor_to_vec(&bm)?,
                &tensor_to_vec(&cm)?,
                &tensor_to_vec(&xc)?,
                dims,
            )?;
            Tensor::<3>::from_data(TensorData::new(y, [b, s, e]), &device)
        };
        let y = y + xc * self.d.val().reshape([1, 1, e]);
        let gated = y * act.apply(z)?;
        let gated = hooks.site3(|| format!("mixer_gated.{l}"), gated)?;
        Ok(self.out_proj.forward(gated))
    }
}

/// Sequential scan h_t = dA_t ⊙ h_{t−1} + dBu_t (h_{−1} = 0) over axis 1 of [batch, seq, E, N];
/// returns every h_t, [batch, seq, E, N].
pub fn selective_scan(d_a: Tensor<4>, d_bu: Tensor<4>) -> Tensor<4> {
    let [b, s, e, n] = d_a.dims();
    let mut h: Tensor<3> = d_bu.clone().narrow(1, 0, 1).reshape([b, e, n]);
    let mut states = Vec::with_capacity(s);
    states.push(h.clone());
    for t in 1..s {
        let a_t: Tensor<3> = d_a.clone().narrow(1, t, 1).reshape([b, e, n]);
        let bu_t: Tensor<3> = d_bu.clone().narrow(1, t, 1).reshape([b, e, n]);
        h = a_t * h + bu_t;
        states.push(h.clone());
    }
    Tensor::stack(states, 1)
}

/// Shape of a fused scan: batch, sequence, inner channels E, state size N.
#[derive(Debug, Clone, Copy)]
pub struct ScanDims {
    /// Batch size.
    pub b: usize,
    /// Sequence length.
    pub s: usize,
    /// Inner channels E (`intermediate_size`).
    pub e: usize,
    /// State size N (`state_size`).
    pub n: usize,
}

/// Channels per parallel task of [`fused_scan`].
const SCAN_CHANNELS: usize = 64;

/// The selective scan and its read-out fused, forward only, without materialising
/// [batch, seq, E, N]: for every batch row and channel e,
/// `h_t[n] = exp(Δ_t[e]·A[e,n])·h_{t−1}[n] + (Δ_t[e]·B_t[n])·x_t[e]`, `y_t[e] = Σ_n h_t[n]·C_t[n]`
/// (h_{−1} = 0), the arithmetic of [`selective_scan`] in the same order per element, with a
/// polynomial `exp` ([`exp_f32`], within 2 ulp of the correctly rounded one).
///
/// Inputs, row-major: `delta` and `x` [b, s, E], `a` [E, N], `bm` and `cm` [b, s, N].
/// Returns y [b, s, E] (without the D skip). Parallel over (batch row, channel block).
/// Errors (naming the operand and both lengths) when a slice's length does not match `dims`.
pub fn fused_scan(
    delta: &[f32],
    a: &[f32],
    bm: &[f32],
    cm: &[f32],
    x: &[f32],
    dims: ScanDims,
) -> Result<Vec<f32>> {
    let ScanDims { b, s, e, n } = dims;
    for (name, got, want, shape) in [
        ("delta", delta.len(), b * s * e, "[b, s, E]"),
        ("a", a.len(), e * n, "[E, N]"),
        ("bm", bm.len(), b * s * n, "[b, s, N]"),
        ("cm", cm.len(), b * s * n, "[b, s, N]"),
        ("x", x.len(), b * s * e, "[b, s, E]"),
    ] {
        if got != want {
            return Err(ModelError::Invalid(format!(
                "fused_scan: `{name}` has {got} values, {shape} = {want} for {dims:?}"
            )));
        }
    }
    let tasks: Vec<(usize, usize)> = (0..b)
        .flat_map(|bi| (0..e).step_by(SCAN_CHANNELS).map(move |e0| (bi, e0)))
        .collect();
    let parts: Vec<Vec<f32>> = tasks
        .par_iter()
        .map(|&(bi, e0)| {
            let e1 = (e0 + SCAN_CHANNELS).min(e);
            let w = e1 - e0;
            let mut out = vec![0f32; s * w];
            let mut h = vec![0f32; n];
            let mut hc = vec![0f32; n];
            for ei in e0..e1 {
                h.fill(0.0);
                let arow = &a[ei * n..(ei + 1) * n];
                for t in 0..s {
                    let row = bi * s + t;
                    let d = delta[row * e + ei];
                    let xv = x[row * e + ei];
                    let brow = &bm[row * n..(row + 1) * n];
                    let crow = &cm[row * n..(row + 1) * n];
                    for k in 0..n {
                        let da = exp_f32(d * arow[k]);
                        h[k] = da * h[k] + d * brow[k] * xv;
                        hc[k] = h[k] * crow[k];
                    }
                    out[t * w + (ei - e0)] = hc.iter().sum();
                }
            }
            out
        })
        .collect();
    let mut y = vec![0f32; b * s * e];
    for (&(bi, e0), part) in tasks.iter().zip(&parts) {
        let w = part.len() / s.max(1);
        for t in 0..s {
            let dst = (bi * s + t) * e + e0;
            y[dst..dst + w].copy_from_slice(&part[t * w..(t + 1) * w]);
        }
    }
    Ok(y)
}

/// `exp(x)` in f32 by Cody–Waite range reduction and Cephes' degree-5 polynomial, branch-free
/// so that loops over it vectorise; inputs are clamped to [−87.3, 88.3] (no subnormal or
/// infinite results; the scan only evaluates it on Δ·A ≤ 0).
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // 1.5·2²³: adding it rounds to an integer kept in the low mantissa bits.
    const SHIFTER: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.3, 88.3);
    let t = x * LOG2E + SHIFTER;
    let k = t.to_bits().wrapping_sub(SHIFTER.to_bits()) as i32;
    let kf = t - SHIFTER;
    let r = (x - kf * LN2_HI) - kf * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    y * f32::from_bits(((k + 127) as u32) << 23)
}

impl crate::trainable::CausalLmTrain for Mamba {
    fn causal_logits(
        &self,
        input_ids: Tensor<2, Int>,
    ) -> std::result::Result<Tensor<3>, Box<dyn std::error::Error + Send + Sync>> {
        Ok(self.forward(input_ids, None)?.logits)
    }
}
