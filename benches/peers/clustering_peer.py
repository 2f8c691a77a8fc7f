"""scipy peer for the sparsity-clustering benchmark (benches/clustering.rs).

Times, on the identical boolean data the Rust bench exported (bits.npy, [11008, 4096]):
  * all-pairs Hamming: scipy.spatial.distance.pdist(X, metric="hamming") (one run; it takes minutes)
  * top-128 neighbours of one reference: cdist(X[r:r+1], X, metric="hamming") + stable argsort
and checks both answers against the Rust ones (meta.txt: checksum of all pair counts, top-128).
scipy's distance kernels are single-threaded; BLAS threads are pinned to 1 anyway.

    CLUSTERING_PEER_PYTHON=/work/venv/bin/python cargo bench -p sparsity-benches --bench clustering
    python benches/peers/clustering_peer.py --data target/clustering-bench/bits.npy \
        --meta target/clustering-bench/meta.txt --out target/clustering-bench/peer.json
"""
import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import scipy  # noqa: E402
from scipy.spatial.distance import cdist, pdist  # noqa: E402


def read_meta(path):
    meta = {}
    with open(path) as f:
        for line in f:
            key, value = line.split(maxsplit=1)
            meta[key] = value.strip()
    return meta


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--meta", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--top-repeats", type=int, default=20)
    ap.add_argument("--skip-pdist", action="store_true")
    args = ap.parse_args()

    X = np.load(args.data)
    assert X.dtype == np.bool_, X.dtype
    n, bits = X.shape
    meta = read_meta(args.meta)
    ref = int(meta["reference"])
    want_top = [int(x) for x in meta["top128"].split(",")]
    k = len(want_top)
    result = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "shape": [n, bits],
    }

    # top-k neighbours: cdist one-vs-all + stable sort, reference excluded (ties by lower index).
    times = []
    for _ in range(args.top_repeats):
        t0 = time.perf_counter()
        d = cdist(X[ref : ref + 1], X, metric="hamming")[0]
        order = np.argsort(d, kind="stable")
        top = order[order != ref][:k]
        times.append(time.perf_counter() - t0)
    assert top.tolist() == want_top, "top-k neighbours differ from the Rust answer"
    result["top128_cdist_s_median"] = statistics.median(times)
    result["top128_cdist_s_min"] = min(times)
    print(f"scipy cdist top-{k}: median {result['top128_cdist_s_median'] * 1e3:.2f} ms (answers match)", flush=True)

    if not args.skip_pdist:
        t0 = time.perf_counter()
        d = pdist(X, metric="hamming")
        t = time.perf_counter() - t0
        checksum = int(np.rint(d * bits).astype(np.int64).sum())
        assert checksum == int(meta["checksum"]), f"pdist checksum {checksum} != {meta['checksum']}"
        result["pdist_s"] = t
        print(f"scipy pdist all pairs: {t:.2f} s (checksum matches)", flush=True)

    with open(args.out + ".tmp", "w") as f:
        json.dump(result, f, indent=2)
    os.replace(args.out + ".tmp", args.out)


if __name__ == "__main__":
    main()
