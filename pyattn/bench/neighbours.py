"""``pyattn-bench --neighbours``: does pyattn slow down the operation that
runs right after it, and is pyattn slowed down by the one before it?

In a model's forward pass pyattn's calls alternate with torch's
multi-threaded operations on the same cores. Threads an operation leaves
spinning (OpenMP runtimes spin idle threads for a while before they sleep)
take CPU time from the next one. Timed here, in alternating blocks (medians
of per-block medians), at the given thread count:

- ``torch mm``: a torch float32 matmul alone (after another matmul) and right
  after a pyattn call;
- ``pyattn``: a causal pyattn call alone (after another pyattn call) and
  right after a torch matmul;
- with ONNX Runtime installed, ``pyattn`` right after an ORT session run,
  with ORT's default spinning pool and with
  ``session.intra_op.allow_spinning = "0"``.

Any operation run before another evicts some of the other's data from the
caches (of every core it ran on), and leaves the runtime's threads in some
state. So each "after" is also timed after a control: a torch elementwise
add on the same threads that touches as many bytes as the operation it
stands in for (its own buffers). ``after / add`` is then how the previous
operation compares with a torch operation of the same size as a neighbour.
The matmul is also timed right after torch's own attention of the same
shape (``torch.nn.functional.scaled_dot_product_attention``): what the
operation pyattn replaces costs it.

Each pyattn wait policy (``pyattn.set_thread_wait``) is measured in the same
run; the ratio ``after / alone`` is printed (1.00: no effect), with the
middle half of its per-round values (each round's "after" block against the
same round's "alone" block): on a shared machine that spread, not the
third decimal, says what a ratio can be trusted to.
"""

from __future__ import annotations

import statistics
import sys
import time

from .machine import cpu_name


def _block(prefix, timed, n):
    """Medians over n calls of timed() (each right after prefix()): wall
    time, and the CPU time of the whole process (all its threads) meanwhile."""
    ts, cs = [], []
    for _ in range(n):
        prefix()
        c0, t0 = time.process_time(), time.perf_counter()
        timed()
        t1, c1 = time.perf_counter(), time.process_time()
        ts.append(t1 - t0)
        cs.append(c1 - c0)
    return statistics.median(ts), statistics.median(cs)


def _idle_cpu(op, n, idle=0.02):
    """Median CPU time the whole process uses while the calling thread sleeps
    `idle` seconds right after `op()`: what idle threads left spinning burn."""
    vals = []
    for _ in range(n):
        op()
        c0 = time.process_time()
        time.sleep(idle)
        vals.append(time.process_time() - c0)
    return statistics.median(vals)


def _ort_session(threads, spinning):
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    n = 384
    w = helper.make_tensor("w", TensorProto.FLOAT, (n, n), np.random.default_rng(0).standard_normal(n * n)
                           .astype(np.float32).ravel().tolist())
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, (n, n))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, (n, n))], initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    if not spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((n, n)).astype(np.float32)
    return lambda: sess.run(None, {"x": x})


def run_neighbours(threads=2, rounds=15, block=25, out=None, progress=True):
    import numpy as np
    import torch

    import pyattn

    out = sys.stdout if out is None else out
    prev = (torch.get_num_threads(), pyattn.get_num_threads(), pyattn.get_thread_wait())
    pyattn_threads_set = pyattn._core.num_threads_set()  # (else it follows OpenMP)
    torch.set_num_threads(threads)
    pyattn.set_num_threads(threads)
    a, b = torch.randn(384, 384), torch.randn(384, 384)
    rng = np.random.default_rng(0)
    q = rng.standard_normal((1, 8, 256, 64), dtype=np.float32)
    k, v = q.copy(), q.copy()

    def mm():
        torch.mm(a, b)

    def attn():
        pyattn.scaled_dot_product_attention(q, k, v, is_causal=True)

    tq, tk, tv = (torch.from_numpy(x) for x in (q, k, v))

    def torch_attn():  # torch's own attention of the same shape, as a neighbour
        torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=True)

    def adder(nbytes):  # the control: nbytes touched (two inputs, one result) by torch's threads
        x, y, z = (torch.ones(nbytes // 12) for _ in range(3))
        return lambda: torch.add(x, y, out=z)

    add_like_attn = adder(4 * q.nbytes)  # q, k, v and the result
    add_like_mm = adder(3 * a.numel() * a.element_size())  # a, b and the result

    cases = {}
    for policy in ("active", "passive"):
        def setp(p=policy):
            pyattn.set_thread_wait(p)
        cases[f"torch mm alone [{policy}]"] = (setp, mm, mm)
        cases[f"torch mm after pyattn [{policy}]"] = (setp, attn, mm)
        cases[f"torch mm after torch add [{policy}]"] = (setp, add_like_attn, mm)
        cases[f"torch mm after torch sdpa [{policy}]"] = (setp, torch_attn, mm)
        cases[f"pyattn alone [{policy}]"] = (setp, attn, attn)
        cases[f"pyattn after torch mm [{policy}]"] = (setp, mm, attn)
        cases[f"pyattn after torch add [{policy}]"] = (setp, add_like_mm, attn)
    ort_note = None
    try:
        for spinning in (True, False):
            run = _ort_session(threads, spinning)
            tag = "ORT spinning" if spinning else "ORT allow_spinning=0"
            cases[f"pyattn after {tag} [auto]"] = (lambda: pyattn.set_thread_wait("auto"), run, attn)
        cases["pyattn alone [auto]"] = (lambda: pyattn.set_thread_wait("auto"), attn, attn)
        cases["pyattn after torch add [auto]"] = (lambda: pyattn.set_thread_wait("auto"), add_like_mm, attn)
    except ImportError:
        ort_note = "onnxruntime/onnx not installed: the ORT rows are left out"
    try:
        for setp, prefix, timed in cases.values():  # warm-up
            setp()
            _block(prefix, timed, 5)
        samples = {name: [] for name in cases}
        names = list(cases)
        for r in range(rounds):
            if progress:
                print(f"[neighbours] round {r + 1}/{rounds}", file=sys.stderr)
            for name in (names if r % 2 == 0 else names[::-1]):
                setp, prefix, timed = cases[name]
                setp()
                samples[name].append(_block(prefix, timed, block))
        idle = {}
        for policy in ("active", "passive"):
            pyattn.set_thread_wait(policy)
            idle[f"pyattn call [{policy}]"] = _idle_cpu(attn, 2 * rounds)
        idle["torch mm"] = _idle_cpu(mm, 2 * rounds)
    finally:
        torch.set_num_threads(prev[0])
        if pyattn_threads_set:
            pyattn.set_num_threads(prev[1])
        else:
            pyattn._core.reset_num_threads()
        pyattn.set_thread_wait(prev[2])
    med = {name: statistics.median(w for w, _ in s) for name, s in samples.items()}
    cpu = {name: statistics.median(c for _, c in s) for name, s in samples.items()}
    _print(med, cpu, _round_ratio_spread(samples), threads, rounds, block, ort_note, out)
    print("CPU time the process uses in the 20 ms after the call, while the caller sleeps (median):", file=out)
    for name, t in idle.items():
        print(f"  {name:42s} {t * 1e3:8.2f} ms", file=out)
    return med


def _alone_name(name):
    """ "X alone [policy]" for "X after Y [policy]" (None for an "alone" row)."""
    if " after " not in name:
        return None
    what, _, rest = name.partition(" after ")
    return f"{what} alone {rest[rest.index('['):]}"


def _round_ratio_spread(samples):
    """Per "after" row: the quartiles of its per-round ratios after / alone
    (wall time, each round's block against the same round's "alone" block):
    how far the ratio moves between rounds on this machine."""
    spread = {}
    for name, s in samples.items():
        alone = samples.get(_alone_name(name) or "")
        if alone and len(s) == len(alone):
            ratios = sorted(a[0] / b[0] for a, b in zip(s, alone))
            if len(ratios) >= 4:
                q = statistics.quantiles(ratios, n=4)
                spread[name] = (q[0], q[2])
            else:
                spread[name] = (ratios[0], ratios[-1])
    return spread


def _print(med, cpu, spread, threads, rounds, block, ort_note, out):
    import os

    import pyattn

    cfg = pyattn.get_config()
    print(f"Neighbours: {cpu_name()}, {os.cpu_count()} logical CPUs, {threads} threads for torch and "
          f"pyattn; OpenMP {cfg['openmp']}; medians of {rounds} alternating blocks of {block} calls",
          file=out)
    runtimes = cfg["openmp_runtimes"]
    print(f"OpenMP runtimes loaded in this process: {', '.join(runtimes) or 'none listed'}"
          + (" (several: one thread pool each, see docs/torch.md)" if len(runtimes) > 1 else
             " (one: pyattn and torch share its threads)" if runtimes else ""), file=out)
    print("torch mm: (384 x 384) @ (384 x 384) float32; pyattn: causal (1, 8, 256, 64) float32", file=out)
    print("(wall: elapsed time of the timed call; cpu: CPU time all the process's threads used meanwhile)",
          file=out)
    print("(torch add: an elementwise add on the same threads touching the bytes of the op it stands for; "
          "after/add: the previous op against it as a neighbour)", file=out)
    print("(torch sdpa: torch's own causal attention of pyattn's shape, the operation pyattn replaces)", file=out)
    print("(rounds 25-75%: the middle half of the per-round ratios after/alone, wall: how much the "
          "ratio moves between rounds here)", file=out)
    print(f"{'timed call':42s} {'wall':>10s} {'after/alone':>12s} {'rounds 25-75%':>14s} {'after/add':>11s} "
          f"{'cpu':>10s} {'after/alone':>12s}", file=out)
    for name in med:
        cells = []
        for table in (med, cpu):
            t, alone, control = table[name], None, None
            if " after " in name:
                what, _, rest = name.partition(" after ")
                alone = table.get(_alone_name(name))
                if not rest.startswith("torch add") and table is med:
                    control = table.get(f"{what} after torch add {rest[rest.index('['):]}")
            cell = f"{t * 1e6:8.1f}us " + (f"{t / alone:12.3f}" if alone else f"{'':12s}")
            if table is med:
                lo_hi = spread.get(name)
                cell += f" {lo_hi[0]:7.3f}-{lo_hi[1]:<6.3f}" if lo_hi else f" {'':14s}"
                cell += f" {t / control:11.3f}" if control else f" {'':11s}"
            cells.append(cell)
        print(f"{name:42s} " + " ".join(cells), file=out)
    if ort_note:
        print(ort_note, file=out)
