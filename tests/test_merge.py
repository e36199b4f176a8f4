"""pyattn.merge_attention_states (SPEC section 3) on the fast path: exact
split-KV merging, NaN-safe empty parts, errors."""

import numpy as np
import pytest

import pyattn
from helpers import assert_close, qkv, reference

sdpa = pyattn.scaled_dot_product_attention


def chunks(S, cuts):
    edges = [0, *cuts, S]
    return list(zip(edges[:-1], edges[1:]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mask_kind", ["none", "bool", "float", "causal", "window", "lengths"])
def test_merge_of_chunks_equals_attention_over_all_keys(isa, dtype, mask_kind):
    rng = np.random.default_rng(31)
    L, S = 7, 45
    q, k, v = qkv(rng, (2, 3), L, S, 16, 12, dtype)
    bias = np.zeros((L, S), dtype)
    if mask_kind == "bool":
        bias[rng.random((L, S)) < 0.4] = -np.inf
    elif mask_kind == "float":
        bias = rng.standard_normal((L, S)).astype(dtype)
        bias[0, :] = -np.inf                      # a row with no visible key
    elif mask_kind == "causal":
        bias[np.triu(np.ones((L, S), bool), S - L + 1)] = -np.inf   # lower-right causal
    elif mask_kind == "window":
        j, i = np.meshgrid(np.arange(S), np.arange(L))
        bias[(j < i + 20) | (j > i + 24)] = -np.inf
    kw = {"kv_lengths": np.array([45, 17])} if mask_kind == "lengths" else {}
    if mask_kind == "bool":
        full_mask = np.isfinite(bias)
    else:
        full_mask = bias
    want, want_lse = sdpa(q, k, v, attn_mask=full_mask, return_lse=True, **kw)
    outs, lses = [], []
    for a, b in chunks(S, [10, 11, 30]):
        n = {"kv_lengths": np.clip(kw["kv_lengths"] - a, 0, b - a)} if kw else {}
        o, l = sdpa(q, k[..., a:b, :], v[..., a:b, :], attn_mask=full_mask[:, a:b],
                    return_lse=True, **n)
        outs.append(o)
        lses.append(l)
    got, got_lse = pyattn.merge_attention_states(outs, lses)
    assert got.dtype == dtype and got_lse.dtype == want_lse.dtype
    assert_close(got, want, dtype, "out")
    assert_close(got_lse, want_lse, dtype, "lse")
    ref, ref_lse = reference.merge_attention_states(outs, lses)
    assert_close(got, ref, dtype, "merge vs reference")


def test_empty_parts_contribute_nothing_even_nan():
    out = np.ones((2, 3, 4), np.float32)
    lse = np.zeros((2, 3), np.float32)
    bad = np.full((2, 3, 4), np.nan, np.float32)
    none = np.full((2, 3), -np.inf, np.float32)
    got, got_lse = pyattn.merge_attention_states([bad, out, bad], [none, lse, none])
    np.testing.assert_array_equal(got, out)
    np.testing.assert_array_equal(got_lse, lse)
    got, got_lse = pyattn.merge_attention_states([bad, bad], [none, none])
    np.testing.assert_array_equal(got, np.zeros_like(out))
    assert np.all(got_lse == -np.inf)


def test_merge_errors():
    o = np.zeros((3, 4), np.float32)
    l = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="outputs"):
        pyattn.merge_attention_states([], [])
    with pytest.raises(ValueError, match="same length"):
        pyattn.merge_attention_states([o, o], [l])
    with pytest.raises(ValueError, match=r"lses\[0\]"):
        pyattn.merge_attention_states([o], [np.zeros(4, np.float32)])
    with pytest.raises(ValueError, match=r"outputs\[1\]"):
        pyattn.merge_attention_states([o, np.zeros((3, 5), np.float32)], [l, l])
    with pytest.raises(TypeError, match=r"outputs\[0\]"):
        pyattn.merge_attention_states([o.astype(np.int32)], [l])
