"""The kept weights buffer (csrc/bindings/weights_memory.h): a freed weights
result of at least 16 MiB is reused by the next call's weights, which must
then be written completely (a reused buffer holds the previous call's values,
not zeros); it is freed by the next call that takes no weights, memory a
live view still points into is never reused, and weights pyattn only uses
on the way are not kept."""

import numpy as np
import pytest

import pyattn
import pyattn.additive as additive
import pyattn.attention as attention
from helpers import assert_matches_reference, qkv

sdpa = pyattn.scaled_dot_product_attention
kept_bytes = pyattn._core._kept_weights_bytes

# (2, 2, 1024, 1024) float32 weights: 16 MiB, the smallest size that is kept.
BATCH, L, S, E = (2, 2), 1024, 1024, 16
WEIGHTS_BYTES = 2 * 2 * L * S * 4


@pytest.fixture(params=["call"])
def path(request):
    """Each test starts and ends with no kept weights buffer."""
    pyattn._core.release_kept_weights()
    yield request.param
    pyattn._core.release_kept_weights()


def poisoned_weights_call(q, k, v):
    """A weights call whose result is filled with NaN and freed: the buffer
    then kept is full of NaN. Returns its address."""
    _, w = sdpa(q, k, v, return_weights=True)
    assert w.nbytes == WEIGHTS_BYTES and w.flags.c_contiguous and w.flags.writeable
    address = w.ctypes.data
    w.fill(np.nan)
    del w
    assert kept_bytes() == WEIGHTS_BYTES
    return address


@pytest.mark.parametrize("kwargs", [
    dict(),
    dict(is_causal=True, return_lse=True),
    # Rows with no visible key (length 0, a row masked out): weights of zeros.
    dict(kv_lengths=np.array([0, 700]), is_causal="lower_right"),
    dict(attn_mask="bool", window=(100, 3)),
], ids=["plain", "causal+lse", "lengths0", "bool-mask+window"])
def test_reused_weights_buffer_is_fully_rewritten(path, kwargs):
    rng = np.random.default_rng(7)
    q, k, v = qkv(rng, BATCH, L, S, E)
    kwargs = dict(kwargs)
    if kwargs.get("attn_mask") == "bool":
        mask = rng.random((L, S)) < 0.7
        mask[5] = False  # a row that sees no key
        kwargs["attn_mask"] = mask
    address = poisoned_weights_call(q, k, v)
    result = sdpa(q, k, v, return_weights=True, **kwargs)
    assert result[1].ctypes.data == address  # the kept buffer was taken
    assert kept_bytes() == 0
    assert_matches_reference(result, q, k, v, return_weights=True, **kwargs)


def test_float16_inputs_keep_nothing_and_reuse_a_freed_buffer(path):
    # float16 weights are computed in float32, then converted: that float32
    # array is not kept, but a float32 buffer the user freed is reused.
    rng = np.random.default_rng(8)
    q, k, v = qkv(rng, BATCH, L, S, E)
    poisoned_weights_call(q, k, v)
    q, k, v = (a.astype(np.float16) for a in (q, k, v))
    result = sdpa(q, k, v, return_weights=True, is_causal=True)
    assert kept_bytes() == 0  # the reused buffer was converted and freed, not kept
    assert result[1].dtype == np.float16
    assert_matches_reference(result, q, k, v, return_weights=True, is_causal=True)
    del result
    sdpa(q, k, v, return_weights=True)
    assert kept_bytes() == 0


def test_multihead_averaged_weights_keep_nothing(path):
    rng = np.random.default_rng(13)
    mha = pyattn.MultiHeadAttention(64, 8, batch_first=True, rng=rng)
    x = rng.standard_normal((2, 1024, 64), dtype=np.float32)  # per-head weights: 64 MiB
    y, w = mha(x, x, x)
    assert w.shape == (2, 1024, 1024)
    assert kept_bytes() == 0
    _, w_heads = mha(x, x, x, average_attn_weights=False)
    np.testing.assert_allclose(w, w_heads.mean(axis=1), rtol=1e-6, atol=1e-9)
    del w_heads
    assert kept_bytes() == 2 * 8 * 1024 * 1024 * 4  # the user's per-head array: kept


def test_new_weights_array_checks_its_arguments():
    with pytest.raises(TypeError, match="float32 or float64"):
        pyattn._core._new_weights_array(np.dtype(object), (4, 1 << 22), True)
    with pytest.raises(ValueError, match="bad shape"):
        pyattn._core._new_weights_array(np.dtype(np.float32), (-1, 4), True)
    with pytest.raises(ValueError, match="bad shape"):
        pyattn._core._new_weights_array(np.dtype(np.float32), (1 << 40, 1 << 40), True)


def test_reused_weights_buffer_additive(path):
    rng = np.random.default_rng(9)
    q, k, v = qkv(rng, BATCH, L, S, E)
    address = poisoned_weights_call(q, k, v)
    v_a = rng.standard_normal(E).astype(np.float32)
    out, w = pyattn.additive_attention(q, k, v, v_a, kv_lengths=np.array([3, 0]), return_weights=True)
    assert w.ctypes.data == address
    want_out, want_w = pyattn.reference.additive_attention(
        q.astype(np.float64), k.astype(np.float64), v.astype(np.float64), v_a.astype(np.float64),
        kv_lengths=np.array([3, 0]), return_weights=True)
    np.testing.assert_allclose(w, want_w, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(out, want_out, rtol=2e-5, atol=2e-6)


def test_kept_buffer_is_freed_by_a_call_that_does_not_take_it(path):
    rng = np.random.default_rng(10)
    q, k, v = qkv(rng, BATCH, L, S, E)
    poisoned_weights_call(q, k, v)
    sdpa(q[..., :8, :], k, v)  # no weights
    assert kept_bytes() == 0

    poisoned_weights_call(q, k, v)
    _, w = sdpa(q[..., :8, :], k, v, return_weights=True)  # weights too small to keep
    assert kept_bytes() == 0
    assert not np.isnan(w).any()

    # A larger result than the kept buffer gets new memory; the kept one is freed.
    poisoned_weights_call(q, k, v)
    k2, v2 = np.concatenate([k, k], axis=-2), np.concatenate([v, v], axis=-2)
    _, w = sdpa(q, k2, v2, return_weights=True)
    assert kept_bytes() == 0
    del w
    assert kept_bytes() == 2 * WEIGHTS_BYTES


def test_views_keep_weights_memory_alive(path):
    rng = np.random.default_rng(11)
    q, k, v = qkv(rng, BATCH, L, S, E)
    _, w = sdpa(q, k, v, return_weights=True)
    row = w[1, 0, 17]  # a view into the weights
    saved = row.copy()
    del w
    assert kept_bytes() == 0  # still in use: not kept
    _, w2 = sdpa(q, k, v, return_weights=True, is_causal=True)
    assert not np.shares_memory(w2, row)
    np.testing.assert_array_equal(row, saved)
    del w2, row


@pytest.mark.parametrize("threads", [1, 2])
def test_reused_buffer_gives_the_same_bits(path, threads):
    # A reused buffer lets the kernel defer the writes of weights over 32 MiB
    # (tiling.cpp: 40 MiB here): the same bits as with fresh memory.
    rng = np.random.default_rng(12)
    q, k, v = qkv(rng, (2, 5), L, S, E)
    kw = dict(return_weights=True, return_lse=True, is_causal=True, num_threads=threads)
    fresh = sdpa(q, k, v, **kw)
    fresh = tuple(a.copy() for a in fresh)  # (frees the weights: kept)
    assert kept_bytes() == 2 * 5 * L * S * 4
    reused = sdpa(q, k, v, **kw)
    assert kept_bytes() == 0
    for a, b in zip(fresh, reused):
        np.testing.assert_array_equal(a, b)
