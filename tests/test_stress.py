"""Short versions of tools/stress.py (see its docstring for what each checks):
8 Python threads x mixed calls, fork and spawn pools after the parent used
threads, SIGINT during a long call, and an address-space limit. Each
runs in a child process (signals, limits and pools act on a whole process)."""

import os
import pathlib
import subprocess
import tempfile
import sys

import pytest

import pyattn

pytestmark = pytest.mark.integration

ROOT = pathlib.Path(__file__).resolve().parent.parent
UNDER_ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")


def stress(*args, timeout=600):
    env = dict(os.environ)
    # The pyattn under test first (in CI the installed one: the checkout's
    # sources, which have no built core, must not shadow it), then the checkout.
    tested = os.path.dirname(os.path.dirname(os.path.abspath(pyattn.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([tested, str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "stress.py"), *args],
                       capture_output=True, text=True, env=env, cwd=tempfile.gettempdir(), timeout=timeout)
    assert r.returncode == 0, r.stdout + r.stderr[-4000:]
    assert "stress: OK" in r.stdout
    return r.stdout


def test_python_threads_mixed_calls():
    # Under ThreadSanitizer (tools/sanitize.sh sets OMP_NUM_THREADS=1) the
    # calls use one OpenMP thread: GNU libgomp is not TSan-instrumented.
    omp = "1" if os.environ.get("OMP_NUM_THREADS") == "1" else "1,2"
    out = stress("threads", "--seconds", "5", "--threads", "8", "--omp-threads", omp)
    assert "0 failures" in out


def test_process_pools_after_threads():
    out = stress("pools", "--tasks", "16", "--methods", "fork,spawn")
    assert "fork: 16 tasks" in out and "spawn: 16 tasks" in out


def test_keyboard_interrupt_during_a_call():
    out = stress("interrupt")
    assert "KeyboardInterrupt raised: True" in out and "whole result): True" in out and "expected bits: True" in out


@pytest.mark.skipif(UNDER_ASAN, reason="AddressSanitizer reserves terabytes of address space for its "
                                       "shadow memory, so an RLIMIT_AS limit cannot be set under it")
def test_address_space_limit_gives_memory_error():
    out = stress("rlimit")
    assert "returned" not in out
