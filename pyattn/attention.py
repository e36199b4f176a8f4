"""Public attention functions (the fast path through pyattn._core).

Each function turns its Python-typed options into plain values (_args.py)
and hands everything to the compiled core, which checks every argument rule
once (csrc/bindings/call_args.h: TypeError / ValueError naming the
argument), lays the arrays out as strided views and computes with the GIL
released. The score options (softcap, alibi_slopes, sinks) go to the core
as one dict, or None when none is set; the core reads it by its table of
score options (csrc/include/pyattn/score_options.h), which holds their
rules. The NumPy reference with the same signatures is pyattn.reference.
"""

from __future__ import annotations

from . import _args, _core

_NO_CAUSAL = _core.CAUSAL["none"]
_STORAGE = _core.STORAGE


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
    # (Identity tests first: this is part of every small call's cost.)
    left, right = (-1, -1) if window is None else _args.window_sides(window)
    return _core.sdpa(
        query, key, value, attn_mask,
        scale if scale is None or type(scale) is float else _args.real_or_none(scale, "scale"),
        _NO_CAUSAL if is_causal is False else _args.causal_code(is_causal), left, right,
        kv_lengths, out, return_weights, return_lse, enable_gqa,
        0 if num_threads is None else _args.thread_count(num_threads),
        None if softcap is None and alibi_slopes is None and sinks is None
        else {"softcap": softcap, "alibi_slopes": alibi_slopes, "sinks": sinks},
    )


def _sdpa_of_bits(query, key, value, bits, *, attn_mask=None, is_causal=False, scale=None, window=None,
                  kv_lengths=None, enable_gqa=False, return_weights=False, return_lse=False, out=None,
                  num_threads=None, **score_options):
    """scaled_dot_product_attention of q, k, v given as uint16 arrays holding
    bfloat16 or float16 bits (``bits``: "bfloat16" or "float16"; how
    pyattn.torch passes bfloat16 tensors without ml_dtypes): computed and
    returned in float32. ``score_options``: scaled_dot_product_attention's
    (the core refuses any other keyword)."""
    return _core.sdpa(
        query, key, value, attn_mask, _args.real_or_none(scale, "scale"), _args.causal_code(is_causal),
        *_args.window_sides(window), kv_lengths, out, return_weights, return_lse, enable_gqa,
        _args.thread_count(num_threads), score_options or None, _STORAGE[bits],
    )


def _sdpa_over_stored_kv(query, key, value, kv_storage, key_scale=None, value_scale=None, *,
                         attn_mask=None, is_causal=False, scale=None, window=None, kv_lengths=None,
                         enable_gqa=False, return_weights=False, return_lse=False, out=None,
                         num_threads=None, **score_options):
    """scaled_dot_product_attention of float query rows over keys and values
    stored apart from them (a KV cache, pyattn.KVCache): ``kv_storage`` is
    ``"bfloat16"`` or ``"float16"`` (key and value of that dtype) or
    ``"int8"`` (int8 codes with float32 scales ``key_scale (..., S)`` and
    ``value_scale (..., S)``: key j is ``key_scale[j] * key[j]``). The kernels
    read the stored form in place and compute in float32; the result and the
    weights have the query's dtype, lse is float32. The other arguments,
    ``score_options`` among them, are scaled_dot_product_attention's (the
    core refuses any other keyword). The caller (KVCache) has checked the
    storage dtypes."""
    return _core.sdpa_stored_kv(
        query, key, value, _STORAGE[kv_storage], key_scale, value_scale, attn_mask,
        _args.real_or_none(scale, "scale"), _args.causal_code(is_causal),
        *_args.window_sides(window), kv_lengths, out, return_weights, return_lse, enable_gqa,
        _args.thread_count(num_threads), score_options or None,
    )
