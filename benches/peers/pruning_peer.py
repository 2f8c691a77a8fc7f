"""PyTorch peer for the sparsity-pruning crate: Wanda, Wanda variant, magnitude and SparseGPT
written from the papers' formulas and the authors' published algorithm (locuslab/wanda
lib/prune.py + lib/layerwrapper.py, IST-DASLab/sparsegpt sparsegpt.py), in float32 on CPU.

Two modes:
  generate  write parity cases in the layout of the crate's test fixtures
            (<case>.safetensors + <case>.json sidecar), for shapes/patterns not in the fixtures;
  bench     time Hessian build + SparseGPT and Wanda on the benchmark shapes.

    python benches/peers/pruning_peer.py generate --out /tmp/prune-cases
    python benches/peers/pruning_peer.py bench --threads 2
"""
import argparse
import json
import math
import os
import time

import numpy as np
import torch
from safetensors.torch import save_file


# ---------------------------------------------------------------- calibration statistics
class WandaStats:
    """scaler_row_j = sum over tokens x_j^2 / N, N counting sequences (running average)."""

    def __init__(self, cols):
        self.scaler_row = torch.zeros(cols, dtype=torch.float32)
        self.nsamples = 0

    def add_batch(self, inp):  # inp [batch, seq, in] or [tokens, in]
        if inp.dim() == 2:
            inp = inp.unsqueeze(0)
        b = inp.shape[0]
        x = inp.reshape(-1, inp.shape[-1]).t().float()
        self.scaler_row *= self.nsamples / (self.nsamples + b)
        self.nsamples += b
        self.scaler_row += torch.norm(x, p=2, dim=1) ** 2 / self.nsamples


class HessianStats:
    """H = 2/N sum x x^T as a running average over N sequences."""

    def __init__(self, cols):
        self.H = torch.zeros(cols, cols, dtype=torch.float32)
        self.nsamples = 0

    def add_batch(self, inp):
        if inp.dim() == 2:
            inp = inp.unsqueeze(0)
        b = inp.shape[0]
        x = inp.reshape(-1, inp.shape[-1]).t().float()
        self.H *= self.nsamples / (self.nsamples + b)
        self.nsamples += b
        x = math.sqrt(2 / self.nsamples) * x
        self.H += x.matmul(x.t())


# ---------------------------------------------------------------- masks
def nm_mask(score, n, m):
    mask = torch.zeros_like(score, dtype=torch.bool)
    for j in range(0, score.shape[1], m):
        idx = torch.topk(score[:, j:j + m], n, dim=1, largest=False)[1]
        mask.scatter_(1, j + idx, True)
    return mask


def wanda_mask(W, scaler_row, ratio, n=0, m=0, variant=False):
    score = W.abs() * torch.sqrt(scaler_row.reshape(1, -1))
    info = {}
    if n:
        return nm_mask(score, n, m), info
    srt = torch.sort(score, dim=-1, stable=True)
    if not variant:
        mask = torch.zeros_like(score, dtype=torch.bool)
        mask.scatter_(1, srt[1][:, :int(score.shape[1] * ratio)], True)
        return mask, info
    cum = torch.cumsum(srt[0], dim=1)
    rowsum = score.sum(dim=1)

    def given(alpha):
        k = (cum <= (rowsum * alpha).reshape(-1, 1)).sum(dim=1, keepdims=True)
        thr = torch.gather(srt[0], 1, k - 1)
        msk = score <= thr
        return msk, msk.sum() / msk.numel()

    alpha, lo, hi = 0.4, 0.0, 0.8
    mask, cur = given(alpha)
    while torch.abs(cur - ratio) > 0.001 and hi - lo >= 0.001:
        if cur > ratio:
            alpha, hi = (alpha + lo) / 2.0, alpha
        else:
            alpha, lo = (alpha + hi) / 2.0, alpha
        mask, cur = given(alpha)
    info["alpha"] = alpha
    info["layer_sparsity"] = float(cur)
    return mask, info


def magnitude_mask(W, ratio, n=0, m=0):
    if n:
        return nm_mask(W.abs(), n, m)
    thr = torch.sort(W.abs().flatten())[0][int(W.numel() * ratio)]
    return W.abs() <= thr


def sparsegpt(W, H, ratio, n=0, m=0, blocksize=128, percdamp=0.01):
    W = W.clone().float()
    H = H.clone()
    rows, cols = W.shape
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    damp = percdamp * torch.mean(torch.diag(H))
    d = torch.arange(cols)
    H[d, d] += damp
    H = torch.linalg.cholesky(H)
    H = torch.cholesky_inverse(H)
    Hinv = torch.linalg.cholesky(H, upper=True)
    mask = torch.zeros_like(W, dtype=torch.bool)
    loss = torch.zeros(rows)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        cnt = i2 - i1
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        L1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        if n == 0:
            tmp = W1 ** 2 / (torch.diag(Hinv1).reshape(1, -1)) ** 2
            thr = torch.sort(tmp.flatten())[0][int(tmp.numel() * ratio)]
            mask1 = tmp <= thr
        else:
            mask1 = torch.zeros_like(W1, dtype=torch.bool)
        for i in range(cnt):
            w = W1[:, i]
            dd = Hinv1[i, i]
            if n != 0 and i % m == 0:
                tmp = W1[:, i:i + m] ** 2 / (torch.diag(Hinv1)[i:i + m].reshape(1, -1)) ** 2
                mask1.scatter_(1, i + torch.topk(tmp, n, dim=1, largest=False)[1], True)
            q = w.clone()
            q[mask1[:, i]] = 0
            Q1[:, i] = q
            L1[:, i] = (w - q) ** 2 / dd ** 2
            err = (w - q) / dd
            W1[:, i:] -= err.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err
        W[:, i1:i2] = Q1
        mask[:, i1:i2] = mask1
        loss += torch.sum(L1, 1) / 2
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    return W, mask, float(loss.sum())


def recon_error(W, Wp, X):
    W, Wp, X = (t.double() for t in (W, Wp, X))
    return float(((W - Wp) @ X.t()).pow(2).sum() / (W @ X.t()).pow(2).sum())


# ---------------------------------------------------------------- case generator
def make_case(out_f, in_f, n_seq, seqlen, seed, dead=()):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(out_f, in_f, generator=g) * 0.05
    scale = torch.exp(torch.rand(in_f, generator=g) * math.log(5.0))  # feature scales 1..5
    X = torch.randn(n_seq * seqlen, in_f, generator=g) * scale
    for d in dead:
        X[:, d] = 0
    return W.float(), X.float()


def run_case(name, out_dir, out_f, in_f, ratio, n, m, seed, dead=(), n_seq=8, seqlen=16,
             blocksize=128, percdamp=0.01):
    torch.set_num_threads(1)
    W, X = make_case(out_f, in_f, n_seq, seqlen, seed, dead)
    ws, hs = WandaStats(in_f), HessianStats(in_f)
    for j in range(n_seq):
        xb = X[j * seqlen:(j + 1) * seqlen].unsqueeze(0)
        ws.add_batch(xb)
        hs.add_batch(xb)
    t = {"weight": W, "calib": X, "wanda.scaler_row": ws.scaler_row.clone(), "sparsegpt.H": hs.H.clone()}
    errs, zeros, extra = {}, {}, {}
    methods = [("magnitude", None), ("wanda", False)] + ([("wanda_variant", True)] if n == 0 else [])
    for meth, variant in methods:
        if meth == "magnitude":
            mask = magnitude_mask(W, ratio, n, m)
        else:
            mask, info = wanda_mask(W, ws.scaler_row, ratio, n, m, variant)
            if variant:
                extra["wanda_variant"] = info
        Wp = W.clone()
        Wp[mask] = 0
        t[f"{meth}.weight"], t[f"{meth}.mask"] = Wp, mask.to(torch.uint8)
        errs[meth], zeros[meth] = recon_error(W, Wp, X), int(mask.sum())
    Wp, mask, loss = sparsegpt(W, hs.H, ratio, n, m, blocksize, percdamp)
    t["sparsegpt.weight"], t["sparsegpt.mask"] = Wp, mask.to(torch.uint8)
    errs["sparsegpt"], zeros["sparsegpt"] = recon_error(W, Wp, X), int(mask.sum())
    save_file({k: v.contiguous() for k, v in t.items()}, os.path.join(out_dir, name + ".safetensors"),
              metadata={"seqlen": str(seqlen)})
    side = {
        "case": name, "out_features": out_f, "in_features": in_f, "sparsity_ratio": ratio,
        "prune_n": n, "prune_m": m, "sparsity_type": f"{n}:{m}" if n else "unstructured",
        "blocksize": blocksize, "percdamp": percdamp, "seqlen": seqlen, "n_calib_samples": n_seq,
        "batching": "calib rows [j*seqlen,(j+1)*seqlen) form sample j; one add_batch per sample",
        "dead_input_columns": list(dead), "data_seed": seed, "rel_recon_error": errs,
        "zero_counts": zeros, "wanda_variant": extra.get("wanda_variant"),
        "sparsegpt_obs_loss": loss, "torch": torch.__version__, "torch_threads": 1,
        "generator": "benches/peers/pruning_peer.py (torch port written from the formulas)",
    }
    with open(os.path.join(out_dir, name + ".json"), "w") as f:
        json.dump(side, f, indent=1, sort_keys=True)
    return name


CASES = [
    # name, out, in, ratio, n, m, seed, dead
    ("gen_u60_24x200", 24, 200, 0.6, 0, 0, 201, ()),
    ("gen_nm24_20x196_dead", 20, 196, 0.5, 2, 4, 202, (3, 77)),
    ("gen_nm48_16x264", 16, 264, 0.5, 4, 8, 203, ()),
    ("gen_u50_48x300_dead", 48, 300, 0.5, 0, 0, 204, (0, 150, 299)),
    ("gen_u60_12x130", 12, 130, 0.6, 0, 0, 205, ()),
]


# ---------------------------------------------------------------- benchmark
def bench(threads, reps, seqlen, nseq):
    torch.set_num_threads(threads)
    rows = []
    for out_f, in_f in [(3072, 768), (768, 3072)]:
        W, X = make_case(out_f, in_f, nseq, seqlen, 7)
        Xb = X.reshape(nseq, seqlen, in_f)

        def hessian():
            hs = HessianStats(in_f)
            for j in range(nseq):
                hs.add_batch(Xb[j:j + 1])
            return hs

        def wanda_stats():
            ws = WandaStats(in_f)
            for j in range(nseq):
                ws.add_batch(Xb[j:j + 1])
            return ws

        hs, ws = hessian(), wanda_stats()
        cases = [("hessian", lambda: hessian()), ("wanda_stats", lambda: wanda_stats())]
        for pat, (r, n, m) in [("u50", (0.5, 0, 0)), ("2:4", (0.5, 2, 4))]:
            cases.append((f"sparsegpt_{pat}", lambda r=r, n=n, m=m: sparsegpt(W, hs.H, r, n, m)))
            cases.append((f"wanda_{pat}", lambda r=r, n=n, m=m: wanda_mask(W, ws.scaler_row, r, n, m)))
        for name, fn in cases:
            fn()  # warm-up
            ts = []
            for _ in range(reps):
                t0 = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
            rows.append({"shape": f"{out_f}x{in_f}", "case": name, "median_s": float(np.median(ts)),
                         "min_s": float(min(ts)), "reps": reps})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--out", required=True)
    b = sub.add_parser("bench")
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--reps", type=int, default=3)
    b.add_argument("--seqlen", type=int, default=256)
    b.add_argument("--nseq", type=int, default=128)
    b.add_argument("--json", default=None)
    a = ap.parse_args()
    if a.cmd == "generate":
        os.makedirs(a.out, exist_ok=True)
        names = [run_case(c[0], a.out, *c[1:]) for c in CASES]
        with open(os.path.join(a.out, "index.json"), "w") as f:
            json.dump({"cases": names}, f, indent=1)
        print("\n".join(names))
    else:
        rows = bench(a.threads, a.reps, a.seqlen, a.nseq)
        if a.json:
            with open(a.json, "w") as f:
                json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
