"""Parity with torch.nn.functional.scaled_dot_product_attention (computed in
float64 as the independent truth) on the features torch has."""

import numpy as np
import pytest

import pyattn
from helpers import assert_close, qkv

torch = pytest.importorskip("torch")
F = torch.nn.functional

FLOATS = [np.dtype(np.float32), np.dtype(np.float64)]


def torch_sdpa(q, k, v, attn_mask=None, **kwargs):
    t = [torch.from_numpy(np.asarray(a, np.float64)) for a in (q, k, v)]
    if attn_mask is not None:
        mask = torch.from_numpy(attn_mask if attn_mask.dtype == np.bool_
                                else attn_mask.astype(np.float64))
        kwargs["attn_mask"] = mask
    return F.scaled_dot_product_attention(*t, **kwargs).numpy()


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("L, S", [(7, 11), (11, 7), (9, 9)])
@pytest.mark.parametrize("is_causal", [False, True])
def test_plain_and_causal(isa, dtype, L, S, is_causal):
    # torch's is_causal is the upper-left alignment (pyattn's True).
    q, k, v = qkv(np.random.default_rng(L * S), (2, 3), L, S, 16, 12, dtype)
    got = pyattn.scaled_dot_product_attention(q, k, v, is_causal=is_causal)
    assert_close(got, torch_sdpa(q, k, v, is_causal=is_causal), dtype)


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("mask_kind", ["bool", "float"])
def test_masks(isa, dtype, mask_kind):
    rng = np.random.default_rng(30)
    q, k, v = qkv(rng, (2, 3), 8, 13, 16, 8, dtype)
    if mask_kind == "bool":          # True = may attend, in both libraries
        mask = rng.random((3, 8, 13)) < 0.6
        mask[..., 0] = True          # no fully masked row (torch gives NaN there)
    else:
        mask = rng.standard_normal((2, 1, 8, 13)).astype(dtype)
        mask[rng.random(mask.shape) < 0.3] = -np.inf
        mask[..., 0] = 0.0
    got = pyattn.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert_close(got, torch_sdpa(q, k, v, attn_mask=mask), dtype)


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("scale", [0.1, 1.0, -0.4])
def test_scale(isa, dtype, scale):
    q, k, v = qkv(np.random.default_rng(31), (2,), 6, 10, 32, 8, dtype)
    got = pyattn.scaled_dot_product_attention(q, k, v, scale=scale, is_causal=True)
    assert_close(got, torch_sdpa(q, k, v, scale=scale, is_causal=True), dtype)


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("hq, hkv", [(8, 2), (6, 3), (4, 1)])
def test_enable_gqa(isa, dtype, hq, hkv):
    rng = np.random.default_rng(32)
    q = rng.standard_normal((2, hq, 9, 16)).astype(dtype)
    k = rng.standard_normal((2, hkv, 14, 16)).astype(dtype)
    v = rng.standard_normal((2, hkv, 14, 8)).astype(dtype)
    got = pyattn.scaled_dot_product_attention(q, k, v, enable_gqa=True, is_causal=True)
    assert_close(got, torch_sdpa(q, k, v, enable_gqa=True, is_causal=True), dtype)
