"""pytest-benchmark suite for additive (Bahdanau) attention.

pyattn.additive_attention against the broadcast recipe everyone writes first
-- ``tanh(qp[:, :, None, :] + kp[:, None, :, :]) @ v_a``, softmax, ``@ v`` --
in NumPy (row-chunked when the (L, S, A) tensor would exceed 1 GiB) and in
torch (when importable), at the same thread count (torch.set_num_threads;
NumPy's BLAS through threadpoolctl when installed). Each benchmark records
in extra_info the tanh evaluations per second (``B*L*S*A / median``) and the
peak memory of one call above what was resident before it (RSS high-water
mark, so C++ and torch allocations count too).

    pytest benchmarks/bench_additive.py --bench-threads 1,2
    python benchmarks/bench_additive.py [case ...]   # a plain table

The case list is this module's (``CASES``); ``--bench-preset`` picks the
cases tagged with it (smoke < quick < full).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import math
import sys

import numpy as np
import pytest


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    B: int
    L: int
    S: int
    Dq: int
    Dk: int
    A: int
    Ev: int
    projections: bool = False      # False: Keras semantics (A = Dq = Dk, v_a = scale)
    causal: bool = False
    presets: tuple = ("full",)

    @property
    def tanh_evals(self):
        n = self.B * self.L * self.S * self.A
        return n / 2 if self.causal else n  # causal: pyattn skips the hidden half

    def describe(self):
        p = f"Dq={self.Dq} Dk={self.Dk} " if self.projections else ""
        return (f"B={self.B} L={self.L} S={self.S} {p}A={self.A} Ev={self.Ev}"
                + (" causal" if self.causal else ""))


CASES = [
    Case("keras-1k", 1, 1024, 1024, 128, 128, 128, 128, presets=("smoke", "quick", "full")),
    Case("bahdanau-seq2seq", 8, 64, 512, 256, 512, 128, 512, projections=True,
         presets=("quick", "full")),
    Case("keras-causal-2k", 1, 2048, 2048, 64, 64, 64, 64, causal=True, presets=("full",)),
    Case("decode-4k", 16, 1, 4096, 128, 128, 128, 128, presets=("quick", "full")),
    Case("small", 32, 32, 32, 32, 32, 32, 32, presets=("smoke", "quick", "full")),
]
CASES_BY_NAME = {c.name: c for c in CASES}
IMPLS = ("pyattn", "numpy", "torch")
PRESET_ORDER = {"smoke": 0, "quick": 1, "full": 2}


def select(preset):
    return [c for c in CASES if preset in c.presets]


@dataclasses.dataclass
class Inputs:
    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    v_a: np.ndarray
    kw: dict


@functools.lru_cache(maxsize=1)
def make_inputs(name):
    c = CASES_BY_NAME[name]
    rng = np.random.default_rng(0)
    f = np.float32
    q = rng.standard_normal((c.B, c.L, c.Dq)).astype(f)
    k = rng.standard_normal((c.B, c.S, c.Dk)).astype(f)
    v = rng.standard_normal((c.B, c.S, c.Ev)).astype(f)
    v_a = (rng.standard_normal(c.A) / math.sqrt(c.A)).astype(f)
    kw = {}
    if c.projections:
        kw = dict(w_query=(rng.standard_normal((c.Dq, c.A)) / math.sqrt(c.Dq)).astype(f),
                  w_key=(rng.standard_normal((c.Dk, c.A)) / math.sqrt(c.Dk)).astype(f),
                  bias=(0.1 * rng.standard_normal(c.A)).astype(f))
    return Inputs(q, k, v, v_a, kw)


# --------------------------------------------------------------------------
# Implementations
# --------------------------------------------------------------------------


def _blas_threads(threads):
    if importlib.util.find_spec("threadpoolctl") is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads, user_api="blas")


def numpy_recipe(q, k, v, v_a, w_query=None, w_key=None, bias=None, causal=False,
                 max_chunk_bytes=1 << 30, chunk_bytes=256 << 20):
    """The NumPy broadcast recipe: the (rows, S, A) tanh tensor, whole if it
    takes at most 1 GiB, else in row chunks of ~256 MiB."""
    qp = q if w_query is None else q @ w_query
    if bias is not None:
        qp = qp + bias
    kp = k if w_key is None else k @ w_key
    B, L, A = qp.shape
    S = kp.shape[1]
    per_row = S * A * qp.itemsize
    rows = L if L * per_row <= max_chunk_bytes else max(1, chunk_bytes // per_row)
    scores = np.empty((B, L, S), qp.dtype)
    for b in range(B):
        for i0 in range(0, L, rows):
            t = qp[b, i0:i0 + rows, None, :] + kp[b, None, :, :]
            np.tanh(t, out=t)
            scores[b, i0:i0 + rows] = t @ v_a
    if causal:
        scores[:, np.triu(np.ones((L, S), bool), 1)] = -np.inf
    scores -= scores.max(-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(-1, keepdims=True)
    return scores @ v


def torch_recipe(torch, q, k, v, v_a, w_query=None, w_key=None, bias=None, causal=False):
    """The same recipe in torch: one (B, L, S, A) tensor."""
    qp = q if w_query is None else q @ w_query
    if bias is not None:
        qp = qp + bias
    kp = k if w_key is None else k @ w_key
    scores = torch.tanh(qp[:, :, None, :] + kp[:, None, :, :]) @ v_a
    if causal:
        L, S = scores.shape[-2:]
        scores = scores.masked_fill(torch.ones(L, S, dtype=torch.bool).triu(1), float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def make_runner(impl, case, inputs, threads):
    """(callable, context manager factory) or raise pytest.skip."""
    if impl == "pyattn":
        import pyattn

        kw = dict(inputs.kw, is_causal=case.causal, num_threads=threads)
        return (lambda: pyattn.additive_attention(inputs.q, inputs.k, inputs.v, inputs.v_a, **kw),
                contextlib.nullcontext)
    if impl == "numpy":
        return (lambda: numpy_recipe(inputs.q, inputs.k, inputs.v, inputs.v_a, causal=case.causal,
                                     **inputs.kw),
                lambda: _blas_threads(threads))
    if impl == "torch":
        if importlib.util.find_spec("torch") is None:
            pytest.skip("torch is not installed")
        import torch

        need = case.B * case.L * case.S * case.A * 4
        if need > 4 << 30:
            pytest.skip(f"torch recipe would need {need / 2**30:.0f} GiB")
        t = {n: torch.from_numpy(a) for n, a in inputs.kw.items()}
        q, k, v, v_a = (torch.from_numpy(a) for a in (inputs.q, inputs.k, inputs.v, inputs.v_a))

        @contextlib.contextmanager
        def torch_threads():
            prev = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                with torch.inference_mode():
                    yield
            finally:
                torch.set_num_threads(prev)

        return (lambda: torch_recipe(torch, q, k, v, v_a, causal=case.causal, **t), torch_threads)
    raise ValueError(impl)


# --------------------------------------------------------------------------
# Peak memory
# --------------------------------------------------------------------------


def _status_kib(field):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_memory_mib(fn):
    """Peak RSS of one call of fn above the RSS before it (Linux: resets the
    high-water mark through /proc/self/clear_refs), or None if unavailable."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    before = _status_kib("VmRSS")
    fn()
    peak = _status_kib("VmHWM")
    return None if before is None or peak is None else max(0, peak - before) / 1024


# --------------------------------------------------------------------------
# pytest-benchmark
# --------------------------------------------------------------------------


def pytest_generate_tests(metafunc):
    if "case" not in metafunc.fixturenames:
        return
    preset = metafunc.config.getoption("--bench-preset")
    threads = [int(t) for t in metafunc.config.getoption("--bench-threads").split(",") if t.strip()]
    params = [pytest.param(c, impl, t, id=f"{c.name}-{impl}-t{t}")
              for c in select(preset) for t in threads for impl in IMPLS]
    metafunc.parametrize("case,impl,threads", params)


@functools.lru_cache(maxsize=None)
def _validated(name):
    """pyattn's result for a case checked against the float64 reference."""
    import pyattn
    from pyattn import reference

    case, inputs = CASES_BY_NAME[name], make_inputs(name)
    got = pyattn.additive_attention(inputs.q, inputs.k, inputs.v, inputs.v_a,
                                    is_causal=case.causal, **inputs.kw)
    f64 = {n: a.astype(np.float64) for n, a in inputs.kw.items()}
    want = reference.additive_attention(*(a.astype(np.float64) for a in
                                          (inputs.q, inputs.k, inputs.v, inputs.v_a)),
                                        is_causal=case.causal, **f64)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)
    return True


def test_additive(benchmark, case, impl, threads):
    inputs = make_inputs(case.name)
    fn, ctx = make_runner(impl, case, inputs, threads)
    if impl == "pyattn" and case.B * case.L * case.S * case.A <= 1 << 28:
        assert _validated(case.name)
    benchmark.group = f"additive | {case.name} | {threads} thr"
    with ctx():
        benchmark.pedantic(fn, rounds=5, iterations=1, warmup_rounds=1)
        peak = peak_memory_mib(fn)
    median = benchmark.stats.stats.median if getattr(benchmark, "stats", None) else None
    benchmark.extra_info.update(
        case=case.name, shape=case.describe(), impl=impl, threads=threads,
        tanh_evals=case.tanh_evals, peak_mib=peak,
        gtanh_per_s=None if not median else case.tanh_evals / median / 1e9,
    )


# --------------------------------------------------------------------------
# Plain table: python benchmarks/bench_additive.py [case ...]
# --------------------------------------------------------------------------


def _time(fn, ctx, repeats=5):
    import time

    with ctx():
        fn()  # warm-up
        best = math.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        peak = peak_memory_mib(fn)
    return best, peak


def main(argv):
    names = argv or ["keras-1k"]
    print(f"{'case':<18} {'impl':<7} {'thr':>3} {'time':>10} {'Gtanh/s':>8} {'peak MiB':>9} {'vs pyattn':>9}")
    for name in names:
        case, inputs = CASES_BY_NAME[name], make_inputs(name)
        for threads in (1, 2):
            base = None
            for impl in IMPLS:
                try:
                    fn, ctx = make_runner(impl, case, inputs, threads)
                except pytest.skip.Exception as exc:
                    print(f"{name:<18} {impl:<7} {threads:>3}   skipped: {exc}")
                    continue
                t, peak = _time(fn, ctx, repeats=30 if impl == "pyattn" else 3)
                base = base or t
                mem = "n/a" if peak is None else f"{peak:.1f}"
                print(f"{name:<18} {impl:<7} {threads:>3} {t * 1e3:>8.1f}ms {case.tanh_evals / t / 1e9:>8.2f} "
                      f"{mem:>9} {t / base:>8.1f}x")


if __name__ == "__main__":
    main(sys.argv[1:])
