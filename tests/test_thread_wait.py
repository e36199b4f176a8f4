"""pyattn.set_thread_wait: what pyattn's OpenMP threads do between calls."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import pyattn

def run_python(code, **env_vars):
    """Runs `code` in a fresh interpreter that imports the pyattn under test
    (cwd and PYTHONPATH: the directory holding it, so that a source
    checkout's pyattn without the built extension never shadows it)."""
    parent = str(pathlib.Path(pyattn.__file__).resolve().parent.parent)
    env = dict(os.environ, **env_vars)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [parent, os.environ.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-W", "always", "-c", code], cwd=parent, env=env,
                          capture_output=True, text=True, timeout=300)



@pytest.fixture
def restore_wait():
    prev = pyattn.get_thread_wait()
    yield
    pyattn.set_thread_wait(prev)


def test_set_get_and_config(restore_wait):
    for policy in ("passive", "active", "auto"):
        pyattn.set_thread_wait(policy)
        assert pyattn.get_thread_wait() == policy
        assert pyattn.get_config()["thread_wait"].startswith(policy)
    with pytest.raises(ValueError, match="thread wait policy"):
        pyattn.set_thread_wait("spin")


def test_same_bits_for_every_policy(restore_wait):
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 3, 67, 32), dtype=np.float32) for _ in range(3))
    want = pyattn.scaled_dot_product_attention(q, k, v, is_causal=True, num_threads=1)
    for policy in ("passive", "active", "auto"):
        pyattn.set_thread_wait(policy)
        for _ in range(2):  # the second call after the pool was released (passive)
            got = pyattn.scaled_dot_product_attention(q, k, v, is_causal=True, num_threads=2)
            np.testing.assert_array_equal(got, want)


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads through Linux's /proc")
def test_passive_leaves_no_thread_behind():
    # In a fresh process: a 2-thread call leaves its OpenMP worker in the
    # pool when active, and none when passive. The runtime tells its workers
    # to exit without waiting for them, so the count may take a moment to
    # drop (seen on a loaded machine): wait for it, up to 5 s.
    code = (
        "import os, time, numpy as np, pyattn\n"
        "q = np.ones((1, 4, 64, 16), np.float32)\n"
        "n = lambda: len(os.listdir('/proc/self/task'))\n"
        "base = n()\n"
        "pyattn.set_thread_wait('active'); pyattn.scaled_dot_product_attention(q, q, q, num_threads=2)\n"
        "active = n()\n"
        "pyattn.set_thread_wait('passive'); pyattn.scaled_dot_product_attention(q, q, q, num_threads=2)\n"
        "t0 = time.monotonic()\n"
        "while n() > base and time.monotonic() - t0 < 5: time.sleep(0.01)\n"
        "print(base, active, n())\n"
    )
    r = run_python(code)
    assert r.returncode == 0, r.stderr
    base, active, passive = map(int, r.stdout.split())
    assert active == base + 1 and passive == base


def test_environment_variable():
    code = "import pyattn; print(pyattn.get_thread_wait())"
    r = run_python(code, PYATTN_THREAD_WAIT="passive")
    assert r.returncode == 0 and r.stdout.strip() == "passive", r.stderr
    r = run_python(code, PYATTN_THREAD_WAIT="bogus")
    assert r.returncode == 0 and r.stdout.strip() == "auto"
    assert "PYATTN_THREAD_WAIT ignored" in r.stderr
