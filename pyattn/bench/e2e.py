"""``pyattn-bench --e2e``: a whole model, pyattn's transformers backend
against transformers' sdpa backend (torch's scaled_dot_product_attention).

A small Llama-shaped model (random weights, built offline from a config,
float32) prefills a prompt and then decodes greedily with its KV cache.
Both backends run the same model in interleaved rounds at each thread count
(torch and pyattn set to the same number); the table shows prefill and
decode tokens per second (medians over rounds), pyattn / sdpa speed-ups, and
the share of each phase's time spent inside the attention function (timed
around every attention call). The generated tokens of both backends are
compared: they must be equal.
"""

from __future__ import annotations

import statistics
import sys
import time

SHAPE = dict(vocab_size=2048, hidden_size=512, intermediate_size=1024, num_hidden_layers=4,
             num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=4096)


class _Timed:
    """An attention function that adds the time of each call to `total`."""

    def __init__(self, fn):
        self.fn, self.total = fn, 0.0

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.total += time.perf_counter() - t0


def _model(seed=0):
    import torch
    import transformers

    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**SHAPE)).eval()


def _register_timed():
    import transformers
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import sdpa_mask

    from ..integrations import transformers as pyattn_hf

    timed = {"pyattn": _Timed(pyattn_hf.attention_forward), "sdpa": _Timed(sdpa_attention_forward)}
    masks = {"pyattn": pyattn_hf.attention_mask, "sdpa": sdpa_mask}
    for name, fn in timed.items():
        transformers.AttentionInterface.register(f"{name}_timed", fn)
        transformers.AttentionMaskInterface.register(f"{name}_timed", masks[name])
    return timed


def _one_run(model, impl, timed, ids, decode):
    import torch

    model.set_attn_implementation(f"{impl}_timed")
    clock = timed[impl]
    with torch.inference_mode():
        clock.total = 0.0
        t0 = time.perf_counter()
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
        t_prefill = time.perf_counter() - t0
        a_prefill = clock.total
        cache = out.cache
        token = out.logits[:, -1:].argmax(-1)
        tokens = [token]
        clock.total = 0.0
        t0 = time.perf_counter()
        for _ in range(decode):
            out = model(input_ids=token, cache=cache, use_cache=True)
            token = out.logits[:, -1:].argmax(-1)
            tokens.append(token)
        t_decode = time.perf_counter() - t0
        a_decode = clock.total
    return dict(prefill=t_prefill, decode=t_decode, attn_prefill=a_prefill, attn_decode=a_decode,
                tokens=torch.cat(tokens, 1))


def run_e2e(threads_list=(1, 2), prefill=2048, decode=64, rounds=3, out=None, progress=True):
    """Runs the end-to-end comparison and prints its table; returns the rows
    (a dict per backend and thread count) and whether the tokens agreed."""
    import torch

    import pyattn

    out = sys.stdout if out is None else out
    timed = _register_timed()
    model = _model()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, SHAPE["vocab_size"], (1, prefill), generator=g)
    prev_torch, prev_pyattn = torch.get_num_threads(), pyattn.get_num_threads()
    pyattn_threads_set = pyattn._core.num_threads_set()  # (else it follows OpenMP)
    rows, agree = [], True
    try:
        for threads in threads_list:
            torch.set_num_threads(threads)
            pyattn.set_num_threads(threads)
            runs = {"pyattn": [], "sdpa": []}
            _one_run(model, "pyattn", timed, ids[:, :128], 2)  # warm-up of both
            _one_run(model, "sdpa", timed, ids[:, :128], 2)
            for r in range(rounds):
                for impl in ("pyattn", "sdpa") if r % 2 == 0 else ("sdpa", "pyattn"):
                    if progress:
                        print(f"[e2e] {threads} thr round {r + 1}/{rounds}: {impl}", file=sys.stderr)
                    runs[impl].append(_one_run(model, impl, timed, ids, decode))
            agree &= all(torch.equal(a["tokens"], b["tokens"]) for a, b in zip(runs["pyattn"], runs["sdpa"]))
            for impl, rs in runs.items():
                med = {k: statistics.median(r[k] for r in rs) for k in ("prefill", "decode")}
                rows.append(dict(
                    impl=impl, threads=threads,
                    prefill_tok_s=prefill / med["prefill"], decode_tok_s=decode / med["decode"],
                    attn_share_prefill=statistics.median(r["attn_prefill"] / r["prefill"] for r in rs),
                    attn_share_decode=statistics.median(r["attn_decode"] / r["decode"] for r in rs),
                ))
    finally:
        torch.set_num_threads(prev_torch)
        if pyattn_threads_set:
            pyattn.set_num_threads(prev_pyattn)
        else:
            pyattn._core.reset_num_threads()
    _print(rows, agree, prefill, decode, rounds, out)
    return rows, agree


def _print(rows, agree, prefill, decode, rounds, out):
    s = SHAPE
    print(f"End-to-end: Llama-shaped model ({s['num_hidden_layers']} layers, hidden {s['hidden_size']}, "
          f"{s['num_attention_heads']} heads / {s['num_key_value_heads']} kv heads, head dim "
          f"{s['hidden_size'] // s['num_attention_heads']}, random weights, float32), batch 1, prefill "
          f"{prefill} tokens then {decode} greedy decode steps; medians of {rounds} interleaved rounds",
          file=out)
    hdr = ("backend", "thr", "prefill tok/s", "x sdpa", "attn %", "decode tok/s", "x sdpa", "attn %")
    print("  ".join(f"{h:>13}" for h in hdr), file=out)
    base = {(r["threads"]): r for r in rows if r["impl"] == "sdpa"}
    for r in rows:
        b = base[r["threads"]]
        cells = (r["impl"], str(r["threads"]), f"{r['prefill_tok_s']:.1f}",
                 f"{r['prefill_tok_s'] / b['prefill_tok_s']:.2f}", f"{100 * r['attn_share_prefill']:.1f}",
                 f"{r['decode_tok_s']:.1f}", f"{r['decode_tok_s'] / b['decode_tok_s']:.2f}",
                 f"{100 * r['attn_share_decode']:.1f}")
        print("  ".join(f"{c:>13}" for c in cells), file=out)
    print("generated tokens: " + ("equal for both backends" if agree else "DIFFER between the backends"),
          file=out)
