"""pyattn.torch: tensors in and out, read in place, torch's SDPA conventions.

Correctness is checked against torch's own scaled_dot_product_attention in
float64 (the independent truth) with the section-7 tolerances; memory
sharing through data_ptr equality.
"""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import pyattn  # noqa: E402
import pyattn.torch as pt  # noqa: E402

F = torch.nn.functional
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
# float32 as section 7; 16-bit dtypes within their own rounding of the result.
TOL = {
    torch.float32: dict(rtol=2e-5, atol=2e-6),
    torch.float64: dict(rtol=1e-12, atol=1e-12),
    torch.float16: dict(rtol=2e-3, atol=2e-3),
    torch.bfloat16: dict(rtol=1.6e-2, atol=1.6e-2),
}

def run_python(code, **env_vars):
    """Runs `code` in a fresh interpreter that imports the pyattn under test
    (cwd and PYTHONPATH: the directory holding it, so that a source
    checkout's pyattn without the built extension never shadows it)."""
    parent = str(pathlib.Path(pyattn.__file__).resolve().parent.parent)
    env = dict(os.environ, **env_vars)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [parent, os.environ.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-W", "always", "-c", code], cwd=parent, env=env,
                          capture_output=True, text=True, timeout=300)



def _close(got, want, dtype):
    np.testing.assert_allclose(got.double().numpy(), want.double().numpy(), **TOL[dtype])


def _truth(q, k, v, **kw):
    mask = kw.pop("attn_mask", None)
    if mask is not None and mask.dtype != torch.bool:
        mask = mask.double()
    return F.scaled_dot_product_attention(q.double(), k.double(), v.double(), attn_mask=mask, **kw)


def _qkv(dtype, shape_q=(2, 4, 7, 16), shape_kv=(2, 4, 9, 16), Ev=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(shape_q, generator=g).to(dtype)
    k = torch.randn(shape_kv, generator=g).to(dtype)
    v = torch.randn(shape_kv[:-1] + (Ev,), generator=g).to(dtype)
    return q, k, v


def test_import_pyattn_does_not_import_torch():
    code = "import sys, pyattn; assert 'torch' not in sys.modules, 'torch imported'; print('ok')"
    r = run_python(code)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


def test_bfloat16_without_ml_dtypes():
    # bfloat16 tensors reach the core as their bits: no ml_dtypes involved.
    code = (
        "import sys; sys.modules['ml_dtypes'] = None\n"
        "import torch, pyattn.torch as pt\n"
        "g = torch.Generator().manual_seed(0)\n"
        "q, k, v = (torch.randn(2, 3, 5, 8, generator=g).bfloat16() for _ in range(3))\n"
        "o = pt.scaled_dot_product_attention(q, k, v, is_causal=True)\n"
        "r = torch.nn.functional.scaled_dot_product_attention(q.double(), k.double(), v.double(), is_causal=True)\n"
        "assert o.dtype == torch.bfloat16 and (o.double() - r).abs().max() < 2e-2\n"
        "assert sys.modules['ml_dtypes'] is None\n"
        "print('ok')\n"
    )
    r = run_python(code)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("is_causal", [False, True])
def test_matches_torch(isa, dtype, is_causal):
    q, k, v = _qkv(dtype)
    got = pt.scaled_dot_product_attention(q, k, v, is_causal=is_causal)
    assert isinstance(got, torch.Tensor) and got.dtype == dtype and got.shape == (2, 4, 7, 12)
    _close(got, _truth(q, k, v, is_causal=is_causal), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_positional_signature_mask_scale_gqa(dtype):
    q, k, v = _qkv(dtype, (2, 6, 5, 8), (2, 2, 11, 8))
    mask = torch.rand(2, 1, 5, 11, generator=torch.Generator().manual_seed(3)) > 0.3
    mask[..., 0] = True
    # torch's order: query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa
    got = pt.scaled_dot_product_attention(q, k, v, mask, 0.0, False, 0.7, True)
    _close(got, _truth(q, k, v, attn_mask=mask, scale=0.7, enable_gqa=True), dtype)
    fmask = torch.randn(5, 11, dtype=torch.float64).to(dtype)
    got = pt.scaled_dot_product_attention(q, k, v, attn_mask=fmask, enable_gqa=True)
    _close(got, _truth(q, k, v, attn_mask=fmask, enable_gqa=True), dtype)


def test_pyattn_options_match_numpy_api():
    q, k, v = _qkv(torch.float32, (3, 2, 6, 8), (3, 2, 10, 8))
    lengths = torch.tensor([10, 4, 0])
    kw = dict(is_causal="lower_right", window=(3, None), return_weights=True, return_lse=True)
    out, w, lse = pt.scaled_dot_product_attention(q, k, v, kv_lengths=lengths, **kw)
    ref = pyattn.scaled_dot_product_attention(q.numpy(), k.numpy(), v.numpy(),
                                              kv_lengths=lengths.numpy(), **kw)
    for t, a in zip((out, w, lse), ref):
        assert isinstance(t, torch.Tensor)
        np.testing.assert_array_equal(t.numpy(), a)
    assert lse.dtype == torch.float32 and torch.all(out[2] == 0) and torch.all(lse[2] == -torch.inf)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_weights_and_lse_dtypes(dtype):
    q, k, v = _qkv(dtype)
    out, w, lse = pt.scaled_dot_product_attention(q, k, v, return_weights=True, return_lse=True)
    assert out.dtype == w.dtype == dtype
    assert lse.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    s = q.double() @ k.double().transpose(-1, -2) / 4.0
    _close(w, torch.softmax(s, -1), dtype)
    np.testing.assert_allclose(lse.double().numpy(), torch.logsumexp(s, -1).numpy(), rtol=1e-2 if
                               dtype in (torch.float16, torch.bfloat16) else 2e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_inputs_read_in_place_and_result_shares_memory(dtype, monkeypatch):
    # q/k/v split from one fused projection (strided views, unit last stride)
    qkv = torch.randn(2, 7, 3, 4, 16, dtype=dtype)  # (B, L, 3, H, E)
    q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))  # (B, H, L, E) views
    seen = {}
    real = pyattn.attention.scaled_dot_product_attention

    def spy(qa, ka, va, **kw):
        seen.update(q=qa.ctypes.data, k=ka.ctypes.data, v=va.ctypes.data)
        res = real(qa, ka, va, **kw)
        seen["out"] = res.ctypes.data
        return res

    monkeypatch.setattr(pt._attention, "scaled_dot_product_attention", spy)
    out = pt.scaled_dot_product_attention(q, k, v)
    assert (seen["q"], seen["k"], seen["v"]) == (q.data_ptr(), k.data_ptr(), v.data_ptr())
    assert out.data_ptr() == seen["out"]  # the tensor wraps pyattn's result memory
    _close(out, _truth(q, k, v), dtype)


def test_bfloat16_inputs_read_in_place(monkeypatch):
    q, k, v = _qkv(torch.bfloat16)
    q = q.transpose(1, 2).contiguous().transpose(1, 2)  # a strided view
    seen = {}
    real = pyattn.attention._sdpa_of_bits

    def spy(qa, ka, va, *args, **kw):
        seen.update(q=qa.ctypes.data, k=ka.ctypes.data, v=va.ctypes.data, dtype=qa.dtype)
        return real(qa, ka, va, *args, **kw)

    monkeypatch.setattr(pt._attention, "_sdpa_of_bits", spy)
    out = pt.scaled_dot_product_attention(q, k, v)
    assert (seen["q"], seen["k"], seen["v"]) == (q.data_ptr(), k.data_ptr(), v.data_ptr())
    assert seen["dtype"] == np.uint16
    _close(out, _truth(q, k, v), torch.bfloat16)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_out_tensor_and_transposed_view(dtype):
    q, k, v = _qkv(dtype, (2, 4, 7, 16), (2, 2, 9, 16))
    want = _truth(q, k, v, is_causal=True, enable_gqa=True)
    buf = torch.full((2, 7, 4, 12), float("nan"), dtype=dtype)  # (B, L, H, Ev), as transformers wants
    view = buf.transpose(1, 2)
    got = pt.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True, out=view)
    assert got is view
    _close(buf.transpose(1, 2), want, dtype)
    whole = torch.empty(2, 4, 7, 12, dtype=dtype)
    assert pt.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True, out=whole) is whole
    _close(whole, want, dtype)


def test_out_strided_without_unit_last_stride():
    q, k, v = _qkv(torch.float32)
    big = torch.zeros(2, 4, 7, 24)
    view = big[..., ::2]
    pt.scaled_dot_product_attention(q, k, v, out=view)
    _close(view, _truth(q, k, v), torch.float32)
    assert torch.all(big[..., 1::2] == 0)  # nothing outside the view is touched


def test_errors():
    q, k, v = _qkv(torch.float32)
    with pytest.raises(ValueError, match="dropout_p"):
        pt.scaled_dot_product_attention(q, k, v, dropout_p=0.1)
    with pytest.raises(ValueError, match="dropout_p"):
        pt.scaled_dot_product_attention(q, k, v, None, 0.5)
    qg = q.clone().requires_grad_()
    with pytest.raises(ValueError, match="query requires grad"):
        pt.scaled_dot_product_attention(qg, k, v)
    with torch.no_grad():  # grad mode off: fine
        pt.scaled_dot_product_attention(qg, k, v)
    with pytest.raises(ValueError, match="device 'meta'"):
        pt.scaled_dot_product_attention(q, k.to("meta"), v)
    with pytest.raises(TypeError, match="key must be a torch.Tensor"):
        pt.scaled_dot_product_attention(q, k.numpy(), v)
    with pytest.raises(TypeError, match="share one dtype"):
        pt.scaled_dot_product_attention(q, k.double(), v)
    with pytest.raises(TypeError, match="int64"):
        pt.scaled_dot_product_attention(q.long(), k.long(), v.long())
    with pytest.raises(ValueError, match="at least 2"):
        pt.scaled_dot_product_attention(q[0, 0, 0], k, v)
    with pytest.raises(TypeError, match="out must be a torch.Tensor"):
        pt.scaled_dot_product_attention(q, k, v, out=np.empty((2, 4, 7, 12), np.float32))
    with pytest.raises(TypeError, match="out has dtype"):
        pt.scaled_dot_product_attention(q, k, v, out=torch.empty(2, 4, 7, 12, dtype=torch.float64))
    with pytest.raises(ValueError, match="out has shape"):
        pt.scaled_dot_product_attention(q, k, v, out=torch.empty(2, 4, 7, 11))
    with pytest.raises(ValueError, match="overlaps"):
        pt.scaled_dot_product_attention(q, k, v, out=q[..., :12])
    qb, kb, vb = (t.bfloat16() for t in (q, k, v))
    with pytest.raises(ValueError, match="overlaps"):
        pt.scaled_dot_product_attention(qb, kb, vb, out=qb[..., :12])
    with pytest.raises(TypeError, match="attn_mask"):
        pt.scaled_dot_product_attention(q, k, v, torch.ones(7, 9, dtype=torch.int32))
    with pytest.raises(ValueError, match="attn_mask"):
        pt.scaled_dot_product_attention(q, k, v, torch.ones(7, 8, dtype=torch.bool))
    with pytest.raises(TypeError, match="kv_lengths"):
        pt.scaled_dot_product_attention(q, k, v, kv_lengths=torch.ones(2))
    # optional arrays may be NumPy arrays or lists
    got = pt.scaled_dot_product_attention(q, k, v, kv_lengths=[9, 3])
    want = pt.scaled_dot_product_attention(q, k, v, kv_lengths=torch.tensor([9, 3]))
    assert torch.equal(got, want)


def test_inference_mode_tensors():
    with torch.inference_mode():
        q, k, v = _qkv(torch.float32)
        out = pt.scaled_dot_product_attention(q, k, v, is_causal=True)
    _close(out, _truth(q, k, v, is_causal=True), torch.float32)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_additive_attention(dtype):
    g = torch.Generator().manual_seed(5)
    q = torch.randn(2, 5, 6, generator=g).to(dtype)
    k = torch.randn(2, 8, 7, generator=g).to(dtype)
    v = torch.randn(2, 8, 4, generator=g).to(dtype)
    wq = torch.randn(6, 3, generator=g).to(dtype)
    wk = torch.randn(7, 3, generator=g).to(dtype)
    va = torch.randn(3, generator=g).to(dtype)
    got, w = pt.additive_attention(q, k, v, va, w_query=wq, w_key=wk, return_weights=True)
    assert got.dtype == w.dtype == dtype
    s = torch.tanh((q.double() @ wq.double())[:, :, None] + (k.double() @ wk.double())[:, None]) @ va.double()
    p = torch.softmax(s, -1)
    _close(got, p @ v.double(), dtype)
    out = torch.empty(2, 5, 4, dtype=dtype)
    assert pt.additive_attention(q, k, v, va, w_query=wq, w_key=wk, out=out) is out
    _close(out, p @ v.double(), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_merge_attention_states(dtype):
    q, k, v = _qkv(dtype)
    o1, l1 = pt.scaled_dot_product_attention(q, k[..., :4, :], v[..., :4, :], return_lse=True)
    o2, l2 = pt.scaled_dot_product_attention(q, k[..., 4:, :], v[..., 4:, :], return_lse=True)
    out, lse = pt.merge_attention_states([o1, o2], [l1, l2])
    assert isinstance(out, torch.Tensor) and out.dtype == dtype
    _close(out, _truth(q, k, v), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_varlen_attention(dtype):
    g = torch.Generator().manual_seed(7)
    lens_q, lens_k = [3, 0, 5], [4, 2, 6]
    cu_q = torch.tensor(np.concatenate([[0], np.cumsum(lens_q)]))
    cu_k = torch.tensor(np.concatenate([[0], np.cumsum(lens_k)]))
    q = torch.randn(sum(lens_q), 4, 8, generator=g).to(dtype)
    k = torch.randn(sum(lens_k), 2, 8, generator=g).to(dtype)
    v = torch.randn(sum(lens_k), 2, 8, generator=g).to(dtype)
    got = pt.varlen_attention(q, k, v, cu_q, cu_k, is_causal="lower_right")
    assert got.dtype == dtype and got.shape == q.shape
    for n in range(3):
        sq, sk = slice(int(cu_q[n]), int(cu_q[n + 1])), slice(int(cu_k[n]), int(cu_k[n + 1]))
        if lens_q[n] == 0:
            continue
        qq, kk, vv = (t.transpose(0, 1)[None] for t in (q[sq], k[sk], v[sk]))
        L, S = lens_q[n], lens_k[n]
        mask = torch.ones(L, S, dtype=torch.bool).tril(S - L)
        want = _truth(qq, kk, vv, attn_mask=mask, enable_gqa=True)[0].transpose(0, 1)
        _close(got[sq], want, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_score_variants_pass_through(dtype):
    q, k, v = _qkv(dtype, (2, 4, 7, 16), (2, 2, 9, 16))
    slopes = torch.tensor([0.5, 0.25, 0.125, 0.0625])
    sinks = torch.tensor([0.3, -1.0, 2.0, 0.0]).to(dtype)
    kw = dict(is_causal="lower_right", enable_gqa=True, softcap=3.0, return_lse=True)
    got, lse = pt.scaled_dot_product_attention(q, k, v, alibi_slopes=slopes, sinks=sinks, **kw)
    # the NumPy API on float32 copies of the same values (float64 for float64)
    wide = torch.float64 if dtype == torch.float64 else torch.float32
    want, want_lse = pyattn.scaled_dot_product_attention(
        *(t.to(wide).numpy() for t in (q, k, v)), alibi_slopes=slopes.numpy(),
        sinks=sinks.to(wide).numpy(), **kw)
    assert got.dtype == dtype
    _close(got, torch.from_numpy(want), dtype)
    np.testing.assert_allclose(lse.double().numpy(), want_lse, rtol=2e-5, atol=2e-6)
