"""Stress runs of pyattn: many Python threads, process pools, interrupts and
an address-space limit.

    python tools/stress.py threads   [--seconds 60] [--threads 8]
    python tools/stress.py pools     [--tasks 64]
    python tools/stress.py interrupt
    python tools/stress.py rlimit
    python tools/stress.py all       [--seconds 60]

threads:   N Python threads call a mix of entry points (fast and general
           sdpa, weights, additive, merge, KVCache, MultiHeadAttention, at 1
           and 2 OpenMP threads each) for the given time; every result is
           compared bit for bit with the one computed serially beforehand.
pools:     after the parent has run OpenMP regions and Python threads,
           multiprocessing pools started by fork and by spawn run the same
           calls; results compared with the parent's.
interrupt: a signal whose handler raises KeyboardInterrupt (as Ctrl-C's
           does) arrives while a long call computes (GIL released). The call
           runs to its end (the core does not poll for signals), then
           KeyboardInterrupt is raised in the calling thread; the process
           stays usable (the next calls give the expected bits).
rlimit:    in a child with RLIMIT_AS a few hundred MiB above its current
           size, calls whose results cannot fit raise MemoryError (output,
           weights, multi-threaded calls), and calls that fit still work.
Each prints one summary line and exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np

import pyattn


# ---------------------------------------------------------------------------
# The mixed calls and their expectations
# ---------------------------------------------------------------------------

def _inputs(seed):
    rng = np.random.default_rng(seed)
    f = np.float32
    return {
        "q": rng.standard_normal((2, 4, 37, 32)).astype(f),
        "k": rng.standard_normal((2, 4, 53, 32)).astype(f),
        "v": rng.standard_normal((2, 4, 53, 16)).astype(f),
        "mask": rng.standard_normal((37, 53)) > -0.3,
        "lengths": np.array([50, 29]),
        "wq": rng.standard_normal((32, 8)).astype(f),
        "va": rng.standard_normal(8).astype(f),
        "x": rng.standard_normal((2, 11, 32)).astype(f),
        "q64": rng.standard_normal((1, 3, 21, 8)),
    }


def _mha():
    return pyattn.MultiHeadAttention(32, 4, num_kv_heads=2, batch_first=True, rng=3)


def _kv_session(d, threads):
    cache = pyattn.KVCache(2, 4, 32, 64, value_dim=16)
    outs = []
    for t in range(0, 53, 13):
        cache.append(d["k"][:, :, t:t + 13], d["v"][:, :, t:t + 13])
        outs.append(cache.attend(d["q"][:, :, :3], num_threads=threads))
    return np.concatenate([o.ravel() for o in outs])


def call(name, d, threads):
    """One call of the mix; returns an ndarray (the results concatenated)."""
    sdpa = pyattn.scaled_dot_product_attention
    q, k, v = d["q"], d["k"], d["v"]
    if name == "fast":
        r = sdpa(q, k, v, num_threads=threads)
    elif name == "causal-lse":
        r = sdpa(q, k, v, is_causal="lower_right", return_lse=True, num_threads=threads)
    elif name == "general":
        r = sdpa(q[:, :, ::-1], k, v, attn_mask=d["mask"], kv_lengths=d["lengths"], window=(5, 2),
                 return_weights=True, num_threads=threads)
    elif name == "gqa-f64":
        q64 = d["q64"]
        r = sdpa(q64, q64[:, :1], q64[:, :1], enable_gqa=True, return_weights=True, num_threads=threads)
    elif name == "additive":
        r = pyattn.additive_attention(q, k, v, d["va"], w_query=d["wq"], w_key=d["wq"], is_causal=True,
                                      return_lse=True, num_threads=threads)
    elif name == "merge":
        a = sdpa(q, k[:, :, :20], v[:, :, :20], return_lse=True, num_threads=threads)
        b = sdpa(q, k[:, :, 20:], v[:, :, 20:], return_lse=True, num_threads=threads)
        r = pyattn.merge_attention_states([a[0], b[0]], [a[1], b[1]])
    elif name == "kvcache":
        return _kv_session(d, threads)
    elif name == "mha":
        r = _mha()(d["x"], d["x"], d["x"])
    else:
        raise ValueError(name)
    parts = r if isinstance(r, tuple) else (r,)
    return np.concatenate([np.asarray(p, np.float64).ravel() for p in parts])


NAMES = ["fast", "causal-lse", "general", "gqa-f64", "additive", "merge", "kvcache", "mha"]
SEEDS = [0, 1, 2]


def expectations():
    """Serial results: {(name, seed): ndarray}, at 1 thread (bitwise the
    same for every thread count, which the runs check)."""
    return {(n, s): call(n, _inputs(s), 1) for n in NAMES for s in SEEDS}


def same_bits(a, b):
    return a.shape == b.shape and a.tobytes() == b.tobytes()


# ---------------------------------------------------------------------------
# threads
# ---------------------------------------------------------------------------

def run_threads(seconds, nthreads, omp_threads=(1, 2)):
    want = expectations()
    inputs = {s: _inputs(s) for s in SEEDS}
    stop = time.monotonic() + seconds
    counts = [0] * nthreads
    errors = []

    def worker(i):
        rng = np.random.default_rng(100 + i)
        try:
            while time.monotonic() < stop:
                name, seed = NAMES[rng.integers(len(NAMES))], SEEDS[rng.integers(len(SEEDS))]
                threads = int(omp_threads[rng.integers(len(omp_threads))])
                got = call(name, inputs[seed], threads)
                if not same_bits(got, want[(name, seed)]):
                    errors.append(f"thread {i}: {name} seed {seed} num_threads={threads}: different bits")
                    return
                counts[i] += 1
        except BaseException as e:  # reported, not swallowed
            errors.append(f"thread {i}: {type(e).__name__}: {e}")

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(nthreads)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    dt = time.monotonic() - t0
    print(f"threads: {nthreads} Python threads x {dt:.0f} s: {sum(counts)} calls checked "
          f"(per thread {min(counts)}..{max(counts)}), {len(errors)} failures")
    for e in errors[:10]:
        print("  " + e)
    return not errors and min(counts) > 0


# ---------------------------------------------------------------------------
# pools
# ---------------------------------------------------------------------------

def _pool_task(args):
    name, seed, threads = args
    return name, seed, call(name, _inputs(seed), threads)


def run_pools(tasks, methods=("fork", "spawn", "forkserver")):
    want = expectations()
    # The parent uses OpenMP (2 threads) and Python threads first.
    run_threads(1.0, 4)
    call("fast", _inputs(0), 2)
    ok = True
    jobs = [(NAMES[i % len(NAMES)], SEEDS[i % len(SEEDS)], 1 + i % 2) for i in range(tasks)]
    for method in methods:
        if method not in mp.get_all_start_methods():
            continue
        t0 = time.monotonic()
        with mp.get_context(method).Pool(2) as pool:
            results = pool.map(_pool_task, jobs, chunksize=4)
        bad = [f"{n} seed {s}" for n, s, r in results if not same_bits(r, want[(n, s)])]
        ok &= not bad and len(results) == len(jobs)
        print(f"pools: {method}: {len(results)} tasks in a pool of 2 after the parent used threads, "
              f"{len(bad)} different results ({time.monotonic() - t0:.1f} s)")
    return ok


# ---------------------------------------------------------------------------
# interrupt
# ---------------------------------------------------------------------------

def run_interrupt():
    """Ctrl-C during a long call. The signal comes from an interval timer
    (SIGALRM, whose handler raises KeyboardInterrupt as SIGINT's default
    handler does): the kernel delivers it on time whatever the load, where a
    timer thread could be scheduled only after the call has ended."""
    rng = np.random.default_rng(7)
    q = rng.standard_normal((1, 2, 3000, 64)).astype(np.float32)
    t0 = time.monotonic()
    expected = pyattn.scaled_dot_product_attention(q, q, q, num_threads=1)
    t_call = time.monotonic() - t0
    expected_small = pyattn.scaled_dot_product_attention(q[:, :, :10], q, q)
    delay = t_call / 4
    fired = []

    def handler(signum, frame):
        fired.append(time.monotonic())
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, handler)
    interrupted = False
    out = np.full_like(expected, np.nan)
    t0 = time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, delay)
    try:
        pyattn.scaled_dot_product_attention(q, q, q, num_threads=1, out=out)
        # The handler runs at the first bytecode after the call returns.
        for _ in range(1000):
            pass
    except KeyboardInterrupt:
        interrupted = True
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    t_int = (fired[0] - t0) if fired else float("nan")
    after = pyattn.scaled_dot_product_attention(q, q, q, num_threads=2)
    usable = same_bits(after, expected)
    small = pyattn.scaled_dot_product_attention(q[:, :, :10], q, q)
    usable &= same_bits(small, expected_small)
    # The call ran to its end: its out= holds the whole result.
    ran_to_end = same_bits(out, expected)
    print(f"interrupt: signal {delay:.2f} s into a {t_call:.2f} s call: KeyboardInterrupt raised: {interrupted}, "
          f"handled {t_int:.2f} s after the call started; the call ran to its end (out= holds the "
          f"whole result): {ran_to_end}; later calls give the expected bits: {usable}")
    return interrupted and ran_to_end and usable


# ---------------------------------------------------------------------------
# rlimit
# ---------------------------------------------------------------------------

RLIMIT_CHILD = r"""
import resource, sys, numpy as np, pyattn
def vm_bytes():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[0]) * resource.getpagesize()
sdpa = pyattn.scaled_dot_product_attention
q = np.ones((1, 1, 64, 32), np.float32)
expected = sdpa(q, q, q, num_threads=2)   # threads and buffers exist before the limit
headroom = 256 << 20
resource.setrlimit(resource.RLIMIT_AS, (vm_bytes() + headroom, resource.RLIM_INFINITY))
results = []
def expect_memory_error(what, fn):
    try:
        fn()
        results.append((what, 'returned'))
    except MemoryError as e:
        results.append((what, 'MemoryError'))
big = np.lib.stride_tricks.as_strided(np.ones(32, np.float32), (1, 64, 65536, 32), (0, 0, 0, 4))
expect_memory_error('output of 512 MiB', lambda: sdpa(big, q, q))
kbig = np.lib.stride_tricks.as_strided(np.ones(32, np.float32), (1, 1, 1 << 20, 32), (0, 0, 0, 4))
expect_memory_error('weights of 1 GiB', lambda: sdpa(big[:, :1, :256], kbig, kbig, return_weights=True))
expect_memory_error('additive weights', lambda: pyattn.additive_attention(big[:, :1, :256], kbig, kbig, np.ones(32, np.float32), return_weights=True))
expect_memory_error('4 threads, 512 MiB output', lambda: sdpa(big, q, q, num_threads=4))
expect_memory_error('KVCache of 1 GiB', lambda: pyattn.KVCache(1, 8, 128, 1 << 17))
after = sdpa(q, q, q, num_threads=2)
ok = all(r == 'MemoryError' for _, r in results) and after.tobytes() == expected.tobytes()
print('rlimit: RLIMIT_AS = current size + 256 MiB: ' + ', '.join(f'{w}: {r}' for w, r in results)
      + f'; a call that fits afterwards gives the expected bits: {after.tobytes() == expected.tobytes()}')
sys.exit(0 if ok else 1)
"""


def run_rlimit():
    env = dict(os.environ)
    r = subprocess.run([sys.executable, "-c", RLIMIT_CHILD], capture_output=True, text=True, env=env, timeout=600)
    sys.stdout.write(r.stdout)
    if r.returncode != 0:
        sys.stdout.write(r.stderr[-3000:])
        print(f"rlimit: child exit status {r.returncode}")
    return r.returncode == 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["threads", "pools", "interrupt", "rlimit", "all"])
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--tasks", type=int, default=64)
    p.add_argument("--methods", default="fork,spawn,forkserver", help="pool start methods")
    p.add_argument("--omp-threads", default="1,2", help="num_threads values the threads run draws from")
    a = p.parse_args(argv)
    ok = True
    if a.what in ("threads", "all"):
        ok &= run_threads(a.seconds, a.threads, [int(x) for x in a.omp_threads.split(",")])
    if a.what in ("pools", "all"):
        ok &= run_pools(a.tasks, a.methods.split(","))
    if a.what in ("interrupt", "all"):
        ok &= run_interrupt()
    if a.what in ("rlimit", "all"):
        ok &= run_rlimit()
    print("stress:", "OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
