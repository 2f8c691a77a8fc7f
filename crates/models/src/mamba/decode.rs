//! Mamba one token at a time: the convolution window and the SSM state carried between steps
//! (the recurrent form of the selective scan; see [`crate::step`]).

use super::Mamba;
use crate::config::Activation;
use crate::error::Result;
use crate::step::{
    LinearFactory, StepDecoder, StepLinear, activate, check_prompt, check_token, param_values,
    rms_norm, spec_head, spec_in_out,
};

#[derive(Debug)]
struct Layer {
    norm: Vec<f32>,
    in_proj: Box<dyn StepLinear>,
    conv_w: Vec<f32>,
    conv_b: Option<Vec<f32>>,
    x_proj: Box<dyn StepLinear>,
    dt_proj: Box<dyn StepLinear>,
    a: Vec<f32>,
    d: Vec<f32>,
    out_proj: Box<dyn StepLinear>,
    window: Vec<f32>,
    h: Vec<f32>,
}

/// The Mamba step decoder.
#[derive(Debug)]
pub(crate) struct MambaStep {
    emb: Vec<f32>,
    layers: Vec<Layer>,
    norm_f: Vec<f32>,
    head: Box<dyn StepLinear>,
    hidden: usize,
    e: usize,
    n: usize,
    r: usize,
    k: usize,
    eps: f64,
    act: Activation,
    pos: usize,
}

impl MambaStep {
    pub(crate) fn new(m: &Mamba, linears: &dyn LinearFactory) -> Result<Self> {
        let c = &m.config;
        let (e, n, r, k) = (c.inner_size(), c.state_size, c.dt_rank(), c.conv_kernel);
        let mut layers = Vec::with_capacity(m.layers.len());
        for (l, b) in m.layers.iter().enumerate() {
            let x = &b.mixer;
            let dense = |name: &str, site: Option<String>, w: &super::Dense| {
                linears.linear(spec_in_out(name, site, &w.weight, w.bias.as_ref())?)
            };
            layers.push(Layer {
                norm: param_values(&b.norm)?,
                in_proj: dense("in_proj", Some(format!("mixer_in.{l}")), &x.in_proj)?,
                conv_w: param_values(&x.conv_weight)?,
                conv_b: x.conv_bias.as_ref().map(param_values).transpose()?,
                x_proj: linears.linear(spec_in_out("x_proj", None, &x.x_proj, None)?)?,
                dt_proj: dense("dt_proj", None, &x.dt_proj)?,
                a: param_values(&x.a_log)?.iter().map(|v| -v.exp()).collect(),
                d: param_values(&x.d)?,
                out_proj: dense("out_proj", Some(format!("mixer_gated.{l}")), &x.out_proj)?,
                window: vec![0.0; e * k],
                h: vec![0.0; e * n],
            });
        }
        Ok(Self {
            emb: param_values(&m.embeddings)?,
            layers,
            norm_f: param_values(&m.norm_f)?,
            head: linears.linear(spec_head(m.lm_head.as_ref().unwrap_or(&m.embeddings))?)?,
            hidden: c.hidden_size,
            e,
            n,
            r,
            k,
            eps: c.layer_norm_epsilon,
            act: c.activation()?,
            pos: 0,
        })
    }
}

impl StepDecoder for MambaStep {
    fn reset(&mut self) {
        self.pos = 0;
        for l in &mut self.layers {
            l.window.iter_mut().for_each(|v| *v = 0.0);
            l.h.iter_mut().for_each(|v| *v = 0.0);
        }
    }

    /// Every token checked first, then one step each: the selective scan is a recurrence, so
    /// only the projections around it could share a pass over the weights (not done).
    fn prefill(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        check_prompt(tokens, self.head.out_features(), self.pos, usize::MAX)?;
        let mut logits = Vec::new();
        for &t in tokens {
            logits = self.step(t)?;
        }
        Ok(logits)
    }

    fn step(&mut self, token: u32) -> Result<Vec<f32>> {
        let t = check_token(token, self.head.out_features(), self.pos)?;
        let (d, e, n, r, kk, eps, a_fn) = (
            self.hidden,
            self.e,
            self.n,
            self.r,
            self.k,
            self.eps,
            self.act,
        );
        let mut x: Vec<f32> = self.emb[t * d..(t + 1) * d].to_vec();
        for lay in &mut self.layers {
            let u = rms_norm(&x, &lay.norm, eps);
            let mut xz = vec![0.0; 2 * e];
            lay.in_proj.apply(&u, &mut xz)?;
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
                xc[c] = activate(a_fn, s);
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
                gated[c] = y * activate(a_fn, xz[e + c]);
            }
            let mut out = vec![0.0; d];
            lay.out_proj.apply(&gated, &mut out)?;
            x.iter_mut().zip(&out).for_each(|(x, y)| *x += y);
        }
        let x = rms_norm(&x, &self.norm_f, eps);
        let mut logits = vec![0.0; self.head.out_features()];
        self.head.apply(&x, &mut logits)?;
        self.pos += 1;
        Ok(logits)
    }
}
