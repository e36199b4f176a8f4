"""Run under mpiexec by tests/test_distributed.py: every rank runs every
scenario of pyattn.distributed and checks it against single-process pyattn.

Each rank draws the full sequence from the scenario's seed, takes its shard,
calls the distributed function (at num_threads=1 and 2), and computes the
single-process result itself: a float64 pyattn call on the whole sequence,
the reference of the float tolerances. Rank 0 prints one line
``RESULTS <json>``: for every scenario, every rank's findings. The pytest
side asserts on them, so a failure names the scenario and the rank.

    mpiexec -n 3 python tests/mpi_worker.py
"""

from __future__ import annotations

import json
import sys
import traceback

import numpy as np
from mpi4py import MPI

import pyattn
import pyattn.distributed.ring as ring_module
from pyattn.distributed import ring_attention, sharded_decode
from pyattn.distributed.ring import replay

COMM = MPI.COMM_WORLD
P, RANK = COMM.Get_size(), COMM.Get_rank()

# Section 7 of the contract: float32 against float64, float64 against float64.
TOL = {np.dtype(np.float32): dict(rtol=2e-5, atol=2e-6), np.dtype(np.float64): dict(rtol=1e-12, atol=1e-12)}


def compare(actual, expected, dtype):
    """Findings of one comparison with the dtype's tolerance (no NaN in these cases)."""
    tol = TOL[np.dtype(dtype)]
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    same_inf = np.array_equal(np.isneginf(actual), np.isneginf(expected))
    a, e = np.where(np.isneginf(actual), 0, actual), np.where(np.isneginf(expected), 0, expected)
    err = float(np.abs(a - e).max(initial=0))
    return {"close": bool(same_inf and actual.shape == expected.shape and np.allclose(a, e, **tol)),
            "max_abs_err": err}


def shard_rows(layout, lengths):
    """Global row indices of every rank's shard."""
    if layout == "contiguous":
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        return [np.arange(bounds[r], bounds[r + 1]) for r in range(P)]
    C = lengths[0] // 2
    return [np.r_[r * C:(r + 1) * C, (2 * P - 1 - r) * C:(2 * P - r) * C] for r in range(P)]


def ring_case(name, *, lengths, layout="contiguous", causal=False, dtype=np.float32, batch=(2, 3), hkv=None,
              E=16, Ev=8, kv_batch=None, strided=False, chunk_bytes=None, call_rows=None, seed=0):
    return dict(kind="ring", name=name, lengths=lengths, layout=layout, causal=causal, dtype=dtype,
                batch=batch, hkv=hkv, E=E, Ev=Ev, kv_batch=kv_batch, strided=strided, chunk_bytes=chunk_bytes,
                call_rows=call_rows, seed=seed)


def run_ring(c):
    dtype = np.dtype(c["dtype"])
    rng = np.random.default_rng(c["seed"])
    S = sum(c["lengths"])
    qb = tuple(c["batch"])
    kb = tuple(c["kv_batch"]) if c["kv_batch"] else qb[:-1] + ((c["hkv"] or qb[-1]),)
    q = rng.standard_normal(qb + (S, c["E"]))
    k = rng.standard_normal(kb + (S, c["E"]))
    v = rng.standard_normal(kb + (S, c["Ev"]))
    gqa = c["hkv"] is not None
    ref, ref_lse = pyattn.scaled_dot_product_attention(q, k, v, is_causal=c["causal"], enable_gqa=gqa,
                                                       return_lse=True)
    rows = shard_rows(c["layout"], c["lengths"])
    mine = rows[RANK]
    q, k, v = (a.astype(dtype) for a in (q, k, v))
    qs, ks, vs = (np.ascontiguousarray(a[..., mine, :]) for a in (q, k, v))
    if c["strided"]:  # a query shard read through a transposed view, as split from a fused projection
        qs = np.ascontiguousarray(np.swapaxes(qs, -2, -3)).swapaxes(-2, -3)
        assert not qs.flags.c_contiguous
    saved = ring_module.MIN_CHUNK_BYTES, ring_module.SCRATCH_BYTES, ring_module.MIN_CALL_ROWS
    if c["chunk_bytes"]:
        ring_module.MIN_CHUNK_BYTES = c["chunk_bytes"]
    if c["call_rows"]:  # each call's partial output in a scratch of call_rows query rows
        ring_module.SCRATCH_BYTES, ring_module.MIN_CALL_ROWS = 1, c["call_rows"]
    try:
        kw = dict(is_causal=c["causal"], layout=c["layout"], enable_gqa=gqa, return_lse=True)
        out1, lse1 = ring_attention(qs, ks, vs, num_threads=1, **kw)
        out2, lse2 = ring_attention(qs, ks, vs, num_threads=2, **kw)
        out_r, lse_r = replay(qs, [k[..., r, :] for r in rows], [v[..., r, :] for r in rows], RANK,
                              num_threads=1, **kw)
        m = ring_module.num_chunks(max(c["lengths"]),
                                   (int(np.prod(kb)) * (c["E"] + c["Ev"])) * dtype.itemsize)
    finally:
        ring_module.MIN_CHUNK_BYTES, ring_module.SCRATCH_BYTES, ring_module.MIN_CALL_ROWS = saved
    out_check = compare(out1, ref[..., mine, :], dtype)
    lse_check = compare(lse1, ref_lse[..., mine], dtype)
    return {
        "out_close": out_check["close"], "out_err": out_check["max_abs_err"],
        "lse_close": lse_check["close"], "lse_err": lse_check["max_abs_err"],
        "dtype_ok": out1.dtype == dtype and lse1.dtype == dtype,
        "shape_ok": out1.shape == ref[..., mine, :].shape,
        "bitwise_threads": bool(np.array_equal(out1, out2) and np.array_equal(lse1, lse2)),
        "bitwise_replay": bool(np.array_equal(out1, out_r) and np.array_equal(lse1, lse_r)),
        "chunks": m,
    }


def decode_case(name, *, S, valid, L=1, dtype=np.float32, batch=(2, 4), hkv=None, E=16, Ev=16, seed=0):
    """`S[r]` keys on rank r, `valid[r]` (None or one length per batch element) of them valid."""
    return dict(kind="decode", name=name, S=S, valid=valid, L=L, dtype=dtype, batch=batch, hkv=hkv, E=E, Ev=Ev,
                seed=seed)


def run_decode(c):
    dtype = np.dtype(c["dtype"])
    rng = np.random.default_rng(c["seed"])
    qb = tuple(c["batch"])
    kb = qb[:-1] + ((c["hkv"] or qb[-1]),)
    q = rng.standard_normal(qb + (c["L"], c["E"]))
    ks = [rng.standard_normal(kb + (c["S"][r], c["E"])) for r in range(P)]
    vs = [rng.standard_normal(kb + (c["S"][r], c["Ev"])) for r in range(P)]
    # The single-process call: all ranks' keys concatenated, invalid ones masked out.
    visible = []
    for r in range(P):
        n = c["valid"][r]
        pos = np.arange(c["S"][r])
        vis = np.ones((qb[0], c["S"][r]), bool) if n is None else pos[None, :] < np.asarray(n)[:, None]
        visible.append(vis)
    mask = np.concatenate(visible, axis=1)[:, None, None, :]
    gqa = c["hkv"] is not None
    ref, ref_lse = pyattn.scaled_dot_product_attention(q, np.concatenate(ks, -2), np.concatenate(vs, -2),
                                                       attn_mask=mask, enable_gqa=gqa, return_lse=True)
    n = c["valid"][RANK]
    lengths = None if n is None else np.asarray(n, np.int64)
    args = (q.astype(dtype), ks[RANK].astype(dtype), vs[RANK].astype(dtype))
    out1, lse1 = sharded_decode(*args, kv_lengths=lengths, enable_gqa=gqa, return_lse=True, num_threads=1)
    out2, lse2 = sharded_decode(*args, kv_lengths=lengths, enable_gqa=gqa, return_lse=True, num_threads=2)
    out_check, lse_check = compare(out1, ref, dtype), compare(lse1, ref_lse, dtype)
    # Every rank must hold the same bits: compare with rank 0's.
    first = COMM.bcast((out1.tobytes(), lse1.tobytes()), root=0)
    return {
        "out_close": out_check["close"], "out_err": out_check["max_abs_err"],
        "lse_close": lse_check["close"], "lse_err": lse_check["max_abs_err"],
        "dtype_ok": out1.dtype == dtype and lse1.dtype == dtype,
        "shape_ok": out1.shape == ref.shape,
        "bitwise_threads": bool(np.array_equal(out1, out2) and np.array_equal(lse1, lse2)),
        "same_on_all_ranks": first == (out1.tobytes(), lse1.tobytes()),
        "nan_free": bool(np.isfinite(out1).all() and not np.isnan(lse1).any()),
        "rows_without_keys_ok": bool(np.all(out1[np.isneginf(ref_lse)] == 0)
                                     and np.all(np.isneginf(lse1[np.isneginf(ref_lse)]))),
    }


def error_case(name, fn):
    return dict(kind="error", name=name, fn=fn)


def run_error(c):
    """Every rank must raise (none may wait forever for the others)."""
    try:
        c["fn"]()
    except (TypeError, ValueError) as exc:
        return {"raised": type(exc).__name__, "message": str(exc)}
    return {"raised": None, "message": ""}


def _f32(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def scenarios():
    uneven = [1 if r == 0 else 0 if r == 1 and P >= 3 else 3 * r + 2 for r in range(P)]
    cases = [
        ring_case("contiguous", lengths=[5] * P),
        ring_case("contiguous-causal-uneven", lengths=uneven, causal=True),
        ring_case("contiguous-lower_right-float64-uneven", lengths=uneven[::-1], causal="lower_right",
                  dtype=np.float64, seed=1),
        ring_case("contiguous-causal-length1", lengths=[1] * P, causal=True, seed=2),
        ring_case("contiguous-causal-gqa-float64", lengths=[4 + r for r in range(P)], causal=True,
                  dtype=np.float64, batch=(2, 4), hkv=2, seed=3),
        ring_case("contiguous-kv-broadcast-strided", lengths=[6] * P, causal=True, batch=(2, 3), kv_batch=(1, 3),
                  strided=True, seed=4),
        ring_case("zigzag", lengths=[4] * P, layout="zigzag", seed=5),
        ring_case("zigzag-causal-gqa", lengths=[6] * P, layout="zigzag", causal=True, batch=(1, 6), hkv=3,
                  seed=6),
        ring_case("zigzag-causal-float64-length2", lengths=[2] * P, layout="zigzag", causal=True,
                  dtype=np.float64, seed=7),
        # Small chunks: each shard travels in up to 8 pieces (the zigzag halves split alike).
        ring_case("zigzag-causal-chunked", lengths=[14] * P, layout="zigzag", causal=True, chunk_bytes=512,
                  seed=8),
        ring_case("contiguous-causal-chunked-uneven", lengths=[9 + 4 * r for r in range(P)], causal=True,
                  dtype=np.float64, chunk_bytes=512, seed=9),
        ring_case("zigzag-causal-chunked-row-groups", lengths=[10] * P, layout="zigzag", causal=True,
                  chunk_bytes=512, call_rows=3, seed=14),
        # Large enough for several chunks at the default chunk size.
        ring_case("contiguous-causal-default-chunks", lengths=[600] * P, causal=True, batch=(1, 8), E=64,
                  Ev=64, seed=10),
        decode_case("decode", S=[7 + r for r in range(P)], valid=[None] * P),
        decode_case("decode-lengths-empty-rank-gqa", S=[6] * P, hkv=2,
                    valid=[[3, 6] if r != 1 else [0, 0] for r in range(P)], seed=11),
        decode_case("decode-row-without-keys", S=[5] * P, valid=[[0, 5 - r] for r in range(P)], seed=12),
        decode_case("decode-float64-multirow-zero-keys", S=[0 if r == P - 1 else 4 for r in range(P)],
                    valid=[None] * P, L=3, dtype=np.float64, Ev=5, seed=13),
        error_case("error-feature-size-on-one-rank",
                   lambda: ring_attention(_f32(2, 4, 8), _f32(2, 4, 8 if RANK else 6), _f32(2, 4, 8))),
        error_case("error-scale-differs",
                   lambda: ring_attention(_f32(2, 4, 8), _f32(2, 4, 8), _f32(2, 4, 8),
                                          scale=0.5 if RANK == P - 1 else None)),
        error_case("error-zigzag-odd-rows",
                   lambda: ring_attention(_f32(3, 8), _f32(3, 8), _f32(3, 8), layout="zigzag")),
        error_case("error-integer-dtype-on-one-rank",
                   lambda: ring_attention(_f32(4, 8) if RANK else np.ones((4, 8), np.int32), _f32(4, 8),
                                          _f32(4, 8))),
        error_case("error-decode-kv_lengths-too-long",
                   lambda: sharded_decode(_f32(2, 1, 8), _f32(2, 3, 8), _f32(2, 3, 8),
                                          kv_lengths=np.array([1, 4 if RANK == 0 else 2]))),
        error_case("error-decode-query-differs",
                   lambda: sharded_decode(_f32(2, 1 + (RANK == 1), 8), _f32(2, 3, 8), _f32(2, 3, 8))),
    ]
    return cases


def main():
    results = {}
    for c in scenarios():
        try:
            found = {"ring": run_ring, "decode": run_decode, "error": run_error}[c["kind"]](c)
        except Exception:  # reported, and the next scenario still runs on every rank
            found = {"exception": traceback.format_exc()}
        results[c["name"]] = found
        COMM.Barrier()
    gathered = COMM.gather(results, root=0)
    if RANK == 0:
        print("RESULTS " + json.dumps({"ranks": P, "per_rank": gathered}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
