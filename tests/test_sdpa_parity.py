"""pyattn.scaled_dot_product_attention against the float64 reference, per ISA."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pyattn
from helpers import (
    LOW_PRECISION,
    assert_matches_reference,
    finfo_min,
    qkv,
    random_array,
    sdpa_cases,
)

sdpa = pyattn.scaled_dot_product_attention
FLOATS = [np.dtype(np.float32), np.dtype(np.float64)]


def check(case):
    """Run one case on the fast path, check inputs untouched and the result."""
    before = case.copies()
    result = sdpa(case.q, case.k, case.v, **case.kwargs)
    case.assert_unchanged(before)
    return assert_matches_reference(result, case.q, case.k, case.v, **case.kwargs)


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@settings(max_examples=120)
@given(data=st.data())
def test_random_cases(isa, dtype, data):
    check(data.draw(sdpa_cases(dtype=dtype, max_L=24, max_S=40, max_E=40, max_Ev=24)))


@pytest.mark.parametrize("dtype", LOW_PRECISION)
@settings(max_examples=60)
@given(data=st.data())
def test_random_cases_low_precision(isa, dtype, data):
    check(data.draw(sdpa_cases(dtype=dtype, max_L=16, max_S=40, max_E=40, max_Ev=16,
                               use_finfo_min=False)))


@pytest.mark.parametrize("dtype", FLOATS + LOW_PRECISION, ids=str)
@pytest.mark.parametrize("B, H, L, S, E, Ev, kwargs", [
    (1, 2, 97, 1025, 59, 59, {}),
    (1, 1, 97, 1025, 59, 31, dict(is_causal="lower_right", window=(100, None))),
    (2, 1, 97, 97, 59, 59, dict(is_causal=True, return_weights=True, return_lse=True)),
    (3, 2, 13, 17, 5, 7, dict(window=(3, 2), return_lse=True)),
    (2, 3, 1, 1025, 128, 128, dict(is_causal="lower_right", kv_lengths=np.array([1025, 700]))),
    (1, 2, 33, 300, 256, 256, dict(is_causal=True)),
    # weights over several key blocks, rows ending in different blocks
    (1, 2, 97, 1300, 59, 59, dict(is_causal="lower_right", window=(700, None), return_weights=True,
                                  return_lse=True)),
    (2, 1, 40, 1100, 64, 48, dict(kv_lengths=np.array([1100, 600]), return_weights=True)),
])
def test_odd_and_large_sizes(isa, dtype, B, H, L, S, E, Ev, kwargs):
    q, k, v = qkv(np.random.default_rng(L * S + E), (B, H), L, S, E, Ev, dtype)
    assert_matches_reference(sdpa(q, k, v, **kwargs), q, k, v, **kwargs)


@pytest.mark.parametrize("dim", ["B", "H", "L", "S", "E", "Ev"])
@pytest.mark.parametrize("size", [0, 1])
def test_every_dim_zero_and_one(isa, dim, size):
    shape = dict(B=2, H=3, L=5, S=6, E=4, Ev=3)
    shape[dim] = size
    B, H, L, S, E, Ev = shape.values()
    rng = np.random.default_rng(11)
    q, k, v = qkv(rng, (B, H), L, S, E, Ev)
    kwargs = dict(is_causal="lower_right", attn_mask=rng.random((H, L, S)) < 0.8,
                  kv_lengths=rng.integers(0, S + 1, size=(B,)), return_weights=True,
                  return_lse=True)
    assert_matches_reference(sdpa(q, k, v, **kwargs), q, k, v, **kwargs)


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("q_batch, kv_batch, mask_shape, kv_lengths", [
    ((2, 3), (3,), (5, 7), None),
    ((1, 3), (2, 1), (3, 1, 7), np.array([4, 7])),            # 1-D: first batch dim
    ((3,), (2, 1), (1, 5, 1), np.array([[2], [7]])),
    ((2, 1, 3), (1, 4, 1), (4, 1, 5, 7), np.array(5)),
    ((2, 3), (2, 3), (7,), np.array([[1, 2, 3], [4, 5, 6]])),  # mask of one dim
])
def test_batch_broadcasting(isa, dtype, q_batch, kv_batch, mask_shape, kv_lengths):
    rng = np.random.default_rng(12)
    q = random_array(rng, q_batch + (5, 8), dtype)
    k = random_array(rng, kv_batch + (7, 8), dtype)
    v = random_array(rng, kv_batch + (7, 6), dtype)
    for mask in (rng.random(mask_shape) < 0.7, random_array(rng, mask_shape, dtype)):
        kwargs = dict(attn_mask=mask, kv_lengths=kv_lengths, return_weights=True,
                      return_lse=True)
        assert_matches_reference(sdpa(q, k, v, **kwargs), q, k, v, **kwargs)


def test_many_batch_dimensions_that_do_not_merge(isa):
    """Broadcasting that alternates between q and k/v (and a transposed
    batch) leaves 20 / 17 batch dimensions no two of which merge."""
    rng = np.random.default_rng(17)
    q = random_array(rng, (2, 1) * 10 + (3, 4), np.float32)
    k = random_array(rng, (1, 2) * 10 + (5, 4), np.float32)
    v = random_array(rng, (1, 2) * 10 + (5, 2), np.float32)
    kwargs = dict(attn_mask=rng.random((2,) + (1, 1) * 9 + (1, 3, 5)) < 0.7, return_lse=True)
    assert_matches_reference(sdpa(q, k, v, **kwargs), q, k, v, **kwargs)
    t = random_array(rng, (2,) * 17 + (3, 4), np.float32).transpose(tuple(range(17))[::-1] + (17, 18))
    assert_matches_reference(sdpa(t, t, t), t, t, t)


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_fused_qkv_views(isa, dtype):
    B, L, H, E = 2, 37, 3, 16
    fused = random_array(np.random.default_rng(13), (B, L, 3, H, E), dtype)
    before = fused.copy()
    q, k, v = (fused[:, :, i].transpose(0, 2, 1, 3) for i in range(3))   # (B, H, L, E)
    assert q.strides[-1] == fused.itemsize and not q.flags.c_contiguous
    for kwargs in (dict(is_causal=True), dict(window=(4, 4), return_lse=True)):
        assert_matches_reference(sdpa(q, k, v, **kwargs), q, k, v, **kwargs)
    np.testing.assert_array_equal(fused, before)


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_strided_views(isa, dtype):
    rng = np.random.default_rng(14)
    big = random_array(rng, (2, 4, 30, 24), dtype)
    q = big[:, ::2, ::3, 1:9]      # row stride 3, sliced features
    k = big[::-1, 1::2, 2:, :16:2]  # reversed batch, feature stride 2
    v = big[:, 1::2, 2:, 5:11]
    kwargs = dict(is_causal="lower_right", return_weights=True)
    assert_matches_reference(sdpa(q, k, v, **kwargs), q, k, v, **kwargs)


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("layout", ["every_other_column", "transposed", "row_slice"])
def test_out_views(isa, dtype, layout):
    B, H, L, S, E, Ev = 2, 3, 9, 11, 8, 5
    q, k, v = qkv(np.random.default_rng(15), (B, H), L, S, E, Ev, dtype)
    sentinel = np.array(7.5, dtype)
    if layout == "every_other_column":
        base = np.full((B, H, L, 2 * Ev), sentinel)
        out, rest = base[..., ::2], base[..., 1::2]
    elif layout == "transposed":
        base = np.full((B, L, H, Ev), sentinel)
        out, rest = base.transpose(0, 2, 1, 3), base[:0]
    else:
        base = np.full((B, H, L + 3, Ev), sentinel)
        out, rest = base[:, :, 1:L + 1], base[:, :, [0, L + 1, L + 2]]
    result = sdpa(q, k, v, is_causal=True, out=out)
    assert result is out
    assert_matches_reference(out, q, k, v, is_causal=True)
    assert (rest == sentinel).all()


MASKS = ["none", "bool", "float"]
CAUSAL = [False, "upper_left", "lower_right"]
WINDOWS = [None, 5, (3, None), (None, 2)]


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("mask_kind", MASKS)
@pytest.mark.parametrize("is_causal", CAUSAL)
@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("with_lengths", [False, True])
def test_rule_combinations(isa, dtype, mask_kind, is_causal, window, with_lengths):
    rng = np.random.default_rng(16)
    B, H, L, S = 2, 2, 33, 47
    q, k, v = qkv(rng, (B, H), L, S, 16, 12, dtype)
    kwargs = dict(is_causal=is_causal, window=window, return_weights=True, return_lse=True)
    if mask_kind == "bool":
        kwargs["attn_mask"] = rng.random((H, L, S)) < 0.7
    elif mask_kind == "float":
        mask = random_array(rng, (B, 1, L, S), dtype)
        mask[rng.random(mask.shape) < 0.2] = -np.inf
        mask[rng.random(mask.shape) < 0.1] = finfo_min(dtype)
        kwargs["attn_mask"] = mask
    if with_lengths:
        kwargs["kv_lengths"] = np.array([S, 20])
    assert_matches_reference(sdpa(q, k, v, **kwargs), q, k, v, **kwargs)


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("hq, hkv", [(8, 2), (6, 3), (4, 1), (3, 3)])
def test_gqa(isa, dtype, hq, hkv):
    rng = np.random.default_rng(17)
    q = random_array(rng, (2, hq, 19, 16), dtype)
    k = random_array(rng, (2, hkv, 23, 16), dtype)
    v = random_array(rng, (1, hkv, 23, 8), dtype)
    kwargs = dict(enable_gqa=True, is_causal="lower_right", kv_lengths=np.array([23, 9]),
                  attn_mask=rng.random((hq, 19, 23)) < 0.8, return_weights=True,
                  return_lse=True)
    assert_matches_reference(sdpa(q, k, v, **kwargs), q, k, v, **kwargs)


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_return_forms(isa, dtype):
    q, k, v = qkv(np.random.default_rng(18), (2,), 4, 6, 8, 5, dtype)
    assert isinstance(sdpa(q, k, v), np.ndarray)
    for rw, rl, n in [(True, False, 2), (False, True, 2), (True, True, 3)]:
        result = sdpa(q, k, v, return_weights=rw, return_lse=rl)
        assert isinstance(result, tuple) and len(result) == n
        assert_matches_reference(result, q, k, v, return_weights=rw, return_lse=rl)


@pytest.mark.parametrize("mask_dtype", [np.float16, np.float64], ids=str)
def test_mask_of_another_float_dtype(isa, mask_dtype):
    rng = np.random.default_rng(19)
    q, k, v = qkv(rng, (2,), 7, 9, 8)
    mask = rng.standard_normal((7, 9)).astype(mask_dtype)
    mask[2, 3:] = -np.inf
    assert_matches_reference(sdpa(q, k, v, attn_mask=mask), q, k, v, attn_mask=mask)


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_fully_masked_rows(isa, dtype):
    rng = np.random.default_rng(20)
    q, k, v = qkv(rng, (2,), 6, 9, 8, 4, dtype)
    keep = rng.random((2, 6, 9)) < 0.6
    keep[0, 2] = False
    bias = np.where(keep, 0.0, -np.inf).astype(dtype)
    for kwargs in (dict(attn_mask=keep), dict(attn_mask=bias),
                   dict(is_causal="lower_right", kv_lengths=np.array([3, 0])),
                   dict(window=(0, 0), kv_lengths=np.array([2, 9]))):
        out, w, lse = sdpa(q, k, v, return_weights=True, return_lse=True, **kwargs)
        assert not np.isnan(out).any() and not np.isnan(w).any() and not np.isnan(lse).any()
        assert_matches_reference((out, w, lse), q, k, v, return_weights=True,
                                 return_lse=True, **kwargs)


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("where", ["query", "key", "value"])
@pytest.mark.parametrize("is_causal", [False, "upper_left", "lower_right"])
def test_nan_propagates_to_affected_rows_only(isa, dtype, where, is_causal):
    rng = np.random.default_rng(21)
    q, k, v = qkv(rng, (2,), 10, 13, 8, 6, dtype)
    target = dict(query=q, key=k, value=v)[where]
    target[1, 6, 2] = np.nan     # batch 1, row/key 6, feature 2
    kwargs = dict(is_causal=is_causal, kv_lengths=np.array([13, 12]), return_lse=True)
    # assert_close checks that NaN sits at exactly the reference's places.
    got, _ = assert_matches_reference(sdpa(q, k, v, **kwargs), q, k, v, **kwargs)
    nan_rows = np.isnan(got["out"]).any(-1)
    assert not nan_rows[0].any() and nan_rows[1, 6]
    if where == "query":
        assert nan_rows[1].sum() == 1
    elif is_causal:                  # rows that cannot see key 6 stay finite
        assert not nan_rows[1, :4].any()


def test_inputs_are_not_modified(isa):
    rng = np.random.default_rng(22)
    q, k, v = qkv(rng, (2, 3), 17, 29, 8, 8)
    mask = rng.standard_normal((3, 17, 29)).astype(np.float32)
    lengths = np.array([29, 5])
    copies = [a.copy() for a in (q, k, v, mask, lengths)]
    sdpa(q, k, v, attn_mask=mask, kv_lengths=lengths, is_causal="lower_right",
         return_weights=True, return_lse=True)
    for a, c in zip((q, k, v, mask, lengths), copies):
        np.testing.assert_array_equal(a, c)


def test_unpickled_arrays_are_accepted(isa):
    """Arrays from pickle (multiprocessing, caches) carry their own dtype
    objects, equal to but not the canonical ones."""
    import pickle

    rng = np.random.default_rng(23)
    q, k, v = qkv(rng, (2,), 5, 7, 8, 4)
    q2, k2, v2 = pickle.loads(pickle.dumps((q, k, v)))
    mask = pickle.loads(pickle.dumps(rng.random((5, 7)) < 0.5))
    for kwargs in ({}, {"attn_mask": mask, "return_lse": True}):
        got = sdpa(q2, k2, v2, **kwargs)
        assert_matches_reference(got, q, k, v, **kwargs)


@pytest.mark.parametrize("where", ["key", "value"])
@pytest.mark.parametrize("L, S, hidden", [
    (4, 7, [5, 6]),
    # Rows enough for whole register tiles, whose stores add the bias
    # (sdpa-inl.h): hidden keys in whole key panels and in the last, partial one.
    (40, 70, [3, 33, 64, 69]),
], ids=["small", "tiles"])
def test_nan_at_a_key_hidden_by_minus_inf_bias_stays_out(isa, where, L, S, hidden):
    """A -inf float bias hides its key like False in a bool mask: NaN there
    reaches no row (a finite bias, however negative, would not hide it)."""
    rng = np.random.default_rng(24)
    q, k, v = qkv(rng, (2,), L, S, 8, 3)
    bias = np.zeros(S, np.float32)
    bias[hidden] = -np.inf
    target = dict(key=k, value=v)[where]
    target[..., hidden, :] = np.nan
    got, _ = assert_matches_reference(sdpa(q, k, v, attn_mask=bias, return_lse=True), q, k, v,
                                      attn_mask=bias, return_lse=True)
    assert np.isfinite(got["out"]).all()


@pytest.fixture
def weights_in_place():
    """Probabilities kept in the weights array itself, as for rows too long
    for the per-thread scratch (a limit of 0 bytes)."""
    previous = pyattn._core._set_weights_scratch_limit(0)
    yield
    pyattn._core._set_weights_scratch_limit(previous)


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("kwargs", [
    dict(),
    dict(is_causal="lower_right", window=(700, None)),
    dict(kv_lengths=np.array([1100, 600])),
    dict(attn_mask="bool"),
    dict(attn_mask="float", is_causal=True),
])
@pytest.mark.parametrize("shape", [(2, 1, 97, 1100, 40), (3, 2, 200, 513, 16)], ids=str)
def test_weights_kept_in_place_for_long_rows(isa, dtype, kwargs, shape, request):
    """Both places for the probabilities give the same bits, and the reference's."""
    rng = np.random.default_rng(15)
    B, H, L, S, E = shape
    q, k, v = qkv(rng, (B, H), L, S, E, E, dtype)
    if kwargs.get("attn_mask") == "bool":
        kwargs = dict(kwargs, attn_mask=rng.random((L, S)) < 0.7)
    elif kwargs.get("attn_mask") == "float":
        kwargs = dict(kwargs, attn_mask=random_array(rng, (B, 1, L, S), dtype))
    if "kv_lengths" in kwargs:
        kwargs["kv_lengths"] = np.array([S, S // 2, 0][:B])
    kwargs = dict(kwargs, return_weights=True, return_lse=True)
    in_scratch = sdpa(q, k, v, **kwargs)
    request.getfixturevalue("weights_in_place")
    in_place = sdpa(q, k, v, **kwargs)
    for a, b in zip(in_scratch, in_place):
        np.testing.assert_array_equal(a, b)
    assert_matches_reference(in_place, q, k, v, **kwargs)


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("kwargs", [
    dict(),
    dict(is_causal=True),
    dict(attn_mask="float", window=(150, 40)),
    dict(kv_lengths=np.array([0, 333])),
])
def test_weights_same_bits_for_every_scratch_limit(isa, dtype, kwargs):
    """The probabilities in two scratch buffers (a row group's weights written
    while the thread's next group computes), in one, or in the weights array
    give the same bits at 1 and 2 threads -- with many row groups per thread,
    so weights are carried from one group to the next."""
    rng = np.random.default_rng(16)
    B, H, L, S, E = 2, 5, 333, 401, 24
    q, k, v = qkv(rng, (B, H), L, S, E, E, dtype)
    if kwargs.get("attn_mask") == "float":
        kwargs = dict(kwargs, attn_mask=random_array(rng, (L, S), dtype))
    kwargs = dict(kwargs, return_weights=True, return_lse=True)
    expected = sdpa(q, k, v, num_threads=1, **kwargs)
    assert_matches_reference(expected, q, k, v, **kwargs)
    for limit in (0, 1 << 16, 1 << 18, 1 << 19, 1 << 20, 1 << 21, 1 << 22):
        previous = pyattn._core._set_weights_scratch_limit(limit)
        try:
            for threads in (1, 2):
                got = sdpa(q, k, v, num_threads=threads, **kwargs)
                for a, b in zip(expected, got):
                    np.testing.assert_array_equal(a, b, err_msg=f"limit {limit} threads {threads}")
        finally:
            pyattn._core._set_weights_scratch_limit(previous)
