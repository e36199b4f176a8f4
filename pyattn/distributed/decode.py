"""sharded_decode: attention of one query over a KV cache split across ranks.

Each rank attends the query to its own keys (one local call, no
communication), then the ranks exchange their partial (out, lse) with one
Allgather of a single buffer and every rank merges the P parts in rank
order with pyattn.merge_attention_states. The merge is exact, and since
every rank merges the same bytes in the same order, every rank gets the
same bits (an Allreduce would let the MPI library choose a different
reduction order per rank). The parts are small -- the query's rows times
Ev, not the keys -- so gathering all of them costs little.
"""

from __future__ import annotations

import numpy as np

from .. import _args
from ..attention import scaled_dot_product_attention
from ..merge import merge_attention_states
from . import _mpi

_FIELDS = [
    _mpi.Field("dtype", 1, "dtype"),
    _mpi.Field("enable_gqa", 1),
    _mpi.Field("scale", 1, "float"),
    _mpi.Field("query shape", _mpi.MAX_NDIM, "shape"),
    _mpi.Field("result shape", _mpi.MAX_NDIM, "shape"),
]


def _local_part(query, key, value, kv_lengths, enable_gqa, scale, num_threads):
    arrays, dtype = _mpi.check_float_inputs("sharded_decode", query=query, key=key, value=value)
    q = arrays["query"]
    scale = _args.scale_value(scale, q.shape[-1])
    out, lse = scaled_dot_product_attention(query, key, value, kv_lengths=kv_lengths, enable_gqa=enable_gqa,
                                            scale=scale, return_lse=True, num_threads=num_threads)
    values = [(_mpi.DTYPE_CODES[dtype],), (int(bool(enable_gqa)),), _mpi.float_field(scale),
              _mpi.shape_field(q.shape), _mpi.shape_field(out.shape)]
    return out, lse, values


def sharded_decode(query, key, value, *, comm=None, kv_lengths=None, enable_gqa=False, scale=None,
                   return_lse=False, num_threads=None):
    """Attention of the same query over keys/values split across the ranks of `comm`.

    Call it on every rank of `comm` (collectively) with the same query
    ``(..., L, E)`` and the rank's own keys ``(..., S_r, E)`` and values
    ``(..., S_r, Ev)`` (S_r may differ by rank, 0 included). ``kv_lengths``
    counts the rank's own valid keys per batch element (its first
    ``kv_lengths`` keys), as in scaled_dot_product_attention. Every rank
    gets the attention over all ranks' valid keys -- the same bits on every
    rank: ``out (batch..., L, Ev)``, and with ``return_lse=True`` also
    ``lse (batch..., L)``. A rank with no valid key contributes nothing;
    a row that sees no key on any rank gets zeros and ``lse = -inf``.

    float32 and float64. The dtype, query shape, result shape, enable_gqa and
    scale must agree on every rank, else every rank raises the same
    ValueError.
    """
    comm = _mpi.private_comm(_mpi.resolve_comm(comm, "sharded_decode"))
    try:
        out, lse, values = _local_part(query, key, value, kv_lengths, enable_gqa, scale, num_threads)
        error = None
    except (TypeError, ValueError) as exc:
        values, error = None, exc
    _mpi.agree(comm, "sharded_decode", _FIELDS, values, error)

    Ev = out.shape[-1]
    mine = np.empty(out.shape[:-1] + (Ev + 1,), out.dtype)  # [out | lse] in one message
    mine[..., :Ev] = out
    mine[..., Ev] = lse
    parts = np.empty((comm.Get_size(),) + mine.shape, mine.dtype)
    comm.Allgather(mine, parts)
    out, lse = merge_attention_states([p[..., :Ev] for p in parts], [p[..., Ev] for p in parts])
    return (out, lse) if return_lse else out
