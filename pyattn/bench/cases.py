"""The benchmark case table, shared by the ``pyattn-bench`` CLI and the
pytest-benchmark files in ``benchmarks/``; the one ``flops()`` helper; input
generation; and validation of a pyattn result against the float64 reference.

Every case is float32 with B=1, H=12, E=64 unless it says otherwise. A case
runs one op: ``sdpa`` (scaled_dot_product_attention), ``additive``
(additive_attention; ``E`` is the query feature size Dq) or ``kvcache``
(a decoding step ``KVCache.attend`` over a cache of ``S`` positions stored
as ``kv_dtype``). A case belongs to one or more presets: ``smoke`` (seconds, for the test suite),
``quick`` (the CLI default, under a minute) and ``full`` (every case of the
issue's table).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math

import numpy as np

try:  # bfloat16 is optional
    import ml_dtypes

    BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - depends on the environment
    BFLOAT16 = None

PRESETS = ("smoke", "quick", "full")

# Group names, in the order tables and plots list them.
GROUPS = ("prefill", "causal", "masked", "weights", "variants", "decode", "gqa-decode", "kv-decode", "varlen",
          "additive", "tiny")
# Memory-bound groups: a call reads every key and value once and does ~1 flop
# per byte, so its speed is shown as bytes per second against the machine's
# read bandwidth rather than as flops against the matmul roof.
MEMORY_BOUND_GROUPS = ("decode", "gqa-decode", "kv-decode")


def flops(B, H, L, S, E, Ev=None, causal=False):
    """Floating-point operations of one attention call: 2*B*H*L*S*E for
    Q K^T plus 2*B*H*L*S*Ev for P V (``4*B*H*L*S*E`` when ``Ev == E``).
    Causal attention counts half (the hidden half of the scores is skipped).
    Softmax and masking are not counted."""
    Ev = E if Ev is None else Ev
    n = 2.0 * B * H * L * S * (E + Ev)
    return n / 2 if causal else n


def additive_flops(B, L, S, A, Ev, Dq=0, Dk=0, causal=False, projections=False):
    """Floating-point operations of one additive-attention call, counting
    each tanh argument's add and the ``v_a`` product (2 per (i, j, a); the
    tanh itself is not counted) plus 2*B*L*S*Ev for P V, halved when
    causal; with projections, 2*B*(L*Dq + S*Dk)*A for them."""
    n = 2.0 * B * L * S * (A + Ev)
    n = n / 2 if causal else n
    if projections:
        n += 2.0 * B * (L * Dq + S * Dk) * A
    return n


def matmul_flops(n):
    """Floating-point operations of an n x n by n x n matrix product."""
    return 2.0 * n**3


@dataclasses.dataclass(frozen=True)
class Case:
    """One benchmark case: shapes, options and the presets it belongs to.

    ``Hkv`` is the number of key/value heads (``None``: same as ``H``; fewer
    means grouped-query attention, ``enable_gqa=True``). ``mask`` is ``None``,
    ``"bool"`` or ``"float"`` (an ``(L, S)`` mask broadcast over the heads).
    ``scaling``: its multi-thread rows also time pyattn at 1 thread, in the
    same rounds (the thread speed-up as a ratio measured side by side).
    ``op``: ``"sdpa"``, ``"additive"`` (query (B, L, E), key (B, S, Dk),
    value (B, S, Ev), v_a (A,); ``projections``: with w_query, w_key and a
    bias, else Keras' form with ``A = E = Dk``) or ``"kvcache"`` (a
    ``KVCache(kv_dtype=...)`` holding S positions; one ``attend`` of L rows).

    ``seqlens = (N, shortest, longest)`` makes it a packed variable-length
    case: N self-attention sequences (L_n = S_n) of lengths drawn uniformly
    from ``shortest..longest`` (a fixed seed), run by ``varlen_attention``
    (``L = S = longest``: the batch padded). ``padded`` (its side runs):
    the same sequences as a padded ``(N, H, longest, E)`` batch through
    ``scaled_dot_product_attention`` with ``"kv_lengths"`` or a boolean
    key-padding ``"mask"``, as a user without varlen would run them.
    ``variant``: ``None``, ``"softcap"`` (50, Gemma 2's), ``"alibi"`` (one
    slope per head, ALiBi's geometric ones) or ``"sinks"`` (one logit per
    head): a score variant, timed beside the call without it.
    """

    name: str
    group: str
    op: str = "sdpa"
    B: int = 1
    H: int = 12
    L: int = 1
    S: int = 1
    E: int = 64
    Ev: int | None = None
    Hkv: int | None = None
    dtype: str = "float32"
    causal: bool = False
    mask: str | None = None
    weights: bool = False
    variant: str | None = None
    scaling: bool = False
    seqlens: tuple | None = None
    padded: str | None = None
    presets: tuple = ("full",)
    A: int | None = None
    Dk: int | None = None
    projections: bool = False
    kv_dtype: str | None = None

    @property
    def a(self):
        return self.E if self.A is None else self.A

    @property
    def dk(self):
        return self.E if self.Dk is None else self.Dk

    @property
    def ev(self):
        return self.E if self.Ev is None else self.Ev

    @property
    def hkv(self):
        return self.H if self.Hkv is None else self.Hkv

    @property
    def gqa(self):
        return self.hkv != self.H

    @property
    def lengths(self):
        """The sequence lengths of a varlen case (int64, fixed seed)."""
        n, lo, hi = self.seqlens
        return np.random.default_rng(20261205).integers(lo, hi + 1, n).astype(np.int64)

    @property
    def flops(self):
        """Varlen cases: the FLOPs of the sequences themselves (none of the
        padding), also for their padded side runs."""
        if self.seqlens:
            return float(sum(flops(1, self.H, int(n), int(n), self.E, self.ev, self.causal)
                             for n in self.lengths))
        if self.op == "additive":
            return additive_flops(self.B, self.L, self.S, self.a, self.ev, self.E, self.dk, self.causal,
                                  self.projections)
        return flops(self.B, self.H, self.L, self.S, self.E, self.ev, self.causal)

    @property
    def memory_bound(self):
        return self.group in MEMORY_BOUND_GROUPS

    @property
    def bytes(self):
        """Bytes one call reads and writes: q, the keys and values (each kv
        head's once; int8 caches with their float32 scale per position) and
        the output. The working set of a memory-bound case."""
        item = self.np_dtype.itemsize
        kv_item, per_position = item, 0
        if self.kv_dtype == "int8":
            kv_item, per_position = 1, 4
        elif self.kv_dtype is not None:
            kv_item = 2
        qo = self.B * self.H * self.L * (self.E + self.ev) * item
        kv = self.B * self.hkv * self.S * ((self.E + self.ev) * kv_item + 2 * per_position)
        return qo + kv

    @property
    def per_call(self):
        """Tiny cases: the time per call (µs) is what matters, not GFLOP/s."""
        return self.group == "tiny"

    @property
    def np_dtype(self):
        if self.dtype == "bfloat16":
            if BFLOAT16 is None:
                raise RuntimeError("bfloat16 cases need ml_dtypes")
            return BFLOAT16
        return np.dtype(self.dtype)

    @property
    def available(self):
        return BFLOAT16 is not None or "bfloat16" not in (self.dtype, self.kv_dtype)

    def without_extras(self):
        """The same call without its mask, weights and score variant, or
        ``None`` if it has none: timed beside it, so that what they cost is
        a ratio measured in one run."""
        if not (self.mask or self.weights or self.variant):
            return None
        return dataclasses.replace(self, name=f"{self.name} (plain)", mask=None, weights=False,
                                   variant=None, presets=())

    @property
    def extras(self):
        """What without_extras leaves out, in words."""
        return "mask" if self.mask else "weights" if self.weights else self.variant

    def with_float_cache(self):
        """A quantised/half KV cache case as the same decoding step over a
        cache stored in the compute dtype (``None`` for other cases): timed
        beside it, so the storage's speed-up is a ratio measured in one run."""
        if self.op != "kvcache" or self.kv_dtype is None:
            return None
        return dataclasses.replace(self, name=f"{self.name} ({self.dtype} cache)", kv_dtype=None, presets=())

    def describe(self):
        """Shape and options in one short string."""
        if self.seqlens:
            n, lo, hi = self.seqlens
            run = {None: "varlen_attention", "kv_lengths": f"padded to {hi}, kv_lengths",
                   "mask": f"padded to {hi}, bool key-padding mask"}[self.padded]
            return (f"N={n} seqs of L=S in {lo}..{hi} (total {int(self.lengths.sum())}) H={self.H} "
                    f"E={self.E} {self.dtype} {run}")
        if self.op == "additive":
            proj = f"Dq={self.E} Dk={self.dk} " if self.projections else ""
            return (f"additive B={self.B} L={self.L} S={self.S} {proj}A={self.a} Ev={self.ev} {self.dtype}"
                    + (" causal" if self.causal else ""))
        heads = f"H={self.H}" + (f"/{self.hkv}kv" if self.gqa else "")
        parts = [f"B={self.B}", heads, f"L={self.L}", f"S={self.S}", f"E={self.E}"]
        if self.Ev is not None:
            parts.append(f"Ev={self.Ev}")
        parts.append(self.dtype)
        if self.op == "kvcache":
            parts.append(f"KVCache kv_dtype={self.kv_dtype}")
        if self.causal:
            parts.append("causal")
        if self.mask:
            parts.append(f"{self.mask} mask")
        if self.weights:
            parts.append("return_weights")
        if self.variant:
            parts.append(self.variant)
        return " ".join(parts)

    def sdpa_kwargs(self, inputs):
        """Keyword arguments of scaled_dot_product_attention for this case."""
        kw = {}
        if self.causal:
            kw["is_causal"] = True
        if self.mask:
            kw["attn_mask"] = inputs.mask
        if self.gqa:
            kw["enable_gqa"] = True
        if self.weights:
            kw["return_weights"] = True
        if self.variant == "softcap":
            kw["softcap"] = SOFTCAP
        elif self.variant == "alibi":
            kw["alibi_slopes"] = inputs.slopes
        elif self.variant == "sinks":
            kw["sinks"] = inputs.sinks
        elif self.variant is not None:
            raise ValueError(f"unknown score variant {self.variant!r}")
        return kw


SOFTCAP = 50.0  # Gemma 2's attention logit cap


def alibi_slopes(H):
    """ALiBi's slopes for H heads: 2^(-8 h / H), h = 1..H (H a power of 2;
    the same formula for other H here)."""
    return (2.0 ** (-8.0 * np.arange(1, H + 1) / H)).astype(np.float32)


_Q = ("quick", "full")
_ALL = ("smoke", "quick", "full")

CASES = (
    Case("prefill-512", "prefill", L=512, S=512),
    Case("prefill-1024", "prefill", L=1024, S=1024, presets=_Q),
    Case("prefill-2048", "prefill", L=2048, S=2048, scaling=True),
    Case("prefill-4096", "prefill", L=4096, S=4096),
    Case("causal-2048", "causal", L=2048, S=2048, causal=True, presets=_Q),
    Case("mask-bool-2048", "masked", L=2048, S=2048, mask="bool"),
    Case("mask-float-2048", "masked", L=2048, S=2048, mask="float"),
    Case("weights-2048", "weights", L=2048, S=2048, weights=True),
    Case("softcap-2048", "variants", L=2048, S=2048, variant="softcap"),
    Case("alibi-2048", "variants", L=2048, S=2048, variant="alibi"),
    Case("sinks-2048", "variants", L=2048, S=2048, variant="sinks"),
    Case("decode-16k", "decode", H=32, L=1, S=16384, E=128, presets=_Q),
    Case("gqa-decode-8k", "gqa-decode", H=32, Hkv=8, L=1, S=8192, E=128, presets=_Q),
    Case("decode-bf16-16k", "decode", H=32, L=1, S=16384, E=128, dtype="bfloat16"),
    # Decoding steps over a KVCache whose keys/values are stored as kv_dtype
    # (computed in float32), each beside the same step over a float32 cache.
    Case("kv-int8-decode-16k", "kv-decode", op="kvcache", H=32, L=1, S=16384, E=128, kv_dtype="int8",
         presets=_Q),
    Case("kv-bf16-decode-16k", "kv-decode", op="kvcache", H=32, L=1, S=16384, E=128, kv_dtype="bfloat16"),
    Case("kv-int8-gqa-decode-16k", "kv-decode", op="kvcache", H=32, Hkv=8, L=1, S=16384, E=128,
         kv_dtype="int8"),
    # Additive (Bahdanau) attention; E is the query feature size Dq.
    Case("additive-keras-1k", "additive", op="additive", B=1, H=1, L=1024, S=1024, E=128, presets=_Q),
    Case("additive-seq2seq", "additive", op="additive", B=8, H=1, L=64, S=512, E=256, Dk=512, A=128,
         Ev=512, projections=True),
    Case("additive-causal-2k", "additive", op="additive", B=1, H=1, L=2048, S=2048, E=64, causal=True),
    Case("additive-decode-4k", "additive", op="additive", B=16, H=1, L=1, S=4096, E=128),
    Case("additive-small", "additive", op="additive", B=32, H=1, L=32, S=32, E=32),
    Case("varlen-32x16..512", "varlen", L=512, S=512, seqlens=(32, 16, 512), presets=_Q),
    Case("tiny", "tiny", B=1, H=1, L=1, S=16, E=64, presets=_ALL),
    # Only for the smoke preset (the test suite): small and fast.
    Case("smoke-prefill-128", "prefill", H=2, L=128, S=128, scaling=True, presets=("smoke",)),
    Case("smoke-causal-128", "causal", H=2, L=128, S=128, causal=True, presets=("smoke",)),
    Case("smoke-mask-bool-128", "masked", H=2, L=128, S=128, mask="bool", presets=("smoke",)),
    Case("smoke-weights-128", "weights", H=2, L=128, S=128, weights=True, presets=("smoke",)),
    Case("smoke-decode-4k", "decode", H=2, L=1, S=4096, E=64, presets=("smoke",)),
    Case("smoke-kv-int8-4k", "kv-decode", op="kvcache", H=4, Hkv=2, L=1, S=4096, E=64, kv_dtype="int8",
         presets=("smoke",)),
    Case("smoke-additive-64", "additive", op="additive", B=2, H=1, L=64, S=64, E=32, A=16, Dk=24,
         projections=True, presets=("smoke",)),
    Case("smoke-varlen-6x4..40", "varlen", H=2, L=40, S=40, seqlens=(6, 4, 40), presets=("smoke",)),
    Case("smoke-alibi-128", "variants", H=2, L=128, S=128, variant="alibi", presets=("smoke",)),
)

CASES_BY_NAME = {c.name: c for c in CASES}


def select(preset=None, patterns=None):
    """Cases of ``preset`` (``None``: all), optionally only those whose name
    matches one of the fnmatch ``patterns`` (then taken from the whole table,
    whatever the preset). Cases whose dtype is unavailable are dropped."""
    if patterns:
        chosen = [c for c in CASES if any(fnmatch.fnmatchcase(c.name, p) for p in patterns)]
    else:
        chosen = [c for c in CASES if preset is None or preset in c.presets]
    return [c for c in chosen if c.available]


# --------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------


@dataclasses.dataclass
class Inputs:
    """Arrays of one case: q (B, H, L, E), k (B, Hkv, S, E), v (B, Hkv, S, Ev)
    of the case dtype; ``mask`` (L, S) bool or float32, or None; ALiBi
    ``slopes`` and ``sinks``, float32 (H,).

    Varlen cases: q (total, H, E), k (total, Hkv, E), v (total, Hkv, Ev)
    packed, ``cu_seqlens`` (N + 1,) int64; ``padded`` the same sequences as
    (q, k, v) of shape (N, H, longest, E) with zeros beyond each length,
    ``kv_lengths`` (N,) and ``mask`` the (N, 1, 1, longest) boolean
    key-padding mask.

    Additive cases: q (B, L, E), k (B, S, Dk), v (B, S, Ev); ``extra``:
    v_a and the projections. A kvcache case's ``extra["caches"]``: its filled
    caches by kv_dtype (the case's, and a float one for the row timed beside
    it), with k and v None."""

    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    mask: np.ndarray | None = None
    cu_seqlens: np.ndarray | None = None
    kv_lengths: np.ndarray | None = None
    padded: tuple | None = None
    slopes: np.ndarray | None = None
    sinks: np.ndarray | None = None
    extra: dict = dataclasses.field(default_factory=dict)


def make_inputs(case, seed=0):
    """Random unit-scale inputs (standard normal) for ``case``. A bool mask
    lets each query see ~90% of the keys (always its own diagonal key); a
    float mask is standard normal (a learned relative-position bias)."""
    rng = np.random.default_rng(seed)
    dt = case.np_dtype

    def randn(shape):
        a = rng.standard_normal(shape, dtype=np.float32)
        return a if dt == np.float32 else a.astype(dt)

    if case.seqlens:
        return _make_varlen_inputs(case, randn)
    if case.op == "additive":
        return _additive_inputs(case, rng, randn)
    q = randn((case.B, case.H, case.L, case.E))
    k = randn((case.B, case.hkv, case.S, case.E))
    v = randn((case.B, case.hkv, case.S, case.ev))
    if case.op == "kvcache":  # (k and v live on in the caches only)
        caches = {case.kv_dtype: filled_cache(case, k, v)}
        if case.kv_dtype is not None:  # for the side-by-side row (with_float_cache)
            caches[None] = filled_cache(case.with_float_cache(), k, v)
        return Inputs(q, None, None, extra={"caches": caches})
    mask = None
    if case.mask == "bool":
        mask = rng.random((case.L, case.S), dtype=np.float32) < 0.9
        d = np.arange(min(case.L, case.S))
        mask[d, d] = True
    elif case.mask == "float":
        mask = rng.standard_normal((case.L, case.S), dtype=np.float32)
    elif case.mask is not None:
        raise ValueError(f"unknown mask kind {case.mask!r}")
    sinks = rng.standard_normal(case.H, dtype=np.float32)
    return Inputs(q, k, v, mask, slopes=alibi_slopes(case.H), sinks=sinks)


def _make_varlen_inputs(case, randn):
    lengths = case.lengths
    cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    total, n, longest = int(cu[-1]), len(lengths), case.seqlens[2]
    q = randn((total, case.H, case.E))
    k = randn((total, case.hkv, case.E))
    v = randn((total, case.hkv, case.ev))
    padded = tuple(np.zeros((n, a.shape[1], longest, a.shape[2]), a.dtype) for a in (q, k, v))
    for i in range(n):
        for p, a in zip(padded, (q, k, v)):
            p[i, :, : lengths[i]] = a[cu[i]:cu[i + 1]].transpose(1, 0, 2)
    mask = (np.arange(longest)[None, :] < lengths[:, None])[:, None, None, :]
    return Inputs(q, k, v, mask=mask, cu_seqlens=cu, kv_lengths=lengths, padded=padded)


def _additive_inputs(case, rng, randn):
    q = randn((case.B, case.L, case.E))
    k = randn((case.B, case.S, case.dk))
    v = randn((case.B, case.S, case.ev))
    extra = {"v_a": (rng.standard_normal(case.a, dtype=np.float32) / math.sqrt(case.a)).astype(q.dtype)}
    if case.projections:
        extra["w_query"] = (rng.standard_normal((case.E, case.a), dtype=np.float32) / math.sqrt(case.E)).astype(q.dtype)
        extra["w_key"] = (rng.standard_normal((case.dk, case.a), dtype=np.float32) / math.sqrt(case.dk)).astype(q.dtype)
        extra["bias"] = (0.1 * rng.standard_normal(case.a, dtype=np.float32)).astype(q.dtype)
    return Inputs(q, k, v, extra=extra)


def filled_cache(case, k, v):
    """A ``pyattn.KVCache`` of ``case``'s kv_dtype holding k and v (all S positions)."""
    import pyattn

    cache = pyattn.KVCache(case.B, case.hkv, case.E, case.S, value_dim=case.ev, dtype=k.dtype,
                           kv_dtype=case.kv_dtype)
    cache.append(k, v)
    return cache


def additive_kwargs(case, inputs):
    """Keyword arguments of additive_attention for this case (v_a excluded)."""
    kw = {n: inputs.extra[n] for n in ("w_query", "w_key", "bias") if n in inputs.extra}
    if case.causal:
        kw["is_causal"] = True
    return kw


def run_varlen(case, inputs, threads=None):
    """A varlen case: ``varlen_attention`` over the packed sequences, or (its
    side runs, ``case.padded``) the same sequences padded into one batch
    through ``scaled_dot_product_attention``."""
    import pyattn

    if case.padded is None:
        cu = inputs.cu_seqlens
        return pyattn.varlen_attention(inputs.q, inputs.k, inputs.v, cu, cu, is_causal=case.causal,
                                       num_threads=threads)
    kw = {"kv_lengths": inputs.kv_lengths} if case.padded == "kv_lengths" else {"attn_mask": inputs.mask}
    return pyattn.scaled_dot_product_attention(*inputs.padded, is_causal=case.causal,
                                               enable_gqa=case.gqa, num_threads=threads, **kw)


# --------------------------------------------------------------------------
# Validation against the float64 reference (docs/api.md section 7)
# --------------------------------------------------------------------------


def tolerance(dtype):
    """docs/api.md section 7: rtol/atol against the float64 reference."""
    dtype = np.dtype(dtype)
    if dtype == np.float64:
        return 1e-12, 1e-12
    if dtype == np.float32:
        return 2e-5, 2e-6
    # float16 / bfloat16: computed in float32, rounded to the storage dtype.
    eps = float(ml_dtypes.finfo(dtype).eps) if dtype == BFLOAT16 else float(np.finfo(dtype).eps)
    return eps, 2e-6


@dataclasses.dataclass
class Validation:
    ok: bool
    max_abs_err: float
    worst_ratio: float  # max |err| / (atol + rtol |ref|); <= 1 passes
    checked: str  # which slice was compared

    def __str__(self):
        state = "ok" if self.ok else "FAILED"
        return f"{state}: max |err| {self.max_abs_err:.3g}, {self.worst_ratio:.3g} of tolerance ({self.checked})"


def validation_slice(case, budget=1 << 22):
    """(heads, rows) to compare: the first and the last query head (so GQA's
    last kv head is covered too) and all rows if ``heads * L * S`` fits in
    ``budget`` score elements, else evenly spaced rows including the first
    and the last."""
    heads = sorted({0, case.H - 1})
    n_rows = max(8, budget // max(1, case.S * len(heads)))
    if n_rows >= case.L:
        rows = np.arange(case.L)
    else:
        rows = np.unique(np.linspace(0, case.L - 1, n_rows).round().astype(np.intp))
    return heads, rows


def validate(case, inputs, result, budget=1 << 22):
    """Compares a pyattn ``result`` for ``case`` with
    ``pyattn.reference.scaled_dot_product_attention`` run in float64 on the
    same inputs, restricted to batch element 0, the first and last query head
    and (for big cases) a subset of the query rows, within the docs/api.md section 7
    tolerance of the case dtype. Causal masking of the selected rows becomes
    an explicit boolean mask; GQA picks the kv head of each query head."""
    from pyattn import reference

    if case.seqlens:
        return _validate_varlen(case, inputs, result)
    out, weights = (result if case.weights else (result, None))
    rtol, atol = tolerance(out.dtype)
    if case.op == "additive":
        return _validate_additive(case, inputs, out, rtol, atol, budget)
    heads, rows = validation_slice(case, budget)
    group = case.H // case.hkv
    worst, max_err = 0.0, 0.0
    if case.op == "kvcache":  # the cache's stored keys/values, dequantised (exactly)
        keys, values = inputs.extra["caches"][case.kv_dtype].dequantize()
    else:
        keys, values = inputs.k, inputs.v
    for h in heads:
        kvh = h // group
        q = inputs.q[0, h, rows].astype(np.float64)
        k = keys[0, kvh].astype(np.float64)
        v = values[0, kvh].astype(np.float64)
        mask = None
        if inputs.mask is not None:
            mask = inputs.mask[rows]
        if case.causal or case.op == "kvcache":  # (a cache: lower-right causal)
            shift = case.S - case.L if case.op == "kvcache" else 0
            tri = np.arange(case.S)[None, :] <= rows[:, None] + shift
            mask = tri if mask is None else (mask & tri if mask.dtype == bool else np.where(tri, mask, -np.inf))
        variant = {}
        if case.variant == "softcap":
            variant["softcap"] = SOFTCAP
        elif case.variant == "sinks":
            variant["sinks"] = inputs.sinks[h]
        elif case.variant == "alibi":  # (the selected rows' own positions: an explicit bias)
            assert mask is None
            mask = -float(inputs.slopes[h]) * np.abs(rows[:, None] - np.arange(case.S)[None, :]).astype(np.float64)
        ref = reference.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, scale=1.0 / math.sqrt(case.E) if case.E else None,
            return_weights=case.weights, **variant,
        )
        pairs = [(out[0, h, rows], ref[0] if case.weights else ref)]
        if case.weights:
            pairs.append((weights[0, h, rows], ref[1]))
        for got, want in pairs:
            got = np.asarray(got, dtype=np.float64)
            err = np.abs(got - want)
            bound = atol + rtol * np.abs(want)
            if not np.all(np.isfinite(got)):
                worst = math.inf
            if err.size:
                max_err = max(max_err, float(np.nanmax(err)))
                worst = max(worst, float(np.nanmax(err / bound)))
    checked = f"batch 0, heads {heads}, {len(rows)}/{case.L} rows"
    return Validation(ok=worst <= 1.0, max_abs_err=max_err, worst_ratio=worst, checked=checked)


def _validate_additive(case, inputs, out, rtol, atol, budget):
    """Additive attention of batch element 0 (a subset of its rows for big
    cases) against the float64 reference."""
    from pyattn import reference

    n_rows = max(8, budget // max(1, case.S * case.a // 8))
    rows = (np.arange(case.L) if n_rows >= case.L
            else np.unique(np.linspace(0, case.L - 1, n_rows).round().astype(np.intp)))
    f64 = {n: a.astype(np.float64) for n, a in inputs.extra.items() if n != "v_a"}
    mask = None
    if case.causal:
        mask = np.arange(case.S)[None, :] <= rows[:, None]
    ref = reference.additive_attention(
        inputs.q[0, rows].astype(np.float64), inputs.k[0].astype(np.float64), inputs.v[0].astype(np.float64),
        inputs.extra["v_a"].astype(np.float64), attn_mask=mask, **f64)
    got = np.asarray(out[0, rows], dtype=np.float64)
    err = np.abs(got - ref)
    worst = float(np.nanmax(err / (atol + rtol * np.abs(ref)))) if err.size else 0.0
    if not np.all(np.isfinite(got)):
        worst = math.inf
    max_err = float(np.nanmax(err)) if err.size else 0.0
    return Validation(ok=worst <= 1.0, max_abs_err=max_err, worst_ratio=worst,
                      checked=f"batch 0, {len(rows)}/{case.L} rows")


def _validate_varlen(case, inputs, out):
    """A varlen result against ``pyattn.reference.varlen_attention`` on the
    first and the last query head (with their kv heads), every sequence."""
    from pyattn import reference

    rtol, atol = tolerance(out.dtype)
    heads = sorted({0, case.H - 1})
    kv_heads = sorted({h // (case.H // case.hkv) for h in heads})
    q = inputs.q[:, heads].astype(np.float64)
    k = inputs.k[:, kv_heads].astype(np.float64)
    v = inputs.v[:, kv_heads].astype(np.float64)
    cu = inputs.cu_seqlens
    want = reference.varlen_attention(q, k, v, cu, cu, is_causal=case.causal)
    got = np.asarray(out[:, heads], dtype=np.float64)
    err = np.abs(got - want)
    worst = float(np.max(err / (atol + rtol * np.abs(want)))) if err.size else 0.0
    if not np.all(np.isfinite(got)):
        worst = math.inf
    max_err = float(np.max(err)) if err.size else 0.0
    checked = f"heads {heads}, all {len(cu) - 1} sequences"
    return Validation(ok=worst <= 1.0, max_abs_err=max_err, worst_ratio=worst, checked=checked)
