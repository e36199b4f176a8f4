"""Per-call cost of a tiny attention call through the C API (a loop of
pyattn_sdpa calls made without the GIL, as a Cython decoding loop makes them)
beside the Python API's fast path, in the same process, in alternating
blocks; medians of the blocks. Each block is timed in the calling thread's
CPU time (every call runs on that thread: num_threads=1), so time the
thread spends preempted by other processes on a shared machine is not
counted; --wall times wall-clock time instead.

    python benchmarks/capi_overhead.py [--blocks 15] [--calls 2000] [--markdown]

Cases: 1 head, 1 query row, 16 keys, E = 64 (the call is nearly all
overhead), and a decoding step of 8 query heads over 2 kv heads with 256
keys, lower-right causal and kv_lengths. One thread each.
"""

import argparse
import platform
import statistics
import time

import numpy as np

import pyattn
from pyattn import _capi_check


def _spec(a):
    st = [s // a.itemsize for s in a.strides]
    return (a.ctypes.data, *([0] * (4 - a.ndim) + st))


def make_case(Hq, Hkv, S, E, decode):
    rng = np.random.default_rng(0)
    q = rng.standard_normal((1, Hq, 1, E)).astype(np.float32)
    k = rng.standard_normal((1, Hkv, S, E)).astype(np.float32)
    v = rng.standard_normal((1, Hkv, S, E)).astype(np.float32)
    out = np.empty((1, Hq, 1, E), np.float32)
    lengths = np.array([S - 3], np.int64)
    fields = dict(B=1, Hq=Hq, Hkv=Hkv, L=1, S=S, E=E, Ev=E, q=_spec(q), k=_spec(k), v=_spec(v),
                  out=_spec(out), num_threads=1)
    kwargs = dict(num_threads=1)
    if decode:
        fields.update(causal=2, kv_lengths=lengths.ctypes.data, kv_lengths_stride=1)
        kwargs.update(is_causal="lower_right", kv_lengths=lengths, enable_gqa=Hq != Hkv)
    keep = (q, k, v, out, lengths)
    return fields, kwargs, keep


CLOCK = time.thread_time


def per_call_us(fn, calls):
    t0 = CLOCK()
    fn(calls)
    return (CLOCK() - t0) / calls * 1e6


def measure(fields, kwargs, keep, blocks, calls):
    q, k, v, out, _ = keep
    sdpa = pyattn.scaled_dot_product_attention

    def capi_loop(n):
        rc, msg = _capi_check.time_calls(fields, n)
        assert rc == 0, msg

    def python_fast(n):
        for _ in range(n):
            sdpa(q, k, v, **kwargs)

    def python_out(n):
        for _ in range(n):
            sdpa(q, k, v, out=out, **kwargs)

    impls = {"C API, nogil loop": capi_loop, "Python API": python_fast, "Python API, out=": python_out}
    # Same bits first.
    want = sdpa(q, k, v, **kwargs)
    capi_loop(1)
    assert np.array_equal(out, want)
    for fn in impls.values():  # warm-up
        fn(calls // 10 + 1)
    times = {name: [] for name in impls}
    for b in range(blocks):
        order = list(impls.items()) if b % 2 == 0 else list(impls.items())[::-1]
        for name, fn in order:
            times[name].append(per_call_us(fn, calls))
    return {name: statistics.median(t) for name, t in times.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--blocks", type=int, default=15)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--wall", action="store_true", help="wall-clock time instead of the thread's CPU time")
    args = ap.parse_args()
    global CLOCK
    if args.wall:
        CLOCK = time.perf_counter
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
               platform.processor()) if platform.system() == "Linux" else platform.processor()
    print(f"CPU: {cpu}; ISA {pyattn.get_config()['isa']}; 1 thread; median of {args.blocks} alternating "
          f"blocks of {args.calls} calls; microseconds per call ({'wall-clock' if args.wall else 'thread CPU'} time)")
    cases = [("1 head, 1 query row, 16 keys, E=64", dict(Hq=1, Hkv=1, S=16, E=64, decode=False)),
             ("decode step: 8/2 GQA heads, 256 keys, E=64, lower-right + kv_lengths",
              dict(Hq=8, Hkv=2, S=256, E=64, decode=True))]
    print()
    print("| call | C API, nogil loop | Python API | Python API, out= | Python / C API |")
    print("|---|---:|---:|---:|---:|")
    for label, c in cases:
        r = measure(*make_case(**c), args.blocks, args.calls)
        capi = r["C API, nogil loop"]
        print(f"| {label} | {capi:.2f} | {r['Python API']:.2f} | {r['Python API, out=']:.2f} | "
              f"{r['Python API'] / capi:.1f}x |")


if __name__ == "__main__":
    main()
