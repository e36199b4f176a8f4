"""pyattn.additive_attention (SPEC section 2): parity with the float64
reference under every ISA, Keras and Bahdanau semantics written out in
NumPy, both scoring paths of the kernel (factorised exponentials and direct
tanh), tanh accuracy, errors, thread determinism and the memory bound."""

import json
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pyattn
from helpers import (
    LOW_PRECISION,
    as_float64,
    assert_close,
    lse_dtype,
    reference,
    sdpa_cases,
    unpack,
)

additive = pyattn.additive_attention
FLOATS = [np.dtype(np.float32), np.dtype(np.float64)]
# |projection| above which the kernel leaves the factorised path for the
# direct tanh (additive-inl.h, kFactorLimit).
FACTOR_LIMIT = {np.dtype(np.float32): 20.0, np.dtype(np.float64): 170.0}


def params(rng, Dq, Dk, A, dtype, projections=True, bias=True):
    """v_a and (optionally) projection weights and bias, initialised as usual
    (~ 1/sqrt(fan-in)) so that projections and scores are of unit scale, the
    premise of SPEC section 7's tolerances."""
    kw = {}
    if projections:
        kw["w_query"] = (rng.standard_normal((Dq, A)) / np.sqrt(max(Dq, 1))).astype(dtype)
        kw["w_key"] = (rng.standard_normal((Dk, A)) / np.sqrt(max(Dk, 1))).astype(dtype)
        if bias:
            kw["bias"] = (0.5 * rng.standard_normal(A)).astype(dtype)
    return (rng.standard_normal(A) / np.sqrt(max(A, 1))).astype(dtype), kw


def run_reference(q, k, v, v_a, **kwargs):
    kwargs = dict(kwargs)
    kwargs.pop("out", None)
    kwargs.pop("num_threads", None)
    for name in ("w_query", "w_key", "bias"):
        if kwargs.get(name) is not None:
            kwargs[name] = as_float64(kwargs[name])
    mask = kwargs.get("attn_mask")
    if mask is not None and np.asarray(mask).dtype != np.bool_:
        kwargs["attn_mask"] = as_float64(mask)
    result = reference.additive_attention(as_float64(q), as_float64(k), as_float64(v),
                                          as_float64(v_a), **kwargs)
    return unpack(result, kwargs)


def check(q, k, v, v_a, **kwargs):
    """Fast path vs the float64 reference: dtypes, shapes, values (SPEC 7)."""
    arrays = [q, k, v, v_a] + [x for x in kwargs.values() if isinstance(x, np.ndarray)]
    before = [a.copy() for a in arrays]
    got = unpack(additive(q, k, v, v_a, **kwargs), kwargs)
    for a, b in zip(arrays, before):
        np.testing.assert_array_equal(a, b)  # inputs untouched
    want = run_reference(q, k, v, v_a, **kwargs)
    dtype = q.dtype
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    L, S, Ev = q.shape[-2], k.shape[-2], v.shape[-1]
    assert got["out"].dtype == dtype and got["out"].shape == batch + (L, Ev)
    assert_close(got["out"], want["out"], dtype, "out")
    if "weights" in got:
        assert got["weights"].dtype == dtype and got["weights"].shape == batch + (L, S)
        assert_close(got["weights"], want["weights"], dtype, "weights")
    if "lse" in got:
        assert got["lse"].dtype == lse_dtype(dtype) and got["lse"].shape == batch + (L,)
        assert_close(got["lse"], want["lse"], lse_dtype(dtype), "lse")
    return got, want


# ---------------------------------------------------------------------------
# Parity with the reference
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@settings(max_examples=80)
@given(data=st.data())
def test_random_cases(isa, dtype, data):
    """Every visibility rule, mask kind, broadcast and return of SPEC 1
    (sdpa_cases draws them), with Keras-style (no projection) or Bahdanau
    (projections to another size A, bias) scores."""
    case = data.draw(sdpa_cases(dtype=dtype, max_L=20, max_S=40, max_E=12, max_Ev=9, gqa=False))
    kwargs = {n: x for n, x in case.kwargs.items() if n != "scale"}
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    E = case.q.shape[-1]
    A = data.draw(st.sampled_from([E, 1, 7, 33]))
    projections = A != E or data.draw(st.booleans())
    v_a, extra = params(rng, E, E, A, dtype, projections=projections, bias=data.draw(st.booleans()))
    check(case.q, case.k, case.v, v_a, **kwargs, **extra)


@pytest.mark.parametrize("dtype", FLOATS + LOW_PRECISION, ids=str)
@pytest.mark.parametrize("batch, L, S, Dq, Dk, A, Ev, kwargs", [
    ((1,), 97, 1025, 59, 59, None, 33, {}),                               # Keras: A = Dq
    ((2, 1), 97, 300, 24, 40, 59, 17, dict(is_causal=True, return_weights=True, return_lse=True)),
    ((3,), 13, 17, 5, 9, 130, 7, dict(window=(3, 2), return_lse=True)),
    ((2,), 1, 1025, 16, 16, 128, 64, dict(is_causal="lower_right", kv_lengths=np.array([1025, 700]))),
    ((1,), 33, 5000, 8, 8, 16, 8, dict(is_causal="lower_right", return_lse=True)),  # split keys
    ((2,), 200, 1, 3, 3, 3, 2, dict(return_weights=True, return_lse=True)),
])
def test_odd_and_large_sizes(isa, dtype, batch, L, S, Dq, Dk, A, Ev, kwargs):
    rng = np.random.default_rng(L * S + Dq)
    q = rng.standard_normal(batch + (L, Dq)).astype(dtype)
    k = rng.standard_normal(batch + (S, Dk)).astype(dtype)
    v = rng.standard_normal(batch + (S, Ev)).astype(dtype)
    v_a, extra = params(rng, Dq, Dk, A or Dq, dtype, projections=A is not None)
    check(q, k, v, v_a, **kwargs, **extra)


@pytest.mark.parametrize("dim", ["B", "L", "S", "D", "A", "Ev"])
@pytest.mark.parametrize("size", [0, 1])
def test_every_dim_zero_and_one(isa, dim, size):
    shape = dict(B=2, L=5, S=6, D=4, A=3, Ev=3)
    shape[dim] = size
    B, L, S, D, A, Ev = shape.values()
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal((B, n, d)).astype(np.float32) for n, d in ((L, D), (S, D), (S, Ev)))
    v_a, extra = params(rng, D, D, A, np.float32)
    kwargs = dict(is_causal="lower_right", attn_mask=rng.random((L, S)) < 0.8,
                  kv_lengths=rng.integers(0, S + 1, size=(B,)), return_weights=True, return_lse=True)
    check(q, k, v, v_a, **kwargs, **extra)


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_broadcast_batch_and_strided_inputs(isa, dtype):
    rng = np.random.default_rng(5)
    q = rng.standard_normal((2, 1, 11, 6)).astype(dtype)
    kv = rng.standard_normal((3, 19, 16)).astype(dtype)   # fused K|V projection
    k, v = kv[..., :6], kv[..., 6:]                        # strided views
    v_a, extra = params(rng, 6, 6, 5, dtype)
    mask = rng.standard_normal((3, 11, 19)).astype(dtype)
    mask[:, :, 4] = -np.inf
    check(q, k, v, v_a, attn_mask=mask, kv_lengths=np.array([[19, 3, 12]]), return_lse=True, **extra)
    # query transposed in memory, no projections
    qt = np.ascontiguousarray(rng.standard_normal((6, 11)).astype(dtype)).T
    check(qt, k, v, v_a[:1].repeat(6))


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_out_argument(isa, dtype):
    rng = np.random.default_rng(6)
    q, k, v = (rng.standard_normal((2, n, 4)).astype(dtype) for n in (7, 9, 9))
    v_a = rng.standard_normal(4).astype(dtype)
    buf = np.full((2, 7, 8), 7.0, dtype)
    out = buf[:, :, ::2]  # a strided view
    assert additive(q, k, v, v_a, out=out) is out
    np.testing.assert_array_equal(buf[:, :, 1::2], 7.0)  # nothing outside it touched
    assert_close(out, run_reference(q, k, v, v_a)["out"], dtype)


# ---------------------------------------------------------------------------
# Both scoring paths, non-finite values
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_large_projections_mix_both_paths(isa, dtype):
    """Projections beyond the factorised path's limit (some rows, some keys)
    take the direct tanh; the rest of the same call stays factorised."""
    rng = np.random.default_rng(8)
    lim = FACTOR_LIMIT[np.dtype(dtype)]
    L, S, A = 50, 300, 9
    q = rng.standard_normal((2, L, A)).astype(dtype)
    k = rng.standard_normal((2, S, A)).astype(dtype)
    v = rng.standard_normal((2, S, 5)).astype(dtype)
    q[0, 7, 3] = 1.5 * lim                 # one row of one batch element
    q[1, 20:30] *= 2 * lim                 # a block of rows
    k[1, 100, 0] = -1.2 * lim              # one key block of one batch element
    k[1, 120] = lim - 1 - k[1, 120]        # large, still on the factorised side
    q[0, 40] = -(k[0, 11] + 0.3)           # arguments near 0 from large parts
    v_a = (rng.standard_normal(A) / 3).astype(dtype)
    check(q, k, v, v_a, is_causal="lower_right", return_weights=True, return_lse=True)


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_non_finite_projections(isa, dtype):
    """tanh(+-inf) = +-1; NaN reaches exactly the scores it is part of."""
    rng = np.random.default_rng(9)
    L, S, A = 12, 40, 4
    q = rng.standard_normal((L, A)).astype(dtype)
    k = rng.standard_normal((S, A)).astype(dtype)
    v = rng.standard_normal((S, 3)).astype(dtype)
    v_a = rng.standard_normal(A).astype(dtype)
    q[2, 1] = np.inf
    q[3, 0] = -np.inf
    q[5, 2] = np.nan
    got, _ = check(q, k, v, v_a, return_lse=True)
    assert np.isnan(got["out"][5]).all()
    assert np.isfinite(np.delete(got["out"], 5, axis=0)).all()
    k[30, 3] = np.nan  # a key only rows >= 30 - (S - L) see under lower-right causal
    got, _ = check(q, k, v, v_a, is_causal="lower_right", return_lse=True)
    first = 30 - (S - L)  # rows before it cannot see key 30
    assert first == 2 and np.isfinite(got["out"][:first]).all()
    assert np.isnan(got["out"][first:]).all()


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("L", [1, 3])
def test_decoding_rows_read_keys_in_place(isa, dtype, L):
    """Groups of fewer rows than a register tile read the keys in place,
    vectorised over A (A = 37 leaves a tail on every ISA): large keys and
    rows (direct tanh), NaN, causal lower-right, kv_lengths, weights."""
    rng = np.random.default_rng(17)
    lim = FACTOR_LIMIT[np.dtype(dtype)]
    B, S, A = 3, 300, 37
    q = rng.standard_normal((B, L, A)).astype(dtype)
    k = rng.standard_normal((B, S, A)).astype(dtype)
    v = rng.standard_normal((B, S, 4)).astype(dtype)
    k[0, 17, 36] = 2 * lim      # one key, in the a-tail
    k[0, 200, 3] = -np.inf
    q[1, 0, 5] = 1.5 * lim      # a whole row
    k[2, 40, 0] = np.nan        # only batch element 2
    v_a = (rng.standard_normal(A) / 6).astype(dtype)
    got, _ = check(q, k, v, v_a, is_causal="lower_right", kv_lengths=np.array([300, 250, 41]),
                   return_lse=True)
    # key 40 of element 2 (n = 41) is visible to its last row only
    assert np.isfinite(got["out"][:2]).all() and np.isfinite(got["out"][2, :-1]).all()
    assert np.isnan(got["out"][2, -1]).all()
    got, _ = check(q, k, v, v_a, kv_lengths=np.array([300, 250, 40]), return_weights=True)
    assert np.isfinite(got["out"]).all()


def _tanh_through_lse(q, k, dtype):
    """lse of one key with A = 1 and v_a = 1 is exactly tanh(q + k)."""
    v = np.zeros((k.shape[0], 1, 1), dtype)
    _, lse = additive(q, k, v, np.ones(1, dtype), return_lse=True)
    return lse


# "rows": many query rows per key (packed key panels); "decode": one query
# row per batch element (keys read in place).
LAYOUTS = ["rows", "decode"]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_tanh_accuracy_direct_path(isa, dtype, layout):
    """vtanh (vec_math-inl.h) through the direct path: a key of 32 (256 for
    float64) is beyond the factorised limit; q = x - key is exact for x on a
    grid, so the result is tanh(x) for known x. Documented bound: 1.25 ulp."""
    dtype = np.dtype(dtype)
    c = 32.0 if dtype == np.float32 else 256.0
    step = 2.0**-18 if dtype == np.float32 else 2.0**-44
    rng = np.random.default_rng(10)
    n = 100_000 if layout == "rows" else 20_000
    x = np.concatenate([np.round(rng.uniform(-12, 12, 2 * n) / step) * step,
                        np.round(rng.uniform(-1.2, 1.2, n) / step) * step,
                        np.arange(-200, 200) * step])
    q = (x - c).astype(dtype)
    assert np.array_equal(q.astype(np.float64) + c, x)  # exact arguments
    shape = (1, -1, 1) if layout == "rows" else (-1, 1, 1)
    got = _tanh_through_lse(q.reshape(shape), np.full((1, 1, 1), c, dtype), dtype)
    exact = np.tanh(np.longdouble(x))
    ulp = np.spacing(np.abs(exact).astype(dtype)).astype(np.longdouble)
    ulp[exact == 0] = np.finfo(dtype).tiny
    assert float(np.max(np.abs(got.ravel() - exact) / ulp)) <= 1.25
    assert got.dtype == lse_dtype(dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_tanh_accuracy_factorised_path(isa, dtype, layout):
    """tanh(qp + kp) = (z - 1)/(z + 1), z = e^{2qp} e^{2kp}: absolute error
    within 2 eps of T (measured <= 1.94 eps), for parts up to the limit."""
    dtype = np.dtype(dtype)
    lim = FACTOR_LIMIT[dtype]
    rng = np.random.default_rng(11)
    B, L = (200, 500) if layout == "rows" else (20_000, 1)
    k = rng.uniform(-lim, lim, (B, 1, 1)).astype(dtype)
    x = rng.uniform(-10, 10, (B, L, 1))
    q = np.clip(x - k, -lim, lim).astype(dtype)
    got = _tanh_through_lse(q, k, dtype)
    exact = np.tanh(np.longdouble(q[..., 0]) + np.longdouble(k[..., 0]))
    assert float(np.max(np.abs(got - exact))) <= 2 * np.finfo(dtype).eps


# ---------------------------------------------------------------------------
# Keras and Bahdanau semantics, written out directly
# ---------------------------------------------------------------------------


def keras_additive_attention(query, value, key, scale=None, query_mask=None, value_mask=None,
                             use_causal_mask=False):
    """NumPy transcription of keras.layers.AdditiveAttention's call (float64):
    scores = reduce_sum(scale * tanh(q[:, :, None] + k[:, None]), -1); masked
    scores get -1e9 (padding: value_mask False; causal: future keys); softmax;
    weights @ value; rows of a False query_mask give zeros."""
    q = query.astype(np.float64)[:, :, None, :]
    k = key.astype(np.float64)[:, None, :, :]
    s = np.tanh(q + k)
    scores = np.sum(s if scale is None else scale * s, axis=-1)
    mask = np.ones(scores.shape, bool)
    if value_mask is not None:
        mask &= value_mask[:, None, :]
    if use_causal_mask:
        mask &= np.tril(np.ones(scores.shape[-2:], bool))
    scores = scores - 1e9 * (~mask)
    w = np.exp(scores - scores.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    out = w @ value.astype(np.float64)
    if query_mask is not None:
        out = out * query_mask[..., None]
    return out, w


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("use_scale", [True, False])
def test_keras_semantics(isa, dtype, use_scale):
    rng = np.random.default_rng(12)
    B, Tq, Tv, dim = 3, 9, 14, 16
    query = rng.standard_normal((B, Tq, dim)).astype(dtype)
    value = rng.standard_normal((B, Tv, dim)).astype(dtype)
    key = rng.standard_normal((B, Tv, dim)).astype(dtype)
    scale = (rng.standard_normal(dim) / 4).astype(dtype) if use_scale else None
    v_a = scale if use_scale else np.ones(dim, dtype)
    lengths = np.array([14, 9, 3])
    value_mask = np.arange(Tv)[None, :] < lengths[:, None]
    for causal in (False, True):
        want, want_w = keras_additive_attention(query, value, key, scale, value_mask=value_mask,
                                                use_causal_mask=causal)
        for kw in (dict(attn_mask=value_mask[:, None, :]), dict(kv_lengths=lengths)):
            out, w = additive(query, key, value, v_a, is_causal=causal, return_weights=True, **kw)
            assert_close(out, want, dtype)
            assert_close(w, want_w, dtype)


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_bahdanau_with_projections(isa, dtype):
    """s = v_a . tanh(q W_q + k W_k + b) with Dq != Dk != A, against a direct
    float64 transcription."""
    rng = np.random.default_rng(13)
    B, L, S, Dq, Dk, A, Ev = 2, 15, 23, 12, 20, 31, 6
    q = rng.standard_normal((B, L, Dq)).astype(dtype)
    k = rng.standard_normal((B, S, Dk)).astype(dtype)
    v = rng.standard_normal((B, S, Ev)).astype(dtype)
    v_a, kw = params(rng, Dq, Dk, A, dtype)
    f = np.float64
    e = np.tanh((q.astype(f) @ kw["w_query"].astype(f))[:, :, None, :]
                + (k.astype(f) @ kw["w_key"].astype(f))[:, None, :, :] + kw["bias"].astype(f))
    scores = e @ v_a.astype(f)
    w = np.exp(scores - scores.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    out, lse = additive(q, k, v, v_a, return_lse=True, **kw)
    assert_close(out, w @ v.astype(f), dtype)
    m = scores.max(-1)
    assert_close(lse, m + np.log(np.exp(scores - m[..., None]).sum(-1)), lse_dtype(dtype))


@pytest.mark.parametrize("dtype", FLOATS + LOW_PRECISION, ids=str)
def test_one_sided_projection_with_bias(isa, dtype):
    """w_query = None (A = Dq) with w_key and bias given, and the reverse."""
    rng = np.random.default_rng(18)
    q = rng.standard_normal((2, 9, 6)).astype(dtype)
    k = rng.standard_normal((2, 14, 10)).astype(dtype)
    v = rng.standard_normal((2, 14, 3)).astype(dtype)
    v_a = (rng.standard_normal(6) / 3).astype(dtype)
    bias = (rng.standard_normal(6) / 2).astype(dtype)
    w_key = (rng.standard_normal((10, 6)) / 3).astype(dtype)
    check(q, k, v, v_a, w_key=w_key, bias=bias, return_lse=True)
    w_query = (rng.standard_normal((6, 10)) / 3).astype(dtype)
    check(q, k, v, v_a[:1].repeat(10), w_query=w_query, bias=bias[:1].repeat(10), is_causal=True)


# ---------------------------------------------------------------------------
# Errors (SPEC 6)
# ---------------------------------------------------------------------------


def _args(dtype=np.float32):
    rng = np.random.default_rng(14)
    q = rng.standard_normal((2, 5, 4)).astype(dtype)
    k = rng.standard_normal((2, 6, 3)).astype(dtype)
    v = rng.standard_normal((2, 6, 2)).astype(dtype)
    w_query = rng.standard_normal((4, 7)).astype(dtype)
    w_key = rng.standard_normal((3, 7)).astype(dtype)
    return q, k, v, np.ones(7, dtype), dict(w_query=w_query, w_key=w_key)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=str)
def test_parameters_of_another_float_dtype(isa, dtype):
    """v_a, w_query, w_key and bias may be of any float dtype (or a list of
    floats): they are used in the compute dtype, as the reference does."""
    q, k, v, v_a, kw = _args(dtype)
    rng = np.random.default_rng(15)
    bias = rng.standard_normal(7)
    other = np.float32 if dtype == np.float64 else np.float64
    for params in (dict(v_a=v_a.astype(other), w_query=kw["w_query"].astype(other),
                        w_key=kw["w_key"].astype(np.float16), bias=bias.astype(other)),
                   dict(v_a=[1.0] * 7, bias=list(bias), **kw)):
        got = additive(q, k, v, **params)
        want = reference.additive_attention(q, k, v, **params)
        assert got.dtype == dtype
        assert_close(got, want, dtype)


@pytest.mark.parametrize("change, exc, words", [
    (dict(w_key=np.ones((3, 6), np.float32)), ValueError, ["attention size", "7", "6", "w_key"]),
    (dict(w_key=None), ValueError, ["attention size", "w_key=None"]),
    (dict(w_query=np.ones((5, 7), np.float32)), ValueError, ["w_query", "(5, 7)", "Dq = 4"]),
    (dict(w_key=np.ones((4, 7), np.float32)), ValueError, ["w_key", "(4, 7)", "Dk = 3"]),
    (dict(w_query=np.ones(7, np.float32)), ValueError, ["w_query", "(7,)"]),
    (dict(v_a=np.ones(6, np.float32)), ValueError, ["v_a", "(6,)", "(7,)"]),
    (dict(v_a=np.ones((7, 1), np.float32)), ValueError, ["v_a", "(7, 1)"]),
    (dict(v_a=None), TypeError, ["v_a"]),
    (dict(bias=np.ones(5, np.float32)), ValueError, ["bias", "(5,)", "(7,)"]),
    (dict(w_query=np.ones((4, 7), np.int64)), TypeError, ["w_query", "int64"]),
    (dict(w_key=np.ones((3, 7), np.complex64)), TypeError, ["w_key", "complex64"]),
    (dict(bias=np.ones(7, np.int32)), TypeError, ["bias", "int32"]),
    (dict(v_a=[1] * 7), TypeError, ["v_a", "int64"]),
    (dict(v_a="ones"), TypeError, ["v_a"]),
    (dict(value=np.ones((2, 5, 2), np.float32)), ValueError, ["value", "5", "6"]),
    (dict(value=np.ones((2, 6, 2), np.float64)), TypeError, ["float64"]),
    (dict(query=np.ones((2, 5, 4), np.int64)), TypeError, ["query", "int64"]),
    (dict(is_causal="upper"), ValueError, ["is_causal"]),
    (dict(window=-1), ValueError, ["window"]),
    (dict(kv_lengths=np.array([7, 1])), ValueError, ["kv_lengths"]),
    (dict(attn_mask=np.ones((5, 6), np.int8)), TypeError, ["attn_mask"]),
    (dict(num_threads=0), ValueError, ["num_threads"]),
    (dict(num_threads=1.5), TypeError, ["num_threads"]),
    (dict(out=np.empty((2, 5, 3), np.float32)), ValueError, ["out", "shape"]),
    (dict(out=np.empty((2, 5, 2), np.float64)), TypeError, ["out", "dtype"]),
])
def test_errors_name_the_argument(change, exc, words):
    q, k, v, v_a, kw = _args()
    args = dict(query=q, key=k, value=v, v_a=v_a, **kw)
    args.update(change)
    with pytest.raises(exc) as info:
        additive(**args)
    for w in words:
        assert w in str(info.value), (w, str(info.value))


def test_out_overlapping_an_input_is_refused():
    q, k, v, v_a, kw = _args()
    buf = np.zeros((2, 5, 7), np.float32)
    with pytest.raises(ValueError, match="v_a"):
        additive(q, k, v, buf[0, 0], out=buf[:, :, :2], **kw)


# ---------------------------------------------------------------------------
# Threads
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_bitwise_identical_for_any_thread_count(isa, dtype):
    rng = np.random.default_rng(15)
    B, L, S, D, A = 2, 301, 700, 20, 40
    q = rng.standard_normal((B, L, D)).astype(dtype)
    k = rng.standard_normal((B, S, D)).astype(dtype)
    v = rng.standard_normal((B, S, 9)).astype(dtype)
    q[1, 150:160] *= 50  # some tiles on the direct path
    v_a, kw = params(rng, D, D, A, dtype)
    args = dict(attn_mask=rng.standard_normal((L, S)).astype(dtype), is_causal="lower_right",
                window=(400, None), return_weights=True, return_lse=True, **kw)
    first = additive(q, k, v, v_a, num_threads=1, **args)
    for n in (2, 3):
        again = additive(q, k, v, v_a, num_threads=n, **args)
        for a, b in zip(first, again):
            assert a.tobytes() == b.tobytes()
    # decoding: one row, keys read in place and split across threads
    q1, k1, v1 = q[:, :1], np.tile(k, (1, 8, 1)), np.tile(v, (1, 8, 1))
    first = additive(q1, k1, v1, v_a, num_threads=1, return_lse=True, **kw)
    for n in (2, 3):
        again = additive(q1, k1, v1, v_a, num_threads=n, return_lse=True, **kw)
        for a, b in zip(first, again):
            assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("rows,D,A", [(0, 5, 7), (1, 1, 1), (7, 3, 5), (97, 33, 45), (13, 0, 9), (5, 17, 0),
                                      (300, 64, 31), (200, 130, 128)])
def test_projection_on_pyattn_threads(isa, dtype, rows, D, A):
    """The projections x @ w + bias (pyattn._core.project, used by
    additive_attention): against float64 within the error bound of a sum of
    D products in the dtype ((D + 1) eps times the sum of the magnitudes),
    with and without bias, rows of x apart in memory, the same bits for any
    thread count."""
    rng = np.random.default_rng(rows * 1000 + D * 10 + A)
    x = rng.standard_normal((rows, 2 * D + 1)).astype(dtype)[:, 1:D + 1]  # rows 2D+1 apart
    w = rng.standard_normal((D, A)).astype(dtype)
    b = rng.standard_normal(A).astype(dtype)
    for bias in (None, b):
        got = [pyattn._core.project(x, w, bias, n) for n in (1, 2, 3)]
        want = x.astype(np.float64) @ w.astype(np.float64) + (0 if bias is None else bias)
        assert got[0].shape == (rows, A) and got[0].dtype == dtype
        magnitude = np.abs(x.astype(np.float64)) @ np.abs(w.astype(np.float64)) + (0 if bias is None else np.abs(b))
        assert (np.abs(got[0] - want) <= (D + 1) * np.finfo(dtype).eps * magnitude).all()
        for g in got[1:]:
            assert g.tobytes() == got[0].tobytes()


def test_concurrent_calls_from_python_threads(isa):
    rng = np.random.default_rng(16)
    cases = []
    for i in range(6):
        q, k, v = (rng.standard_normal((n, 8)).astype(np.float32) for n in (40 + i, 90, 90))
        cases.append((q, k, v, rng.standard_normal(8).astype(np.float32)))
    want = [additive(*c, num_threads=1) for c in cases]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda c: additive(*c, num_threads=2), cases * 3))
    for i, g in enumerate(got):
        assert g.tobytes() == want[i % len(cases)].tobytes()


# ---------------------------------------------------------------------------
# Memory: never O(L * S * A)
# ---------------------------------------------------------------------------

_MEMORY_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import numpy as np
    import pyattn

    def peak_kib():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def rss_kib():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])

    L = S = 2048; A = 128; Ev = 8
    rng = np.random.default_rng(0)
    q = rng.standard_normal((1, L, A)).astype(np.float32)
    k = rng.standard_normal((1, S, A)).astype(np.float32)
    v = rng.standard_normal((1, S, Ev)).astype(np.float32)
    w = (rng.standard_normal((A, A)) / np.sqrt(A)).astype(np.float32)
    v_a = rng.standard_normal(A).astype(np.float32)
    out = np.empty((1, L, Ev), np.float32)
    # Warm up (threads, dispatch, BLAS), then start the high-water mark anew.
    pyattn.additive_attention(q[:, :64], k[:, :64], v[:, :64], v_a, w_query=w, w_key=w)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        reset = True
    except OSError:
        reset = False
    base = rss_kib() if reset else peak_kib()
    kw = dict(w_query=w, w_key=w) if sys.argv[1] == "projected" else {}
    pyattn.additive_attention(q, k, v, v_a, out=out, num_threads=2, **kw)
    print(json.dumps({"extra_kib": peak_kib() - base, "reset": reset}))
""")


@pytest.mark.parametrize("variant", ["keras", "projected"])
def test_memory_does_not_grow_with_L_S_A(variant):
    """L = S = 2048, A = 128: the (L, S, A) tensor alone would be 2 GiB; the
    extra peak (RSS high-water mark in a fresh process) stays under 64 MiB."""
    # The pyattn this test imported (installed or built in place) first on the path.
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(pyattn.__file__)))
    env = dict(os.environ, PYTHONPATH=package_parent + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, variant], capture_output=True,
                         text=True, env=env, timeout=120, check=True, cwd=package_parent)
    extra_mib = json.loads(res.stdout.strip().splitlines()[-1])["extra_kib"] / 1024
    assert extra_mib < 64, f"peak memory above inputs + outputs: {extra_mib:.1f} MiB"


# ---------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------


def test_exported_with_the_reference_signature():
    import inspect

    assert "additive_attention" in pyattn.__all__
    assert inspect.signature(additive) == inspect.signature(reference.additive_attention)
    assert "(..., L, Dq)" in additive.__doc__ and "(batch..., L, S)" in additive.__doc__


@pytest.mark.parametrize("L", [1, 30])  # keys read in place / packed key panels
def test_large_v_a_stays_finite(isa, L):
    """A large v_a with projections near the factorised path's limit must not
    overflow its intermediate products (the direct tanh takes over)."""
    rng = np.random.default_rng(61)
    q = np.full((1, L, 3), 19.9, np.float32)
    k = rng.uniform(-19.9, 19.9, (1, 40, 3)).astype(np.float32)
    v = rng.standard_normal((1, 40, 2)).astype(np.float32)
    for scale in (1e4, 1e30):
        v_a = np.full(3, scale, np.float32) * np.array([1, -0.5, 0.25], np.float32)
        got, lse = pyattn.additive_attention(q, k, v, v_a, return_lse=True)
        want, want_lse = reference.additive_attention(*(as_float64(x) for x in (q, k, v, v_a)),
                                                      return_lse=True)
        assert np.isfinite(got).all() and np.isfinite(lse).all()
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)
