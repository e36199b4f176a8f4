"""pyattn.MultiHeadAttention and pyattn.KVCache (SPEC section 4).

MultiHeadAttention is compared with torch.nn.MultiheadAttention: the torch
module runs in float64 (the reference) and pyattn in float32 or float64 with
the same weights, so the SPEC section 7 tolerances apply as they are. Grouped
query attention has no torch equivalent: it is checked against a float64
NumPy recomputation through pyattn.reference, and against a torch module
whose key/value projections repeat each kv head over its query group.
KVCache decoding is checked against full causal attention (the reference).
"""

from __future__ import annotations

import contextlib

import zlib

import numpy as np
import pytest

import pyattn
from helpers import assert_close, reference

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
DTYPES = [pytest.param(F32, id="float32"), pytest.param(F64, id="float64")]


def rng_for(*key):
    # A seed from the key's text (hash() of a str changes with every process).
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


# ---------------------------------------------------------------------------
# torch helpers (every test that uses them skips without torch)
# ---------------------------------------------------------------------------


def torch_or_skip():
    return pytest.importorskip("torch")


def torch_mha(torch, E, H, *, bias=True, kdim=None, vdim=None, batch_first=False, seed=0):
    """A float64 torch module with random (also nonzero bias) weights."""
    torch.manual_seed(seed)
    m = torch.nn.MultiheadAttention(E, H, bias=bias, kdim=kdim, vdim=vdim, batch_first=batch_first,
                                    dtype=torch.float64)
    if bias:
        with torch.no_grad():
            m.in_proj_bias.normal_(0, 0.5)
            m.out_proj.bias.normal_(0, 0.5)
    return m.eval()


def t(torch, x):
    return None if x is None else torch.from_numpy(np.ascontiguousarray(x))


def run_torch(torch, m, q, k, v, **kw):
    """The torch module on float64 copies; masks converted to tensors."""
    args = [t(torch, np.asarray(a, np.float64)) for a in (q, k, v)]
    if q is k:
        args[1] = args[0]
    if v is k:
        args[2] = args[1]
    for name in ("key_padding_mask", "attn_mask"):
        if kw.get(name) is not None:
            m_ = np.asarray(kw[name])
            kw[name] = t(torch, m_ if m_.dtype == np.bool_ else m_.astype(np.float64))
    out, w = m(*args, **kw)
    return out.detach().numpy(), None if w is None else w.detach().numpy()


def check_vs_torch(torch, m, p, q, k, v, dtype, **kw):
    """pyattn layer p (dtype) vs torch module m (float64) on the same inputs."""
    cast = {id(a): a.astype(dtype) for a in (q, k, v)}
    qd, kd, vd = cast[id(q)], cast[id(k)], cast[id(v)]
    want_o, want_w = run_torch(torch, m, q, k, v, **dict(kw))
    got_o, got_w = p(qd, kd, vd, **kw)
    assert got_o.dtype == dtype and got_o.shape == want_o.shape
    assert_close(got_o, want_o, dtype, "attn_output")
    if want_w is None:
        assert got_w is None
    else:
        assert got_w.dtype == dtype and got_w.shape == want_w.shape
        assert_close(got_w, want_w, dtype, "attn_weights")
    return got_o, got_w


def inputs(rng, L, S, B, E, kdim=None, vdim=None, batch_first=False, mode="self"):
    """float64 query/key/value; mode 'self' (one array), 'kv' (key is value),
    'distinct' (three arrays)."""
    def shape(n, d):
        return (B, n, d) if batch_first else (n, B, d)

    q = rng.standard_normal(shape(L, E))
    if mode == "self":
        return q, q, q
    k = rng.standard_normal(shape(S, kdim or E))
    if mode == "kv":
        return q, k, k
    return q, k, rng.standard_normal(shape(S, vdim or E))


# ---------------------------------------------------------------------------
# MultiHeadAttention vs torch.nn.MultiheadAttention
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_first", [False, True], ids=["seq_first", "batch_first"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("mode", ["self", "kv", "distinct", "kdim_vdim"])
@pytest.mark.parametrize("weights", ["avg", "per_head", "none"])
def test_mha_matches_torch(dtype, batch_first, bias, mode, weights):
    torch = torch_or_skip()
    E, H, L, S, B = 24, 4, 7, 9, 3
    kdim, vdim = (10, 14) if mode == "kdim_vdim" else (None, None)
    m = torch_mha(torch, E, H, bias=bias, kdim=kdim, vdim=vdim, batch_first=batch_first)
    p = pyattn.MultiHeadAttention.from_torch(m, dtype=dtype)
    assert p.batch_first == batch_first and p.bias == bias and p.kdim == (kdim or E) and p.vdim == (vdim or E)
    rng = rng_for("mha", mode, batch_first)
    q, k, v = inputs(rng, L, L if mode == "self" else S, B, E, kdim, vdim, batch_first,
                     "distinct" if mode == "kdim_vdim" else mode)
    kw = dict(need_weights=weights != "none", average_attn_weights=weights == "avg")
    _, w = check_vs_torch(torch, m, p, q, k, v, dtype, **kw)
    if weights != "none":
        Sx = k.shape[1 if batch_first else 0]
        assert w.shape == ((B, L, Sx) if weights == "avg" else (B, H, L, Sx))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mask_kind", ["none", "kpm", "attn2d", "attn3d", "both"])
@pytest.mark.parametrize("average", [True, False])
def test_mha_unbatched(dtype, mask_kind, average):
    torch = torch_or_skip()
    E, H, L, S = 16, 2, 5, 6
    m = torch_mha(torch, E, H, batch_first=True)
    p = pyattn.MultiHeadAttention.from_torch(m, dtype=dtype)
    rng = rng_for("unbatched", mask_kind)
    q, kv = rng.standard_normal((L, E)), rng.standard_normal((S, E))
    kw = dict(average_attn_weights=average)
    if mask_kind in ("kpm", "both"):
        kpm = rng.random(S) < 0.4
        kpm[0] = False
        kw["key_padding_mask"] = kpm
    if mask_kind in ("attn2d", "both"):
        am = rng.random((L, S)) < 0.4
        am[:, 0] = False
        kw["attn_mask"] = am
    if mask_kind == "attn3d":
        kw["attn_mask"] = rng.standard_normal((H, L, S))
    out, w = check_vs_torch(torch, m, p, q, kv, kv, dtype, **kw)
    assert out.shape == (L, E)
    assert w.shape == ((L, S) if average else (H, L, S))


def random_masks(rng, kind_kpm, kind_attn, B, H, L, S, attn_ndim):
    """Masks in torch's module convention; key 0 stays visible for every row
    (torch gives NaN for rows that see nothing)."""
    kw = {}
    if kind_kpm == "bool":
        kpm = rng.random((B, S)) < 0.4
        kpm[:, 0] = False
        kw["key_padding_mask"] = kpm
    elif kind_kpm == "float":
        kpm = rng.standard_normal((B, S))
        kpm[rng.random((B, S)) < 0.3] = -np.inf
        kpm[:, 0] = 0.5
        kw["key_padding_mask"] = kpm
    shape = (L, S) if attn_ndim == 2 else (B * H, L, S)
    if kind_attn == "bool":
        am = rng.random(shape) < 0.5
        am[..., 0] = False
        kw["attn_mask"] = am
    elif kind_attn == "float":
        am = 2.0 * rng.standard_normal(shape)
        am[rng.random(shape) < 0.3] = -np.inf
        am[..., 0] = -1.0
        kw["attn_mask"] = am
    return kw


MASK_CASES = [(kpm, attn, nd) for kpm in ("none", "bool", "float") for attn in ("none", "bool", "float")
              for nd in (2, 3) if not (attn == "none" and nd == 3)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kpm,attn,attn_ndim", MASK_CASES)
@pytest.mark.parametrize("need_weights", [True, False])
def test_mha_masks_match_torch(dtype, kpm, attn, attn_ndim, need_weights):
    torch = torch_or_skip()
    E, H, L, S, B = 16, 4, 6, 11, 2
    m = torch_mha(torch, E, H, batch_first=True)
    p = pyattn.MultiHeadAttention.from_torch(m, dtype=dtype)
    rng = rng_for("masks", kpm, attn, attn_ndim)
    q, k, v = inputs(rng, L, S, B, E, batch_first=True, mode="kv")
    kw = random_masks(rng, kpm, attn, B, H, L, S, attn_ndim)
    # torch warns when the two masks have different types (deprecated there, supported here)
    with pytest.warns(UserWarning) if kpm != "none" and attn != "none" and kpm != attn else contextlib.nullcontext():
        check_vs_torch(torch, m, p, q, k, v, dtype, need_weights=need_weights, **kw)


def causal_bool(L, S):
    return np.triu(np.ones((L, S), bool), 1)  # torch module convention: True = NOT allowed


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mask_type", ["bool", "float"])
@pytest.mark.parametrize("need_weights", [True, False])
@pytest.mark.parametrize("with_kpm", [False, True])
@pytest.mark.parametrize("batch_first", [False, True], ids=["seq_first", "batch_first"])
def test_mha_is_causal_with_causal_mask(dtype, mask_type, need_weights, with_kpm, batch_first):
    torch = torch_or_skip()
    E, H, L, B = 16, 2, 8, 3
    m = torch_mha(torch, E, H, batch_first=batch_first)
    p = pyattn.MultiHeadAttention.from_torch(m, dtype=dtype)
    rng = rng_for("causal", mask_type, with_kpm)
    q, k, v = inputs(rng, L, L, B, E, batch_first=batch_first, mode="self")
    am = causal_bool(L, L)
    if mask_type == "float":
        am = np.where(am, -np.inf, 0.0)
    kw = dict(attn_mask=am, is_causal=True, need_weights=need_weights)
    if with_kpm:
        kpm = rng.random((B, L)) < 0.3
        kpm[:, 0] = False
        kw["key_padding_mask"] = kpm if mask_type == "bool" else np.where(kpm, -np.inf, 0.0)
    check_vs_torch(torch, m, p, q, k, v, dtype, **kw)
    # the hint changes nothing when it is true
    got_hint = p(q.astype(dtype), q.astype(dtype), q.astype(dtype), **kw)[0]
    kw.pop("is_causal")
    got_mask = p(q.astype(dtype), q.astype(dtype), q.astype(dtype), **kw)[0]
    assert_close(got_hint, got_mask, dtype)


@pytest.mark.parametrize("need_weights", [False, True])
def test_mha_is_causal_hint_semantics_match_torch(need_weights):
    """torch 2.13 (its documented functional path): with is_causal=True, no
    key_padding_mask and need_weights=False the causal rule replaces
    attn_mask; otherwise attn_mask is applied and the hint is unused. Shown
    with a mask that is NOT causal, so the two rules differ."""
    torch = torch_or_skip()
    E, H, L, B = 16, 2, 6, 2
    m = torch_mha(torch, E, H, batch_first=True)
    p = pyattn.MultiHeadAttention.from_torch(m, dtype=F64)
    rng = rng_for("hint", need_weights)
    q, k, v = inputs(rng, L, L, B, E, batch_first=True)
    not_causal = np.zeros((L, L))
    not_causal[1:, 0] = -np.inf
    kw = dict(attn_mask=not_causal, is_causal=True, need_weights=need_weights)
    got, _ = check_vs_torch(torch, m, p, q, k, v, F64, **kw)
    causal = p(q, q, q, attn_mask=causal_bool(L, L), need_weights=False)[0]
    masked = p(q, q, q, attn_mask=not_causal, need_weights=False)[0]
    assert_close(got, causal if not need_weights else masked, F64)
    assert not np.allclose(causal, masked)


def test_mha_is_causal_needs_attn_mask():
    p = pyattn.MultiHeadAttention(8, 2)
    x = np.zeros((3, 1, 8), np.float32)
    with pytest.raises(ValueError, match="is_causal=True needs attn_mask"):
        p(x, x, x, is_causal=True)
    with pytest.raises(TypeError, match="is_causal"):
        p(x, x, x, attn_mask=causal_bool(3, 3), is_causal="lower_right")
    torch = pytest.importorskip("torch")  # torch refuses it too (RuntimeError on its functional path)
    m = torch_mha(torch, 8, 2)
    with pytest.raises(RuntimeError, match="Need attn_mask"):
        m(*(t(torch, x.astype(np.float64)),) * 3, is_causal=True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_mha_float32_torch_module(dtype):
    """A float32 torch module copied as is (from_torch keeps float32); both
    sides round in float32, compared with the same SPEC tolerance."""
    torch = torch_or_skip()
    torch.manual_seed(1)
    E, H, L, B = 32, 4, 10, 2
    tdt = torch.float64 if dtype == F64 else torch.float32
    m = torch.nn.MultiheadAttention(E, H, batch_first=True, dtype=tdt).eval()
    p = pyattn.MultiHeadAttention.from_torch(m)
    assert p.dtype == dtype
    x = np.random.default_rng(3).standard_normal((B, L, E)).astype(dtype)
    am = causal_bool(L, L)
    with torch.no_grad():  # torch's native fast path
        for kw in (dict(), dict(attn_mask=am), dict(need_weights=False, attn_mask=am)):
            xt = torch.from_numpy(x)
            tm = None if "attn_mask" not in kw else torch.from_numpy(kw["attn_mask"])
            want_o, want_w = m(xt, xt, xt, **{**kw, **({"attn_mask": tm} if tm is not None else {})})
            got_o, got_w = p(x, x, x, **kw)
            assert_close(got_o, want_o.numpy(), dtype, "out")
            if want_w is not None:
                assert_close(got_w, want_w.numpy(), dtype, "weights")


@pytest.mark.parametrize("dtype", DTYPES)
def test_mha_fully_masked_rows_are_zero_not_nan(dtype):
    """Where torch gives NaN (a row that sees no key), pyattn's attention is
    zero, so the layer output is out_proj_bias and the weights row is zero;
    every other row matches torch."""
    torch = torch_or_skip()
    E, H, L, S, B = 16, 2, 4, 5, 3
    m = torch_mha(torch, E, H, batch_first=True)
    p = pyattn.MultiHeadAttention.from_torch(m, dtype=dtype)
    rng = rng_for("fully masked")
    q, k, v = inputs(rng, L, S, B, E, batch_first=True, mode="kv")
    kpm = np.zeros((B, S), bool)
    kpm[1] = True  # batch element 1 sees nothing
    am = np.zeros((L, S), bool)
    am[2] = True  # query row 2 sees nothing
    for need_weights in (True, False):
        want_o, want_w = run_torch(torch, m, q, k, v, key_padding_mask=kpm, attn_mask=am,
                                   need_weights=need_weights, average_attn_weights=False)
        got_o, got_w = p(q.astype(dtype), k.astype(dtype), k.astype(dtype), key_padding_mask=kpm,
                         attn_mask=am, need_weights=need_weights, average_attn_weights=False)
        assert np.isfinite(got_o).all()
        dead = np.zeros((B, L), bool)
        dead[1] = True
        dead[:, 2] = True
        np.testing.assert_array_equal(got_o[dead], np.broadcast_to(p.out_proj_bias, got_o[dead].shape))
        assert_close(got_o[~dead], want_o[~dead], dtype)
        if need_weights:
            assert np.isnan(want_w[1]).all()  # torch's behaviour there
            dead_w = np.broadcast_to(dead[:, None, :], (B, H, L))
            assert (got_w[dead_w] == 0).all()
            assert_close(got_w[~dead_w], want_w[~dead_w], dtype)


def test_mha_empty_dimensions():
    p = pyattn.MultiHeadAttention(8, 2, batch_first=True)
    out, w = p(np.zeros((0, 3, 8), np.float32), np.zeros((0, 4, 8), np.float32), np.zeros((0, 4, 8), np.float32))
    assert out.shape == (0, 3, 8) and w.shape == (0, 3, 4)
    q = np.random.default_rng(0).standard_normal((2, 3, 8)).astype(np.float32)
    out, w = p(q, np.zeros((2, 0, 8), np.float32), np.zeros((2, 0, 8), np.float32))
    assert out.shape == (2, 3, 8) and w.shape == (2, 3, 0)
    np.testing.assert_array_equal(out, np.broadcast_to(p.out_proj_bias, out.shape))


# ---------------------------------------------------------------------------
# parameters: from_torch, load_state_dict, state_dict, init
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kdim", [None, 6])
@pytest.mark.parametrize("bias", [True, False])
def test_load_state_dict_from_torch(kdim, bias):
    torch = torch_or_skip()
    E, H = 12, 3
    m = torch_mha(torch, E, H, bias=bias, kdim=kdim, vdim=kdim)
    sd = m.state_dict()
    p = pyattn.MultiHeadAttention(E, H, bias=bias, kdim=kdim, vdim=kdim, dtype=np.float64)
    p.load_state_dict(sd)  # torch tensors
    ours = p.state_dict()
    assert set(ours) == set(sd)
    for key, value in sd.items():
        np.testing.assert_array_equal(ours[key], value.numpy())
        assert ours[key].dtype == np.float64
    # NumPy values, loaded into a float32 layer
    p32 = pyattn.MultiHeadAttention(E, H, bias=bias, kdim=kdim, vdim=kdim)
    p32.load_state_dict({key: value.numpy() for key, value in sd.items()})
    for key, value in p32.state_dict().items():
        assert value.dtype == np.float32
        np.testing.assert_array_equal(value, sd[key].numpy().astype(np.float32))
    # a round trip through state_dict gives the same layer
    p2 = pyattn.MultiHeadAttention(E, H, bias=bias, kdim=kdim, vdim=kdim, dtype=np.float64, rng=5)
    p2.load_state_dict(p.state_dict())
    rng = rng_for("roundtrip")
    x, y = rng.standard_normal((4, 2, E)), rng.standard_normal((5, 2, kdim or E))
    np.testing.assert_array_equal(p(x, y, y)[0], p2(x, y, y)[0])
    # and the same results as torch
    check_vs_torch(torch, m, p, x, y, y, F64)


def test_load_state_dict_copies_and_requires_grad_tensors():
    torch = torch_or_skip()
    m = torch_mha(torch, 8, 2)  # parameters require grad: converted with .detach()
    p = pyattn.MultiHeadAttention(8, 2, dtype=np.float64)
    p.load_state_dict(dict(m.named_parameters()))
    before = p.in_proj_weight.copy()
    with torch.no_grad():
        m.in_proj_weight.add_(1.0)
    np.testing.assert_array_equal(p.in_proj_weight, before)  # a copy, not a view


def test_from_torch_bfloat16_module_becomes_float32():
    torch = torch_or_skip()
    m = torch.nn.MultiheadAttention(8, 2, dtype=torch.bfloat16)
    p = pyattn.MultiHeadAttention.from_torch(m)
    assert p.dtype == np.float32
    np.testing.assert_array_equal(p.in_proj_weight, m.in_proj_weight.detach().float().numpy())


def test_from_torch_refuses_unsupported_modules():
    torch = torch_or_skip()
    with pytest.raises(ValueError, match="add_bias_kv"):
        pyattn.MultiHeadAttention.from_torch(torch.nn.MultiheadAttention(8, 2, add_bias_kv=True))
    with pytest.raises(ValueError, match="add_zero_attn"):
        pyattn.MultiHeadAttention.from_torch(torch.nn.MultiheadAttention(8, 2, add_zero_attn=True))


def test_load_state_dict_errors_leave_the_layer_unchanged():
    p = pyattn.MultiHeadAttention(8, 2)
    good = {key: np.ones_like(value) for key, value in p.state_dict().items()}
    before = {key: value.copy() for key, value in p.state_dict().items()}

    def unchanged():
        for key, value in p.state_dict().items():
            np.testing.assert_array_equal(value, before[key])

    with pytest.raises(KeyError, match="out_proj.bias"):
        p.load_state_dict({k: v for k, v in good.items() if k != "out_proj.bias"})
    unchanged()
    with pytest.raises(KeyError, match="bias_k"):
        p.load_state_dict({**good, "bias_k": np.zeros((1, 1, 8), np.float32)})
    unchanged()
    p.load_state_dict({**good, "bias_k": np.zeros((1, 1, 8))}, strict=False)  # ignored
    np.testing.assert_array_equal(p.in_proj_weight, 1)
    p.load_state_dict(before)
    with pytest.raises(ValueError, match=r"in_proj_weight.*\(24, 8\)"):
        p.load_state_dict({**good, "in_proj_weight": np.ones((8, 24), np.float32)})
    unchanged()
    with pytest.raises(ValueError, match=r"out_proj.weight"):
        p.load_state_dict({**good, "out_proj.weight": np.ones(64, np.float32)})
    unchanged()
    with pytest.raises(TypeError, match="in_proj_bias"):
        p.load_state_dict({**good, "in_proj_bias": np.ones(24, np.int64)})
    unchanged()
    q = pyattn.MultiHeadAttention(8, 2, kdim=4)
    with pytest.raises(KeyError, match="q_proj_weight"):
        q.load_state_dict(good)


def test_init_is_deterministic_and_like_torch():
    a = pyattn.MultiHeadAttention(64, 4)
    b = pyattn.MultiHeadAttention(64, 4)
    c = pyattn.MultiHeadAttention(64, 4, rng=1)
    d = pyattn.MultiHeadAttention(64, 4, rng=np.random.default_rng(1))
    for key in a.state_dict():
        np.testing.assert_array_equal(a.state_dict()[key], b.state_dict()[key])
        np.testing.assert_array_equal(c.state_dict()[key], d.state_dict()[key])
        assert a.state_dict()[key].dtype == np.float32
    assert not np.array_equal(a.in_proj_weight, c.in_proj_weight)
    bound = np.sqrt(6 / (64 + 3 * 64))  # xavier_uniform of (3E, E)
    assert np.abs(a.in_proj_weight).max() <= bound and np.abs(a.in_proj_weight).max() > 0.9 * bound
    assert np.abs(a.out_proj_weight).max() <= 1 / 8
    assert (a.in_proj_bias == 0).all() and (a.out_proj_bias == 0).all()
    e = pyattn.MultiHeadAttention(64, 4, kdim=32, vdim=16, bias=False, dtype=np.float64)
    assert e.in_proj_weight is None and e.in_proj_bias is None and e.out_proj_bias is None
    assert e.q_proj_weight.shape == (64, 64) and e.k_proj_weight.shape == (64, 32)
    assert e.v_proj_weight.shape == (64, 16) and e.v_proj_weight.dtype == np.float64
    assert set(e.state_dict()) == {"q_proj_weight", "k_proj_weight", "v_proj_weight", "out_proj.weight"}


# ---------------------------------------------------------------------------
# grouped-query attention
# ---------------------------------------------------------------------------


def gqa_reference(p, query, key, value, key_padding_mask=None, attn_mask=None):
    """float64 recomputation of a batch_first GQA layer through pyattn.reference."""
    E, H, Hkv, hd = p.embed_dim, p.num_heads, p.num_kv_heads, p.head_dim
    kvd = Hkv * hd
    sd = {k: np.asarray(v, np.float64) for k, v in p.state_dict().items()}
    if p._qkv_same_embed_dim:
        wq, wk, wv = np.split(sd["in_proj_weight"], [E, E + kvd])
    else:
        wq, wk, wv = sd["q_proj_weight"], sd["k_proj_weight"], sd["v_proj_weight"]
    bq, bk, bv = np.split(sd["in_proj_bias"], [E, E + kvd]) if p.bias else (0, 0, 0)
    B, L, S = query.shape[0], query.shape[1], key.shape[1]
    q = (query @ wq.T + bq).reshape(B, L, H, hd).transpose(0, 2, 1, 3)
    k = (key @ wk.T + bk).reshape(B, S, Hkv, hd).transpose(0, 2, 1, 3)
    v = (value @ wv.T + bv).reshape(B, S, Hkv, hd).transpose(0, 2, 1, 3)
    visible = np.ones((B, H, L, S), bool)
    if key_padding_mask is not None:
        visible &= ~key_padding_mask[:, None, None, :]
    if attn_mask is not None:
        visible &= ~attn_mask.reshape((B, H, L, S) if attn_mask.ndim == 3 else (L, S))
    o, w = reference.scaled_dot_product_attention(q, k, v, attn_mask=visible, enable_gqa=True,
                                                  return_weights=True)
    out = o.transpose(0, 2, 1, 3).reshape(B, L, E) @ sd["out_proj.weight"].T
    if p.bias:
        out = out + sd["out_proj.bias"]
    return out, w


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("Hkv", [1, 2, 3])
@pytest.mark.parametrize("kdim", [None, 5])
@pytest.mark.parametrize("bias", [True, False])
def test_gqa_matches_reference(dtype, Hkv, kdim, bias):
    E, H, L, S, B = 24, 6, 5, 7, 2
    p = pyattn.MultiHeadAttention(E, H, num_kv_heads=Hkv, kdim=kdim, vdim=kdim, bias=bias,
                                  batch_first=True, dtype=dtype, rng=Hkv)
    hd = E // H
    if p._qkv_same_embed_dim:
        assert p.in_proj_weight.shape == (E + 2 * Hkv * hd, E)
    else:
        assert p.k_proj_weight.shape == (Hkv * hd, kdim)
    if bias:  # nonzero biases
        sd = p.state_dict()
        rng = np.random.default_rng(9)
        p.load_state_dict({k: v + (rng.standard_normal(v.shape) if "bias" in k else 0) for k, v in sd.items()})
    rng = rng_for("gqa", Hkv, kdim)
    q = rng.standard_normal((B, L, E))
    kv = rng.standard_normal((B, S, kdim or E))
    kpm = rng.random((B, S)) < 0.3
    kpm[:, 0] = False
    am = rng.random((B * H, L, S)) < 0.3
    for masks in (dict(), dict(key_padding_mask=kpm, attn_mask=am)):
        want_o, want_w = gqa_reference(p, q, kv, kv, **masks)
        got_o, got_w = p(q.astype(dtype), kv.astype(dtype), kv.astype(dtype), average_attn_weights=False, **masks)
        assert_close(got_o, want_o, dtype, "out")
        assert got_w.shape == (B, H, L, S)
        assert_close(got_w, want_w, dtype, "weights")
        got_avg = p(q.astype(dtype), kv.astype(dtype), kv.astype(dtype), **masks)[1]
        assert_close(got_avg, want_w.mean(axis=1), dtype, "averaged weights")


def test_gqa_equals_torch_with_repeated_kv_heads():
    """A GQA layer is a torch MHA whose key/value projections repeat each kv
    head over its query group (repeat_interleave order)."""
    torch = torch_or_skip()
    E, H, Hkv, L, B = 32, 8, 2, 6, 3
    hd, G = E // H, H // Hkv
    p = pyattn.MultiHeadAttention(E, H, num_kv_heads=Hkv, dtype=np.float64, rng=4)
    rng = np.random.default_rng(4)
    p.load_state_dict({k: v + (rng.standard_normal(v.shape) if "bias" in k else 0)
                       for k, v in p.state_dict().items()})
    w, b = p.in_proj_weight, p.in_proj_bias

    def repeat(a):  # (Hkv*hd, ...) -> (H*hd, ...)
        return np.repeat(a.reshape((Hkv, hd) + a.shape[1:]), G, axis=0).reshape((H * hd,) + a.shape[1:])

    wq, wk, wv = np.split(w, [E, E + Hkv * hd])
    bq, bk, bv = np.split(b, [E, E + Hkv * hd])
    m = torch_mha(torch, E, H)
    m.load_state_dict({
        "in_proj_weight": torch.from_numpy(np.concatenate([wq, repeat(wk), repeat(wv)])),
        "in_proj_bias": torch.from_numpy(np.concatenate([bq, repeat(bk), repeat(bv)])),
        "out_proj.weight": torch.from_numpy(p.out_proj_weight),
        "out_proj.bias": torch.from_numpy(p.out_proj_bias),
    })
    x = rng.standard_normal((L, B, E))
    check_vs_torch(torch, m, p, x, x, x, F64, attn_mask=causal_bool(L, L), average_attn_weights=False)


# ---------------------------------------------------------------------------
# MultiHeadAttention errors
# ---------------------------------------------------------------------------


def test_mha_constructor_errors():
    with pytest.raises(ValueError, match="divisible"):
        pyattn.MultiHeadAttention(10, 3)
    with pytest.raises(ValueError, match="num_kv_heads"):
        pyattn.MultiHeadAttention(12, 4, num_kv_heads=3)
    with pytest.raises(ValueError, match="num_heads"):
        pyattn.MultiHeadAttention(12, 0)
    with pytest.raises(TypeError, match="embed_dim"):
        pyattn.MultiHeadAttention(12.0, 4)
    with pytest.raises(TypeError, match="dtype"):
        pyattn.MultiHeadAttention(12, 4, dtype=np.float16)
    with pytest.raises(TypeError, match="dtype"):
        pyattn.MultiHeadAttention(12, 4, dtype=np.int32)
    with pytest.raises(TypeError, match="rng"):
        pyattn.MultiHeadAttention(12, 4, rng="seed")


def test_mha_forward_errors():
    p = pyattn.MultiHeadAttention(8, 2, kdim=4, vdim=6)
    x = np.zeros((3, 2, 8), np.float32)
    k = np.zeros((5, 2, 4), np.float32)
    v = np.zeros((5, 2, 6), np.float32)
    p(x, k, v)
    with pytest.raises(TypeError, match="query: dtype float64"):
        p(x.astype(np.float64), k, v)
    with pytest.raises(TypeError, match="value: dtype int64"):
        p(x, k, v.astype(np.int64))
    with pytest.raises(ValueError, match="query must be 2-D"):
        p(x[None], k, v)
    with pytest.raises(ValueError, match="key has 8 features"):
        p(x, np.zeros((5, 2, 8), np.float32), v)
    with pytest.raises(ValueError, match="key must be 3-D"):
        p(x, k[0], v)
    with pytest.raises(ValueError, match="key .* and value"):
        p(x, k, v[:4])
    with pytest.raises(ValueError, match="batch sizes"):
        p(x, k[:, :1], v[:, :1])
    with pytest.raises(ValueError, match=r"key_padding_mask has shape \(5, 2\); expected \(2, 5\)"):
        p(x, k, v, key_padding_mask=np.zeros((5, 2), bool))
    with pytest.raises(TypeError, match="key_padding_mask: dtype int64"):
        p(x, k, v, key_padding_mask=np.zeros((2, 5), np.int64))
    with pytest.raises(ValueError, match=r"attn_mask has shape \(3, 3\); expected \(3, 5\) or \(4, 3, 5\)"):
        p(x, k, v, attn_mask=np.zeros((3, 3), bool))
    with pytest.raises(ValueError, match="attn_mask has shape"):
        p(x, k, v, attn_mask=np.zeros((2, 3, 5), bool))  # (B, L, S) is not torch's (B*H, L, S)
    with pytest.raises(TypeError, match="attn_mask: dtype"):
        p(x, k, v, attn_mask=np.zeros((3, 5), np.int8))
    with pytest.raises(ValueError, match="key has 8 features"):
        p(x, x, x)  # the same array three times, but kdim != embed_dim
    w = pyattn.MultiHeadAttention(8, 2, vdim=4)
    with pytest.raises(ValueError, match="value has 8 features"):
        w(x, x, x)
    u = pyattn.MultiHeadAttention(8, 2)
    with pytest.raises(ValueError, match=r"key_padding_mask has shape \(1, 3\); expected \(3,\)"):
        u(x[:, 0], x[:, 0], x[:, 0], key_padding_mask=np.zeros((1, 3), bool))


# ---------------------------------------------------------------------------
# a small real model: a torch TransformerEncoder with pyattn attention
# ---------------------------------------------------------------------------


class _TorchAdapter:
    """Builds a torch.nn.Module that runs a pyattn layer on tensors."""

    @staticmethod
    def make(torch, layer):
        class PyattnSelfAttention(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.layer = layer
                self.batch_first = layer.batch_first
                self.calls = 0

            def forward(self, query, key, value, **kw):
                self.calls += 1
                def np_(x):
                    return None if x is None else x.detach().numpy()
                args = [np_(query)]
                args.append(args[0] if key is query else np_(key))
                args.append(args[1] if value is key else np_(value))
                for name in ("key_padding_mask", "attn_mask"):
                    kw[name] = np_(kw.get(name))
                out, w = layer(*args, **kw)
                return torch.from_numpy(out), None if w is None else torch.from_numpy(w)

        return PyattnSelfAttention()


@pytest.mark.parametrize("dtype", DTYPES)
def test_transformer_encoder_with_pyattn_attention(dtype):
    """A 2-layer torch TransformerEncoder (padding + causal masks) gives the
    same outputs after its attention modules are swapped for pyattn ones."""
    torch = torch_or_skip()
    torch.manual_seed(0)
    tdt = torch.float64 if dtype == F64 else torch.float32
    E, H, L, B = 32, 4, 12, 3
    layer = torch.nn.TransformerEncoderLayer(E, H, dim_feedforward=64, dropout=0.0, batch_first=True,
                                             dtype=tdt)
    model = torch.nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False).eval()
    x = torch.randn(B, L, E, dtype=tdt)
    kpm = torch.zeros(B, L, dtype=torch.bool)
    kpm[1, 9:] = True
    kpm[2, 5:] = True
    causal = torch.triu(torch.ones(L, L, dtype=torch.bool), 1)
    with torch.no_grad():
        want = model(x, mask=causal, src_key_padding_mask=kpm, is_causal=True)
        want_nomask = model(x)
    for block in model.layers:
        block.self_attn = _TorchAdapter.make(torch, pyattn.MultiHeadAttention.from_torch(block.self_attn))
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # torch's fused path would bypass self_attn.forward
    try:
        with torch.no_grad():
            got = model(x, mask=causal, src_key_padding_mask=kpm, is_causal=True)
            got_nomask = model(x)
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)
    assert [block.self_attn.calls for block in model.layers] == [2, 2]  # both layers ran pyattn
    assert_close(got.numpy(), want.numpy(), dtype)
    assert_close(got_nomask.numpy(), want_nomask.numpy(), dtype)


# ---------------------------------------------------------------------------
# KVCache
# ---------------------------------------------------------------------------


def decode_case(rng, B, H, Hkv, N, d, dv, dtype):
    q = rng.standard_normal((B, H, N, d)).astype(dtype)
    k = rng.standard_normal((B, Hkv, N, d)).astype(dtype)
    v = rng.standard_normal((B, Hkv, N, dv)).astype(dtype)
    return q, k, v


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("chunks", [[1] * 9, [3, 1, 4, 1], [9]], ids=["tokens", "chunks", "prefill"])
@pytest.mark.parametrize("Hkv", [4, 2, 1])
def test_kv_cache_decoding_equals_full_causal(dtype, chunks, Hkv):
    B, H, N, d, dv = 2, 4, sum(chunks), 16, 8
    rng = rng_for("decode", tuple(chunks), Hkv)
    q, k, v = decode_case(rng, B, H, Hkv, N, d, dv, dtype)
    want = reference.scaled_dot_product_attention(
        q.astype(np.float64), k.astype(np.float64), v.astype(np.float64), is_causal=True, enable_gqa=True)
    cache = pyattn.KVCache(B, Hkv, d, max_seq_len=N + 3, value_dim=dv, dtype=dtype)
    pos = 0
    for T in chunks:
        lengths = cache.append(k[:, :, pos:pos + T], v[:, :, pos:pos + T])
        np.testing.assert_array_equal(lengths, pos + T)
        got = cache.attend(q[:, :, pos:pos + T])
        assert got.shape == (B, H, T, dv) and got.dtype == dtype
        assert_close(got, want[:, :, pos:pos + T], dtype, f"positions {pos}..{pos + T}")
        pos += T
    assert cache.lengths.dtype == np.int64 and cache.max_length == N


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("Hkv", [3, 1])
def test_kv_cache_different_lengths_per_element(dtype, Hkv):
    """Right-padded prompts of different lengths (append with counts), then
    token-by-token decoding: every element equals full causal attention over
    its own sequence, and padding never leaks into a result."""
    B, H, d, dv = 3, 3, 8, 5
    prompt = np.array([4, 1, 6])
    steps = 5
    N = prompt.max() + steps
    rng = rng_for("ragged", Hkv)
    q, k, v = decode_case(rng, B, H, Hkv, N, d, dv, dtype)
    cache = pyattn.KVCache(B, Hkv, d, max_seq_len=int(N), value_dim=dv, dtype=dtype)
    cache.keys[...] = np.nan  # whatever is beyond a length must never be read into a result
    cache.values[...] = np.nan
    P = int(prompt.max())
    # prefill: right-padded prompts, queries at positions 0..P-1 (upper-left)
    got = cache.attend(q[:, :, :0])  # empty cache, empty query
    assert got.shape == (B, H, 0, dv)
    np.testing.assert_array_equal(cache.append(k[:, :, :P], v[:, :, :P], counts=prompt), prompt)
    got_prefill = cache.attend(q[:, :, :P], is_causal=True)
    # decode: element b's token s sits at position prompt[b] + s
    got_steps = []
    for s in range(steps):
        idx = prompt + s
        kt = k[np.arange(B), :, idx][:, :, None]  # (B, Hkv, 1, d)
        vt = v[np.arange(B), :, idx][:, :, None]
        qt = q[np.arange(B), :, idx][:, :, None]
        np.testing.assert_array_equal(cache.append(kt, vt), prompt + s + 1)
        got_steps.append(cache.attend(qt))
    for b in range(B):
        n = prompt[b] + steps
        want = reference.scaled_dot_product_attention(
            *(a[b, :, :n].astype(np.float64) for a in (q, k, v)), is_causal=True, enable_gqa=True)
        assert_close(got_prefill[b, :, :prompt[b]], want[:, :prompt[b]], dtype, f"prefill {b}")
        for s in range(steps):
            assert_close(got_steps[s][b, :, 0], want[:, prompt[b] + s], dtype, f"element {b} step {s}")
        assert np.isfinite(got_prefill[b, :, :prompt[b]]).all()


def test_kv_cache_attend_passes_sdpa_options():
    B, H, Hkv, d, N = 2, 4, 2, 8, 6
    rng = rng_for("kwargs")
    q, k, v = decode_case(rng, B, H, Hkv, N, d, d, np.float64)
    cache = pyattn.KVCache(B, Hkv, d, N, dtype=np.float64)
    cache.append(k, v)
    out, w, lse = cache.attend(q[:, :, -2:], return_weights=True, return_lse=True, window=2, scale=0.3)
    want = reference.scaled_dot_product_attention(q[:, :, -2:], k, v, is_causal="lower_right", window=2,
                                                  scale=0.3, enable_gqa=True, return_weights=True,
                                                  return_lse=True)
    for got, ref in zip((out, w, lse), want):
        assert_close(got, ref, np.float64)
    # cross-attention style: no causal rule, lengths still hide the tail
    cache.reset([1])
    np.testing.assert_array_equal(cache.lengths, [N, 0])
    cache.append(k[:, :, :2], v[:, :, :2], counts=np.array([0, 2]))
    got = cache.attend(q, is_causal=False)
    want0 = reference.scaled_dot_product_attention(q[0], k[0], v[0], enable_gqa=True)
    want1 = reference.scaled_dot_product_attention(q[1], k[1, :, :2], v[1, :, :2], enable_gqa=True)
    assert_close(got[0], want0, np.float64)
    assert_close(got[1], want1, np.float64)


def test_kv_cache_overflow_leaves_cache_unchanged():
    B, Hkv, d = 2, 2, 4
    cache = pyattn.KVCache(B, Hkv, d, max_seq_len=5)
    rng = np.random.default_rng(0)
    k = rng.standard_normal((B, Hkv, 3, d)).astype(np.float32)
    cache.append(k, k)
    cache.append(k[:, :, :1], k[:, :, :1], counts=np.array([1, 0]))
    snapshot = (cache.keys.copy(), cache.values.copy(), cache.lengths.copy())

    def unchanged():
        np.testing.assert_array_equal(cache.keys, snapshot[0])
        np.testing.assert_array_equal(cache.values, snapshot[1])
        np.testing.assert_array_equal(cache.lengths, snapshot[2])

    with pytest.raises(ValueError, match=r"overflows the cache \(max_seq_len=5\)"):
        cache.append(k, k)  # element 1 would fit, element 0 would not: nothing is written
    unchanged()
    with pytest.raises(ValueError, match="batch elements \\[0\\]"):
        cache.append(k[:, :, :2], k[:, :, :2])
    unchanged()
    cache.append(k[:, :, :2], k[:, :, :2], counts=np.array([1, 2]))  # exactly full
    np.testing.assert_array_equal(cache.lengths, [5, 5])
    with pytest.raises(ValueError, match="overflows"):
        cache.append(k[:, :, :1], k[:, :, :1])
    cache.append(k[:, :, :0], k[:, :, :0])  # appending nothing is fine when full
    cache.reset()
    np.testing.assert_array_equal(cache.lengths, [0, 0])


def test_kv_cache_errors():
    with pytest.raises(ValueError, match="num_kv_heads"):
        pyattn.KVCache(1, 0, 4, 8)
    with pytest.raises(TypeError, match="max_seq_len"):
        pyattn.KVCache(1, 1, 4, 8.0)
    with pytest.raises(ValueError, match="batch"):
        pyattn.KVCache(-1, 1, 4, 8)
    with pytest.raises(TypeError, match="dtype"):
        pyattn.KVCache(1, 1, 4, 8, dtype=np.int32)
    cache = pyattn.KVCache(2, 2, 4, 8, value_dim=3)
    k = np.zeros((2, 2, 1, 4), np.float32)
    v = np.zeros((2, 2, 1, 3), np.float32)
    with pytest.raises(TypeError, match="k: dtype float64 does not match the cache's dtype float32"):
        cache.append(k.astype(np.float64), v)
    with pytest.raises(ValueError, match=r"k must have shape .* = \(2, 2, T, 4\), got \(2, 1, 1, 4\)"):
        cache.append(k[:, :1], v)
    with pytest.raises(ValueError, match=r"v must have shape .* = \(2, 2, 1, 3\), got \(2, 2, 1, 4\)"):
        cache.append(k, k)
    with pytest.raises(ValueError, match="v must have shape"):
        cache.append(k, np.zeros((2, 2, 2, 3), np.float32))
    with pytest.raises(ValueError, match="counts must lie"):
        cache.append(k, v, counts=np.array([2, 0]))
    with pytest.raises(ValueError, match="counts must have shape"):
        cache.append(k, v, counts=np.array([1]))
    with pytest.raises(TypeError, match="counts must be an integer"):
        cache.append(k, v, counts=np.array([1.0, 1.0]))
    np.testing.assert_array_equal(cache.lengths, [0, 0])
    with pytest.raises(ValueError, match="read-only"):
        cache.lengths[0] = 3
    cache.append(k, v)
    with pytest.raises(ValueError, match="q must have shape"):
        cache.attend(np.zeros((2, 2, 1, 3), np.float32))
    with pytest.raises(ValueError, match="q must have shape"):
        cache.attend(np.zeros((1, 2, 1, 4), np.float32))
    with pytest.raises(ValueError, match="not a multiple of num_kv_heads=2"):
        cache.attend(np.zeros((2, 3, 1, 4), np.float32))
    with pytest.raises(TypeError, match="kv_lengths"):
        cache.attend(np.zeros((2, 2, 1, 4), np.float32), kv_lengths=np.array([1, 1]))
    with pytest.raises(TypeError, match="dtype"):
        cache.attend(np.zeros((2, 2, 1, 4), np.float64))
    with pytest.raises(IndexError, match="reset"):
        cache.reset(5)


def test_decoder_loop_with_pyattn_layer_and_cache():
    """A tiny decoder: torch MultiheadAttention over the whole sequence with a
    causal mask vs the same weights in pyattn, fed one token at a time through
    a KVCache (the layer's projections, then cache.attend, then out_proj)."""
    torch = torch_or_skip()
    E, H, N, B = 32, 4, 10, 2
    hd = E // H
    m = torch_mha(torch, E, H, batch_first=True, seed=3)
    p = pyattn.MultiHeadAttention.from_torch(m, dtype=np.float32)
    rng = rng_for("decoder")
    x = rng.standard_normal((B, N, E))
    want, _ = run_torch(torch, m, x, x, x, attn_mask=causal_bool(N, N), need_weights=False, is_causal=True)
    cache = pyattn.KVCache(B, H, hd, N)
    w, b = p.in_proj_weight, p.in_proj_bias
    for i in range(N):
        xt = x[:, i:i + 1].astype(np.float32)  # (B, 1, E)
        qkv = xt @ w.T + b
        q, k, v = (a.reshape(B, 1, H, hd).transpose(0, 2, 1, 3) for a in np.split(qkv, 3, axis=-1))
        cache.append(k, v)
        o = cache.attend(q).transpose(0, 2, 1, 3).reshape(B, 1, E)
        y = o @ p.out_proj_weight.T + p.out_proj_bias
        assert_close(y[:, 0], want[:, i], np.float32, f"token {i}")
