"""Ring attention across MPI ranks: time, hidden communication, memory per rank.

    mpiexec -n 2 python benchmarks/bench_distributed.py             # S = 32768, B=1, H=8, E=64
    mpiexec -n 4 python benchmarks/bench_distributed.py --cases causal-zigzag

For each case every rank runs, each timed from a barrier to the slowest
rank's end (the wall time of the collective call):

- total: ``ring_attention`` on the rank's shard (K/V passed around the ring);
- compute: the same attention calls and merges in the same order on the same
  data, every K/V shard already present (``pyattn.distributed.ring.replay``;
  its result is checked to be bitwise the ring's);
- comm: the ring's messages alone (same chunks, same order), no computation;
- hidden = 1 - (total - compute) / comm: the share of the communication time
  that the computation covered.

Then ``sharded_decode`` of one token over a 32768-key cache split across the
ranks, beside the rank's local attention call alone (the difference is the
exchange of the parts and the merge).

Memory per rank: peak RSS of the process (ru_maxrss) after the ring call, and
the bytes NumPy allocated during the call (tracemalloc's peak: chunk buffers,
the output and the merge state), beside the K/V of the whole sequence in one
process and the rank's own K/V shard. Each rank makes its own shard from a
seed (no rank ever holds the whole sequence, except for the compute-only
replay, which runs after the memory is read).

Use --threads 1 per rank on a shared machine (ranks x threads <= cores).
Not collected by pytest: the run needs mpiexec.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
import tracemalloc

import numpy as np

CASES = {
    "full-contiguous": dict(is_causal=False, layout="contiguous"),
    "causal-zigzag": dict(is_causal=True, layout="zigzag"),
    "causal-contiguous": dict(is_causal=True, layout="contiguous"),
}


def reset_peak_rss() -> bool:
    """Linux: restart the process's peak-RSS counter (VmHWM), so the next
    reading is the peak of what follows, not of the whole process life."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib(since_reset: bool) -> float:
    if since_reset:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def shard(seed: int, shape, dtype):
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32).astype(dtype, copy=False)


def comm_only(comm, geo, ring):
    """The ring's exchanges (same chunks, same order, same buffers) without computing."""
    from pyattn.distributed import _mpi, _plan

    P, r = geo.P, geo.rank
    bufs = ring._ChunkBuffers(geo)
    for u, (c, t, s) in enumerate(geo.steps()):
        held = u % 2
        if t == P - 1:
            continue
        send_rows = _plan.rows(geo.pieces[s][c])
        recv_rows = _plan.rows(geo.pieces[(r - t - 1) % P][c])
        reqs = []
        if recv_rows:
            reqs.append(comm.Irecv(bufs.message(1 - held, recv_rows), source=(r - 1) % P, tag=1))
        if send_rows:
            reqs.append(comm.Isend(bufs.message(held, send_rows), dest=(r + 1) % P, tag=1))
        with _mpi.Transfers(reqs):
            pass


def decode_table(comm, MPI, args):
    """sharded_decode of one token over a cache of --decode-keys keys split
    across the ranks, beside the same local call without the exchange."""
    import pyattn
    from pyattn.distributed import sharded_decode

    P, r = comm.Get_size(), comm.Get_rank()
    S_r = args.decode_keys // P
    hq, hkv, E = 32, 8, 128
    q = shard(7, (1, hq, 1, E), np.float32)  # the same query on every rank
    k = shard(100 + 2 * r, (1, hkv, S_r, E), np.float32)
    v = shard(101 + 2 * r, (1, hkv, S_r, E), np.float32)
    lengths = np.array([S_r - r])  # a few invalid keys at the end of some ranks' caches
    times = {"sharded_decode": [], "local call only": [], "its 2 Allgathers only": []}
    private = __import__("pyattn.distributed._mpi", fromlist=["_"]).private_comm(comm)
    meta = np.zeros(1 + 3 + 2 * 64, np.int64)  # the argument summary, then the [out | lse] parts
    part = np.zeros((1, hq, 1, E + 1), np.float32)
    metas, parts = np.empty((P,) + meta.shape, meta.dtype), np.empty((P,) + part.shape, part.dtype)
    for _ in range(args.decode_calls):  # alternating, medians
        comm.Barrier()
        t0 = time.perf_counter()
        sharded_decode(q, k, v, kv_lengths=lengths, enable_gqa=True, num_threads=args.threads, comm=comm)
        times["sharded_decode"].append(comm.allreduce(time.perf_counter() - t0, op=MPI.MAX))
        comm.Barrier()
        t0 = time.perf_counter()
        pyattn.scaled_dot_product_attention(q, k, v, kv_lengths=lengths, enable_gqa=True, return_lse=True,
                                            num_threads=args.threads)
        times["local call only"].append(comm.allreduce(time.perf_counter() - t0, op=MPI.MAX))
        comm.Barrier()
        t0 = time.perf_counter()
        private.Allgather(meta, metas)
        private.Allgather(part, parts)
        times["its 2 Allgathers only"].append(comm.allreduce(time.perf_counter() - t0, op=MPI.MAX))
    if r == 0:
        print()
        print(f"sharded_decode: 1 query token, Hq={hq}, Hkv={hkv}, E=Ev={E}, float32, {args.decode_keys} keys in "
              f"all ({S_r} per rank), median of {args.decode_calls} calls (slowest rank)")
        for name, ts in times.items():
            print(f"  {name:<22} {1e6 * float(np.median(ts)):9.0f} us")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq", type=int, default=32768, help="whole sequence length S")
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--dim", type=int, default=64, help="E = Ev")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--threads", type=int, default=1, help="num_threads of each rank")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated: " + ", ".join(CASES))
    parser.add_argument("--repeats", type=int, default=2, help="rounds of (ring, compute-only); the table shows minima")
    parser.add_argument("--decode-keys", type=int, default=32768, help="keys of the sharded_decode case (0: skip it)")
    parser.add_argument("--decode-calls", type=int, default=50)
    args = parser.parse_args()

    from mpi4py import MPI

    import pyattn
    from pyattn.bench.machine import cpu_name
    from pyattn.distributed import ring, ring_attention

    comm = MPI.COMM_WORLD
    P, r = comm.Get_size(), comm.Get_rank()
    S, H, E, dtype = args.seq, args.heads, args.dim, np.dtype(args.dtype)
    if S % (2 * P):
        raise SystemExit(f"--seq {S} must be a multiple of 2 x ranks = {2 * P}")
    Lr = S // P
    kv_total = 2 * S * H * E * dtype.itemsize  # keys + values of the whole sequence
    if r == 0:
        print(f"CPU: {cpu_name()} ({os.cpu_count()} logical CPUs); MPI: {MPI.Get_library_version().splitlines()[0]}")
        print(f"ranks {P}, S={S}, B=1, H={H}, E=Ev={E}, {dtype}, num_threads={args.threads} per rank, "
              f"pyattn ISA {pyattn.get_config()['isa']}; load average before: {os.getloadavg()}")
        print(f"K/V of the whole sequence in one process: {kv_total / 2**20:.0f} MiB; "
              f"one rank's K/V shard: {kv_total / P / 2**20:.0f} MiB")
        print()
        print(f"{'case':<18} {'total s':>8} {'compute s':>9} {'comm s':>7} {'total/compute':>13} {'hidden':>7} "
              f"{'chunks':>6} {'ring buffers MiB':>16} {'numpy peak MiB':>14} {'peak RSS MiB':>12}   total/compute per round")
    for name in [c for c in args.cases.split(",") if c]:
        case = CASES[name]
        shape = (1, H, Lr, E)
        # rank s's shard of q, k, v from seeds 3s, 3s+1, 3s+2 (for the replay, any rank can make any shard)
        q = shard(3 * r, shape, dtype)
        k = shard(3 * r + 1, shape, dtype)
        v = shard(3 * r + 2, shape, dtype)
        a = ring._Local(q, k, v, case["is_causal"], None, case["layout"], False, args.threads)
        geo = ring._Geometry(case["layout"], [Lr] * P, r, a)
        private = ring._mpi.private_comm(comm)
        comm.Barrier()
        t0 = time.perf_counter()
        comm_only(private, geo, ring)
        t_comm = comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)

        t_ring, t_compute, same = [], [], True
        for rep in range(args.repeats):  # ring and replay alternate: load from elsewhere falls on both
            comm.Barrier()
            if rep == 0:
                since_reset = reset_peak_rss()
                tracemalloc.start()
                before = tracemalloc.get_traced_memory()[0]
            comm.Barrier()
            t0 = time.perf_counter()
            out = ring_attention(q, k, v, comm=comm, num_threads=args.threads, **case)
            t_ring.append(comm.allreduce(time.perf_counter() - t0, op=MPI.MAX))
            if rep == 0:
                numpy_peak = tracemalloc.get_traced_memory()[1] - before
                tracemalloc.stop()
                rss = peak_rss_mib(since_reset)

            ks = [shard(3 * s + 1, shape, dtype) for s in range(P)]
            vs = [shard(3 * s + 2, shape, dtype) for s in range(P)]
            comm.Barrier()
            t0 = time.perf_counter()
            again = ring.replay(q, ks, vs, r, num_threads=args.threads, **case)
            t_compute.append(comm.allreduce(time.perf_counter() - t0, op=MPI.MAX))
            same = comm.allreduce(bool(np.array_equal(out, again)), op=MPI.LAND) and same
            del ks, vs, again, out
        ratios = [a / b for a, b in zip(t_ring, t_compute)]
        t_ring, t_compute = min(t_ring), min(t_compute)

        numpy_peak = comm.allreduce(numpy_peak, op=MPI.MAX)
        rss = comm.allreduce(rss, op=MPI.MAX)
        chunk_bytes = geo.items(geo.max_rows) * dtype.itemsize
        if r == 0:
            hidden = 1 - (t_ring - t_compute) / t_comm if t_comm > 0 else float("nan")
            print(f"{name:<18} {t_ring:8.2f} {t_compute:9.2f} {t_comm:7.3f} {t_ring / t_compute:13.3f} "
                  f"{min(max(hidden, 0.0), 1.0):7.0%} {geo.m:6d} {2 * chunk_bytes / 2**20:16.1f} "
                  f"{numpy_peak / 2**20:14.1f} {rss:12.0f}   " + " ".join(f"{x:.3f}" for x in ratios)
                  + ("" if same else "  RING != REPLAY"), flush=True)
    if args.decode_keys:
        decode_table(comm, MPI, args)
    if r == 0:
        print()
        print(f"load average after: {os.getloadavg()}")
        print("total, compute, comm: slowest rank, from a barrier, the minimum over the rounds; hidden = "
              "1 - (total - compute) / comm (clipped to [0, 1]; meaningless when comm is below the timing noise); "
              "ring buffers: the two chunk buffers; numpy peak: largest rank's NumPy allocations during "
              "ring_attention (buffers, output, merge state, temporaries); peak RSS: largest rank's peak resident "
              "memory during the ring call (interpreter, libraries and its q/k/v shard included)")


if __name__ == "__main__":
    main()
