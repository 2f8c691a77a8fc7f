#!/usr/bin/env python3
"""llama.cpp peer of `cargo xtask decode-bench` (llama-cpp-python, built from PyPI's source
distribution): writes the saved Llama directory as a GGUF (f32, f16 or bf16; q/k rows permuted
to llama.cpp's rotary layout, as `convert_hf_to_gguf.py` does; a placeholder vocabulary, since
the benchmark model has no tokenizer and is fed token ids), then times batch-1 greedy decoding
of the prompt ids: prefill = one `eval` of the prompt, decode tokens/s = (N - 1) / time of the
next N - 1 greedy steps. Prints one JSON line like benches/peers/decode_peer.py.

    python benches/peers/llamacpp_peer.py --model DIR --prompt prompt.json --dtype f32 \
        --new-tokens 128 --threads 2 [--gguf-dir DIR]
"""
import argparse, json, os, time

import numpy as np


def permute(w, n_head, n_head_kv):
    # HF's rotate-half rotary layout -> llama.cpp's interleaved pairs (convert_hf_to_gguf.py)
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def write_gguf(model_dir, path, dtype):
    import gguf
    from safetensors.numpy import load_file
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    w = load_file(os.path.join(model_dir, "model.safetensors"))
    qtype = {"f32": gguf.GGMLQuantizationType.F32, "f16": gguf.GGMLQuantizationType.F16,
             "bf16": gguf.GGMLQuantizationType.BF16}[dtype]
    n_head, n_kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
    hidden, vocab = cfg["hidden_size"], cfg["vocab_size"]
    rope = (cfg.get("rope_parameters") or {}).get("rope_theta") or cfg.get("rope_theta") or 10000.0
    wr = gguf.GGUFWriter(path, "llama")
    wr.add_context_length(cfg["max_position_embeddings"])
    wr.add_embedding_length(hidden)
    wr.add_block_count(cfg["num_hidden_layers"])
    wr.add_feed_forward_length(cfg["intermediate_size"])
    wr.add_rope_dimension_count(hidden // n_head)
    wr.add_head_count(n_head)
    wr.add_head_count_kv(n_kv)
    wr.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    wr.add_rope_freq_base(float(rope))
    wr.add_file_type(int({"f32": 0, "f16": 1, "bf16": 32}[dtype]))
    wr.add_tokenizer_model("llama")
    wr.add_token_list([f"<t{i}>".encode() for i in range(vocab)])
    wr.add_token_scores([0.0] * vocab)
    wr.add_token_types([1] * vocab)
    wr.add_bos_token_id(1)
    wr.add_eos_token_id(2)

    def put(name, a, matrix=True):
        a = np.ascontiguousarray(a, dtype=np.float32)
        if matrix and qtype != gguf.GGMLQuantizationType.F32:
            if qtype == gguf.GGMLQuantizationType.F16:
                wr.add_tensor(name, a.astype(np.float16))
            else:
                wr.add_tensor(name, gguf.quants.quantize(a, qtype), raw_shape=a.shape, raw_dtype=qtype)
        else:
            wr.add_tensor(name, a)

    put("token_embd.weight", w["model.embed_tokens.weight"])
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        put(f"blk.{l}.attn_norm.weight", w[p + "input_layernorm.weight"], False)
        put(f"blk.{l}.attn_q.weight", permute(w[p + "self_attn.q_proj.weight"], n_head, n_head))
        put(f"blk.{l}.attn_k.weight", permute(w[p + "self_attn.k_proj.weight"], n_head, n_kv))
        put(f"blk.{l}.attn_v.weight", w[p + "self_attn.v_proj.weight"])
        put(f"blk.{l}.attn_output.weight", w[p + "self_attn.o_proj.weight"])
        put(f"blk.{l}.ffn_norm.weight", w[p + "post_attention_layernorm.weight"], False)
        put(f"blk.{l}.ffn_gate.weight", w[p + "mlp.gate_proj.weight"])
        put(f"blk.{l}.ffn_up.weight", w[p + "mlp.up_proj.weight"])
        put(f"blk.{l}.ffn_down.weight", w[p + "mlp.down_proj.weight"])
    put("output_norm.weight", w["model.norm.weight"], False)
    put("output.weight", w.get("lm_head.weight", w["model.embed_tokens.weight"]))
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompt", required=True)
    ap.add_argument("--dtype", choices=["f32", "f16", "bf16"], default="f32")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gguf-dir", default=None)
    a = ap.parse_args()
    import llama_cpp
    path = os.path.join(a.gguf_dir or a.model, f"model-{a.dtype}.gguf")
    weights = os.path.join(a.model, "model.safetensors")
    # a GGUF older than the weights is stale (the benchmark rewrites the model every run)
    if not os.path.exists(path) or os.path.getmtime(path) < os.path.getmtime(weights):
        write_gguf(a.model, path + ".tmp", a.dtype)
        os.replace(path + ".tmp", path)
    ids = json.load(open(a.prompt))
    llm = llama_cpp.Llama(model_path=path, n_ctx=len(ids) + a.new_tokens + 8, n_threads=a.threads,
                          n_threads_batch=a.threads, n_batch=512, verbose=False, logits_all=False)
    vocab = llm.n_vocab()

    def last_logits():
        # the last position's logits (`Llama.scores` is only filled with logits_all=True)
        ptr = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(vocab,))

    llm.reset()
    t0 = time.perf_counter()
    llm.eval(ids)
    prefill = time.perf_counter() - t0
    out = [int(np.argmax(last_logits()))]
    t1 = time.perf_counter()
    while len(out) < a.new_tokens:
        llm.eval([out[-1]])
        out.append(int(np.argmax(last_logits())))
    decode = time.perf_counter() - t1
    print(json.dumps({"prefill_seconds": prefill, "decode_tokens_per_second": (a.new_tokens - 1) / decode,
                      "generated": out, "llama_cpp_python": llama_cpp.__version__, "threads": a.threads}))


if __name__ == "__main__":
    main()
