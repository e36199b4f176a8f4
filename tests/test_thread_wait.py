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


# --- more than one OpenMP runtime in the process --------------------------

def _libgomp_path():
    """The system libgomp that pyattn's core is linked against, if that is the
    runtime in use (a source build on Linux), else None."""
    runtimes = pyattn.get_config()["openmp_runtimes"]
    return next((p for p in runtimes if os.path.basename(p) == "libgomp.so.1"), None)


def _has_transformers():
    try:
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


def test_config_lists_the_runtime_in_use():
    cfg = pyattn.get_config()
    assert all(isinstance(p, str) for p in cfg["openmp_runtimes"])
    if cfg["openmp"] is None:
        pytest.skip("built without OpenMP: no runtime of pyattn's to find")
    if not sys.platform.startswith(("linux", "darwin", "freebsd")):
        pytest.skip("the loaded libraries are listed on Linux, FreeBSD and macOS only")
    in_use = cfg["openmp"].split(" (")[0]
    assert in_use in [os.path.basename(p) for p in cfg["openmp_runtimes"]]


def test_one_shared_runtime_beside_torch_gives_no_warning():
    pytest.importorskip("torch", reason="the check runs when pyattn.torch is imported")
    # torch's libgomp.so.1 and the system's have the same soname: the process
    # loads one of them, which pyattn and torch then share.
    code = "import pyattn, pyattn.torch\n"
    if _has_transformers():  # register() runs the check as well
        code += "import pyattn.integrations.transformers as t; t.register()\n"
    r = run_python(code + "print(len(pyattn.get_config()['openmp_runtimes']))")
    assert r.returncode == 0, r.stderr
    if int(r.stdout) > 1:
        pytest.skip("this build's OpenMP runtime is not the one torch loads: the warning is right here")
    assert "OpenMP runtimes are loaded" not in r.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="makes a second runtime from Linux's libgomp.so.1")
def test_a_second_runtime_is_listed_and_warned_about(tmp_path):
    pytest.importorskip("torch", reason="the check runs when pyattn.torch is imported")
    system_gomp = _libgomp_path()
    if system_gomp is None:
        pytest.skip("pyattn does not use a libgomp.so.1 here to copy as a second runtime")
    # A copy of libgomp under another soname is a second runtime, as a
    # wheel's bundled libgomp-<hash>.so.1 beside torch's would be.
    data = pathlib.Path(system_gomp).read_bytes()
    assert data.count(b"libgomp.so.1\0") == 1, "expected the soname once in libgomp's string table"
    copy = tmp_path / "libgomp-0badc0de.so.1"
    copy.write_bytes(data.replace(b"libgomp.so.1\0", b"libgomp.so.7\0"))
    code = (
        "import ctypes, os, warnings\n"
        f"ctypes.CDLL({str(copy)!r})\n"
        "import pyattn\n"
        "names = [os.path.basename(p) for p in pyattn.get_config()['openmp_runtimes']]\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    import pyattn.torch\n"
        "    again = pyattn._config.warn_if_several_openmp_runtimes()\n"
        "print(sorted(names), again, [str(w.message) for w in caught if w.category is RuntimeWarning])\n"
    )
    r = run_python(code)
    assert r.returncode == 0, r.stderr
    assert "'libgomp-0badc0de.so.1', 'libgomp.so.1'" in r.stdout
    assert "True" in r.stdout  # still several runtimes when asked again
    assert r.stdout.count("OpenMP runtimes are loaded in this process") == 1  # warned once
    assert "OMP_WAIT_POLICY=passive" in r.stdout


def test_warning_logic(monkeypatch):
    from pyattn import _config

    if _config._core.build_info()["openmp"] is None:
        pytest.skip("built without OpenMP: no thread pool of pyattn's to compete")
    monkeypatch.setattr(_config, "_several_runtimes_warned", False)
    monkeypatch.setattr(_config._core, "openmp_runtimes_loaded", lambda: ["/usr/lib/libgomp.so.1"])
    assert _config.warn_if_several_openmp_runtimes() is False
    monkeypatch.setattr(_config._core, "openmp_runtimes_loaded",
                        lambda: ["/usr/lib/libgomp.so.1", "/site/x.libs/libomp-1a2b.so"])
    with pytest.warns(RuntimeWarning, match=r"2 OpenMP runtimes .*libgomp\.so\.1, libomp-1a2b\.so"):
        assert _config.warn_if_several_openmp_runtimes() is True
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _config.warn_if_several_openmp_runtimes() is True  # once per process
