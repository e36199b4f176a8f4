"""The C++ fast path of additive_attention (ndarrays of one float32/float64
dtype, one batch shape, weights of that dtype; any mask / causal / window /
kv_lengths / out / weights / lse): against the reference and, bitwise,
against the general Python path; what it declines still gives the right
result or the general path's error."""

import numpy as np
import pytest

import pyattn
from helpers import rows_apart
import pyattn.additive as additive_module
from test_additive import check, params

additive = pyattn.additive_attention


def other_layout(q, k, v, v_a, **kwargs):
    """The same call on q, k, v laid out otherwise in memory (rows not
    unit-stride: copied first): the same bits."""
    return additive(rows_apart(q), rows_apart(k), rows_apart(v), v_a, **kwargs)


def assert_bitwise(a, b):
    a = a if isinstance(a, tuple) else (a,)
    b = b if isinstance(b, tuple) else (b,)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


OPTIONS = [
    dict(),
    dict(is_causal=True, return_lse=True),
    dict(is_causal="lower_right", kv_lengths=np.array([11, 4]), return_weights=True),
    dict(window=(2, 1), return_weights=True, return_lse=True),
    dict(window=3, is_causal="lower_right", kv_lengths=np.array([0, 9])),
    dict(attn_mask="bool", return_lse=True),
    dict(attn_mask="float", return_weights=True),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=str)
@pytest.mark.parametrize("weights", ["projections", "bias only", "none"])
@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_matches_reference_and_general_path(isa, dtype, weights, options):
    rng = np.random.default_rng(80)
    B, H, L, S, D, Ev = 2, 3, 5, 11, 8, 6
    q = rng.standard_normal((B, H, L, D)).astype(dtype)
    k = rng.standard_normal((B, H, S, D)).astype(dtype)
    v = rng.standard_normal((B, H, S, Ev)).astype(dtype)
    v_a, kw = params(rng, D, D, D if weights != "projections" else 7, dtype,
                     projections=weights == "projections")
    if weights == "bias only":
        kw["bias"] = (0.5 * rng.standard_normal(D)).astype(dtype)
    kw.update(options)
    if kw.get("attn_mask") == "bool":
        kw["attn_mask"] = rng.random((H, L, S)) < 0.7
    elif kw.get("attn_mask") == "float":
        kw["attn_mask"] = rng.standard_normal((L, S)).astype(dtype)
    check(q, k, v, v_a, **kw)
    assert_bitwise(additive(q, k, v, v_a, **kw), other_layout(q, k, v, v_a, **kw))


def test_calls_it_declines(isa):
    """Parameters of another float dtype or as lists, float16 inputs,
    broadcast batches, strided rows: the general path, same results as the
    reference."""
    rng = np.random.default_rng(82)
    q = rng.standard_normal((2, 4, 8)).astype(np.float32)
    k = rng.standard_normal((2, 6, 8)).astype(np.float32)
    v_a, kw = params(rng, 8, 8, 5, np.float32)
    check(q, k, k, v_a.astype(np.float64), **kw)
    check(q, k, k, list(v_a), **kw)
    check(q, k, k, v_a, **dict(kw, bias=kw["bias"].astype(np.float64)))
    check(q[:1], k, k, v_a, **kw)
    wide = rng.standard_normal((2, 4, 16)).astype(np.float32)
    check(wide[:, :, ::2], k, k, v_a, **kw)
    h = [x.astype(np.float16) for x in (q, k)]
    check(h[0], h[1], h[1], v_a.astype(np.float16),
          **{n: w.astype(np.float16) for n, w in kw.items()})


@pytest.mark.parametrize("name", ["v_a", "w_query", "bias", "query"])
def test_out_overlapping_any_input_is_refused(name):
    rng = np.random.default_rng(83)
    buf = rng.standard_normal(400).astype(np.float32)
    q = rng.standard_normal((2, 3, 4)).astype(np.float32)
    k = rng.standard_normal((2, 5, 4)).astype(np.float32)
    v = rng.standard_normal((2, 5, 6)).astype(np.float32)
    v_a, kw = params(rng, 4, 4, 4, np.float32)
    out = buf[:36].reshape(2, 3, 6)
    args = dict(v_a=v_a, **kw)
    if name == "query":
        q = buf[:24].reshape(2, 3, 4)
    else:
        args[name] = buf[:args[name].size].reshape(args[name].shape)
    with pytest.raises(ValueError, match=f"out overlaps the memory of {name}"):
        additive(q, k, v, args.pop("v_a"), out=out, **args)
