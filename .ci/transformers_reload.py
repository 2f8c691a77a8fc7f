#!/usr/bin/env python3
"""Checks that directories written by `cargo xtask prune` load in transformers and compute what
sparsity-lab computes: for each MODEL_DIR IDS DUMP triple, transformers' logits on the
`input_ids` (and `input_ids_2`, …) of IDS must match the `logits` of DUMP (`cargo xtask dump` on
the same ids) within 1e-4, and every pruned
weight listed in masks.safetensors must be exactly zero where its mask is 1.

    python .ci/transformers_reload.py MODEL_DIR IDS DUMP [MODEL_DIR IDS DUMP ...]

Needs torch and transformers (benches/peers/requirements-torch.txt). `--make-texts FILE` writes
calibration texts (seeded) for the CI run instead.
"""
import json, random, sys

TOL = 1e-4


def make_texts(path):
    rng = random.Random(0)
    words = ("the river runs past an old mill where sparse neurons fire rarely while dense ones "
             "fire often and every model keeps its weights in layers of tokens").split()
    with open(path, "w") as f:
        for _ in range(64):
            f.write(" ".join(rng.choice(words) for _ in range(48)) + "\n")


def check(model_dir, ids_file, dump):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    ours = load_file(dump)
    ids = load_file(ids_file)
    worst, cases = 0.0, 0
    for key in sorted(k for k in ids if k.startswith("input_ids")):
        suffix = key[len("input_ids"):]
        with torch.no_grad():
            logits = model(input_ids=ids[key].long()).logits
        d = (logits - ours["logits" + suffix]).abs().max().item()
        worst, cases = max(worst, d), cases + 1
    if cases == 0:
        raise SystemExit(f"{ids_file}: no input_ids")
    if not worst <= TOL:
        raise SystemExit(f"{model_dir}: transformers' logits differ from ours by {worst:.3e} > {TOL}")
    masks = load_file(f"{model_dir}/masks.safetensors")
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        w = params[name].detach()
        if w.shape != mask.shape:
            raise SystemExit(f"{model_dir}: {name} has shape {tuple(w.shape)}, mask {tuple(mask.shape)}")
        if (w[mask == 1] != 0).any():
            raise SystemExit(f"{model_dir}: {name} has non-zero pruned entries")
    sparsity = json.load(open(f"{model_dir}/pruning.json")).get("overall_sparsity")
    print(f"{model_dir}: {type(model).__name__} loads in transformers; logits within {worst:.2e} "
          f"over {cases} cases; {len(masks)} masked weights are zero (overall sparsity {sparsity})")


def main(argv):
    if len(argv) == 2 and argv[0] == "--make-texts":
        return make_texts(argv[1])
    if not argv or len(argv) % 3:
        raise SystemExit(__doc__)
    for model_dir, ids, dump in zip(argv[::3], argv[1::3], argv[2::3]):
        check(model_dir, ids, dump)


if __name__ == "__main__":
    main(sys.argv[1:])
