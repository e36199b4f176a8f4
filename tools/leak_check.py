"""Resident memory over many calls of every public entry point.

    python tools/leak_check.py [--calls 100000] [--only NAME ...] [--json FILE]

For each workload: a warm-up of calls (allocator pools, the kept weights
buffer, first-call caches), then RSS (from /proc/self/statm) after 0, half
and all of the counted calls. A leak grows RSS in proportion to the calls;
the table shows the growth over each half. Every workload's results are
kept small but not tiny (a leaked output of one call is >= 1 KiB), so that a
leak of one allocation per call shows up as >= 1 KiB x calls.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time

import numpy as np

import pyattn

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def _expect_error(fn, exc=(TypeError, ValueError, MemoryError)):
    def call():
        try:
            fn()
        except exc:
            return
        raise AssertionError("no error raised")
    return call


def workloads(control=False):
    rng = np.random.default_rng(0)
    f32 = np.float32
    q = rng.standard_normal((1, 2, 16, 32)).astype(f32)
    k = rng.standard_normal((1, 2, 24, 32)).astype(f32)
    v = rng.standard_normal((1, 2, 24, 32)).astype(f32)
    sdpa = pyattn.scaled_dot_product_attention
    mask = rng.standard_normal((16, 24)) > -0.5
    lengths = np.array([20])
    out = np.empty((1, 2, 16, 32), f32)
    half = [a.astype(np.float16) for a in (q, k, v)]
    wq = rng.standard_normal((32, 8)).astype(f32)
    va = rng.standard_normal(8).astype(f32)
    o1, l1 = sdpa(q, k[:, :, :12], v[:, :, :12], return_lse=True)
    o2, l2 = sdpa(q, k[:, :, 12:], v[:, :, 12:], return_lse=True)
    cache = pyattn.KVCache(1, 2, 32, 64)
    kt, vt = k[:, :, :1], v[:, :, :1]
    mha = pyattn.MultiHeadAttention(32, 4, batch_first=True)
    x = rng.standard_normal((1, 8, 32)).astype(f32)
    huge = np.lib.stride_tricks.as_strided(np.ones(4, f32), (2**24, 2**24, 4), (0, 0, 4))

    def kv_step():
        if cache.max_length >= 64:
            cache.reset()
        cache.append(kt, vt)
        cache.attend(q[:, :, :1])

    if control:  # keeps every result: what a leak of one output per call looks like
        kept = []
        return {"control: keeps each result": lambda: kept.append(sdpa(q, k, v))}
    return {
        "sdpa fast path": lambda: sdpa(q, k, v),
        "sdpa causal, 2 threads": lambda: sdpa(q, k, v, is_causal=True, num_threads=2),
        "sdpa mask+lengths+window": lambda: sdpa(q, k, v, attn_mask=mask, kv_lengths=lengths, window=(3, 1)),
        "sdpa strided views": lambda: sdpa(q[:, :, ::2], np.swapaxes(k, 0, 0), v[:, ::-1]),
        "sdpa weights+lse": lambda: sdpa(q, k, v, return_weights=True, return_lse=True),
        "sdpa out=": lambda: sdpa(q, k, v, out=out),
        "sdpa float16": lambda: sdpa(*half, is_causal=True),
        "sdpa errors (ValueError)": _expect_error(lambda: sdpa(q, k, v, kv_lengths=np.array([99]))),
        "sdpa errors (TypeError)": _expect_error(lambda: sdpa(q, k, v.astype(np.float64))),
        "sdpa errors (MemoryError)": _expect_error(lambda: sdpa(huge, huge, huge)),
        "additive": lambda: pyattn.additive_attention(q, k, v, va, w_query=wq, w_key=wq, return_weights=True),
        "merge_attention_states": lambda: pyattn.merge_attention_states([o1, o2], [l1, l2]),
        "KVCache append+attend": kv_step,
        "MultiHeadAttention": lambda: mha(x, x, x, need_weights=True),
    }


def measure(fn, calls, warmup):
    for _ in range(warmup):
        fn()
    gc.collect()
    r0 = rss_bytes()
    for _ in range(calls // 2):
        fn()
    gc.collect()
    r1 = rss_bytes()
    for _ in range(calls - calls // 2):
        fn()
    gc.collect()
    r2 = rss_bytes()
    return r0, r1, r2


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=100_000)
    p.add_argument("--warmup", type=int, default=None, help="default: calls // 10 (at least 200)")
    p.add_argument("--only", nargs="*", help="workload names (substring match)")
    p.add_argument("--json", help="write the figures to this file")
    p.add_argument("--control", action="store_true",
                   help="run only a workload that leaks its results on purpose (the check must see it)")
    p.add_argument("--threads", type=int, default=1,
                   help="pyattn.set_num_threads for the workloads (one of them always uses 2)")
    a = p.parse_args(argv)
    warmup = a.warmup if a.warmup is not None else max(200, a.calls // 10)
    # One OpenMP thread by default: on a loaded machine a 2-thread team waits
    # for its second thread at every region; the 2-thread workload covers the team.
    pyattn.set_num_threads(a.threads)
    rows = {}
    kib = 1024
    print(f"pyattn {pyattn.__version__}, {pyattn.get_config()['isa']}, openmp {pyattn.get_config()['openmp']}; "
          f"{a.calls} calls per workload after {warmup} warm-up calls, num_threads={a.threads}")
    print(f"{'workload':<28}{'RSS@0 KiB':>11}{'@' + str(a.calls // 2):>11}{'@' + str(a.calls):>11}"
          f"{'growth 1st':>12}{'growth 2nd':>12}{'s':>6}")
    for name, fn in workloads(a.control).items():
        if a.only and not any(o in name for o in a.only):
            continue
        t = time.perf_counter()
        r0, r1, r2 = measure(fn, a.calls, warmup)
        dt = time.perf_counter() - t
        rows[name] = {"rss": [r0, r1, r2], "seconds": dt}
        print(f"{name:<28}{r0 // kib:>11}{r1 // kib:>11}{r2 // kib:>11}{(r1 - r0) // kib:>+12}"
              f"{(r2 - r1) // kib:>+12}{dt:>6.0f}", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"calls": a.calls, "warmup": warmup, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
