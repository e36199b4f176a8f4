"""pytest-benchmark suite for scaled_dot_product_attention.

The cases, the flops() helper and the baselines are pyattn.bench's, the same
ones the ``pyattn-bench`` CLI runs. Every pyattn result is validated against
the float64 reference before it is timed. Groups are named
``<group> | <case> | <threads> thr`` (groups: prefill, causal, masked,
weights, decode, gqa-decode, kv-decode, varlen, tiny; plus ``roof``, NumPy's
float32 2048^3 matmul). Memory-bound cases record GB/s (the bytes of q, K, V
and out per call) in extra_info too. Baselines that are not installed or
cannot run a case are skipped. Additive-attention cases: bench_additive.py.

    pytest benchmarks --bench-preset quick --bench-threads 1
    pytest benchmarks -k "decode and torch" --benchmark-json out.json
"""

import functools

import pytest

from pyattn.bench import baselines as bl
from pyattn.bench import cases as cs

ROOF_N = 2048


def pytest_generate_tests(metafunc):
    threads = [int(t) for t in metafunc.config.getoption("--bench-threads").split(",") if t.strip()]
    if "case" in metafunc.fixturenames:
        preset = metafunc.config.getoption("--bench-preset")
        params = [pytest.param(c, impl, t, id=f"{c.name}-{impl}-t{t}")
                  for c in cs.select(preset) if c.op != "additive" for t in threads for impl in bl.IMPLS]
        metafunc.parametrize("case,impl,threads", params)
    elif "roof_threads" in metafunc.fixturenames:
        metafunc.parametrize("roof_threads", threads, ids=[f"t{t}" for t in threads])


@functools.lru_cache(maxsize=1)  # parameters come case by case: keep one case's inputs
def _inputs(name):
    return cs.make_inputs(cs.CASES_BY_NAME[name])


def _run(benchmark, runner, flops, per_call=False, nbytes=None):
    with runner:
        if per_call:  # let pytest-benchmark calibrate the loop count
            benchmark(runner)
        else:
            benchmark.pedantic(runner, rounds=5, iterations=1, warmup_rounds=1)
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        benchmark.extra_info["gflops"] = flops / stats.stats.median / 1e9
        if nbytes:
            benchmark.extra_info["gb_per_s"] = nbytes / stats.stats.median / 1e9


def test_sdpa(benchmark, case, impl, threads):
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
    benchmark.group = f"{case.group} | {case.name} | {threads} thr"
    benchmark.extra_info.update(case=case.name, shape=case.describe(), impl=impl, threads=threads,
                                flops=case.flops, note=runner.note or "")
    _run(benchmark, runner, case.flops, per_call=case.per_call,
         nbytes=case.bytes if case.memory_bound else None)


def test_roof_matmul(benchmark, roof_threads):
    benchmark.group = "roof"
    benchmark.extra_info.update(n=ROOF_N, threads=roof_threads, blas_threads=bl.blas_thread_control())
    _run(benchmark, bl.roof_runner(ROOF_N, roof_threads), cs.matmul_flops(ROOF_N))
