#!/usr/bin/env python3
"""Python peer for benches/models.rs: forward pass of a GPT-2-small-shaped model (12 layers, 768 wide,
random weights) on 1x128 and 8x128 tokens and of a Mamba-130m-shaped model, on CPU, f32.

Uses transformers + torch when importable (the reference the Rust crate is exact to); otherwise a plain numpy
float32 forward of the same math (GPT-2: batched matmuls; Mamba: the sequential scan, one numpy step per token,
as transformers' slow path). Prints one JSON line per case: {"peer", "case", "median_ms", "threads", "reps"}.

    OMP_NUM_THREADS=2 python benches/peers/models_peer.py [--reps 5]
"""
import argparse, json, math, os, time
import numpy as np

SEQ = 128


def median_ms(fn, reps):
    fn()  # warm-up
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(ts))


# ---------- numpy float32 peer ----------
def gelu_new(x):
    return 0.5 * x * (1.0 + np.tanh(np.float32(math.sqrt(2.0 / math.pi)) * (x + np.float32(0.044715) * x ** 3)))


def ln(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    v = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(v + eps) * w + b


def softmax(s):
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_gpt2(rng, L=12, D=768, H=12, V=50257, P=1024):
    f = lambda *s: (rng.standard_normal(s) * 0.02).astype(np.float32)
    W = dict(wte=f(V, D), wpe=f(P, D), layers=[dict(attn=f(D, 3 * D), ab=f(3 * D), proj=f(D, D), pb=f(D),
                                                       fc=f(D, 4 * D), fb=f(4 * D), mp=f(4 * D, D), mb=f(D))
                                                  for _ in range(L)])
    one, zero = np.ones(D, np.float32), np.zeros(D, np.float32)

    def fwd(ids):
        B, T = ids.shape
        dh = D // H
        x = W["wte"][ids] + W["wpe"][np.arange(T)]
        fut = np.triu(np.ones((T, T), bool), 1)
        for l in W["layers"]:
            a = ln(x, one, zero) @ l["attn"] + l["ab"]
            q, k, v = (t.reshape(B, T, H, dh).transpose(0, 2, 1, 3) for t in np.split(a, 3, -1))
            p = softmax(np.where(fut, np.float32(-1e30), q @ k.transpose(0, 1, 3, 2) / np.float32(math.sqrt(dh))))
            x = x + (p @ v).transpose(0, 2, 1, 3).reshape(B, T, D) @ l["proj"] + l["pb"]
            x = x + gelu_new(ln(x, one, zero) @ l["fc"] + l["fb"]) @ l["mp"] + l["mb"]
        return ln(x, one, zero) @ W["wte"].T
    return fwd


def np_mamba(rng, L=24, D=768, E=1536, N=16, R=48, K=4, V=50280):
    f = lambda *s: (rng.standard_normal(s) * 0.02).astype(np.float32)
    layers = [dict(inp=f(D, 2 * E), conv=f(E, K), cb=f(E), xp=f(E, R + 2 * N), dt=f(R, E), db=f(E),
                   A=-np.exp(np.log(np.arange(1, N + 1, dtype=np.float32)))[None].repeat(E, 0), Dd=np.ones(E, np.float32),
                   out=f(E, D)) for _ in range(L)]
    emb = f(V, D)
    silu = lambda x: x / (1 + np.exp(-x))

    def fwd(ids):
        B, T = ids.shape
        x = emb[ids]
        for l in layers:
            u = x / np.sqrt((x ** 2).mean(-1, keepdims=True) + 1e-5)
            xz = u @ l["inp"]
            xs, z = xz[..., :E], xz[..., E:]
            xp = np.concatenate([np.zeros((B, K - 1, E), np.float32), xs], 1)
            xc = silu(sum(xp[:, k:k + T] * l["conv"][:, k] for k in range(K)) + l["cb"])
            s = xc @ l["xp"]
            delta = np.logaddexp(0, s[..., :R] @ l["dt"] + l["db"]).astype(np.float32)
            Bm, Cm = s[..., R:R + N], s[..., R + N:]
            dA = np.exp(delta[..., None] * l["A"])
            dBu = delta[..., None] * Bm[:, :, None, :] * xc[..., None]
            h = np.zeros((B, E, N), np.float32)
            ys = np.empty((B, T, E), np.float32)
            for t in range(T):
                h = dA[:, t] * h + dBu[:, t]
                ys[:, t] = (h * Cm[:, t, None, :]).sum(-1)
            y = (ys + xc * l["Dd"]) * silu(z)
            x = x + y @ l["out"]
        x = x / np.sqrt((x ** 2).mean(-1, keepdims=True) + 1e-5)
        return x @ emb.T
    return fwd


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    threads = int(os.environ.get("OMP_NUM_THREADS", "0")) or os.cpu_count()
    rng = np.random.default_rng(0)
    try:
        import torch, transformers  # noqa: F401
        torch.set_num_threads(threads)
        from transformers import GPT2Config, GPT2LMHeadModel, MambaConfig, MambaForCausalLM
        peer = f"transformers {transformers.__version__} / torch {torch.__version__}"
        g = GPT2LMHeadModel(GPT2Config()).eval()
        m = MambaForCausalLM(MambaConfig(hidden_size=768, num_hidden_layers=24, vocab_size=50280)).eval()

        def run(model, b):
            ids = torch.randint(0, 50000, (b, SEQ))
            return lambda: model(ids).logits
        with torch.inference_mode():
            cases = [("gpt2_small_1x128", run(g, 1)), ("gpt2_small_8x128", run(g, 8)),
                     ("mamba_130m_1x128", run(m, 1)), ("mamba_130m_8x128", run(m, 8))]
            for name, fn in cases:
                print(json.dumps(dict(peer=peer, case=name, median_ms=median_ms(fn, args.reps), threads=threads, reps=args.reps)))
        return
    except ImportError:
        pass
    peer = f"numpy {np.__version__} float32 (torch/transformers not installed)"
    g, m = np_gpt2(rng), np_mamba(rng)
    for name, fn, b in [("gpt2_small_1x128", g, 1), ("gpt2_small_8x128", g, 8),
                        ("mamba_130m_1x128", m, 1), ("mamba_130m_8x128", m, 8)]:
        ids = rng.integers(0, 50000, (b, SEQ))
        print(json.dumps(dict(peer=peer, case=name, median_ms=median_ms(lambda: fn(ids), args.reps),
                              threads=threads, reps=args.reps)), flush=True)


if __name__ == "__main__":
    main()
