"""Differential fuzzing of pyattn's public API against pyattn.reference.

One *case* draws a call (function, arrays, options) from a ``Chooser`` -- a
source of choices that can be a seeded NumPy generator (tools/fuzz_long.py),
hypothesis' ``data.draw`` (tests/test_fuzz.py) or atheris' data provider --
then runs it through pyattn and through the NumPy reference and applies the
oracle:

* the reference raises -> pyattn raises a TypeError/ValueError (the same
  class when the case holds at most one deliberate fault) whose message names
  an argument;
* the reference returns -> pyattn returns results of the same dtypes and
  shapes, equal within the accuracy contract (float32 vs the float64
  reference: rtol=2e-5, atol=2e-6; float64: 1e-12; half types: their eps), NaN
  at the same places, ``out`` returned itself;
* an absurdly large result (more elements than any address space) -> a
  MemoryError or ValueError, never an attempt to compute;
* never a modified input: every array argument lives in a buffer of its own
  whose bytes are compared before and after (for ``out``: nothing outside the
  view changed).

A crash (signal, abort) kills the process: the long-run driver runs cases in
a child process and reports the seed of the case that killed it.
"""

from __future__ import annotations

import dataclasses
import os
import re

import numpy as np

import pyattn
from pyattn import reference

try:
    import ml_dtypes
    BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - ml_dtypes is a test dependency
    ml_dtypes, BFLOAT16 = None, None

FLOATS = [np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16)] + ([BFLOAT16] if BFLOAT16 else [])
NON_FLOATS = [np.dtype(np.int32), np.dtype(np.int64), np.dtype(np.bool_), np.dtype(np.complex64),
              np.dtype(np.complex128), np.dtype(object), np.dtype(np.uint8)]

# Words an error message may use to name the argument at fault.
ARG_WORDS = ("query", "key", "value", "attn_mask", "mask", "is_causal", "scale", "window", "kv_lengths",
             "enable_gqa", "heads", "return_weights", "return_lse", "out", "num_threads", "v_a", "w_query",
             "w_key", "bias", "outputs", "lses", "lse", "embed_dim", "num_heads", "num_kv_heads", "kdim",
             "vdim", "dtype", "batch", "head_dim", "max_seq_len", "value_dim", "k", "v", "q", "counts",
             "key_padding_mask", "need_weights", "average_attn_weights", "index", "lengths",
             "softcap", "alibi_slopes", "sinks")
_ARG_RE = re.compile(r"\b(" + "|".join(ARG_WORDS) + r")\b")



class Finding(AssertionError):
    """A broken contract: ``kind`` is 'wrong answer', 'modified input',
    'unclear error', 'wrong exception' or 'missed error'."""

    def __init__(self, kind, msg):
        super().__init__(f"{kind}: {msg}")
        self.kind = kind


# ---------------------------------------------------------------------------
# Choosers
# ---------------------------------------------------------------------------


class RngChooser:
    """Choices from a seeded numpy Generator."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def int(self, lo, hi):
        return int(self.rng.integers(lo, hi + 1))

    def choice(self, options):
        return options[int(self.rng.integers(len(options)))]

    def chance(self, p):
        return bool(self.rng.random() < p)

    def array(self, shape, dtype):
        return self.rng.standard_normal(shape).astype(dtype)


class HypothesisChooser:
    """Choices drawn through hypothesis (shrinkable); array contents from a
    seeded generator whose seed hypothesis also draws."""

    def __init__(self, data):
        from hypothesis import strategies as st
        self.st, self.data = st, data
        self.rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))

    def int(self, lo, hi):
        return self.data.draw(self.st.integers(lo, hi))

    def choice(self, options):
        return options[self.data.draw(self.st.integers(0, len(options) - 1))]

    def chance(self, p):
        return self.data.draw(self.st.integers(0, 999)) < p * 1000

    def array(self, shape, dtype):
        return self.rng.standard_normal(shape).astype(dtype)


class AtherisChooser:
    """Choices from atheris' FuzzedDataProvider (coverage-guided)."""

    def __init__(self, fdp):
        self.fdp = fdp
        self.rng = np.random.default_rng(fdp.ConsumeIntInRange(0, 2**32 - 1))

    def int(self, lo, hi):
        return self.fdp.ConsumeIntInRange(lo, hi)

    def choice(self, options):
        return options[self.fdp.ConsumeIntInRange(0, len(options) - 1)]

    def chance(self, p):
        return self.fdp.ConsumeIntInRange(0, 999) < p * 1000

    def array(self, shape, dtype):
        return self.rng.standard_normal(shape).astype(dtype)


# ---------------------------------------------------------------------------
# Arrays with layouts of every kind, each in a buffer of its own
# ---------------------------------------------------------------------------


class Owned:
    """Buffers of the case's array arguments, to prove they are unchanged."""

    def __init__(self):
        self.buffers = []

    def add(self, base):
        self.buffers.append((base, base.copy()))

    def check_unchanged(self, what):
        for base, before in self.buffers:
            same = base.tobytes() == before.tobytes() if base.dtype != object else all(
                x is y for x, y in zip(base.ravel(), before.ravel()))
            if not same:
                raise Finding("modified input", f"{what}: an input buffer of shape {base.shape} changed")


def values(ch, shape, dtype):
    dtype = np.dtype(dtype)
    if dtype == object:
        return np.full(shape, 0.5, dtype=object)
    if dtype == np.bool_:
        return ch.array(shape, np.float32) > 0
    if dtype.kind in "iu":
        return (ch.array(shape, np.float32) * 3).astype(dtype)
    if dtype.kind == "c":
        return ch.array(shape, np.float64).astype(dtype)
    return ch.array(shape, np.float64).astype(dtype)


def laid_out(ch, owned, shape, dtype, *, allow_broadcast=True):
    """An array of ``shape``/``dtype`` in a layout drawn from: contiguous,
    Fortran order, transposed last two dims, strided slice, negative strides,
    stride-0 broadcast (every read sees the same row) -- registering its
    buffer."""
    shape = tuple(shape)
    kind = ch.choice(["c", "c", "c", "f", "t", "slice", "neg", "bcast"] if allow_broadcast
                     else ["c", "c", "f", "t", "slice", "neg"])
    if kind == "f":
        a = np.asfortranarray(values(ch, shape, dtype))
        base = a
    elif kind == "t" and len(shape) >= 2:
        base = values(ch, shape[:-2] + (shape[-1], shape[-2]), dtype)
        a = np.swapaxes(base, -1, -2)
    elif kind == "slice" and len(shape) >= 1:
        ax = ch.int(0, len(shape) - 1)
        big = list(shape)
        big[ax] = shape[ax] * 2 + 1
        base = values(ch, big, dtype)
        idx = [slice(None)] * len(shape)
        idx[ax] = slice(1, None, 2)
        a = base[tuple(idx)]
    elif kind == "neg" and len(shape) >= 1:
        base = values(ch, shape, dtype)
        ax = ch.int(0, len(shape) - 1)
        a = np.flip(base, ax)
    elif kind == "bcast" and len(shape) >= 1 and 0 not in shape:
        ax = ch.int(0, len(shape) - 1)
        small = list(shape)
        small[ax] = 1
        base = values(ch, small, dtype)
        a = np.broadcast_to(base, shape)
    else:
        base = values(ch, shape, dtype)
        a = base
    assert a.shape == shape, (kind, a.shape, shape)
    owned.add(base)
    return a


# ---------------------------------------------------------------------------
# The oracle
# ---------------------------------------------------------------------------


def tolerance(dtype):
    dtype = np.dtype(dtype)
    if dtype == np.float64:
        return dict(rtol=1e-12, atol=1e-12)
    if dtype == np.float32:
        return dict(rtol=2e-5, atol=2e-6)
    eps = float(ml_dtypes.finfo(dtype).eps if dtype == BFLOAT16 else np.finfo(dtype).eps)
    return dict(rtol=eps, atol=2e-6)


def as_tuple(r):
    return r if isinstance(r, tuple) else (r,)


def compare(got, want, what, tol_scale=1.0):
    got, want = as_tuple(got), as_tuple(want)
    if len(got) != len(want):
        raise Finding("wrong answer", f"{what}: {len(got)} results, reference has {len(want)}")
    for i, (g, w) in enumerate(zip(got, want)):
        if not isinstance(g, np.ndarray):
            raise Finding("wrong answer", f"{what}: result {i} is {type(g).__name__}, not an ndarray")
        if g.dtype != w.dtype or g.shape != w.shape:
            raise Finding("wrong answer", f"{what}: result {i} {g.dtype}{g.shape}, reference {w.dtype}{w.shape}")
        g64, w64 = g.astype(np.float64), w.astype(np.float64)
        tol = tolerance(g.dtype if i == 0 or g.dtype != np.float32 else want[0].dtype)
        tol = {key: x * tol_scale for key, x in tol.items()}
        if not np.array_equal(np.isnan(g64), np.isnan(w64)):
            raise Finding("wrong answer", f"{what}: result {i} NaN at different places")
        ok = np.isclose(g64, w64, equal_nan=True, **tol)
        if not ok.all():
            j = np.flatnonzero(~ok.ravel())[0]
            raise Finding("wrong answer", f"{what}: result {i} differs at flat index {j}: "
                                          f"{g64.ravel()[j]!r} vs reference {w64.ravel()[j]!r} ({int((~ok).sum())} elements)")


def names_an_argument(msg):
    return _ARG_RE.search(msg) is not None


@dataclasses.dataclass
class Case:
    """One call: ``fn(*args, **kwargs)`` for pyattn and ``ref(*rargs, **rkwargs)``
    for the reference (None: no reference -- a huge case that must fail)."""
    name: str
    fn: object
    args: tuple
    kwargs: dict
    ref: object = None
    rargs: tuple = ()
    rkwargs: dict = dataclasses.field(default_factory=dict)
    faults: list = dataclasses.field(default_factory=list)
    owned: Owned = None
    out_view: object = None
    out_owner: object = None
    huge: bool = False
    check_threads: bool = False
    # The accuracy contract is stated for unit-scale inputs, whose scores
    # scale * <q, k> stay within a few units. Scores of magnitude m are
    # rounded in float32 by ~m * 6e-8, which moves the softmax by as much; so
    # beyond |s| = 8 (a stride-0 feature axis makes q and k's features
    # equal, a large scale multiplies every score) the tolerance grows by
    # max|s| / 8. Within it, the tolerance is exactly the contract's.
    tol_scale: float = 1.0

    def describe(self):
        def d(x):
            if isinstance(x, np.ndarray):
                return f"array({x.dtype}, shape={x.shape}, strides={x.strides})"
            if isinstance(x, (list, tuple)) and x and all(isinstance(y, np.ndarray) for y in x):
                return "[" + ", ".join(d(y) for y in x) + "]"
            return repr(x)
        return (f"{self.name}({', '.join(d(a) for a in self.args)}"
                + "".join(f", {k}={d(v)}" for k, v in self.kwargs.items()) + f") faults={self.faults}")


def run_case(case):
    """Applies the oracle; returns 'ok' or the exception class name raised
    (as expected); raises Finding on a broken contract."""
    out_before = None
    if case.out_owner is not None:
        out_before = case.out_owner.copy()
    try:
        got = case.fn(*case.args, **case.kwargs)
        got_exc = None
    except (TypeError, ValueError, MemoryError, OverflowError) as e:
        got, got_exc = None, e
    case.owned.check_unchanged(case.describe())

    if case.huge:
        if got_exc is None:
            raise Finding("missed error", f"{case.describe()}: a result larger than memory was returned")
        if not isinstance(got_exc, (MemoryError, ValueError)):
            raise Finding("wrong exception", f"{case.describe()}: {type(got_exc).__name__}: {got_exc}")
        return type(got_exc).__name__

    try:
        want = case.ref(*case.rargs, **case.rkwargs)
        want_exc = None
    except (TypeError, ValueError) as e:
        want, want_exc = None, e

    if want_exc is not None:
        if got_exc is None:
            raise Finding("missed error", f"{case.describe()}: reference raised {type(want_exc).__name__}: "
                                          f"{want_exc}; pyattn returned")
        if isinstance(got_exc, OverflowError) or not isinstance(got_exc, (TypeError, ValueError)):
            raise Finding("wrong exception", f"{case.describe()}: {type(got_exc).__name__}: {got_exc}")
        if len(case.faults) <= 1 and type(got_exc) is not type(want_exc):
            raise Finding("wrong exception", f"{case.describe()}: pyattn {type(got_exc).__name__}: {got_exc}; "
                                             f"reference {type(want_exc).__name__}: {want_exc}")
        if not names_an_argument(str(got_exc)):
            raise Finding("unclear error", f"{case.describe()}: {type(got_exc).__name__}: {got_exc!s}")
        return type(got_exc).__name__
    if got_exc is not None:
        raise Finding("wrong exception", f"{case.describe()}: pyattn raised {type(got_exc).__name__}: "
                                         f"{got_exc}; the reference computed a result")
    compare(got, want, case.describe(), case.tol_scale)
    if case.out_view is not None:
        first = as_tuple(got)[0]
        if first is not case.out_view:
            raise Finding("wrong answer", f"{case.describe()}: out was not returned itself")
        expect = out_before
        view_in_copy = np.ndarray(case.out_view.shape, case.out_view.dtype,
                                  buffer=expect, offset=_offset(case.out_view, case.out_owner),
                                  strides=case.out_view.strides)
        view_in_copy[...] = case.out_view
        if expect.tobytes() != case.out_owner.tobytes():
            raise Finding("modified input", f"{case.describe()}: memory of out's buffer outside the view changed")
    if case.check_threads:
        kw = dict(case.kwargs)
        kw["num_threads"] = 1
        kw.pop("out", None)
        again = case.fn(*case.args, **kw)
        for a, b in zip(as_tuple(got), as_tuple(again)):
            if a.tobytes() != b.tobytes():
                raise Finding("wrong answer", f"{case.describe()}: num_threads=1 gives different bits")
    return "ok"


def _offset(view, owner):
    return view.__array_interface__["data"][0] - owner.__array_interface__["data"][0]


def score_tolerance_scale(q, k, scale, gqa):
    """max(1, max |scale * <q_i, k_j>| / 8) over the case's scores (see Case.tol_scale)."""
    try:
        E = q.shape[-1]
        sc = float(scale) if scale is not None else (1.0 / np.sqrt(E) if E else 1.0)
        if not np.isfinite(sc) or q.size == 0 or k.size == 0:
            return 1.0
        q64, k64 = q.astype(np.float64), k.astype(np.float64)
        if gqa:
            k64 = np.repeat(k64, q64.shape[-3] // k64.shape[-3], axis=-3)
        with np.errstate(all="ignore"):
            m = np.nanmax(np.abs(sc * np.matmul(q64, np.swapaxes(k64, -1, -2))))
        return max(1.0, float(m) / 8.0) if np.isfinite(m) else 1.0
    except (ValueError, TypeError, ZeroDivisionError):
        return 1.0


# ---------------------------------------------------------------------------
# Shared option draws
# ---------------------------------------------------------------------------

DIMS = [0, 1, 1, 2, 3, 4, 5, 7, 8, 13, 16, 17, 33, 64]
FEATS = [0, 1, 2, 3, 4, 7, 8, 16, 31, 32, 64, 65]


def draw_batch(ch):
    return tuple(ch.choice([1, 1, 2, 2, 3, 0]) for _ in range(ch.int(0, 3)))


def bcast_variant(ch, batch):
    """A shape broadcastable to ``batch``: some dims 1, maybe fewer dims."""
    out = [1 if ch.chance(0.3) else b for b in batch]
    drop = ch.int(0, len(out)) if ch.chance(0.3) else 0
    return tuple(out[drop:])


def draw_threads(ch, faults):
    options = [None, None, None, 1, 2, 3, 4]
    # 10**6 and 2**31 - 1 are valid (the core caps the team it starts);
    # beyond a C int is a ValueError.
    bad = [0, -1, True, 2.0, "2", 1.5, -(2**40), 10**6, 2**31 - 1, 2**31, 2**64]
    if ch.chance(0.12):
        t = ch.choice(bad)
        if not (isinstance(t, int) and not isinstance(t, bool) and 1 <= t <= 2**31 - 1):
            faults.append("num_threads")
        return t
    if ch.chance(0.05):
        return np.int64(2)
    return ch.choice(options)


def draw_causal(ch, faults):
    if ch.chance(0.06):
        faults.append("is_causal")
        return ch.choice(["bogus", 2, None, 1.0, "LOWER_RIGHT"])
    return ch.choice([False, False, True, "upper_left", "lower_right", np.bool_(True)])


def draw_window(ch, L, S, faults):
    r = ch.int(0, 9)
    if r < 5:
        return None
    if r < 7:
        return ch.int(0, max(L, S) + 2)
    if r < 9:
        return (ch.choice([None, 0, 1, 3, 100]), ch.choice([None, 0, 1, 3, 100]))
    faults.append("window")
    return ch.choice([-1, (1, -2), 1.5, "3", (1, 2, 3), (None,), [2, 2.0]])


def draw_scale(ch, faults):
    if ch.chance(0.6):
        return None
    if ch.chance(0.25):
        s = ch.choice([float("nan"), float("inf"), -float("inf"), "0.1", 1j, [0.1]])
        faults.append("scale")
        return s
    return ch.choice([0.0, -0.5, 0.125, 1.0, 3.0, np.float32(0.3), 2])


def draw_mask(ch, owned, batch, L, S, faults, *, invert_bool=False):
    r = ch.int(0, 9)
    if r < 4:
        return None
    full = tuple(batch) + (L, S)
    shape = bcast_variant(ch, batch) + (ch.choice([L, L, 1]), ch.choice([S, S, 1]))
    if ch.chance(0.06):
        faults.append("attn_mask shape")
        shape = (L + 1, S) if ch.chance(0.5) else (2,) + full
    if r < 7:
        m = laid_out(ch, owned, shape, np.bool_)
    elif r < 9:
        dt = ch.choice(FLOATS)
        base = ch.array(shape, np.float64)
        if ch.chance(0.5) and base.size:
            base[base < -0.8] = -np.inf
        base = base.astype(dt)
        owned.add(base)
        m = base
    else:
        faults.append("attn_mask dtype")
        m = laid_out(ch, owned, shape, ch.choice([np.int32, np.complex64, object]))
    return m


def draw_score_options(ch, owned, batch, faults):
    """The score variants (docs/score_variants.md): softcap, and ALiBi slopes
    and sinks as arrays of one value per query head, broadcastable to the
    result's batch dims without adding dims ((H,), (B, H), (1, H), ...)."""
    kw = {}
    if ch.chance(0.15):
        if ch.chance(0.1):
            faults.append("softcap")
            kw["softcap"] = ch.choice([0.0, -1.0, float("nan"), float("inf"), "2"])
        else:
            kw["softcap"] = ch.choice([0.5, 2.5, 30.0, np.float32(4.0), 7])
    for name in ("alibi_slopes", "sinks"):
        if not batch or not ch.chance(0.12):
            continue
        shape = tuple(batch)[len(batch) - ch.int(1, len(batch)):]
        shape = tuple(1 if ch.chance(0.2) else d for d in shape)
        if ch.chance(0.06):
            faults.append(name)
            shape = shape[:-1] + (shape[-1] + 1,)
        vals = ch.array(shape, np.float64)
        if name == "alibi_slopes":
            vals = np.abs(vals) * 0.5
        elif vals.size and ch.chance(0.3):
            vals.flat[0] = -np.inf  # a head whose sink takes no part
        vals = vals.astype(ch.choice([np.float32, np.float64]))
        owned.add(vals)
        kw[name] = vals
    return kw


def draw_lengths(ch, owned, batch, S, faults):
    if ch.chance(0.7):
        return None
    shape = bcast_variant(ch, batch)
    if len(batch) >= 2 and ch.chance(0.3):
        shape = (batch[0],)
    vals = np.array([ch.int(0, S) for _ in range(int(np.prod(shape)))], np.int64).reshape(shape)
    if ch.chance(0.08) and vals.size:
        faults.append("kv_lengths value")
        vals.flat[0] = ch.choice([-1, S + 1])
    dt = np.int64
    if ch.chance(0.06):
        faults.append("kv_lengths dtype")
        dt = ch.choice([np.float32, np.bool_, np.complex64])
    elif ch.chance(0.3):
        dt = ch.choice([np.int32, np.uint8, np.int16])
    a = vals.astype(dt)
    owned.add(a)
    return a


def draw_out(ch, owned, shape, dtype, inputs, faults):
    """None, or an out array: right, or wrong in one way. Returns (out, view, owner)."""
    if ch.chance(0.75):
        return None, None, None
    r = ch.int(0, 9)
    if r < 6:  # right: contiguous or a strided view into a bigger buffer
        if ch.chance(0.5) or not shape:
            owner = np.full(shape, np.nan if np.dtype(dtype).kind == "f" else 0, dtype)
            return owner, owner, owner
        big = tuple(s * 2 + 1 for s in shape)
        owner = np.full(big, 7, dtype)
        view = owner[tuple(slice(1, None, 2) for _ in shape)]
        if ch.chance(0.5) and len(shape) >= 1:
            view = np.flip(view, -1)
        return view, view, owner
    if r == 6:
        faults.append("out shape")
        a = np.zeros(tuple(shape) + (2,), dtype)
    elif r == 7:
        faults.append("out dtype")
        a = np.zeros(shape, ch.choice([d for d in FLOATS + [np.dtype(np.int32)] if d != np.dtype(dtype)]))
    elif r == 8:
        faults.append("out read-only")
        a = np.zeros(shape, dtype)
        a.flags.writeable = False
    else:
        same = [x for x in inputs if isinstance(x, np.ndarray) and x.shape == tuple(shape) and x.dtype == dtype]
        if same:
            faults.append("out overlaps input")
            return same[0], None, None
        faults.append("out not an array")
        return ch.choice([[0.0], "out", 3]), None, None
    owned.add(a)
    return a, None, None


# ---------------------------------------------------------------------------
# Case generators, one per public entry point
# ---------------------------------------------------------------------------


def _qkv_dtypes(ch, faults):
    dt = ch.choice(FLOATS)
    if ch.chance(0.06):
        faults.append("qkv dtype")
        bad = ch.choice(NON_FLOATS)
        which = ch.int(0, 2)
        return [bad if i == which else dt for i in range(3)]
    if ch.chance(0.04):
        faults.append("qkv dtype mix")
        other = ch.choice([d for d in FLOATS if d != dt])
        return [dt, other, dt]
    return [dt, dt, dt]


def huge_sdpa(ch):
    """Stride-0 views whose result cannot exist (> 2**50 elements)."""
    owned = Owned()
    E = ch.choice([1, 4])
    base = np.ones((1, 1, 1, E), np.float32)
    owned.add(base)
    big = ch.choice([2**20, 2**24, 2**28])  # numpy's own limit: 2**63 bytes per view
    q = np.lib.stride_tricks.as_strided(base, (big, 1, big, E), (0, 0, 0, 4))
    k = np.lib.stride_tricks.as_strided(base, (1, 1, ch.choice([1, big]), E), (0, 0, 0, 4))
    kwargs = {}
    if ch.chance(0.3):
        kwargs["return_weights"] = True
    if ch.chance(0.3):
        kwargs["return_lse"] = True
    return Case("sdpa-huge", pyattn.scaled_dot_product_attention, (q, k, k), kwargs, owned=owned, huge=True)


def gen_sdpa(ch):
    if ch.chance(0.02):
        return huge_sdpa(ch)
    faults, owned = [], Owned()
    dts = _qkv_dtypes(ch, faults)
    gqa = ch.chance(0.2)
    batch = draw_batch(ch)
    L, S = ch.choice(DIMS), ch.choice(DIMS)
    E = ch.choice(FEATS)
    Ev = E if ch.chance(0.5) else ch.choice(FEATS)
    if gqa:
        hkv = ch.choice([1, 2, 3])
        hq = hkv * ch.choice([1, 2, 3])
        if ch.chance(0.05):
            faults.append("gqa heads")
            hq = hkv * 2 + 1 if hkv > 1 else 0
            hkv = hkv if hkv > 1 else 2
        outer = batch[:1]
        qb, kb = outer + (hq,), bcast_variant(ch, outer) + (hkv,)
        batch_r = outer + (hq,)
    else:
        qb, kb = bcast_variant(ch, batch), bcast_variant(ch, batch)
        batch_r = batch
        if ch.chance(0.3):
            qb = batch
    vb = kb
    Eq = E
    Sv = S
    if ch.chance(0.04):
        faults.append("feature size")
        Eq = E + 1
    if ch.chance(0.03):
        faults.append("key/value length")
        Sv = S + 1
    q = laid_out(ch, owned, qb + (L, Eq), dts[0])
    k = laid_out(ch, owned, kb + (S, E), dts[1])
    v = laid_out(ch, owned, vb + (Sv, Ev), dts[2])
    if ch.chance(0.1) and not gqa:  # the same array for two operands (overlapping inputs)
        # (not with enable_gqa: key would get the query's head count, a
        # second fault next to any drawn one)
        if q.shape[-1] == k.shape[-1]:
            k = q
            if v.shape[-2] != k.shape[-2]:
                v = laid_out(ch, owned, q.shape[:-1] + (Ev,), dts[2])
    if ch.chance(0.03):
        faults.append("ndim")
        q = q.reshape(-1)[:3] if q.size >= 3 else np.zeros(3, q.dtype)
        owned.add(q)
    batch_r = batch_r if not gqa else batch_r
    try:
        res_batch = (np.broadcast_shapes(q.shape[:-3], k.shape[:-3]) + (q.shape[-3],)) if gqa and q.ndim >= 3 \
            else np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except ValueError:
        res_batch = batch_r
    kwargs = {}
    mask_batch = res_batch
    if (m := draw_mask(ch, owned, mask_batch, L, S, faults)) is not None:
        kwargs["attn_mask"] = m
    if (c := draw_causal(ch, faults)) is not False:
        kwargs["is_causal"] = c
    if (s := draw_scale(ch, faults)) is not None:
        kwargs["scale"] = s
    if (w := draw_window(ch, L, S, faults)) is not None:
        kwargs["window"] = w
    if (n := draw_lengths(ch, owned, res_batch, S, faults)) is not None:
        kwargs["kv_lengths"] = n
    if gqa:
        kwargs["enable_gqa"] = True
    kwargs.update(draw_score_options(ch, owned, res_batch, faults))
    rw, rl = ch.chance(0.25), ch.chance(0.25)
    if rw:
        kwargs["return_weights"] = True
    if rl:
        kwargs["return_lse"] = True
    out_shape = tuple(res_batch) + (L, Ev)
    out, view, owner = draw_out(ch, owned, out_shape, dts[0], (q, k, v), faults)
    if out is not None:
        kwargs["out"] = out
    t = draw_threads(ch, faults)
    if t is not None:
        kwargs["num_threads"] = t
    rkwargs = dict(kwargs)
    rkwargs.pop("out", None) if view is not None else None
    tol_scale = score_tolerance_scale(q, k, s, gqa) if not faults else 1.0
    return Case("sdpa", pyattn.scaled_dot_product_attention, (q, k, v), kwargs,
                ref=reference.scaled_dot_product_attention, rargs=(q, k, v), rkwargs=rkwargs,
                faults=faults, owned=owned, out_view=view, out_owner=owner,
                check_threads=ch.chance(0.1) and not faults, tol_scale=tol_scale)


def gen_additive(ch):
    faults, owned = [], Owned()
    dts = _qkv_dtypes(ch, faults)
    batch = draw_batch(ch)
    L, S = ch.choice(DIMS[:10]), ch.choice(DIMS[:10])
    Dq, Dk, Ev = ch.choice(FEATS[:8]), ch.choice(FEATS[:8]), ch.choice(FEATS[:8])
    project = ch.chance(0.6)
    A = ch.choice([1, 2, 5, 8]) if project else None
    q = laid_out(ch, owned, bcast_variant(ch, batch) + (L, Dq), dts[0])
    k = laid_out(ch, owned, bcast_variant(ch, batch) + (S, Dk), dts[1])
    v = laid_out(ch, owned, k.shape[:-2] + (S, Ev), dts[2])
    kwargs = {}
    pdt = dts[0] if ch.chance(0.7) else ch.choice(FLOATS)
    if project:
        kwargs["w_query"] = laid_out(ch, owned, (Dq, A), pdt)
        kwargs["w_key"] = laid_out(ch, owned, (Dk, A), pdt)
        va_len = A
    else:
        if Dq != Dk:
            faults.append("additive feature sizes")
        va_len = Dq
    if ch.chance(0.4):
        kwargs["bias"] = laid_out(ch, owned, (va_len,), pdt)
    va_shape = (va_len,)
    if ch.chance(0.05):
        faults.append("v_a shape")
        va_shape = (va_len + 1,)
    v_a = laid_out(ch, owned, va_shape, pdt)
    res_batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    if (m := draw_mask(ch, owned, res_batch, L, S, faults)) is not None:
        kwargs["attn_mask"] = m
    if (c := draw_causal(ch, faults)) is not False:
        kwargs["is_causal"] = c
    if (w := draw_window(ch, L, S, faults)) is not None:
        kwargs["window"] = w
    if (n := draw_lengths(ch, owned, res_batch, S, faults)) is not None:
        kwargs["kv_lengths"] = n
    if ch.chance(0.25):
        kwargs["return_weights"] = True
    if ch.chance(0.25):
        kwargs["return_lse"] = True
    out, view, owner = draw_out(ch, owned, tuple(res_batch) + (L, Ev), dts[0], (q, k, v), faults)
    if out is not None:
        kwargs["out"] = out
    t = draw_threads(ch, faults)
    if t is not None:
        kwargs["num_threads"] = t
    rkwargs = dict(kwargs)
    if view is not None:
        rkwargs.pop("out")
    return Case("additive", pyattn.additive_attention, (q, k, v, v_a), kwargs,
                ref=reference.additive_attention, rargs=(q, k, v, v_a), rkwargs=rkwargs,
                faults=faults, owned=owned, out_view=view, out_owner=owner,
                check_threads=ch.chance(0.1) and not faults)


def gen_merge(ch):
    faults, owned = [], Owned()
    dt = ch.choice([np.dtype(np.float32), np.dtype(np.float64)] * 3 + FLOATS[2:])
    batch = draw_batch(ch)
    L, Ev = ch.choice(DIMS[:10]), ch.choice(FEATS[:8])
    P = ch.choice([1, 1, 2, 3, 5]) if not ch.chance(0.03) else 0
    if P == 0:
        faults.append("no parts")
    outs, lses = [], []
    for _ in range(P):
        outs.append(laid_out(ch, owned, batch + (L, Ev), dt))
        lse = ch.array(batch + (L,), np.float64) * 3
        if lse.size and ch.chance(0.4):
            lse[lse < -2] = -np.inf
        if lse.size and ch.chance(0.1):
            lse[...] = -np.inf
        lse = lse.astype(np.float64 if dt == np.float64 else np.float32)
        owned.add(lse)
        lses.append(lse)
    if P and ch.chance(0.05):
        faults.append("part shapes")
        lses[-1] = lses[-1][..., :0] if L else np.zeros(batch + (L + 1,), np.float32)
    if P and ch.chance(0.04):
        faults.append("part dtype")
        outs[0] = outs[0].astype(np.int32)
    if P > 1 and ch.chance(0.04):
        faults.append("lengths")
        lses = lses[:-1]
    container = ch.choice([list, tuple])
    return Case("merge", pyattn.merge_attention_states, (container(outs), container(lses)), {},
                ref=reference.merge_attention_states, rargs=(container(outs), container(lses)),
                faults=faults, owned=owned)


GENERATORS = {"sdpa": gen_sdpa, "additive": gen_additive, "merge": gen_merge}
WEIGHTS = {"sdpa": 0.6, "additive": 0.2, "merge": 0.1}


def gen_case(ch):
    """A case of a public function (MultiHeadAttention and KVCache sequences
    are separate: run_layer_case)."""
    r = ch.int(0, 99)
    if r < 60:
        return gen_sdpa(ch)
    if r < 85:
        return gen_additive(ch)
    return gen_merge(ch)


# ---------------------------------------------------------------------------
# KVCache and MultiHeadAttention: sequences of calls with their own oracles
# ---------------------------------------------------------------------------


def _expect_error(fn, what, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except (TypeError, ValueError) as e:
        if not names_an_argument(str(e)):
            raise Finding("unclear error", f"{what}: {type(e).__name__}: {e}")
        return type(e).__name__
    raise Finding("missed error", f"{what}: accepted")


def run_kvcache_case(ch):
    """A random session of append/attend/reset against a NumPy model of the
    cache; bad arguments must raise and leave the cache unchanged. Returns a
    list of outcome names."""
    outcomes = []
    dt = ch.choice(FLOATS)
    B, H, d = ch.choice([0, 1, 2, 3]), ch.choice([1, 2]), ch.choice([0, 1, 4, 8, 16])
    dv = d if ch.chance(0.6) else ch.choice([1, 3, 8])
    n = ch.choice([0, 1, 4, 9, 32])
    if ch.chance(0.05):
        bad = ch.choice([dict(batch=-1), dict(num_kv_heads=0), dict(head_dim=1.5), dict(max_seq_len="4"),
                         dict(dtype=np.int32), dict(dtype="nonsense"), dict(value_dim=-2)])
        args = dict(batch=B, num_kv_heads=H, head_dim=d, max_seq_len=n)
        args.update(bad)
        outcomes.append(_expect_error(lambda **a: pyattn.KVCache(a.pop("batch"), a.pop("num_kv_heads"),
                                                                 a.pop("head_dim"), a.pop("max_seq_len"), **a),
                                      f"KVCache({args})", **args))
        return outcomes
    cache = pyattn.KVCache(B, H, d, n, value_dim=dv, dtype=dt)
    keys = [np.zeros((H, 0, d), dt) for _ in range(B)]
    vals = [np.zeros((H, 0, dv), dt) for _ in range(B)]
    for _ in range(ch.int(1, 6)):
        op = ch.choice(["append", "append", "attend", "attend", "reset", "bad append"])
        if op in ("append", "bad append"):
            T = ch.choice([0, 1, 1, 2, 3, 5])
            owned = Owned()
            kshape, vshape = (B, H, T, d), (B, H, T, dv)
            kdt = dt
            bad = op == "bad append"
            if bad:
                what = ch.choice(["shape", "dtype", "overflow"])
                if what == "shape":
                    kshape = (B, H, T, d + 1)
                elif what == "dtype":
                    kdt = np.int32
                else:
                    T = n + 1
                    kshape, vshape = (B, H, T, d), (B, H, T, dv)
                if B == 0 and what == "overflow":
                    bad = False  # nothing to overflow with an empty batch
            k = laid_out(ch, owned, kshape, kdt)
            v = laid_out(ch, owned, vshape, dt)
            lens_before = cache.lengths.copy()
            store_before = (cache.keys.copy(), cache.values.copy())
            fits = all(keys[b].shape[1] + T <= n for b in range(B))
            try:
                cache.append(k, v)
                raised = None
            except (TypeError, ValueError) as e:
                raised = e
            owned.check_unchanged("KVCache.append")
            if bad or not fits:
                if raised is None:
                    raise Finding("missed error", f"KVCache.append of {kshape}/{vshape} {kdt} into {cache!r} accepted")
                if not names_an_argument(str(raised)):
                    raise Finding("unclear error", f"KVCache.append: {raised}")
                if not (np.array_equal(cache.lengths, lens_before)
                        and cache.keys.tobytes() == store_before[0].tobytes()
                        and cache.values.tobytes() == store_before[1].tobytes()):
                    raise Finding("wrong answer", "KVCache: a refused append changed the cache")
                outcomes.append(type(raised).__name__)
            else:
                if raised is not None:
                    raise Finding("wrong exception", f"KVCache.append {kshape} into {cache!r}: {raised}")
                for b in range(B):
                    keys[b] = np.concatenate([keys[b], np.asarray(k[b])], axis=1)
                    vals[b] = np.concatenate([vals[b], np.asarray(v[b])], axis=1)
                outcomes.append("ok")
        elif op == "reset":
            if B and ch.chance(0.5):
                i = ch.int(0, B - 1)
                cache.reset(i)
                keys[i], vals[i] = keys[i][:, :0], vals[i][:, :0]
            else:
                cache.reset()
                keys = [x[:, :0] for x in keys]
                vals = [x[:, :0] for x in vals]
            outcomes.append("ok")
        else:
            Lq = ch.choice([0, 1, 2, 3])
            G = ch.choice([1, 2])
            owned = Owned()
            q = laid_out(ch, owned, (B, H * G, Lq, d), dt)
            kwargs = {}
            if ch.chance(0.3):
                kwargs["return_lse"] = True
            if ch.chance(0.2):
                kwargs["window"] = ch.int(0, 4)
            if ch.chance(0.2):
                kwargs["num_threads"] = ch.choice([1, 2])
            got = cache.attend(q, **kwargs)
            owned.check_unchanged("KVCache.attend")
            # The model: sdpa per batch element over its own keys, lower-right causal.
            want_parts = []
            for b in range(B):
                want_parts.append(as_tuple(reference.scaled_dot_product_attention(
                    q[b].astype(np.float64), keys[b].astype(np.float64), vals[b].astype(np.float64),
                    is_causal="lower_right", enable_gqa=True, **kwargs)))
            if B:
                nres = len(want_parts[0])
                want = tuple(np.stack([p[i] for p in want_parts]).astype(
                    dt if i == 0 else (np.float64 if dt == np.float64 else np.float32)) for i in range(nres))
                compare(got, want if nres > 1 else want[0], f"KVCache.attend q{q.shape} {dt} {kwargs}")
            outcomes.append("ok")
        if not np.array_equal(cache.lengths, [x.shape[1] for x in keys]):
            raise Finding("wrong answer", f"KVCache.lengths {cache.lengths} vs model {[x.shape[1] for x in keys]}")
    return outcomes


_TORCH = None


def torch_available():
    import importlib.util
    return importlib.util.find_spec("torch") is not None


def _torch():
    global _TORCH
    if _TORCH is None:
        import torch
        _TORCH = torch
    return _TORCH


def run_mha_case(ch):
    """MultiHeadAttention against torch.nn.MultiheadAttention with the same
    weights (random configuration, masks, need_weights/averaging); bad
    constructor arguments must raise. Returns an outcome name."""
    torch = _torch()
    if ch.chance(0.1):
        bad = ch.choice([dict(embed_dim=0, num_heads=1), dict(embed_dim=6, num_heads=4), dict(embed_dim=8, num_heads=2.0),
                         dict(embed_dim=8, num_heads=4, num_kv_heads=3), dict(embed_dim=8, num_heads=2, kdim=-1),
                         dict(embed_dim=8, num_heads=2, dtype=np.int64), dict(embed_dim="8", num_heads=2)])
        return _expect_error(lambda **a: pyattn.MultiHeadAttention(a.pop("embed_dim"), a.pop("num_heads"), **a),
                             f"MultiHeadAttention({bad})", **bad)
    H = ch.choice([1, 2, 4])
    E = H * ch.choice([1, 2, 4, 8])
    kdim = None if ch.chance(0.7) else ch.choice([3, 5])
    vdim = None if ch.chance(0.7) else ch.choice([2, 6])
    bias, bf = ch.chance(0.7), ch.chance(0.5)
    dt = ch.choice([np.float32, np.float64])
    tdt = torch.float32 if dt == np.float32 else torch.float64
    tm = torch.nn.MultiheadAttention(E, H, bias=bias, kdim=kdim, vdim=vdim, batch_first=bf, dtype=tdt).eval()
    with torch.no_grad():
        for p in tm.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    m = pyattn.MultiHeadAttention.from_torch(tm)
    B, L, S = ch.choice([1, 2, 3]), ch.choice([1, 2, 5]), ch.choice([1, 3, 6])
    owned = Owned()

    def x(T, D):
        return laid_out(ch, owned, (B, T, D) if bf else (T, B, D), dt)
    q = x(L, E)
    self_attn = kdim is None and vdim is None and L == S and ch.chance(0.4)
    k = q if self_attn else x(S, kdim or E)
    v = q if self_attn else x(S, vdim or E)
    S = k.shape[1] if bf else k.shape[0]
    kw = {}
    if ch.chance(0.3):
        kpm = np.asarray(ch.array((B, S), np.float32) > 0.5)
        kpm[:, 0] = False  # torch gives NaN for rows with every key ignored
        kw["key_padding_mask"] = kpm
    if ch.chance(0.3):
        am = np.asarray(ch.array((L, S), np.float32) > 0.7)
        am[:, 0] = False
        kw["attn_mask"] = am
    kw["need_weights"] = ch.chance(0.5)
    kw["average_attn_weights"] = ch.chance(0.5)
    got_o, got_w = m(q, k, v, **kw)
    owned.check_unchanged("MultiHeadAttention.forward")
    tkw = {key: (torch.from_numpy(val) if isinstance(val, np.ndarray) else val) for key, val in kw.items()}
    with torch.no_grad():
        want_o, want_w = tm(*(torch.from_numpy(np.array(a)) for a in (q, k, v)), **tkw)
    # torch computes in its own precision: the module tolerance is float32's
    # (float64's would demand torch's float64 rounding order).
    tol = dict(rtol=1e-4, atol=1e-5) if dt == np.float32 else dict(rtol=1e-10, atol=1e-10)
    if not np.allclose(got_o, want_o.numpy(), **tol):
        raise Finding("wrong answer", f"MultiHeadAttention(E={E}, H={H}, kdim={kdim}, vdim={vdim}, bias={bias}, "
                                      f"batch_first={bf}, {np.dtype(dt)}) {kw}: output differs from torch")
    if (got_w is None) != (want_w is None) or (got_w is not None and not np.allclose(got_w, want_w.numpy(), **tol)):
        raise Finding("wrong answer", f"MultiHeadAttention {kw}: weights differ from torch")
    return "ok"


def run_one(ch, with_layers=True):
    """One case of any kind; returns the list of outcomes (class names or 'ok')."""
    if with_layers:
        r = ch.int(0, 99)
        if r < 6:
            return run_kvcache_case(ch)
        if r < 9:
            if not torch_available():
                return ["skipped: MultiHeadAttention needs torch as its oracle"]
            return [run_mha_case(ch)]
    return [run_case(gen_case(ch))]

