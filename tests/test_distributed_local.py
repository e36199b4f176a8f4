"""pyattn.distributed within one process: the import rules, the ring's plan
of calls, its running merge, the single-process replay of any rank of a
ring of any size, and calls on a communicator of one rank (MPI's COMM_SELF).
The runs across real processes are in test_distributed.py.
"""

import itertools
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from helpers import tolerance

import pyattn


def _run(code):
    """`code` in a fresh interpreter that imports the same pyattn as this one."""
    package_parent = str(pathlib.Path(pyattn.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
    # cwd: `python -c` puts it first on sys.path, where a source checkout's
    # pyattn (without the built extension) would shadow the installed one.
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=package_parent,
                          env=env, timeout=120)


def test_import_pyattn_does_not_import_mpi4py():
    res = _run("import sys, pyattn; print('mpi4py' in sys.modules, 'pyattn.distributed' in sys.modules)")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["False", "False"]


def test_missing_mpi4py_names_the_extra():
    res = _run("import sys; sys.modules['mpi4py'] = None\n"
               "try:\n    import pyattn.distributed\nexcept ImportError as e:\n    print('ImportError:', e)")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("ImportError:") and 'pip install "pyattn[mpi]"' in res.stdout, res.stdout


mpi4py = pytest.importorskip("mpi4py", reason="pyattn.distributed needs the 'mpi' extra (pip install \".[mpi]\")")

from pyattn.distributed import _plan, ring, ring_attention, sharded_decode  # noqa: E402
from pyattn.distributed._merge import RunningMerge  # noqa: E402


# --- the plan of calls ---------------------------------------------------

def _global_rows(segments):
    return np.concatenate([np.arange(s.start, s.start + s.length) for s in segments] or [np.zeros(0, int)])


def _block_visible(b, nq, nk):
    """Which (query row, chunk key) pairs block b computes, and whether its rule makes them visible."""
    covered = np.zeros((nq, nk), bool)
    i = np.arange(nq)[:, None]
    j = np.arange(nk)[None, :]
    inside = (i >= b.q_lo) & (i < b.q_hi) & (j >= b.k_lo) & (j < b.k_hi)
    if b.diagonal is None:
        covered |= inside
    else:
        covered |= inside & (j - b.k_lo <= i - b.q_lo + b.diagonal)
    return covered, inside


LAYOUT_CASES = [
    ("contiguous", [5, 0, 1, 7]), ("contiguous", [1, 1, 1]), ("contiguous", [3, 8]), ("contiguous", [0, 4]),
    ("zigzag", [4, 4, 4]), ("zigzag", [2, 2]), ("zigzag", [6, 6, 6, 6]), ("zigzag", [0, 0]),
]


@pytest.mark.parametrize("layout,lengths", LAYOUT_CASES)
@pytest.mark.parametrize("m", [1, 2, 3, 8])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("call_rows", [1, 2, 1000])
def test_plan_covers_exactly_the_visible_pairs(layout, lengths, m, causal, call_rows):
    """For every (rank, shard, chunk): the calls compute every visible
    (query, key) pair exactly once, nothing hidden, and a call without a
    diagonal is entirely visible (so it runs without any mask) -- also when
    the calls are cut into groups of `call_rows` query rows."""
    P = len(lengths)
    segs = [_plan.shard_segments(layout, s, lengths) for s in range(P)]
    everything = np.sort(np.concatenate([_global_rows(s) for s in segs]))
    assert np.array_equal(everything, np.arange(sum(lengths))), "the shards must tile the sequence"
    for r, s in itertools.product(range(P), range(P)):
        q_pos = _global_rows(segs[r])
        seen_keys = []
        for c in range(m):
            pieces = _plan.chunk_pieces(segs[s], c, m)
            k_pos = _global_rows(pieces)
            seen_keys.append(k_pos)
            want = np.ones((len(q_pos), len(k_pos)), bool)
            if causal:
                want = k_pos[None, :] <= q_pos[:, None]
            got = np.zeros_like(want, dtype=int)
            calls = [b for block in _plan.plan(segs[r], pieces, causal) for b in _plan.split_rows(block, call_rows)]
            for b in calls:
                assert b.q_hi - b.q_lo <= call_rows and (b.diagonal is None or b.diagonal >= 0)
                covered, inside = _block_visible(b, len(q_pos), len(k_pos))
                got += covered
                if b.diagonal is None:
                    assert want[inside].all(), f"unmasked block {b} holds hidden pairs"
            assert np.array_equal(got, want.astype(int)), (r, s, c)
            # packing: the copies put each piece's rows where the chunk expects them
            copies = _plan.source_rows(segs[s], pieces)
            shard_pos = _global_rows(segs[s])
            rebuilt = np.empty(len(k_pos), int)
            for src, dst, n in copies:
                rebuilt[dst:dst + n] = shard_pos[src:src + n]
            assert np.array_equal(rebuilt, k_pos)
        assert np.array_equal(np.sort(np.concatenate(seen_keys)), np.sort(_global_rows(segs[s])))


def test_plan_zigzag_is_one_call_per_other_shard_and_balanced():
    """Zigzag: against another rank's chunk a rank makes one unmasked call,
    and every rank computes the same number of pairs at every step."""
    P, C, m = 4, 8, 4
    lengths = [2 * C] * P
    segs = [_plan.shard_segments("zigzag", s, lengths) for s in range(P)]
    for c, t in itertools.product(range(m), range(1, P)):
        work = []
        for r in range(P):
            blocks = _plan.plan(segs[r], _plan.chunk_pieces(segs[(r - t) % P], c, m), True)
            assert len(blocks) == 1 and blocks[0].diagonal is None
            b = blocks[0]
            work.append((b.q_hi - b.q_lo) * (b.k_hi - b.k_lo))
        assert len(set(work)) == 1, work


def test_num_chunks():
    assert ring.num_chunks(0, 100) == 1
    assert ring.num_chunks(10, 1) == 1
    assert ring.num_chunks(3, ring.MIN_CHUNK_BYTES) == 3  # never more chunks than rows
    assert ring.num_chunks(1 << 20, 1 << 10) == ring.MAX_CHUNKS


# --- the running merge ---------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_running_merge_equals_merge_attention_states(dtype):
    rng = np.random.default_rng(0)
    L, Ev, parts = 7, 5, 4
    outs = [rng.standard_normal((2, L, Ev)).astype(dtype) for _ in range(parts)]
    lses = [(3 * rng.standard_normal((2, L))).astype(dtype) for _ in range(parts)]
    # rows no part sees, a part that sees nothing in some rows (its output there is NaN, ignored)
    for p in range(parts):
        lses[p][0, 1] = -np.inf
    lses[1][1, :3] = -np.inf
    outs[1][1, :3] = np.nan
    want_out, want_lse = pyattn.merge_attention_states(outs, lses)
    rm = RunningMerge((2,), L, Ev, np.dtype(dtype))
    for o, x in zip(outs, lses):  # as two row ranges, like blocks of a ring step
        rm.add(0, 4, o[:, :4].copy(), x[:, :4])
        rm.add(4, L, o[:, 4:].copy(), x[:, 4:])
    out, lse = rm.result()
    assert out.dtype == dtype and lse.dtype == dtype
    assert np.all(out[0, 1] == 0) and np.isneginf(lse[0, 1])
    np.testing.assert_allclose(out, want_out, **tolerance(dtype))
    np.testing.assert_allclose(lse, want_lse, **tolerance(dtype))


# --- the replay of a rank's calls, for rings of any size -------------------

def _shard_rows(layout, lengths, P):
    if layout == "contiguous":
        b = np.concatenate([[0], np.cumsum(lengths)])
        return [np.arange(b[r], b[r + 1]) for r in range(P)]
    C = lengths[0] // 2
    return [np.r_[r * C:(r + 1) * C, (2 * P - 1 - r) * C:(2 * P - r) * C] for r in range(P)]


@pytest.mark.parametrize("P", [1, 2, 3, 4])
@pytest.mark.parametrize("layout", ["contiguous", "zigzag"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_replay_matches_single_process(P, layout, causal, dtype, monkeypatch):
    """Every rank's rows of a ring of P ranks (replayed in this process,
    with small chunks so shards are cut in pieces, and calls of 4 query
    rows) against one sdpa call.
    (The kernels under every ISA are tested by the sdpa tests; this tests
    how the ring composes them.)"""
    monkeypatch.setattr(ring, "MIN_CHUNK_BYTES", 256)
    monkeypatch.setattr(ring, "SCRATCH_BYTES", 1)  # calls of 4 query rows
    monkeypatch.setattr(ring, "MIN_CALL_ROWS", 4)
    rng = np.random.default_rng(P)
    lengths = [6] * P if layout == "zigzag" else [int(x) for x in rng.integers(0, 9, P)]
    S = sum(lengths)
    q = rng.standard_normal((2, 4, S, 24))
    k = rng.standard_normal((2, 2, S, 24))
    v = rng.standard_normal((2, 2, S, 9))
    want, want_lse = pyattn.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True,
                                                         return_lse=True)
    rows = _shard_rows(layout, lengths, P)
    q, k, v = (a.astype(dtype) for a in (q, k, v))
    for r in range(P):
        out, lse = ring.replay(q[..., rows[r], :], [k[..., i, :] for i in rows], [v[..., i, :] for i in rows], r,
                               is_causal=causal, layout=layout, enable_gqa=True, return_lse=True)
        np.testing.assert_allclose(out, want[..., rows[r], :], **tolerance(dtype))
        np.testing.assert_allclose(lse, want_lse[..., rows[r]], **tolerance(dtype))
        if r == P - 1:
            again = ring.replay(q[..., rows[r], :], [k[..., i, :] for i in rows], [v[..., i, :] for i in rows], r,
                                is_causal=causal, layout=layout, enable_gqa=True, num_threads=2)
            assert np.array_equal(out, again)


# --- one rank: COMM_SELF ---------------------------------------------------

def test_one_rank_is_plain_attention():
    from mpi4py import MPI

    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((2, 3, 10, 8)) for _ in range(3))
    for causal in (False, True):
        got = ring_attention(q, k, v, comm=MPI.COMM_SELF, is_causal=causal)
        np.testing.assert_allclose(got, pyattn.scaled_dot_product_attention(q, k, v, is_causal=causal),
                                   **tolerance(np.float64))
    lengths = np.array([0, 7])
    got, lse = sharded_decode(q[..., :1, :], k, v, comm=MPI.COMM_SELF, kv_lengths=lengths, return_lse=True)
    want, want_lse = pyattn.scaled_dot_product_attention(q[..., :1, :], k, v, kv_lengths=lengths, return_lse=True)
    assert np.array_equal(got, want) and np.array_equal(lse, want_lse)
    assert np.all(got[0] == 0) and np.all(np.isneginf(lse[0]))


def test_argument_errors_on_one_rank():
    from mpi4py import MPI

    q = np.zeros((4, 8), np.float32)
    self = MPI.COMM_SELF
    with pytest.raises(TypeError, match="comm must be an mpi4py intra-communicator"):
        ring_attention(q, q, q, comm="world")
    with pytest.raises(ValueError, match="layout must be 'contiguous' or 'zigzag'"):
        ring_attention(q, q, q, comm=self, layout="striped")
    with pytest.raises(TypeError, match="layout"):
        ring_attention(q, q, q, comm=self, layout=1)
    with pytest.raises(ValueError, match="same rows on a rank"):
        ring_attention(q, q[:3], q[:3], comm=self)
    with pytest.raises(TypeError, match="float32 or float64"):
        ring_attention(q.astype(np.float16), q.astype(np.float16), q.astype(np.float16), comm=self)
    with pytest.raises(TypeError, match="share one dtype"):
        ring_attention(q, q.astype(np.float64), q, comm=self)
    with pytest.raises(ValueError, match="is_causal"):
        ring_attention(q, q, q, comm=self, is_causal="diagonal")
    with pytest.raises(ValueError, match="scale must be finite"):
        ring_attention(q, q, q, comm=self, scale=float("nan"))
    with pytest.raises(ValueError, match="num_threads"):
        ring_attention(q, q, q, comm=self, num_threads=0)
    with pytest.raises(ValueError, match="must divide"):
        ring_attention(np.zeros((3, 4, 8), np.float32), np.zeros((2, 4, 8), np.float32),
                       np.zeros((2, 4, 8), np.float32), comm=self, enable_gqa=True)
    with pytest.raises(TypeError, match="kv_lengths must be an integer array"):
        sharded_decode(q[:1], q, q, comm=self, kv_lengths=np.array([1.0]))
    with pytest.raises(TypeError, match="float32 or float64"):
        sharded_decode(q[:1].astype(np.float16), q.astype(np.float16), q.astype(np.float16), comm=self)
