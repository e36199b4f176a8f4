"""pyattn for PyTorch: CPU tensors in, tensors out.

    >>> import torch, pyattn.torch as pt
    >>> q = k = v = torch.randn(2, 8, 128, 64)
    >>> out = pt.scaled_dot_product_attention(q, k, v, is_causal=True)

``scaled_dot_product_attention`` takes ``torch.nn.functional.scaled_dot_product_attention``'s
positional signature and conventions (boolean mask True = may attend, float
mask added to the scores, ``is_causal=True`` aligned upper-left, ``scale``
defaulting to ``1/sqrt(E)``, ``enable_gqa``) plus pyattn's own options as
keywords. ``additive_attention``, ``merge_attention_states`` and, where the
installed pyattn has it, ``varlen_attention`` take the NumPy functions'
signatures. The full contract is docs/torch.md.

Tensors and memory:

- q, k, v, masks, lengths and ``out`` must be CPU tensors; a tensor on another
  device is a ValueError naming it. q, k, v must all be tensors (NumPy arrays
  go to the ``pyattn`` functions); masks, lengths, slopes and sinks may also be
  NumPy arrays or lists.
- Inference only: a tensor that requires grad while grad mode is on is a
  ValueError (use ``torch.no_grad()`` / ``torch.inference_mode()``);
  ``dropout_p`` must be 0.
- float32 and float64 tensors are read in place (any strides whose last
  dimension has unit stride) and the results are tensors sharing the memory
  pyattn wrote (``torch.from_numpy``). float16 and bfloat16 q, k, v are read
  in place too -- bfloat16 as its 16-bit pattern, so NumPy needs no bfloat16
  type -- computed in float32 and converted to their dtype by torch.
- ``out`` may be any writable tensor of the result's shape and dtype,
  including a strided view (e.g. ``buf.transpose(1, 2)`` of a
  ``(batch, L, heads, Ev)`` buffer): float32/float64 results are written into
  it directly, float16/bfloat16 ones converted into it.

Importing this module imports torch; ``import pyattn`` alone does not.
"""

from __future__ import annotations

import numpy as np
import torch

from . import _args, _config
from . import additive as _additive
from . import attention as _attention
from . import merge as _merge

__all__ = [
    "scaled_dot_product_attention",
    "additive_attention",
    "merge_attention_states",
    "varlen_attention",
]

# torch has loaded its OpenMP runtime by now: a second one beside pyattn's is
# a thread pool spinning beside the other's work (docs/torch.md).
_config.warn_if_several_openmp_runtimes(stacklevel=2)

_NUMPY_VIEWABLE = (torch.float32, torch.float64, torch.float16)
_FLOATS = _NUMPY_VIEWABLE + (torch.bfloat16,)
_FLOAT_NAMES = "float32, float64, float16 or bfloat16"


def _check_tensor(t, name: str) -> torch.Tensor:
    """A CPU tensor usable without autograd; TypeError/ValueError naming `name`."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor, got {type(t).__name__} "
            "(pyattn.torch takes tensors; NumPy arrays go to the pyattn functions)"
        )
    if not t.is_cpu:
        raise ValueError(f"{name} is on device '{t.device}'; pyattn computes on the CPU: pass {name}.cpu()")
    if t.requires_grad and torch.is_grad_enabled():
        raise ValueError(
            f"{name} requires grad: pyattn is inference only (no backward); call it under "
            "torch.no_grad() or torch.inference_mode(), or pass a detached tensor"
        )
    return t


def _numpy(t: torch.Tensor) -> np.ndarray:
    """The tensor's memory as an ndarray with its strides (no copy)."""
    if t.requires_grad:
        t = t.detach()
    return t.resolve_neg().numpy() if t.is_neg() else t.numpy()


def _bits(t: torch.Tensor) -> np.ndarray:
    """A bfloat16 tensor's memory as a uint16 ndarray of its bit patterns (no copy)."""
    return t.detach().view(torch.int16).numpy().view(np.uint16)


def _optional(x, name: str, bf16_to=np.float32):
    """An optional array argument (mask, lengths, slopes, sinks): a CPU tensor
    as an ndarray sharing its memory (bfloat16 converted to `bf16_to`), or
    anything else unchanged for pyattn to check."""
    if not isinstance(x, torch.Tensor):
        return x
    _check_tensor(x, name)
    if x.dtype == torch.bfloat16:
        return _numpy(x.to(torch.float32)).astype(bf16_to, copy=False)
    return _numpy(x)


def _inputs(named: dict) -> tuple[dict, torch.dtype]:
    """Checks q-like tensors: CPU, no grad, one float dtype, at least 2-D."""
    dtype = None
    for name, t in named.items():
        _check_tensor(t, name)
        if dtype is None:
            dtype = t.dtype
        if t.dtype is not dtype or dtype not in _FLOATS:
            if t.dtype not in _FLOATS:
                raise TypeError(f"{name}: dtype {t.dtype} is not supported; expected {_FLOAT_NAMES}")
            raise TypeError(
                f"{', '.join(named)} must share one dtype, got "
                + ", ".join(f"{n}: {x.dtype}" for n, x in named.items())
            )
        if t.dim() < 2:
            raise ValueError(f"{name} must have at least 2 dimensions (..., rows, features), got shape {tuple(t.shape)}")
    return named, dtype


def _out_tensor(out, dtype: torch.dtype) -> torch.Tensor:
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"out must be a torch.Tensor, got {type(out).__name__}")
    _check_tensor(out, "out")
    if out.dtype != dtype:
        raise TypeError(f"out has dtype {out.dtype}; the result has dtype {dtype}")
    return out


def _tensor(a):
    """A result ndarray as a tensor sharing its memory."""
    return torch.from_numpy(a)


def _results(res, dtype: torch.dtype, out: torch.Tensor | None, n_extra_same_dtype: int):
    """pyattn's (out[, weights][, lse]) as tensors: the first 1 +
    `n_extra_same_dtype` in `dtype` (converted by torch when pyattn returned
    float32 for a 16-bit dtype), the rest (lse) as returned."""
    parts = res if isinstance(res, tuple) else (res,)
    tensors = []
    for i, a in enumerate(parts):
        t = _tensor(a)
        if i <= n_extra_same_dtype and t.dtype != dtype:
            if i == 0 and out is not None:
                out.copy_(t)
                t = out
            else:
                t = t.to(dtype)
        elif i == 0 and out is not None:
            t = out  # pyattn wrote into out's memory
        tensors.append(t)
    return tensors[0] if len(tensors) == 1 else tuple(tensors)


def _score_options(options: dict) -> dict:
    """The score options (softcap, alibi_slopes, sinks, ...) as pyattn takes
    them: tensors as arrays, anything else unchanged."""
    return {name: _optional(x, name) for name, x in options.items()}


def _bf16_out_check(out: torch.Tensor, named: dict) -> None:
    """ValueError if a bfloat16 `out` shares memory with an input tensor (the
    float32 result is converted into it, so pyattn itself never sees it)."""
    o = _bits(out)
    for name, t in named.items():
        if isinstance(t, torch.Tensor) and t.dtype == torch.bfloat16:
            _args.check_out(o, o.shape, o.dtype, {name: (_bits(t),)})


def scaled_dot_product_attention(
    query,
    key,
    value,
    attn_mask=None,
    dropout_p=0.0,
    is_causal=False,
    scale=None,
    enable_gqa=False,
    *,
    window=None,
    kv_lengths=None,
    return_weights=False,
    return_lse=False,
    out=None,
    num_threads=None,
    **score_options,
):
    """``torch.nn.functional.scaled_dot_product_attention`` on CPU tensors,
    computed by pyattn (inference only).

    Shapes: query ``(..., L, E)``, key ``(..., S, E)``, value ``(..., S, Ev)``
    -> ``(batch..., L, Ev)``, the batch dims broadcast; with ``enable_gqa``
    key/value have ``Hkv`` heads on dim -3 dividing query's ``Hq``.

    Args (torch's, positional as in torch):
        attn_mask: bool (True = may attend) or float (added to the scores)
            tensor, broadcastable to ``(batch..., L, S)``.
        dropout_p: must be 0.0 (ValueError otherwise).
        is_causal: ``True`` (upper-left, torch's), ``"upper_left"``,
            ``"lower_right"`` (KV-cache decoding) or ``False``. Unlike torch,
            it combines with ``attn_mask`` (both apply).
        scale: defaults to ``1/sqrt(E)``.
        enable_gqa: grouped-query heads without repeating key/value.

    pyattn's options (keyword only): ``window``, ``kv_lengths``,
    ``return_weights``, ``return_lse``, ``out`` (a tensor, also a strided
    view; returned itself), ``num_threads``, and ``score_options``: the
    score variants of ``pyattn.scaled_dot_product_attention`` (``softcap``,
    ``alibi_slopes``, ``sinks``), arrays as tensors or arrays -- see there.

    Returns:
        a tensor, or ``(out[, weights][, lse])`` tensors; ``weights`` in the
        inputs' dtype, ``lse`` float32 (float64 for float64 inputs).
    """
    if dropout_p != 0.0:
        raise ValueError(f"dropout_p must be 0.0: pyattn is inference only, got {dropout_p!r}")
    named, dtype = _inputs({"query": query, "key": key, "value": value})
    if out is not None:
        out = _out_tensor(out, dtype)
    options = dict(
        attn_mask=_optional(attn_mask, "attn_mask"), is_causal=is_causal, scale=scale,
        window=window, kv_lengths=_optional(kv_lengths, "kv_lengths"), enable_gqa=enable_gqa,
        return_weights=return_weights, return_lse=return_lse, num_threads=num_threads,
        **_score_options(score_options),
    )
    if dtype in _NUMPY_VIEWABLE:
        q, k, v = (_numpy(t) for t in (query, key, value))
        if out is not None:
            options["out"] = _numpy(out)
        res = _attention.scaled_dot_product_attention(q, k, v, **options)
    else:  # bfloat16: its bits, computed in float32, converted back by torch
        if out is not None:
            _bf16_out_check(out, named)
        q, k, v = (_bits(t) for t in (query, key, value))
        res = _attention._sdpa_of_bits(q, k, v, "bfloat16", **options)
    return _results(res, dtype, out, 1 if return_weights else 0)


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
    """``pyattn.additive_attention`` (Bahdanau) on CPU tensors.

    float32/float64/float16 tensors are read in place; bfloat16 ones are
    widened to float32 by torch first (a copy) and the results converted
    back. ``out`` may be a tensor (also a strided view)."""
    named, dtype = _inputs({"query": query, "key": key, "value": value})
    params = {}
    for name, p in (("v_a", v_a), ("w_query", w_query), ("w_key", w_key), ("bias", bias)):
        if isinstance(p, torch.Tensor):
            _check_tensor(p, name)
            if p.dtype != dtype:
                raise TypeError(f"{name} has dtype {p.dtype}; query has {dtype}")
        params[name] = p
    if out is not None:
        out = _out_tensor(out, dtype)
    wide = dtype == torch.bfloat16

    def arr(t):
        if not isinstance(t, torch.Tensor):
            return t
        return _numpy(t.to(torch.float32) if wide else t)

    options = dict(
        w_query=arr(params["w_query"]), w_key=arr(params["w_key"]), bias=arr(params["bias"]),
        attn_mask=_optional(attn_mask, "attn_mask"), is_causal=is_causal, window=window,
        kv_lengths=_optional(kv_lengths, "kv_lengths"), return_weights=return_weights,
        return_lse=return_lse, num_threads=num_threads,
    )
    if out is not None and not wide:
        options["out"] = _numpy(out)
    elif out is not None:
        _bf16_out_check(out, dict(named, **{n: p for n, p in params.items() if p is not None}))
    res = _additive.additive_attention(arr(query), arr(key), arr(value), arr(params["v_a"]), **options)
    return _results(res, dtype, out, 1 if return_weights else 0)


def merge_attention_states(outputs, lses, *, sinks=None):
    """``pyattn.merge_attention_states`` on tensors: ``(out, lse)`` tensors,
    ``out`` in the outputs' dtype (bfloat16 ones merged in float32 and
    converted back), ``lse`` float32 (float64 for float64 outputs)."""
    outputs, lses = list(outputs), list(lses)
    if not outputs:
        raise ValueError("outputs must be a sequence of at least 1 tensor")
    named, dtype = _inputs({f"outputs[{i}]": o for i, o in enumerate(outputs)})
    for i, x in enumerate(lses):
        _check_tensor(x, f"lses[{i}]")
    wide = dtype == torch.bfloat16
    outs = [_numpy(o.to(torch.float32) if wide else o) for o in outputs]
    ls = [_numpy(x.to(torch.float32) if x.dtype == torch.bfloat16 else x) for x in lses]
    kwargs = {} if sinks is None else {"sinks": _optional(sinks, "sinks")}
    out, lse = _merge.merge_attention_states(outs, ls, **kwargs)
    out = _tensor(out)
    return (out.to(dtype) if out.dtype != dtype else out), _tensor(lse)


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
    return_lse=False,
    out=None,
    num_threads=None,
    **score_options,
):
    """``pyattn.varlen_attention`` (packed sequences, flash-attention's
    layout) on CPU tensors: query ``(total_q, Hq, E)``, key/value
    ``(total_k, Hkv, E/Ev)``, ``cu_seqlens_*`` integer tensors or arrays;
    ``score_options``: its score variants (``softcap``, ``alibi_slopes``,
    ``sinks``), arrays as tensors or arrays.
    float32/float64/float16 tensors are read in place; bfloat16 ones are
    widened to float32 by torch first and the result converted back."""
    from . import varlen_attention as _varlen  # (AttributeError if this build lacks it)

    named, dtype = _inputs({"query": query, "key": key, "value": value})
    if out is not None:
        out = _out_tensor(out, dtype)
    wide = dtype == torch.bfloat16
    q, k, v = (_numpy(t.to(torch.float32) if wide else t) for t in (query, key, value))
    options = dict(
        is_causal=is_causal, scale=scale, window=window, return_lse=return_lse,
        num_threads=num_threads, **_score_options(score_options),
    )
    if out is not None and not wide:
        options["out"] = _numpy(out)
    elif out is not None:
        _bf16_out_check(out, named)
    res = _varlen(q, k, v, _optional(cu_seqlens_q, "cu_seqlens_q"), _optional(cu_seqlens_k, "cu_seqlens_k"),
                  **options)
    return _results(res, dtype, out, 0)
