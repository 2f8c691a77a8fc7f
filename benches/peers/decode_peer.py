#!/usr/bin/env python3
"""transformers peer of `cargo xtask decode-bench`: batch-1 greedy `generate` of a saved Llama-family
directory on the CPU, timed with 1 and with N new tokens so that prefill is excluded from the
decode rate: decode tokens/s = (N - 1) / (t_N - t_1) (median of --reps runs each). Prints one
JSON line: {"prefill_seconds", "decode_tokens_per_second", "generated", "torch", "transformers"}.

    OMP_NUM_THREADS=2 python benches/peers/decode_peer.py --model DIR --prompt prompt.json \
        --dtype f32 --new-tokens 128 --threads 2
"""
import argparse, json, statistics, time

import torch
import transformers
from transformers import AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompt", required=True, help="JSON list of token ids")
    ap.add_argument("--dtype", choices=["f32", "bf16", "f16"], default="f32")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[a.dtype]
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=dtype).eval()
    ids = torch.tensor([json.load(open(a.prompt))], dtype=torch.long)

    def run(n):
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=n, min_new_tokens=n, pad_token_id=0)
        return time.perf_counter() - t0, out[0, ids.shape[1]:].tolist()

    run(1)  # warm-up
    t1 = statistics.median(run(1)[0] for _ in range(max(a.reps, 1)))
    runs = [run(a.new_tokens) for _ in range(max(a.reps, 1))]
    tn = statistics.median(t for t, _ in runs)
    if tn <= t1:
        # the difference is below the timer's and the machine's noise: no rate to report
        raise SystemExit(
            f"generating {a.new_tokens} tokens took {tn:.6f} s, not more than 1 token's {t1:.6f} s: "
            "the decode rate is not measurable at this size (use more --new-tokens)"
        )
    print(json.dumps({
        "prefill_seconds": t1,
        "decode_tokens_per_second": (a.new_tokens - 1) / (tn - t1),
        "generated": runs[0][1],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
