"""The NumPy reference against brute-force oracles written from SPEC.md.

Needs only NumPy: if the extension is not built, helpers.load_reference()
loads pyattn/reference.py on its own.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import (
    LOW_PRECISION,
    reference,
    result_batch,
    sdpa_cases,
    structural_visibility,
)

sdpa = reference.scaled_dot_product_attention
additive = reference.additive_attention
merge = reference.merge_attention_states

EXACT = dict(rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------
# Brute-force oracles: python loops over batch, rows and keys
# ---------------------------------------------------------------------------


def oracle_softmax(batch, L, S, Ev, score, value, visible):
    """score(b, i, j) -> float for visible keys; value(b, j) -> (Ev,) row."""
    out = np.zeros(batch + (L, Ev))
    weights = np.zeros(batch + (L, S))
    lse = np.full(batch + (L,), -np.inf)
    for b in np.ndindex(*batch):
        for i in range(L):
            s = {j: score(b, i, j) for j in range(S) if visible(b, i, j)}
            if not s or max(s.values()) == -math.inf:
                continue  # no visible key: zeros, lse = -inf
            m = max(s.values())
            total = math.fsum(math.exp(x - m) for x in s.values())
            lse[b + (i,)] = m + math.log(total)
            for j, x in s.items():
                w = math.exp(x - m) / total
                weights[b + (i, j)] = w
                out[b + (i,)] += w * value(b, j)
    return out, weights, lse


def oracle_visible(batch, L, S, attn_mask, is_causal, window, kv_lengths):
    structural = structural_visibility(batch, L, S, is_causal, window, kv_lengths)
    bool_mask = None
    if attn_mask is not None and attn_mask.dtype == np.bool_:
        bool_mask = np.broadcast_to(attn_mask, batch + (L, S))
    return lambda b, i, j: structural[b + (i, j)] and (
        bool_mask is None or bool_mask[b + (i, j)]
    )


def oracle_bias(batch, L, S, attn_mask):
    if attn_mask is None or attn_mask.dtype == np.bool_:
        return lambda b, i, j: 0.0
    bias = np.broadcast_to(attn_mask.astype(np.float64), batch + (L, S))
    return lambda b, i, j: float(bias[b + (i, j)])


def oracle_sdpa(q, k, v, attn_mask=None, is_causal=False, scale=None, window=None,
                kv_lengths=None, enable_gqa=False, **_):
    L, E = q.shape[-2:]
    S, Ev = v.shape[-2:]
    batch = result_batch(q, k, v, enable_gqa)
    if enable_gqa:
        group = q.shape[-3] // k.shape[-3]
        kv_batch = batch[:-1] + (k.shape[-3],)

        def kv(b):  # query head h reads kv head h // group
            return b[:-1] + (b[-1] // group,)
    else:
        kv_batch = batch

        def kv(b):
            return b
    qb = np.broadcast_to(q, batch + (L, E))
    kb = np.broadcast_to(k, kv_batch + (S, E))
    vb = np.broadcast_to(v, kv_batch + (S, Ev))
    if scale is None:
        scale = 1 / math.sqrt(E) if E else 1.0
    bias = oracle_bias(batch, L, S, attn_mask)

    def score(b, i, j):
        dot = math.fsum(float(x) * float(y) for x, y in zip(qb[b + (i,)], kb[kv(b) + (j,)]))
        return scale * dot + bias(b, i, j)

    visible = oracle_visible(batch, L, S, attn_mask, is_causal, window, kv_lengths)
    return oracle_softmax(batch, L, S, Ev, score, lambda b, j: vb[kv(b) + (j,)], visible)


def returned(result, kwargs):
    names = ["out"] + ["weights"] * bool(kwargs.get("return_weights")) + [
        "lse"] * bool(kwargs.get("return_lse"))
    return dict(zip(names, result if len(names) > 1 else (result,)))


def assert_matches_oracle(result, expected, kwargs):
    got = returned(result, kwargs)
    for name, want in zip(["out", "weights", "lse"], expected):
        if name in got:
            assert got[name].dtype == np.float64
            np.testing.assert_allclose(got[name], want, err_msg=name, **EXACT)


@settings(max_examples=250)
@given(sdpa_cases())
def test_sdpa_matches_bruteforce(case):
    result = sdpa(case.q, case.k, case.v, **case.kwargs)
    expected = oracle_sdpa(case.q, case.k, case.v, **case.kwargs)
    assert_matches_oracle(result, expected, case.kwargs)


# ---------------------------------------------------------------------------
# Visibility rules, each checked against a hand-written pattern. With q = k = 0
# every visible key has the same score, so weights = 1 / (#visible) exactly
# where visible and 0 elsewhere.
# ---------------------------------------------------------------------------


def pattern(L, S, batch=(), **kwargs):
    q = np.zeros(batch + (L, 1))
    k = np.zeros(batch + (S, 1))
    _, w = sdpa(q, k, np.zeros(batch + (S, 1)), return_weights=True, **kwargs)
    vis = w > 0
    count = vis.sum(-1, keepdims=True)
    np.testing.assert_array_equal(w, np.where(vis, 1.0 / np.maximum(count, 1), 0.0))
    return vis.astype(int)


UL_3x5 = [[1, 0, 0, 0, 0],
          [1, 1, 0, 0, 0],
          [1, 1, 1, 0, 0]]
LR_3x5 = [[1, 1, 1, 0, 0],
          [1, 1, 1, 1, 0],
          [1, 1, 1, 1, 1]]


@pytest.mark.parametrize("is_causal, expected", [
    (True, UL_3x5), ("upper_left", UL_3x5), ("lower_right", LR_3x5),
    (False, np.ones((3, 5))),
])
def test_causal_alignment(is_causal, expected):
    np.testing.assert_array_equal(pattern(3, 5, is_causal=is_causal), expected)


def test_lower_right_more_queries_than_keys():
    # p(i) = i + S - L = i - 2: the first two rows see nothing.
    np.testing.assert_array_equal(
        pattern(4, 2, is_causal="lower_right"), [[0, 0], [0, 0], [1, 0], [1, 1]]
    )


def test_lower_right_aligns_to_each_batch_elements_kv_length():
    got = pattern(2, 5, batch=(3,), is_causal="lower_right", kv_lengths=np.array([5, 3, 1]))
    np.testing.assert_array_equal(got, [
        [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]],   # n = 5: p = 3, 4
        [[1, 1, 0, 0, 0], [1, 1, 1, 0, 0]],   # n = 3: p = 1, 2
        [[0, 0, 0, 0, 0], [1, 0, 0, 0, 0]],   # n = 1: p = -1, 0
    ])
    # Upper-left ignores n for the position, n still hides keys j >= n.
    got = pattern(2, 5, batch=(3,), is_causal=True, kv_lengths=np.array([5, 3, 1]))
    np.testing.assert_array_equal(got, [
        [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0]],
        [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0]],
        [[1, 0, 0, 0, 0], [1, 0, 0, 0, 0]],
    ])


@pytest.mark.parametrize("window, is_causal, expected", [
    # int w == (w, 0): i - 1 <= j <= i
    (1, False, [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 1, 1, 0, 0], [0, 0, 1, 1, 0]]),
    ((1, 1), False, [[1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1]]),
    ((None, 0), False, [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0]]),
    ((0, None), False, [[1, 1, 1, 1, 1], [0, 1, 1, 1, 1], [0, 0, 1, 1, 1], [0, 0, 0, 1, 1]]),
    ((None, None), False, np.ones((4, 5))),
    ((0, 0), False, [[1, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 1, 0]]),
    # window follows the lower-right alignment p(i) = i + 1
    ((1, None), "lower_right",
     [[1, 1, 0, 0, 0], [0, 1, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 1, 1]]),
    ((0, 2), "lower_right",
     [[0, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 1]]),
    ((None, 1), True, [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0]]),
])
def test_window(window, is_causal, expected):
    np.testing.assert_array_equal(pattern(4, 5, window=window, is_causal=is_causal), expected)


def test_kv_lengths_hide_keys_at_and_after_n():
    got = pattern(2, 4, batch=(3,), kv_lengths=np.array([0, 2, 4]))
    np.testing.assert_array_equal(got, [[[0] * 4] * 2, [[1, 1, 0, 0]] * 2, [[1] * 4] * 2])


def test_kv_lengths_1d_applies_to_first_batch_dim():
    q, k, v = (np.random.default_rng(0).standard_normal((2, 3, n, 4)) for n in (5, 6, 6))
    got = sdpa(q, k, v, kv_lengths=np.array([2, 6]))
    want = sdpa(q, k, v, kv_lengths=np.array([[2], [6]]))
    np.testing.assert_array_equal(got, want)
    assert not np.allclose(got[0], got[1])
    # Length 1 applies to all; a length equal to dim -1 (3) but not dim 0 (2) is refused.
    np.testing.assert_array_equal(sdpa(q, k, v, kv_lengths=np.array([6])), sdpa(q, k, v))
    with pytest.raises(ValueError, match="kv_lengths"):
        sdpa(q, k, v, kv_lengths=np.array([1, 2, 3]))
    # With a single batch dim, 1-D is the usual per-element form.
    got = sdpa(q[0], k[0], v[0], kv_lengths=np.array([1, 2, 3]))
    for h, n in enumerate([1, 2, 3]):
        np.testing.assert_allclose(got[h], sdpa(q[0, h], k[0, h, :n], v[0, h, :n]), **EXACT)


def test_kv_lengths_broadcast_and_extremes():
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((2, 3, n, 4)) for n in (5, 6, 6))
    full = sdpa(q, k, v)
    np.testing.assert_array_equal(sdpa(q, k, v, kv_lengths=np.array(6)), full)
    np.testing.assert_array_equal(sdpa(q, k, v, kv_lengths=np.full((2, 3), 6)), full)
    out, lse = sdpa(q, k, v, kv_lengths=np.zeros((3,), np.int32).reshape(1, 3), return_lse=True)
    np.testing.assert_array_equal(out, 0.0)
    np.testing.assert_array_equal(lse, -np.inf)
    with pytest.raises(ValueError, match="kv_lengths"):
        sdpa(q, k, v, kv_lengths=np.full((2, 3), 7))
    with pytest.raises(ValueError, match="kv_lengths"):
        sdpa(q, k, v, kv_lengths=np.full((1, 2, 3), 6))   # would add a batch dim
    with pytest.raises(TypeError, match="kv_lengths"):
        sdpa(q, k, v, kv_lengths=np.full((2, 3), 6.0))


# ---------------------------------------------------------------------------
# GQA, masks, empty dims
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("hq, hkv", [(4, 2), (6, 3), (3, 1), (2, 2)])
def test_gqa_head_order(hq, hkv):
    rng = np.random.default_rng(2)
    q = rng.standard_normal((2, hq, 5, 4))
    k = rng.standard_normal((1, hkv, 7, 4))   # batch dim 0 broadcasts
    v = rng.standard_normal((1, hkv, 7, 3))
    got = sdpa(q, k, v, enable_gqa=True, is_causal="lower_right")
    assert got.shape == (2, hq, 5, 3)
    for b in range(2):
        for h in range(hq):
            want = sdpa(q[b, h], k[0, h // (hq // hkv)], v[0, h // (hq // hkv)],
                        is_causal="lower_right")
            np.testing.assert_allclose(got[b, h], want, **EXACT)
    if hkv not in (1, hq):
        with pytest.raises(ValueError):
            sdpa(q, k, v)   # without enable_gqa dim -3 must broadcast


def test_gqa_rejects_non_dividing_heads():
    q, k = np.zeros((3, 2, 4)), np.zeros((2, 2, 4))
    with pytest.raises(ValueError):
        sdpa(q, k, k, enable_gqa=True)
    with pytest.raises(ValueError):
        sdpa(q[0], k[0], k[0], enable_gqa=True)   # needs 3 dims


def test_bool_and_float_masks():
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal((2, n, 4)) for n in (5, 6, 6))
    plain = sdpa(q, k, v)
    np.testing.assert_array_equal(sdpa(q, k, v, attn_mask=np.ones((5, 6), bool)), plain)
    np.testing.assert_array_equal(sdpa(q, k, v, attn_mask=np.zeros((6,), np.float32)), plain)
    keep = rng.random((2, 5, 6)) < 0.6
    keep[..., 0] = True
    bias = np.where(keep, 0.0, -np.inf)
    np.testing.assert_allclose(sdpa(q, k, v, attn_mask=keep), sdpa(q, k, v, attn_mask=bias),
                               **EXACT)
    # A float mask is added to the *scaled* scores.
    bias = rng.standard_normal((5, 6))
    _, w = sdpa(q, k, v, attn_mask=bias, scale=0.7, return_weights=True)
    s = 0.7 * q @ k.swapaxes(-1, -2) + bias
    np.testing.assert_allclose(w, np.exp(s) / np.exp(s).sum(-1, keepdims=True), **EXACT)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_finfo_min_counts_as_visible(dtype):
    v = np.arange(12.0).reshape(4, 3)
    q, k = np.ones((2, 5)), np.ones((4, 5))
    mask = np.full((2, 4), np.finfo(dtype).min, dtype)
    mask[1, 1:] = -np.inf
    out, lse = sdpa(q, k, v, attn_mask=mask, return_lse=True)
    np.testing.assert_allclose(out, [v.mean(0), v[0]], **EXACT)
    assert np.isfinite(lse).all()
    mask[0] = -np.inf   # all -inf: no visible key
    out, lse = sdpa(q, k, v, attn_mask=mask, return_lse=True)
    np.testing.assert_array_equal(out[0], 0.0)
    assert lse[0] == -np.inf


def test_mask_shape_and_dtype_rules():
    q, k = np.zeros((2, 3, 4)), np.zeros((2, 5, 4))
    assert sdpa(q, k, k, attn_mask=np.ones((1, 5), bool)).shape == (2, 3, 4)
    with pytest.raises(ValueError, match="attn_mask"):
        sdpa(q, k, k, attn_mask=np.ones((1, 2, 3, 5), bool))   # adds a batch dim
    with pytest.raises(ValueError, match="attn_mask"):
        sdpa(q, k, k, attn_mask=np.ones((3, 3, 5), bool))
    for dtype in (np.int32, np.uint8, np.complex64, object):
        with pytest.raises(TypeError, match="attn_mask"):
            sdpa(q, k, k, attn_mask=np.ones((3, 5), dtype))


def test_zero_feature_size_gives_mean_of_visible_values():
    rng = np.random.default_rng(4)
    v = rng.standard_normal((6, 3))
    out, lse = sdpa(np.zeros((4, 0)), np.zeros((6, 0)), v, is_causal=True, return_lse=True)
    np.testing.assert_allclose(out, [v[: i + 1].mean(0) for i in range(4)], **EXACT)
    np.testing.assert_allclose(lse, np.log(np.arange(1, 5)), **EXACT)
    bias = rng.standard_normal((4, 6))
    _, w = sdpa(np.zeros((4, 0)), np.zeros((6, 0)), v, attn_mask=bias, return_weights=True)
    np.testing.assert_allclose(w, np.exp(bias) / np.exp(bias).sum(-1, keepdims=True), **EXACT)


def test_empty_dims():
    out, w, lse = sdpa(np.ones((2, 3, 4)), np.ones((2, 0, 4)), np.ones((2, 0, 5)),
                       return_weights=True, return_lse=True)
    assert (out.shape, w.shape, lse.shape) == ((2, 3, 5), (2, 3, 0), (2, 3))
    np.testing.assert_array_equal(out, 0.0)
    np.testing.assert_array_equal(lse, -np.inf)
    out, w = sdpa(np.ones((2, 0, 4)), np.ones((2, 6, 4)), np.ones((2, 6, 5)), return_weights=True)
    assert (out.shape, w.shape) == ((2, 0, 5), (2, 0, 6))
    out = sdpa(np.ones((0, 1, 3, 4)), np.ones((2, 6, 4)), np.ones((2, 6, 5)))
    assert out.shape == (0, 2, 3, 5)


def test_fully_masked_rows_are_zero_never_nan():
    rng = np.random.default_rng(5)
    q, k, v = (rng.standard_normal((n, 4)) for n in (3, 5, 5))
    keep = np.ones((3, 5), bool)
    keep[1] = False
    out, w, lse = sdpa(q, k, v, attn_mask=keep, return_weights=True, return_lse=True)
    np.testing.assert_array_equal(out[1], 0.0)
    np.testing.assert_array_equal(w[1], 0.0)
    assert lse[1] == -np.inf
    np.testing.assert_allclose(out[[0, 2]], sdpa(q[[0, 2]], k, v), **EXACT)


def test_nan_propagates_to_affected_rows_only():
    rng = np.random.default_rng(6)
    q, k, v = (rng.standard_normal((n, 4)) for n in (4, 6, 6))
    kw = dict(is_causal="lower_right")   # row i sees keys j <= i + 2
    q1 = q.copy()
    q1[1, 0] = np.nan
    assert_nan_rows(sdpa(q1, k, v, **kw), [1])
    k1 = k.copy()
    k1[4, 2] = np.nan
    assert_nan_rows(sdpa(q, k1, v, **kw), [2, 3])
    v1 = v.copy()
    v1[5, 3] = np.nan
    out = sdpa(q, k, v1, **kw)
    assert_nan_rows(out, [3])
    assert np.isnan(out[3]).tolist() == [False, False, False, True]
    np.testing.assert_array_equal(sdpa(q, k1, v1, kv_lengths=np.array(4)),
                                  sdpa(q, k, v, kv_lengths=np.array(4)))


def assert_nan_rows(out, rows):
    assert np.flatnonzero(np.isnan(out).any(-1)).tolist() == rows


# ---------------------------------------------------------------------------
# dtypes, out=, argument checks
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.dtype(np.float32), np.dtype(np.float64)] + LOW_PRECISION,
                         ids=str)
def test_dtypes_compute_in_float64(dtype):
    rng = np.random.default_rng(7)
    q, k, v = (rng.standard_normal((2, n, 8)).astype(dtype) for n in (3, 9, 9))
    out, w, lse = sdpa(q, k, v, return_weights=True, return_lse=True)
    o64, w64, l64 = sdpa(*(a.astype(np.float64) for a in (q, k, v)),
                         return_weights=True, return_lse=True)
    assert out.dtype == dtype and w.dtype == dtype
    assert lse.dtype == (np.float64 if dtype == np.float64 else np.float32)
    np.testing.assert_array_equal(out, o64.astype(dtype))
    np.testing.assert_array_equal(w, w64.astype(dtype))
    np.testing.assert_array_equal(lse, l64.astype(lse.dtype))


def test_out_argument():
    rng = np.random.default_rng(8)
    q, k, v = (rng.standard_normal((2, n, 4)) for n in (3, 5, 5))
    base = np.full((2, 3, 8), 7.0)
    out = base[..., ::2]
    assert sdpa(q, k, v, out=out, num_threads=3) is out
    np.testing.assert_array_equal(out, sdpa(q, k, v))
    np.testing.assert_array_equal(base[..., 1::2], 7.0)
    with pytest.raises(TypeError, match="out"):
        sdpa(q, k, v, out=np.empty((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match="out"):
        sdpa(q, k, v, out=np.empty((2, 3, 5)))
    with pytest.raises(ValueError, match="out"):
        sdpa(q, k, v, out=q)


def test_argument_checks():
    q = np.zeros((3, 4))
    for bad, exc, name in [
        (dict(is_causal="yes"), ValueError, "is_causal"),
        (dict(is_causal=1.0), TypeError, "is_causal"),
        (dict(window=-1), ValueError, "window"),
        (dict(window=(1, -2)), ValueError, "window"),
        (dict(window=1.5), TypeError, "window"),
        (dict(scale=np.inf), ValueError, "scale"),
        (dict(scale="1"), TypeError, "scale"),
        (dict(num_threads=0), ValueError, "num_threads"),
        (dict(num_threads=2.0), TypeError, "num_threads"),
    ]:
        with pytest.raises(exc, match=name):
            sdpa(q, q, q, **bad)
    with pytest.raises(TypeError, match="query"):
        sdpa(q.astype(int), q, q)
    with pytest.raises(TypeError, match="key"):
        sdpa(q, q.astype(np.float32), q)
    with pytest.raises(ValueError, match="key"):
        sdpa(q, np.zeros((3, 5)), q)


# ---------------------------------------------------------------------------
# merge_attention_states
# ---------------------------------------------------------------------------


def explicit_mask(case):
    """The case's causal/window/kv_lengths rules and mask as one explicit mask."""
    kw = case.kwargs
    batch = result_batch(case.q, case.k, case.v, kw.get("enable_gqa", False))
    L, S = case.q.shape[-2], case.k.shape[-2]
    vis = structural_visibility(batch, L, S, kw.get("is_causal", False), kw.get("window"),
                                kw.get("kv_lengths"))
    mask = kw.get("attn_mask")
    if mask is None:
        return vis
    if mask.dtype == np.bool_:
        return vis & mask
    return np.where(vis, mask.astype(np.float64), -np.inf)


@settings(max_examples=150)
@given(sdpa_cases(use_finfo_min=False, returns=False), st.data())
def test_merge_of_chunks_equals_attention_over_all_keys(case, data):
    # (finfo.min is left out: at |lse| ~ 1e308 float64 cannot hold log(n).)
    out, lse = sdpa(case.q, case.k, case.v, return_lse=True, **case.kwargs)
    mask = explicit_mask(case)
    same = dict(scale=case.kwargs.get("scale"), enable_gqa=case.kwargs.get("enable_gqa", False))
    np.testing.assert_allclose(
        sdpa(case.q, case.k, case.v, attn_mask=mask, **same), out, **EXACT)

    S = case.k.shape[-2]
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, S - 1)), max_size=3)))
    bounds = [0] + [c for c in cuts if c < S] + [S]
    parts = [
        sdpa(case.q, case.k[..., a:b, :], case.v[..., a:b, :], attn_mask=mask[..., a:b],
             return_lse=True, **same)
        for a, b in zip(bounds[:-1], bounds[1:])
    ]
    m_out, m_lse = merge([p[0] for p in parts], [p[1] for p in parts])
    np.testing.assert_allclose(m_lse, lse, **EXACT)
    np.testing.assert_allclose(m_out, out, **EXACT)


def test_merge_formula_and_empty_parts():
    rng = np.random.default_rng(9)
    o1, o2 = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 4))
    l1, l2 = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    out, lse = merge([o1, o2], [l1, l2])
    want_lse = np.logaddexp(l1, l2)
    np.testing.assert_allclose(lse, want_lse, **EXACT)
    np.testing.assert_allclose(
        out, np.exp(l1 - want_lse)[..., None] * o1 + np.exp(l2 - want_lse)[..., None] * o2,
        **EXACT)
    # A part with lse = -inf contributes nothing, even NaN outputs.
    l2[0, 1] = -np.inf
    o2[0, 1] = np.nan
    out, lse = merge([o1, o2], [l1, l2])
    np.testing.assert_allclose(out[0, 1], o1[0, 1], **EXACT)
    assert lse[0, 1] == l1[0, 1]
    # All parts -inf: zeros and -inf.
    l1[1, 2] = l2[1, 2] = -np.inf
    o1[1, 2] = np.nan
    out, lse = merge([o1, o2], [l1, l2])
    np.testing.assert_array_equal(out[1, 2], 0.0)
    assert lse[1, 2] == -np.inf
    assert not np.isnan(out).any()
    # One part is returned as is.
    out, lse = merge([o1[0]], [l1[0]])
    np.testing.assert_array_equal(out, o1[0])
    np.testing.assert_array_equal(lse, l1[0])
    with pytest.raises(ValueError):
        merge([], [])
    with pytest.raises(ValueError):
        merge([o1, o2], [l1])


# ---------------------------------------------------------------------------
# additive_attention
# ---------------------------------------------------------------------------


def oracle_additive(q, k, v, v_a, w_query=None, w_key=None, bias=None, attn_mask=None,
                    is_causal=False, window=None, kv_lengths=None, **_):
    L, S, Ev = q.shape[-2], k.shape[-2], v.shape[-1]
    batch = result_batch(q, k, v)
    A = len(v_a)
    qb = np.broadcast_to(q, batch + q.shape[-2:])
    kb = np.broadcast_to(k, batch + k.shape[-2:])
    vb = np.broadcast_to(v, batch + v.shape[-2:])

    def project(x, w):
        if w is None:
            return [float(t) for t in x]
        return [math.fsum(float(x[d]) * float(w[d, a]) for d in range(len(x))) for a in range(A)]

    b_ = [0.0] * A if bias is None else [float(t) for t in bias]
    mask_bias = oracle_bias(batch, L, S, attn_mask)

    def score(b, i, j):
        qp, kp = project(qb[b + (i,)], w_query), project(kb[b + (j,)], w_key)
        s = math.fsum(float(v_a[a]) * math.tanh(qp[a] + kp[a] + b_[a]) for a in range(A))
        return s + mask_bias(b, i, j)

    visible = oracle_visible(batch, L, S, attn_mask, is_causal, window, kv_lengths)
    return oracle_softmax(batch, L, S, Ev, score, lambda b, j: vb[b + (j,)], visible)


@st.composite
def additive_cases(draw):
    case = draw(sdpa_cases(max_L=5, max_S=6, max_E=4, max_Ev=3, max_rank=2, gqa=False))
    case.kwargs.pop("scale", None)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    Dq = case.q.shape[-1]
    form = draw(st.sampled_from(["keras", "both", "query", "key"]))
    A = Dq if form in ("keras", "key") else draw(st.integers(0, 4))
    if form == "both":
        case.k = rng.standard_normal(case.k.shape[:-1] + (draw(st.integers(0, 4)),))
        case.kwargs["w_key"] = rng.standard_normal((case.k.shape[-1], A))
    if form in ("both", "query"):
        case.kwargs["w_query"] = rng.standard_normal((Dq, A))
    if form == "query":
        case.k = rng.standard_normal(case.k.shape[:-1] + (A,))
    if form == "key":
        case.kwargs["w_key"] = rng.standard_normal((Dq, A))
    if draw(st.booleans()):
        case.kwargs["bias"] = rng.standard_normal(A)
    case.kwargs["v_a"] = rng.standard_normal(A)
    return case


@settings(max_examples=150)
@given(additive_cases())
def test_additive_matches_bruteforce(case):
    kwargs = dict(case.kwargs)
    v_a = kwargs.pop("v_a")
    result = additive(case.q, case.k, case.v, v_a, **kwargs)
    expected = oracle_additive(case.q, case.k, case.v, v_a, **kwargs)
    assert_matches_oracle(result, expected, kwargs)


def keras_additive_attention(query, value, key, scale, value_mask, use_causal_mask):
    """NumPy transcription of keras.layers.AdditiveAttention(use_scale=True):
    _calculate_scores, then Attention._apply_scores (mask by subtracting 1e9)."""
    q_reshaped = np.expand_dims(query, axis=-2)
    k_reshaped = np.expand_dims(key, axis=-3)
    scores = np.sum(scale * np.tanh(q_reshaped + k_reshaped), axis=-1)
    scores_mask = np.expand_dims(value_mask, axis=-2)
    if use_causal_mask:
        ones = np.ones((1, scores.shape[-2], scores.shape[-1]), dtype=np.int32)
        row_index = np.cumsum(ones, axis=-2)
        col_index = np.cumsum(ones, axis=-1)
        scores_mask = scores_mask & (row_index >= col_index)
    scores = scores - 1.0e9 * np.logical_not(scores_mask).astype(scores.dtype)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights = weights / weights.sum(-1, keepdims=True)
    return weights @ value, weights


@pytest.mark.parametrize("use_causal_mask", [False, True])
def test_additive_is_keras_additive_attention(use_causal_mask):
    rng = np.random.default_rng(10)
    B, Tq, Tv, dim = 2, 5, 7, 6
    query, key = rng.standard_normal((B, Tq, dim)), rng.standard_normal((B, Tv, dim))
    value = rng.standard_normal((B, Tv, 4))
    scale = rng.standard_normal(dim)
    value_mask = rng.random((B, Tv)) < 0.7
    value_mask[:, 0] = True
    want_out, want_w = keras_additive_attention(query, value, key, scale, value_mask,
                                                use_causal_mask)
    out, w = additive(query, key, value, scale, attn_mask=value_mask[:, None, :],
                      is_causal=use_causal_mask, return_weights=True)
    np.testing.assert_allclose(out, want_out, **EXACT)
    np.testing.assert_allclose(w, want_w, **EXACT)
    # Without use_scale Keras' scale is 1: v_a = ones.
    out = additive(query, key, value, np.ones(dim), attn_mask=value_mask[:, None, :])
    np.testing.assert_allclose(
        out, keras_additive_attention(query, value, key, 1.0, value_mask, False)[0], **EXACT)


def test_additive_checks_weight_shapes():
    q, k = np.zeros((3, 4)), np.zeros((5, 6))
    with pytest.raises(ValueError):
        additive(q, k, k, np.ones(4))    # A differs: 4 vs 6
    with pytest.raises(ValueError, match="v_a"):
        additive(q, k, k, np.ones(3), w_query=np.zeros((4, 6)))
    with pytest.raises(ValueError, match="bias"):
        additive(q, k, k, np.ones(6), w_query=np.zeros((4, 6)), bias=np.zeros(5))
    assert additive(q, k, k, np.ones(2), w_query=np.zeros((4, 2)),
                    w_key=np.zeros((6, 2))).shape == (3, 6)

