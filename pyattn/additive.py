"""additive_attention: Bahdanau attention through the shared attention core."""

from __future__ import annotations

import numpy as np

from . import _args, _core

_NAMES = ["query", "key", "value"]
_NO_CAUSAL = _core.CAUSAL["none"]


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


def _project(x: np.ndarray, w, bias, cdt: np.dtype, threads: int) -> np.ndarray:
    """x @ w + bias in the compute dtype (x itself when there is nothing to do).

    The product runs on pyattn's threads (_core.project), not NumPy's BLAS:
    a BLAS keeps its own idle threads spinning after a product, on the cores
    the attention then runs on (docs/api.md, section 2)."""
    x = _args.for_core(x, cdt)
    if w is not None:
        D = x.shape[-1]
        x2 = x.reshape(int(np.prod(x.shape[:-1], dtype=np.int64)), D)  # (a copy if rows are not evenly apart)
        if D > 1 and x2.strides[1] != x2.itemsize:
            x2 = np.ascontiguousarray(x2)
        w2 = np.ascontiguousarray(w, dtype=cdt)
        b2 = None if bias is None else np.ascontiguousarray(bias, dtype=cdt)
        return _core.project(x2, w2, b2, threads).reshape(x.shape[:-1] + (w2.shape[1],))
    if bias is not None:
        return x + np.asarray(bias, dtype=cdt)
    return x


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
            The projections ``query @ w_query``, ``key @ w_key`` run on
            pyattn's threads too.

    Returns:
        ``out``, or a tuple ``(out[, weights][, lse])``.

    The full contract: docs/api.md, section 2.
    """
    (q, k, v), dtype = _core.check_float_inputs(_NAMES, (query, key, value))
    Dq, Dk = q.shape[-1], k.shape[-1]
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
    causal = _NO_CAUSAL if is_causal is False else _args.causal_code(is_causal)
    left, right = (-1, -1) if window is None else _args.window_sides(window)
    threads = 0 if num_threads is None else _args.thread_count(num_threads)
    # (the core's shape and size rules, before the projections allocate)
    _core.check_result_sizes((q, k, v), False, return_weights, return_lse, dtype)

    # Everything else (shapes, batch broadcasting, mask, kv_lengths, sizes,
    # out) is the core's rule, shared with scaled_dot_product_attention.
    cdt = _args.compute_dtype(dtype)
    return _core.additive(
        _project(q, wq, b, cdt, threads), _project(k, wk, None, cdt, threads), _args.for_core(v, cdt),
        va if va.dtype == cdt and (A <= 1 or va.strides[0] == va.itemsize) else np.ascontiguousarray(va, dtype=cdt),
        attn_mask, causal, left, right, kv_lengths, out, return_weights, return_lse, threads, dtype,
        (query, key, value),
        (("v_a", v_a), ("v_a", va), ("w_query", w_query), ("w_key", w_key), ("bias", bias)),
    )
