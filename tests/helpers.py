"""Shared test helpers: random cases, the reference call, SPEC section 7 tolerances.

Plain functions and hypothesis strategies live here (importable as ``helpers``
because pytest puts tests/ on sys.path); fixtures and the hypothesis profile
live in conftest.py.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import pathlib

import numpy as np
import pytest
from hypothesis import strategies as st

try:
    import ml_dtypes
except ImportError:  # bfloat16 tests skip without it
    ml_dtypes = None

ROOT = pathlib.Path(__file__).resolve().parent.parent

BFLOAT16 = None if ml_dtypes is None else np.dtype(ml_dtypes.bfloat16)

# Storage-only dtypes: computed in float32 by the fast path.
LOW_PRECISION = [
    pytest.param(np.dtype(np.float16), id="float16"),
    pytest.param(
        BFLOAT16,
        id="bfloat16",
        marks=pytest.mark.skipif(BFLOAT16 is None, reason="ml_dtypes not installed"),
    ),
]


def load_reference():
    """``pyattn.reference``; if the package itself does not import (extension
    not built), the module file is loaded on its own -- it needs only NumPy."""
    try:
        from pyattn import reference
    except ImportError:
        spec = importlib.util.spec_from_file_location(
            "pyattn_reference_standalone", ROOT / "pyattn" / "reference.py"
        )
        reference = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(reference)
    return reference


reference = load_reference()


# ---------------------------------------------------------------------------
# Tolerances (SPEC section 7)
# ---------------------------------------------------------------------------


def tolerance(dtype):
    """rtol/atol for a result of ``dtype`` against the float64 reference."""
    dtype = np.dtype(dtype)
    if dtype == np.float64:
        return dict(rtol=1e-12, atol=1e-12)
    if dtype == np.float32:
        return dict(rtol=2e-5, atol=2e-6)
    # float16 / bfloat16: computed in float32, then rounded to the dtype
    # (at most one unit in the last place of the dtype).
    eps = float(ml_dtypes.finfo(dtype).eps if dtype == BFLOAT16 else np.finfo(dtype).eps)
    return dict(rtol=eps, atol=2e-6)


def assert_close(actual, expected, dtype, err_msg=""):
    """Elementwise comparison with the tolerance of ``dtype``; NaN and inf
    must sit at the same places in both."""
    np.testing.assert_allclose(
        np.asarray(actual).astype(np.float64),
        np.asarray(expected).astype(np.float64),
        err_msg=err_msg,
        **tolerance(dtype),
    )


def lse_dtype(dtype):
    return np.dtype(np.float64) if np.dtype(dtype) == np.float64 else np.dtype(np.float32)


# ---------------------------------------------------------------------------
# Calling the reference and comparing
# ---------------------------------------------------------------------------


def as_float64(x):
    return None if x is None else np.asarray(x).astype(np.float64)


def unpack(result, kwargs):
    """The result of an sdpa call as a dict with keys out[, weights][, lse]."""
    rw = kwargs.get("return_weights", False)
    rl = kwargs.get("return_lse", False)
    names = ["out"] + (["weights"] if rw else []) + (["lse"] if rl else [])
    if len(names) == 1:
        assert isinstance(result, np.ndarray), type(result)
        return {"out": result}
    assert isinstance(result, tuple) and len(result) == len(names), result
    return dict(zip(names, result))


def run_reference(q, k, v, **kwargs):
    """The reference on float64 copies of q/k/v and of a float mask."""
    kwargs = dict(kwargs)
    kwargs.pop("out", None)
    kwargs.pop("num_threads", None)
    mask = kwargs.get("attn_mask")
    if mask is not None and np.asarray(mask).dtype != np.bool_:
        kwargs["attn_mask"] = as_float64(mask)
    result = reference.scaled_dot_product_attention(
        as_float64(q), as_float64(k), as_float64(v), **kwargs
    )
    return unpack(result, kwargs)


def result_batch(q, k, v, enable_gqa=False):
    if enable_gqa:
        outer = np.broadcast_shapes(q.shape[:-3], k.shape[:-3], v.shape[:-3])
        return outer + (q.shape[-3],)
    return np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])


def assert_matches_reference(result, q, k, v, **kwargs):
    """Check dtypes, shapes and values of a fast-path result against the
    reference computed in float64."""
    got = unpack(result, kwargs)
    want = run_reference(q, k, v, **kwargs)
    dtype = q.dtype
    batch = result_batch(q, k, v, kwargs.get("enable_gqa", False))
    L, S, Ev = q.shape[-2], k.shape[-2], v.shape[-1]

    assert got["out"].dtype == dtype
    assert got["out"].shape == batch + (L, Ev)
    assert_close(got["out"], want["out"], dtype, "out")
    if "weights" in got:
        assert got["weights"].dtype == dtype
        assert got["weights"].shape == batch + (L, S)
        assert_close(got["weights"], want["weights"], dtype, "weights")
    if "lse" in got:
        assert got["lse"].dtype == lse_dtype(dtype)
        assert got["lse"].shape == batch + (L,)
        assert_close(got["lse"], want["lse"], lse_dtype(dtype), "lse")
    return got, want


# ---------------------------------------------------------------------------
# Random cases
# ---------------------------------------------------------------------------


def rows_apart(a):
    """A copy of `a` whose last dimension is not unit-stride (the core
    copies such arrays before reading them)."""
    if not isinstance(a, np.ndarray) or a.ndim == 0 or a.shape[-1] < 2:
        return a
    wide = np.empty(a.shape + (2,), a.dtype)
    wide[..., 0] = a
    return wide[..., 0]


def random_array(rng, shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def qkv(rng, batch, L, S, E, Ev=None, dtype=np.float32, kv_batch=None):
    """Random query (batch, L, E), key (kv_batch, S, E), value (kv_batch, S, Ev)."""
    batch = tuple(batch)
    kv_batch = batch if kv_batch is None else tuple(kv_batch)
    Ev = E if Ev is None else Ev
    return (
        random_array(rng, batch + (L, E), dtype),
        random_array(rng, kv_batch + (S, E), dtype),
        random_array(rng, kv_batch + (S, Ev), dtype),
    )


@dataclasses.dataclass
class Case:
    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    kwargs: dict

    def __repr__(self):
        def show(x):
            if isinstance(x, np.ndarray):
                small = f", {x.tolist()}" if x.size <= 8 else ""
                return f"array(shape={x.shape}, dtype={x.dtype}{small})"
            return repr(x)

        kw = ", ".join(f"{n}={show(x)}" for n, x in self.kwargs.items())
        return f"Case(q={show(self.q)}, k={show(self.k)}, v={show(self.v)}, {kw})"

    def _repr_pretty_(self, printer, cycle):  # how hypothesis prints a draw
        printer.text(repr(self))

    def copies(self):
        """Copies of every array argument, to check nothing was modified."""
        arrays = [self.q, self.k, self.v] + [
            x for x in self.kwargs.values() if isinstance(x, np.ndarray)
        ]
        return [a.copy() for a in arrays]

    def assert_unchanged(self, copies):
        arrays = [self.q, self.k, self.v] + [
            x for x in self.kwargs.values() if isinstance(x, np.ndarray)
        ]
        for a, c in zip(arrays, copies):
            np.testing.assert_array_equal(a, c)


def finfo_min(dtype):
    dtype = np.dtype(dtype)
    return ml_dtypes.finfo(dtype).min if dtype == BFLOAT16 else np.finfo(dtype).min


@st.composite
def _broadcastable(draw, shape, min_keep=0):
    """A shape that broadcasts to ``shape``: leading dims dropped, some set to 1."""
    shape = tuple(shape)
    drop = draw(st.integers(0, max(0, len(shape) - min_keep)))
    kept = shape[drop:]
    ones = draw(st.lists(st.booleans(), min_size=len(kept), max_size=len(kept)))
    return tuple(1 if one else n for n, one in zip(kept, ones))


@st.composite
def sdpa_cases(
    draw,
    dtype=np.float64,
    max_L=8,
    max_S=10,
    max_E=8,
    max_Ev=6,
    max_rank=3,
    gqa=True,
    masks=("none", "bool", "float"),
    use_finfo_min=True,
    returns=True,
):
    """A random scaled_dot_product_attention call covering every SPEC rule:
    broadcast batch dims (incl. 0-sized), GQA, bool/float masks with fewer dims,
    -inf and finfo.min bias, both causal alignments, windows, kv_lengths in
    every accepted form, scale, and the optional returns."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rank = draw(st.integers(0, max_rank))
    full = [draw(st.integers(1, 3)) for _ in range(rank)]
    if rank and draw(st.integers(0, 9)) == 0:
        full[draw(st.integers(0, rank - 1))] = 0
    L = draw(st.integers(0, max_L))
    S = draw(st.integers(0, max_S))
    E = draw(st.integers(0, max_E))
    Ev = draw(st.integers(0, max_Ev))

    use_gqa = gqa and rank >= 1 and draw(st.booleans())
    if use_gqa:
        hkv = draw(st.sampled_from([1, 2]))
        hq = hkv * draw(st.sampled_from([1, 2, 3]))
        outer = full[:-1]
        qb = draw(_broadcastable(outer)) + (hq,)
        kb = draw(_broadcastable(outer)) + (hkv,)
        vb = draw(_broadcastable(outer)) + (hkv,)
    else:
        qb, kb, vb = (draw(_broadcastable(full)) for _ in range(3))
    q = random_array(rng, qb + (L, E), dtype)
    k = random_array(rng, kb + (S, E), dtype)
    v = random_array(rng, vb + (S, Ev), dtype)
    batch = result_batch(q, k, v, use_gqa)

    kwargs = {}
    if use_gqa:
        kwargs["enable_gqa"] = True

    kind = draw(st.sampled_from(masks))
    if kind != "none":
        mshape = draw(_broadcastable(batch + (L, S), min_keep=2))
        if kind == "bool":
            density = draw(st.sampled_from([0.3, 0.7, 1.0]))
            mask = rng.random(mshape) < density
        else:
            mask = 2.0 * rng.standard_normal(mshape)
            p_inf = draw(st.sampled_from([0.0, 0.2, 0.6]))
            mask[rng.random(mshape) < p_inf] = -np.inf
            mask = mask.astype(dtype)
            if use_finfo_min and draw(st.booleans()):
                mask[rng.random(mshape) < 0.3] = finfo_min(dtype)
        kwargs["attn_mask"] = mask

    causal = draw(st.sampled_from([False, True, "upper_left", "lower_right"]))
    if causal is not False:
        kwargs["is_causal"] = causal
    side = st.none() | st.integers(0, 5)
    window = draw(st.none() | st.integers(0, 5) | st.tuples(side, side))
    if window is not None:
        kwargs["window"] = window

    kv_mode = draw(st.sampled_from(["none", "broadcast", "first", "scalar"]))
    kv_dtype = draw(st.sampled_from([np.int64, np.int32]))
    if kv_mode == "first" and len(batch) >= 2:
        n = batch[0] if draw(st.booleans()) else 1
        kwargs["kv_lengths"] = rng.integers(0, S + 1, size=(n,)).astype(kv_dtype)
    elif kv_mode in ("broadcast", "first"):
        shape = draw(_broadcastable(batch))
        if len(shape) == 1 and len(batch) >= 2:
            shape = ()  # a 1-D array would follow the first-batch-dim rule
        kwargs["kv_lengths"] = rng.integers(0, S + 1, size=shape).astype(kv_dtype)
    elif kv_mode == "scalar":
        kwargs["kv_lengths"] = np.array(rng.integers(0, S + 1), dtype=kv_dtype)

    scale = draw(st.sampled_from([None, None, 0.25, -0.5, 1.3]))
    if scale is not None:
        kwargs["scale"] = scale
    if returns:
        if draw(st.booleans()):
            kwargs["return_weights"] = True
        if draw(st.booleans()):
            kwargs["return_lse"] = True
    return Case(q, k, v, kwargs)


def structural_visibility(batch, L, S, is_causal=False, window=None, kv_lengths=None):
    """(batch..., L, S) visibility from the causal/window/kv_lengths rules,
    written element by element from the SPEC text (slow; small shapes only)."""
    batch = tuple(batch)
    lower_right = is_causal == "lower_right"
    causal = is_causal is True or is_causal in ("upper_left", "lower_right")
    if window is None:
        left = right = None
    elif isinstance(window, tuple):
        left, right = window
    else:
        left, right = window, 0
    n_of = kv_lengths_of(kv_lengths, batch, S)
    vis = np.zeros(batch + (L, S), dtype=bool)
    for b in np.ndindex(*batch):
        n = n_of(b)
        for i in range(L):
            p = i + n - L if lower_right else i
            for j in range(S):
                ok = j < n
                ok = ok and not (causal and j > p)
                ok = ok and not (left is not None and j < p - left)
                ok = ok and not (right is not None and j > p + right)
                vis[b + (i, j)] = ok
    return vis


def kv_lengths_of(kv_lengths, batch, S):
    """A function batch index -> number of valid keys, from the SPEC rule."""
    if kv_lengths is None:
        return lambda b: S
    n = np.asarray(kv_lengths)
    if n.ndim == 1 and len(batch) >= 2:
        return lambda b: int(n[b[0] if n.shape[0] > 1 else 0])
    full = np.broadcast_to(n, batch)
    return lambda b: int(full[b])
