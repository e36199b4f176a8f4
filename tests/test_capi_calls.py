"""The C API (pyattn_capi.h, `cimport pyattn.capi`) called through
pyattn._capi_check, the package's own Cython user of capi.pxd: results
bitwise equal to the Python API's on the same arrays (every option the C
call has, strided, broadcast and empty arrays, every ISA and thread count),
and bad calls answered with a code and a message, nothing written."""

import numpy as np
import pytest

import pyattn
from pyattn import _capi_check as capi

sdpa = pyattn.scaled_dot_product_attention

OK, ERR_NULL, ERR_SHAPE, ERR_STRIDE, ERR_VALUE, ERR_VERSION = 0, 1, 2, 3, 4, 5


def spec(a):
    """(address, stride_b, stride_h, stride_row, stride_col) of a NumPy array
    with 4 or fewer dims (missing leading dims: stride 0), strides in elements."""
    if a is None:
        return (0, 0, 0, 0, 0)
    st = [s // a.itemsize for s in a.strides]
    return (a.ctypes.data, *([0] * (4 - a.ndim) + st))


def lse_spec(a):
    """lse (B, H, L): its strides as (b, h, row), column stride unused."""
    return (a.ctypes.data, *[s // a.itemsize for s in a.strides], 0)


def fields_for(q, k, v, out, *, mask=None, causal=0, window=(-1, -1), lengths=None, lse=None,
               weights=None, scale=None, num_threads=0):
    """The C call's fields for 4-d q (B, Hq, L, E), k/v (B, Hkv, S, E/Ev),
    out (B, Hq, L, Ev) and options (a mask of <= 4 dims, broadcast by stride 0)."""
    B, Hq, L, E = q.shape
    f = dict(dtype=0 if q.dtype == np.float32 else 1, B=B, Hq=Hq, Hkv=k.shape[1], L=L, S=k.shape[2],
             E=E, Ev=v.shape[3], q=spec(q), k=spec(k), v=spec(v), out=spec(out), causal=causal,
             window_left=window[0], window_right=window[1], num_threads=num_threads)
    if mask is not None:
        mb = np.broadcast_to(mask, (B, Hq, L, k.shape[2]))  # broadcast dims: stride 0
        f["mask_kind"] = 1 if mask.dtype == np.bool_ else 2
        f["mask"] = spec(mb)
    if lengths is not None:
        f["kv_lengths"] = lengths.ctypes.data
        f["kv_lengths_stride"] = lengths.strides[0] // lengths.itemsize
    if lse is not None:
        f["lse"] = lse_spec(lse)
    if weights is not None:
        f["weights"] = spec(weights)
    if scale is not None:
        f["scale"] = scale
    return f


def python_kwargs(*, mask=None, causal=0, window=(-1, -1), lengths=None, scale=None, gqa=False,
                  num_threads=None):
    kw = dict(is_causal={0: False, 1: "upper_left", 2: "lower_right"}[causal], enable_gqa=gqa)
    if mask is not None:
        kw["attn_mask"] = mask
    if window != (-1, -1):
        kw["window"] = tuple(None if w < 0 else w for w in window)
    if lengths is not None:
        kw["kv_lengths"] = lengths
    if scale is not None:
        kw["scale"] = scale
    if num_threads:
        kw["num_threads"] = num_threads
    return kw


def assert_same_bits(got, want):
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(np.ascontiguousarray(got).view(np.uint8),
                                  np.ascontiguousarray(want).view(np.uint8))


def strided(rng, shape, dtype, how):
    """A random array of `shape` laid out contiguously, as a view with gaps
    (sliced rows and features), or with reversed rows (negative stride)."""
    if how == "contiguous":
        return rng.standard_normal(shape).astype(dtype)
    if how == "gaps":
        big = rng.standard_normal(shape[:-2] + (2 * shape[-2] + 1, shape[-1] + 3)).astype(dtype)
        return big[..., 1::2, 2 : 2 + shape[-1]]
    if how == "reversed":
        return rng.standard_normal(shape).astype(dtype)[..., ::-1, :]
    raise ValueError(how)


CASES = [
    # (B, Hq, Hkv, L, S, E, Ev, options)
    (2, 4, 4, 7, 13, 16, 16, {}),
    (1, 1, 1, 1, 16, 64, 64, {"causal": 2}),
    (3, 8, 2, 1, 37, 32, 24, {"causal": 2, "lengths": True}),
    (2, 6, 3, 5, 29, 59, 33, {"causal": 1, "window": (4, -1), "lse": True}),
    (2, 4, 1, 9, 40, 8, 8, {"mask": "bool", "weights": True, "lse": True}),
    (2, 4, 2, 6, 21, 16, 12, {"mask": "float", "window": (3, 2), "scale": 0.3}),
    (1, 2, 2, 33, 33, 40, 40, {"mask": "bool_rows", "causal": 2, "lengths": True}),
    (2, 2, 1, 4, 70, 16, 16, {"mask": "float_heads", "weights": True}),
    (2, 3, 3, 0, 5, 8, 8, {"lse": True}),                    # no query rows
    (2, 3, 3, 4, 0, 8, 8, {"lse": True, "weights": True}),   # no keys: zeros, lse -inf
    (2, 3, 3, 4, 6, 0, 5, {"lse": True}),                    # E = 0: mean of the values
    (0, 3, 3, 4, 6, 8, 8, {}),                                # empty batch
    (1, 2, 2, 3, 5000, 64, 64, {"causal": 2, "lengths": True, "lse": True}),  # split-KV decoding
]


def make_case(rng, dtype, B, Hq, Hkv, L, S, E, Ev, opts, layout):
    q = strided(rng, (B, Hq, L, E), dtype, layout)
    k = strided(rng, (B, Hkv, S, E), dtype, layout)
    v = strided(rng, (B, Hkv, S, Ev), dtype, layout)
    mask = None
    kind = opts.get("mask")
    if kind == "bool":
        mask = rng.random((B, Hq, L, S)) < 0.8
    elif kind == "float":
        mask = np.where(rng.random((L, S)) < 0.2, -np.inf, rng.standard_normal((L, S))).astype(dtype)
    elif kind == "bool_rows":  # (B, 1, L, S): one mask per batch element, broadcast over heads
        mask = rng.random((B, 1, L, S)) < 0.7
    elif kind == "float_heads":  # (Hq, 1, S) strided: one row per head, broadcast over rows
        mask = rng.standard_normal((Hq, 1, 2 * S)).astype(dtype)[..., ::2]
    lengths = rng.integers(0, S + 1, B).astype(np.int64) if opts.get("lengths") else None
    return q, k, v, mask, lengths


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["contiguous", "gaps", "reversed"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "B{}Hq{}Hkv{}L{}S{}E{}Ev{}-{}".format(*c[:7], "-".join(c[7]) or "plain"))
def test_bitwise_equal_to_python_api(isa, dtype, layout, case):
    B, Hq, Hkv, L, S, E, Ev, opts = case
    rng = np.random.default_rng(7)
    q, k, v, mask, lengths = make_case(rng, dtype, B, Hq, Hkv, L, S, E, Ev, opts, layout)
    causal, window, scale = opts.get("causal", 0), opts.get("window", (-1, -1)), opts.get("scale")
    py = sdpa(q, k, v, return_weights=bool(opts.get("weights")), return_lse=bool(opts.get("lse")),
              **python_kwargs(mask=mask, causal=causal, window=window, lengths=lengths, scale=scale,
                              gqa=Hkv != Hq))
    py = py if isinstance(py, tuple) else (py,)
    for threads in (1, 2, 3):
        out = np.full((B, Hq, L, Ev), np.nan, dtype)
        lse = np.full((B, Hq, L), np.nan, dtype) if opts.get("lse") else None
        weights = np.full((B, Hq, L, S), np.nan, dtype) if opts.get("weights") else None
        f = fields_for(q, k, v, out, mask=mask, causal=causal, window=window, lengths=lengths,
                       lse=lse, weights=weights, scale=scale, num_threads=threads)
        assert capi.call(f) == (OK, "")
        got = (out,) + ((weights,) if weights is not None else ()) + ((lse,) if lse is not None else ())
        assert len(got) == len(py)
        for a, b in zip(got, py):
            assert_same_bits(a, b)


def per_head_spec(a):
    """A per-head option of shape (B, Hq) or (Hq,) (broadcast over B: stride_b 0)."""
    st = [x // a.itemsize for x in a.strides]
    return (a.ctypes.data, 0 if a.ndim == 1 else st[0], st[-1], 0, 0)


SCORE_CASES = [
    # (B, Hq, Hkv, L, S, E, causal, lengths, softcap, slopes, sinks, outputs)
    (2, 4, 4, 7, 13, 16, 0, False, 2.5, None, None, ""),
    (2, 4, 2, 6, 21, 16, 2, True, None, "H", None, "lse"),
    (2, 6, 3, 5, 29, 24, 1, False, None, None, "BH", "weights+lse"),
    (1, 8, 2, 1, 5000, 64, 2, True, 30.0, "H", "BH", "lse"),   # split-KV decoding: the sink counted once
    (2, 4, 1, 9, 40, 8, 0, False, 1.5, "BH strided", "H", "weights"),
    (2, 3, 3, 4, 0, 8, 0, False, 4.0, "H", "BH", "lse"),        # no keys: lse = sink
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", SCORE_CASES, ids=lambda c: "B{}Hq{}Hkv{}L{}S{}E{}".format(*c[:6]))
def test_score_variants_bitwise_equal_to_python_api(isa, dtype, case):
    """softcap, alibi_slopes and sinks through the C call: the Python API's bits."""
    B, Hq, Hkv, L, S, E, causal, with_lengths, softcap, slopes_kind, sinks_kind, outputs = case
    rng = np.random.default_rng(11)
    q, k, v = (rng.standard_normal(shape).astype(dtype) for shape in ((B, Hq, L, E), (B, Hkv, S, E), (B, Hkv, S, E)))
    lengths = rng.integers(0, S + 1, B).astype(np.int64) if with_lengths else None

    def per_head(kind, scale):
        if kind is None:
            return None
        if kind == "H":
            return (rng.standard_normal(Hq) * scale).astype(dtype)
        a = (rng.standard_normal((B, 2 * Hq)) * scale).astype(dtype)
        return a[:, ::2] if kind == "BH strided" else np.ascontiguousarray(a[:, :Hq])

    slopes = per_head(slopes_kind, 0.3)
    if slopes is not None:
        slopes = np.abs(slopes)
    sinks = per_head(sinks_kind, 2.0)
    if sinks is not None:
        sinks.reshape(-1)[0] = -np.inf  # a head with no sink
    kw = python_kwargs(causal=causal, lengths=lengths, gqa=Hkv != Hq)
    kw.update({name: x for name, x in (("softcap", softcap), ("alibi_slopes", slopes), ("sinks", sinks))
               if x is not None})
    py = sdpa(q, k, v, return_weights="weights" in outputs, return_lse="lse" in outputs, **kw)
    py = py if isinstance(py, tuple) else (py,)
    for threads in (1, 2):
        out = np.full((B, Hq, L, E), np.nan, dtype)
        lse = np.full((B, Hq, L), np.nan, dtype) if "lse" in outputs else None
        weights = np.full((B, Hq, L, S), np.nan, dtype) if "weights" in outputs else None
        f = fields_for(q, k, v, out, causal=causal, lengths=lengths, lse=lse, weights=weights,
                       num_threads=threads)
        if softcap is not None:
            f["softcap"] = softcap
        if slopes is not None:
            f["alibi_slopes"] = per_head_spec(slopes)
        if sinks is not None:
            f["sinks"] = per_head_spec(sinks)
        assert capi.call(f) == (OK, "")
        got = (out,) + ((weights,) if weights is not None else ()) + ((lse,) if lse is not None else ())
        for a, b in zip(got, py):
            assert_same_bits(a, b)


def test_strided_outputs_and_default_threads():
    """out, lse and weights as strided views into larger buffers (nothing
    outside them is written); num_threads 0 is pyattn's default."""
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal((2, 4, 6, 16)).astype(np.float32) for _ in range(3))
    want_out, want_w, want_lse = sdpa(q, k, v, is_causal=True, return_weights=True, return_lse=True)
    out_buf = np.full((2, 4, 6, 20), 7.0, np.float32)
    lse_buf = np.full((2, 4, 12), 7.0, np.float32)
    w_buf = np.full((2, 8, 6, 6), 7.0, np.float32)
    out, lse, weights = out_buf[..., 2:18], lse_buf[..., ::2], w_buf[:, ::2]
    f = fields_for(q, k, v, out, causal=1, lse=lse, weights=weights)
    assert capi.call(f) == (OK, "")
    np.testing.assert_array_equal(out, want_out)
    np.testing.assert_array_equal(lse, want_lse)
    np.testing.assert_array_equal(weights, want_w)
    assert (out_buf[..., :2] == 7).all() and (out_buf[..., 18:] == 7).all()
    assert (lse_buf[..., 1::2] == 7).all() and (w_buf[:, 1::2] == 7).all()


def test_bool_mask_bytes_other_than_one():
    """A bool mask is one byte per element: 0 hides, any other value may attend."""
    rng = np.random.default_rng(6)
    q, k, v = (rng.standard_normal((2, 3, 4, 16)).astype(np.float32) for _ in range(3))
    mask = rng.random((2, 3, 4, 4)) < 0.6
    mask[..., 0] = True
    raw = np.where(mask, rng.integers(1, 256, mask.shape), 0).astype(np.uint8)
    out = np.empty_like(q)
    f = fields_for(q, k, v, out, mask=mask)
    f["mask"] = spec(raw)
    assert capi.call(f) == (OK, "")
    assert_same_bits(out, sdpa(q, k, v, attn_mask=mask))


def test_window_wider_than_any_distance():
    rng = np.random.default_rng(4)
    q, k, v = (rng.standard_normal((1, 2, 5, 8)) for _ in range(3))
    out = np.empty_like(q)
    assert capi.call(fields_for(q, k, v, out, window=(2**62, 2**62), causal=2)) == (OK, "")
    np.testing.assert_array_equal(out, sdpa(q, k, v, is_causal="lower_right", window=(2**62, 2**62)))


def test_header_and_table_versions():
    size, version = capi.sizes()
    assert version == pyattn._core.CAPI_VERSION >= 1
    assert size % 8 == 0 and size >= 8 * 30
    assert capi.version() == pyattn.__version__


# ---------------------------------------------------------------------------
# Errors: a code and a message, nothing written
# ---------------------------------------------------------------------------


@pytest.fixture
def good():
    """A valid float32 call whose out is poisoned with NaN, with lse and a mask."""
    rng = np.random.default_rng(5)
    q = rng.standard_normal((2, 4, 3, 8)).astype(np.float32)
    k = rng.standard_normal((2, 2, 5, 8)).astype(np.float32)
    v = rng.standard_normal((2, 2, 5, 6)).astype(np.float32)
    out = np.full((2, 4, 3, 6), np.nan, np.float32)
    lse = np.full((2, 4, 3), np.nan, np.float32)
    mask = np.ones((3, 5), bool)
    lengths = np.array([5, 2], np.int64)
    f = fields_for(q, k, v, out, mask=mask, lengths=lengths, lse=lse, causal=2)
    assert capi.call(dict(f)) == (OK, "")
    keep = dict(q=q, k=k, v=v, mask=mask, lengths=lengths)
    out[...] = np.nan
    lse[...] = np.nan
    return f, out, lse, keep


def with_field(f, name, index=None, value=None):
    f = dict(f)
    if index is None:
        f[name] = value
    else:
        t = list(f[name])
        t[index] = value
        f[name] = tuple(t)
    return f


BAD = [
    # (field, index in the array spec or None, value, code, words of the message)
    ("q", 0, 0, ERR_NULL, ["q.data", "NULL"]),
    ("k", 0, 0, ERR_NULL, ["k.data", "NULL"]),
    ("v", 0, 0, ERR_NULL, ["v.data", "NULL"]),
    ("out", 0, 0, ERR_NULL, ["out.data", "NULL"]),
    ("mask", 0, 0, ERR_NULL, ["mask.data", "NULL"]),
    ("q", 4, 2, ERR_STRIDE, ["q.stride_col", "1", "2"]),
    ("v", 4, -1, ERR_STRIDE, ["v.stride_col"]),
    ("out", 4, 0, ERR_STRIDE, ["out.stride_col"]),
    ("k", 3, 2**62, ERR_STRIDE, ["k", "64-bit"]),
    ("q", 1, -(2**63), ERR_STRIDE, ["q", "64-bit"]),
    ("L", None, -1, ERR_SHAPE, ["L", ">= 0", "-1"]),
    ("Ev", None, -3, ERR_SHAPE, ["Ev", "-3"]),
    ("Hkv", None, 3, ERR_SHAPE, ["Hkv (3)", "Hq (4)"]),
    ("Hkv", None, 0, ERR_SHAPE, ["Hkv (0)"]),
    ("S", None, 2**61, ERR_SHAPE, ["fit in 64 bits"]),
    ("dtype", None, 2, ERR_VALUE, ["dtype", "got 2"]),
    ("causal", None, 3, ERR_VALUE, ["causal", "got 3"]),
    ("mask_kind", None, -1, ERR_VALUE, ["mask_kind"]),
    ("window_left", None, -2, ERR_VALUE, ["window", "-2"]),
    ("num_threads", None, -1, ERR_VALUE, ["num_threads", "-1"]),
    ("scale", None, float("inf"), ERR_VALUE, ["scale", "finite"]),
    ("struct_size", None, 16, ERR_VERSION, ["struct_size", "16", "pyattn_sdpa_params_init"]),
]


@pytest.mark.parametrize("field,index,value,code,words", BAD, ids=lambda x: str(x)[:20])
def test_bad_call_returns_code_and_message(good, field, index, value, code, words):
    f, out, lse, _ = good
    bad = with_field(f, field, index, value)
    rc, msg = capi.call(bad)
    assert rc == code, msg
    for w in words:
        assert w in msg, (w, msg)
    assert capi.call_without_error(bad) == code
    assert np.isnan(out).all() and np.isnan(lse).all()  # nothing written


def test_bad_score_variants(good):
    """softcap, ALiBi slopes and sinks break their rules: ERR_VALUE naming the
    field (and the batch element and head of a bad per-head value), or
    ERR_STRIDE / overlap like any array; nothing written."""
    f, out, lse, _ = good
    for c in (-1.0, float("inf"), float("nan")):
        rc, msg = capi.call(with_field(f, "softcap", value=c))
        assert rc == ERR_VALUE and "softcap" in msg, msg
    slopes = np.full(4, 0.5, np.float32)
    slopes[2] = np.inf
    rc, msg = capi.call(with_field(f, "alibi_slopes", value=per_head_spec(slopes)))
    assert rc == ERR_VALUE and "alibi_slopes" in msg and "head 2" in msg, msg
    sinks = np.zeros((2, 4), np.float32)
    sinks[1, 3] = np.nan
    rc, msg = capi.call(with_field(f, "sinks", value=per_head_spec(sinks)))
    assert rc == ERR_VALUE and "sinks" in msg and "batch 1, head 3" in msg, msg
    rc, msg = capi.call(with_field(f, "sinks", value=(sinks.ctypes.data, 2**62, 1, 0, 0)))
    assert rc == ERR_STRIDE and "sinks" in msg, msg
    ok_sinks = np.zeros((2, 4), np.float32)
    rc, msg = capi.call(with_field(with_field(f, "sinks", value=per_head_spec(ok_sinks)), "lse", 0,
                                   ok_sinks.ctypes.data))
    assert rc == ERR_VALUE and "lse overlaps sinks" in msg, msg
    assert np.isnan(out).all() and np.isnan(lse).all()


def test_old_struct_without_score_fields(good):
    """A caller compiled before the score fields (struct_size up to `scale`):
    whatever lies beyond its struct is not read."""
    f, out, _, keep = good
    size, _ = capi.sizes()
    v1 = size - 8 - 2 * 40  # without softcap (a double) and two pyattn_arrays
    rc, msg = capi.call(dict(f, struct_size=v1, softcap=-1.0))
    assert (rc, msg) == (OK, "")
    want = sdpa(keep["q"], keep["k"], keep["v"], attn_mask=keep["mask"], kv_lengths=keep["lengths"],
                is_causal="lower_right", enable_gqa=True)
    assert_same_bits(out, want)


def test_kv_lengths_out_of_range(good):
    f, out, _, keep = good
    for n in (-1, 6):
        keep["lengths"][1] = n
        rc, msg = capi.call(f)
        assert rc == ERR_VALUE and f"kv_lengths[1] = {n}" in msg and "S = 5" in msg
    assert np.isnan(out).all()


def test_out_overlapping_an_input(good):
    f, out, lse, keep = good
    q = keep["q"]
    # out over q's memory (same byte extents are enough to refuse)
    rc, msg = capi.call(with_field(f, "out", 0, q.ctypes.data))
    assert rc == ERR_VALUE and "out overlaps q" in msg
    rc, msg = capi.call(with_field(f, "lse", 0, out.ctypes.data + 4))
    assert rc == ERR_VALUE and "overlaps" in msg
    assert np.isnan(out).all() and np.isnan(lse).all()


def test_null_params_and_struct_versions(good):
    assert capi.call_null_params() == (ERR_NULL, "params is NULL")
    f, out, _, _ = good
    size, _ = capi.sizes()
    # A newer caller's struct (larger, with fields this core does not know):
    # all-zero extra fields are accepted, non-zero ones refused.
    assert capi.call_extended(f, bytes(16)) == (OK, "")
    assert not np.isnan(out).any()
    out[...] = np.nan
    rc, msg = capi.call_extended(f, bytes(8) + b"\x01" + bytes(7))
    assert rc == ERR_VERSION and "newer pyattn" in msg and str(size + 16) in msg
    assert np.isnan(out).all()


def test_empty_arrays_may_be_null():
    """Arrays with no elements are never read or written: NULL is fine."""
    assert capi.call(dict(B=2, Hq=2, Hkv=2, L=0, S=0, E=8, Ev=8)) == (OK, "")
    lse = np.full((2, 2, 3), np.nan, np.float32)
    q = np.ones((2, 2, 3, 8), np.float32)
    f = dict(B=2, Hq=2, Hkv=2, L=3, S=0, E=8, Ev=0, q=spec(q), lse=lse_spec(lse))
    assert capi.call(f) == (OK, "")  # no keys: lse -inf; k, v and out (Ev = 0) empty
    assert (lse == -np.inf).all()


def test_header_and_pxd_are_shipped():
    import os

    assert os.path.isfile(os.path.join(pyattn.get_include(), "pyattn_capi.h"))
    assert os.path.isfile(os.path.join(os.path.dirname(pyattn.__file__), "capi.pxd"))
