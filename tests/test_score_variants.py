"""Score variants of current models: softcap (Gemma 2), ALiBi slopes (BLOOM,
MPT) and attention sinks (gpt-oss), alone and combined with every other
option, against the float64 reference, bitwise between the C++ fast path
and the general Python path and across thread counts (also through split-KV
decoding, where the sink must be counted once at the merge), against torch's
eager formulas, and merge_attention_states with sinks."""

import numpy as np
import pytest

import pyattn
from helpers import BFLOAT16, LOW_PRECISION, assert_close, assert_matches_reference, qkv, reference, rows_apart

sdpa = pyattn.scaled_dot_product_attention

VARIANTS = {
    "softcap": lambda H: dict(softcap=2.5),
    "alibi": lambda H: dict(alibi_slopes=_slopes(H)),
    "sinks": lambda H: dict(sinks=_sinks(H)),
    "softcap+alibi": lambda H: dict(softcap=1.5, alibi_slopes=_slopes(H)),
    "all": lambda H: dict(softcap=4.0, alibi_slopes=_slopes(H), sinks=_sinks(H)),
}


def _slopes(H, dtype=np.float32):
    """ALiBi's geometric slopes 2^(-8 h / H), h = 1..H (Press et al.)."""
    return (2.0 ** (-8.0 * np.arange(1, H + 1) / H)).astype(dtype)


def _sinks(H, dtype=np.float32):
    return np.linspace(-2.0, 3.0, H).astype(dtype)


def other_layout(q, k, v, **kwargs):
    """The same call on q, k, v laid out otherwise in memory (rows not
    unit-stride: copied by the core first): the same bits."""
    return sdpa(rows_apart(q), rows_apart(k), rows_apart(v), **kwargs)


def assert_bitwise(a, b):
    a = a if isinstance(a, tuple) else (a,)
    b = b if isinstance(b, tuple) else (b,)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def check(q, k, v, **kwargs):
    """Reference, general path (bitwise) and thread counts (bitwise)."""
    got = sdpa(q, k, v, **kwargs)
    assert_matches_reference(got, q, k, v, **kwargs)
    assert_bitwise(got, other_layout(q, k, v, **kwargs))
    return got


# ---------------------------------------------------------------------------
# Against the reference
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=str)
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("mask", ["none", "bool", "float", "float-strided"])
@pytest.mark.parametrize("is_causal", [False, "upper_left", "lower_right"], ids=str)
def test_odd_sizes_every_mask_and_alignment(isa, dtype, variant, mask, is_causal):
    """L=97, S=1025, E=59: every tail of the tiles, with weights and lse."""
    rng = np.random.default_rng(101)
    H = 2
    q, k, v = qkv(rng, (1, H), 97, 1025, 59, 33, dtype)
    kwargs = dict(VARIANTS[variant](H), is_causal=is_causal, return_lse=True,
                  return_weights=is_causal == "lower_right",
                  kv_lengths=np.array([1000]) if is_causal == "lower_right" else None)
    if mask == "bool":
        kwargs["attn_mask"] = rng.random((97, 1025)) < 0.8
    elif mask.startswith("float"):
        bias = np.where(rng.random((H, 97, 1025)) < 0.1, -np.inf, rng.standard_normal((H, 97, 1025)))
        bias = bias.astype(dtype)
        kwargs["attn_mask"] = bias if mask == "float" else np.asfortranarray(bias)  # not unit-stride rows
    check(q, k, v, **kwargs)


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("window", [3, (40, 7), (None, 0), (0, None)], ids=str)
def test_windows_and_threads(isa, variant, window):
    rng = np.random.default_rng(102)
    q, k, v = qkv(rng, (2, 3), 70, 300, 24, 16)
    kwargs = dict(VARIANTS[variant](3), window=window, is_causal="lower_right", return_lse=True,
                  kv_lengths=np.array([300, 111]))
    got = check(q, k, v, **kwargs)
    for n in (1, 2, 3):
        assert_bitwise(got, sdpa(q, k, v, num_threads=n, **kwargs))


@pytest.mark.parametrize("L, S, E", [(0, 5, 4), (3, 0, 4), (3, 5, 0), (1, 1, 1), (1, 0, 0), (0, 0, 0)])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_empty_and_one_sizes(isa, L, S, E, variant):
    rng = np.random.default_rng(103)
    q, k, v = qkv(rng, (2, 2), L, S, E, 3)
    check(q, k, v, **VARIANTS[variant](2), return_lse=True, return_weights=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=str)
def test_rows_without_keys_give_the_sink(isa, dtype):
    """kv_lengths 0, and rows a window or mask hides entirely: out 0,
    weights 0, lse = sink (-inf where the sink is -inf)."""
    rng = np.random.default_rng(104)
    q, k, v = qkv(rng, (3, 2), 6, 40, 8, 5, dtype)
    sinks = np.array([[0.5, -np.inf]], dtype)
    mask = np.ones((6, 40), bool)
    mask[2] = False
    kwargs = dict(sinks=sinks, kv_lengths=np.array([0, 40, 17]), attn_mask=mask, return_weights=True,
                  return_lse=True, alibi_slopes=np.array([0.25, 0.5], dtype))
    out, w, lse = check(q, k, v, **kwargs)
    assert np.all(out[0] == 0) and np.all(w[0] == 0)
    assert np.all(lse[0, 0] == dtype(0.5)) and np.all(lse[0, 1] == -np.inf)
    assert np.all(out[1:, :, 2] == 0) and np.all(lse[1:, 0, 2] == dtype(0.5))
    # a row that sees keys: its weights sum to less than 1 (the sink takes its share)
    total = w[1, 0].sum(axis=-1)
    want = 1 / (1 + np.exp(0.5 - reference.scaled_dot_product_attention(
        q[1, 0].astype(np.float64), k[1, 0].astype(np.float64), v[1, 0].astype(np.float64),
        attn_mask=mask, alibi_slopes=np.array(0.25), return_lse=True)[1]))
    np.testing.assert_allclose(total[mask.any(-1)], want[mask.any(-1)], rtol=1e-5)


@pytest.mark.parametrize("shape", [(4,), (2, 4), (1, 4), (1,), (), (2, 1)], ids=str)
@pytest.mark.parametrize("which", ["alibi_slopes", "sinks"])
def test_broadcast_shapes(isa, shape, which):
    rng = np.random.default_rng(105)
    q, k, v = qkv(rng, (2, 4), 9, 30, 16, 8)
    x = rng.uniform(0.05, 1.0, size=shape).astype(np.float32)
    check(q, k, v, **{which: x}, is_causal=True, return_lse=True)


def test_non_contiguous_views(isa):
    """Strided slopes/sinks (every other element, reversed), transposed
    q heads, sliced K/V buffers."""
    rng = np.random.default_rng(106)
    keys = rng.standard_normal((2, 3, 100, 16)).astype(np.float32)
    values = rng.standard_normal((2, 3, 100, 8)).astype(np.float32)
    q = rng.standard_normal((2, 11, 3, 16)).astype(np.float32).transpose(0, 2, 1, 3)
    slopes = rng.uniform(0.01, 0.5, size=(2, 6)).astype(np.float32)[:, ::2]
    sinks = rng.standard_normal(6).astype(np.float32)[::-2]
    check(q, keys[:, :, :57], values[:, :, :57], alibi_slopes=slopes, sinks=sinks, softcap=3.0,
          is_causal="lower_right", return_lse=True, return_weights=True)


@pytest.mark.parametrize("slope_shape", [(8,), (2, 8), (1, 8), (1,)], ids=str)
@pytest.mark.parametrize("L", [1, 5, 40])
def test_grouped_query_heads_per_query_head(isa, slope_shape, L):
    """Slopes and sinks belong to QUERY heads: the heads of one K/V group
    (folded into one pass over K/V) each get their own."""
    rng = np.random.default_rng(107)
    q = rng.standard_normal((2, 8, L, 32)).astype(np.float32)
    k = rng.standard_normal((2, 2, 300, 32)).astype(np.float32)
    v = rng.standard_normal((2, 2, 300, 16)).astype(np.float32)
    slopes = rng.uniform(0.01, 0.3, size=slope_shape).astype(np.float32)
    sinks = rng.standard_normal(slope_shape).astype(np.float32)
    for kwargs in (dict(alibi_slopes=slopes), dict(sinks=sinks),
                   dict(alibi_slopes=slopes, sinks=sinks, softcap=2.0, return_weights=L == 5)):
        kwargs.update(enable_gqa=True, is_causal="lower_right", kv_lengths=np.array([300, 123]),
                      return_lse=True)
        check(q, k, v, **kwargs)
    # the same as repeating K/V per query head
    kwargs = dict(alibi_slopes=slopes, sinks=sinks, is_causal="lower_right", return_lse=True)
    got = sdpa(q, k, v, enable_gqa=True, **kwargs)
    rep = sdpa(q, np.repeat(k, 4, axis=1), np.repeat(v, 4, axis=1), **kwargs)
    assert_close(got[0], rep[0], np.float32)  # (two float32 computations: the same tolerance)


def test_out_and_slopes_of_other_dtypes(isa):
    rng = np.random.default_rng(108)
    q, k, v = qkv(rng, (2, 3), 7, 50, 16, 8)
    out = np.full((2, 3, 7, 8), np.nan, np.float32)
    kwargs = dict(alibi_slopes=_slopes(3, np.float64), sinks=_sinks(3, np.float16), softcap=5)
    got = sdpa(q, k, v, out=out, **kwargs)
    assert got is out
    assert_matches_reference(got, q, k, v, **kwargs)
    assert_bitwise(got, other_layout(q, k, v, **kwargs))
    view = np.zeros((2, 3, 7, 16), np.float32)[..., ::2]  # a strided out
    sdpa(q, k, v, out=view, **kwargs)
    assert_bitwise(view, got)


@pytest.mark.parametrize("dtype", LOW_PRECISION)
@pytest.mark.parametrize("variant", ["softcap", "alibi", "sinks", "all"])
def test_half_inputs(isa, dtype, variant):
    rng = np.random.default_rng(109)
    q, k, v = qkv(rng, (2, 3), 13, 200, 32, 16, dtype)
    kwargs = dict(VARIANTS[variant](3), is_causal=True, return_lse=True, return_weights=True)
    check(q, k, v, **kwargs)
    if "sinks" in kwargs:  # sinks of the input dtype: converted (the general path)
        kwargs["sinks"] = kwargs["sinks"].astype(dtype)
        check(q, k, v, **kwargs)


# ---------------------------------------------------------------------------
# Split-KV decoding: the sink is counted once, at the merge
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=str)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_split_kv_decoding(isa, dtype, variant):
    B, H, S, E = 1, 2, 16384, 64
    # the tiling does split these calls' keys (else this test would not test the merge)
    assert pyattn._core._key_splits(B * H, 1, S, E, E, np.dtype(dtype).itemsize) > 1
    rng = np.random.default_rng(110)
    q, k, v = qkv(rng, (B, H), 1, S, E, E, dtype)
    kwargs = dict(VARIANTS[variant](H), is_causal="lower_right", kv_lengths=np.array([S - 5]),
                  return_lse=True)
    got = check(q, k, v, **kwargs)
    for n in (1, 2, 3):
        assert_bitwise(got, sdpa(q, k, v, num_threads=n, **kwargs))


def test_split_kv_grouped_heads_and_empty_rows(isa):
    """GQA decoding (8 query heads folded over 2 K/V heads) with per-query-head
    sinks, and an element with kv_lengths 0 (lse = sink through the merge)."""
    rng = np.random.default_rng(111)
    S = 9000
    assert pyattn._core._key_splits(2 * 2, 4, S, 64, 64, 4) > 1
    q = rng.standard_normal((2, 8, 1, 64)).astype(np.float32)
    k = rng.standard_normal((2, 2, S, 64)).astype(np.float32)
    v = rng.standard_normal((2, 2, S, 64)).astype(np.float32)
    sinks = rng.standard_normal(8).astype(np.float32)
    kwargs = dict(enable_gqa=True, is_causal="lower_right", kv_lengths=np.array([S, 0]), sinks=sinks,
                  alibi_slopes=_slopes(8), return_lse=True)
    out, lse = check(q, k, v, **kwargs)
    assert np.all(out[1] == 0) and np.array_equal(lse[1, :, 0], sinks)
    for n in (1, 2, 3):
        assert_bitwise((out, lse), sdpa(q, k, v, num_threads=n, **kwargs))


def test_kv_cache_passes_variants_through(isa):
    rng = np.random.default_rng(112)
    cache = pyattn.KVCache(2, 2, 16, 64)
    k = rng.standard_normal((2, 2, 20, 16)).astype(np.float32)
    cache.append(k, k, counts=np.array([20, 9]))
    q = rng.standard_normal((2, 4, 1, 16)).astype(np.float32)
    kwargs = dict(softcap=3.0, alibi_slopes=_slopes(4), sinks=_sinks(4), return_lse=True)
    got = cache.attend(q, **kwargs)
    assert_matches_reference(got, q, cache.used_keys, cache.used_values, kv_lengths=cache.lengths,
                             is_causal="lower_right", enable_gqa=True, **kwargs)


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, exc, words", [
    (dict(softcap=0.0), ValueError, ["softcap", "0"]),
    (dict(softcap=-1.0), ValueError, ["softcap"]),
    (dict(softcap=float("nan")), ValueError, ["softcap"]),
    (dict(softcap=float("inf")), ValueError, ["softcap"]),
    (dict(softcap=0), ValueError, ["softcap"]),
    (dict(softcap="x"), TypeError, ["softcap", "str"]),
    (dict(softcap=True), TypeError, ["softcap"]),
    (dict(alibi_slopes=np.ones(3, np.float32)), ValueError, ["alibi_slopes", "(3,)", "(2, 4)"]),
    (dict(alibi_slopes=np.ones(4, np.int64)), TypeError, ["alibi_slopes", "int64"]),
    (dict(alibi_slopes=np.ones((1, 2, 4), np.float32)), ValueError, ["alibi_slopes", "dimensions"]),
    (dict(alibi_slopes=np.array([1, np.inf, 1, 1], np.float32)), ValueError, ["alibi_slopes", "finite"]),
    (dict(alibi_slopes=np.array([1, np.nan, 1, 1], np.float32)), ValueError, ["alibi_slopes", "finite"]),
    (dict(sinks=np.ones((2, 3), np.float32)), ValueError, ["sinks", "(2, 3)"]),
    (dict(sinks=np.ones(4, bool)), TypeError, ["sinks", "bool"]),
    (dict(sinks=np.ones((1, 2, 4))), ValueError, ["sinks"]),
    (dict(sinks=np.array([0, np.nan, 0, 0])), ValueError, ["sinks", "NaN"]),
    (dict(sinks=np.array([0, np.inf, 0, 0])), ValueError, ["sinks", "+inf"]),
    (dict(sinks="abc"), TypeError, ["sinks"]),
])
def test_errors_name_the_argument(kwargs, exc, words):
    rng = np.random.default_rng(114)
    q, k, v = qkv(rng, (2, 4), 3, 10, 8, 8)
    for fn in (sdpa, reference.scaled_dot_product_attention):
        with pytest.raises(exc) as info:
            fn(q, k, v, **kwargs)
        for w in words:
            assert w in str(info.value), (fn, w, str(info.value))


def test_gqa_slopes_are_per_query_head():
    """With enable_gqa the batch's head dim is the query's: (Hkv,) slopes are wrong."""
    rng = np.random.default_rng(115)
    q = rng.standard_normal((1, 4, 2, 8)).astype(np.float32)
    k = rng.standard_normal((1, 2, 5, 8)).astype(np.float32)
    with pytest.raises(ValueError, match="alibi_slopes"):
        sdpa(q, k, k, enable_gqa=True, alibi_slopes=np.ones(2, np.float32))


# ---------------------------------------------------------------------------
# merge_attention_states with sinks
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=str)
@pytest.mark.parametrize("sink_shape", [(3,), (2, 3), (1,), ()], ids=str)
def test_merge_with_sinks_equals_attention_over_all_keys(isa, dtype, sink_shape):
    rng = np.random.default_rng(116)
    q, k, v = qkv(rng, (2, 3), 5, 90, 16, 8, dtype)
    sinks = rng.standard_normal(sink_shape).astype(dtype)
    slopes = _slopes(3)
    common = dict(alibi_slopes=slopes, softcap=3.0, is_causal="lower_right")
    want = sdpa(q, k, v, sinks=sinks, return_lse=True, **common)
    # chunks of keys: a mask keeps each chunk's keys (the same positions as over all keys)
    parts = []
    for lo, hi in ((0, 30), (30, 31), (31, 90)):
        mask = np.zeros((5, 90), bool)
        mask[:, lo:hi] = True
        parts.append(sdpa(q, k, v, attn_mask=mask, return_lse=True, **common))
    outs, lses = [p[0] for p in parts], [p[1] for p in parts]
    got = pyattn.merge_attention_states(outs, lses, sinks=sinks)
    assert_close(got[0], want[0], dtype)
    assert_close(got[1], want[1], np.float64 if dtype == np.float64 else np.float32)
    ref = reference.merge_attention_states(outs, lses, sinks=sinks)
    assert_close(got[0], ref[0], dtype)
    assert_close(got[1], ref[1], np.float64 if dtype == np.float64 else np.float32)


def test_merge_sinks_rows_without_keys_and_errors():
    out = [np.full((2, 3, 4), np.nan, np.float32)]
    lse = [np.full((2, 3), -np.inf, np.float32)]
    sinks = np.array([0.5, -np.inf], np.float32)
    for fn in (pyattn.merge_attention_states, reference.merge_attention_states):
        o, l = fn(out, lse, sinks=sinks)
        assert np.all(o == 0)
        np.testing.assert_array_equal(l, [[0.5] * 3, [-np.inf] * 3])
        with pytest.raises(ValueError, match="sinks"):
            fn(out, lse, sinks=np.ones(3, np.float32))
        with pytest.raises(TypeError, match="sinks"):
            fn(out, lse, sinks=np.ones(2, np.int32))
        with pytest.raises(ValueError, match="sinks"):
            fn([np.ones(4, np.float32)], [np.ones((), np.float32)], sinks=np.ones(1, np.float32))


# ---------------------------------------------------------------------------
# torch parity: ALiBi as an explicit bias, Gemma 2's and gpt-oss's eager formulas
# ---------------------------------------------------------------------------


def _torch():
    return pytest.importorskip("torch")


def test_alibi_matches_torch_sdpa_with_explicit_bias(isa):
    torch = _torch()
    rng = np.random.default_rng(117)
    B, H, L, S, E = 2, 4, 9, 21, 16
    q, k, v = qkv(rng, (B, H), L, S, E, 8, np.float64)
    slopes = _slopes(H, np.float64)
    for is_causal in ("upper_left", "lower_right"):
        pos = np.arange(L)[:, None] + (S - L if is_causal == "lower_right" else 0)
        bias = -slopes[:, None, None] * np.abs(pos - np.arange(S)[None, :])
        bias = np.where(np.arange(S)[None, :] <= pos, bias, -np.inf)
        want = torch.nn.functional.scaled_dot_product_attention(
            *(torch.from_numpy(a) for a in (q, k, v)), attn_mask=torch.from_numpy(bias)).numpy()
        for dtype in (np.float32, np.float64):
            got = sdpa(*(a.astype(dtype) for a in (q, k, v)), alibi_slopes=slopes.astype(dtype),
                       is_causal=is_causal)
            assert_close(got, want, dtype)


def test_softcap_matches_gemma2_eager(isa):
    """transformers' eager Gemma 2 attention: scores = q k^T * scaling;
    scores = tanh(scores / softcap) * softcap; + mask; softmax; @ v."""
    torch = _torch()
    rng = np.random.default_rng(118)
    q, k, v = qkv(rng, (2, 4), 11, 11, 32, 16, np.float64)
    q *= 4  # scores beyond the cap
    cap, scaling = 2.0, 32 ** -0.5
    tq, tk, tv = (torch.from_numpy(a) for a in (q, k, v))
    scores = torch.matmul(tq, tk.transpose(2, 3)) * scaling
    scores = torch.tanh(scores / cap) * cap
    causal = torch.triu(torch.full((11, 11), float("-inf"), dtype=torch.float64), 1)
    want = torch.matmul(torch.softmax(scores + causal, dim=-1), tv).numpy()
    for dtype in (np.float32, np.float64):
        got = sdpa(*(a.astype(dtype) for a in (q, k, v)), softcap=cap, is_causal=True, scale=scaling)
        assert_close(got, want, dtype)


def test_sinks_match_gpt_oss_eager(isa):
    """gpt-oss's eager attention: a sink logit column per head is
    concatenated to the scores, the softmax taken over both, the column
    dropped; grouped-query heads, sliding window and causal mask."""
    torch = _torch()
    rng = np.random.default_rng(119)
    B, Hq, Hkv, L, E, W = 2, 8, 2, 17, 16, 6
    q = rng.standard_normal((B, Hq, L, E))
    k = rng.standard_normal((B, Hkv, L, E))
    v = rng.standard_normal((B, Hkv, L, E))
    sinks = rng.standard_normal(Hq)
    tq, tk, tv = (torch.from_numpy(a) for a in (q, k, v))
    tk, tv = tk.repeat_interleave(Hq // Hkv, 1), tv.repeat_interleave(Hq // Hkv, 1)
    scores = torch.matmul(tq, tk.transpose(2, 3)) * E ** -0.5
    i, j = torch.arange(L)[:, None], torch.arange(L)[None, :]
    visible = (j <= i) & (j >= i - W)
    scores = scores.masked_fill(~visible, float("-inf"))
    sink_col = torch.from_numpy(sinks).reshape(1, Hq, 1, 1).expand(B, Hq, L, 1)
    combined = torch.cat([scores, sink_col], dim=-1)
    combined = combined - combined.max(dim=-1, keepdim=True).values
    probs = torch.softmax(combined, dim=-1)[..., :-1]
    want = torch.matmul(probs, tv).numpy()
    for dtype in (np.float32, np.float64):
        got, w = sdpa(*(a.astype(dtype) for a in (q, k, v)), sinks=sinks.astype(dtype), enable_gqa=True,
                      is_causal=True, window=W, return_weights=True)
        assert_close(got, want, dtype)
        assert_close(w, probs.numpy(), dtype)
