"""The argument rules written once (csrc/bindings/call_args.h and
pyattn/call_rules.h): every op that takes an option gets the same check and
the same error, the integer codes come from the core, and result sizes are
refused before anything is allocated."""

import numpy as np
import pytest

import pyattn
from pyattn import _args, _core

sdpa = pyattn.scaled_dot_product_attention


def test_codes_come_from_the_core():
    assert _core.CAUSAL == {"none": 0, "upper_left": 1, "lower_right": 2}
    assert _core.STORAGE == {"float32": 0, "float64": 1, "bfloat16": 2, "float16": 3, "int8": 4}
    assert _args.CAUSAL is _core.CAUSAL and _args.STORAGE is _core.STORAGE
    for value, name in ((False, "none"), (True, "upper_left"), (np.bool_(True), "upper_left"),
                        ("upper_left", "upper_left"), ("lower_right", "lower_right")):
        assert _args.causal_code(value) == _core.CAUSAL[name]


def _ops(q, k, v):
    """Each op that takes the shared options, called with them."""
    A = q.shape[-1]
    cache = pyattn.KVCache(q.shape[0], k.shape[1], q.shape[-1], k.shape[2], kv_dtype="bfloat16")
    cache.append(k, v)
    return {
        "sdpa": lambda **kw: sdpa(q, k, v, **kw),
        "additive": lambda **kw: pyattn.additive_attention(q, k, v, np.ones(A, q.dtype), **kw),
        "kv_cache (stored bfloat16)": lambda **kw: cache.attend(q, **dict(dict(is_causal=False), **kw)),
    }


@pytest.mark.parametrize("kwargs, exc, words", [
    (dict(attn_mask=np.ones((3, 5), np.int32)), TypeError, ["attn_mask: dtype int32"]),
    (dict(attn_mask=np.ones((4, 3, 5), bool)), ValueError, ["attn_mask of shape (4, 3, 5)", "(2, 2, 3, 5)"]),
    (dict(window=-1), ValueError, ["window left side must be >= 0"]),
    (dict(window=(1, 2, 3)), TypeError, ["window"]),
    (dict(is_causal="upper"), ValueError, ["is_causal"]),
    (dict(is_causal=1), TypeError, ["is_causal"]),
    (dict(num_threads=0), ValueError, ["num_threads must be >= 1"]),
    (dict(out=np.empty((2, 2, 3, 4), np.float32)), ValueError, ["out has shape (2, 2, 3, 4)"]),
    (dict(out=[0.0]), TypeError, ["out must be a numpy.ndarray"]),
])
def test_every_op_gives_the_same_error(kwargs, exc, words):
    rng = np.random.default_rng(200)
    q = rng.standard_normal((2, 2, 3, 8)).astype(np.float32)
    k = rng.standard_normal((2, 2, 5, 8)).astype(np.float32)
    messages = {}
    for name, op in _ops(q, k, k).items():
        with pytest.raises(exc) as info:
            op(**kwargs)
        messages[name] = str(info.value)
        for w in words:
            assert w in messages[name], (name, w, messages[name])
    assert len(set(messages.values())) == 1, messages


def test_kv_lengths_rule_is_shared():
    rng = np.random.default_rng(201)
    q = rng.standard_normal((2, 2, 3, 8)).astype(np.float32)
    k = rng.standard_normal((2, 2, 5, 8)).astype(np.float32)
    msgs = []
    for op in (lambda **kw: sdpa(q, k, k, **kw),
               lambda **kw: pyattn.additive_attention(q, k, k, np.ones(8, np.float32), **kw)):
        with pytest.raises(ValueError, match=r"kv_lengths must lie in \[0, S=5\], got values in \[0, 6\]") as info:
            op(kv_lengths=np.array([0, 6]))
        msgs.append(str(info.value))
        with pytest.raises(TypeError, match="kv_lengths must be an integer array"):
            op(kv_lengths=np.array([1.0, 2.0]))
    assert msgs[0] == msgs[1]


def test_softcap_and_per_head_rules_are_shared_with_varlen():
    rng = np.random.default_rng(202)
    q = rng.standard_normal((6, 2, 8)).astype(np.float32)
    cu = np.array([0, 2, 6])
    for bad, exc, word in ((dict(softcap=-1.0), ValueError, "softcap must be a finite number > 0"),
                           (dict(softcap="1"), TypeError, "softcap must be a real number"),
                           (dict(alibi_slopes=np.array([1.0, np.inf], np.float32)), ValueError,
                            "alibi_slopes must be finite"),
                           (dict(sinks=np.array([np.nan, 0.0], np.float32)), ValueError, "sinks must not be NaN"),
                           (dict(scale=float("inf")), ValueError, "scale must be finite")):
        with pytest.raises(exc, match=word):
            pyattn.varlen_attention(q, q, q, cu, cu, **bad)
        with pytest.raises(exc, match=word):
            sdpa(q.transpose(1, 0, 2), q.transpose(1, 0, 2), q.transpose(1, 0, 2), **bad)


def test_score_options_come_from_one_table():
    """The core's table of score options (csrc/include/pyattn/score_options.h)
    is what the public function and the reference take: a row without its
    keyword (or a keyword without its row) would be an option that cannot be
    set, or one the core would refuse."""
    import inspect

    from pyattn import reference

    table = _core.SCORE_OPTIONS
    assert list(table)[:3] == ["softcap", "alibi_slopes", "sinks"]
    assert [table[n] for n in list(table)[:3]] == ["scalar", "per_head", "per_head"]
    assert set(table.values()) <= {"scalar", "per_head"}
    for fn in (sdpa, reference.scaled_dot_product_attention):
        params = inspect.signature(fn).parameters
        for name in _core.SCORE_OPTIONS:
            assert params[name].default is None and params[name].kind is inspect.Parameter.KEYWORD_ONLY, (fn, name)


@pytest.mark.parametrize("value, exc, words", [
    (True, TypeError, "softcap must be a real number or None, got bool"),
    (np.bool_(True), TypeError, "softcap must be a real number or None, got bool"),
    ("1", TypeError, "softcap must be a real number or None, got str"),
    (0, ValueError, "softcap must be a finite number > 0, got 0"),
    (np.float32("nan"), ValueError, "softcap must be a finite number > 0, got"),
])
def test_scalar_score_option_rules(value, exc, words):
    """A scalar score option: a real number (not a bool), then its rule;
    the same message from every op (each reads the same table row)."""
    rng = np.random.default_rng(203)
    q = rng.standard_normal((2, 2, 3, 8)).astype(np.float32)
    k = rng.standard_normal((2, 2, 5, 8)).astype(np.float32)
    ops = _ops(q, k, k)
    del ops["additive"]  # (it has no score options)
    ops["varlen"] = lambda **kw: pyattn.varlen_attention(q[0].transpose(1, 0, 2), k[0].transpose(1, 0, 2),
                                                         k[0].transpose(1, 0, 2), [0, 3], [0, 5], **kw)
    messages = set()
    for name, op in ops.items():
        with pytest.raises(exc, match=words) as info:
            op(softcap=value)
        messages.add(str(info.value))
    assert len(messages) == 1, messages


def test_numbers_are_read_as_floats():
    """softcap given as an int, a NumPy float or a Fraction is its float value."""
    from fractions import Fraction

    rng = np.random.default_rng(204)
    q = rng.standard_normal((2, 3, 8)).astype(np.float32)
    want = sdpa(q, q, q, softcap=2.0)
    for c in (2, np.float32(2), np.int64(2), Fraction(2)):
        np.testing.assert_array_equal(sdpa(q, q, q, softcap=c), want)


def test_a_score_option_the_core_does_not_know_is_a_type_error():
    """Entry points that forward score options without naming them (the
    stored-KV path of KVCache.attend) get the core's TypeError naming the
    keyword; the public function refuses it itself."""
    rng = np.random.default_rng(205)
    q = rng.standard_normal((1, 2, 3, 8)).astype(np.float32)
    cache = pyattn.KVCache(1, 2, 8, 8, kv_dtype="int8")
    cache.append(q, q)
    with pytest.raises(TypeError, match=r"unknown score option 'softcapp' \(the score options are softcap, "
                                        r"alibi_slopes, sinks"):
        cache.attend(q, softcapp=1.0)
    with pytest.raises(TypeError, match="softcapp"):
        sdpa(q, q, q, softcapp=1.0)


def test_result_sizes_are_refused_before_any_conversion():
    """A float64 mask for float32 inputs is converted (clipped) to float32;
    a result too large to address is refused before that conversion is
    attempted (a broadcast mask of 2**43 elements would not fit in memory)."""
    def zeros(dtype, *shape):
        return np.broadcast_to(np.zeros((1,) * len(shape), dtype), shape)

    q, k = zeros(np.float32, 2**22, 2**21, 1), zeros(np.float32, 2**22, 1, 1)
    v = zeros(np.float32, 2**22, 1, 2**21)
    mask = zeros(np.float64, 2**22, 2**21, 1)
    with pytest.raises(ValueError, match="the result of shape .* more than can be addressed"):
        sdpa(q, k, v, attn_mask=mask)
    with pytest.raises(ValueError, match="weights of shape .* more than can be addressed"):
        sdpa(zeros(np.float32, 2**31, 1), zeros(np.float32, 2**31, 1), zeros(np.float32, 2**31, 1),
             attn_mask=zeros(np.float64, 2**31, 1), return_weights=True)  # (16 GiB once converted)


def test_the_shared_shape_rule_names_the_shapes():
    q = np.zeros((2, 3, 4, 8), np.float32)
    with pytest.raises(ValueError, match=r"batch dimensions do not broadcast: query \(2, 3\), key \(2, 2\)"):
        sdpa(q, q[:, :2], q[:, :2])
    with pytest.raises(ValueError, match=r"key/value heads \(2\) must divide query heads \(3\)"):
        sdpa(q, q[:, :2], q[:, :2], enable_gqa=True)
    with pytest.raises(ValueError, match=r"key feature size 4 \(shape \(2, 3, 4, 4\)\) != query feature size 8"):
        sdpa(q, q[..., :4], q)
    assert _args.call_shape(q, q[:, :1], q[:, :1], True) == ((2, 3), 4, 4, 8, 8)


def test_additive_sizes_are_refused_before_its_projections():
    def zeros(*shape):
        return np.broadcast_to(np.zeros((1,) * len(shape), np.float32), shape)

    q, k, v = zeros(2**22, 2**21, 3), zeros(2**22, 1, 5), zeros(2**22, 1, 2**21)
    w_query, w_key = np.zeros((3, 4), np.float32), np.zeros((5, 4), np.float32)
    with pytest.raises(ValueError, match="the result of shape .* more than can be addressed"):
        pyattn.additive_attention(q, k, v, np.ones(4, np.float32), w_query=w_query, w_key=w_key)
