"""The MPI side of pyattn.distributed: mpi4py, a private communicator,
argument agreement across ranks and background progress of transfers.

Everything that talks to MPI besides the ring's and the decode's own data
exchange lives here. Array data always travels as buffers (numpy arrays
handed to the upper-case mpi4py methods), never as pickles.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from .. import _args

try:
    from mpi4py import MPI
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "pyattn.distributed needs mpi4py and an MPI library; install them with "
        "`pip install \"pyattn[mpi]\"` (mpi4py and the MPICH wheel), or install mpi4py "
        f"built against your cluster's MPI. (The import failed with: {exc})"
    ) from exc


def resolve_comm(comm, who: str):
    """`comm`, or COMM_WORLD for None; TypeError for anything that is not an
    mpi4py intra-communicator (this cannot be agreed on across ranks)."""
    if comm is None:
        return MPI.COMM_WORLD
    if not isinstance(comm, MPI.Intracomm):
        raise TypeError(f"{who}: comm must be an mpi4py intra-communicator (e.g. MPI.COMM_WORLD) "
                        f"or None, got {type(comm).__name__}")
    if comm == MPI.COMM_NULL:
        raise ValueError(f"{who}: comm is MPI.COMM_NULL")
    return comm


def _free_private(comm, keyval, private):
    """Frees the duplicate when its communicator is freed (while MPI finalizes, MPI frees it itself)."""
    try:
        if not MPI.Is_finalized():
            private.Free()
    except MPI.Exception:
        pass
    return MPI.SUCCESS


_KEYVAL = None


def private_comm(comm):
    """A duplicate of `comm` kept as an attribute of it (made on first use,
    collectively): pyattn's messages can never match the user's own
    messages on `comm`, whatever tags they use."""
    global _KEYVAL
    if _KEYVAL is None:
        _KEYVAL = MPI.Comm.Create_keyval(delete_fn=_free_private)
    private = comm.Get_attr(_KEYVAL)
    if private is None:
        private = comm.Dup()
        comm.Set_attr(_KEYVAL, private)
    return private


# --- agreement of arguments across ranks ---------------------------------

MAX_NDIM = 64  # NumPy's limit on dimensions: shapes travel padded to it
_PAD = -2  # shape slot past the array's last dimension
ROWS = -1  # shape slot of the sharded rows (they may differ by rank)

_STATUS_OK, _STATUS_TYPE, _STATUS_VALUE = 0, 1, 2


def shape_field(shape, rows_axis=None) -> tuple:
    """A shape padded to MAX_NDIM, its `rows_axis` slot (negative index)
    replaced by ROWS."""
    s = list(shape)
    if rows_axis is not None and s:
        s[rows_axis] = ROWS
    return tuple(s) + (_PAD,) * (MAX_NDIM - len(s))


def float_field(x: float) -> tuple:
    return (int(np.array(x, np.float64).view(np.int64)),)


def _show(kind: str, value: tuple) -> str:
    if kind == "shape":
        dims = ["rows" if d == ROWS else str(d) for d in value if d != _PAD]
        return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"
    if kind == "float":
        return repr(float(np.array(value[0], np.int64).view(np.float64)))
    if kind == "dtype":
        return DTYPE_NAMES.get(value[0], str(value[0]))
    return str(value[0]) if len(value) == 1 else str(value)


DTYPE_CODES = {np.dtype(np.float32): 0, np.dtype(np.float64): 1}
DTYPE_NAMES = {0: "float32", 1: "float64"}


def check_float_inputs(who: str, **named):
    """q, k, v as arrays of one dtype, float32 or float64 (the dtypes the
    ranks exchange and merge in), each at least 2-D."""
    for name, x in named.items():
        dt = _args.as_array(x, name).dtype
        if dt not in DTYPE_CODES:
            raise TypeError(f"{who}: {name} has dtype {dt}; expected float32 or float64 (convert "
                            f"float16/bfloat16 data with .astype(numpy.float32))")
    return _args.check_inputs(named)


class Field:
    """One argument property that must agree on every rank (`agree` is True)
    or is only collected (`agree` False: shard lengths)."""

    def __init__(self, label: str, width: int, kind: str = "int", agree: bool = True):
        self.label, self.width, self.kind, self.agree = label, width, kind, agree


def agree(comm, who: str, fields: list, values, error):
    """Allgathers every rank's argument summary and raises the same error on
    every rank if any rank rejected its arguments or a field differs across
    ranks, so that no rank goes on to wait for a rank that raised.

    `values` lists one tuple per field (ignored when `error` is set); `error`
    is the TypeError/ValueError this rank's own checks raised, or None. The
    rank that raised re-raises its own error; the others raise a ValueError
    naming it. Returns the gathered values: result[field index][rank].
    """
    width = 1 + sum(f.width for f in fields)
    mine = np.zeros(width, np.int64)
    if error is not None:
        mine[0] = _STATUS_TYPE if isinstance(error, TypeError) else _STATUS_VALUE
    else:
        pos = 1
        for f, v in zip(fields, values):
            assert len(v) == f.width, (f.label, v)
            mine[pos:pos + f.width] = v
            pos += f.width
    table = np.empty((comm.Get_size(), width), np.int64)
    comm.Allgather(mine, table)
    failed = [int(r) for r in np.flatnonzero(table[:, 0])]
    if failed:
        if error is not None:
            raise error
        raise ValueError(f"{who}: the arguments on rank(s) {failed} were rejected (see the error raised "
                         f"there); no rank computed anything")
    gathered, pos = [], 1
    for f in fields:
        per_rank = [tuple(int(x) for x in row[pos:pos + f.width]) for row in table]
        pos += f.width
        if f.agree and any(v != per_rank[0] for v in per_rank):
            shown = ", ".join(f"rank {r}: {_show(f.kind, v)}" for r, v in enumerate(per_rank))
            raise ValueError(f"{who}: {f.label} must be the same on every rank, got {shown}")
        gathered.append(per_rank)
    return gathered


# --- progress of non-blocking transfers while a rank computes ------------

# Seconds between two tests of pending requests by the progress thread.
POLL_INTERVAL = 0.0005


class Transfers:
    """Non-blocking transfers that move while the caller computes.

    Most MPI libraries move a large message only inside MPI calls. With
    MPI_THREAD_MULTIPLE, a helper thread tests the requests every
    POLL_INTERVAL seconds while the calling thread computes (pyattn releases
    the GIL), so transfers proceed during the computation; otherwise they
    complete in `wait`. Use as a context manager around the computation.
    """

    def __init__(self, requests):
        self.requests = [r for r in requests if r is not None]
        self.thread = None

    def __enter__(self):
        if self.requests and MPI.Query_thread() == MPI.THREAD_MULTIPLE:
            self.thread = threading.Thread(target=self._poll, name="pyattn-mpi-progress", daemon=True)
            self.thread.start()
        return self

    def _poll(self):
        while not MPI.Request.Testall(self.requests):
            time.sleep(POLL_INTERVAL)

    def __exit__(self, *exc):
        if self.thread is not None:
            self.thread.join()
        MPI.Request.Waitall(self.requests)
        return False
