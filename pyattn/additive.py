"""additive_attention: Bahdanau attention through the shared attention core."""

from __future__ import annotations

import numpy as np

from . import _args, _core
from .attention import _Call, _HeadLayout, _plain_options

_FAST_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _parameter(x, name: str, ndim: int):
    """A weight argument as an array of a float dtype with `ndim` dims (it is
    converted to the compute dtype where it is used, as the reference does)."""
    if x is None:
        return None
    a = _args.as_array(x, name)
    if not _args.is_float_dtype(a.dtype):
        raise TypeError(f"{name}: dtype {a.dtype} is not supported; expected {_args.FLOAT_DTYPE_NAMES}")
    if a.ndim != ndim:
        want = "(D, A)" if ndim == 2 else "(A,)"
        raise ValueError(f"{name} must have shape {want}, got shape {a.shape}")
    return a


def _project(x: np.ndarray, w, bias, cdt: np.dtype) -> np.ndarray:
    """x @ w + bias in the compute dtype (x itself when there is nothing to do)."""
    x = _args.for_core(x, cdt)
    if w is not None:
        p = np.matmul(x, np.asarray(w, dtype=cdt))
        if bias is not None:
            p += np.asarray(bias, dtype=cdt)
        return p
    if bias is not None:
        return x + np.asarray(bias, dtype=cdt)
    return x


def _fast_projections(q, k, v, v_a, w_query, w_key, bias):
    """(q W_q + bias, k W_k) exactly as the general path computes them, for
    ndarrays of one float32/float64 dtype with unit-stride rows and weights of
    matching shapes; None for anything else (the general path checks it)."""
    if not (type(q) is np.ndarray and type(k) is np.ndarray and type(v) is np.ndarray
            and type(v_a) is np.ndarray):
        return None
    dt = q.dtype
    if dt not in _FAST_DTYPES or k.dtype != dt or v.dtype != dt or q.ndim < 2 or k.ndim < 2:
        return None
    for x in (q, k):  # as _args.for_core would leave them
        if (x.shape[-1] > 1 and x.strides[-1] != x.itemsize) or any(s % x.itemsize for s in x.strides):
            return None
    for w, x in ((w_query, q), (w_key, k)):
        if w is not None and not (type(w) is np.ndarray and w.dtype == dt and w.ndim == 2
                                  and w.shape[0] == x.shape[-1]):
            return None
    A = q.shape[-1] if w_query is None else w_query.shape[1]
    if (k.shape[-1] if w_key is None else w_key.shape[1]) != A or v_a.dtype != dt or v_a.shape != (A,):
        return None
    if bias is not None and not (type(bias) is np.ndarray and bias.dtype == dt and bias.shape == (A,)):
        return None
    return _project(q, w_query, bias, dt), _project(k, w_key, None, dt)


def additive_attention(
    query,
    key,
    value,
    v_a,
    *,
    w_query=None,
    w_key=None,
    bias=None,
    attn_mask=None,
    is_causal=False,
    window=None,
    kv_lengths=None,
    return_weights=False,
    return_lse=False,
    out=None,
    num_threads=None,
):
    """Additive (Bahdanau) attention, computed without ever forming the
    ``(L, S, A)`` tensor of tanh arguments: memory is O((L + S) * A).

    Shapes (``...`` are batch dimensions, broadcast NumPy-style):
        query ``(..., L, Dq)``, key ``(..., S, Dk)``, value ``(..., S, Ev)``,
        w_query ``(Dq, A)`` or None (then ``A = Dq``), w_key ``(Dk, A)`` or
        None (then ``A = Dk``), bias ``(A,)`` or None, v_a ``(A,)``
        -> out ``(batch..., L, Ev)``; weights ``(batch..., L, S)``;
        lse ``(batch..., L)``.

    ``s[i, j] = sum_a v_a[a] * tanh((q_i W_q)[a] + (k_j W_k)[a] + bias[a])``
    (no scaling) over the keys row ``i`` may see, plus a float ``attn_mask``;
    ``out_i = sum_j softmax(s)[i, j] v_j``. Keras'
    ``AdditiveAttention(use_scale=True)`` is ``w_query = w_key = None`` with
    ``v_a = scale`` (``v_a = ones(A)`` without scale).

    Args:
        v_a, w_query, w_key, bias: float arrays (float16, bfloat16,
            float32 or float64; else TypeError), used in the compute dtype
            (float64 for float64 inputs, else float32) as the reference
            does; A must agree between all of them (ValueError).
        attn_mask: bool (True = may attend) or float (added to the scores,
            ``-inf`` allowed), broadcastable to ``(batch..., L, S)`` without
            adding batch dims.
        is_causal: ``False``, ``True``/``"upper_left"`` (key j visible if
            ``j <= i``) or ``"lower_right"`` (``j <= i + n - L``, n the
            valid keys).
        window: ``None``, ``w`` (= ``(w, 0)``) or ``(left, right)`` with
            ``None`` for an unbounded side, aligned like ``is_causal``.
        kv_lengths: integer array of valid key counts per batch element
            (a 1-D array with 2+ batch dims applies to the first batch dim).
        return_weights, return_lse: also return the attention weights (output
            dtype) and the natural log-sum-exp of the visible scores (float32;
            float64 for float64 inputs). Rows with no visible key give zeros,
            ``lse = -inf``.
        out: preallocated result (exact shape and dtype, writable, not
            overlapping an input); returned itself.
        num_threads: threads for this call (default: ``get_num_threads()``).
            The projections ``query @ w_query``, ``key @ w_key`` are one
            NumPy matrix product each (NumPy's BLAS and its threads).

    Returns:
        ``out``, or a tuple ``(out[, weights][, lse])``.

    The full contract: docs/api.md, section 2.
    """
    plain = _plain_options(attn_mask, is_causal, window, kv_lengths, return_weights, return_lse, out,
                           num_threads)
    projected = None if plain is None else _fast_projections(query, key, value, v_a, w_query, w_key, bias)
    if projected is not None:
        # A plain call: projections here, everything else checked and run in
        # C++ (None if the call needs more, or is wrong).
        (causal_code, (left, right)) = plain
        result = _core.additive_plain(
            projected[0], projected[1], value, v_a, attn_mask, causal_code, left, right,
            kv_lengths, out, return_weights, return_lse, num_threads or 0,
            (query, key, w_query, w_key, bias))
        if result is not None:
            return result
    arrays, dtype = _args.check_inputs({"query": query, "key": key, "value": value})
    q, k, v = arrays["query"], arrays["key"], arrays["value"]
    L, Dq = q.shape[-2:]
    S, Dk = k.shape[-2:]
    Sv, Ev = v.shape[-2:]
    if Sv != S:
        raise ValueError(f"value has {Sv} rows (shape {v.shape}) but key has {S} (shape {k.shape})")

    wq = _parameter(w_query, "w_query", 2)
    wk = _parameter(w_key, "w_key", 2)
    if wq is not None and wq.shape[0] != Dq:
        raise ValueError(f"w_query has shape {wq.shape}; its rows must equal the query feature size "
                         f"Dq = {Dq} (query shape {q.shape})")
    if wk is not None and wk.shape[0] != Dk:
        raise ValueError(f"w_key has shape {wk.shape}; its rows must equal the key feature size "
                         f"Dk = {Dk} (key shape {k.shape})")
    a_q = Dq if wq is None else wq.shape[1]
    a_k = Dk if wk is None else wk.shape[1]
    if a_q != a_k:
        q_side = f"w_query {wq.shape}" if wq is not None else f"query features (w_query=None) {q.shape}"
        k_side = f"w_key {wk.shape}" if wk is not None else f"key features (w_key=None) {k.shape}"
        raise ValueError(f"attention size A differs between the query side ({a_q}, from {q_side}) "
                         f"and the key side ({a_k}, from {k_side})")
    A = a_q
    va = _parameter(v_a, "v_a", 1)
    if va is None:
        raise TypeError("v_a must be an array of shape (A,), got None")
    if va.shape != (A,):
        raise ValueError(f"v_a has shape {va.shape}; it must be (A,) = ({A},)")
    b = _parameter(bias, "bias", 1)
    if b is not None and b.shape != (A,):
        raise ValueError(f"bias has shape {b.shape}; it must be (A,) = ({A},)")

    batch = _args.broadcast_batch({"query": q.shape[:-2], "key": k.shape[:-2], "value": v.shape[:-2]})
    layout = _HeadLayout(len(batch))
    call = _Call(
        dtype, batch, layout, L, S, Ev,
        attn_mask=attn_mask, is_causal=is_causal, window=window, kv_lengths=kv_lengths,
        return_weights=return_weights, return_lse=return_lse, out=out, num_threads=num_threads,
        inputs={"query": (query, q), "key": (key, k), "value": (value, v), "v_a": (v_a, va),
                "w_query": (w_query, wq), "w_key": (w_key, wk), "bias": (bias, b)},
    )
    cdt = call.cdt
    qp = _project(q, wq, b, cdt)
    kp = _project(k, wk, None, cdt)
    return call.run(
        _core.additive,
        (layout.query(qp), layout.kv(kp), layout.kv(_args.for_core(v, cdt)),
         np.ascontiguousarray(va, dtype=cdt)),
    )
