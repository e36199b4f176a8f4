"""ring_attention: exact attention over a sequence split across MPI ranks.

Each rank holds a shard of the queries, keys and values (rows along dim -2).
The key/value shards travel around the ring of ranks (rank r sends to
r + 1 and receives from r - 1) as raw buffers with non-blocking
point-to-point messages, while every rank computes its queries against the
keys it holds; the partial results are merged exactly (log-sum-exp
weights), so the output equals single-process attention up to rounding.

Memory: each shard is cut into m chunks (m grows with the shard's size, up
to MAX_CHUNKS) and the ring runs once per chunk index, so a rank holds its
own shard plus two chunk buffers (the one it computes on and sends on, the
one it receives) -- not whole extra shards.

Order: rank r takes, for chunk c = 0..m-1, chunk c of the shards of ranks
r, r-1, ..., r-P+1 (mod P). The order is fixed by the rank and the number
of ranks, never by message timing, so results are bitwise reproducible and
identical for every num_threads.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np

from .. import _args
from .._config import get_num_threads
from ..attention import scaled_dot_product_attention
from . import _mpi, _plan
from ._merge import RunningMerge

# A shard's keys + values are cut into chunks of at least this many bytes...
MIN_CHUNK_BYTES = 1 << 20
# ... and into at most this many chunks (each step also merges the rank's
# whole output once: fewer, larger chunks keep that cost small).
MAX_CHUNKS = 8

_TAG = 0x5A7  # on pyattn's private duplicate of the communicator


def num_chunks(max_rows: int, row_bytes: int) -> int:
    """m for shards of at most `max_rows` rows of `row_bytes` (keys + values)."""
    m = math.ceil(max_rows * row_bytes / MIN_CHUNK_BYTES)
    return max(1, min(m, MAX_CHUNKS, max_rows))


class _Local:
    """The checked arguments of one rank."""

    def __init__(self, query, key, value, is_causal, scale, layout, enable_gqa, num_threads):
        arrays, dtype = _mpi.check_float_inputs("ring_attention", query=query, key=key, value=value)
        q, k, v = arrays["query"], arrays["key"], arrays["value"]
        self.batch, L, S, E, Ev = _args.call_shape(q, k, v, enable_gqa)
        if S != L:
            raise ValueError(f"ring_attention: query, key and value are shards of one sequence and must "
                             f"have the same rows on a rank; query has {L} (shape {q.shape}), key {S}")
        self.scale = _args.scale_value(scale, E)
        self.causal = _args.causal_code(is_causal) != _args.CAUSAL["none"]
        if not isinstance(layout, str):
            raise TypeError(f"layout must be 'contiguous' or 'zigzag', got {type(layout).__name__}")
        if layout not in _plan.LAYOUTS:
            raise ValueError(f"layout must be 'contiguous' or 'zigzag', got {layout!r}")
        self.layout = layout
        self.gqa = bool(enable_gqa)
        self.threads = _args.thread_count(num_threads) or get_num_threads()
        _args.check_size(self.batch + (L, Ev), dtype.itemsize, "the result")
        self.q, self.k, self.v, self.dtype = q, k, v, dtype
        self.L, self.E, self.Ev = L, E, Ev

    FIELDS = [
        _mpi.Field("dtype", 1, "dtype"),
        _mpi.Field("is_causal", 1),
        _mpi.Field("layout (0 contiguous, 1 zigzag)", 1),
        _mpi.Field("enable_gqa", 1),
        _mpi.Field("scale", 1, "float"),
        _mpi.Field("query shape", _mpi.MAX_NDIM, "shape"),
        _mpi.Field("key shape", _mpi.MAX_NDIM, "shape"),
        _mpi.Field("value shape", _mpi.MAX_NDIM, "shape"),
        _mpi.Field("rows", 1, agree=False),
    ]

    def values(self):
        return [
            (_mpi.DTYPE_CODES[self.dtype],), (int(self.causal),), (_plan.LAYOUTS.index(self.layout),),
            (int(self.gqa),), _mpi.float_field(self.scale),
            _mpi.shape_field(self.q.shape, -2), _mpi.shape_field(self.k.shape, -2),
            _mpi.shape_field(self.v.shape, -2), (self.L,),
        ]


class _Geometry:
    """Who holds which rows, and the chunks that travel: the same on every rank."""

    def __init__(self, layout: str, lengths: list, rank: int, a: _Local):
        P = len(lengths)
        if layout == "zigzag" and (any(n != lengths[0] for n in lengths) or lengths[0] % 2):
            raise ValueError(f"ring_attention: layout='zigzag' needs the same even number of rows on "
                             f"every rank (2 of the 2P equal chunks of the sequence), got {lengths}")
        self.P, self.rank, self.lengths = P, rank, lengths
        self.segments = [_plan.shard_segments(layout, s, lengths) for s in range(P)]
        self.kbatch, self.vbatch = a.k.shape[:-2], a.v.shape[:-2]
        self.E, self.Ev, self.dtype = a.E, a.Ev, a.dtype
        self.k_items, self.v_items = math.prod(self.kbatch), math.prod(self.vbatch)
        row_bytes = (self.k_items * a.E + self.v_items * a.Ev) * a.dtype.itemsize
        self.m = num_chunks(max(lengths), row_bytes)
        self.pieces = [[_plan.chunk_pieces(self.segments[s], c, self.m) for c in range(self.m)]
                       for s in range(P)]
        self.max_rows = max(_plan.rows(p) for per_shard in self.pieces for p in per_shard)

    def steps(self):
        """(chunk c, hop t, owner s of the chunk held) in this rank's order."""
        for c in range(self.m):
            for t in range(self.P):
                yield c, t, (self.rank - t) % self.P

    def items(self, rows: int) -> int:
        return (self.k_items * self.E + self.v_items * self.Ev) * rows


class _ChunkBuffers:
    """Two flat buffers for one chunk's keys and values each (the chunk held
    and the chunk arriving), allocated at the largest chunk's size."""

    def __init__(self, geo: _Geometry):
        self.geo = geo
        self.flat = [np.empty(geo.items(geo.max_rows), geo.dtype) for _ in range(2)]

    def message(self, i: int, rows: int):
        return self.flat[i][: self.geo.items(rows)]

    def views(self, i: int, rows: int):
        geo = self.geo
        flat = self.message(i, rows)
        nk = geo.k_items * rows * geo.E
        k = flat[:nk].reshape(geo.kbatch + (rows, geo.E))
        v = flat[nk:].reshape(geo.vbatch + (rows, geo.Ev))
        return k, v

    def pack(self, i: int, k, v, segments, pieces):
        """Copies chunk `pieces` of a shard (k, v with `segments`) into buffer i."""
        kb, vb = self.views(i, _plan.rows(pieces))
        for src, dst, n in _plan.source_rows(segments, pieces):
            kb[..., dst:dst + n, :] = k[..., src:src + n, :]
            vb[..., dst:dst + n, :] = v[..., src:src + n, :]


# Partial outputs are computed into a scratch of at most this many bytes
# (calls of fewer query rows when the rank's rows need more), but of at
# least MIN_CALL_ROWS rows.
SCRATCH_BYTES = 8 << 20
MIN_CALL_ROWS = 256


class _RankAttention:
    """A rank's queries against one key chunk after another, merged as they come."""

    def __init__(self, a: _Local, q_segments):
        self.a, self.q_segments = a, q_segments
        self.merge = RunningMerge(a.batch, a.L, a.Ev, a.dtype)
        row_bytes = max(1, math.prod(a.batch) * a.Ev * a.dtype.itemsize)
        self.call_rows = max(MIN_CALL_ROWS, SCRATCH_BYTES // row_bytes)
        self.scratch = np.empty(a.batch + (min(a.L, self.call_rows), a.Ev), a.dtype)

    def attend(self, k, v, pieces):
        a = self.a
        for block in _plan.plan(self.q_segments, pieces, a.causal):
            for b in _plan.split_rows(block, self.call_rows):
                options = {}
                if b.diagonal == 0:
                    options["is_causal"] = True
                elif b.diagonal is not None:  # key j visible iff j <= i + d
                    options["window"] = (None, b.diagonal)
                out = self.scratch[..., :b.q_hi - b.q_lo, :]
                _, lse = scaled_dot_product_attention(
                    a.q[..., b.q_lo:b.q_hi, :], k[..., b.k_lo:b.k_hi, :], v[..., b.k_lo:b.k_hi, :],
                    scale=a.scale, enable_gqa=a.gqa, return_lse=True, out=out, num_threads=a.threads,
                    **options)
                self.merge.add(b.q_lo, b.q_hi, out, lse)


def _run(a: _Local, geo: _Geometry, exchange):
    """The ring from this rank's side; `exchange(c, t, bufs, held, arriving)`
    starts moving the held chunk on and the next one in, and returns a
    context manager that completes them on exit."""
    bufs = _ChunkBuffers(geo)
    att = _RankAttention(a, geo.segments[geo.rank])
    for u, (c, t, s) in enumerate(geo.steps()):
        held = u % 2
        pieces = geo.pieces[s][c]
        if t == 0:
            bufs.pack(held, a.k, a.v, geo.segments[geo.rank], pieces)
        with exchange(c, t, bufs, held, 1 - held):
            if _plan.rows(pieces):
                att.attend(*bufs.views(held, _plan.rows(pieces)), pieces)
    return att.merge.result()


def ring_attention(query, key, value, *, comm=None, is_causal=False, scale=None, layout="contiguous",
                   enable_gqa=False, return_lse=False, num_threads=None):
    """Attention over a sequence split along dim -2 across the ranks of `comm`.

    Call it on every rank of `comm` (collectively). Each rank passes its
    shard of the sequence -- query ``(..., L_r, E)``, key ``(..., L_r, E)``,
    value ``(..., L_r, Ev)`` -- and gets its rows of attention over the whole
    sequence: ``out (batch..., L_r, Ev)``, and with ``return_lse=True`` also
    ``lse (batch..., L_r)``.

    Args:
        comm: an mpi4py intra-communicator; None means ``MPI.COMM_WORLD``.
        is_causal: False, or True/"upper_left"/"lower_right" (the same here:
            queries and keys are one sequence): key position j is visible to
            query position i iff j <= i, in global positions.
        scale: defaults to ``1/sqrt(E)``; must be finite.
        layout: "contiguous": rank r holds rows ``[offset_r, offset_r + L_r)``
            in rank order (lengths may differ, 0 included); "zigzag": the
            sequence is cut into 2P equal chunks and rank r holds chunks r
            and 2P-1-r concatenated (every rank the same even L_r), which
            balances causal work.
        enable_gqa: grouped-query heads over dim -3, as in
            scaled_dot_product_attention.
        num_threads: threads of this rank's attention calls.

    float32 and float64; batch shapes, E, Ev, dtype, is_causal, layout,
    enable_gqa and scale must agree on every rank (else every rank raises the
    same ValueError). Results are bitwise identical for every num_threads.
    """
    comm = _mpi.private_comm(_mpi.resolve_comm(comm, "ring_attention"))
    try:
        a, error = _Local(query, key, value, is_causal, scale, layout, enable_gqa, num_threads), None
    except (TypeError, ValueError) as exc:
        a, error = None, exc
    gathered = _mpi.agree(comm, "ring_attention", _Local.FIELDS, a and a.values(), error)
    lengths = [v[0] for v in gathered[-1]]
    geo = _Geometry(a.layout, lengths, comm.Get_rank(), a)
    P, r = geo.P, geo.rank
    left, right = (r - 1) % P, (r + 1) % P

    def exchange(c, t, bufs, held, arriving):
        if t == P - 1:
            return contextlib.nullcontext()  # the chunk held goes back to its owner: no further
        send_rows = _plan.rows(geo.pieces[(r - t) % P][c])
        recv_rows = _plan.rows(geo.pieces[(r - t - 1) % P][c])
        requests = []
        if recv_rows:
            requests.append(comm.Irecv(bufs.message(arriving, recv_rows), source=left, tag=_TAG))
        if send_rows:
            requests.append(comm.Isend(bufs.message(held, send_rows), dest=right, tag=_TAG))
        return _mpi.Transfers(requests)

    out, lse = _run(a, geo, exchange)
    return (out, lse) if return_lse else out


def replay(query, key_shards, value_shards, rank, *, is_causal=False, scale=None, layout="contiguous",
           enable_gqa=False, return_lse=False, num_threads=None):
    """What ring_attention computes on `rank`, in one process: the same
    attention calls and merges in the same order, with every rank's key and
    value shard given (``key_shards[s]``, ``value_shards[s]``) instead of
    received. Bitwise equal to ring_attention on that rank of a ring of
    ``len(key_shards)`` ranks. For tests and for timing the computation
    without communication. Only `rank`'s own arguments are checked; the
    other shards must have the same batch shapes and feature sizes."""
    a = _Local(query, key_shards[rank], value_shards[rank], is_causal, scale, layout, enable_gqa,
               num_threads)
    lengths = [np.shape(k)[-2] for k in key_shards]
    geo = _Geometry(a.layout, lengths, rank, a)
    P = geo.P

    def exchange(c, t, bufs, held, arriving):
        if t < P - 1:
            s = (rank - t - 1) % P
            bufs.pack(arriving, np.asarray(key_shards[s]), np.asarray(value_shards[s]), geo.segments[s],
                      geo.pieces[s][c])
        return contextlib.nullcontext()

    out, lse = _run(a, geo, exchange)
    return (out, lse) if return_lse else out
