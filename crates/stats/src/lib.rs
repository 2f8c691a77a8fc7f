//! # sparsity-stats
//!
//! Statistical tests for experiment sweeps: one-way ANOVA, the studentized range
//! distribution (`ptukey` / `qtukey`), Tukey HSD (Tukey–Kramer for unequal n), Welch's
//! t-test, Cohen's d, Bonferroni / Holm corrections and a power note for the two-sample
//! t-test. Everything works on `f64` observations grouped by condition (one group per keep
//! ratio, say, each holding one validation loss per seed).
//!
//! # Formulas
//!
//! * **One-way ANOVA** (Fisher): with groups `i = 1..k` of sizes `n_i`, means `m_i`, grand
//!   mean `m` and `N = Σ n_i`: `SS_b = Σ n_i (m_i − m)²`, `SS_w = Σ_i Σ_j (x_ij − m_i)²`,
//!   `F = (SS_b / (k − 1)) / (SS_w / (N − k))`, `p = P(F_{k−1, N−k} > F)` (statrs
//!   `FisherSnedecor`).
//! * **Studentized range** `Q = R / S` where `R` is the range of `k` iid `N(0, 1)` and
//!   `S² ~ χ²_ν / ν` independent. With `W(w) = P(R < w) = k ∫ φ(z) [Φ(z + w) − Φ(z)]^{k−1} dz`,
//!   `P(Q < q) = ∫_0^∞ f_S(s) W(q s)^c ds` (`c` = `nranges`, the maximum of `c` independent
//!   ranges). This is the integral that Copenhaver & Holland (1988, *J. Statist. Comput.
//!   Simul.* 30, 1–15) evaluate with Gauss–Legendre quadrature and that R's `ptukey` uses;
//!   it is implemented here from the formulas (see [`ptukey`] for the exact scheme).
//! * **Tukey HSD** (Tukey 1953; Kramer 1956 for unequal n): `MS_w = SS_w / (N − k)`,
//!   `SE_ij = sqrt(MS_w / 2 · (1/n_i + 1/n_j))`, `q_ij = |m_i − m_j| / SE_ij`,
//!   `p_ij = 1 − ptukey(q_ij; k, N − k)`, CI `m_i − m_j ± qtukey(1 − α; k, N − k) · SE_ij`
//!   (the same conventions as `scipy.stats.tukey_hsd`).
//! * **Welch's t-test** (Welch 1947): `t = (m_a − m_b) / sqrt(s_a²/n_a + s_b²/n_b)` with the
//!   Welch–Satterthwaite `ν = (s_a²/n_a + s_b²/n_b)² / ((s_a²/n_a)²/(n_a−1) + (s_b²/n_b)²/(n_b−1))`,
//!   p from statrs `StudentsT`.
//! * **Cohen's d** (Cohen 1988): `d = (m_a − m_b) / s_p`,
//!   `s_p = sqrt(((n_a − 1) s_a² + (n_b − 1) s_b²) / (n_a + n_b − 2))` (ddof 1). The original
//!   sweep script computed `|m_a − m_b| / sqrt((σ_a² + σ_b²) / 2)` with ddof-0 `σ` and 0 when
//!   either `σ` is 0; that is kept as [`CohensDVariant::Legacy`].
//! * **Bonferroni**: `p̃_i = min(1, m p_i)`. **Holm** (1979) step-down:
//!   `p̃_(i) = max_{j ≤ i} min(1, (m − j + 1) p_(j))` on the sorted p-values.
//! * **Power** of the two-sided two-sample t-test with `n` per group and effect `d`:
//!   `ν = 2n − 2`, `δ = d sqrt(n/2)`, `t_c = t_{ν, 1−α/2}`,
//!   `power = P(T'_{ν,δ} > t_c) + P(T'_{ν,δ} < −t_c)` with the noncentral t evaluated
//!   numerically as `E_S[Φ(·)]` over the same chi density as `ptukey` (exact up to
//!   quadrature error, both tails counted); the normal approximation
//!   `Φ(δ − z_{1−α/2}) + Φ(−δ − z_{1−α/2})` is reported beside it.
//!
//! # Example
//!
//! ```
//! use sparsity_stats::{one_way_anova, ptukey, qtukey, tukey_hsd};
//!
//! // validation loss per seed for three keep ratios
//! let groups = vec![
//!     vec![3.412, 3.398, 3.431, 3.405, 3.420],
//!     vec![3.371, 3.380, 3.366, 3.392, 3.377],
//!     vec![3.388, 3.401, 3.379, 3.395, 3.384],
//! ];
//! let anova = one_way_anova(&groups)?;
//! assert!(anova.p_value < 0.01);
//!
//! // published table value q_{0.05}(k = 3, df = 10) = 3.877
//! assert!((ptukey(3.877, 1.0, 3.0, 10.0)? - 0.95).abs() < 1e-4);
//! assert!((qtukey(0.95, 3.0, 10.0)? - 3.877).abs() < 1e-3);
//!
//! let hsd = tukey_hsd(&groups, 0.05)?;
//! assert_eq!(hsd.pairs.len(), 3);
//! # Ok::<(), sparsity_stats::StatsError>(())
//! ```

use std::fmt;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, FisherSnedecor, Normal, StudentsT};

/// Errors of the statistics module. Each message names the group, argument or p-value at
/// fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StatsError {
    /// Fewer groups than the test needs.
    #[error("{test}: need at least {required} groups, got {got}")]
    TooFewGroups {
        /// The test that was asked for.
        test: &'static str,
        /// Number of groups given.
        got: usize,
        /// Minimum number of groups.
        required: usize,
    },
    /// A group has fewer observations than the test needs.
    #[error("{test}: group {group} has {got} observation(s), need at least {required}")]
    TooFewObservations {
        /// The test that was asked for.
        test: &'static str,
        /// Name of the group (its label, or `#index`).
        group: String,
        /// Number of observations in the group.
        got: usize,
        /// Minimum number of observations.
        required: usize,
    },
    /// An observation is NaN or infinite.
    #[error("{test}: group {group}, observation {index} is not finite ({value})")]
    NonFiniteObservation {
        /// The test that was asked for.
        test: &'static str,
        /// Name of the group (its label, or `#index`).
        group: String,
        /// Position of the observation in the group.
        index: usize,
        /// The offending value.
        value: f64,
    },
    /// An observation's magnitude exceeds [`MAX_MAGNITUDE`] (its square would overflow).
    #[error("{test}: group {group}, observation {index} = {value:e} is too large (|x| > 1e100)")]
    ObservationTooLarge {
        /// The test that was asked for.
        test: &'static str,
        /// Name of the group (its label, or `#index`).
        group: String,
        /// Position of the observation in the group.
        index: usize,
        /// The offending value.
        value: f64,
    },
    /// A test statistic or its degrees of freedom came out NaN or infinite.
    #[error("{test}: {statistic} = {value} is not finite")]
    NonFiniteStatistic {
        /// The test that was asked for.
        test: &'static str,
        /// The statistic.
        statistic: &'static str,
        /// Its value.
        value: f64,
    },
    /// Every group has zero within-group variance, so the test statistic is a division by
    /// zero (infinite when the means differ, undefined when they do not).
    #[error(
        "{test}: zero within-group variance (every observation equals its group mean; \
         spread between the means = {between}), so {statistic} is {outcome}; \
         identical runs usually mean the seed was not varied"
    )]
    ZeroVariance {
        /// The test that was asked for.
        test: &'static str,
        /// The statistic that cannot be formed.
        statistic: &'static str,
        /// Between-group sum of squares or absolute mean difference.
        between: f64,
        /// "infinite" or "undefined (0/0)".
        outcome: &'static str,
    },
    /// A numeric argument is out of its domain.
    #[error("invalid {name} = {value}: {requirement}")]
    InvalidArgument {
        /// Name of the argument.
        name: &'static str,
        /// The value given.
        value: f64,
        /// What the argument must satisfy.
        requirement: &'static str,
    },
    /// A p-value given to a correction is not in [0, 1].
    #[error("{correction}: p-value {index} = {value} is not in [0, 1]")]
    InvalidPValue {
        /// Correction that was asked for.
        correction: &'static str,
        /// Position of the p-value.
        index: usize,
        /// The offending value.
        value: f64,
    },
    /// Labels and groups do not match in number.
    #[error("{test}: {labels} labels for {groups} groups")]
    LabelMismatch {
        /// The test that was asked for.
        test: &'static str,
        /// Number of labels.
        labels: usize,
        /// Number of groups.
        groups: usize,
    },
    /// A root search (quantile) found no bracket or did not converge.
    #[error("{what}: {reason}")]
    NoConvergence {
        /// What was being computed, with its arguments.
        what: String,
        /// Why it failed.
        reason: &'static str,
    },
    /// A statrs distribution rejected its parameters.
    #[error("{distribution}: {message}")]
    Distribution {
        /// Distribution and its parameters.
        distribution: String,
        /// statrs' message.
        message: String,
    },
}

type Result<T> = std::result::Result<T, StatsError>;

// ---------------------------------------------------------------------------------------
// Validation and summaries
// ---------------------------------------------------------------------------------------

fn group_name(index: usize, labels: Option<&[String]>) -> String {
    match labels.and_then(|l| l.get(index)) {
        Some(label) => format!("{label:?} (#{index})"),
        None => format!("#{index}"),
    }
}

fn check_group(
    test: &'static str,
    values: &[f64],
    index: usize,
    labels: Option<&[String]>,
    required: usize,
) -> Result<()> {
    if values.len() < required {
        return Err(StatsError::TooFewObservations {
            test,
            group: group_name(index, labels),
            got: values.len(),
            required,
        });
    }
    if let Some((i, &v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(StatsError::NonFiniteObservation {
            test,
            group: group_name(index, labels),
            index: i,
            value: v,
        });
    }
    if let Some((i, &v)) = values
        .iter()
        .enumerate()
        .find(|(_, v)| v.abs() > MAX_MAGNITUDE)
    {
        return Err(StatsError::ObservationTooLarge {
            test,
            group: group_name(index, labels),
            index: i,
            value: v,
        });
    }
    Ok(())
}

/// The largest |observation| the tests accept: squares and sums of squares of up to 10^100
/// such values stay finite, so no statistic overflows into NaN.
pub const MAX_MAGNITUDE: f64 = 1e100;

/// `value` if finite, else the typed error naming the statistic (a guard before statrs, whose
/// distribution functions panic on NaN arguments).
fn finite(test: &'static str, statistic: &'static str, value: f64) -> Result<f64> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(StatsError::NonFiniteStatistic {
            test,
            statistic,
            value,
        })
    }
}

fn check_groups<G: AsRef<[f64]>>(
    test: &'static str,
    groups: &[G],
    labels: Option<&[String]>,
    min_groups: usize,
    min_obs: usize,
) -> Result<()> {
    if groups.len() < min_groups {
        return Err(StatsError::TooFewGroups {
            test,
            got: groups.len(),
            required: min_groups,
        });
    }
    for (i, g) in groups.iter().enumerate() {
        check_group(test, g.as_ref(), i, labels, min_obs)?;
    }
    Ok(())
}

fn check_probability(name: &'static str, value: f64, open: bool) -> Result<()> {
    let ok = if open {
        value > 0.0 && value < 1.0
    } else {
        (0.0..=1.0).contains(&value)
    };
    if ok {
        Ok(())
    } else {
        Err(StatsError::InvalidArgument {
            name,
            value,
            requirement: if open {
                "must lie strictly between 0 and 1"
            } else {
                "must lie in [0, 1]"
            },
        })
    }
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// Sum of squared deviations from the mean (two-pass, so no cancellation).
fn sum_sq_dev(values: &[f64], m: f64) -> f64 {
    values.iter().map(|x| (x - m) * (x - m)).sum()
}

/// Descriptive statistics of one group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupSummary {
    /// Number of observations.
    pub n: usize,
    /// Arithmetic mean.
    pub mean: f64,
    /// Sample variance (ddof 1); `None` for a single observation.
    pub variance: Option<f64>,
    /// Sample standard deviation (ddof 1); `None` for a single observation.
    pub std_dev: Option<f64>,
    /// Standard error of the mean `std_dev / sqrt(n)`; `None` for a single observation.
    pub std_error: Option<f64>,
}

/// Mean, ddof-1 variance, standard deviation and standard error of one group.
///
/// Errors if `values` is empty or holds a non-finite number.
pub fn summarize(values: &[f64]) -> Result<GroupSummary> {
    check_group("summary", values, 0, None, 1)?;
    let n = values.len();
    let m = mean(values);
    let variance = (n >= 2).then(|| sum_sq_dev(values, m) / (n - 1) as f64);
    Ok(GroupSummary {
        n,
        mean: m,
        variance,
        std_dev: variance.map(f64::sqrt),
        std_error: variance.map(|v| (v / n as f64).sqrt()),
    })
}

// ---------------------------------------------------------------------------------------
// One-way ANOVA
// ---------------------------------------------------------------------------------------

/// Result of a one-way ANOVA.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnovaResult {
    /// `F = MS_between / MS_within`.
    pub f_statistic: f64,
    /// `P(F_{df_between, df_within} > F)`.
    pub p_value: f64,
    /// `k − 1`.
    pub df_between: f64,
    /// `N − k`.
    pub df_within: f64,
    /// `Σ n_i (m_i − m)²`.
    pub ss_between: f64,
    /// `Σ_i Σ_j (x_ij − m_i)²`.
    pub ss_within: f64,
    /// `SS_between / df_between`.
    pub ms_between: f64,
    /// `SS_within / df_within` (the pooled error variance).
    pub ms_within: f64,
    /// Effect size `η² = SS_between / (SS_between + SS_within)`.
    pub eta_squared: f64,
    /// Per-group descriptive statistics, in input order.
    pub groups: Vec<GroupSummary>,
}

/// One-way ANOVA over `groups` (each a slice of observations).
///
/// Needs at least 2 groups of at least 2 finite observations each. When every group has
/// zero spread the F ratio is a division by zero and [`StatsError::ZeroVariance`] is
/// returned (rather than an infinite F, which JSON cannot hold).
pub fn one_way_anova<G: AsRef<[f64]>>(groups: &[G]) -> Result<AnovaResult> {
    anova_impl(groups, None)
}

fn anova_impl<G: AsRef<[f64]>>(groups: &[G], labels: Option<&[String]>) -> Result<AnovaResult> {
    const TEST: &str = "one-way ANOVA";
    check_groups(TEST, groups, labels, 2, 2)?;
    let k = groups.len();
    let n_total: usize = groups.iter().map(|g| g.as_ref().len()).sum();
    let grand = groups.iter().flat_map(|g| g.as_ref()).sum::<f64>() / n_total as f64;
    let mut ss_between = 0.0;
    let mut ss_within = 0.0;
    let mut summaries = Vec::with_capacity(k);
    for g in groups {
        let s = summarize(g.as_ref())?;
        ss_between += s.n as f64 * (s.mean - grand) * (s.mean - grand);
        ss_within += sum_sq_dev(g.as_ref(), s.mean);
        summaries.push(s);
    }
    let df_between = (k - 1) as f64;
    let df_within = (n_total - k) as f64;
    if ss_within <= 0.0 {
        return Err(StatsError::ZeroVariance {
            test: TEST,
            statistic: "F",
            between: ss_between,
            outcome: if ss_between > 0.0 {
                "infinite"
            } else {
                "undefined (0/0)"
            },
        });
    }
    let ms_between = ss_between / df_between;
    let ms_within = ss_within / df_within;
    let f_statistic = finite(TEST, "F", ms_between / ms_within)?;
    let fisher =
        FisherSnedecor::new(df_between, df_within).map_err(|e| StatsError::Distribution {
            distribution: format!("FisherSnedecor({df_between}, {df_within})"),
            message: e.to_string(),
        })?;
    Ok(AnovaResult {
        f_statistic,
        p_value: fisher.sf(f_statistic),
        df_between,
        df_within,
        ss_between,
        ss_within,
        ms_between,
        ms_within,
        eta_squared: ss_between / (ss_between + ss_within),
        groups: summaries,
    })
}

// ---------------------------------------------------------------------------------------
// Quadrature
// ---------------------------------------------------------------------------------------

/// Number of Gauss–Legendre nodes per panel.
const GL_N: usize = 16;

/// Gauss–Legendre nodes and weights on [−1, 1], computed once by Newton's method on the
/// Legendre polynomial `P_n` (three-term recurrence), accurate to machine precision.
fn gauss_legendre() -> &'static [(f64, f64); GL_N] {
    static NODES: OnceLock<[(f64, f64); GL_N]> = OnceLock::new();
    NODES.get_or_init(|| {
        let n = GL_N;
        let mut out = [(0.0, 0.0); GL_N];
        for i in 0..n.div_ceil(2) {
            // Tricomi's initial guess for the i-th root (descending order).
            let mut x = (std::f64::consts::PI * (i as f64 + 0.75) / (n as f64 + 0.5)).cos();
            let mut dp = 1.0;
            for _ in 0..100 {
                let (mut p0, mut p1) = (1.0, x);
                for j in 2..=n {
                    let p2 = ((2 * j - 1) as f64 * x * p1 - (j - 1) as f64 * p0) / j as f64;
                    p0 = p1;
                    p1 = p2;
                }
                // p1 = P_n(x), p0 = P_{n-1}(x); P_n'(x) = n (x P_n − P_{n−1}) / (x² − 1).
                dp = n as f64 * (x * p1 - p0) / (x * x - 1.0);
                let dx = p1 / dp;
                x -= dx;
                if dx.abs() < 1e-16 {
                    break;
                }
            }
            let w = 2.0 / ((1.0 - x * x) * dp * dp);
            out[i] = (-x, w);
            out[n - 1 - i] = (x, w);
        }
        out
    })
}

/// Gauss–Legendre rule with [`GL_N`] nodes on [a, b] for a function with two outputs.
fn gl_panel(a: f64, b: f64, f: &mut impl FnMut(f64) -> [f64; 2]) -> [f64; 2] {
    let half = 0.5 * (b - a);
    let mid = 0.5 * (a + b);
    let mut acc = [0.0; 2];
    for &(x, w) in gauss_legendre() {
        let v = f(mid + half * x);
        acc[0] += w * v[0];
        acc[1] += w * v[1];
    }
    [acc[0] * half, acc[1] * half]
}

/// Adaptive bisection: accept the two halves when they agree with the whole panel to
/// `tol` (absolute), otherwise recurse.
fn adaptive(
    a: f64,
    b: f64,
    whole: [f64; 2],
    tol: f64,
    depth: u32,
    f: &mut impl FnMut(f64) -> [f64; 2],
) -> [f64; 2] {
    let m = 0.5 * (a + b);
    let left = gl_panel(a, m, f);
    let right = gl_panel(m, b, f);
    let sum = [left[0] + right[0], left[1] + right[1]];
    let err = (sum[0] - whole[0]).abs().max((sum[1] - whole[1]).abs());
    if err <= tol || depth == 0 {
        sum
    } else {
        let l = adaptive(a, m, left, 0.5 * tol, depth - 1, f);
        let r = adaptive(m, b, right, 0.5 * tol, depth - 1, f);
        [l[0] + r[0], l[1] + r[1]]
    }
}

/// `E[g(S)]` for `S = sqrt(χ²_ν / ν)`, by adaptive Gauss–Legendre quadrature in
/// `t = ln S`. The (unnormalised) density of `t` is `exp(ν (t − (e^{2t} − 1)/2))`, peaking
/// at `t = 0` with width `1/sqrt(2ν)`; it is integrated alongside `g` and divided out, so
/// no Gamma-function constant (which cancels badly for large ν) is needed. `g` must be
/// bounded in [0, 1].
fn chi_expectation(df: f64, mut g: impl FnMut(f64) -> f64) -> f64 {
    // log density relative to its peak; concave in t
    let log_dens = |t: f64| df * (t - 0.5 * (2.0 * t).exp_m1());
    // points where the density has fallen by e^-60 (bisection on the monotone sides)
    let find = |mut inside: f64, mut step: f64| {
        while log_dens(inside + step) > -60.0 {
            inside += step;
            step *= 2.0;
        }
        let (mut lo, mut hi) = (inside, inside + step);
        for _ in 0..60 {
            let m = 0.5 * (lo + hi);
            if log_dens(m) > -60.0 {
                lo = m;
            } else {
                hi = m;
            }
        }
        hi
    };
    let sd = 1.0 / (2.0 * df).sqrt();
    let t_lo = find(0.0, -sd);
    let t_hi = find(0.0, sd);
    let mut f = |t: f64| {
        let d = log_dens(t).exp();
        [d * g(t.exp()), d]
    };
    // 8 starting panels on each side of the peak, refined adaptively
    let mut acc = [0.0; 2];
    for (a0, b0) in [(t_lo, 0.0), (0.0, t_hi)] {
        let h = (b0 - a0) / 8.0;
        for i in 0..8 {
            let (a, b) = (a0 + i as f64 * h, a0 + (i + 1) as f64 * h);
            let whole = gl_panel(a, b, &mut f);
            // tolerance relative to the total density mass (≈ sqrt(π/ν) scale)
            let r = adaptive(a, b, whole, 1e-13 * sd, 12, &mut f);
            acc[0] += r[0];
            acc[1] += r[1];
        }
    }
    acc[0] / acc[1]
}

// ---------------------------------------------------------------------------------------
// Studentized range distribution
// ---------------------------------------------------------------------------------------

/// `erf(x)` for `0 ≤ x < 2.5` by the all-positive series
/// `erf(x) = 2/√π · e^{−x²} Σ_n 2^n x^{2n+1} / (1·3·…·(2n+1))` (no cancellation; ≤ 2e-15
/// absolute). statrs' `erf` is not used: its rational approximation is off by up to ~5e-11
/// (e.g. at x = 0.5) and jumps between its pieces, which both limits the accuracy of the
/// quadratures below and stalls their adaptive refinement.
fn erf_series(x: f64) -> f64 {
    let x2 = x * x;
    let (mut sum, mut term) = (x, x);
    for n in 1..400 {
        term *= 2.0 * x2 / (2 * n + 1) as f64;
        sum += term;
        if term < 1e-17 * sum {
            break;
        }
    }
    std::f64::consts::FRAC_2_SQRT_PI * (-x2).exp() * sum
}

/// `erfc(x)` for `x ≥ 2.5` by the continued fraction
/// `erfc(x) = e^{−x²}/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + …))))`, 48 terms evaluated
/// backwards (≤ 2e-14 relative).
fn erfc_continued_fraction(x: f64) -> f64 {
    let mut t = x;
    for n in (1..=48).rev() {
        t = x + 0.5 * n as f64 / t;
    }
    (-x * x).exp() / (std::f64::consts::PI.sqrt() * t)
}

/// Complementary error function, accurate and smooth on the whole real line.
fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        f64::NAN
    } else if x < 0.0 {
        2.0 - erfc(-x)
    } else if x < 2.5 {
        1.0 - erf_series(x)
    } else {
        erfc_continued_fraction(x)
    }
}

/// Error function (see [`erfc`]).
fn erf(x: f64) -> f64 {
    if x.is_nan() {
        f64::NAN
    } else if x < 0.0 {
        -erf(-x)
    } else if x < 2.5 {
        erf_series(x)
    } else {
        1.0 - erfc_continued_fraction(x)
    }
}

/// Standard normal CDF `Φ(x)`.
fn normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x * std::f64::consts::FRAC_1_SQRT_2)
}

/// Standard normal upper tail `1 − Φ(x)`.
fn normal_sf(x: f64) -> f64 {
    0.5 * erfc(x * std::f64::consts::FRAC_1_SQRT_2)
}

/// `Φ(b) − Φ(a)` for `a ≤ b`, `b ≥ 0`, without cancellation.
fn normal_interval(a: f64, b: f64) -> f64 {
    let s = std::f64::consts::FRAC_1_SQRT_2;
    if a >= 0.0 {
        0.5 * (erfc(a * s) - erfc(b * s))
    } else {
        0.5 * (erf(b * s) + erf(-a * s))
    }
}

fn std_normal_pdf(x: f64) -> f64 {
    const INV_SQRT_2PI: f64 = 0.398_942_280_401_432_7;
    INV_SQRT_2PI * (-0.5 * x * x).exp()
}

/// `W(w) = P(range of k iid N(0,1) < w)`.
///
/// Centring on the midpoint of the range (`u = z + w/2`) and folding the even factor gives
/// `W(w) = k ∫_0^∞ [φ(u − w/2) + φ(u + w/2)] [Φ(u + w/2) − Φ(u − w/2)]^{k−1} du`,
/// integrated with 16-point Gauss–Legendre panels of width ≤ 1 over
/// `[max(0, w/2 − 9), w/2 + 7]` (outside it the integrand is below 1e-18).
fn range_cdf(w: f64, k: f64) -> f64 {
    if w <= 0.0 {
        return 0.0;
    }
    if w.is_infinite() {
        return 1.0;
    }
    let half = 0.5 * w;
    let lo = (half - 9.0).max(0.0);
    let hi = half + 7.0;
    let panels = (hi - lo).ceil().max(1.0) as usize;
    let width = (hi - lo) / panels as f64;
    let mut f = |u: f64| {
        let p = normal_interval(u - half, u + half);
        let v = if p > 0.0 {
            (std_normal_pdf(u - half) + std_normal_pdf(u + half)) * p.powf(k - 1.0)
        } else {
            0.0
        };
        [v, 0.0]
    };
    let mut acc = 0.0;
    for i in 0..panels {
        let a = lo + i as f64 * width;
        acc += gl_panel(a, a + width, &mut f)[0];
    }
    (k * acc).clamp(0.0, 1.0)
}

fn check_tukey_args(k: f64, df: f64, nranges: f64) -> Result<()> {
    if !(k.is_finite() && k >= 2.0) {
        return Err(StatsError::InvalidArgument {
            name: "k (number of means)",
            value: k,
            requirement: "must be finite and >= 2",
        });
    }
    if df.is_nan() || df <= 0.0 {
        return Err(StatsError::InvalidArgument {
            name: "df",
            value: df,
            requirement: "must be > 0 (f64::INFINITY for a known variance)",
        });
    }
    if !(nranges.is_finite() && nranges >= 1.0) {
        return Err(StatsError::InvalidArgument {
            name: "nranges",
            value: nranges,
            requirement: "must be finite and >= 1",
        });
    }
    Ok(())
}

/// CDF of the studentized range distribution, `P(Q < q)` for `k` means, `df` degrees of
/// freedom of the variance estimate and `nranges` independent ranges (R's
/// `ptukey(q, nmeans = k, df, nranges)`; use `nranges = 1` for Tukey HSD).
///
/// Method (Copenhaver & Holland 1988, as in R's nmath, implemented from the formulas):
/// the inner range probability `W(w)` is a Gauss–Legendre integral over the midpoint of the
/// range, and the outer integral `∫ f_S(s) W(q s)^nranges ds` over the chi density of
/// `S = sqrt(χ²_df / df)` uses adaptive Gauss–Legendre in `ln s`. `df = f64::INFINITY`
/// gives `W(q)^nranges` directly. Unlike R (which returns NaN for `df < 2`), any `df > 0` is
/// accepted. Absolute error below 1e-10 (≈1e-13 typical; checked against scipy and a
/// 30-digit mpmath integration in the tests).
pub fn ptukey(q: f64, nranges: f64, k: f64, df: f64) -> Result<f64> {
    check_tukey_args(k, df, nranges)?;
    if q.is_nan() {
        return Err(StatsError::InvalidArgument {
            name: "q",
            value: q,
            requirement: "must not be NaN",
        });
    }
    if q <= 0.0 {
        return Ok(0.0);
    }
    if q.is_infinite() {
        return Ok(1.0);
    }
    let p = if df.is_infinite() {
        range_cdf(q, k).powf(nranges)
    } else {
        chi_expectation(df, |s| range_cdf(q * s, k).powf(nranges))
    };
    Ok(p.clamp(0.0, 1.0))
}

/// Quantile of the studentized range distribution (`nranges = 1`): the `q` with
/// `ptukey(q, 1, k, df) = p`, found by bracketing (doubling) and Brent's method to an
/// absolute tolerance of 1e-10 in `q`. R: `qtukey(p, nmeans = k, df)`.
pub fn qtukey(p: f64, k: f64, df: f64) -> Result<f64> {
    check_tukey_args(k, df, 1.0)?;
    check_probability("p", p, false)?;
    if p == 0.0 {
        return Ok(0.0);
    }
    if p == 1.0 {
        return Ok(f64::INFINITY);
    }
    let what = || format!("qtukey(p = {p}, k = {k}, df = {df})");
    let mut f = |q: f64| ptukey(q, 1.0, k, df).map(|c| c - p);
    let (mut lo, mut f_lo) = (0.0, -p);
    let mut hi = 2.0;
    let mut f_hi = f(hi)?;
    let mut doublings = 0;
    while f_hi < 0.0 {
        lo = hi;
        f_lo = f_hi;
        hi *= 2.0;
        f_hi = f(hi)?;
        doublings += 1;
        if doublings > 60 {
            return Err(StatsError::NoConvergence {
                what: what(),
                reason: "no upper bracket below 2^62 (p too close to 1)",
            });
        }
    }
    brent(&mut f, lo, hi, f_lo, f_hi, 1e-10).and_then(|r| {
        r.ok_or_else(|| StatsError::NoConvergence {
            what: what(),
            reason: "Brent's method did not converge in 200 iterations",
        })
    })
}

/// Brent's (1973) root finder on a bracket `[a, b]` with `f(a)`, `f(b)` of opposite signs.
fn brent(
    f: &mut impl FnMut(f64) -> Result<f64>,
    mut a: f64,
    mut b: f64,
    mut fa: f64,
    mut fb: f64,
    tol: f64,
) -> Result<Option<f64>> {
    let (mut c, mut fc) = (a, fa);
    let mut d = b - a;
    let mut e = d;
    for _ in 0..200 {
        if (fb > 0.0 && fc > 0.0) || (fb < 0.0 && fc < 0.0) {
            c = a;
            fc = fa;
            d = b - a;
            e = d;
        }
        if fc.abs() < fb.abs() {
            a = b;
            b = c;
            c = a;
            fa = fb;
            fb = fc;
            fc = fa;
        }
        let tol1 = 2.0 * f64::EPSILON * b.abs() + 0.5 * tol;
        let m = 0.5 * (c - b);
        if m.abs() <= tol1 || fb == 0.0 {
            return Ok(Some(b));
        }
        if e.abs() >= tol1 && fa.abs() > fb.abs() {
            let s = fb / fa;
            let (mut p, mut q) = if a == c {
                (2.0 * m * s, 1.0 - s)
            } else {
                let q = fa / fc;
                let r = fb / fc;
                (
                    s * (2.0 * m * q * (q - r) - (b - a) * (r - 1.0)),
                    (q - 1.0) * (r - 1.0) * (s - 1.0),
                )
            };
            if p > 0.0 {
                q = -q;
            } else {
                p = -p;
            }
            if 2.0 * p < (3.0 * m * q - (tol1 * q).abs()).min((e * q).abs()) {
                e = d;
                d = p / q;
            } else {
                d = m;
                e = m;
            }
        } else {
            d = m;
            e = m;
        }
        a = b;
        fa = fb;
        b += if d.abs() > tol1 { d } else { tol1.copysign(m) };
        fb = f(b)?;
    }
    Ok(None)
}

// ---------------------------------------------------------------------------------------
// Tukey HSD
// ---------------------------------------------------------------------------------------

/// One pairwise comparison of Tukey's HSD.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TukeyPair {
    /// Index of the first group.
    pub group_a: usize,
    /// Index of the second group (`group_a < group_b`).
    pub group_b: usize,
    /// `mean_a − mean_b`.
    pub mean_diff: f64,
    /// Tukey–Kramer standard error `sqrt(MS_w / 2 · (1/n_a + 1/n_b))`.
    pub std_error: f64,
    /// Studentized range statistic `|mean_diff| / std_error`.
    pub q_statistic: f64,
    /// Family-wise adjusted p-value `1 − ptukey(q, 1, k, df_within)`.
    pub p_value: f64,
    /// Lower end of the simultaneous `1 − α` confidence interval of `mean_diff`.
    pub ci_low: f64,
    /// Upper end of the simultaneous `1 − α` confidence interval of `mean_diff`.
    pub ci_high: f64,
    /// `p_value < alpha`.
    pub reject: bool,
}

/// Result of Tukey's HSD over all pairs of groups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TukeyHsdResult {
    /// Family-wise error rate used for the intervals and `reject`.
    pub alpha: f64,
    /// Number of groups `k`.
    pub k: usize,
    /// Error degrees of freedom `N − k`.
    pub df_within: f64,
    /// Pooled error variance `MS_within`.
    pub ms_within: f64,
    /// Critical value `qtukey(1 − α, k, df_within)`.
    pub q_critical: f64,
    /// All `k (k − 1) / 2` pairs, ordered (0,1), (0,2), …, (1,2), ….
    pub pairs: Vec<TukeyPair>,
}

impl TukeyHsdResult {
    /// The comparison of groups `a` and `b` (either order; `mean_diff` is then
    /// `mean_a − mean_b` of the stored order, see [`TukeyPair::group_a`]).
    pub fn pair(&self, a: usize, b: usize) -> Option<&TukeyPair> {
        let (a, b) = if a < b { (a, b) } else { (b, a) };
        self.pairs.iter().find(|p| p.group_a == a && p.group_b == b)
    }
}

/// Tukey's honestly significant difference test over all pairs of `groups`, with the
/// Tukey–Kramer standard error for unequal group sizes (Kramer 1956), at family-wise level
/// `alpha`. Needs at least 2 groups of at least 2 observations; zero within-group variance
/// is an error (see [`one_way_anova`]).
pub fn tukey_hsd<G: AsRef<[f64]>>(groups: &[G], alpha: f64) -> Result<TukeyHsdResult> {
    tukey_impl(groups, alpha, None)
}

fn tukey_impl<G: AsRef<[f64]>>(
    groups: &[G],
    alpha: f64,
    labels: Option<&[String]>,
) -> Result<TukeyHsdResult> {
    check_probability("alpha", alpha, true)?;
    let anova = anova_impl(groups, labels).map_err(|e| match e {
        StatsError::ZeroVariance {
            statistic: _,
            between,
            outcome,
            ..
        } => StatsError::ZeroVariance {
            test: "Tukey HSD",
            statistic: "q",
            between,
            outcome,
        },
        StatsError::TooFewGroups { got, required, .. } => StatsError::TooFewGroups {
            test: "Tukey HSD",
            got,
            required,
        },
        StatsError::TooFewObservations {
            group,
            got,
            required,
            ..
        } => StatsError::TooFewObservations {
            test: "Tukey HSD",
            group,
            got,
            required,
        },
        other => other,
    })?;
    let k = groups.len();
    let kf = k as f64;
    let df = anova.df_within;
    let q_critical = qtukey(1.0 - alpha, kf, df)?;
    let mut pairs = Vec::with_capacity(k * (k - 1) / 2);
    for a in 0..k {
        for b in a + 1..k {
            let (sa, sb) = (&anova.groups[a], &anova.groups[b]);
            let mean_diff = sa.mean - sb.mean;
            let std_error =
                (anova.ms_within / 2.0 * (1.0 / sa.n as f64 + 1.0 / sb.n as f64)).sqrt();
            let q_statistic = mean_diff.abs() / std_error;
            let p_value = (1.0 - ptukey(q_statistic, 1.0, kf, df)?).clamp(0.0, 1.0);
            pairs.push(TukeyPair {
                group_a: a,
                group_b: b,
                mean_diff,
                std_error,
                q_statistic,
                p_value,
                ci_low: mean_diff - q_critical * std_error,
                ci_high: mean_diff + q_critical * std_error,
                reject: p_value < alpha,
            });
        }
    }
    Ok(TukeyHsdResult {
        alpha,
        k,
        df_within: df,
        ms_within: anova.ms_within,
        q_critical,
        pairs,
    })
}

// ---------------------------------------------------------------------------------------
// Welch's t-test
// ---------------------------------------------------------------------------------------

/// Alternative hypothesis of a two-sample test, about `mean_a − mean_b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Alternative {
    /// `mean_a ≠ mean_b`.
    #[default]
    TwoSided,
    /// `mean_a < mean_b`.
    Less,
    /// `mean_a > mean_b`.
    Greater,
}

/// Result of Welch's unequal-variance t-test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WelchTTest {
    /// `t = (mean_a − mean_b) / std_error`.
    pub t_statistic: f64,
    /// Welch–Satterthwaite degrees of freedom.
    pub df: f64,
    /// p-value under `alternative`.
    pub p_value: f64,
    /// `mean_a − mean_b`.
    pub mean_diff: f64,
    /// `sqrt(s_a²/n_a + s_b²/n_b)`.
    pub std_error: f64,
    /// The alternative hypothesis tested.
    pub alternative: Alternative,
}

/// Welch's two-sample t-test of `a` against `b` (each ≥ 2 finite observations). Zero
/// variance in both samples is [`StatsError::ZeroVariance`].
pub fn welch_t_test(a: &[f64], b: &[f64], alternative: Alternative) -> Result<WelchTTest> {
    const TEST: &str = "Welch t-test";
    check_group(TEST, a, 0, None, 2)?;
    check_group(TEST, b, 1, None, 2)?;
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let (ma, mb) = (mean(a), mean(b));
    let va = sum_sq_dev(a, ma) / (na - 1.0) / na;
    let vb = sum_sq_dev(b, mb) / (nb - 1.0) / nb;
    let mean_diff = ma - mb;
    if va + vb <= 0.0 {
        return Err(StatsError::ZeroVariance {
            test: TEST,
            statistic: "t",
            between: mean_diff.abs(),
            outcome: if mean_diff != 0.0 {
                "infinite"
            } else {
                "undefined (0/0)"
            },
        });
    }
    let std_error = (va + vb).sqrt();
    let t = finite(TEST, "t", mean_diff / std_error)?;
    // Welch–Satterthwaite in shares of the total variance, (va + vb)² / (va²/(na−1) + vb²/(nb−1))
    // = 1 / (ra²/(na−1) + rb²/(nb−1)) with ra = va / (va + vb): no fourth powers to overflow or
    // underflow.
    let (ra, rb) = (va / (va + vb), vb / (va + vb));
    let df = finite(
        TEST,
        "df",
        1.0 / (ra * ra / (na - 1.0) + rb * rb / (nb - 1.0)),
    )?;
    let dist = students_t(df)?;
    let p_value = match alternative {
        Alternative::TwoSided => (2.0 * dist.sf(t.abs())).min(1.0),
        Alternative::Less => dist.cdf(t),
        Alternative::Greater => dist.sf(t),
    };
    Ok(WelchTTest {
        t_statistic: t,
        df,
        p_value,
        mean_diff,
        std_error,
        alternative,
    })
}

// ---------------------------------------------------------------------------------------
// Cohen's d
// ---------------------------------------------------------------------------------------

/// Which standardiser Cohen's d uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CohensDVariant {
    /// Signed `(mean_a − mean_b) / s_p` with the pooled ddof-1 standard deviation.
    #[default]
    Pooled,
    /// The original script's `|mean_a − mean_b| / sqrt((σ_a² + σ_b²) / 2)` with ddof-0 σ,
    /// and 0 when either σ is 0 (original-algorithms.md §3.3).
    Legacy,
}

/// Cohen's d of `a` against `b`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CohensD {
    /// The effect size.
    pub d: f64,
    /// The standardiser (pooled ddof-1 SD, or the legacy ddof-0 root mean variance).
    pub standardizer: f64,
    /// `mean_a − mean_b`.
    pub mean_diff: f64,
    /// Which formula was used.
    pub variant: CohensDVariant,
}

/// Cohen's d of `a` against `b` (see [`CohensDVariant`]). `Pooled` needs ≥ 2 observations
/// per group and a non-zero pooled SD; `Legacy` needs ≥ 1 per group and returns 0 when
/// either ddof-0 σ is 0, as the original did.
pub fn cohens_d(a: &[f64], b: &[f64], variant: CohensDVariant) -> Result<CohensD> {
    const TEST: &str = "Cohen's d";
    let min_obs = match variant {
        CohensDVariant::Pooled => 2,
        CohensDVariant::Legacy => 1,
    };
    check_group(TEST, a, 0, None, min_obs)?;
    check_group(TEST, b, 1, None, min_obs)?;
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let (ma, mb) = (mean(a), mean(b));
    let mean_diff = ma - mb;
    let (ssa, ssb) = (sum_sq_dev(a, ma), sum_sq_dev(b, mb));
    match variant {
        CohensDVariant::Pooled => {
            let standardizer = ((ssa + ssb) / (na + nb - 2.0)).sqrt();
            if standardizer <= 0.0 {
                return Err(StatsError::ZeroVariance {
                    test: TEST,
                    statistic: "d",
                    between: mean_diff.abs(),
                    outcome: if mean_diff != 0.0 {
                        "infinite"
                    } else {
                        "undefined (0/0)"
                    },
                });
            }
            Ok(CohensD {
                d: mean_diff / standardizer,
                standardizer,
                mean_diff,
                variant,
            })
        }
        CohensDVariant::Legacy => {
            let (va, vb) = (ssa / na, ssb / nb);
            let standardizer = ((va + vb) / 2.0).sqrt();
            let d = if va == 0.0 || vb == 0.0 {
                0.0
            } else {
                mean_diff.abs() / standardizer
            };
            Ok(CohensD {
                d,
                standardizer,
                mean_diff,
                variant,
            })
        }
    }
}

// ---------------------------------------------------------------------------------------
// Multiple-comparison corrections
// ---------------------------------------------------------------------------------------

/// Multiple-comparison correction of a family of p-values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Correction {
    /// No correction.
    None,
    /// Bonferroni: `min(1, m p)`.
    #[default]
    Bonferroni,
    /// Holm's step-down (uniformly more powerful than Bonferroni, same FWER control).
    Holm,
}

impl Correction {
    /// Adjusted p-values, in input order.
    pub fn apply(self, p_values: &[f64]) -> Result<Vec<f64>> {
        match self {
            Correction::None => {
                check_p_values("no correction", p_values)?;
                Ok(p_values.to_vec())
            }
            Correction::Bonferroni => bonferroni(p_values),
            Correction::Holm => holm(p_values),
        }
    }
}

fn check_p_values(correction: &'static str, p_values: &[f64]) -> Result<()> {
    match p_values
        .iter()
        .enumerate()
        .find(|(_, p)| !(0.0..=1.0).contains(*p))
    {
        Some((index, &value)) => Err(StatsError::InvalidPValue {
            correction,
            index,
            value,
        }),
        None => Ok(()),
    }
}

/// Bonferroni-adjusted p-values `min(1, m p_i)`, in input order.
pub fn bonferroni(p_values: &[f64]) -> Result<Vec<f64>> {
    check_p_values("Bonferroni", p_values)?;
    let m = p_values.len() as f64;
    Ok(p_values.iter().map(|p| (m * p).min(1.0)).collect())
}

/// Holm (1979) step-down adjusted p-values, in input order:
/// `p̃_(i) = max_{j ≤ i} min(1, (m − j + 1) p_(j))` over the ascending order.
pub fn holm(p_values: &[f64]) -> Result<Vec<f64>> {
    check_p_values("Holm", p_values)?;
    let m = p_values.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&i, &j| p_values[i].total_cmp(&p_values[j]));
    let mut adjusted = vec![0.0; m];
    let mut running = 0.0_f64;
    for (rank, &i) in order.iter().enumerate() {
        running = running.max(((m - rank) as f64 * p_values[i]).min(1.0));
        adjusted[i] = running;
    }
    Ok(adjusted)
}

// ---------------------------------------------------------------------------------------
// Power
// ---------------------------------------------------------------------------------------

/// Upper tail `P(T' > x)` of the noncentral t with `df` and noncentrality `delta`:
/// `T' = (Z + δ) / S`, so `P(T' > x) = E_S[Q(x S − δ)]` (`Q` = normal upper tail).
fn noncentral_t_sf(x: f64, df: f64, delta: f64) -> f64 {
    chi_expectation(df, |s| normal_sf(x * s - delta))
}

/// Lower tail `P(T' < x) = E_S[Φ(x S − δ)]`.
fn noncentral_t_cdf(x: f64, df: f64, delta: f64) -> f64 {
    chi_expectation(df, |s| normal_cdf(x * s - delta))
}

/// The standard Student t distribution with `df` degrees of freedom.
fn students_t(df: f64) -> Result<StudentsT> {
    StudentsT::new(0.0, 1.0, df).map_err(|e| StatsError::Distribution {
        distribution: format!("StudentsT(df = {df})"),
        message: e.to_string(),
    })
}

/// Power of a two-sided t-test with `df` degrees of freedom whose statistic has noncentrality
/// `delta` under the alternative, at level `alpha`: both rejection tails of the noncentral t.
fn t_test_power(df: f64, delta: f64, alpha: f64) -> Result<f64> {
    let t_crit = students_t(df)?.inverse_cdf(1.0 - alpha / 2.0);
    let power = noncentral_t_sf(t_crit, df, delta) + noncentral_t_cdf(-t_crit, df, delta);
    Ok(power.clamp(0.0, 1.0))
}

fn check_power_args(d: f64, n_per_group: usize, alpha: f64) -> Result<()> {
    if !d.is_finite() {
        return Err(StatsError::InvalidArgument {
            name: "effect size d",
            value: d,
            requirement: "must be finite",
        });
    }
    if n_per_group < 2 {
        return Err(StatsError::InvalidArgument {
            name: "n_per_group",
            value: n_per_group as f64,
            requirement: "must be >= 2",
        });
    }
    check_probability("alpha", alpha, true)
}

/// Power of the two-sided two-sample (pooled-variance) t-test with `n_per_group`
/// observations in each group at true standardised effect `d` and level `alpha`, from the
/// noncentral t distribution (both rejection tails counted; R's
/// `power.t.test(strict = TRUE)`, scipy `nct`).
pub fn two_sample_t_power(d: f64, n_per_group: usize, alpha: f64) -> Result<f64> {
    check_power_args(d, n_per_group, alpha)?;
    let n = n_per_group as f64;
    t_test_power(2.0 * n - 2.0, d * (n / 2.0).sqrt(), alpha)
}

/// Normal approximation of [`two_sample_t_power`]:
/// `Φ(δ − z_{1−α/2}) + Φ(−δ − z_{1−α/2})`, `δ = d sqrt(n/2)`. Optimistic for small `n`.
pub fn two_sample_t_power_normal(d: f64, n_per_group: usize, alpha: f64) -> Result<f64> {
    check_power_args(d, n_per_group, alpha)?;
    let delta = d * (n_per_group as f64 / 2.0).sqrt();
    // statrs' quantile, polished by one Newton step on the accurate Φ
    let mut z = Normal::standard().inverse_cdf(1.0 - alpha / 2.0);
    z -= (normal_sf(z) - alpha / 2.0) / -std_normal_pdf(z);
    Ok(normal_cdf(delta - z) + normal_cdf(-delta - z))
}

/// Smallest `n` per group (2 ≤ n ≤ `max_n`) whose exact power reaches `target_power`, or
/// `None` if even `max_n` does not (e.g. `d = 0`).
pub fn required_n_per_group(
    d: f64,
    alpha: f64,
    target_power: f64,
    max_n: usize,
) -> Result<Option<usize>> {
    check_probability("target_power", target_power, true)?;
    check_power_args(d, 2, alpha)?;
    if max_n < 2 || two_sample_t_power(d, max_n, alpha)? < target_power {
        return Ok(None);
    }
    // power is increasing in n: bisection on [2, max_n]
    let (mut lo, mut hi) = (1usize, max_n);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if mid >= 2 && two_sample_t_power(d, mid, alpha)? >= target_power {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(Some(hi))
}

/// A power note for a two-group comparison design.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PowerNote {
    /// Standardised effect size assumed.
    pub effect_size_d: f64,
    /// Observations per group in the design.
    pub n_per_group: usize,
    /// Two-sided significance level.
    pub alpha: f64,
    /// Power from the noncentral t (numerical integration).
    pub power: f64,
    /// Power from the normal approximation (for comparison; optimistic at small n).
    pub power_normal_approx: f64,
    /// Target power used for `n_for_target`.
    pub target_power: f64,
    /// Smallest n per group reaching `target_power` (`None`: not within 100 000).
    pub n_for_target: Option<usize>,
    /// How the power was computed.
    pub method: String,
}

impl fmt::Display for PowerNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "With n = {} per group, a two-sided two-sample t-test at alpha = {} detects an \
             effect of d = {} with power {:.3} (noncentral t; normal approximation {:.3}).",
            self.n_per_group, self.alpha, self.effect_size_d, self.power, self.power_normal_approx
        )?;
        match self.n_for_target {
            Some(n) => write!(f, " Power {} needs n = {} per group.", self.target_power, n),
            None => write!(
                f,
                " Power {} is not reached with up to 100000 per group.",
                self.target_power
            ),
        }
    }
}

/// Power note for a design with `n_per_group` observations per group, an assumed effect
/// `d` and level `alpha`, plus the n per group needed for `target_power`.
pub fn power_note(d: f64, n_per_group: usize, alpha: f64, target_power: f64) -> Result<PowerNote> {
    check_probability("target_power", target_power, true)?;
    Ok(PowerNote {
        effect_size_d: d,
        n_per_group,
        alpha,
        power: two_sample_t_power(d, n_per_group, alpha)?,
        power_normal_approx: two_sample_t_power_normal(d, n_per_group, alpha)?,
        target_power,
        n_for_target: required_n_per_group(d, alpha, target_power, 100_000)?,
        method: "two-sided two-sample t-test, noncentral t by numerical integration over the \
                 chi density (both tails)"
            .to_string(),
    })
}

// ---------------------------------------------------------------------------------------
// Paired differences (a design where each unit, e.g. a seed, is measured under both conditions)
// ---------------------------------------------------------------------------------------

/// The paired t analysis of `d_i = a_i − b_i` over units measured under both conditions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairedDifference {
    /// Pairs.
    pub n: usize,
    /// Mean of the differences `a − b`.
    pub mean_diff: f64,
    /// Sample standard deviation of the differences (ddof 1).
    pub sd_diff: f64,
    /// `sd_diff / sqrt(n)`.
    pub std_error: f64,
    /// Degrees of freedom, `n − 1`.
    pub df: f64,
    /// `mean_diff / std_error`.
    pub t_statistic: f64,
    /// Two-sided p-value.
    pub p_value: f64,
    /// Confidence level of the interval (e.g. 0.95).
    pub confidence: f64,
    /// Lower end of the `confidence` t interval for the mean difference.
    pub ci_low: f64,
    /// Upper end.
    pub ci_high: f64,
    /// Cohen's d_z = `mean_diff / sd_diff` (the paired design's standardised effect).
    pub cohens_dz: f64,
}

impl PairedDifference {
    /// The `confidence` t interval of the same differences, `mean ± t_{df, (1+c)/2} · se`
    /// (e.g. a Bonferroni-simultaneous interval at `1 − α/m`).
    pub fn interval(&self, confidence: f64) -> Result<(f64, f64)> {
        check_probability("confidence", confidence, true)?;
        let half = students_t(self.df)?.inverse_cdf(0.5 + confidence / 2.0) * self.std_error;
        Ok((self.mean_diff - half, self.mean_diff + half))
    }
}

/// Paired t-test of `a` against `b` (`a[i]` and `b[i]` measured on the same unit; ≥ 2 pairs)
/// with a two-sided `confidence` interval for the mean difference `a − b`. Differences that
/// are all equal have zero variance: [`StatsError::ZeroVariance`].
pub fn paired_t(a: &[f64], b: &[f64], confidence: f64) -> Result<PairedDifference> {
    const TEST: &str = "paired t-test";
    check_group(TEST, a, 0, None, 2)?;
    check_group(TEST, b, 1, None, 2)?;
    check_probability("confidence", confidence, true)?;
    if a.len() != b.len() {
        return Err(StatsError::InvalidArgument {
            name: "pairs (b's length)",
            value: b.len() as f64,
            requirement: "must equal a's length: every unit is measured under both conditions",
        });
    }
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let n = d.len() as f64;
    let m = mean(&d);
    let sd = (sum_sq_dev(&d, m) / (n - 1.0)).sqrt();
    if sd.is_nan() || sd <= 0.0 {
        return Err(StatsError::ZeroVariance {
            test: TEST,
            statistic: "t",
            between: m.abs(),
            outcome: if m != 0.0 {
                "infinite"
            } else {
                "undefined (0/0)"
            },
        });
    }
    let se = sd / n.sqrt();
    let t = finite(TEST, "t", m / se)?;
    let df = n - 1.0;
    let dist = students_t(df)?;
    let half = dist.inverse_cdf(0.5 + confidence / 2.0) * se;
    Ok(PairedDifference {
        n: d.len(),
        mean_diff: m,
        sd_diff: sd,
        std_error: se,
        df,
        t_statistic: t,
        p_value: (2.0 * dist.sf(t.abs())).min(1.0),
        confidence,
        ci_low: m - half,
        ci_high: m + half,
        cohens_dz: m / sd,
    })
}

/// Ranks of `x` from 1, ties given their average rank (`scipy.stats.rankdata`'s default).
pub fn average_ranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&i, &j| x[i].total_cmp(&x[j]));
    let mut ranks = vec![0.0; x.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && x[order[j + 1]] == x[order[i]] {
            j += 1;
        }
        let r = (i + j) as f64 / 2.0 + 1.0;
        for &o in &order[i..=j] {
            ranks[o] = r;
        }
        i = j + 1;
    }
    ranks
}

/// Spearman's rank correlation of `a` and `b` (paired, ≥ 2 each): Pearson's correlation of their
/// average ranks, as `scipy.stats.spearmanr`. A constant input has no ranking:
/// [`StatsError::ZeroVariance`].
pub fn spearman(a: &[f64], b: &[f64]) -> Result<f64> {
    const TEST: &str = "Spearman correlation";
    check_group(TEST, a, 0, None, 2)?;
    check_group(TEST, b, 1, None, 2)?;
    if a.len() != b.len() {
        return Err(StatsError::InvalidArgument {
            name: "pairs (b's length)",
            value: b.len() as f64,
            requirement: "must equal a's length",
        });
    }
    let (ra, rb) = (average_ranks(a), average_ranks(b));
    let (ma, mb) = (mean(&ra), mean(&rb));
    let (va, vb) = (sum_sq_dev(&ra, ma), sum_sq_dev(&rb, mb));
    if va <= 0.0 || vb <= 0.0 {
        return Err(StatsError::ZeroVariance {
            test: TEST,
            statistic: "rho",
            between: 0.0,
            outcome: "undefined (0/0)",
        });
    }
    let c: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - ma) * (y - mb)).sum();
    finite(TEST, "rho", (c / (va * vb).sqrt()).clamp(-1.0, 1.0))
}

/// Power of the two-sided paired t-test with `n` pairs at true standardised effect `dz`
/// (mean difference / sd of differences) and level `alpha`: the one-sample noncentral t with
/// `n − 1` degrees of freedom and noncentrality `dz · sqrt(n)`, both tails.
pub fn paired_t_power(dz: f64, n: usize, alpha: f64) -> Result<f64> {
    check_power_args(dz, n, alpha)?;
    t_test_power(n as f64 - 1.0, dz * (n as f64).sqrt(), alpha)
}

/// The smallest standardised effect `dz` that a paired t-test with `n` pairs detects with
/// probability `power` at two-sided level `alpha` (bisection on [`paired_t_power`]; multiply by
/// the sd of the differences for the effect in the measurement's units).
pub fn paired_min_detectable_dz(n: usize, alpha: f64, power: f64) -> Result<f64> {
    check_probability("power", power, true)?;
    check_power_args(0.0, n, alpha)?;
    let (mut lo, mut hi) = (0.0_f64, 1.0_f64);
    while paired_t_power(hi, n, alpha)? < power {
        hi *= 2.0;
        if hi > 1e6 {
            return Err(StatsError::InvalidArgument {
                name: "power",
                value: power,
                requirement: "is not reached by any effect below 1e6 sd with these pairs",
            });
        }
    }
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if paired_t_power(mid, n, alpha)? >= power {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(hi)
}

// ---------------------------------------------------------------------------------------
// Whole comparison of a set of conditions (one length of the sweep)
// ---------------------------------------------------------------------------------------

/// One condition's observations with its label (e.g. `"keep_ratio=0.5"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelledGroup {
    /// Name of the condition, used in results and error messages.
    pub label: String,
    /// One observation per run (e.g. the final validation loss of each seed).
    pub values: Vec<f64>,
}

impl LabelledGroup {
    /// A labelled group.
    pub fn new(label: impl Into<String>, values: Vec<f64>) -> Self {
        Self {
            label: label.into(),
            values,
        }
    }
}

/// Parameters of [`compare_groups`] (builder; validated by [`CompareParams::check`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompareParams {
    /// Family-wise significance level (default 0.05).
    pub alpha: f64,
    /// Correction of the per-group tests against the baseline (default Bonferroni).
    pub correction: Correction,
    /// Cohen's d formula (default pooled ddof 1).
    pub cohens_d: CohensDVariant,
    /// Whether a lower mean is better (true for losses; the default).
    pub lower_is_better: bool,
    /// Effect size assumed by the power note (default 0.8, Cohen's "large").
    pub power_effect_size: f64,
    /// Target power for the sample size in the power note (default 0.8).
    pub target_power: f64,
}

impl Default for CompareParams {
    fn default() -> Self {
        Self {
            alpha: 0.05,
            correction: Correction::Bonferroni,
            cohens_d: CohensDVariant::Pooled,
            lower_is_better: true,
            power_effect_size: 0.8,
            target_power: 0.8,
        }
    }
}

impl CompareParams {
    /// Sets the family-wise significance level.
    pub fn alpha(mut self, alpha: f64) -> Self {
        self.alpha = alpha;
        self
    }
    /// Sets the correction of the tests against the baseline.
    pub fn correction(mut self, correction: Correction) -> Self {
        self.correction = correction;
        self
    }
    /// Sets the Cohen's d formula.
    pub fn cohens_d(mut self, variant: CohensDVariant) -> Self {
        self.cohens_d = variant;
        self
    }
    /// Sets whether a lower mean is better.
    pub fn lower_is_better(mut self, lower_is_better: bool) -> Self {
        self.lower_is_better = lower_is_better;
        self
    }
    /// Sets the effect size of the power note.
    pub fn power_effect_size(mut self, d: f64) -> Self {
        self.power_effect_size = d;
        self
    }
    /// Sets the target power of the power note.
    pub fn target_power(mut self, power: f64) -> Self {
        self.target_power = power;
        self
    }
    /// Validates the parameters.
    pub fn check(self) -> Result<CheckedCompareParams> {
        check_probability("alpha", self.alpha, true)?;
        check_probability("target_power", self.target_power, true)?;
        if !self.power_effect_size.is_finite() {
            return Err(StatsError::InvalidArgument {
                name: "power_effect_size",
                value: self.power_effect_size,
                requirement: "must be finite",
            });
        }
        Ok(CheckedCompareParams(self))
    }
}

/// [`CompareParams`] that passed [`CompareParams::check`].
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedCompareParams(CompareParams);

impl CheckedCompareParams {
    /// The validated parameters.
    pub fn params(&self) -> &CompareParams {
        &self.0
    }
}

/// The best condition and whether it beats the runner-up significantly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BestGroup {
    /// Index of the best group (lowest mean, or highest if `lower_is_better` is false).
    pub group: usize,
    /// Its label.
    pub label: String,
    /// Its mean.
    pub mean: f64,
    /// Index of the second best group.
    pub runner_up: usize,
    /// Its label.
    pub runner_up_label: String,
    /// Its mean.
    pub runner_up_mean: f64,
    /// Tukey HSD family-wise p-value of best vs runner-up.
    pub tukey_p_value: f64,
    /// `tukey_p_value < alpha`.
    pub significantly_better: bool,
}

/// One condition compared with the baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersusBaseline {
    /// Index of the group.
    pub group: usize,
    /// Its label.
    pub label: String,
    /// Cohen's d of the group against the baseline (negative: lower mean than baseline).
    pub cohens_d: CohensD,
    /// Welch's two-sided t-test of the group against the baseline.
    pub welch: WelchTTest,
    /// Welch p-value after the family correction over all groups.
    pub p_adjusted: f64,
    /// `p_adjusted < alpha`.
    pub significant: bool,
}

/// Full statistical comparison of a set of conditions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupComparison {
    /// The parameters used.
    pub params: CompareParams,
    /// Group labels, in input order.
    pub labels: Vec<String>,
    /// One-way ANOVA over the groups (the baseline excluded).
    pub anova: AnovaResult,
    /// Tukey HSD over the groups (the baseline excluded).
    pub tukey: TukeyHsdResult,
    /// The best group and its test against the runner-up.
    pub best: BestGroup,
    /// Label of the baseline, if one was given.
    pub baseline_label: Option<String>,
    /// Summary of the baseline, if one was given.
    pub baseline: Option<GroupSummary>,
    /// Each group against the baseline (empty without a baseline).
    pub versus_baseline: Vec<VersusBaseline>,
    /// Power note for the design (smallest group size, assumed effect size).
    pub power: PowerNote,
}

/// Compares `groups` (≥ 2 groups, ≥ 2 observations each): one-way ANOVA, Tukey HSD, the
/// best group vs the runner-up (Tukey p-value), and, with a `baseline`, Cohen's d and
/// Welch's t-test of every group against it with the chosen correction; plus a power
/// note. This is the per-length analysis of the DSA sweep (groups = keep ratios,
/// baseline = dense attention, observations = final validation loss per seed).
pub fn compare_groups(
    groups: &[LabelledGroup],
    baseline: Option<&LabelledGroup>,
    params: &CheckedCompareParams,
) -> Result<GroupComparison> {
    const TEST: &str = "group comparison";
    let p = params.params();
    let labels: Vec<String> = groups.iter().map(|g| g.label.clone()).collect();
    let values: Vec<&[f64]> = groups.iter().map(|g| g.values.as_slice()).collect();
    check_groups(TEST, &values, Some(&labels), 2, 2)?;
    if let Some(b) = baseline {
        let name = [format!("baseline {}", b.label)];
        check_group(TEST, &b.values, 0, Some(&name), 2)?;
    }
    let anova = anova_impl(&values, Some(&labels))?;
    let tukey = tukey_impl(&values, p.alpha, Some(&labels))?;

    let mut order: Vec<usize> = (0..groups.len()).collect();
    order.sort_by(|&i, &j| {
        let c = anova.groups[i].mean.total_cmp(&anova.groups[j].mean);
        if p.lower_is_better { c } else { c.reverse() }
    });
    let (best, runner_up) = (order[0], order[1]);
    let tukey_p_value =
        tukey
            .pair(best, runner_up)
            .map(|pair| pair.p_value)
            .ok_or(StatsError::TooFewGroups {
                test: TEST,
                got: groups.len(),
                required: 2,
            })?;
    let best = BestGroup {
        group: best,
        label: labels[best].clone(),
        mean: anova.groups[best].mean,
        runner_up,
        runner_up_label: labels[runner_up].clone(),
        runner_up_mean: anova.groups[runner_up].mean,
        tukey_p_value,
        significantly_better: tukey_p_value < p.alpha,
    };

    let mut versus_baseline = Vec::new();
    if let Some(b) = baseline {
        let mut raw = Vec::with_capacity(groups.len());
        for g in groups {
            let d = cohens_d(&g.values, &b.values, p.cohens_d);
            let w = welch_t_test(&g.values, &b.values, Alternative::TwoSided);
            raw.push((d?, w?));
        }
        let p_raw: Vec<f64> = raw.iter().map(|(_, w)| w.p_value).collect();
        let p_adj = p.correction.apply(&p_raw)?;
        for (i, ((d, w), pa)) in raw.into_iter().zip(p_adj).enumerate() {
            versus_baseline.push(VersusBaseline {
                group: i,
                label: labels[i].clone(),
                cohens_d: d,
                welch: w,
                p_adjusted: pa,
                significant: pa < p.alpha,
            });
        }
    }

    let n_min = groups
        .iter()
        .map(|g| g.values.len())
        .chain(baseline.map(|b| b.values.len()))
        .min()
        .unwrap_or(2);
    let power = power_note(p.power_effect_size, n_min, p.alpha, p.target_power)?;
    Ok(GroupComparison {
        params: p.clone(),
        labels,
        anova,
        tukey,
        best,
        baseline_label: baseline.map(|b| b.label.clone()),
        baseline: baseline.map(|b| summarize(&b.values)).transpose()?,
        versus_baseline,
        power,
    })
}

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
