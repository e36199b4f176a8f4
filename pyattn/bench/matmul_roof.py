"""The matmul roof of pyattn-bench: NumPy float32 ``n x n @ n x n``, the
machine's practical compute limit at a thread count.

``OPENBLAS_CORETYPE`` (and ``OPENBLAS_L2_SIZE``) in the environment make
OpenBLAS use the kernels of the named CPU instead of the ones it detects:
``OPENBLAS_CORETYPE=Haswell`` on an AVX-512 machine halves its matmul, and a
"roof" timed that way sits below what pyattn itself reaches. The roof is a
property of the machine, not of that setting, so when either variable is set
it is timed in a child process started without them (OpenBLAS's own choice
of kernels); the NumPy baseline still runs in the bench's process, as the
environment sets it. A child that fails leaves the roof to be timed in
process, and the report says which it was.

Run as ``python -m pyattn.bench.matmul_roof '<json>'`` (the child): prints
the :class:`~pyattn.bench.timing.Timing` of the matmul as JSON.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def overrides_set():
    """The OpenBLAS kernel overrides set in this environment (name: value)."""
    return {k: os.environ[k] for k in OVERRIDES if k in os.environ}


def openblas_architecture():
    """The kernel set OpenBLAS uses in this process ("Haswell", "SkylakeX",
    ...), or None when threadpoolctl cannot tell."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    for pool in threadpool_info():
        if pool.get("internal_api") == "openblas":
            return pool.get("architecture")
    return None


def measure_here(n, threads, budget):
    """The roof timed in this process, as the environment sets OpenBLAS."""
    from . import baselines as bl
    from .timing import measure

    runner = bl.roof_runner(n, threads)
    with runner:
        return measure(runner, **budget, keep_first=False)


def measure_in_child(n, threads, budget, timeout=600):
    """The roof timed in a child process without the OpenBLAS overrides:
    (Timing, OpenBLAS architecture there). Raises RuntimeError if the child
    fails."""
    from .timing import Timing

    env = {k: v for k, v in os.environ.items() if k not in OVERRIDES}
    package_parent = str(pathlib.Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")]))
    arg = json.dumps({"n": n, "threads": threads, "budget": budget})
    proc = subprocess.run([sys.executable, "-m", "pyattn.bench.matmul_roof", arg], env=env,
                          cwd=package_parent, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"the roof's child process exited with {proc.returncode}: {last}")
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    if r["overrides"]:
        raise RuntimeError(f"the roof's child process still saw {r['overrides']}")
    return Timing(r["median"], r["samples"], r["number"]), r["architecture"]


def _child(arg):
    spec = json.loads(arg)
    tm = measure_here(spec["n"], spec["threads"], spec["budget"])
    print(json.dumps({"median": tm.median, "samples": tm.samples, "number": tm.number,
                      "architecture": openblas_architecture(), "overrides": overrides_set()}))


if __name__ == "__main__":
    _child(sys.argv[1])
