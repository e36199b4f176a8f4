"""Pure-NumPy reference implementation of pyattn: the executable form of the contract
(docs/api.md).

Every public function of pyattn has a twin here with the same signature and the
behaviour written down in docs/api.md sections 1-3. This module is the oracle the
tests compare the fast C++ path against, so it is written to be obviously
right rather than fast:

* everything is computed in float64 (float16 / bfloat16 / float32 inputs are
  converted first) and the result is cast back to the input dtype; ``lse`` is
  float32, or float64 for float64 inputs;
* batch broadcasting, grouped-query attention and ``kv_lengths`` are expanded
  into explicit arrays;
* one boolean array ``visible`` of shape ``(batch..., L, S)`` holds every
  visibility rule (causal alignment, window, kv_lengths, boolean mask), and the
  softmax runs over the visible keys only;
* additive attention forms the ``(rows, S, A)`` tanh tensor in row chunks --
  the memory bound of docs/api.md section 2 applies to the fast path, not to this
  oracle.

``num_threads`` is accepted (and validated) but ignored.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

try:  # bfloat16 is optional
    import ml_dtypes

    _BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - depends on the environment
    _BFLOAT16 = None

__all__ = [
    "scaled_dot_product_attention",
    "additive_attention",
    "merge_attention_states",
    "varlen_attention",
]

_FLOAT_DTYPES = {np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)}
if _BFLOAT16 is not None:
    _FLOAT_DTYPES.add(_BFLOAT16)

# Python-level limit on the size of one chunk of the additive (rows, S, A) tensor.
_ADDITIVE_CHUNK_ELEMENTS = 1 << 21


# --------------------------------------------------------------------------
# Argument checking
# --------------------------------------------------------------------------


def _float_array(x, name):
    """``x`` as an ndarray of a supported float dtype, else TypeError."""
    arr = np.asarray(x)
    if arr.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be a float16, bfloat16, float32 or float64 array, "
            f"got dtype {arr.dtype}"
        )
    return arr


def _qkv(query, key, value):
    """Check the dtypes and matrix dims of query/key/value; return arrays."""
    q = _float_array(query, "query")
    k = _float_array(key, "key")
    v = _float_array(value, "value")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(
            "query, key and value must have the same dtype, got "
            f"query {q.dtype}, key {k.dtype}, value {v.dtype}"
        )
    for arr, name in ((q, "query"), (k, "key"), (v, "value")):
        if arr.ndim < 2:
            raise ValueError(
                f"{name} must have at least 2 dims, got shape {arr.shape}"
            )
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(
            "key and value must have the same length S (dim -2), got "
            f"key {k.shape} and value {v.shape}"
        )
    return q, k, v


def _is_int(x):
    return isinstance(x, (numbers.Integral, np.integer)) and not isinstance(
        x, (bool, np.bool_)
    )


def _parse_causal(is_causal):
    """Return (causal, lower_right)."""
    if isinstance(is_causal, (bool, np.bool_)):
        return bool(is_causal), False
    if isinstance(is_causal, str):
        if is_causal == "upper_left":
            return True, False
        if is_causal == "lower_right":
            return True, True
        raise ValueError(
            "is_causal must be False, True, 'upper_left' or 'lower_right', "
            f"got {is_causal!r}"
        )
    raise TypeError(
        "is_causal must be a bool or one of 'upper_left', 'lower_right', "
        f"got {type(is_causal).__name__}"
    )


def _parse_window(window):
    """Return (left, right); None means unbounded on that side."""
    if window is None:
        return None, None

    def side(x, what):
        if x is None:
            return None
        if not _is_int(x):
            raise TypeError(
                f"window {what} must be an int or None, got {type(x).__name__}"
            )
        if x < 0:
            raise ValueError(f"window {what} must be >= 0, got {x}")
        return int(x)

    if _is_int(window):
        return side(window, "size"), 0
    if isinstance(window, (tuple, list)):
        if len(window) != 2:
            raise TypeError(
                f"window must be None, an int or a (left, right) pair, got {window!r}"
            )
        return side(window[0], "left"), side(window[1], "right")
    raise TypeError(
        "window must be None, an int or a (left, right) pair, "
        f"got {type(window).__name__}"
    )


def _parse_scale(scale, E):
    if scale is None:
        return 1.0 / math.sqrt(E) if E > 0 else 1.0
    if isinstance(scale, (bool, np.bool_)) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale must be a real number, got {type(scale).__name__}")
    scale = float(scale)
    if not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale}")
    return scale


def _check_num_threads(num_threads):
    if num_threads is None:
        return
    if not _is_int(num_threads):
        raise TypeError(
            f"num_threads must be None or an int, got {type(num_threads).__name__}"
        )
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    if num_threads > 2**31 - 1:  # pyattn counts threads in a C int
        raise ValueError(f"num_threads must be <= {2**31 - 1}, got {num_threads}")


def _parse_softcap(softcap):
    if softcap is None:
        return None
    if isinstance(softcap, (bool, np.bool_)) or not isinstance(softcap, numbers.Real):
        raise TypeError(f"softcap must be a real number or None, got {type(softcap).__name__}")
    softcap = float(softcap)
    if not (math.isfinite(softcap) and softcap > 0):
        raise ValueError(f"softcap must be a finite number > 0, got {softcap}")
    return softcap


def _per_head(x, name, batch):
    """A float64 (batch...) array of one value per query head, or None."""
    if x is None:
        return None
    a = np.asarray(x)
    if a.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name} must be a float array, got dtype {a.dtype}")
    if not _broadcasts_to(a.shape, tuple(batch)):
        raise ValueError(
            f"{name} of shape {a.shape} does not broadcast to the batch shape "
            f"{tuple(batch)} without adding dimensions"
        )
    a = np.broadcast_to(a.astype(np.float64), tuple(batch))
    if name == "alibi_slopes" and not np.all(np.isfinite(a)):
        raise ValueError("alibi_slopes must be finite")
    if name == "sinks" and np.any(np.isnan(a) | (a == np.inf)):
        raise ValueError("sinks must not be NaN or +inf (-inf means no sink)")
    return a


def _batch_shape(q, k, v):
    try:
        return np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except ValueError:
        raise ValueError(
            "the batch dims of query, key and value do not broadcast: "
            f"query {q.shape}, key {k.shape}, value {v.shape}"
        ) from None


def _expand_gqa(q, k, v):
    """Repeat the kv heads (dim -3) so query head h reads kv head h // g."""
    for arr, name in ((q, "query"), (k, "key"), (v, "value")):
        if arr.ndim < 3:
            raise ValueError(
                f"enable_gqa needs query, key and value with at least 3 dims, "
                f"got {name} of shape {arr.shape}"
            )
    hq, hkv = q.shape[-3], k.shape[-3]
    if v.shape[-3] != hkv:
        raise ValueError(
            "enable_gqa needs the same number of heads (dim -3) in key and value, "
            f"got key {k.shape} and value {v.shape}"
        )
    if (hkv == 0 and hq != 0) or (hkv != 0 and hq % hkv != 0):
        raise ValueError(
            f"enable_gqa: key/value heads ({hkv}) must divide query heads ({hq}); "
            f"query {q.shape}, key {k.shape}"
        )
    group = hq // hkv if hkv else 0
    if hq == hkv:
        return k, v
    return np.repeat(k, group, axis=-3), np.repeat(v, group, axis=-3)


def _broadcasts_to(shape, target):
    """True if ``shape`` broadcasts to ``target`` without adding dims."""
    if len(shape) > len(target):
        return False
    try:
        return np.broadcast_shapes(shape, target) == tuple(target)
    except ValueError:
        return False


def _mask(attn_mask, batch, L, S):
    """Return (bool_mask or None, float64 bias or None), both broadcast views."""
    if attn_mask is None:
        return None, None
    m = np.asarray(attn_mask)
    if m.dtype != np.bool_ and m.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"attn_mask must be a bool or floating array, got dtype {m.dtype}"
        )
    target = tuple(batch) + (L, S)
    if not _broadcasts_to(m.shape, target):
        raise ValueError(
            f"attn_mask of shape {m.shape} does not broadcast to the "
            f"(batch..., L, S) shape {target} without adding dims"
        )
    m = np.broadcast_to(m, target)
    if m.dtype == np.bool_:
        return m, None
    return None, m.astype(np.float64)


def _kv_lengths(kv_lengths, batch, S):
    """Return the int64 number of valid keys per batch element, shape batch."""
    if kv_lengths is None:
        return np.full(batch, S, dtype=np.int64)
    n = np.asarray(kv_lengths)
    if n.dtype.kind not in "iu":
        raise TypeError(f"kv_lengths must be an integer array, got dtype {n.dtype}")
    batch = tuple(batch)
    if n.ndim == 1 and len(batch) >= 2:
        # Applies to the first batch dim.
        if n.shape[0] not in (batch[0], 1):
            raise ValueError(
                f"1-D kv_lengths of length {n.shape[0]} must match the first "
                f"batch dim {batch[0]} (batch shape {batch}) or be 1"
            )
        n = n.reshape(n.shape + (1,) * (len(batch) - 1))
    elif not _broadcasts_to(n.shape, batch):
        raise ValueError(
            f"kv_lengths of shape {n.shape} does not broadcast to the batch "
            f"shape {batch} without adding dims"
        )
    if n.size and (np.any(n < 0) or np.any(n > S)):
        raise ValueError(
            f"kv_lengths must lie in [0, S={S}], got values in "
            f"[{n.min()}, {n.max()}]"
        )
    return np.broadcast_to(n, batch).astype(np.int64)


def _visible(batch, L, S, n, causal, lower_right, window, bool_mask):
    """The (batch..., L, S) boolean array of keys each query row may see."""
    left, right = window
    i = np.arange(L).reshape(L, 1)
    j = np.arange(S).reshape(1, S)
    n = n[..., None, None]                      # (batch..., 1, 1)
    pos = i + (n - L) if lower_right else i + 0 * n
    vis = j < n
    if causal:
        vis = vis & (j <= pos)
    if left is not None:
        vis = vis & (j >= pos - left)
    if right is not None:
        vis = vis & (j <= pos + right)
    vis = np.broadcast_to(vis, tuple(batch) + (L, S))
    if bool_mask is not None:
        vis = vis & bool_mask
    return vis


def _check_out(out, shape, dtype, inputs):
    if out is None:
        return
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
    if out.dtype != dtype:
        raise TypeError(f"out must have dtype {dtype}, got {out.dtype}")
    if out.shape != tuple(shape):
        raise ValueError(f"out must have shape {tuple(shape)}, got {out.shape}")
    if not out.flags.writeable:
        raise ValueError("out must be writable, got a read-only array")
    for arr in inputs:
        if isinstance(arr, np.ndarray) and np.shares_memory(out, arr):
            raise ValueError("out must not overlap an input array")


# --------------------------------------------------------------------------
# The shared softmax over visible keys
# --------------------------------------------------------------------------


def _weighted_values(p, visible, v):
    """out[..., i, :] = sum over visible j of p[..., i, j] * v[..., j, :]."""
    if np.all(np.isfinite(v)):
        # Invisible keys have p == 0 exactly and finite values: no effect.
        return np.einsum("...ls,...sd->...ld", p, v)
    # Non-finite values: an invisible key must not turn 0 * inf into NaN.
    shape = np.broadcast_shapes(p.shape[:-1] + (v.shape[-1],), v.shape[:-2] + (1, 1))
    out = np.empty(shape)
    L = p.shape[-2]
    step = max(1, _ADDITIVE_CHUNK_ELEMENTS // max(1, p.size // max(1, L) * v.shape[-1]))
    for i0 in range(0, L, step):
        sl = slice(i0, i0 + step)
        with np.errstate(invalid="ignore"):
            terms = p[..., sl, :, None] * v[..., None, :, :]
        terms = np.where(visible[..., sl, :, None], terms, 0.0)
        out[..., sl, :] = terms.sum(axis=-2)
    return out


def _attend(scores, visible, v, dtype, return_weights, return_lse, out, sinks=None):
    """Softmax over the visible keys and the weighted sum of the values.

    ``scores`` and ``visible`` have the full shape (batch..., L, S); ``v`` is
    float64 (..., S, Ev) broadcastable to (batch..., S, Ev). ``sinks``: None
    or float64 (batch...): exp(sink) joins each row's denominator.
    """
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        m = np.max(scores, axis=-1, initial=-np.inf, where=visible, keepdims=True)
        empty = m == -np.inf          # no visible key (or all of them -inf)
        if sinks is None:
            m_safe = np.where(empty, 0.0, m)
            e = np.where(visible, np.exp(scores - m_safe), 0.0)
            denom = e.sum(axis=-1, keepdims=True)
            p = np.where(empty, 0.0, e / np.where(empty, 1.0, denom))
            lse = np.where(empty, -np.inf, m_safe + np.log(denom))[..., 0]
        else:
            sink = np.broadcast_to(sinks[..., None, None], m.shape)
            top = np.where(empty, sink, np.maximum(m, sink))
            top_safe = np.where(top == -np.inf, 0.0, top)
            e = np.where(visible, np.exp(scores - top_safe), 0.0)
            denom = e.sum(axis=-1, keepdims=True) + np.exp(sink - top_safe)
            p = np.where(empty, 0.0, e / np.where(empty, 1.0, denom))
            lse = np.where(empty, sink, top_safe + np.log(denom))[..., 0]
        result = _weighted_values(p, visible, v)
        result = np.where(empty, 0.0, result)

    result = result.astype(dtype)
    if out is not None:
        out[...] = result
        result = out
    ret = [result]
    if return_weights:
        ret.append(p.astype(dtype))
    if return_lse:
        lse_dtype = np.float64 if dtype == np.float64 else np.float32
        ret.append(lse.astype(lse_dtype))
    return ret[0] if len(ret) == 1 else tuple(ret)


def _prepare(q, k, v, attn_mask, is_causal, window, kv_lengths, num_threads):
    """Shared checks: returns batch, L, S, visible, float bias (or None)."""
    causal, lower_right = _parse_causal(is_causal)
    win = _parse_window(window)
    _check_num_threads(num_threads)
    batch = _batch_shape(q, k, v)
    L, S = q.shape[-2], k.shape[-2]
    bool_mask, bias = _mask(attn_mask, batch, L, S)
    n = _kv_lengths(kv_lengths, batch, S)
    visible = _visible(batch, L, S, n, causal, lower_right, win, bool_mask)
    if bias is not None:
        # A -inf bias hides its key like a False in a bool mask (a finite
        # bias, however negative, does not): NaN at such a key stays out.
        visible = visible & (bias != -np.inf)
    return batch, L, S, visible, bias


# --------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------


def scaled_dot_product_attention(
    query, key, value, *,
    attn_mask=None, is_causal=False, scale=None,
    window=None, kv_lengths=None, enable_gqa=False,
    return_weights=False, return_lse=False,
    out=None, num_threads=None,
    softcap=None, alibi_slopes=None, sinks=None,
):
    """Reference scaled-dot-product attention (docs/api.md section 1), with
    the score variants (docs/score_variants.md).

    query (..., L, E), key (..., S, E), value (..., S, Ev) -> (batch..., L, Ev);
    with return_weights also weights (batch..., L, S), with return_lse also
    lse (batch..., L). Scores: scale * <q, k>, then softcap * tanh(s /
    softcap), then + float mask + ALiBi bias -slope * |p(i) - j|; the softmax
    denominator gains exp(sink).
    """
    q, k, v = _qkv(query, key, value)
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(
            "query and key must have the same feature size E (dim -1), got "
            f"query {q.shape} and key {k.shape}"
        )
    dtype = q.dtype
    E = q.shape[-1]
    scale = _parse_scale(scale, E)
    if enable_gqa:
        k, v = _expand_gqa(q, k, v)
    cap = _parse_softcap(softcap)
    batch, L, S, visible, bias = _prepare(
        q, k, v, attn_mask, is_causal, window, kv_lengths, num_threads
    )
    slopes = _per_head(alibi_slopes, "alibi_slopes", batch)
    sink = _per_head(sinks, "sinks", batch)
    _check_out(out, tuple(batch) + (L, v.shape[-1]), dtype,
               (query, key, value, attn_mask, kv_lengths, alibi_slopes, sinks))

    q64, k64, v64 = (a.astype(np.float64) for a in (q, k, v))
    with np.errstate(invalid="ignore", over="ignore"):
        scores = scale * np.einsum("...le,...se->...ls", q64, k64)
        if cap is not None:
            scores = cap * np.tanh(scores / cap)
        if bias is not None:
            scores = scores + bias
        if slopes is not None:
            # p(i): the query row's key position (section 1), with the
            # alignment is_causal chooses.
            _, lower_right = _parse_causal(is_causal)
            n = _kv_lengths(kv_lengths, batch, S)[..., None, None]
            i = np.arange(L).reshape(L, 1)
            pos = i + (n - L) if lower_right else i + 0 * n
            dist = np.abs(pos - np.arange(S).reshape(1, S)).astype(np.float64)
            scores = scores - slopes[..., None, None] * dist
    scores = np.broadcast_to(scores, tuple(batch) + (L, S))
    return _attend(scores, visible, v64, dtype, return_weights, return_lse, out, sink)


def additive_attention(
    query, key, value, v_a, *,
    w_query=None, w_key=None, bias=None,
    attn_mask=None, is_causal=False, window=None, kv_lengths=None,
    return_weights=False, return_lse=False, out=None, num_threads=None,
):
    """Reference additive (Bahdanau) attention (docs/api.md section 2).

    s[i, j] = sum_a v_a[a] * tanh((q_i W_q)[a] + (k_j W_k)[a] + bias[a]);
    masks, returns and fully-masked rows as in scaled_dot_product_attention.
    """
    q, k, v = _qkv(query, key, value)
    dtype = q.dtype
    Dq, Dk = q.shape[-1], k.shape[-1]

    def matrix(w, name, rows):
        if w is None:
            return None, rows
        w = _float_array(w, name)
        if w.ndim != 2 or w.shape[0] != rows:
            raise ValueError(f"{name} must have shape ({rows}, A), got {w.shape}")
        return w.astype(np.float64), w.shape[1]

    wq, a_q = matrix(w_query, "w_query", Dq)
    wk, a_k = matrix(w_key, "w_key", Dk)
    if a_q != a_k:
        raise ValueError(
            f"the attention sizes A of the query side ({a_q}) and the key side "
            f"({a_k}) differ: query {q.shape}, key {k.shape}, "
            f"w_query {None if wq is None else wq.shape}, "
            f"w_key {None if wk is None else wk.shape}"
        )
    A = a_q
    va = _float_array(v_a, "v_a")
    if va.shape != (A,):
        raise ValueError(f"v_a must have shape ({A},), got {va.shape}")
    va = va.astype(np.float64)
    if bias is None:
        b = np.zeros(A)
    else:
        b = _float_array(bias, "bias")
        if b.shape != (A,):
            raise ValueError(f"bias must have shape ({A},), got {b.shape}")
        b = b.astype(np.float64)

    batch, L, S, visible, mask_bias = _prepare(
        q, k, v, attn_mask, is_causal, window, kv_lengths, num_threads
    )
    _check_out(out, tuple(batch) + (L, v.shape[-1]), dtype,
               (query, key, value, attn_mask, kv_lengths))

    q64, k64, v64 = (a.astype(np.float64) for a in (q, k, v))
    qp = q64 if wq is None else np.einsum("...ld,da->...la", q64, wq)
    kp = k64 if wk is None else np.einsum("...sd,da->...sa", k64, wk)
    kp = kp + b

    scores = np.empty(tuple(batch) + (L, S))
    per_row = max(1, math.prod(batch) * S * A)
    step = max(1, _ADDITIVE_CHUNK_ELEMENTS // per_row)
    with np.errstate(invalid="ignore", over="ignore"):
        for i0 in range(0, L, step):
            t = np.tanh(qp[..., i0:i0 + step, None, :] + kp[..., None, :, :])
            scores[..., i0:i0 + step, :] = np.einsum("...lsa,a->...ls", t, va)
        if mask_bias is not None:
            scores = scores + mask_bias
    return _attend(scores, visible, v64, dtype, return_weights, return_lse, out)


def merge_attention_states(outputs, lses, *, sinks=None):
    """Reference merge of attention over disjoint key chunks (docs/api.md
    section 3; ``sinks``: docs/score_variants.md).

    outputs: sequence of (..., L, Ev) arrays, lses: sequence of (..., L) arrays.
    Returns (out, lse) with lse = logsumexp_p(lse_p) and
    out = sum_p exp(lse_p - lse) * out_p; parts with lse_p = -inf are ignored.
    sinks: None or a float array broadcastable to the lses' shape without L
    (...): exp(sink) is counted once in the total, as attention with sinks
    over all the keys would.
    """
    outputs = [_float_array(o, "outputs") for o in outputs]
    lses = [_float_array(x, "lses") for x in lses]
    if len(outputs) == 0:
        raise ValueError("outputs and lses must hold at least one part, got none")
    if len(outputs) != len(lses):
        raise ValueError(
            f"outputs and lses must have the same length, got {len(outputs)} "
            f"and {len(lses)}"
        )
    out_shape = outputs[0].shape
    if len(out_shape) < 1:
        raise ValueError(f"outputs must have at least 1 dim, got shape {out_shape}")
    for o, x in zip(outputs, lses):
        if o.shape != out_shape:
            raise ValueError(
                f"all outputs must have the same shape, got {out_shape} and {o.shape}"
            )
        if x.shape != out_shape[:-1]:
            raise ValueError(
                f"lses must have shape {out_shape[:-1]} (outputs' shape without "
                f"the last dim), got {x.shape}"
            )
    out_dtype, lse_dtype = outputs[0].dtype, lses[0].dtype
    sink = _per_head(sinks, "sinks", out_shape[:-2]) if len(out_shape) >= 2 else None
    if len(out_shape) < 2 and sinks is not None:
        raise ValueError(f"sinks need outputs of at least 2 dims (..., L, Ev), got {out_shape}")

    O = np.stack([o.astype(np.float64) for o in outputs])      # (P, ..., L, Ev)
    X = np.stack([x.astype(np.float64) for x in lses])         # (P, ..., L)
    if sink is not None:  # one more part: the sink, with no value vector
        S_ = np.broadcast_to(sink[..., None], X.shape[1:])
        X = np.concatenate([X, S_[None]])
        O = np.concatenate([O, np.zeros((1,) + O.shape[1:])])
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        absent = X == -np.inf
        m = X.max(axis=0)
        empty = m == -np.inf
        m_safe = np.where(empty, 0.0, m)
        total = np.where(absent, 0.0, np.exp(X - m_safe)).sum(axis=0)
        lse = np.where(empty, -np.inf, m_safe + np.log(total))
        coef = np.where(absent, 0.0, np.exp(X - np.where(empty, 0.0, lse)))
        out = np.where(absent[..., None], 0.0, coef[..., None] * O).sum(axis=0)
    return out.astype(out_dtype), lse.astype(lse_dtype)


def _cu_offsets(x, name, total):
    """A cumulative sequence-length array as Python ints, checked."""
    a = np.asarray(x)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array, got dtype {a.dtype}")
    if a.ndim != 1 or a.shape[0] < 1:
        raise ValueError(f"{name} must be 1-D with at least one entry, got shape {a.shape}")
    cu = [int(x) for x in a]
    if cu[0] != 0 or cu[-1] != total:
        raise ValueError(f"{name} must start at 0 and end at {total}, got {cu[0]} ... {cu[-1]}")
    if any(b < a for a, b in zip(cu, cu[1:])):
        raise ValueError(f"{name} must be non-decreasing")
    return cu


def varlen_attention(
    query, key, value, cu_seqlens_q, cu_seqlens_k, *,
    is_causal=False, scale=None, window=None,
    softcap=None, alibi_slopes=None, sinks=None,
    return_lse=False, out=None, num_threads=None,
):
    """Reference attention over a packed batch of sequences (flash-attention's
    varlen layout).

    query (total_q, Hq, E), key (total_k, Hkv, E), value (total_k, Hkv, Ev)
    -> out (total_q, Hq, Ev), with return_lse also lse (total_q, Hq).
    Sequence n is query rows cu_seqlens_q[n]:cu_seqlens_q[n+1] attending to
    key rows cu_seqlens_k[n]:cu_seqlens_k[n+1], each computed by
    scaled_dot_product_attention on its own (grouped-query heads: query head
    h uses key/value head h // (Hq // Hkv)); softcap, and alibi_slopes and
    sinks of shape (Hq,), apply to every sequence.
    """
    q, k, v = _qkv(query, key, value)
    for arr, name in ((q, "query"), (k, "key"), (v, "value")):
        if arr.ndim != 3:
            raise ValueError(f"{name} must have 3 dims (rows, heads, features), got shape {arr.shape}")
    if q.shape[2] != k.shape[2]:
        raise ValueError(f"query and key must have the same feature size, got {q.shape} and {k.shape}")
    if v.shape[:2] != k.shape[:2]:
        raise ValueError(f"value {v.shape} and key {k.shape} must have the same rows and heads")
    hq, hkv = q.shape[1], k.shape[1]
    if (hkv == 0 and hq != 0) or (hkv != 0 and hq % hkv != 0):
        raise ValueError(f"key/value heads ({hkv}) must divide query heads ({hq})")
    cu_q = _cu_offsets(cu_seqlens_q, "cu_seqlens_q", q.shape[0])
    cu_k = _cu_offsets(cu_seqlens_k, "cu_seqlens_k", k.shape[0])
    if len(cu_q) != len(cu_k):
        raise ValueError("cu_seqlens_q and cu_seqlens_k must have the same length")
    scale = _parse_scale(scale, q.shape[2])
    _parse_causal(is_causal)
    _parse_window(window)
    _check_num_threads(num_threads)
    dtype = q.dtype
    shape = (q.shape[0], hq, v.shape[2])
    _parse_softcap(softcap)
    _per_head(alibi_slopes, "alibi_slopes", (hq,))
    _per_head(sinks, "sinks", (hq,))
    _check_out(out, shape, dtype, (query, key, value, cu_seqlens_q, cu_seqlens_k, alibi_slopes, sinks))

    result = np.zeros(shape, dtype)
    lse_dtype = np.float64 if dtype == np.float64 else np.float32
    lse = np.full(shape[:2], -np.inf, lse_dtype)
    for n in range(len(cu_q) - 1):
        rows, keys = slice(cu_q[n], cu_q[n + 1]), slice(cu_k[n], cu_k[n + 1])
        if hq == 0 or rows.stop == rows.start:
            continue
        o, l = scaled_dot_product_attention(
            q[rows].transpose(1, 0, 2), k[keys].transpose(1, 0, 2), v[keys].transpose(1, 0, 2),
            is_causal=is_causal, scale=scale, window=window, enable_gqa=True, return_lse=True,
            softcap=softcap, alibi_slopes=alibi_slopes, sinks=sinks,
        )
        result[rows] = o.transpose(1, 0, 2)
        lse[rows] = l.T
    if out is not None:
        out[...] = result
        result = out
    return (result, lse) if return_lse else result
