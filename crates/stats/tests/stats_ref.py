"""Reference numbers for crates/sparsity-metrics/tests/stats.rs.

Run once with the workspace venv (numpy 2.2.6, scipy 1.15.3, mpmath 1.3.0):

    /work/venv/bin/python crates/sparsity-metrics/tests/data/stats_ref.py

and paste the printed constants into the test file. Two independent sources are used for
the studentized range:
  * scipy.stats.studentized_range (scipy's own integration, SciPy 1.7+), and
  * a direct high-precision double integral written here with mpmath (30 digits), from the
    definition P(Q < q) = ∫_0^∞ f_S(s) W(q s) ds with
    W(w) = k ∫ φ(z) [Φ(z + w) − Φ(z)]^(k−1) dz and S = sqrt(χ²_df / df).
The published table values quoted by the issue (3.877, 4.232, 2.772, 4.646, 5.270, 5.018)
are checked against both.
"""
import mpmath as mp
import numpy as np
from scipy import stats

mp.mp.dps = 30
np.set_printoptions(legacy="1.25")  # repr(np.float64) prints a plain float literal


def w_range(w, k):
    """P(range of k iid N(0,1) < w), by mpmath quadrature."""
    w = mp.mpf(w)
    f = lambda z: mp.npdf(z) * (mp.ncdf(z + w) - mp.ncdf(z)) ** (k - 1)
    return k * mp.quad(f, [-mp.inf, -w / 2, 0, mp.inf])


def ptukey_mp(q, k, df):
    if df == mp.inf:
        return w_range(q, k)
    df = mp.mpf(df)
    logc = mp.log(2) + (df / 2) * mp.log(df / 2) - mp.loggamma(df / 2)
    dens = lambda s: mp.exp(logc + (df - 1) * mp.log(s) - df * s * s / 2)
    sd = 1 / mp.sqrt(2 * df)
    return mp.quad(lambda s: dens(s) * w_range(q * s, k), [0] + [x for x in (1 - 4 * sd,) if x > 0] + [1, 1 + 4 * sd, mp.inf])


def arr(name, values):
    print(f"const {name}: &[f64] = &[" + ", ".join(repr(float(v)) for v in values) + "];")


print("// ---- studentized range: published table values, checked two ways")
table = [  # (alpha, k, df, published q)
    (0.05, 3, 10, 3.877), (0.05, 5, 20, 4.232), (0.05, 2, np.inf, 2.772),
    (0.05, 10, 60, 4.646), (0.01, 3, 10, 5.270), (0.01, 4, 20, 5.018),
]
for alpha, k, df, q in table:
    sc_q = stats.studentized_range.ppf(1 - alpha, k, df)
    sc_p = stats.studentized_range.cdf(q, k, df)
    mp_p = ptukey_mp(q, k, mp.inf if np.isinf(df) else df)
    print(f"// alpha={alpha} k={k} df={df}: table q={q}, scipy ppf={sc_q!r}, "
          f"scipy cdf(q)={sc_p!r}, mpmath cdf(q)={float(mp_p)!r}")
    print(f"({alpha!r}, {k}.0, {'f64::INFINITY' if np.isinf(df) else repr(float(df))}, {q!r}, {sc_q!r}),")

# the 30-digit double integral is slow (minutes per point), so only part of the grid
MP_CHECK = {(0.5, 2, 1), (2.5, 3, 5), (1.5, 2, 10), (0.2, 5, 20), (8.0, 3, 3), (2.0, 2, np.inf)}
print("// ---- studentized range CDF grid: (q, k, df, scipy cdf, mpmath cdf or nan)")
grid = [
    (0.5, 2, 1), (3.0, 2, 1), (20.0, 3, 1), (1.0, 3, 2), (4.0, 4, 2), (2.5, 3, 5),
    (3.5, 5, 5), (1.5, 2, 10), (4.0, 6, 12), (6.0, 10, 15), (3.0, 4, 30),
    (4.5, 8, 60), (5.0, 20, 100), (5.5, 50, 40), (6.5, 100, 200), (3.2, 3, 1000),
    (4.0, 5, 25000), (2.0, 2, np.inf), (5.0, 10, np.inf), (0.2, 5, 20), (8.0, 3, 3),
]
for q, k, df, in grid:
    sc = stats.studentized_range.cdf(q, k, df)
    mpv = ptukey_mp(q, k, mp.inf if np.isinf(df) else df) if (q, k, df) in MP_CHECK else mp.nan
    print(f"({q!r}, {k}.0, {'f64::INFINITY' if np.isinf(df) else repr(float(df))}, {sc!r}, {float(mpv)!r}),")

print("// ---- quantiles (p, k, df, scipy ppf)")
for p, k, df in [(0.9, 3, 5), (0.95, 4, 2), (0.99, 10, 1), (0.5, 6, 30), (0.999, 3, 100), (0.95, 20, 120)]:
    print(f"({p!r}, {k}.0, {float(df)!r}, {stats.studentized_range.ppf(p, k, df)!r}),")

# Deterministic fixtures: validation losses shaped like the DSA sweep (groups = keep ratios).
equal = [
    [3.412, 3.398, 3.431, 3.405, 3.420],
    [3.371, 3.380, 3.366, 3.392, 3.377],
    [3.388, 3.401, 3.379, 3.395, 3.384],
]
unequal = [
    [5.10, 5.32, 4.98],
    [4.71, 4.95, 4.88, 4.60],
    [5.40, 5.55, 5.21, 5.62, 5.38],
    [4.90, 5.05, 4.99, 5.12, 4.86, 5.01],
]
for name, groups in [("EQUAL", equal), ("UNEQUAL", unequal)]:
    f = stats.f_oneway(*groups)
    print(f"// ---- {name}: f_oneway F={f.statistic!r} p={f.pvalue!r}")
    res = stats.tukey_hsd(*groups)
    ci = res.confidence_interval(0.95)
    print(f"// tukey_hsd rows (i, j, mean_i - mean_j, pvalue, ci_low, ci_high)")
    for i in range(len(groups)):
        for j in range(i + 1, len(groups)):
            print(f"({i}, {j}, {res.statistic[i, j]!r}, {res.pvalue[i, j]!r}, "
                  f"{ci.low[i, j]!r}, {ci.high[i, j]!r}),")

a, b = unequal[1], unequal[2]
for alt in ["two-sided", "less", "greater"]:
    t = stats.ttest_ind(a, b, equal_var=False, alternative=alt)
    print(f"// welch {alt}: t={t.statistic!r} df={t.df!r} p={t.pvalue!r}")
n1, n2 = len(a), len(b)
sp = np.sqrt(((n1 - 1) * np.var(a, ddof=1) + (n2 - 1) * np.var(b, ddof=1)) / (n1 + n2 - 2))
print(f"// cohen d pooled ddof1 (a - b) = {(np.mean(a) - np.mean(b)) / sp!r}")
legacy = abs(np.mean(a) - np.mean(b)) / np.sqrt((np.var(a) + np.var(b)) / 2)
print(f"// cohen d legacy ddof0 = {legacy!r}")

print("// ---- power of the two-sided two-sample t-test (d, n per group, alpha, exact nct, normal approx)")
for d, n, alpha in [(0.5, 64, 0.05), (1.0, 3, 0.05), (0.8, 26, 0.05), (2.0, 5, 0.05),
                    (0.2, 10, 0.01), (1.5, 4, 0.1), (0.0, 10, 0.05), (-0.8, 26, 0.05)]:
    nu = 2 * n - 2
    delta = d * np.sqrt(n / 2)
    tc = stats.t.ppf(1 - alpha / 2, nu)
    exact = stats.nct.sf(tc, nu, delta) + stats.nct.cdf(-tc, nu, delta)
    z = stats.norm.ppf(1 - alpha / 2)
    approx = stats.norm.sf(z - delta) + stats.norm.cdf(-z - delta)
    print(f"({d!r}, {n}, {alpha!r}, {exact!r}, {approx!r}),")
print("// smallest n per group with power >= 0.8 at alpha 0.05 (exact nct)")
for d in [0.5, 0.8, 1.0, 2.0]:
    n = 2
    while True:
        nu = 2 * n - 2
        delta = d * np.sqrt(n / 2)
        tc = stats.t.ppf(0.975, nu)
        if stats.nct.sf(tc, nu, delta) + stats.nct.cdf(-tc, nu, delta) >= 0.8:
            break
        n += 1
    print(f"({d!r}, {n}),")
# paired t (tests/stats.rs: paired_t_matches_scipy_on_the_sleep_data, paired power)
a = np.array([0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0])
b = np.array([1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4])
r = stats.ttest_rel(a, b)
print("// paired t on R's sleep data: t, p, 95 % CI, Bonferroni CI at 1 - 0.05/3, d_z")
print(repr(r.statistic), repr(r.pvalue), r.confidence_interval(0.95), r.confidence_interval(1 - 0.05 / 3))
print(repr((a - b).mean() / (a - b).std(ddof=1)))


def paired_power(dz, n, alpha):
    nu = n - 1
    tc = stats.t.ppf(1 - alpha / 2, nu)
    delta = dz * np.sqrt(n)
    # nct.cdf returns NaN far in its tail, where it is 0
    return stats.nct.sf(tc, nu, delta) + np.nan_to_num(stats.nct.cdf(-tc, nu, delta))


print("// paired power (dz, n, alpha, power)")
for dz, n, alpha in [(1.0, 10, 0.05), (0.5, 5, 0.0125)]:
    print(f"({dz!r}, {n}, {alpha!r}, {paired_power(dz, n, alpha)!r}),")
print("// smallest detectable d_z at power 0.8 (n, alpha, dz)")
from scipy.optimize import brentq
for n, alpha in [(5, 0.05), (10, 0.0125)]:
    print(f"({n}, {alpha!r}, {brentq(lambda x: paired_power(x, n, alpha) - 0.8, 0.01, 3.0, xtol=1e-12)!r}),")
