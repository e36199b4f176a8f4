"""pyattn as an attention backend of Hugging Face transformers.

    >>> import pyattn.integrations.transformers as pt_hf
    >>> pt_hf.register()                    # once per process
    >>> model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="pyattn")
    >>> model.set_attn_implementation("pyattn")   # or switch a loaded model

``register(name)`` adds two functions under ``name``:

- the attention function (``AttentionInterface``), which every attention
  layer of a model calls with ``(module, query, key, value, attention_mask,
  dropout=, scaling=, ...)``, q/k/v as ``(batch, heads, len, head_dim)``, and
  which returns ``(batch, q_len, heads, head_dim)``;
- the mask function (``AttentionMaskInterface``): transformers only builds
  masks for implementations that have one -- without it a model would run
  with no padding or sliding-window mask at all. pyattn takes
  ``sdpa_mask``'s masks: boolean (True = may attend, what pyattn reads
  directly, one byte per score, padding-only masks as stride-0 expanded
  views), or None when the mask is plain causal or empty, which the attention
  function turns into pyattn's ``is_causal`` (no mask memory at all).

What the attention function does with the model's arguments:

- grouped-query heads: ``enable_gqa`` (key/value are never repeated);
- ``scaling``: the model's score scale; ``softcap`` (Gemma 2): pyattn's
  ``softcap``; ``s_aux`` (gpt-oss's learned sinks): pyattn's ``sinks``;
- ``sliding_window``: already part of the mask transformers builds for
  sliding layers (sdpa_mask returns None only when the window covers every
  key), so it needs nothing more;
- ``dropout`` must be 0 (inference; call ``model.eval()``);
- ``output_attentions=True`` (argument or config): the weights are returned;
- the result is written through pyattn's strided ``out`` into a
  ``(batch, q_len, heads, head_dim)`` buffer: no transpose copy.

Inference only: run the model under ``torch.inference_mode()`` or
``torch.no_grad()`` (``generate`` does); q/k/v that require grad are refused.
"""

from __future__ import annotations

import torch

from .. import _config
from .. import torch as _pt

__all__ = ["register", "attention_forward", "attention_mask"]


def attention_mask(*args, **kwargs):
    """The mask function registered with transformers' AttentionMaskInterface:
    transformers' own ``sdpa_mask`` (a boolean ``(batch, 1, q_len, kv_len)``
    mask, True = may attend, or None where ``is_causal`` says it all)."""
    from transformers.masking_utils import sdpa_mask

    return sdpa_mask(*args, **kwargs)


def _wants_weights(module, kwargs) -> bool:
    flag = kwargs.get("output_attentions")
    if flag is None:
        config = getattr(module, "config", None)
        flag = getattr(config, "output_attentions", False)
    return bool(flag)


def attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    softcap: float | None = None,
    s_aux: torch.Tensor | None = None,
    sliding_window: int | None = None,
    position_bias: torch.Tensor | None = None,
    **kwargs,
):
    """One attention layer of a transformers model, computed by pyattn.

    query ``(B, Hq, L, E)``, key ``(B, Hkv, S, E)``, value ``(B, Hkv, S, Ev)``
    -> ``(out (B, L, Hq, Ev), weights (B, Hq, L, S) or None)``.
    """
    if dropout:
        raise ValueError(
            f"attention dropout {dropout} requested: pyattn is inference only (call model.eval())")
    if position_bias is not None:
        raise ValueError("position_bias (T5-style relative bias) is not supported by the pyattn backend; "
                         "use attn_implementation='sdpa' or 'eager' for such models")
    B, Hq, L, _ = query.shape
    Hkv, S, Ev = key.shape[1], key.shape[2], value.shape[-1]
    if is_causal is None:
        is_causal = getattr(module, "is_causal", True)
    mask = attention_mask
    if mask is not None:
        if mask.shape[-1] > S:  # (a mask built for a longer cache than the keys given)
            mask = mask[..., :S]
        causal = False  # the mask holds causality (and padding, windows)
    else:
        # A plain causal mask was skipped: one query row (decoding) sees
        # every key; several rows are aligned upper-left, which is also right
        # for a static cache's first fill (keys after the prompt are empty).
        causal = bool(is_causal) and L > 1
    weights = _wants_weights(module, kwargs)
    buf = torch.empty((B, L, Hq, Ev), dtype=query.dtype)
    res = _pt.scaled_dot_product_attention(
        query, key, value, mask, 0.0, causal, scaling, Hq != Hkv,
        out=buf.transpose(1, 2), return_weights=weights, softcap=softcap, sinks=s_aux,
    )
    return buf, (res[1] if weights else None)


def register(name: str = "pyattn") -> str:
    """Registers pyattn's attention and mask functions with transformers under
    `name` (process-wide); then ``attn_implementation=name`` selects them.
    Returns `name`."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty string, got {name!r}")
    from transformers import AttentionInterface, AttentionMaskInterface

    _config.warn_if_several_openmp_runtimes(stacklevel=3)
    AttentionInterface.register(name, attention_forward)
    AttentionMaskInterface.register(name, attention_mask)
    return name
