"""Decoding shapes (few query rows, many keys): the paths the kernels take
there -- direct dot products without key packing, grouped-query heads folded
into one pass over K/V, and split-KV with a merge of the chunks -- against
the float64 reference, and bitwise stable across thread counts."""

import numpy as np
import pytest

import pyattn
from helpers import LOW_PRECISION, assert_matches_reference, qkv

sdpa = pyattn.scaled_dot_product_attention

# S >= 4096 with few (batch x head x row-group) items triggers split-KV.
DECODE_CASES = [
    # (batch, L, S, E, Ev)
    ((1, 2), 1, 5000, 64, 64),
    ((1, 1), 3, 9001, 59, 33),
    ((2, 3), 1, 4097, 128, 128),
    ((1, 2), 20, 6000, 32, 48),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", DECODE_CASES, ids=str)
def test_decode_matches_reference(isa, dtype, case):
    batch, L, S, E, Ev = case
    rng = np.random.default_rng(41)
    q, k, v = qkv(rng, batch, L, S, E, Ev, dtype)
    lengths = rng.integers(0, S + 1, size=batch[0])
    lengths[0] = S
    mask = rng.random((L, S)) < 0.9
    # float biases (natural units, merged across the splits as such) with some -inf
    bias = np.where(rng.random((L, S)) < 0.1, -np.inf, 3 * rng.standard_normal((L, S))).astype(dtype)
    for kwargs in (
        {},
        {"is_causal": "lower_right", "kv_lengths": lengths},
        {"attn_mask": mask, "window": (3000, None)},
        {"attn_mask": bias},
        {"kv_lengths": np.zeros(batch[0], np.int64)},
    ):
        assert_matches_reference(sdpa(q, k, v, return_lse=True, **kwargs), q, k, v,
                                 return_lse=True, **kwargs)


@pytest.mark.parametrize("hq,hkv,L,S", [(8, 2, 1, 4500), (6, 3, 2, 700), (4, 1, 5, 30)])
def test_gqa_decode_matches_reference(isa, hq, hkv, L, S):
    rng = np.random.default_rng(42)
    q = rng.standard_normal((2, hq, L, 64)).astype(np.float32)
    k = rng.standard_normal((2, hkv, S, 64)).astype(np.float32)
    v = rng.standard_normal((2, hkv, S, 64)).astype(np.float32)
    kwargs = dict(enable_gqa=True, is_causal="lower_right", kv_lengths=np.array([S, S // 2]),
                  return_lse=True)
    assert_matches_reference(sdpa(q, k, v, **kwargs), q, k, v, **kwargs)
    # per-head mask (no sharing of the mask across the group)
    mask = rng.random((hq, L, S)) < 0.7
    assert_matches_reference(sdpa(q, k, v, attn_mask=mask, enable_gqa=True), q, k, v,
                             attn_mask=mask, enable_gqa=True)


def test_split_kv_bitwise_identical_for_any_thread_count():
    rng = np.random.default_rng(43)
    q, k, v = qkv(rng, (1, 2), 1, 20000, 64, 64)
    results = [sdpa(q, k, v, is_causal="lower_right", return_lse=True, num_threads=n)
               for n in (1, 2, 3, 1)]
    for out, lse in results[1:]:
        assert np.array_equal(out, results[0][0]) and np.array_equal(lse, results[0][1])


def test_split_kv_nan_stays_in_its_chunk_rows():
    rng = np.random.default_rng(44)
    q, k, v = qkv(rng, (1, 1), 2, 9000, 16, 8)
    v[0, 0, 8500, 3] = np.nan            # key 8500: seen by neither row with kv_lengths=8000
    out = sdpa(q, k, v, kv_lengths=np.array([8000]))
    assert np.isfinite(out).all()
    out = sdpa(q, k, v)                  # both rows see it: NaN in that feature only
    assert np.isnan(out[..., 3]).all()
    assert np.isfinite(np.delete(out, 3, axis=-1)).all()


@pytest.mark.parametrize("dtype", LOW_PRECISION)
@pytest.mark.parametrize("case", [
    ((1, 2), 1, 5000, 64, 64),   # few rows: K and V widened as read (split-KV too)
    ((2,), 3, 700, 40, 96),      # few rows, E with a vector tail, V rows whole
    ((1, 2), 2, 600, 64, 33),    # few rows, V rows not whole: V converted first
    ((1, 3), 97, 300, 59, 33),   # many rows: K packed, V converted once per block
], ids=str)
def test_half_storage_read_by_the_kernels(isa, dtype, case):
    """float16/bfloat16 q/k/v are widened inside the kernels (packed, direct
    and split-KV paths); the result is rounded once to the input dtype."""
    batch, L, S, E, Ev = case
    rng = np.random.default_rng(45)
    q, k, v = (rng.standard_normal(batch + (n, d)).astype(dtype)
               for n, d in ((L, E), (S, E), (S, Ev)))
    kwargs = dict(is_causal="lower_right", return_lse=True)
    assert_matches_reference(sdpa(q, k, v, **kwargs), q, k, v, **kwargs)


@pytest.mark.parametrize("dtype", LOW_PRECISION)
@pytest.mark.parametrize("Ev", [64, 33])
def test_half_storage_value_nan_hidden_by_mask(isa, dtype, Ev):
    """A NaN value at a key the mask hides reaches no row, also when the
    decoding path reads float16/bfloat16 values in place."""
    rng = np.random.default_rng(46)
    q, k, v = (rng.standard_normal((2, 2, n, d)).astype(dtype)
               for n, d in ((2, 64), (900, 64), (900, Ev)))
    v[:, :, 700, 5] = np.nan
    mask = np.arange(900) != 700
    kwargs = dict(attn_mask=mask, return_lse=True)
    got, _ = assert_matches_reference(sdpa(q, k, v, **kwargs), q, k, v, **kwargs)
    assert np.isfinite(got["out"].astype(np.float32)).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64] + LOW_PRECISION)
@pytest.mark.parametrize("heads", [(3, 3), (8, 2)], ids=["one-row", "gqa-4-rows"])
@pytest.mark.parametrize("hide", ["mask", "window", "seen"])
def test_decode_value_inf_in_place(isa, dtype, heads, hide):
    """Decoding reads values in place and learns from P V's results whether
    they held an inf/NaN (no pass of its own over V): a hidden inf reaches
    no row, a seen one only its feature, whichever block it is in."""
    hq, hk = heads
    rng = np.random.default_rng(47)
    S = 1500
    q, k, v = (rng.standard_normal(shape).astype(dtype)
               for shape in ((1, hq, 1, 64), (1, hk, S, 64), (1, hk, S, 64)))
    for j, f in ((3, 5), (700, 9), (1499, 63)):  # first, middle and last block
        v[:, :, j, f] = np.inf
    kwargs = dict(enable_gqa=hq != hk, return_lse=True, is_causal="lower_right")
    if hide == "mask":
        kwargs["attn_mask"] = ~np.isin(np.arange(S), [3, 700, 1499])
    elif hide == "window":
        v[:, :, 1499, 63] = 0
        kwargs["window"] = (S - 5, 0)  # keys [4, S) visible: key 3 hidden inside its block
        v[:, :, 700, 9] = 0
    got, _ = assert_matches_reference(sdpa(q, k, v, **kwargs), q, k, v, **kwargs)
    out = got["out"].astype(np.float64)
    if hide == "seen":
        assert not np.isfinite(out[..., [5, 9, 63]]).any()
        assert np.isfinite(np.delete(out, [5, 9, 63], axis=-1)).all()
    else:
        assert np.isfinite(out).all()


@pytest.mark.parametrize("heads", [(3, 3), (8, 2)], ids=["one-row", "gqa-4-rows"])
def test_decode_finite_values_whose_sum_overflows(isa, heads):
    """Finite values so large that P V's sum (of unnormalised probabilities
    times values: 900 x 3e38) overflows float32 in one feature: that feature
    is inf, as it always was, and the overflow is not taken for an inf in V
    (the other features stay exact)."""
    hq, hk = heads
    rng = np.random.default_rng(48)
    q, k, v = (rng.standard_normal(shape).astype(np.float32)
               for shape in ((1, hq, 1, 64), (1, hk, 900, 64), (1, hk, 900, 64)))
    k[...] = 0  # equal weights
    v[:, :, :, 7] = 3e38
    out = sdpa(q, k, v, enable_gqa=hq != hk)
    assert np.isinf(out[..., 7]).all()
    rest = np.delete(out, 7, axis=-1)
    want = np.delete(v.astype(np.float64).mean(axis=-2, keepdims=True), 7, axis=-1)
    want = np.repeat(want, hq // hk, axis=1)
    np.testing.assert_allclose(rest, want, rtol=2e-5, atol=2e-6)
