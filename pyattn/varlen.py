"""``varlen_attention``: attention over a packed batch of sequences of
different lengths (flash-attention's "varlen" layout), without padding.

The packed layout's own rules (ranks, cu_seqlens) are checked here; the
rules it shares with every op (dtypes, the scale, the score options, window
clamping, out) are the core's (csrc/bindings/call_args.h, the score
options' table csrc/include/pyattn/score_options.h). The compiled core runs the work items of every
sequence in one parallel region (csrc/driver/varlen_driver.cpp).
"""

from __future__ import annotations

import numpy as np

from . import _args, _core


def _cu_seqlens(x, name: str, total: int, total_name: str) -> np.ndarray:
    """A cumulative sequence-length array as contiguous int64, checked:
    1-D integer, at least one entry, starting at 0, non-decreasing, ending
    at `total` (the rows of the packed array)."""
    a = _args.as_array(x, name)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array, got dtype {a.dtype}")
    if a.ndim != 1 or a.shape[0] < 1:
        raise ValueError(f"{name} must be a 1-D array of N + 1 >= 1 offsets, got shape {a.shape}")
    if a.dtype.kind == "u" and int(a.max()) > total:  # (before the int64 cast could wrap)
        raise ValueError(f"{name} must end at {total_name} = {total}, got values up to {int(a.max())}")
    a = np.ascontiguousarray(a, dtype=np.int64)
    if a[0] != 0:
        raise ValueError(f"{name} must start at 0, got {int(a[0])}")
    if a[-1] != total:
        raise ValueError(f"{name} must end at {total_name} = {total}, got {int(a[-1])}")
    steps = np.diff(a)
    if steps.size and int(steps.min()) < 0:
        at = int(np.argmax(steps < 0))
        raise ValueError(f"{name} must be non-decreasing, got {int(a[at])} then {int(a[at + 1])} at index {at}")
    return a


def varlen_attention(
    query,
    key,
    value,
    cu_seqlens_q,
    cu_seqlens_k,
    *,
    is_causal=False,
    scale=None,
    window=None,
    softcap=None,
    alibi_slopes=None,
    sinks=None,
    return_lse=False,
    out=None,
    num_threads=None,
):
    """Attention over a packed batch of N sequences of different lengths.

    Shapes (flash-attention's packed layout):
        query ``(total_q, Hq, E)``, key ``(total_k, Hkv, E)``,
        value ``(total_k, Hkv, Ev)`` -> out ``(total_q, Hq, Ev)``;
        lse ``(total_q, Hq)``.

    Sequence ``n`` is query rows ``cu_seqlens_q[n]:cu_seqlens_q[n+1]``
    attending to key rows ``cu_seqlens_k[n]:cu_seqlens_k[n+1]``, computed
    exactly as :func:`pyattn.scaled_dot_product_attention` computes that
    sequence alone (its own lengths ``L_n``, ``S_n`` for the causal
    alignment and the window; the same bits). Nothing is padded: the cost
    grows with ``sum_n L_n * S_n``.

    Args:
        cu_seqlens_q, cu_seqlens_k: 1-D integer arrays of the same length
            ``N + 1 >= 1``: 0, non-decreasing, ending at ``total_q`` /
            ``total_k``.
        is_causal: ``False``, ``True``/``"upper_left"`` or ``"lower_right"``
            (per sequence: query row i sits at key position ``i`` or
            ``i + S_n - L_n``).
        scale: defaults to ``1/sqrt(E)`` (1 when E = 0); must be finite.
        window: ``None``, ``w`` (= ``(w, 0)``) or ``(left, right)`` with
            ``None`` for an unbounded side, aligned like ``is_causal``.
        softcap: ``None`` or a finite float ``c > 0``: each scaled score
            becomes ``c * tanh(s / c)`` (Gemma 2).
        alibi_slopes: ``None`` or a float array of one slope per query head
            ``(Hq,)``: adds ``-slope * |p(i) - j|`` to each score, ``p(i)``
            the query row's key position in its sequence (ALiBi).
        sinks: ``None`` or a float array of one logit per query head
            ``(Hq,)``: ``exp(sink)`` joins each row's softmax denominator,
            with no value (gpt-oss); the lse includes it, and a row that
            sees no key gives output 0 and ``lse = sink``.
        return_lse: also return the natural log-sum-exp of each row's visible
            scores (float32; float64 for float64 inputs); ``-inf`` for rows
            that see no key (``S_n = 0``), whose output is 0.
        out: preallocated result (exact shape and dtype, writable, any
            strides, not overlapping an input); returned itself.
        num_threads: threads for this call (default: ``get_num_threads()``).

    Grouped-query attention: ``Hkv`` must divide ``Hq``; query head ``h``
    uses key/value head ``h // (Hq // Hkv)``. Inputs whose last dimension
    has unit stride (e.g. q, k, v sliced from one fused QKV projection) are
    read in place.

    Returns:
        ``out``, or ``(out, lse)``.
    """
    arrays, dtype = _args.check_inputs({"query": query, "key": key, "value": value})
    q, k, v = arrays["query"], arrays["key"], arrays["value"]
    for name, a in arrays.items():
        if a.ndim != 3:
            raise ValueError(f"{name} must have 3 dimensions (total rows, heads, features), got shape {a.shape}")
    total_q, hq, E = q.shape
    total_k, hkv, Ek = k.shape
    total_v, hv, Ev = v.shape
    if Ek != E:
        raise ValueError(f"key feature size {Ek} (shape {k.shape}) != query feature size {E} (shape {q.shape})")
    if total_v != total_k or hv != hkv:
        raise ValueError(f"value of shape {v.shape} does not match key of shape {k.shape} in rows and heads")
    if (hkv == 0 and hq != 0) or (hkv and hq % hkv):
        raise ValueError(f"key/value heads ({hkv}) must divide query heads ({hq})")
    cu_q = _cu_seqlens(cu_seqlens_q, "cu_seqlens_q", total_q, "total_q")
    cu_k = _cu_seqlens(cu_seqlens_k, "cu_seqlens_k", total_k, "total_k")
    if cu_q.shape != cu_k.shape:
        raise ValueError(f"cu_seqlens_q and cu_seqlens_k must have the same length, "
                         f"got {cu_q.shape[0]} and {cu_k.shape[0]}")

    scale = _args.real_or_none(scale, "scale")  # (its value: the core's rule)
    # The score options, per query head (Hq,) where per head: the core's rules.
    score = None if softcap is None and alibi_slopes is None and sinks is None \
        else {"softcap": softcap, "alibi_slopes": alibi_slopes, "sinks": sinks}
    cdt = _args.compute_dtype(dtype)
    causal = _args.causal_code(is_causal)
    left, right = _args.window_sides(window)
    threads = _args.thread_count(num_threads)
    if not isinstance(return_lse, (bool, np.bool_)):
        raise TypeError(f"return_lse must be a bool, got {type(return_lse).__name__}")

    out_shape = (total_q, hq, Ev)
    _args.check_size(out_shape, dtype.itemsize, "the result")
    if out is None:
        result = np.empty(out_shape, dtype)
    else:
        result = _args.check_out(out, out_shape, dtype, {
            "query": (query, q), "key": (key, k), "value": (value, v),
            "cu_seqlens_q": (cu_seqlens_q, cu_q), "cu_seqlens_k": (cu_seqlens_k, cu_k),
            **{name: (x,) for name, x in (score or {}).items()}})
    # Written in place when the core can (compute dtype, unit-stride rows),
    # else through a buffer of the compute dtype.
    direct = result.dtype == cdt and (Ev <= 1 or result.strides[-1] == result.itemsize) \
        and all(st % result.itemsize == 0 for st in result.strides)
    target = result if direct else np.empty(out_shape, cdt)
    lse = np.empty((total_q, hq), cdt) if return_lse else None

    storage = _args.STORAGE[dtype.name]
    if dtype.itemsize == 2:  # float16 / bfloat16 are read (and widened) by the kernels in place
        qc, kc, vc = (_args.for_core(a, dtype).view(np.uint16) for a in (q, k, v))
    else:
        qc, kc, vc = (_args.for_core(a, cdt) for a in (q, k, v))
    _core.varlen(qc, kc, vc, cu_q, cu_k, target, lse, scale, storage, score, causal, left, right, threads)
    if not direct:
        result[...] = target
    return (result, lse) if return_lse else result
