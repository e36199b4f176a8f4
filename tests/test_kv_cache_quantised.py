"""KVCache(kv_dtype=...): keys/values stored as bfloat16, float16 or int8
with per-position scales, read in place by the kernels.

Each stored form is checked two ways: against float64 attention over the
DEQUANTISED cache (what the kernels must compute exactly, to the float32
tolerance), and against float64 attention over the ORIGINAL keys/values
(the storage error, within the bound docs/kv_cache.md derives).
"""

import numpy as np
import pytest

import pyattn
from pyattn.kv_cache import quantize_int8

from helpers import BFLOAT16, assert_close, reference

KV_DTYPES = [
    None,
    pytest.param("bfloat16", marks=pytest.mark.skipif(BFLOAT16 is None, reason="ml_dtypes not installed")),
    "float16",
    "int8",
]


def _ref(q, k, v, lengths, **kw):
    """float64 reference over (B, Hkv, n, d) keys/values for (B, H, L, d) q."""
    kw.setdefault("is_causal", "lower_right")
    return reference.scaled_dot_product_attention(
        np.asarray(q, np.float64), np.asarray(k, np.float64), np.asarray(v, np.float64),
        kv_lengths=lengths, enable_gqa=q.shape[1] != k.shape[1], **kw)


def _original(history, n):
    """The appended keys/values, as one (B, Hkv, n, d) array each (rows
    placed at each element's positions), from a list of (k, v, counts)."""
    k0, v0, _ = history[0]
    B, Hkv = k0.shape[:2]
    K = np.zeros((B, Hkv, n, k0.shape[3]))
    V = np.zeros((B, Hkv, n, v0.shape[3]))
    pos = np.zeros(B, np.int64)
    for k, v, counts in history:
        for b in range(B):
            c = k.shape[2] if counts is None else counts[b]
            K[b, :, pos[b]:pos[b] + c] = k[b, :, :c]
            V[b, :, pos[b]:pos[b] + c] = v[b, :, :c]
            pos[b] += c
    return K, V


def _fill(rng, cache, steps, counts_first=None):
    """Appends a prompt (with per-element counts) and `steps` single rows;
    returns the history of what was appended."""
    B, Hkv, d, dv = cache.batch, cache.num_kv_heads, cache.head_dim, cache.value_dim
    history = []
    T = 0 if counts_first is None else int(max(counts_first))
    if T:
        k = rng.standard_normal((B, Hkv, T, d)).astype(cache.dtype)
        v = rng.standard_normal((B, Hkv, T, dv)).astype(cache.dtype)
        cache.append(k, v, counts=np.asarray(counts_first))
        history.append((k, v, counts_first))
    for _ in range(steps):
        k = rng.standard_normal((B, Hkv, 1, d)).astype(cache.dtype)
        v = rng.standard_normal((B, Hkv, 1, dv)).astype(cache.dtype)
        cache.append(k, v)
        history.append((k, v, None))
    return history


# B, Hkv, H, d, dv, prompt counts per element, decode steps, query rows
SHAPES = [
    (2, 2, 4, 59, 33, [37, 20], 3, 1),       # GQA, odd sizes, different lengths
    (1, 2, 6, 64, 64, [5000], 2, 1),          # split-KV decoding (few items, many keys)
    (1, 1, 1, 128, 128, [4200], 1, 1),        # one head, split-KV, whole vectors
    (2, 2, 4, 48, 40, [300, 250], 2, 40),     # prefill over a cache (packed panels, 80 folded rows: values converted)
    (3, 1, 3, 17, 9, [1, 0, 1], 2, 2),        # tiny, an element with a short history
]


@pytest.mark.parametrize("kv_dtype", KV_DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"B{s[0]}Hkv{s[1]}H{s[2]}d{s[3]}L{s[7]}")
def test_attend_matches_the_dequantised_cache(isa, kv_dtype, shape):
    B, Hkv, H, d, dv, counts, steps, L = shape
    rng = np.random.default_rng(len(counts) * 100 + d)
    cache = pyattn.KVCache(B, Hkv, d, max(counts) + steps + L + 3, value_dim=dv, kv_dtype=kv_dtype)
    _fill(rng, cache, steps, counts)
    if L > 1:  # the query rows' own keys are appended first (prefill)
        cache.append(rng.standard_normal((B, Hkv, L, d)).astype(np.float32),
                     rng.standard_normal((B, Hkv, L, dv)).astype(np.float32))
    q = rng.standard_normal((B, H, L, d)).astype(np.float32)
    K, V = cache.dequantize()
    assert K.dtype == (np.float32 if kv_dtype else cache.dtype)
    out, w, lse = cache.attend(q, return_weights=True, return_lse=True)
    want_out, want_w, want_lse = _ref(q, K, V, cache.lengths, return_weights=True, return_lse=True)
    assert out.dtype == np.float32 and out.shape == (B, H, L, dv)
    assert_close(out, want_out, np.float32, "out")
    assert_close(w, want_w, np.float32, "weights")
    assert_close(lse, want_lse, np.float32, "lse")
    # a float mask and a window through the same path
    mask = rng.standard_normal((L, cache.max_length)).astype(np.float32)
    got = cache.attend(q, attn_mask=mask, window=7)
    assert_close(got, _ref(q, K, V, cache.lengths, attn_mask=mask.astype(np.float64), window=7),
                 np.float32, "masked")


@pytest.mark.parametrize("kv_dtype", KV_DTYPES)
def test_results_are_bitwise_equal_for_any_thread_count(kv_dtype):
    rng = np.random.default_rng(5)
    cache = pyattn.KVCache(1, 2, 64, 9000, kv_dtype=kv_dtype)
    _fill(rng, cache, 2, [8192])
    for L in (1, 50):
        q = rng.standard_normal((1, 4, L, 64)).astype(np.float32)
        ref = cache.attend(q, num_threads=1)
        for t in (2, 3, 4):
            np.testing.assert_array_equal(cache.attend(q, num_threads=t), ref)


def _a_priori_bound(q, K, V, ks, vs, lengths, scale):
    """The documented int8 bound per (b, h, i, c): delta = |scale| * ||q_i||_1 *
    max_j ks_j / 2 over the visible keys; |out - out~| <= (exp(2 delta) - 1) *
    max_j |v_jc| + max_j vs_j / 2."""
    B, H, L, _ = q.shape
    Hkv = K.shape[1]
    G = H // Hkv
    bound = np.zeros((B, H, L, V.shape[-1]))
    for b in range(B):
        n = lengths[b]
        for h in range(H):
            kv = h // G
            for i in range(L):
                vis = slice(0, n - L + i + 1)
                delta = abs(scale) * np.abs(q[b, h, i].astype(np.float64)).sum() * ks[b, kv, vis].max() / 2
                bound[b, h, i] = (np.expm1(2 * delta) * np.abs(V[b, kv, vis]).max(axis=0)
                                  + vs[b, kv, vis].max() / 2)
    return bound


@pytest.mark.parametrize("kv_dtype", KV_DTYPES)
def test_storage_error_is_within_the_documented_bound(kv_dtype):
    rng = np.random.default_rng(11)
    B, Hkv, H, d = 2, 2, 4, 64
    cache = pyattn.KVCache(B, Hkv, d, 700, kv_dtype=kv_dtype)
    history = _fill(rng, cache, 4, [600, 500])
    K, V = _original(history, cache.max_length)
    Kd, Vd = (a.astype(np.float64) for a in cache.dequantize())
    q = rng.standard_normal((B, H, 1, d)).astype(np.float32)
    out = cache.attend(q)
    exact = _ref(q, K, V, cache.lengths)
    err = np.abs(out - exact)
    tol = 2e-6 + 2e-5 * np.abs(exact)  # the float32 computation itself
    scale = 1 / np.sqrt(d)
    n = cache.lengths
    valid = np.arange(cache.max_length)[None, :] < n[:, None]  # (B, positions)
    if kv_dtype == "int8":
        ks, vs = cache.key_scales[:, :, :cache.max_length], cache.value_scales[:, :, :cache.max_length]
        # per element: |x - scale * code| <= scale / 2 (plus the float32 rounding of the product)
        for X, Xd, s in ((K, Kd, ks), (V, Vd, vs)):
            e = np.abs(X - Xd)[valid[:, None, :, None].repeat(Hkv, 1).repeat(X.shape[-1], 3)]
            lim = (s[..., None] * (0.5 + 2 ** -23) + 1e-30).repeat(X.shape[-1], 3)
            assert np.all(e <= lim[valid[:, None, :, None].repeat(Hkv, 1).repeat(X.shape[-1], 3)])
        bound = _a_priori_bound(q, K, V, ks, vs, n, scale)
    else:
        # the same bound with the actual element errors (|x - x~| per element)
        bound = np.zeros_like(exact)
        for b in range(B):
            for h in range(H):
                kv = h // (H // Hkv)
                vis = slice(0, n[b])
                delta = scale * (np.abs(q[b, h, 0]) * np.abs(K[b, kv, vis] - Kd[b, kv, vis])).sum(-1).max()
                bound[b, h, 0] = (np.expm1(2 * delta) * np.abs(V[b, kv, vis]).max(0)
                                  + np.abs(V[b, kv, vis] - Vd[b, kv, vis]).max(0))
    assert np.all(err <= bound + tol), (err - bound - tol).max()
    if kv_dtype == "int8":  # the storage error is real (not a float path in disguise)
        assert err.max() > 1e-5


def test_int8_quantisation_rules():
    x = np.array([[[1.0, -2.0, 0.5], [0.0, 0.0, 0.0], [np.nan, 1.0, 2.0], [np.inf, 0.0, 1.0],
                   [127.0, -127.0, 63.4]]], np.float32)
    codes, scales = quantize_int8(x)
    assert codes.dtype == np.int8 and scales.dtype == np.float32 and scales.shape == (1, 5)
    assert scales[0, 0] == np.float32(2.0 / 127) and codes[0, 0].tolist() == [64, -127, 32]
    assert scales[0, 1] == 0 and not codes[0, 1].any()  # zeros: scale 0, codes 0 (no 0/0)
    assert np.isnan(scales[0, 2]) and np.isnan(scales[0, 3])  # inf / NaN rows: NaN scale
    assert not codes[0, 2:4].any()
    assert scales[0, 4] == 1 and codes[0, 4].tolist() == [127, -127, 63]
    big = np.array([[1e300, 1.0]])  # beyond float32's range: a NaN row too
    assert np.isnan(quantize_int8(big)[1][0])


def test_nan_positions_reach_only_the_rows_that_see_them(isa):
    rng = np.random.default_rng(3)
    cache = pyattn.KVCache(1, 1, 16, 64, kv_dtype="int8")
    k = rng.standard_normal((1, 1, 40, 16)).astype(np.float32)
    v = rng.standard_normal((1, 1, 40, 16)).astype(np.float32)
    k[0, 0, 30, 3] = np.nan  # key 30 and value 35 dequantise to rows of NaN
    v[0, 0, 35, 0] = np.inf
    cache.append(k, v)
    q = rng.standard_normal((1, 2, 40, 16)).astype(np.float32)
    out = cache.attend(q, is_causal=True)  # row i sees keys <= i
    assert np.all(np.isfinite(out[:, :, :30])) and np.all(np.isnan(out[:, :, 30:]))
    out = cache.attend(q, is_causal=True, window=2)  # rows 33..35 see neither key 30 nor value 35
    assert np.all(np.isfinite(out[:, :, 33:35])) and np.all(np.isnan(out[:, :, 35:38]))


def test_zero_rows_are_exact():
    cache = pyattn.KVCache(1, 1, 8, 4, kv_dtype="int8")
    cache.append(np.zeros((1, 1, 2, 8), np.float32), np.zeros((1, 1, 2, 8), np.float32))
    out = cache.attend(np.ones((1, 1, 1, 8), np.float32))
    assert np.array_equal(out, np.zeros((1, 1, 1, 8), np.float32))
    assert not cache.key_scales.any()


@pytest.mark.parametrize("dtype", [np.float64, np.float16, pytest.param(
    BFLOAT16, marks=pytest.mark.skipif(BFLOAT16 is None, reason="ml_dtypes not installed"))])
@pytest.mark.parametrize("kv_dtype", ["int8", "float16"])
def test_other_cache_dtypes_compute_in_float32(dtype, kv_dtype):
    rng = np.random.default_rng(2)
    cache = pyattn.KVCache(1, 2, 24, 40, dtype=dtype, kv_dtype=kv_dtype)
    cache.append(rng.standard_normal((1, 2, 30, 24)).astype(dtype), rng.standard_normal((1, 2, 30, 24)).astype(dtype))
    q = rng.standard_normal((1, 4, 3, 24)).astype(dtype)
    out, w = cache.attend(q, return_weights=True)
    assert out.dtype == dtype and w.dtype == dtype
    K, V = cache.dequantize()
    want, want_w = _ref(q, K, V, cache.lengths, return_weights=True)
    tol_dtype = np.float32 if dtype == np.float64 else dtype  # computed in float32
    assert_close(out, want, tol_dtype)
    assert_close(w, want_w, tol_dtype)
    with pytest.raises(TypeError, match="dtype"):
        cache.attend(q.astype(np.float32) if dtype != np.float32 else q.astype(np.float64))


def test_non_contiguous_query_and_out():
    rng = np.random.default_rng(8)
    cache = pyattn.KVCache(2, 1, 16, 20, kv_dtype="int8")
    cache.append(rng.standard_normal((2, 1, 12, 16)).astype(np.float32),
                 rng.standard_normal((2, 1, 12, 16)).astype(np.float32))
    big = rng.standard_normal((2, 3, 4, 32)).astype(np.float32)
    q = big[:, :, :, ::2]  # last-dim stride 2
    out = np.empty((2, 3, 4, 16), np.float32)
    got = cache.attend(q, out=out)
    assert got is out
    K, V = cache.dequantize()
    assert_close(out, _ref(q, K, V, cache.lengths), np.float32)


def test_kv_dtype_errors():
    with pytest.raises(TypeError, match="kv_dtype"):
        pyattn.KVCache(1, 1, 8, 4, kv_dtype=np.int8)
    with pytest.raises(TypeError, match="kv_dtype"):
        pyattn.KVCache(1, 1, 8, 4, kv_dtype=8)
    with pytest.raises(ValueError, match="kv_dtype"):
        pyattn.KVCache(1, 1, 8, 4, kv_dtype="int4")
    with pytest.raises(ValueError, match="kv_dtype"):
        pyattn.KVCache(1, 1, 8, 4, kv_dtype="float32")


@pytest.mark.parametrize("kv_dtype", KV_DTYPES)
def test_overflowing_append_leaves_the_cache_unchanged(kv_dtype):
    rng = np.random.default_rng(4)
    cache = pyattn.KVCache(2, 1, 8, 10, kv_dtype=kv_dtype)
    cache.append(rng.standard_normal((2, 1, 6, 8)).astype(np.float32),
                 rng.standard_normal((2, 1, 6, 8)).astype(np.float32), counts=np.array([6, 3]))
    before = [a.copy() for a in (cache.keys, cache.values, cache.lengths)]
    scales = None if cache.key_scales is None else (cache.key_scales.copy(), cache.value_scales.copy())
    for counts in (None, np.array([5, 1])):
        with pytest.raises(ValueError, match="overflows"):
            cache.append(rng.standard_normal((2, 1, 5, 8)).astype(np.float32),
                         rng.standard_normal((2, 1, 5, 8)).astype(np.float32), counts=counts)
        for a, b in zip((cache.keys, cache.values, cache.lengths), before):
            np.testing.assert_array_equal(a, b)
        if scales is not None:
            np.testing.assert_array_equal(cache.key_scales, scales[0])
            np.testing.assert_array_equal(cache.value_scales, scales[1])
    with pytest.raises(TypeError, match="dtype"):  # append takes the cache's dtype, not the storage's
        cache.append(np.zeros((2, 1, 1, 8), np.float64), np.zeros((2, 1, 1, 8), np.float64))


def test_storage_arrays_and_repr():
    cache = pyattn.KVCache(1, 2, 8, 5, kv_dtype="int8")
    assert cache.keys.dtype == np.int8 and cache.values.shape == (1, 2, 5, 8)
    assert cache.key_scales.shape == (1, 2, 5) and cache.key_scales.dtype == np.float32
    assert "kv_dtype='int8'" in repr(cache)
    half = pyattn.KVCache(1, 2, 8, 5, kv_dtype="float16")
    assert half.keys.dtype == np.float16 and half.key_scales is None
    plain = pyattn.KVCache(1, 2, 8, 5)
    assert plain.kv_dtype is None and plain.keys.dtype == np.float32


@pytest.mark.parametrize("d, S", [(64, 2048), (128, 4096)])
def test_int8_error_on_unit_normal_inputs(d, S):
    """The typical int8 error docs/kv_cache.md states (fixed seeds): the
    largest absolute output error for unit-normal inputs stays below 3e-3,
    the mean below 5e-4 (the float32 error is ~1e-7)."""
    rng = np.random.default_rng(d)
    H = 8
    k = rng.standard_normal((1, H, S, d), dtype=np.float32)
    v = rng.standard_normal((1, H, S, d), dtype=np.float32)
    cache = pyattn.KVCache(1, H, d, S, kv_dtype="int8")
    cache.append(k, v)
    q = rng.standard_normal((1, H, 4, d), dtype=np.float32)
    err = np.abs(cache.attend(q) - _ref(q, k, v, cache.lengths))
    assert err.max() < 3e-3 and err.mean() < 5e-4, (err.max(), err.mean())
    assert err.max() > 1e-4  # (quantised: not the float32 error)


@pytest.mark.parametrize("kv_dtype", ["int8", "float16"])
def test_score_variants_over_a_stored_cache(kv_dtype):
    """softcap, ALiBi and sinks take the same path over a stored-apart cache."""
    rng = np.random.default_rng(6)
    cache = pyattn.KVCache(1, 2, 32, 300, kv_dtype=kv_dtype)
    _fill(rng, cache, 2, [200])
    q = rng.standard_normal((1, 4, 3, 32)).astype(np.float32)
    slopes = np.array([0.5, 0.25, 0.125, 0.0625], np.float32)
    sinks = np.array([0.3, -1.0, 2.0, 0.0], np.float32)
    K, V = cache.dequantize()
    for kw in (dict(softcap=5.0), dict(alibi_slopes=slopes), dict(sinks=sinks)):
        got = cache.attend(q, **kw)
        f64 = {n: (a.astype(np.float64) if isinstance(a, np.ndarray) else a) for n, a in kw.items()}
        assert_close(got, _ref(q, K, V, cache.lengths, **f64), np.float32, str(kw))
