"""numpy peer of the masked-GEMV benchmark: times dense `W @ x` (W [out, in] C-order,
BLAS sgemv/hgemv path) on rotating weight copies, like sparsity_kernels::bench.

Usage: python benches/peers/gemv_peer.py --shapes 4096x4096,11008x4096 --rotate-mib 1024 --reps 40
Prints a JSON list of {shape, median_us, min_us} on stdout.
"""

import argparse
import json
import time

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--shapes", default="4096x4096,11008x4096,4096x11008")
    p.add_argument("--rotate-mib", type=int, default=1024)
    p.add_argument("--reps", type=int, default=40)
    p.add_argument("--dtype", default="f32", choices=["f32", "f16"])
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    dtype = np.float32 if a.dtype == "f32" else np.float16
    rng = np.random.default_rng(a.seed)
    rows = []
    for s in a.shapes.split(","):
        n_out, n_in = (int(v) for v in s.lower().split("x"))
        base = (rng.random((n_out, n_in), dtype=np.float32) * 2 - 1).astype(dtype) / np.sqrt(n_in)
        n_copies = max(2, -(-(a.rotate_mib << 20) // base.nbytes))
        copies = [base.copy() for _ in range(n_copies)]
        del base
        x = rng.standard_normal(n_in).astype(dtype)
        for w in copies:  # warm-up rotation
            w @ x
        times = []
        for r in range(max(a.reps, n_copies)):
            w = copies[r % n_copies]
            t0 = time.perf_counter()
            w @ x
            times.append((time.perf_counter() - t0) * 1e6)
        del copies
        rows.append({"shape": s, "median_us": float(np.median(times)), "min_us": float(np.min(times))})
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
