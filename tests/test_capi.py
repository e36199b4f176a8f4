"""Building a Cython extension against pyattn's C API, as a user does:
examples/cython_decode (a KV-cache decoding loop run entirely without the
GIL through `cimport pyattn.capi`) is compiled in a temporary directory with
Cython and the C compiler, then its every step is compared bit for bit with
pyattn.scaled_dot_product_attention. The C API's calls and errors are tested
without a compiler in test_capi_calls.py."""

import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

import pyattn

pytestmark = pytest.mark.integration

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "examples" / "cython_decode"


@pytest.fixture(scope="module")
def decode_example(tmp_path_factory):
    """The example's directory after `python setup.py build_ext --inplace`,
    with the built `decode` module and its run_example importable."""
    pytest.importorskip("Cython", reason="the test extra installs Cython")
    work = tmp_path_factory.mktemp("cython_decode")
    for name in ("setup.py", "decode.pyx", "run_example.py"):
        shutil.copy(EXAMPLE / name, work / name)
    # The child must import the same pyattn as this process (an installed
    # wheel, or the source tree on PYTHONPATH): for get_include() and capi.pxd.
    env = dict(os.environ)
    pkg_parent = str(pathlib.Path(pyattn.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([pkg_parent] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    proc = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    sys.path.insert(0, str(work))
    try:
        import decode
        import run_example

        yield decode, run_example
    finally:
        sys.path.remove(str(work))
        sys.modules.pop("decode", None)
        sys.modules.pop("run_example", None)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_decode_loop_bitwise_equal_to_python_api(decode_example, dtype):
    _, run_example = decode_example
    run_example.main(dtype)  # asserts array_equal on every step's out and lse


@pytest.mark.parametrize("threads", [1, 2])
def test_decode_loop_shapes(decode_example, threads):
    """Other head counts, odd sizes, an empty prompt and a full cache."""
    decode, run_example = decode_example
    rng = np.random.default_rng(threads)
    for B, Hq, Hkv, E, Ev, T, S_max in ((1, 1, 1, 64, 64, 16, 16), (2, 6, 3, 33, 17, 9, 40), (4, 4, 4, 8, 8, 1, 5)):
        q = rng.standard_normal((B, Hq, T, E)).astype(np.float32)
        k_new = rng.standard_normal((B, Hkv, T, E)).astype(np.float32)
        v_new = rng.standard_normal((B, Hkv, T, Ev)).astype(np.float32)
        k_cache = rng.standard_normal((B, Hkv, S_max, E)).astype(np.float32)
        v_cache = rng.standard_normal((B, Hkv, S_max, Ev)).astype(np.float32)
        lengths = rng.integers(0, S_max - T + 1, B).astype(np.int64)
        lengths[0] = 0  # an empty prompt
        want_out, want_lse = run_example.reference_steps(q, k_new, v_new, k_cache, v_cache, lengths)
        out = np.empty_like(want_out)
        lse = np.empty_like(want_lse)
        before = lengths.copy()
        decode.decode(q, k_new, v_new, k_cache, v_cache, lengths, out, lse, num_threads=threads)
        np.testing.assert_array_equal(lengths, before + T)
        assert np.array_equal(out.view(np.uint32), want_out.view(np.uint32))
        assert np.array_equal(lse.view(np.uint32), want_lse.view(np.uint32))


def test_decode_loop_reports_capi_errors(decode_example):
    """A C API error inside the nogil loop comes back as the example's
    exception with pyattn's code and message (here: a bad thread count)."""
    decode, _ = decode_example
    q = np.ones((1, 2, 1, 8), np.float32)
    kv = np.ones((1, 2, 1, 8), np.float32)
    cache = np.zeros((1, 2, 4, 8), np.float32)
    with pytest.raises(decode.CapiError, match=r"code 4\): num_threads must be 0 .* got -3"):
        decode.decode(q, kv, kv, cache, cache.copy(), np.zeros(1, np.int64), np.empty((1, 2, 1, 8), np.float32),
                      np.empty((1, 2, 1), np.float32), num_threads=-3)
