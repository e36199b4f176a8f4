"""Every SPEC section 6 error: exception class and a message naming the argument.

Each case runs on the fast path and on the reference (which must agree).
"""

import importlib.util

import numpy as np
import pytest

import pyattn
from helpers import reference

IMPLS = [
    pytest.param(pyattn.scaled_dot_product_attention, id="fast"),
    pytest.param(reference.scaled_dot_product_attention, id="reference"),
]

B, H, L, S, E, Ev = 2, 3, 4, 5, 8, 6


def args(q=None, k=None, v=None):
    rng = np.random.default_rng(40)
    q = rng.standard_normal((B, H, L, E)).astype(np.float32) if q is None else q
    k = rng.standard_normal((B, H, S, E)).astype(np.float32) if k is None else k
    v = rng.standard_normal((B, H, S, Ev)).astype(np.float32) if v is None else v
    return q, k, v


def f32(*shape):
    return np.zeros(shape, np.float32)


# (id, positional overrides, keyword arguments, exception, argument named in the message)
CASES = [
    ("q_int", dict(q=np.zeros((B, H, L, E), np.int32)), {}, TypeError, "query"),
    ("k_complex", dict(k=np.zeros((B, H, S, E), np.complex64)), {}, TypeError, "key"),
    ("v_object", dict(v=np.zeros((B, H, S, Ev), object)), {}, TypeError, "value"),
    ("k_other_dtype", dict(k=np.zeros((B, H, S, E))), {}, TypeError, "key"),
    ("v_other_dtype", dict(v=np.zeros((B, H, S, Ev))), {}, TypeError, "value"),
    ("mask_int", {}, dict(attn_mask=np.ones((L, S), np.int32)), TypeError, "attn_mask"),
    ("mask_complex", {}, dict(attn_mask=np.ones((L, S), np.complex64)), TypeError, "attn_mask"),
    ("kv_lengths_float", {}, dict(kv_lengths=np.full(B, 2.0)), TypeError, "kv_lengths"),
    ("E_mismatch", dict(k=f32(B, H, S, E + 1)), {}, ValueError, "key"),
    ("S_mismatch", dict(v=f32(B, H, S + 1, Ev)), {}, ValueError, "value"),
    ("batch_mismatch", dict(k=f32(3, H, S, E), v=f32(3, H, S, Ev)), {}, ValueError, "key"),
    ("mask_not_broadcastable", {}, dict(attn_mask=np.ones((L, S + 1), bool)), ValueError,
     "attn_mask"),
    ("mask_adds_batch_dim", {}, dict(attn_mask=np.ones((1, B, H, L, S), bool)), ValueError,
     "attn_mask"),
    ("kv_lengths_above_S", {}, dict(kv_lengths=np.array([S + 1, 1])), ValueError, "kv_lengths"),
    ("kv_lengths_negative", {}, dict(kv_lengths=np.array([-1, 1])), ValueError, "kv_lengths"),
    ("kv_lengths_1d_wrong_length", {}, dict(kv_lengths=np.array([1, 2, 3])), ValueError,
     "kv_lengths"),
    ("kv_lengths_adds_dim", {}, dict(kv_lengths=np.ones((1, B, H), np.int64)), ValueError,
     "kv_lengths"),
    ("kv_lengths_not_broadcastable", {}, dict(kv_lengths=np.ones((B, H + 1), np.int64)),
     ValueError, "kv_lengths"),
    ("window_negative", {}, dict(window=-1), ValueError, "window"),
    ("window_side_negative", {}, dict(window=(2, -1)), ValueError, "window"),
    ("window_float", {}, dict(window=1.5), TypeError, "window"),
    ("window_str", {}, dict(window="3"), TypeError, "window"),
    ("window_side_float", {}, dict(window=(None, 2.0)), TypeError, "window"),
    ("window_three_sides", {}, dict(window=(1, 2, 3)), TypeError, "window"),
    ("is_causal_bad_string", {}, dict(is_causal="upper"), ValueError, "is_causal"),
    ("is_causal_float", {}, dict(is_causal=1.5), TypeError, "is_causal"),
    ("scale_inf", {}, dict(scale=float("inf")), ValueError, "scale"),
    ("scale_nan", {}, dict(scale=float("nan")), ValueError, "scale"),
    ("scale_str", {}, dict(scale="0.5"), TypeError, "scale"),
    ("scale_complex", {}, dict(scale=1j), TypeError, "scale"),
    ("num_threads_float", {}, dict(num_threads=2.0), TypeError, "num_threads"),
    ("num_threads_str", {}, dict(num_threads="2"), TypeError, "num_threads"),
    ("num_threads_zero", {}, dict(num_threads=0), ValueError, "num_threads"),
    ("num_threads_negative", {}, dict(num_threads=-3), ValueError, "num_threads"),
    ("gqa_not_dividing", dict(k=f32(B, 2, S, E), v=f32(B, 2, S, Ev)), dict(enable_gqa=True),
     ValueError, "key|enable_gqa"),
    ("gqa_key_value_heads_differ", dict(k=f32(B, 1, S, E), v=f32(B, 3, S, Ev)),
     dict(enable_gqa=True), ValueError, "value|enable_gqa"),
    ("gqa_too_few_dims", dict(q=f32(L, E), k=f32(S, E), v=f32(S, Ev)), dict(enable_gqa=True),
     ValueError, "query|key|value|enable_gqa"),
    ("out_wrong_dtype", {}, dict(out=np.zeros((B, H, L, Ev))), TypeError, "out"),
    ("out_not_array", {}, dict(out=[[0.0] * Ev] * L), TypeError, "out"),
    ("out_wrong_shape", {}, dict(out=f32(B, H, L, Ev + 1)), ValueError, "out"),
    ("out_missing_batch_dim", {}, dict(out=f32(H, L, Ev)), ValueError, "out"),
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("over, kwargs, exc, name", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_error(impl, over, kwargs, exc, name):
    with pytest.raises(exc, match=name):
        impl(*args(**over), **kwargs)


@pytest.mark.parametrize("impl", IMPLS)
def test_out_read_only(impl):
    out = f32(B, H, L, Ev)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="out"):
        impl(*args(), out=out)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("which", ["query", "key", "value"])
def test_out_overlapping_an_input(impl, which):
    # With L == S and E == Ev the result has the shape of every input.
    fused = np.random.default_rng(41).standard_normal((3, B, H, S, E)).astype(np.float32)
    q, k, v = fused
    out = dict(query=q, key=k, value=v)[which]
    before = fused.copy()
    with pytest.raises(ValueError, match="out"):
        impl(q, k, v, out=out)
    np.testing.assert_array_equal(fused, before)
    with pytest.raises(ValueError, match="out"):   # a partly overlapping view
        impl(q, k, v, out=fused[:2].reshape(B, H, 2 * S, E)[:, :, S // 2:S // 2 + S])


@pytest.mark.parametrize("which", ["key", "value", "attn_mask"])
def test_out_overlapping_an_input_passed_as_another_object(which):
    """The overlap check sees what the kernels read: an input given as a
    memoryview (or tensor) of out's memory is refused."""
    rng = np.random.default_rng(42)
    S = 4 if which == "attn_mask" else 6   # out (2, 6, 4) has that input's shape
    q = rng.standard_normal((2, 6, 4)).astype(np.float32)
    args = dict(key=rng.standard_normal((2, S, 4)).astype(np.float32),
                value=rng.standard_normal((2, S, 4)).astype(np.float32),
                attn_mask=rng.standard_normal((2, 6, S)).astype(np.float32))
    out = args[which]
    before = out.copy()
    args[which] = memoryview(out)
    with pytest.raises(ValueError, match=f"out overlaps the memory of {which}"):
        pyattn.scaled_dot_product_attention(q, **args, out=out)
    np.testing.assert_array_equal(out, before)


@pytest.mark.skipif(not importlib.util.find_spec("torch"), reason="torch not installed")
def test_out_overlapping_a_tensor_input():
    import torch

    rng = np.random.default_rng(43)
    q, k = rng.standard_normal((2, 1, 300, 16)).astype(np.float32)
    v = rng.standard_normal((1, 300, 16)).astype(np.float32)
    with pytest.raises(ValueError, match="out overlaps the memory of value"):
        pyattn.scaled_dot_product_attention(q, k, torch.from_numpy(v), out=v)


def test_num_threads_beyond_a_c_int_names_the_argument():
    q = np.ones((1, 2, 4), np.float32)
    for kwargs in ({}, {"is_causal": "lower_right"}):
        with pytest.raises(ValueError, match="num_threads"):
            pyattn.scaled_dot_product_attention(q, q, q, num_threads=2**31, **kwargs)
    with pytest.raises(ValueError, match="num_threads"):
        pyattn.set_num_threads(2**31)
    with pytest.raises(TypeError, match="num_threads"):
        pyattn.set_num_threads(None)


def test_reference_refuses_num_threads_beyond_a_c_int_like_pyattn():
    """Found by the fuzzer: the reference accepted num_threads=2**31, which
    pyattn refuses (threads are counted in a C int); both raise now."""
    q = np.ones((1, 2, 4), np.float32)
    for fn in (pyattn.reference.scaled_dot_product_attention, pyattn.scaled_dot_product_attention):
        with pytest.raises(ValueError, match="num_threads"):
            fn(q, q, q, num_threads=2**31)
        assert fn(q, q, q, num_threads=2**31 - 1).shape == (1, 2, 4)
