"""Threads: bitwise-identical results for any thread count, the global setting,
and concurrent calls from Python threads."""

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import pyattn
from helpers import qkv

sdpa = pyattn.scaled_dot_product_attention

# Big enough for several query and key blocks per (batch, head).
B, H, L, S, E = 2, 3, 200, 300, 64


@pytest.fixture
def restore_num_threads():
    prev, was_set = pyattn.get_num_threads(), pyattn._core.num_threads_set()
    yield
    if was_set:
        pyattn.set_num_threads(prev)
    else:  # back to following OpenMP / threadpoolctl, as before the test
        pyattn._core.reset_num_threads()


def cases(dtype):
    rng = np.random.default_rng(50)
    q, k, v = qkv(rng, (B, H), L, S, E, 48, dtype)
    float_mask = rng.standard_normal((H, L, S)).astype(dtype)
    float_mask[rng.random(float_mask.shape) < 0.2] = -np.inf
    yield q, k, v, dict()
    yield q, k, v, dict(is_causal="lower_right", kv_lengths=np.array([S, 123]))
    yield q, k, v, dict(attn_mask=rng.random((L, S)) < 0.5, window=(40, 7))
    yield q, k, v, dict(attn_mask=float_mask, is_causal=True)


def raw(result):
    return result if isinstance(result, tuple) else (result,)


def assert_bitwise_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert np.array_equal(x, y, equal_nan=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=str)
def test_bitwise_identical_for_any_thread_count(isa, dtype, restore_num_threads):
    for q, k, v, kwargs in cases(dtype):
        kwargs.update(return_weights=True, return_lse=True)
        first = raw(sdpa(q, k, v, num_threads=1, **kwargs))
        for n in (2, 3, 1, 2):
            assert_bitwise_equal(raw(sdpa(q, k, v, num_threads=n, **kwargs)), first)
        for n in (3, 2):                       # the global setting
            pyattn.set_num_threads(n)
            assert_bitwise_equal(raw(sdpa(q, k, v, **kwargs)), first)


def test_set_get_num_threads_round_trip(restore_num_threads):
    for n in (1, 2, 3, 4 * (os.cpu_count() or 1) + 1):
        pyattn.set_num_threads(n)
        assert pyattn.get_num_threads() == n


def test_concurrent_calls_from_python_threads(isa):
    rng = np.random.default_rng(51)
    inputs = [qkv(rng, (2, 2), 64, 96, 32) for _ in range(8)]
    kwargs = dict(is_causal=True, return_lse=True, num_threads=2)
    serial = [raw(sdpa(*x, **kwargs)) for x in inputs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(3):
            parallel = list(pool.map(lambda x: raw(sdpa(*x, **kwargs)), inputs))
            for got, want in zip(parallel, serial):
                assert_bitwise_equal(got, want)


def test_threadpoolctl_limits_the_default_pool():
    """SPEC section 5: threadpoolctl can limit the pool (until set_num_threads)."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if not pyattn.get_config()["openmp"]:
        pytest.skip("built without OpenMP: there is no pool to limit")
    before = pyattn.get_num_threads()
    with threadpoolctl.threadpool_limits(1, user_api="openmp"):
        assert pyattn.get_num_threads() == 1
    assert pyattn.get_num_threads() == before


def _sum_in_child(args):
    q, threads = args
    return pyattn.scaled_dot_product_attention(q, q, q, num_threads=threads)


def test_forked_child_after_parallel_region():
    """GNU OpenMP's pool does not survive fork(); a child forked after the
    parent ran a parallel region must still compute (single-threaded), not
    hang, and give the same bits."""
    import multiprocessing as mp

    if "fork" not in mp.get_all_start_methods():
        pytest.skip("this platform has no fork start method")
    q = np.random.default_rng(51).standard_normal((1, 4, 300, 64)).astype(np.float32)
    want = pyattn.scaled_dot_product_attention(q, q, q, num_threads=2)  # parallel region
    with mp.get_context("fork").Pool(2) as pool:
        got = pool.map_async(_sum_in_child, [(q, 2), (q, 1)]).get(timeout=120)
    for g in got:
        assert np.array_equal(g, want)


def test_huge_thread_count_is_clamped_not_fatal(restore_num_threads):
    """A num_threads far above what the machine can run (the OpenMP runtime
    aborts the process when it cannot create the threads) is capped at the
    team size the core allows; the result is the same bits."""
    rng = np.random.default_rng(52)
    q, k, v = qkv(rng, (2, 3), 97, 130, 24)
    want = sdpa(q, k, v, is_causal=True, num_threads=1)
    for n in (10**6, 2**31 - 1):
        assert np.array_equal(sdpa(q, k, v, is_causal=True, num_threads=n), want)
        pyattn.set_num_threads(n)
        assert pyattn.get_num_threads() == n        # the setting is kept as given
        assert np.array_equal(sdpa(q, k, v, is_causal=True), want)


def test_threadpoolctl_limit_is_per_python_thread():
    """threadpoolctl limits OpenMP through omp_set_num_threads, which OpenMP
    defines per calling thread: the limit applies to pyattn calls made from
    the thread that set it, not to other Python threads (documented in
    set_num_threads). pyattn.set_num_threads is process-wide."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if not pyattn.get_config()["openmp"]:
        pytest.skip("built without OpenMP: there is no pool to limit")
    default = pyattn.get_num_threads()
    if default == 1:
        pytest.skip("the default is 1 thread already (OMP_NUM_THREADS=1 or one CPU): nothing to limit")
    with threadpoolctl.threadpool_limits(1, user_api="openmp"):
        assert pyattn.get_num_threads() == 1
        with ThreadPoolExecutor(max_workers=1) as pool:
            assert pool.submit(pyattn.get_num_threads).result() == default


def test_gil_is_released_during_a_call():
    """Another Python thread keeps running while a long call computes."""
    import threading

    rng = np.random.default_rng(53)
    q, k, v = qkv(rng, (1, 4), 1024, 1024, 64)
    sdpa(q, k, v, num_threads=1)  # warm-up
    started, done = threading.Event(), threading.Event()

    def worker():
        started.set()
        for _ in range(3):
            sdpa(q, k, v, num_threads=1)
        done.set()

    t = threading.Thread(target=worker)
    t.start()
    started.wait()
    ticks = 0
    while not done.is_set():
        ticks += 1
    t.join()
    # Held GIL: this loop could run only in the ~5 ms switch intervals before
    # the worker enters the core (a few thousand ticks at most). Released: it
    # runs for the whole ~0.1-1 s of the three calls (millions of ticks).
    assert ticks > 100_000, ticks


def test_os_fork_right_after_the_first_parallel_call(tmp_path):
    """A fresh process whose first parallel call is followed by os.fork():
    the child (whose fork handler, installed when pyattn was imported, saw
    that the parent went parallel) computes the same bits and does not hang."""
    import multiprocessing as mp
    import subprocess
    import sys
    import textwrap

    if "fork" not in mp.get_all_start_methods():
        pytest.skip("this platform has no fork start method")
    code = textwrap.dedent("""
        import os, sys, numpy as np, pyattn
        q = np.random.default_rng(1).standard_normal((1, 4, 300, 64)).astype(np.float32)
        want = pyattn.scaled_dot_product_attention(q, q, q, num_threads=2)
        pid = os.fork()
        if pid == 0:
            got = pyattn.scaled_dot_product_attention(q, q, q, num_threads=2)
            os._exit(0 if np.array_equal(got, want) else 3)
        _, status = os.waitpid(pid, 0)
        sys.exit(os.waitstatus_to_exitcode(status))
    """)
    # The pyattn this test imported, from a neutral directory (in a checkout,
    # `python -c` would import the source tree first).
    here = os.path.dirname(os.path.dirname(os.path.abspath(pyattn.__file__)))
    env = dict(os.environ, PYTHONPATH=here)
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, timeout=120)
    assert r.returncode == 0
