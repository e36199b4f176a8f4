"""scaled_dot_product_attention through the core's one argument path
(csrc/bindings/call_args.h): plain, causal, windowed and masked calls with
or without weights and lse, out=, KV-cache decoding steps (lower-right
causal, sliding windows, 1-D kv_lengths, grouped-query heads) against the
reference and, bitwise, against the same call on inputs laid out otherwise
in memory; wrong calls get the errors that name the argument."""

import numpy as np
import pytest

import pyattn
from helpers import LOW_PRECISION, assert_matches_reference, qkv, rows_apart

sdpa = pyattn.scaled_dot_product_attention

CAUSAL = [False, True, "upper_left", "lower_right"]


def other_layout(q, k, v, **kwargs):
    """The same call on q, k, v laid out otherwise in memory (rows not
    unit-stride: copied by the core first): the same bits."""
    return sdpa(rows_apart(q), rows_apart(k), rows_apart(v), **kwargs)


def assert_bitwise(a, b):
    if isinstance(a, tuple):
        assert isinstance(b, tuple) and len(a) == len(b)
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    else:
        assert not isinstance(b, tuple)
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=str)
@pytest.mark.parametrize("is_causal", CAUSAL, ids=str)
@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("return_lse", [False, True])
@pytest.mark.parametrize("return_weights", [False, True])
@pytest.mark.parametrize("shape", [((2, 3), 1, 37), ((3,), 5, 70), ((1, 2), 13, 13), ((2, 1, 2), 2, 600)],
                         ids=str)
def test_matches_reference_and_general_path(isa, dtype, is_causal, with_lengths, return_lse,
                                            return_weights, shape):
    batch, L, S = shape
    rng = np.random.default_rng(60)
    q, k, v = qkv(rng, batch, L, S, 24, 17, dtype)
    kwargs = dict(is_causal=is_causal, return_lse=return_lse, return_weights=return_weights)
    if with_lengths:
        kwargs["kv_lengths"] = rng.integers(0, S + 1, size=batch[0])
    got = sdpa(q, k, v, **kwargs)
    assert_matches_reference(got, q, k, v, **kwargs)
    assert_bitwise(got, other_layout(q, k, v, **kwargs))


@pytest.mark.parametrize("is_causal", CAUSAL, ids=str)
@pytest.mark.parametrize("return_lse", [False, True])
@pytest.mark.parametrize("heads", [(8, 2), (6, 6), (3, 1)], ids=str)
@pytest.mark.parametrize("L", [1, 4, 30])
def test_grouped_query_heads(isa, is_causal, return_lse, heads, L):
    """(Weights with grouped-query heads: a 30-row call returns them.)"""
    hq, hk = heads
    rng = np.random.default_rng(61)
    S = 300
    q = rng.standard_normal((2, hq, L, 32)).astype(np.float32)
    k = rng.standard_normal((2, hk, S, 32)).astype(np.float32)
    v = rng.standard_normal((2, hk, S, 16)).astype(np.float32)
    kwargs = dict(is_causal=is_causal, return_lse=return_lse, enable_gqa=True,
                  kv_lengths=np.array([S, 123]), return_weights=L == 30)
    got = sdpa(q, k, v, **kwargs)
    assert_matches_reference(got, q, k, v, **kwargs)
    assert_bitwise(got, other_layout(q, k, v, **kwargs))


MASK_SHAPES = [(13,), (1, 13), (5, 13), (3, 1, 1), (2, 1, 5, 1), (2, 3, 5, 13), (1, 1, 1, 1, 13)]


@pytest.mark.parametrize("kind", ["bool", "float"])
@pytest.mark.parametrize("mask_shape", MASK_SHAPES, ids=str)
@pytest.mark.parametrize("is_causal", [False, "lower_right"], ids=str)
def test_masks(isa, kind, mask_shape, is_causal):
    """Masks that broadcast to (batch..., L, S), one with a transposed
    layout; a mask with more dimensions than that is the general path's
    ValueError."""
    rng = np.random.default_rng(67)
    q, k, v = qkv(rng, (2, 3), 5, 13, 8, 6)
    mask = rng.random(mask_shape[::-1]).T < 0.7 if kind == "bool" else \
        rng.standard_normal(mask_shape[::-1]).astype(np.float32).T
    kwargs = dict(attn_mask=mask, is_causal=is_causal, return_lse=True, return_weights=True)
    if len(mask_shape) > 4:
        with pytest.raises(ValueError, match="attn_mask"):
            sdpa(q, k, v, **kwargs)
        return
    got = sdpa(q, k, v, **kwargs)
    assert_matches_reference(got, q, k, v, **kwargs)
    assert_bitwise(got, other_layout(q, k, v, **kwargs))


@pytest.mark.parametrize("mask_shape", [(2, 8, 3, 40), (2, 1, 3, 40), (8, 1, 40), (40,)], ids=str)
def test_masks_with_grouped_query_heads(isa, mask_shape):
    rng = np.random.default_rng(68)
    q = rng.standard_normal((2, 8, 3, 16)).astype(np.float32)
    k = rng.standard_normal((2, 2, 40, 16)).astype(np.float32)
    v = rng.standard_normal((2, 2, 40, 16)).astype(np.float32)
    for mask in (rng.random(mask_shape) < 0.6, rng.standard_normal(mask_shape).astype(np.float32)):
        kwargs = dict(attn_mask=mask, enable_gqa=True, kv_lengths=np.array([40, 17]), return_lse=True,
                      return_weights=True)
        got = sdpa(q, k, v, **kwargs)
        assert_matches_reference(got, q, k, v, **kwargs)
        assert_bitwise(got, other_layout(q, k, v, **kwargs))


def test_masks_the_fast_path_does_not_take(isa):
    """A float64 mask for float32 inputs (converted), an int mask (an
    error) and a mask that does not broadcast (an error)."""
    rng = np.random.default_rng(69)
    q, k, v = qkv(rng, (2,), 4, 6, 8, 8)
    mask = rng.standard_normal((4, 6))
    assert_matches_reference(sdpa(q, k, v, attn_mask=mask), q, k, v, attn_mask=mask)
    with pytest.raises(TypeError, match="attn_mask"):
        sdpa(q, k, v, attn_mask=np.ones((4, 6), np.int32))
    with pytest.raises(ValueError, match="attn_mask"):
        sdpa(q, k, v, attn_mask=np.ones((4, 5), bool))


def test_views_and_strided_lengths(isa):
    """Sliced KV-cache buffers (row stride > features), transposed query
    heads and a strided kv_lengths view are read as they are."""
    rng = np.random.default_rng(62)
    keys = rng.standard_normal((3, 4, 100, 16)).astype(np.float32)
    values = rng.standard_normal((3, 4, 100, 8)).astype(np.float32)
    k, v = keys[:, :, :57], values[:, :, :57]
    q = rng.standard_normal((3, 2, 4, 16)).astype(np.float32).transpose(0, 2, 1, 3)
    lengths = np.array([57, 0, 9, 44, 20, 1])[::2]
    for kwargs in (dict(kv_lengths=lengths, is_causal="lower_right", return_lse=True),
                   dict(kv_lengths=lengths, is_causal="lower_right", enable_gqa=True,
                        return_lse=True)):
        qq = q if not kwargs.get("enable_gqa") else np.ascontiguousarray(q[:, :, :1])[:, [0, 0, 1, 1]]
        kk, vv = (k, v) if not kwargs.get("enable_gqa") else (k[:, :2], v[:, :2])
        got = sdpa(qq, kk, vv, **kwargs)
        assert_matches_reference(got, qq, kk, vv, **kwargs)
        assert_bitwise(got, other_layout(qq, kk, vv, **kwargs))


@pytest.mark.parametrize("kv_heads, kwargs, exc, words", [
    (3, dict(kv_lengths=np.array([5, 101])), ValueError, ["kv_lengths", "101"]),
    (3, dict(kv_lengths=np.array([5, -1])), ValueError, ["kv_lengths", "-1"]),
    (3, dict(kv_lengths=np.array([5, 1, 2])), ValueError, ["kv_lengths"]),
    (3, dict(kv_lengths=np.array([5.0, 1.0])), TypeError, ["kv_lengths"]),
    (3, dict(is_causal="upper"), ValueError, ["is_causal"]),
    (3, dict(is_causal=1), TypeError, ["is_causal"]),
    (3, dict(scale=float("nan")), ValueError, ["scale"]),
    (2, dict(enable_gqa=True, kv_lengths=np.array([3, 4])), ValueError, ["enable_gqa", "divide"]),
    (2, dict(kv_lengths=np.array([3, 4])), ValueError, ["batch", "(2, 3)", "(2, 2)"]),
])
def test_wrong_calls_get_the_general_paths_errors(kv_heads, kwargs, exc, words):
    rng = np.random.default_rng(63)
    q = rng.standard_normal((2, 3, 4, 8)).astype(np.float32)
    k = rng.standard_normal((2, kv_heads, 100, 8)).astype(np.float32)
    with pytest.raises(exc) as info:
        sdpa(q, k, k, **kwargs)
    for w in words:
        assert w in str(info.value), (w, str(info.value))


def test_int32_lengths_and_other_shapes_take_the_general_path(isa):
    """kv_lengths the fast path does not take (int32, one per element of a
    2-D batch, a scalar) still give the right result."""
    rng = np.random.default_rng(64)
    q, k, v = qkv(rng, (2, 3), 3, 40, 8, 8)
    for lengths in (np.array([40, 7], np.int32), rng.integers(0, 41, size=(2, 3)), np.array(11)):
        kwargs = dict(kv_lengths=lengths, is_causal="lower_right", return_lse=True)
        assert_matches_reference(sdpa(q, k, v, **kwargs), q, k, v, **kwargs)


def test_kv_cache_decoding_loop(isa):
    """Prefill, then token-by-token steps with grouped-query heads and
    elements of different lengths (counts), against the reference over the
    cached positions."""
    rng = np.random.default_rng(65)
    B, Hq, Hkv, d = 2, 4, 2, 16
    cache = pyattn.KVCache(B, Hkv, d, 64)
    k = rng.standard_normal((B, Hkv, 9, d)).astype(np.float32)
    v = rng.standard_normal((B, Hkv, 9, d)).astype(np.float32)
    cache.append(k, v, counts=np.array([9, 5]))
    for step in range(6):
        q = rng.standard_normal((B, Hq, 1, d)).astype(np.float32)
        k = rng.standard_normal((B, Hkv, 1, d)).astype(np.float32)
        v = rng.standard_normal((B, Hkv, 1, d)).astype(np.float32)
        lengths = cache.append(k, v)
        out, lse = cache.attend(q, return_lse=True)
        kwargs = dict(kv_lengths=lengths, is_causal="lower_right", enable_gqa=True, return_lse=True)
        assert_matches_reference((out, lse), q, cache.used_keys, cache.used_values, **kwargs)
    assert cache.lengths.tolist() == [15, 11] and cache.max_length == 15


WINDOWS = [0, 3, (2, 1), (None, 4), (5, None), (None, None), (0, 0), (2 ** 61, 7)]


@pytest.mark.parametrize("window", WINDOWS, ids=str)
@pytest.mark.parametrize("is_causal", CAUSAL, ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=str)
def test_windows(isa, window, is_causal, dtype):
    rng = np.random.default_rng(67)
    q, k, v = qkv(rng, (2, 4), 9, 23, 16, 8, dtype)
    for extra in ({}, dict(kv_lengths=np.array([23, 11]), return_lse=True, return_weights=True),
                  dict(attn_mask=rng.random((9, 23)) < 0.8)):
        kwargs = dict(extra, window=window, is_causal=is_causal)
        got = sdpa(q, k, v, **kwargs)
        assert_matches_reference(got, q, k, v, **kwargs)
        assert_bitwise(got, other_layout(q, k, v, **kwargs))
    kv = k[:, ::2], v[:, ::2]
    kwargs = dict(window=window, is_causal=is_causal, enable_gqa=True)
    got = sdpa(q, *kv, **kwargs)
    assert_matches_reference(got, q, *kv, **kwargs)
    assert_bitwise(got, other_layout(q, *kv, **kwargs))


@pytest.mark.parametrize("window, exc, words", [
    (-1, ValueError, ["window", "left", ">= 0"]),
    ((1, -2), ValueError, ["window", "right", ">= 0"]),
    (True, TypeError, ["window"]),
    ((True, 1), TypeError, ["window", "left"]),
    ((1, False), TypeError, ["window", "right"]),
    ((1, 2, 3), TypeError, ["window"]),
    ((1.5, 2), TypeError, ["window", "left"]),
    ("3", TypeError, ["window"]),
])
def test_wrong_windows_get_the_general_paths_errors(window, exc, words):
    q = np.ones((1, 2, 4, 8), np.float32)
    with pytest.raises(exc) as info:
        sdpa(q, q, q, window=window)
    for w in words:
        assert w in str(info.value), (w, str(info.value))


def test_other_window_forms_take_the_general_path(isa):
    """A list, NumPy integers and a side wider than int64 are windows too."""
    rng = np.random.default_rng(68)
    q, k, v = qkv(rng, (2,), 6, 11, 8, 8)
    for window in ([2, 1], np.int64(3), (np.int32(1), None)):
        assert_matches_reference(sdpa(q, k, v, window=window), q, k, v, window=window)
    # (the reference cannot take 2**70: a side wider than any distance is unbounded)
    assert_matches_reference(sdpa(q, k, v, window=(2 ** 70, 0)), q, k, v, window=(None, 0))


def test_keys_broadcast_over_a_batch_dim_give_the_general_paths_bits(isa):
    """K/V (and lengths) broadcast along a batch dimension are folded into
    the query rows, whatever q's layout: same tiling, same bits."""
    rng = np.random.default_rng(70)
    q = rng.standard_normal((4, 3, 8)).astype(np.float32)
    k = np.broadcast_to(rng.standard_normal((1, 7, 8)).astype(np.float32), (4, 7, 8))
    v = np.broadcast_to(rng.standard_normal((1, 7, 6)).astype(np.float32), (4, 7, 6))
    n = np.broadcast_to(np.array([5]), (4,))
    for kwargs in ({}, dict(is_causal="lower_right", return_lse=True),
                   dict(attn_mask=np.ones((3, 7), bool)), dict(kv_lengths=n, return_lse=True)):
        got = sdpa(q, k, v, **kwargs)
        assert_matches_reference(got, q, k, v, **kwargs)
        assert_bitwise(got, sdpa(rows_apart(q), k, v, **kwargs))  # (K/V still broadcast)


def test_a_result_too_large_is_named():
    def zeros(*shape):
        return np.broadcast_to(np.zeros((1,) * len(shape), np.float32), shape)

    v = np.broadcast_to(np.zeros((1, 1, 2**21), np.float32), (2**22, 1, 2**21))
    with pytest.raises(ValueError, match="more than can be addressed"):
        sdpa(zeros(2**22, 2**21, 1), zeros(2**22, 1, 1), v)
    # a small result, weights of 2**62 elements
    with pytest.raises(ValueError, match="weights .* more than can be addressed"):
        sdpa(zeros(2**31, 1), zeros(2**31, 1), zeros(2**31, 1), return_weights=True)


def test_masks_and_lengths_with_strides_of_no_whole_item(isa):
    """Byte strides that are not a multiple of the item size (a structured
    or byte-offset view) are accepted: SPEC 5, any strides."""
    rng = np.random.default_rng(71)
    q, k, v = qkv(rng, (2,), 3, 7, 8, 4)
    packed_mask = np.zeros(21, dtype=[("m", np.float32), ("pad", np.uint8, 2)])   # 6-byte items
    packed_mask["m"] = rng.standard_normal(21)
    mask = packed_mask["m"].reshape(3, 7)
    packed_lengths = np.zeros(2, dtype=[("n", np.int64), ("pad", np.int32)])      # 12-byte items
    packed_lengths["n"] = [7, 4]
    lengths = packed_lengths["n"]
    assert mask.strides == (42, 6) and lengths.strides == (12,)
    for kwargs in (dict(attn_mask=mask), dict(kv_lengths=lengths), dict(attn_mask=mask, kv_lengths=lengths)):
        assert_matches_reference(sdpa(q, k, v, return_lse=True, **kwargs), q, k, v, return_lse=True, **kwargs)


def test_kv_cache_lengths_stay_read_only():
    cache = pyattn.KVCache(2, 1, 4, 8)
    lengths = cache.append(np.ones((2, 1, 3, 4), np.float32), np.ones((2, 1, 3, 4), np.float32))
    for a in (lengths, cache.lengths):
        with pytest.raises(ValueError):
            a.flags.writeable = True
    assert cache.lengths.tolist() == [3, 3] and cache.max_length == 3


@pytest.mark.parametrize("return_lse", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=str)
def test_out(isa, dtype, return_lse):
    """``out`` (a view with any strides, unit along its last dim) is filled
    and returned itself, with the general path's bits."""
    rng = np.random.default_rng(69)
    q, k, v = qkv(rng, (2, 3), 5, 19, 8, 6, dtype)
    kwargs = dict(is_causal="lower_right", window=(4, None), return_lse=return_lse)
    want = other_layout(q, k, v, **kwargs)
    buf = np.full((3, 2, 7, 9), np.nan, dtype)
    for out in (np.empty((2, 3, 5, 6), dtype), buf.transpose(1, 0, 2, 3)[:, :, 1:6, 2:8]):
        before = buf.copy()
        got = sdpa(q, k, v, out=out, **kwargs)
        assert (got[0] if return_lse else got) is out
        assert_bitwise(got, want)
        if out.base is buf:  # nothing outside the view is written
            mask = np.ones(buf.shape, bool)
            mask.transpose(1, 0, 2, 3)[:, :, 1:6, 2:8] = False
            np.testing.assert_array_equal(buf[mask], before[mask])


def test_out_interleaved_with_an_input(isa):
    """out and q in one buffer, interleaved without sharing an element: the
    fast path's bound says "may overlap", the general path's exact check
    lets it run."""
    rng = np.random.default_rng(70)
    buf = rng.standard_normal((2, 3, 5, 2, 8)).astype(np.float32)
    q, out = buf[:, :, :, 0], buf[:, :, :, 1]
    q_before = q.copy()
    k, v = (rng.standard_normal((2, 3, 7, 8)).astype(np.float32) for _ in range(2))
    got = sdpa(q, k, v, out=out)
    assert got is out
    np.testing.assert_array_equal(q, q_before)
    assert_matches_reference(got, q_before, k, v)


@pytest.mark.parametrize("which", ["query", "value", "attn_mask", "kv_lengths"])
def test_out_overlapping_an_input_is_refused(which):
    rng = np.random.default_rng(71)
    q, k, v = (rng.standard_normal((2, 3, 4, 4)).astype(np.float32) for _ in range(3))
    mask = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    raw = np.zeros(2 * 3 * 4 * 4 * 4, np.uint8)  # out's bytes, its first 16 also kv_lengths'
    lengths = raw[:16].view(np.int64)
    out = {"query": q, "value": v, "attn_mask": mask,
           "kv_lengths": raw.view(np.float32).reshape(2, 3, 4, 4)}[which]
    before = [a.copy() for a in (q, v, mask, lengths)]
    with pytest.raises(ValueError, match=f"out overlaps the memory of {which}"):
        sdpa(q, k, v, attn_mask=mask, kv_lengths=lengths, out=out)
    for a, b in zip((q, v, mask, lengths), before):
        np.testing.assert_array_equal(a, b)


def test_out_overlapping_an_input_through_negative_strides_is_refused():
    rng = np.random.default_rng(72)
    q, k, v = (rng.standard_normal((2, 3, 4, 4)).astype(np.float32) for _ in range(3))
    with pytest.raises(ValueError, match="out overlaps the memory of query"):
        sdpa(q, k, v, out=q[::-1, :, ::-1, :])
    mask = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="out overlaps the memory of attn_mask"):
        sdpa(q, k, v, attn_mask=mask[:, ::-1], out=mask[::-1])


@pytest.mark.parametrize("dtype", LOW_PRECISION)
@pytest.mark.parametrize("kwargs", [
    dict(),
    dict(is_causal="lower_right", kv_lengths=np.array([9, 0]), return_lse=True),
    dict(attn_mask="bool", return_weights=True),
    dict(attn_mask="float32", window=(3, 2), return_weights=True, return_lse=True),
    dict(enable_gqa=True, is_causal=True, return_weights=True),
], ids=str)
def test_half_inputs(isa, dtype, kwargs):
    """float16 / bfloat16 q, k, v: computed in float32 in C++, out and weights
    returned in the input dtype and lse in float32, bitwise as the general path."""
    rng = np.random.default_rng(66)
    q = rng.standard_normal((2, 4, 7, 24)).astype(dtype)
    k, v = (rng.standard_normal((2, 2 if kwargs.get("enable_gqa") else 4, 9, 24)).astype(dtype)
            for _ in range(2))
    if kwargs.get("attn_mask") == "bool":
        kwargs = dict(kwargs, attn_mask=rng.random((7, 9)) < 0.7)
    elif kwargs.get("attn_mask") == "float32":
        kwargs = dict(kwargs, attn_mask=rng.standard_normal((4, 1, 9)).astype(np.float32))
    got = sdpa(q, k, v, **kwargs)
    res = got if isinstance(got, tuple) else (got,)
    assert res[0].dtype == dtype
    if kwargs.get("return_weights"):
        assert res[1].dtype == dtype
    if kwargs.get("return_lse"):
        assert res[-1].dtype == np.float32
    assert_matches_reference(got, q, k, v, **kwargs)
    assert_bitwise(got, other_layout(q, k, v, **kwargs))


@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_half_inputs_the_fast_path_declines(dtype):
    """out= and masks of the input dtype (converted by the core)."""
    rng = np.random.default_rng(67)
    q, k, v = (rng.standard_normal((3, 5, 16)).astype(dtype) for _ in range(3))
    mask = rng.standard_normal((5, 5)).astype(dtype)
    out = np.empty((3, 5, 16), dtype)
    assert sdpa(q, k, v, out=out) is out
    assert_bitwise(out, other_layout(q, k, v))
    assert_bitwise(sdpa(q, k, v, attn_mask=mask), other_layout(q, k, v, attn_mask=mask))
