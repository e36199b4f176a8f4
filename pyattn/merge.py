"""merge_attention_states: exact combination of attention over key chunks."""

from __future__ import annotations

import numpy as np

from . import _args


def merge_attention_states(outputs, lses, *, sinks=None):
    """Combines attention computed over disjoint key chunks (docs/api.md
    section 3; ``sinks``: docs/score_variants.md).

    Args:
        outputs: sequence of P >= 1 arrays ``(..., L, Ev)``, one per chunk.
        lses: sequence of P arrays ``(..., L)``: each chunk's log-sum-exp
            (``return_lse=True``), ``-inf`` where the chunk had no visible key.

    Returns:
        ``(out, lse)`` with ``lse = logsumexp_p(lse_p)`` and
        ``out = sum_p exp(lse_p - lse) * out_p``: attention over the
        concatenated keys. Parts with ``lse_p = -inf`` contribute nothing,
        whatever their output holds (even NaN); if every part is ``-inf``,
        ``out = 0`` and ``lse = -inf``. ``out`` has the outputs' dtype, ``lse``
        float32 (float64 for float64 outputs); computed in float32 / float64.
        With sinks, a row no part saw a key for gets ``out = 0`` and
        ``lse = sink``.
    """
    outputs, lses = list(outputs), list(lses)
    if not outputs or len(outputs) != len(lses):
        raise ValueError(f"outputs and lses must be sequences of the same length >= 1, "
                         f"got {len(outputs)} and {len(lses)}")
    outs = [_args.as_array(o, f"outputs[{i}]") for i, o in enumerate(outputs)]
    ls = [_args.as_array(x, f"lses[{i}]") for i, x in enumerate(lses)]
    dtype = outs[0].dtype
    for name, arrays in (("outputs", outs), ("lses", ls)):
        for i, a in enumerate(arrays):
            if not _args.is_float_dtype(a.dtype):
                raise TypeError(f"{name}[{i}]: dtype {a.dtype} is not a supported float dtype")
    shape = outs[0].shape
    if len(shape) < 1:
        raise ValueError("outputs[0] must have at least 1 dimension (..., L, Ev)")
    for i, (o, x) in enumerate(zip(outs, ls)):
        if o.shape != shape:
            raise ValueError(f"outputs[{i}] has shape {o.shape}; outputs[0] has {shape}")
        if x.shape != shape[:-1]:
            raise ValueError(f"lses[{i}] has shape {x.shape}; expected {shape[:-1]} (outputs without Ev)")
    cdt = _args.compute_dtype(dtype)
    sink = None
    if sinks is not None:
        if len(shape) < 2:
            raise ValueError(f"sinks need outputs of at least 2 dimensions (..., L, Ev), got shape {shape}")
        sink = _args.prepare_per_head(sinks, "sinks", shape[:-2], cdt)[..., None]  # against (..., L)

    with np.errstate(invalid="ignore", over="ignore"):
        ls = [np.asarray(x, dtype=cdt) for x in ls]
        m = ls[0].copy()
        for x in ls[1:]:
            np.maximum(m, x, out=m)
        if sink is not None:  # the sink: one more part, with no value vector
            np.maximum(m, sink, out=m)
        empty = m == -np.inf
        m[empty] = 0  # subtract 0 where nothing is visible: exp(-inf) = 0
        total = np.zeros(shape[:-1], cdt) if sink is None else np.exp(sink - m)
        acc = np.zeros(shape, cdt)
        for o, x in zip(outs, ls):
            w = np.exp(x - m)
            total += w
            # where= keeps a chunk with w == 0 out entirely (its out may be NaN).
            np.add(acc, w[..., None] * o, out=acc, where=(w != 0)[..., None])
        lse = np.where(empty, -np.inf, m + np.log(np.where(empty, 1, total)))
        out = np.divide(acc, total[..., None], out=np.zeros_like(acc), where=~empty[..., None])
    return out.astype(dtype, copy=False), lse.astype(cdt, copy=False)
