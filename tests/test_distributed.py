"""pyattn.distributed across real MPI processes: `mpiexec -n 2/3/4` runs
tests/mpi_worker.py, whose ranks check every scenario against single-process
pyattn; the tests here assert on what each rank found.

One mpiexec launch per rank count runs all scenarios (launching costs more
than the small cases). On this project's 2-core CI machine 3 and 4 ranks
are oversubscribed, which MPICH's mpiexec runs without any flag.
"""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

pytest.importorskip("mpi4py", reason="pyattn.distributed needs the 'mpi' extra (pip install \".[mpi]\")")

WORKER = pathlib.Path(__file__).with_name("mpi_worker.py")
RANK_COUNTS = (2, 3, 4)
TIMEOUT = 240  # seconds for one launch; a deadlock fails the test instead of hanging CI


def _mpiexec():
    """The mpiexec next to this Python (the 'mpi' extra's MPICH), else on PATH."""
    here = pathlib.Path(sys.executable).parent / "mpiexec"
    return str(here) if here.exists() else shutil.which("mpiexec")


def _scenario_names():
    """Scenario names, read from the worker without MPI (for parametrize ids)."""
    import ast

    tree = ast.parse(WORKER.read_text())
    names = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("ring_case", "decode_case", "error_case")
                and node.args and isinstance(node.args[0], ast.Constant)):
            names.append(node.args[0].value)
    return names


SCENARIOS = _scenario_names()


@pytest.fixture(scope="module")
def runs():
    """{ranks: {"per_rank": [...], "ranks": P}} or a failure description."""
    mpiexec = _mpiexec()
    if mpiexec is None:
        pytest.fail("mpiexec not found although mpi4py imports: install the 'mpi' extra (pip install \".[mpi]\")")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "PMIX_", "HYDRA_", "MPIR_"))}
    import pyattn  # the ranks import the same pyattn as this process

    package_parent = str(pathlib.Path(pyattn.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
    results = {}
    for n in RANK_COUNTS:
        proc = subprocess.Popen([mpiexec, "-n", str(n), sys.executable, str(WORKER)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # mpiexec and its ranks: the session started for them
            out, err = proc.communicate()
            results[n] = f"mpiexec -n {n} timed out after {TIMEOUT} s (a rank waiting for another?)\n{err[-3000:]}"
            continue
        lines = [line for line in out.splitlines() if line.startswith("RESULTS ")]
        if proc.returncode != 0 or not lines:
            results[n] = f"mpiexec -n {n} exited with {proc.returncode}\nstdout: {out[-3000:]}\nstderr: {err[-3000:]}"
            continue
        results[n] = json.loads(lines[0][len("RESULTS "):])
    return results


def _findings(runs, n, name):
    run = runs[n]
    if isinstance(run, str):
        pytest.fail(run)
    assert run["ranks"] == n
    per_rank = [r[name] for r in run["per_rank"]]
    for rank, found in enumerate(per_rank):
        assert "exception" not in found, f"rank {rank} of {n}: {found.get('exception')}"
    return per_rank


def test_worker_lists_every_kind():
    assert any(s.startswith("decode") for s in SCENARIOS) and any(s.startswith("error") for s in SCENARIOS)
    assert len([s for s in SCENARIOS if not s.startswith(("decode", "error"))]) >= 10


@pytest.mark.parametrize("n", RANK_COUNTS)
@pytest.mark.parametrize("name", [s for s in SCENARIOS if not s.startswith(("decode", "error"))])
def test_ring_attention(runs, n, name):
    for rank, found in enumerate(_findings(runs, n, name)):
        where = f"{name}, rank {rank} of {n}"
        assert found["shape_ok"] and found["dtype_ok"], where
        assert found["out_close"], f"{where}: out differs from single-process attention by {found['out_err']}"
        assert found["lse_close"], f"{where}: lse differs from single-process attention by {found['lse_err']}"
        assert found["bitwise_threads"], f"{where}: num_threads=1 and 2 differ"
        assert found["bitwise_replay"], f"{where}: differs from the single-process replay of the rank's calls"
        if "chunked" in name or "chunks" in name:
            assert found["chunks"] > 1, f"{where}: the shards were not cut into chunks"


@pytest.mark.parametrize("n", RANK_COUNTS)
@pytest.mark.parametrize("name", [s for s in SCENARIOS if s.startswith("decode")])
def test_sharded_decode(runs, n, name):
    for rank, found in enumerate(_findings(runs, n, name)):
        where = f"{name}, rank {rank} of {n}"
        assert found["shape_ok"] and found["dtype_ok"], where
        assert found["out_close"], f"{where}: out differs from single-process attention by {found['out_err']}"
        assert found["lse_close"], f"{where}: lse differs from single-process attention by {found['lse_err']}"
        assert found["bitwise_threads"], f"{where}: num_threads=1 and 2 differ"
        assert found["same_on_all_ranks"], f"{where}: not the same bits as rank 0"
        assert found["nan_free"], f"{where}: NaN in the result"
        assert found["rows_without_keys_ok"], f"{where}: a row without keys is not out 0, lse -inf"


# (scenario, the rank whose own arguments are wrong or None, its error type, words of its message)
ERRORS = {
    "error-feature-size-on-one-rank": (0, "ValueError", "feature size"),
    "error-integer-dtype-on-one-rank": (0, "TypeError", "int32"),
    "error-decode-kv_lengths-too-long": (0, "ValueError", "kv_lengths"),
    "error-scale-differs": (None, "ValueError", "scale must be the same on every rank"),
    "error-zigzag-odd-rows": (None, "ValueError", "zigzag"),
    "error-decode-query-differs": (None, "ValueError", "query shape must be the same on every rank"),
}


@pytest.mark.parametrize("n", RANK_COUNTS)
@pytest.mark.parametrize("name", [s for s in SCENARIOS if s.startswith("error")])
def test_errors_raise_on_every_rank(runs, n, name):
    culprit, kind, words = ERRORS[name]
    found = _findings(runs, n, name)
    for rank, f in enumerate(found):
        if culprit is None or rank == culprit:
            assert f["raised"] == kind and words in f["message"], f"{name}, rank {rank} of {n}: {f}"
        else:  # the others name the rank that rejected its arguments
            assert f["raised"] == "ValueError" and f"rank(s) [{culprit}]" in f["message"], \
                f"{name}, rank {rank} of {n}: {f}"
    if culprit is None:  # the same message on every rank
        assert len({f["message"] for f in found}) == 1, found
