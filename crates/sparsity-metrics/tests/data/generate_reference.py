#!/usr/bin/env python3
"""Generates the acceptance tensor and numpy's expected values for sparsity-metrics tests.

Run from the repository root with the pinned peers venv (numpy 2.2.6, safetensors 0.6.2):

    python crates/sparsity-metrics/tests/data/generate_reference.py

Writes, next to this script:
  acts_10x64x768.safetensors  tensor "acts", float32 [10, 64, 768] (seeded)
  expected.json               numpy's value for every report key, per aggregation
                              (per-sequence-mean, per-token) and entropy mode
                              (shannon, legacy), plus small vectors for unit tests.

Every expected value is computed here directly from the definitions with numpy
(np.var, np.percentile, np.histogram, np.sort/np.cumsum), independently of the Rust code.
"""
import json
import os

import numpy as np
from safetensors.numpy import save_file

SEED = 20261123
HERE = os.path.dirname(os.path.abspath(__file__))
PERCENTILES = [5, 10, 25, 50, 75, 90, 95]


def entropy(x, mode):
    n = len(x)
    u = (x - x.min()) / (x.max() - x.min()) if x.max() > x.min() else np.zeros_like(x)
    bins = max(1, min(50, n // 10))
    if mode == "legacy":
        d, _ = np.histogram(u, bins=bins, density=True)
        d = d[d > 0]
        e = float(-np.sum(d * np.log(d + 1e-10)))
        nb = len(d)
    else:
        c, _ = np.histogram(u, bins=bins)
        c = c[c > 0]
        p = c / n
        e = float(-np.sum(p * np.log(p)))
        nb = len(c)
    emax = np.log(nb)
    norm = float(e / emax) if emax > 0 else 0.0
    return {"entropy": e, "normalized_entropy": norm,
            "sparsity_from_entropy": 1.0 - norm, "num_bins": int(nb)}


def report(v, mode, t=0.01, target=0.3):
    x = np.abs(np.asarray(v, dtype=np.float64))
    n = len(x)
    out = {"percentile": {}}
    for p in PERCENTILES:
        thr = float(np.percentile(x, p))
        out["percentile"][f"p{p}"] = {"threshold": thr, "sparsity": float(np.mean(x < thr)),
                                      "neurons_below": int(np.sum(x < thr))}
    out["entropy"] = entropy(x, mode)
    s = np.sort(x)
    c = np.cumsum(s)
    g = 0.0 if c[-1] == 0 else float((n + 1 - 2 * np.sum(c) / c[-1]) / n)
    out["gini"] = {"gini_coefficient": g, "sparsity_from_gini": g}
    out["traditional"] = {"threshold": t, "sparsity": float(np.mean(x < t)),
                          "neurons_below": int(np.sum(x < t))}
    i = int(target * n)
    thr = float(s[i] if i < n else s[-1])
    out["optimal"] = {"threshold": thr, "sparsity": float(np.mean(x < thr))}
    l1, l2 = np.sum(x), np.sqrt(np.sum(x * x))
    out["hoyer"] = {"hoyer_sparsity": float((np.sqrt(n) - l1 / l2) / (np.sqrt(n) - 1))}
    cands = [("traditional", out["traditional"]["sparsity"]),
             ("entropy", out["entropy"]["sparsity_from_entropy"]),
             ("gini", g), ("hoyer", out["hoyer"]["hoyer_sparsity"])]
    best = cands[0]
    for cand in cands:
        if abs(cand[1] - 0.5) < abs(best[1] - 0.5):
            best = cand
    out["most_reasonable"] = best[0]
    return out


def calibrated(a, target):
    """Exact histogram on f32 bit patterns >> 16; candidates τ = the largest f32 below each bucket
    edge (so `|a| <= τ` is exact); nearest achievable sparsity; checked directly."""
    mag = np.abs(a.astype(np.float32)).ravel()
    buckets = mag.view(np.uint32) >> 16
    counts = np.bincount(buckets, minlength=1 << 15)
    cum = np.cumsum(counts)  # cum[k - 1] = count below bucket k, k = 1..2^15
    total = mag.size
    k = int(np.argmin(np.abs(cum / total - target))) + 1
    if k == 1 << 15:
        thr = float(np.finfo(np.float32).max)
    else:
        thr = float(np.array([(k << 16) - 1], dtype=np.uint32).view(np.float32)[0])
    sp = float(cum[k - 1] / total)
    assert sp == float(np.mean(mag <= np.float32(thr))), "candidate sparsity must be exact"
    return {"target": target, "threshold": thr, "sparsity": sp, "activations": int(total)}


def activation_measures(a2, t=0.01, eps=0.1):
    a64 = a2.astype(np.float64)
    scale = np.abs(a64).mean(axis=0)
    near = np.abs(a64) <= eps * scale[None, :]
    f = near.mean(axis=0)
    return {
        "activations": int(a2.size),
        "zero_fraction": float(np.mean(a2 == 0)),
        "magnitude_threshold": t,
        "below_threshold_fraction": float(np.mean(np.abs(a64) < t)),
        "calibrated": [calibrated(a2, 0.4), calibrated(a2, 0.5)],
        "near_zero": {"epsilon": eps, "scale": "mean_abs", "fraction": float(near.mean()),
                      "max_neuron_fraction": float(f.max()),
                      "neurons_mostly_near_zero": int(np.sum(f > 0.5))},
    }


def main():
    rng = np.random.default_rng(SEED)
    b, s, h = 10, 64, 768
    scales = np.exp(rng.uniform(-5.0, 1.0, h))
    x = rng.standard_normal((b, s, h)) * scales
    x += rng.standard_normal((b, 1, h)) * 0.5 * scales  # per-text offsets
    relu = rng.random(h) < 0.3
    x[:, :, relu] = np.maximum(x[:, :, relu], 0.0)  # exact zeros in 30 % of the neurons
    x = x.astype(np.float32)
    save_file({"acts": x}, os.path.join(HERE, "acts_10x64x768.safetensors"))

    x64 = x.astype(np.float64)
    variances = {
        "per-sequence-mean": x64.mean(axis=1).var(axis=0),
        "per-token": x64.reshape(-1, h).var(axis=0),
    }
    act = activation_measures(x.reshape(-1, h))
    expected = {"seed": SEED, "shape": [b, s, h], "tensor": "acts", "reports": {}}
    for agg, v in variances.items():
        expected["reports"][agg] = {}
        for mode in ["shannon", "legacy"]:
            r = report(v, mode)
            r["activation"] = act
            expected["reports"][agg][mode] = r

    vrng = np.random.default_rng(SEED + 1)
    vectors = {
        "lognormal_768": np.exp(vrng.standard_normal(768) * 2.0),
        "signed_normal_100": vrng.standard_normal(100),
        "ties_25": np.round(vrng.random(25) * 4) / 4,
        "small_7": vrng.random(7) * 1e-3,
        "constant_40": np.full(40, 0.25),
        "one_hot_50": np.eye(50)[7] * 3.0,
    }
    expected["vectors"] = {}
    for name, v in vectors.items():
        entry = {"values": [float(a) for a in v]}
        for mode in ["shannon", "legacy"]:
            r = report(v, mode)
            if name == "constant_40":
                # Hoyer is 0 for any constant vector; numpy gives (sqrt(n) - sqrt(n))/... up to rounding
                r["hoyer"]["hoyer_sparsity"] = 0.0 if abs(r["hoyer"]["hoyer_sparsity"]) < 1e-12 else r["hoyer"]["hoyer_sparsity"]
            entry[mode] = r
        expected["vectors"][name] = entry

    with open(os.path.join(HERE, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)


if __name__ == "__main__":
    main()
