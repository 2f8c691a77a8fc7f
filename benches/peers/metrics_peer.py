"""numpy peer of benches/metrics.rs: the same statistics and analysis on the same [65536, 3072]
f32 matrix (loaded from the .npy the Rust bench wrote), single-threaded (the bench sets
OMP/OPENBLAS/MKL_NUM_THREADS=1; numpy's reductions do not use threads anyway).

Rows (median of --repeats wall-clock runs):
- neuron_stats_f64: per-neuron mean, variance (np.var, ddof 0), mean |a|, max |a|, exact-zero and
  below-threshold fractions, accumulated in float64 (the Rust side accumulates in f64);
- neuron_stats_f32: the same with numpy's default float32 accumulation (less precise, faster);
- full_report: neuron_stats_f64 + the exact |a| histogram of the Rust report (32768 buckets from the
  top 16 bits of the f32 pattern, np.bincount) + the near-zero pass (|a| < 0.1 * mean|a| per neuron)
  + np.percentile / np.histogram / entropy / Gini over the per-neuron variances.
"""

import argparse
import json
import time

import numpy as np

PERCENTILES = [5, 10, 25, 50, 75, 90, 95]


def neuron_stats(x, threshold, dtype):
    mean = x.mean(axis=0, dtype=dtype)
    var = x.var(axis=0, dtype=dtype)
    a = np.abs(x)
    mean_abs = a.mean(axis=0, dtype=dtype)
    max_abs = a.max(axis=0)
    zeros = (x == 0).mean(axis=0)
    below = (a < threshold).mean(axis=0)
    return mean, var, mean_abs, max_abs, zeros, below


def report(var):
    v = np.abs(var)
    out = {"percentiles": np.percentile(v, PERCENTILES).tolist()}
    hist, _ = np.histogram(v, bins=50)
    p = hist / hist.sum()
    p = p[p > 0]
    out["entropy"] = float(-(p * np.log(p)).sum())
    s = np.sort(v)
    n = len(s)
    out["gini"] = float((2 * np.arange(1, n + 1) - n - 1).dot(s) / (n * s.sum()))
    out["traditional"] = float((v < 1e-5).mean())
    return out


def full(x, threshold):
    mean, var, mean_abs, *_ = neuron_stats(x, threshold, np.float64)
    a = np.abs(x)
    hist = np.bincount((a.view(np.uint32) >> 16).ravel(), minlength=32768)
    near = (a < 0.1 * mean_abs.astype(np.float32)).mean(axis=0)
    r = report(var)
    return hist, near, r


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--threshold", type=float, default=1e-5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    x = np.load(args.data)
    assert x.dtype == np.float32 and x.ndim == 2, (x.dtype, x.shape)
    res = {"shape": list(x.shape), "numpy": np.__version__, "rows": {}}
    for name, fn in [
        ("neuron_stats_f64", lambda: neuron_stats(x, args.threshold, np.float64)),
        ("neuron_stats_f32", lambda: neuron_stats(x, args.threshold, np.float32)),
        ("full_report", lambda: full(x, args.threshold)),
    ]:
        med, all_times = timed(fn, args.repeats)
        res["rows"][name] = {"median_s": med, "times_s": all_times,
                             "gb_per_s": x.nbytes / med / 1e9}
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
