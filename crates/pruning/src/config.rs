//! What to prune and how: the sparsity [`Pattern`] and the pruning [`Method`].

use serde::{Deserialize, Serialize};

use crate::error::{PruneError, Result};

/// Which entries of each output row may be pruned.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Pattern {
    /// Prune a fraction `ratio` ∈ [0, 1) of the weights (how the count is taken depends on
    /// the method: per row for Wanda, per layer for magnitude, per column block for SparseGPT).
    Unstructured(f64),
    /// In every group of `m` consecutive input columns of a row, prune the `n` smallest.
    NM {
        /// Pruned entries per group.
        n: usize,
        /// Group size.
        m: usize,
    },
}

impl Pattern {
    /// `N:M` (e.g. `2:4`) when `nm` is given, else unstructured at `sparsity`.
    pub fn from_options(nm: Option<&str>, sparsity: Option<f64>) -> Result<Self> {
        let bad = |value: &str, reason: &str| PruneError::InvalidOption {
            layer: "<options>".into(),
            option: "nm".into(),
            value: value.into(),
            reason: reason.into(),
        };
        match (nm, sparsity) {
            (Some(s), _) => {
                let (n, m) = s
                    .split_once(':')
                    .ok_or_else(|| bad(s, "expected N:M, e.g. 2:4"))?;
                let n = n
                    .trim()
                    .parse()
                    .map_err(|_| bad(s, "N is not an integer"))?;
                let m = m
                    .trim()
                    .parse()
                    .map_err(|_| bad(s, "M is not an integer"))?;
                Ok(Pattern::NM { n, m })
            }
            (None, Some(r)) => Ok(Pattern::Unstructured(r)),
            (None, None) => Err(PruneError::InvalidOption {
                layer: "<options>".into(),
                option: "sparsity".into(),
                value: "none".into(),
                reason: "give a sparsity ratio or an N:M pattern".into(),
            }),
        }
    }

    /// Checks the pattern against a weight of shape [out, in].
    pub fn validate(&self, layer: &str, shape: [usize; 2]) -> Result<()> {
        match *self {
            Pattern::Unstructured(ratio) => {
                if !(0.0..1.0).contains(&ratio) {
                    return Err(PruneError::InvalidRatio {
                        layer: layer.to_string(),
                        ratio,
                    });
                }
            }
            Pattern::NM { n, m } => {
                if m == 0 || n == 0 || n >= m {
                    return Err(PruneError::InvalidNm {
                        layer: layer.to_string(),
                        n,
                        m,
                    });
                }
                if !shape[1].is_multiple_of(m) {
                    return Err(PruneError::NmNotDivisible {
                        layer: layer.to_string(),
                        shape: shape.to_vec(),
                        in_features: shape[1],
                        m,
                    });
                }
            }
        }
        Ok(())
    }

    /// The fraction of weights this pattern prunes (nominally).
    pub fn target_sparsity(&self) -> f64 {
        match *self {
            Pattern::Unstructured(r) => r,
            Pattern::NM { n, m } => n as f64 / m as f64,
        }
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pattern::Unstructured(r) => write!(f, "unstructured {r}"),
            Pattern::NM { n, m } => write!(f, "{n}:{m}"),
        }
    }
}

/// Default SparseGPT column block size (the reference's `blocksize`).
pub const DEFAULT_BLOCKSIZE: usize = 128;
/// Default SparseGPT relative damping (the reference's `percdamp`).
pub const DEFAULT_PERCDAMP: f64 = 0.01;
/// Default number of 10× damping retries when the Hessian is not positive definite.
pub const DEFAULT_MAX_DAMP_RETRIES: usize = 4;

/// The pruning method.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Method {
    /// |W|: one threshold per layer (unstructured) or per group (N:M). No calibration.
    Magnitude,
    /// Wanda (Sun et al. 2023): score |W|·sqrt(scaler_row), compared within each output row.
    Wanda,
    /// Wanda's variant: per-row cumulative-score threshold with α found by bisection
    /// (unstructured only; with N:M it is plain Wanda, as in the reference).
    WandaVariant,
    /// SparseGPT (Frantar & Alistarh 2023): OBS column sweep with the inverse Hessian.
    SparseGpt {
        /// Column block size (reference default 128).
        blocksize: usize,
        /// Damping as a fraction of mean(diag H) (reference default 0.01).
        percdamp: f64,
    },
}

impl Method {
    /// The method named `name` (`magnitude`, `wanda`, `wanda-variant`, `sparsegpt`), with
    /// SparseGPT's block size and damping.
    pub fn from_name(name: &str, blocksize: usize, percdamp: f64) -> Result<Self> {
        Ok(match name {
            "magnitude" => Method::Magnitude,
            "wanda" => Method::Wanda,
            "wanda-variant" => Method::WandaVariant,
            "sparsegpt" => Method::SparseGpt {
                blocksize,
                percdamp,
            },
            _ => {
                return Err(PruneError::InvalidOption {
                    layer: "<options>".into(),
                    option: "method".into(),
                    value: name.into(),
                    reason: "expected magnitude, wanda, wanda-variant or sparsegpt".into(),
                });
            }
        })
    }

    /// SparseGPT with the reference defaults (blocksize 128, percdamp 0.01).
    pub fn sparsegpt() -> Self {
        Method::SparseGpt {
            blocksize: DEFAULT_BLOCKSIZE,
            percdamp: DEFAULT_PERCDAMP,
        }
    }

    /// The method's name as used on the command line and in reports.
    pub fn name(&self) -> &'static str {
        match self {
            Method::Magnitude => "magnitude",
            Method::Wanda => "wanda",
            Method::WandaVariant => "wanda-variant",
            Method::SparseGpt { .. } => "sparsegpt",
        }
    }

    /// Which calibration statistics the method needs.
    pub fn needs(&self) -> StatsKind {
        match self {
            Method::Magnitude => StatsKind::None,
            Method::Wanda | Method::WandaVariant => StatsKind::Wanda,
            Method::SparseGpt { .. } => StatsKind::Hessian,
        }
    }

    /// Checks the method's own parameters.
    pub fn validate(&self, layer: &str) -> Result<()> {
        if let Method::SparseGpt {
            blocksize,
            percdamp,
        } = *self
        {
            if blocksize == 0 {
                return Err(PruneError::InvalidOption {
                    layer: layer.to_string(),
                    option: "blocksize".into(),
                    value: blocksize.to_string(),
                    reason: "must be at least 1".into(),
                });
            }
            if !(percdamp.is_finite() && percdamp >= 0.0) {
                return Err(PruneError::InvalidOption {
                    layer: layer.to_string(),
                    option: "percdamp".into(),
                    value: percdamp.to_string(),
                    reason: "must be finite and >= 0".into(),
                });
            }
        }
        Ok(())
    }
}

/// Calibration statistics a method consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsKind {
    /// Nothing (magnitude).
    None,
    /// Per-feature input norms ([`crate::WandaStats`]).
    Wanda,
    /// The layer Hessian ([`crate::HessianStats`]).
    Hessian,
}
