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
