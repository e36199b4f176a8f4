"""Public attention functions (the fast path through pyattn._core).

Each function checks and normalises its arguments here (see _args.py), then
hands strided views to the compiled core, which releases the GIL while it
computes. The NumPy reference with the same signatures is pyattn.reference.
"""

from __future__ import annotations

import math

import numpy as np

from . import _args, _core


class _HeadLayout:
    """Maps arrays indexed by the user's batch shape onto the core's batch.

    Without grouped-query attention the two are the same. With it, the head
    axis (dim -3) of size Hq is split into (Hkv, G) so that key/value, of
    shape (..., Hkv, 1, S, E), broadcast over the G query heads of their
    group: query head h uses kv head h // G, and nothing is copied.
    """

    def __init__(self, nb: int, hkv: int = 0, group: int = 1, gqa: bool = False):
        self.nb, self.hkv, self.group, self.gqa = nb, hkv, group, gqa

    def query(self, a):
        a = _args.with_ndim(a, self.nb + 2)
        return _args.split_axis(a, self.nb - 1, self.hkv, self.group) if self.gqa else a

    def kv(self, a):
        a = _args.with_ndim(a, self.nb + 2)
        return np.expand_dims(a, self.nb) if self.gqa else a

    def batched(self, a, trailing: int):
        """Arrays of shape (user batch..., *trailing dims): masks, lengths, outputs."""
        if a is None:
            return None
        a = _args.with_ndim(a, self.nb + trailing)
        if not self.gqa:
            return a
        if a.shape[self.nb - 1] == 1:
            return np.expand_dims(a, self.nb)
        return _args.split_axis(a, self.nb - 1, self.hkv, self.group)


def _batch_and_layout(q, k, v, enable_gqa):
    if not enable_gqa:
        batch = _args.broadcast_batch({"query": q.shape[:-2], "key": k.shape[:-2], "value": v.shape[:-2]})
        return batch, _HeadLayout(len(batch))
    for name, a in (("query", q), ("key", k), ("value", v)):
        if a.ndim < 3:
            raise ValueError(f"enable_gqa needs (..., heads, rows, features) inputs; {name} has shape {a.shape}")
    hq, hk, hv = q.shape[-3], k.shape[-3], v.shape[-3]
    if hk != hv:
        raise ValueError(f"enable_gqa: key and value must have the same number of heads, got {hk} and {hv}")
    if (hk == 0 and hq != 0) or (hk and hq % hk):
        raise ValueError(f"enable_gqa: key/value heads ({hk}) must divide query heads ({hq})")
    outer = _args.broadcast_batch({"query": q.shape[:-3], "key": k.shape[:-3], "value": v.shape[:-3]})
    batch = outer + (hq,)
    return batch, _HeadLayout(len(batch), hk, hq // hk if hk else 1, gqa=True)


class _Call:
    """What every attention op shares around its ``_core`` call.

    The constructor checks the visibility arguments (``is_causal``,
    ``window``, ``attn_mask``, ``kv_lengths``), ``num_threads`` and ``out``,
    and allocates the result, weights and lse in the compute dtype (float32
    for float16/bfloat16 inputs). ``run`` then calls
    ``core_fn(*operands, out, mask, lengths, weights, lse, *extra, causal,
    lower_right, window_left, window_right, num_threads)`` -- the call shape
    of every ``_core`` op -- converts back to the input dtype and builds the
    return value. ``operands`` are the op's score inputs, already laid out.
    ``compute``: the compute dtype when it is not the input's (keys/values
    stored apart from the query).
    """

    def __init__(self, dtype, batch, layout, L, S, Ev, *, attn_mask, is_causal, window,
                 kv_lengths, return_weights, return_lse, out, num_threads, inputs, compute=None):
        self.layout = layout
        self.causal, self.lower_right = _args.parse_causal(is_causal)
        self.left, self.right = _args.parse_window(window, L, S)
        self.threads = _args.parse_num_threads(num_threads, _core.get_num_threads)
        self.cdt = cdt = _args.compute_dtype(dtype) if compute is None else compute
        self.mask = _args.prepare_mask(attn_mask, batch, L, S, cdt)
        self.lengths = _args.prepare_lengths(kv_lengths, batch, S)

        out_shape = batch + (L, Ev)
        _args.check_size(out_shape, dtype.itemsize, "the result")
        if return_weights:  # (before anything is allocated)
            _args.check_size(batch + (L, S), cdt.itemsize, "weights")
        if out is None:
            self.result = np.empty(out_shape, dtype)
        else:
            self.result = _args.check_out(
                out, out_shape, dtype,
                dict(inputs, attn_mask=(attn_mask, self.mask), kv_lengths=(kv_lengths, self.lengths)))
        result = self.result
        self.direct = result.dtype == cdt and (Ev <= 1 or result.strides[-1] == result.itemsize) \
            and all(st % result.itemsize == 0 for st in result.strides)
        self.target = result if self.direct else np.empty(out_shape, cdt)
        self.dtype = dtype
        self.weights = self.lse = None
        if return_weights:  # (large ones in memory a freed weights result leaves behind)
            self.weights = _core._new_weights_array(cdt, batch + (L, S), cdt == dtype)
        else:
            _core.release_kept_weights()
        if return_lse:
            self.lse = np.empty(batch + (L,), cdt)

    def run(self, core_fn, operands, *extra):
        layout = self.layout
        core_fn(
            *operands,
            layout.batched(self.target, 2),
            layout.batched(self.mask, 2),
            layout.batched(self.lengths, 0),
            layout.batched(self.weights, 2),
            layout.batched(self.lse, 1),
            *extra,
            self.causal, self.lower_right, self.left, self.right, self.threads,
        )
        result = self.result
        if not self.direct:
            result[...] = self.target
        if self.weights is None and self.lse is None:
            return result
        ret = (result,)
        if self.weights is not None:
            w = self.weights
            ret += (w if w.dtype == self.dtype else w.astype(self.dtype),)
        if self.lse is not None:
            ret += (self.lse,)
        return ret


# is_causal strings as the C++ fast path's codes (0 none, 1 upper-left, 2 lower-right).
_CAUSAL_STRINGS = {"upper_left": 1, "lower_right": 2}

# A window's (left, right) sides for the fast path, -1 = unbounded.
_NO_WINDOW = (-1, -1)
_SIDE_MAX = 2 ** 62  # wider sides are clamped by the general path (parse_window)


def _plain_options(attn_mask, is_causal, window, kv_lengths, return_weights, return_lse, out,
                   num_threads):
    """(causal code, (left, right)) when the options common to both ops are
    in the forms the C++ fast path takes; None otherwise (the general path
    then normalises them and names any error). Identity tests first: this is
    part of every small call's cost."""
    causal_code = (0 if is_causal is False else 1 if is_causal is True
                   else _CAUSAL_STRINGS.get(is_causal) if type(is_causal) is str else None)
    sides = _NO_WINDOW if window is None else _fast_window(window)
    if (sides is not None and causal_code is not None
            and (out is None or type(out) is np.ndarray)
            and (return_weights is False or return_weights is True)
            and (return_lse is False or return_lse is True)
            and (attn_mask is None or type(attn_mask) is np.ndarray)
            and (kv_lengths is None or type(kv_lengths) is np.ndarray)
            and (num_threads is None or (type(num_threads) is int and 1 <= num_threads <= _args.MAX_THREADS))):
        return causal_code, sides
    return None


def _fast_window(window):
    """(left, right) for a window of plain non-negative ints / None sides;
    None for anything else (the general path parses it and names errors)."""
    if type(window) is int:
        return (window, 0) if 0 <= window < _SIDE_MAX else None
    if type(window) is tuple and len(window) == 2:
        left, right = window
        if ((left is None or (type(left) is int and 0 <= left < _SIDE_MAX))
                and (right is None or (type(right) is int and 0 <= right < _SIDE_MAX))):
            return (-1 if left is None else left, -1 if right is None else right)
    return None


def scaled_dot_product_attention(
    query,
    key,
    value,
    *,
    attn_mask=None,
    is_causal=False,
    scale=None,
    window=None,
    kv_lengths=None,
    enable_gqa=False,
    return_weights=False,
    return_lse=False,
    out=None,
    num_threads=None,
    softcap=None,
    alibi_slopes=None,
    sinks=None,
):
    """Scaled-dot-product attention, computed exactly (no approximation of
    the softmax) by a blocked online-softmax kernel.

    Shapes (``...`` are batch dimensions, broadcast NumPy-style):
        query ``(..., L, E)``, key ``(..., S, E)``, value ``(..., S, Ev)``
        -> out ``(batch..., L, Ev)``; weights ``(batch..., L, S)``;
        lse ``(batch..., L)``.

    ``s[i, j] = scale * <q_i, k_j> + bias[i, j]`` over the keys row ``i`` may
    see; ``out_i = sum_j softmax(s)[i, j] v_j``.

    Args:
        attn_mask: bool (True = may attend) or float (added to the scores,
            ``-inf`` allowed), broadcastable to ``(batch..., L, S)`` without
            adding batch dims.
        is_causal: ``False``, ``True``/``"upper_left"`` (key j visible if
            ``j <= i``) or ``"lower_right"`` (``j <= i + n - L``, n the valid
            keys: what decoding with a KV cache needs).
        scale: defaults to ``1/sqrt(E)`` (1 when E = 0); must be finite.
        window: ``None``, ``w`` (= ``(w, 0)``) or ``(left, right)`` with
            ``None`` for an unbounded side: key j visible iff
            ``p(i) - left <= j <= p(i) + right``, aligned like ``is_causal``.
        kv_lengths: integer array of valid key counts per batch element
            (a 1-D array with 2+ batch dims applies to the first batch dim).
        enable_gqa: grouped-query attention over dim -3 (query head h uses
            kv head ``h // (Hq // Hkv)``); nothing is copied.
        return_weights, return_lse: also return the attention weights (output
            dtype) and the natural log-sum-exp of the visible scores (float32;
            float64 for float64 inputs). Rows with no visible key give zeros,
            ``lse = -inf``.
        out: preallocated result (exact shape and dtype, writable, not
            overlapping an input); returned itself.
        num_threads: threads for this call (default: ``get_num_threads()``).
        softcap: ``None`` or a finite float ``c > 0``: each scaled score
            becomes ``c * tanh(s / c)`` before any bias (Gemma 2).
        alibi_slopes: ``None`` or a float array of one slope per query head,
            broadcastable to ``batch...`` without adding dims (e.g. ``(H,)``
            or ``(B, H)``): adds ``-slope * |p(i) - j|`` after the mask's
            bias, ``p(i)`` the query's key position (ALiBi: BLOOM, MPT).
        sinks: ``None`` or a float array of one logit per query head
            (broadcast like ``alibi_slopes``): ``exp(sink)`` joins each
            row's softmax denominator, with no value (gpt-oss). The lse
            includes it; a row with no visible key gives ``lse = sink``.

    Returns:
        ``out``, or a tuple ``(out[, weights][, lse])``.

    The full contract (every option, error and promise): docs/api.md, section 1.
    """
    plain = _plain_options(attn_mask, is_causal, window, kv_lengths, return_weights, return_lse, out,
                           num_threads)
    if (plain is not None and (enable_gqa is False or enable_gqa is True)
            and (scale is None or (type(scale) is float and math.isfinite(scale)))
            and (softcap is None or (type(softcap) is float and 0 < softcap < math.inf))
            and (alibi_slopes is None or type(alibi_slopes) is np.ndarray)
            and (sinks is None or type(sinks) is np.ndarray)):
        # Plain/causal/windowed/masked calls, score variants and KV-cache
        # decoding steps: checked and run entirely in C++ (None if the call
        # needs more, or is wrong).
        (causal_code, (left, right)) = plain
        result = _core.sdpa_plain(query, key, value, attn_mask, scale, causal_code, left, right,
                                  kv_lengths, out, return_weights, return_lse, enable_gqa,
                                  num_threads or 0, softcap or 0.0, alibi_slopes, sinks)
        if result is not None:
            return result
    arrays, dtype = _args.check_inputs({"query": query, "key": key, "value": value})
    return _sdpa_general(
        arrays["query"], arrays["key"], arrays["value"], dtype, _args.half_storage_code(dtype),
        attn_mask=attn_mask, is_causal=is_causal, scale=scale, window=window,
        kv_lengths=kv_lengths, enable_gqa=enable_gqa, return_weights=return_weights,
        return_lse=return_lse, out=out, num_threads=num_threads,
        softcap=softcap, alibi_slopes=alibi_slopes, sinks=sinks,
        inputs={"query": query, "key": key, "value": value},
    )


def _shapes_and_scores(q, k, v, enable_gqa, scale, softcap, alibi_slopes, sinks, cdt):
    """The sizes of a general-path call, checked ((L, S, Ev)), its batch and
    head layout, and its score options (scale, softcap, and the ALiBi slopes
    and sinks per head in the compute dtype ``cdt``)."""
    L, E = q.shape[-2:]
    S, Ek = k.shape[-2:]
    Sv, Ev = v.shape[-2:]
    if Ek != E:
        raise ValueError(f"key feature size {Ek} (shape {k.shape}) != query feature size {E} (shape {q.shape})")
    if Sv != S:
        raise ValueError(f"value has {Sv} rows (shape {v.shape}) but key has {S} (shape {k.shape})")
    batch, layout = _batch_and_layout(q, k, v, bool(enable_gqa))
    scores = (_args.parse_scale(scale, E), _args.parse_softcap(softcap),
              _args.prepare_per_head(alibi_slopes, "alibi_slopes", batch, cdt),
              _args.prepare_per_head(sinks, "sinks", batch, cdt))
    return (L, S, Ev), batch, layout, scores


def _sdpa_general(q, k, v, dtype, storage, *, attn_mask, is_causal, scale, window, kv_lengths,
                  enable_gqa, return_weights, return_lse, out, num_threads, inputs,
                  softcap=None, alibi_slopes=None, sinks=None):
    """The general path of scaled_dot_product_attention on checked q, k, v.

    ``dtype`` is the result's dtype; ``storage`` the core's code for q, k, v
    held in 16 bits (``_args.half_storage_code``; 0 for float32/float64):
    then q, k, v may also be uint16 arrays of those bits, which is how
    pyattn.torch passes bfloat16 tensors without ml_dtypes (with ``dtype``
    float32, the compute dtype). ``inputs``: what the user passed, by name
    (``out`` may not overlap it).
    """
    (L, S, Ev), batch, layout, (scale, cap, slopes, sink) = _shapes_and_scores(
        q, k, v, enable_gqa, scale, softcap, alibi_slopes, sinks, _args.compute_dtype(dtype))
    call = _Call(
        dtype, batch, layout, L, S, Ev,
        attn_mask=attn_mask, is_causal=is_causal, window=window, kv_lengths=kv_lengths,
        return_weights=return_weights, return_lse=return_lse, out=out, num_threads=num_threads,
        inputs=dict({name: (inputs[name], a) for name, a in (("query", q), ("key", k), ("value", v))},
                    alibi_slopes=(alibi_slopes, slopes), sinks=(sinks, sink)),
    )
    # float16 / bfloat16 q, k, v are read (and widened) by the kernels in place.
    if storage:
        qc, kc, vc = (_args.for_core(a, a.dtype).view(np.uint16) for a in (q, k, v))
    else:
        qc, kc, vc = (_args.for_core(a, call.cdt) for a in (q, k, v))
    return call.run(_core.sdpa, (layout.query(qc), layout.kv(kc), layout.kv(vc)), scale, storage,
                    cap, layout.batched(slopes, 0), layout.batched(sink, 0))


# Storage codes of the core for keys/values stored apart from the query.
_KV_STORAGE = {"bfloat16": 2, "float16": 3, "int8": 4}


def _sdpa_over_stored_kv(query, key, value, kv_storage, key_scale=None, value_scale=None, *,
                         attn_mask=None, is_causal=False, scale=None, window=None, kv_lengths=None,
                         enable_gqa=False, return_weights=False, return_lse=False, out=None,
                         num_threads=None, softcap=None, alibi_slopes=None, sinks=None):
    """scaled_dot_product_attention of float query rows over keys and values
    stored apart from them (a KV cache, pyattn.KVCache): ``kv_storage`` is
    ``"bfloat16"`` or ``"float16"`` (key and value of that dtype) or
    ``"int8"`` (int8 codes with float32 scales ``key_scale (..., S)`` and
    ``value_scale (..., S)``: key j is ``key_scale[j] * key[j]``). The kernels
    read the stored form in place and compute in float32; the result and the
    weights have the query's dtype, lse is float32. The other arguments are
    scaled_dot_product_attention's. The caller (KVCache) has checked the
    storage dtypes."""
    arrays, dtype = _args.check_inputs({"query": query})
    q = arrays["query"]
    k, v = _args.as_array(key, "key"), _args.as_array(value, "value")
    f32 = np.dtype(np.float32)
    (L, S, Ev), batch, layout, (scale, cap, slopes, sink) = _shapes_and_scores(
        q, k, v, enable_gqa, scale, softcap, alibi_slopes, sinks, f32)
    call = _Call(
        dtype, batch, layout, L, S, Ev,
        attn_mask=attn_mask, is_causal=is_causal, window=window, kv_lengths=kv_lengths,
        return_weights=return_weights, return_lse=return_lse, out=out, num_threads=num_threads,
        inputs={"query": (query, q), "key": (key, k), "value": (value, v),
                "alibi_slopes": (alibi_slopes, slopes), "sinks": (sinks, sink)}, compute=f32,
    )
    storage = _KV_STORAGE[kv_storage]
    qc = _args.for_core(q, f32)
    if kv_storage == "int8":
        kc, vc = _args.for_core(k, np.dtype(np.int8)), _args.for_core(v, np.dtype(np.int8))
        # (..., S) -> (..., S, 1) float32 with contiguous positions
        ks, vs = (np.ascontiguousarray(a, dtype=f32)[..., None] for a in (key_scale, value_scale))
        scales = {"key_scale": layout.kv(ks), "value_scale": layout.kv(vs)}
    else:
        kc, vc = (_args.for_core(a, a.dtype).view(np.uint16) for a in (k, v))
        scales = {}

    def core(*args):
        return _core.sdpa(*args, float_query=True, **scales)

    return call.run(core, (layout.query(qc), layout.kv(kc), layout.kv(vc)), scale, storage,
                    cap, layout.batched(slopes, 0), layout.batched(sink, 0))
