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
