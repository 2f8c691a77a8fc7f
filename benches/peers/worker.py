"""Peer worker of the benchmark harness (benches/harness.rs, `cargo bench -p sparsity-benches
--bench suite`): loads one case's data once, then answers the harness on stdin/stdout.

Protocol: prints {"ready": true, "versions": {...}} when loaded; then for each stdin line
`run` runs the case once and prints {"seconds": s} (timed here, without start-up and loading),
`rss` prints {"peak_rss": bytes} (VmHWM); end of input exits.

    python benches/peers/worker.py --suite pruning --case 3072x768/hessian --data DIR --threads 2

Suites: `smoke` (pure Python, no data: the harness's own test), `metrics` (numpy, the functions
of metrics_peer.py on DIR/acts.npy), `pruning` (PyTorch, the functions of pruning_peer.py on
DIR/<shape>/w.npy and x.npy), `clustering` (scipy pdist / cdist on DIR/bits.npy, answers checked
against ours in DIR/meta.json), `gemv` (numpy's dense `W @ x` on DIR/<shape>/w.npy, x.npy,
rotating copies as DIR/meta.json says), `models` (transformers' forward of DIR/<model>/ on DIR/ids.npy).
A case whose function has a `per_call` attribute reports the time divided by it.
"""

import argparse
import json
import math
import os
import platform
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def smoke(case, data, threads, versions):
    if case != "sum":
        raise SystemExit(f"smoke: unknown case {case}")

    def run():
        s = 0.0
        for i in range(200_000):
            s += i * 0.5
        return s

    return run


def metrics(case, data, threads, versions):
    import numpy as np

    import metrics_peer as mp

    versions["numpy"] = np.__version__
    x = np.load(os.path.join(data, "acts.npy"))
    threshold = 1e-5
    cases = {
        "neuron_stats_f64": lambda: mp.neuron_stats(x, threshold, np.float64),
        "neuron_stats_f32": lambda: mp.neuron_stats(x, threshold, np.float32),
        "full_report": lambda: mp.full(x, threshold),
    }
    if case not in cases:
        raise SystemExit(f"metrics: unknown case {case}")
    return cases[case]


def pruning(case, data, threads, versions):
    import numpy as np
    import torch

    import pruning_peer as pp

    torch.set_num_threads(threads)
    versions["torch"] = torch.__version__
    versions["numpy"] = np.__version__
    shape, name = case.split("/")
    d = os.path.join(data, shape)
    W = torch.from_numpy(np.load(os.path.join(d, "w.npy")))
    X = torch.from_numpy(np.load(os.path.join(d, "x.npy")))  # [nseq, seqlen, in]
    nseq, in_f = X.shape[0], X.shape[2]

    def hessian():
        hs = pp.HessianStats(in_f)
        for j in range(nseq):
            hs.add_batch(X[j:j + 1])
        return hs

    def wanda_stats():
        ws = pp.WandaStats(in_f)
        for j in range(nseq):
            ws.add_batch(X[j:j + 1])
        return ws

    if name == "hessian":
        return hessian
    if name == "wanda_stats":
        return wanda_stats
    patterns = {"u50": (0.5, 0, 0), "2:4": (0.5, 2, 4)}
    method, _, pat = name.partition("_")
    if pat not in patterns:
        raise SystemExit(f"pruning: unknown case {case}")
    r, n, m = patterns[pat]
    if method == "sparsegpt":
        H = hessian().H
        return lambda: pp.sparsegpt(W, H, r, n, m)
    if method == "wanda":
        scaler = wanda_stats().scaler_row
        return lambda: pp.wanda_mask(W, scaler, r, n, m)
    raise SystemExit(f"pruning: unknown case {case}")


def clustering(case, data, threads, versions):
    import numpy as np
    import scipy
    from scipy.spatial.distance import cdist, pdist

    versions["numpy"] = np.__version__
    versions["scipy"] = scipy.__version__
    X = np.load(os.path.join(data, "bits.npy"))
    assert X.dtype == np.bool_, X.dtype
    with open(os.path.join(data, "meta.json")) as f:
        meta = json.load(f)
    bits = X.shape[1]
    if case.startswith("all_pairs"):
        sub = X[: meta["pairs_features"]]
        checked = []

        def run():
            d = pdist(sub, metric="hamming")
            if not checked:  # the first (warm-up) call checks the answer against ours
                got = int(np.rint(d * bits).astype(np.int64).sum())
                if got != meta["pairs_checksum"]:
                    raise SystemExit(f"pdist checksum {got} != ours {meta['pairs_checksum']}")
                checked.append(True)
            return d

        return run
    if case.startswith("top"):
        ref, want = meta["reference"], meta["top"]
        reps = meta["top_reps_peer"]

        def query():
            d = cdist(X[ref : ref + 1], X, metric="hamming")[0]
            order = np.argsort(d, kind="stable")
            return order[order != ref][: len(want)]

        if query().tolist() != want:
            raise SystemExit("top-k neighbours differ from ours")

        def run():
            for _ in range(reps):
                query()

        run.per_call = reps
        return run
    raise SystemExit(f"clustering: unknown case {case}")


def gemv(case, data, threads, versions):
    import numpy as np

    versions["numpy"] = np.__version__
    with open(os.path.join(data, "meta.json")) as f:
        meta = json.load(f)
    shape, kernel = case.split("/")  # the peer is numpy's dense W @ x on every row
    sparsity = 0.0 if kernel == "dense" else float(kernel.removeprefix("masked_"))
    W = np.load(os.path.join(data, shape, "w.npy"))
    x = np.load(os.path.join(data, shape, "x.npy"))
    if W.nbytes < meta["cached_bytes"]:
        copies, base = [W], meta["calls_small"]
    else:
        n = max(2, -(-meta["rotate_bytes"] // W.nbytes))
        copies = [W.copy() for _ in range(n)]
        base = max(meta["calls"], n)
    del W
    # as many GEMVs per call as ours (benches/suite.rs, gemv_calls)
    calls = math.ceil(base / (1.0 - sparsity))

    def run():
        for c in range(calls):
            copies[c % len(copies)] @ x

    run.per_call = calls
    return run


def models(case, data, threads, versions):
    import numpy as np
    import torch
    import transformers

    torch.set_num_threads(threads)
    versions["torch"] = torch.__version__
    versions["transformers"] = transformers.__version__
    name, shape = case.split("/")
    b = int(shape.split("x")[0])
    model = transformers.AutoModelForCausalLM.from_pretrained(
        os.path.join(data, name), dtype=torch.float32
    ).eval()
    ids = torch.from_numpy(np.load(os.path.join(data, "ids.npy"))[:b].astype(np.int64))

    def run():
        with torch.inference_mode():
            return model(ids, use_cache=False).logits

    return run


def peak_rss():
    """Peak resident memory of this process in bytes: VmHWM (reset at exec), not ru_maxrss, which
    Linux carries over from the parent across fork + exec (the harness's own memory would count)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--suite", required=True)
    ap.add_argument("--case", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    versions = {"python": platform.python_version()}
    build = {
        "smoke": smoke,
        "metrics": metrics,
        "pruning": pruning,
        "clustering": clustering,
        "gemv": gemv,
        "models": models,
    }.get(a.suite)
    if build is None:
        raise SystemExit(f"unknown suite {a.suite}")
    fn = build(a.case, a.data, a.threads, versions)
    print(json.dumps({"ready": True, "versions": versions}), flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "run":
            t0 = time.perf_counter()
            fn()
            seconds = (time.perf_counter() - t0) / getattr(fn, "per_call", 1)
            print(json.dumps({"seconds": seconds}), flush=True)
        elif cmd == "rss":
            print(json.dumps({"peak_rss": peak_rss()}), flush=True)
        else:
            raise SystemExit(f"unknown command {cmd!r}")


if __name__ == "__main__":
    main()
