"""pytest-benchmark suite for additive (Bahdanau) attention.

The cases (group ``additive`` of pyattn.bench.cases), the flops helper and the
baselines are pyattn.bench's, the same ones ``pyattn-bench`` runs
(``pyattn-bench --case 'additive-*'`` prints them as a table): pyattn's
additive_attention against the broadcast recipe everyone writes first --
``tanh(qp[:, :, None, :] + kp[:, None, :, :]) @ v_a``, softmax, ``@ v`` -- in
NumPy (row-chunked when the (L, S, A) tensor would exceed 1 GiB) and in torch
(when importable), at the same thread count. Every pyattn result is validated
against the float64 reference before it is timed. Each benchmark records in
extra_info its GFLOP/s, the tanh evaluations per second
(``B*L*S*A / median``, halved when causal) and the peak memory of one call
above what was resident before it (RSS high-water mark, so C++ and torch
allocations count too).

    pytest benchmarks/bench_additive.py --bench-preset quick --bench-threads 1,2
"""

from __future__ import annotations

import functools

import pytest

from pyattn.bench import baselines as bl
from pyattn.bench import cases as cs

IMPLS = ("pyattn", "numpy", "torch")


def pytest_generate_tests(metafunc):
    if "case" not in metafunc.fixturenames:
        return
    preset = metafunc.config.getoption("--bench-preset")
    threads = [int(t) for t in metafunc.config.getoption("--bench-threads").split(",") if t.strip()]
    params = [pytest.param(c, impl, t, id=f"{c.name}-{impl}-t{t}")
              for c in cs.select(preset) if c.op == "additive" for t in threads for impl in IMPLS]
    metafunc.parametrize("case,impl,threads", params)


@functools.lru_cache(maxsize=1)  # parameters come case by case: keep one case's inputs
def _inputs(name):
    return cs.make_inputs(cs.CASES_BY_NAME[name])


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


def test_additive(benchmark, case, impl, threads):
    ok, why = bl.available(impl)
    if not ok:
        pytest.skip(why)
    inputs = _inputs(case.name)
    try:
        runner = bl.make_runner(impl, case, inputs, threads)
    except bl.Unsupported as exc:
        pytest.skip(f"{impl}: {exc}")
    if impl == "pyattn":
        with runner:
            check = cs.validate(case, inputs, runner())
        assert check.ok, f"{case.name}: {check}"
    benchmark.group = f"additive | {case.name} | {threads} thr"
    with runner:
        benchmark.pedantic(runner, rounds=5, iterations=1, warmup_rounds=1)
        peak = peak_memory_mib(runner)
    stats = getattr(benchmark, "stats", None)
    median = stats.stats.median if stats is not None else None
    tanh_evals = case.B * case.L * case.S * case.a / (2 if case.causal else 1)
    benchmark.extra_info.update(
        case=case.name, shape=case.describe(), impl=impl, threads=threads, flops=case.flops,
        tanh_evals=tanh_evals, peak_mib=peak, note=runner.note or "",
        gflops=None if not median else case.flops / median / 1e9,
        gtanh_per_s=None if not median else tanh_evals / median / 1e9,
    )
