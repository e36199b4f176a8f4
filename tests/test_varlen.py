"""varlen_attention: packed batches of sequences of different lengths
(flash-attention's layout) against the float64 reference, bit for bit
against scaled_dot_product_attention on each sequence alone, bitwise stable
across thread counts, against torch, and every argument error."""

import numpy as np
import pytest

import pyattn
from helpers import LOW_PRECISION, assert_close, lse_dtype, reference

varlen = pyattn.varlen_attention


def cu(lengths):
    return np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64)


def packed(rng, lq, lk, hq, hkv, E, Ev=None, dtype=np.float32):
    """Random packed q (sum lq, hq, E), k (sum lk, hkv, E), v (sum lk, hkv, Ev)."""
    Ev = E if Ev is None else Ev
    tq, tk = int(np.sum(lq)), int(np.sum(lk))
    q = rng.standard_normal((tq, hq, E)).astype(dtype)
    k = rng.standard_normal((tk, hkv, E)).astype(dtype)
    v = rng.standard_normal((tk, hkv, Ev)).astype(dtype)
    return q, k, v, cu(lq), cu(lk)


def check_against_reference(q, k, v, cq, ck, **kwargs):
    kwargs = dict(kwargs, return_lse=True)
    out, lse = varlen(q, k, v, cq, ck, **kwargs)
    f64 = [a.astype(np.float64) for a in (q, k, v)]
    kwargs.pop("num_threads", None)
    want_out, want_lse = reference.varlen_attention(*f64, cq, ck, **kwargs)
    assert out.dtype == q.dtype and out.shape == (q.shape[0], q.shape[1], v.shape[2])
    assert lse.dtype == lse_dtype(q.dtype) and lse.shape == q.shape[:2]
    assert_close(out, want_out, q.dtype, "out")
    assert_close(lse, want_lse, lse_dtype(q.dtype), "lse")
    return out, lse


# (query lengths, key lengths): empty sequences, single rows, odd sizes, a
# sequence longer than one key block and one row group.
LENGTHS = [
    ([5], [7]),
    ([0], [0]),
    ([3, 0, 1, 17, 1, 40], [5, 4, 0, 17, 9, 40]),
    ([1, 1, 2, 130, 7], [1, 600, 2, 130, 3]),
    ([97, 1, 0, 33], [97, 1025, 12, 0]),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("lengths", LENGTHS, ids=str)
@pytest.mark.parametrize("heads", [(4, 4), (6, 2), (3, 1)], ids=lambda h: f"Hq{h[0]}-Hkv{h[1]}")
def test_matches_reference(isa, dtype, lengths, heads):
    lq, lk = lengths
    rng = np.random.default_rng(len(lq) * 7 + heads[1])
    q, k, v, cq, ck = packed(rng, lq, lk, heads[0], heads[1], 59, 33, dtype)
    for kwargs in (
        {},
        {"is_causal": True},
        {"is_causal": "lower_right"},
        {"window": 4},
        {"window": (2, 5), "is_causal": "lower_right"},
        {"window": (None, 3)},
        {"scale": 0.3},
    ):
        check_against_reference(q, k, v, cq, ck, **kwargs)


def test_random_lengths_many_sequences(isa):
    rng = np.random.default_rng(3)
    n = 300
    lq = rng.integers(0, 9, n)
    lk = rng.integers(0, 12, n)
    lq[:4], lk[:4] = [0, 1, 5, 0], [3, 0, 1, 0]
    q, k, v, cq, ck = packed(rng, lq, lk, 4, 2, 16)
    for causal in (False, True, "lower_right"):
        check_against_reference(q, k, v, cq, ck, is_causal=causal)


@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_low_precision(isa, dtype):
    rng = np.random.default_rng(5)
    q, k, v, cq, ck = packed(rng, [4, 0, 19, 1], [9, 3, 19, 300], 4, 2, 40, 24, dtype)
    out, lse = check_against_reference(q, k, v, cq, ck, is_causal="lower_right")
    assert lse.dtype == np.float32


def test_decoding_sequences_take_split_kv_and_match(isa):
    # One query row against thousands of keys, few (kv head x row group)
    # items: such a sequence alone would be split over its keys; mixed here
    # with prefill-shaped sequences and empty ones.
    rng = np.random.default_rng(6)
    lq = [1, 64, 1, 0, 3, 1]
    lk = [5000, 64, 4097, 9, 6000, 0]
    q, k, v, cq, ck = packed(rng, lq, lk, 8, 2, 64)
    for causal in (False, "lower_right"):
        out, lse = check_against_reference(q, k, v, cq, ck, is_causal=causal)
        assert np.all(out[cq[5]:cq[6]] == 0) and np.all(lse[cq[5]:cq[6]] == -np.inf)
    q, k, v, cq, ck = packed(rng, lq, lk, 8, 2, 64, dtype=np.float64)
    check_against_reference(q, k, v, cq, ck, is_causal="lower_right")


def sequence_views(q, k, v, cq, ck, n):
    """Sequence n as scaled_dot_product_attention's (heads, rows, features) views."""
    rows, keys = slice(cq[n], cq[n + 1]), slice(ck[n], ck[n + 1])
    return q[rows].transpose(1, 0, 2), k[keys].transpose(1, 0, 2), v[keys].transpose(1, 0, 2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("heads", [(8, 2), (4, 4), (4, 1)], ids=lambda h: f"Hq{h[0]}-Hkv{h[1]}")
def test_bitwise_equal_to_sdpa_per_sequence(isa, dtype, heads):
    # Each sequence gets the tiling scaled_dot_product_attention gives it
    # alone, so the results are the same bits (also for split-KV decoding).
    rng = np.random.default_rng(7)
    lq = [1, 100, 0, 7, 1, 300]
    lk = [4500, 130, 5, 7, 1, 300]
    q, k, v, cq, ck = packed(rng, lq, lk, heads[0], heads[1], 64, 48, dtype)
    for kwargs in ({}, {"is_causal": True}, {"is_causal": "lower_right", "window": (50, None)}):
        out, lse = varlen(q, k, v, cq, ck, return_lse=True, **kwargs)
        for n in range(len(lq)):
            o, l = pyattn.scaled_dot_product_attention(*sequence_views(q, k, v, cq, ck, n),
                                                       enable_gqa=True, return_lse=True, **kwargs)
            np.testing.assert_array_equal(out[cq[n]:cq[n + 1]], o.transpose(1, 0, 2), err_msg=f"seq {n}")
            np.testing.assert_array_equal(lse[cq[n]:cq[n + 1]], l.T, err_msg=f"seq {n}")


def test_bitwise_identical_for_any_thread_count(isa):
    rng = np.random.default_rng(8)
    lq = list(rng.integers(0, 200, 20)) + [1, 1]
    lk = list(rng.integers(0, 300, 20)) + [5000, 8000]
    q, k, v, cq, ck = packed(rng, lq, lk, 6, 3, 59)
    for causal in (False, True, "lower_right"):
        first = varlen(q, k, v, cq, ck, is_causal=causal, return_lse=True, num_threads=1)
        for threads in (2, 3):
            again = varlen(q, k, v, cq, ck, is_causal=causal, return_lse=True, num_threads=threads)
            np.testing.assert_array_equal(again[0], first[0])
            np.testing.assert_array_equal(again[1], first[1])


def test_fused_qkv_views_are_read_in_place(isa):
    # q, k, v sliced from one fused projection (total, 3, H, E): strided
    # views with a unit-stride last dimension; the same bits as copies.
    rng = np.random.default_rng(9)
    lq = [5, 0, 31, 1, 64]
    c = cu(lq)
    qkv = rng.standard_normal((c[-1], 3, 4, 40)).astype(np.float32)
    q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
    assert not q.flags.c_contiguous
    before = qkv.copy()
    out = check_against_reference(q, k, v, c, c, is_causal=True)[0]
    np.testing.assert_array_equal(qkv, before)  # inputs untouched
    copies = varlen(*(np.ascontiguousarray(a) for a in (q, k, v)), c, c, is_causal=True)
    np.testing.assert_array_equal(out, copies)
    # A last dimension that is not unit-stride is copied and gives the same bits.
    qt = np.asfortranarray(q)
    np.testing.assert_array_equal(varlen(qt, k, v, c, c, is_causal=True), copies)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_out_argument(isa, dtype):
    rng = np.random.default_rng(10)
    q, k, v, cq, ck = packed(rng, [3, 0, 8], [4, 2, 8], 4, 2, 16, 12, dtype)
    want = varlen(q, k, v, cq, ck, is_causal=True)
    out = np.full(want.shape, np.nan, dtype)
    assert varlen(q, k, v, cq, ck, is_causal=True, out=out) is out
    np.testing.assert_array_equal(out, want)
    # A strided view (every other head of a wider array): nothing outside it touched.
    big = np.full((want.shape[0], 8, 12), 7, dtype)
    view = big[:, ::2]
    res, lse = varlen(q, k, v, cq, ck, is_causal=True, out=view, return_lse=True)
    assert res is view
    np.testing.assert_array_equal(view, want)
    assert np.all(big[:, 1::2] == 7)
    # A view without a unit-stride last dimension goes through a buffer.
    wide = np.full(want.shape[:2] + (24,), 7, dtype)
    view = wide[..., ::2]
    assert varlen(q, k, v, cq, ck, is_causal=True, out=view) is view
    np.testing.assert_array_equal(view, want)
    assert np.all(wide[..., 1::2] == 7)


def test_empty_batches_and_sequences(isa):
    rng = np.random.default_rng(11)
    # N = 0: cu_seqlens = [0], nothing at all.
    q, k, v = np.zeros((0, 2, 8), np.float32), np.zeros((0, 2, 8), np.float32), np.zeros((0, 2, 4), np.float32)
    out, lse = varlen(q, k, v, np.array([0]), np.array([0]), return_lse=True)
    assert out.shape == (0, 2, 4) and lse.shape == (0, 2)
    # Sequences without keys: output 0, lse -inf; without queries: nothing.
    q, k, v, cq, ck = packed(rng, [2, 0, 3], [0, 5, 0], 2, 1, 8)
    out, lse = varlen(q, k, v, cq, ck, return_lse=True, is_causal="lower_right")
    assert np.all(out == 0) and np.all(lse == -np.inf)
    # E = 0 (every score 0: the mean of the values) and Ev = 0.
    q, k, v, cq, ck = packed(rng, [2, 3], [4, 1], 2, 2, 0, 5)
    check_against_reference(q, k, v, cq, ck)
    q, k, v, cq, ck = packed(rng, [2, 3], [4, 1], 2, 2, 6, 0)
    check_against_reference(q, k, v, cq, ck, is_causal=True)
    # Zero heads.
    out = varlen(np.zeros((3, 0, 4)), np.zeros((2, 0, 4)), np.zeros((2, 0, 4)), [0, 3], [0, 2])
    assert out.shape == (3, 0, 4)


def test_non_finite_inputs_stay_in_their_sequence(isa):
    rng = np.random.default_rng(12)
    q, k, v, cq, ck = packed(rng, [4, 5, 6], [4, 5, 6], 2, 2, 16)
    q[cq[1] + 2, 0, 3] = np.nan
    v[ck[2], 1, 0] = np.inf
    out = varlen(q, k, v, cq, ck)
    assert np.all(np.isfinite(out[: cq[1]]))
    assert np.all(np.isnan(out[cq[1] + 2, 0])) and np.all(np.isfinite(out[cq[1]:cq[2], 1]))
    assert not np.all(np.isfinite(out[cq[2]:, 1, 0]))
    assert np.all(np.isfinite(out[cq[2]:, 0]))


def test_integer_offset_dtypes_and_sequences_of_lists():
    rng = np.random.default_rng(13)
    q, k, v, cq, ck = packed(rng, [3, 4], [5, 1], 2, 2, 8)
    want = varlen(q, k, v, cq, ck)
    for conv in (lambda a: a.astype(np.int32), lambda a: a.astype(np.uint16), list,
                 lambda a: np.repeat(a, 2)[::2]):
        np.testing.assert_array_equal(varlen(q, k, v, conv(cq), conv(ck)), want)


# ---------------------------------------------------------------------------
# Score variants: softcap, ALiBi slopes and sinks, one value per query head
# ---------------------------------------------------------------------------


def variant_kwargs(rng, hq, dtype):
    slopes = (2.0 ** -np.arange(1, hq + 1)).astype(dtype)
    sinks = rng.standard_normal(hq).astype(dtype)
    sinks[0] = -np.inf  # no sink for head 0
    return [
        {"softcap": 2.5},
        {"alibi_slopes": slopes},
        {"sinks": sinks},
        {"softcap": 1.5, "alibi_slopes": slopes, "sinks": sinks, "is_causal": "lower_right"},
        {"alibi_slopes": slopes, "is_causal": True, "window": (7, None)},
    ]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("heads", [(4, 4), (6, 2)], ids=lambda h: f"Hq{h[0]}-Hkv{h[1]}")
def test_score_variants_match_reference(isa, dtype, heads):
    rng = np.random.default_rng(21)
    lq, lk = [3, 0, 1, 17, 2, 40], [5, 4, 0, 17, 600, 40]
    q, k, v, cq, ck = packed(rng, lq, lk, heads[0], heads[1], 59, 33, dtype)
    for kwargs in variant_kwargs(rng, heads[0], dtype):
        out, lse = check_against_reference(q, k, v, cq, ck, **kwargs)
        # Rows without keys (sequence 2): output 0, lse = the sink (-inf without one).
        rows = slice(cq[2], cq[3])
        assert np.all(out[rows] == 0)
        sinks = kwargs.get("sinks")
        want = np.full(heads[0], -np.inf) if sinks is None else sinks
        np.testing.assert_array_equal(lse[rows], np.broadcast_to(want, lse[rows].shape).astype(lse.dtype))


def test_score_variants_with_split_kv_and_threads(isa):
    # Decoding-shaped sequences are split over their keys: the sink joins
    # the merged denominator once; the same bits for every thread count and
    # as SDPA on each sequence alone.
    rng = np.random.default_rng(22)
    lq, lk = [1, 64, 1, 2], [5000, 64, 4097, 6000]
    q, k, v, cq, ck = packed(rng, lq, lk, 8, 2, 64)
    for kwargs in variant_kwargs(rng, 8, np.float32):
        out, lse = check_against_reference(q, k, v, cq, ck, **kwargs)
        for threads in (1, 2, 3):
            again = varlen(q, k, v, cq, ck, return_lse=True, num_threads=threads, **kwargs)
            np.testing.assert_array_equal(again[0], out)
            np.testing.assert_array_equal(again[1], lse)
        for n in range(len(lq)):
            o, l = pyattn.scaled_dot_product_attention(*sequence_views(q, k, v, cq, ck, n),
                                                       enable_gqa=True, return_lse=True, **kwargs)
            np.testing.assert_array_equal(out[cq[n]:cq[n + 1]], o.transpose(1, 0, 2))
            np.testing.assert_array_equal(lse[cq[n]:cq[n + 1]], l.T)


@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_score_variants_low_precision(isa, dtype):
    rng = np.random.default_rng(23)
    q, k, v, cq, ck = packed(rng, [4, 19, 1], [9, 19, 300], 4, 2, 40, 24, dtype)
    for kwargs in variant_kwargs(rng, 4, np.float32):
        check_against_reference(q, k, v, cq, ck, **kwargs)


def test_score_variant_errors(args):
    q, k, v, cq, ck = args  # Hq = 4, Hkv = 2
    with pytest.raises(ValueError, match="softcap"):
        varlen(q, k, v, cq, ck, softcap=0.0)
    with pytest.raises(ValueError, match="softcap"):
        varlen(q, k, v, cq, ck, softcap=float("inf"))
    with pytest.raises(TypeError, match="softcap"):
        varlen(q, k, v, cq, ck, softcap="2")
    with pytest.raises(ValueError, match="alibi_slopes"):
        varlen(q, k, v, cq, ck, alibi_slopes=np.ones(2, np.float32))  # (Hkv,), not (Hq,)
    with pytest.raises(ValueError, match="alibi_slopes"):
        varlen(q, k, v, cq, ck, alibi_slopes=np.ones((1, 4), np.float32))
    with pytest.raises(ValueError, match="alibi_slopes must be finite"):
        varlen(q, k, v, cq, ck, alibi_slopes=np.array([1, np.nan, 1, 1], np.float32))
    with pytest.raises(TypeError, match="sinks"):
        varlen(q, k, v, cq, ck, sinks=np.arange(4))
    with pytest.raises(ValueError, match="sinks must not be NaN"):
        varlen(q, k, v, cq, ck, sinks=np.array([0, np.inf, 0, 0], np.float32))
    # A (1,)-shaped value broadcasts over the heads.
    np.testing.assert_array_equal(varlen(q, k, v, cq, ck, sinks=np.array([0.5], np.float32)),
                                  varlen(q, k, v, cq, ck, sinks=np.full(4, 0.5, np.float32)))


# ---------------------------------------------------------------------------
# torch: each sequence padded into one batch with a key-padding mask
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("causal", [False, True])
def test_matches_torch_on_the_padded_batch(causal):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(14)
    lq = [7, 1, 30, 12]
    lk = lq  # torch's is_causal is upper-left: self-attention shapes
    hq, hkv, E = 6, 2, 32
    q, k, v, cq, ck = packed(rng, lq, lk, hq, hkv, E, dtype=np.float64)
    out = varlen(q, k, v, cq, ck, is_causal=causal)
    # Pad to (N, H, max, E) and mask the padding keys.
    N, Lmax = len(lq), max(lq)
    qp = np.zeros((N, hq, Lmax, E))
    kp = np.zeros((N, hkv, Lmax, E))
    vp = np.zeros((N, hkv, Lmax, E))
    mask = np.zeros((N, 1, Lmax, Lmax), bool)
    for n in range(N):
        qp[n, :, : lq[n]] = q[cq[n]:cq[n + 1]].transpose(1, 0, 2)
        kp[n, :, : lk[n]] = k[ck[n]:ck[n + 1]].transpose(1, 0, 2)
        vp[n, :, : lk[n]] = v[ck[n]:ck[n + 1]].transpose(1, 0, 2)
        visible = np.ones((lq[n], lk[n]), bool)
        if causal:
            visible = np.tril(visible)
        mask[n, 0, : lq[n], : lk[n]] = visible
        mask[n, 0, lq[n]:, 0] = True  # padding rows: anything finite
    got = torch.nn.functional.scaled_dot_product_attention(
        torch.from_numpy(qp), torch.from_numpy(kp), torch.from_numpy(vp),
        attn_mask=torch.from_numpy(mask), enable_gqa=True).numpy()
    for n in range(N):
        np.testing.assert_allclose(out[cq[n]:cq[n + 1]], got[n, :, : lq[n]].transpose(1, 0, 2),
                                   rtol=1e-12, atol=1e-12)


def test_takes_torch_tensors():
    # flash-attention's callers hold torch tensors (int32 cu_seqlens).
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(16)
    q, k, v, cq, ck = packed(rng, [3, 9, 1], [3, 12, 1], 4, 2, 16)
    want = varlen(q, k, v, cq, ck, is_causal="lower_right")
    got = varlen(*(torch.from_numpy(a) for a in (q, k, v)), torch.from_numpy(cq).int(),
                 torch.from_numpy(ck).int(), is_causal="lower_right")
    np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------------------
# Argument errors
# ---------------------------------------------------------------------------


@pytest.fixture
def args():
    rng = np.random.default_rng(15)
    q, k, v, cq, ck = packed(rng, [2, 3], [4, 1], 4, 2, 8, 6)
    return q, k, v, cq, ck


def test_cu_seqlens_errors(args):
    q, k, v, cq, ck = args
    with pytest.raises(TypeError, match="cu_seqlens_q"):
        varlen(q, k, v, cq.astype(np.float64), ck)
    with pytest.raises(TypeError, match="cu_seqlens_k"):
        varlen(q, k, v, cq, ck.astype(bool))
    with pytest.raises(ValueError, match="cu_seqlens_q"):
        varlen(q, k, v, cq[None], ck)
    with pytest.raises(ValueError, match="cu_seqlens_k"):
        varlen(q, k, v, cq, np.zeros(0, np.int64))
    with pytest.raises(ValueError, match="same length"):
        varlen(q, k, v, cq, np.array([0, 2, 3, 5]))
    with pytest.raises(ValueError, match="cu_seqlens_q must start at 0"):
        varlen(q, k, v, np.array([1, 2, 5]), ck)
    with pytest.raises(ValueError, match="cu_seqlens_q must end at total_q = 5"):
        varlen(q, k, v, np.array([0, 2, 4]), ck)
    with pytest.raises(ValueError, match="cu_seqlens_k must end at total_k = 5"):
        varlen(q, k, v, cq, np.array([0, 2, 6]))
    with pytest.raises(ValueError, match="cu_seqlens_k must end at total_k"):
        varlen(q, k, v, cq, np.array([0, 2, 2**63 + 5], np.uint64))
    with pytest.raises(ValueError, match="cu_seqlens_q must be non-decreasing"):
        varlen(q, k, v, np.array([0, 4, 3, 5]), np.array([0, 1, 2, 5]))


def test_shape_and_dtype_errors(args):
    q, k, v, cq, ck = args
    with pytest.raises(ValueError, match="query must have 3 dimensions"):
        varlen(q[None], k, v, cq, ck)
    with pytest.raises(ValueError, match="key must have 3 dimensions"):
        varlen(q, k[:, 0], v, cq, ck)
    with pytest.raises(ValueError, match="query must have at least 2"):
        varlen(q[0, 0], k, v, cq, ck)
    with pytest.raises(ValueError, match="feature size"):
        varlen(q[..., :7], k, v, cq, ck)
    with pytest.raises(ValueError, match="value of shape"):
        varlen(q, k, v[:4], cq, np.array([0, 3, 4]))
    with pytest.raises(ValueError, match="value of shape"):
        varlen(q, k, v[:, :1], cq, ck)
    with pytest.raises(ValueError, match=r"key/value heads \(3\) must divide query heads \(4\)"):
        varlen(q, np.zeros((5, 3, 8), np.float32), np.zeros((5, 3, 6), np.float32), cq, ck)
    with pytest.raises(TypeError, match="share one dtype"):
        varlen(q, k.astype(np.float64), v, cq, ck)
    with pytest.raises(TypeError, match="query: dtype int64"):
        varlen(q.astype(np.int64), k, v, cq, ck)
    with pytest.raises(TypeError, match="value: dtype complex"):
        varlen(q, k, v.astype(np.complex64), cq, ck)


def test_option_errors(args):
    q, k, v, cq, ck = args
    with pytest.raises(ValueError, match="is_causal"):
        varlen(q, k, v, cq, ck, is_causal="diagonal")
    with pytest.raises(TypeError, match="is_causal"):
        varlen(q, k, v, cq, ck, is_causal=1.0)
    with pytest.raises(ValueError, match="scale must be finite"):
        varlen(q, k, v, cq, ck, scale=float("nan"))
    with pytest.raises(TypeError, match="scale"):
        varlen(q, k, v, cq, ck, scale="1")
    with pytest.raises(ValueError, match="window left side must be >= 0"):
        varlen(q, k, v, cq, ck, window=-1)
    with pytest.raises(TypeError, match="window"):
        varlen(q, k, v, cq, ck, window=(1, 2, 3))
    with pytest.raises(TypeError, match="window right side"):
        varlen(q, k, v, cq, ck, window=(1, 2.5))
    with pytest.raises(TypeError, match="num_threads"):
        varlen(q, k, v, cq, ck, num_threads=1.5)
    with pytest.raises(ValueError, match="num_threads must be >= 1"):
        varlen(q, k, v, cq, ck, num_threads=0)
    with pytest.raises(TypeError, match="return_lse"):
        varlen(q, k, v, cq, ck, return_lse="yes")


def test_out_errors(args):
    q, k, v, cq, ck = args
    with pytest.raises(TypeError, match="out must be a numpy.ndarray"):
        varlen(q, k, v, cq, ck, out=[[0.0]])
    with pytest.raises(TypeError, match="out has dtype float64"):
        varlen(q, k, v, cq, ck, out=np.zeros((5, 4, 6)))
    with pytest.raises(ValueError, match=r"out has shape \(5, 4, 8\)"):
        varlen(q, k, v, cq, ck, out=np.zeros((5, 4, 8), np.float32))
    ro = np.zeros((5, 4, 6), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        varlen(q, k, v, cq, ck, out=ro)
    fused = np.zeros((5, 4, 6), np.float32)
    with pytest.raises(ValueError, match="out overlaps the memory of value"):
        varlen(q, k, fused[:, :2], cq, ck, out=fused)


def test_reference_checks_the_same_arguments(args):
    q, k, v, cq, ck = args
    with pytest.raises(TypeError, match="cu_seqlens_q"):
        reference.varlen_attention(q, k, v, cq.astype(np.float32), ck)
    with pytest.raises(ValueError, match="non-decreasing"):
        reference.varlen_attention(q, k, v, np.array([0, 4, 3, 5]), np.array([0, 1, 2, 5]))
    with pytest.raises(ValueError, match="must divide"):
        reference.varlen_attention(q, k[:, :1].repeat(3, 1), v[:, :1].repeat(3, 1), cq, ck)


# ---------------------------------------------------------------------------
# The pyattn-bench case (no timing assertions)
# ---------------------------------------------------------------------------


def test_bench_varlen_case_validates_and_times_the_padded_batch(tmp_path, capsys):
    import json

    from pyattn.bench import cli

    out_json = tmp_path / "bench.json"
    code = cli.main(["--smoke", "--threads", "1", "--case", "smoke-varlen-*", "--baselines", "torch",
                     "--no-roof", "--no-progress", "--json", str(out_json)])
    captured = capsys.readouterr()
    assert code == 0, captured.out + captured.err
    (row,) = json.loads(out_json.read_text())["results"]
    assert row["validation"]["ok"] and "all 6 sequences" in row["validation"]["checked"]
    assert set(row["side_by_side"]) == {"padded kv_lengths", "padded mask"}
    assert "x faster than pyattn on the padded batch with kv_lengths" in captured.out
    if "torch" in row["impls"]:  # torch installed: its padded-batch output agreed with pyattn's
        assert "output differs" not in row["notes"].get("torch", "")
