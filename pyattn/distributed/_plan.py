"""Which rows a rank holds, how the key shards are cut into chunks for the
ring, and which attention calls a (query shard, key chunk) pair needs.

Pure Python over integers (no MPI), shared by the ring and by its
single-process replay. Positions are global sequence positions; "local"
rows count from 0 in a rank's shard (queries) or in a chunk (keys). A shard
or chunk is a tuple of segments in local order, each a run of consecutive
global positions, and local order always follows global order.
"""

from __future__ import annotations

from typing import NamedTuple

LAYOUTS = ("contiguous", "zigzag")


class Segment(NamedTuple):
    start: int  # global position of its first row
    length: int
    local: int  # row of the shard (or chunk) where it begins


def shard_segments(layout: str, rank: int, lengths) -> tuple:
    """The segments of `rank`'s shard; `lengths` lists every rank's rows.

    contiguous: rank r holds [sum(lengths[:r]), + lengths[r]).
    zigzag: the sequence is 2P chunks of C = lengths[r] // 2 rows (equal on
    every rank); rank r holds chunks r and 2P - 1 - r.
    """
    if layout == "contiguous":
        return (Segment(sum(lengths[:rank]), lengths[rank], 0),)
    P, C = len(lengths), lengths[rank] // 2
    return (Segment(rank * C, C, 0), Segment((2 * P - 1 - rank) * C, C, C))


def chunk_pieces(segments, c: int, m: int) -> tuple:
    """Chunk `c` of `m` of a shard: the c-th m-th of EACH segment (so every
    chunk of a zigzag shard has rows of both halves and the ranks' work
    stays balanced step by step). Returns segments in chunk-local rows; each
    piece's source row in the shard is its `start` mapped back through
    `source_rows`."""
    out, local = [], 0
    for seg in segments:
        lo, hi = seg.length * c // m, seg.length * (c + 1) // m
        if hi > lo:
            out.append(Segment(seg.start + lo, hi - lo, local))
            local += hi - lo
    return tuple(out)


def source_rows(segments, pieces) -> list:
    """(shard row, chunk row, length) copies that pack `pieces` (from
    chunk_pieces of `segments`) into a chunk."""
    copies = []
    for p in pieces:
        seg = next(s for s in segments if s.start <= p.start < s.start + s.length)
        copies.append((seg.local + p.start - seg.start, p.local, p.length))
    return copies


def rows(pieces) -> int:
    return sum(p.length for p in pieces)


class Block(NamedTuple):
    """One attention call: query rows [q_lo, q_hi) of the shard against key
    rows [k_lo, k_hi) of the chunk. `diagonal` None: every key visible to
    every row. Otherwise (an int >= 0) key j is visible to query i iff
    j - k_lo <= i - q_lo + diagonal (causal with global positions)."""

    q_lo: int
    q_hi: int
    k_lo: int
    k_hi: int
    diagonal: int | None


def plan(q_segments, k_pieces, causal: bool) -> list:
    """The calls that cover exactly the visible (query, key) pairs, each
    once: pairs hidden by causality are skipped, pairs fully visible are
    joined into as few unmasked calls as possible."""
    nq, nk = rows(q_segments), rows(k_pieces)
    if nq == 0 or nk == 0:
        return []
    if not causal:
        return [Block(0, nq, 0, nk, None)]
    full, partial = [], []
    for qs in q_segments:
        for ks in k_pieces:
            if qs.length == 0 or ks.length == 0:
                continue
            d = qs.start - ks.start  # key j visible to row i iff j <= i + d
            if d <= -qs.length:
                continue  # even the last query row precedes the first key
            q_lo = qs.local
            if d < 0:  # the first -d rows see none of these keys: left out
                q_lo, d = q_lo - d, 0
            rect = (q_lo, qs.local + qs.length, ks.local, ks.local + ks.length)
            if d >= ks.length - 1:
                full.append(rect)
            else:
                partial.append(Block(*rect, d))
    return [Block(*r, None) for r in _join(full)] + partial


def split_rows(block: Block, max_rows: int) -> list:
    """`block` as calls of at most `max_rows` query rows each (same pairs)."""
    out = []
    for lo in range(block.q_lo, block.q_hi, max_rows):
        hi = min(lo + max_rows, block.q_hi)
        d = None if block.diagonal is None else block.diagonal + lo - block.q_lo
        if d is not None and d >= block.k_hi - block.k_lo - 1:
            d = None  # from this row on every key of the block is visible
        out.append(Block(lo, hi, block.k_lo, block.k_hi, d))
    return out


def _join(rects: list) -> list:
    """Joins rectangles (q_lo, q_hi, k_lo, k_hi) that share one side and
    touch along the other, until none can be joined; sorted result."""
    rects = sorted(rects)
    joined = True
    while joined:
        joined = False
        for a in range(len(rects)):
            for b in range(len(rects)):
                if a == b:
                    continue
                qa0, qa1, ka0, ka1 = rects[a]
                qb0, qb1, kb0, kb1 = rects[b]
                if (ka0, ka1) == (kb0, kb1) and qa1 == qb0:
                    new = (qa0, qb1, ka0, ka1)
                elif (qa0, qa1) == (qb0, qb1) and ka1 == kb0:
                    new = (qa0, qa1, ka0, kb1)
                else:
                    continue
                rects = sorted([r for i, r in enumerate(rects) if i not in (a, b)] + [new])
                joined = True
                break
            if joined:
                break
    return rects
