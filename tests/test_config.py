"""get_config / show_config, run-time ISA dispatch and the PYATTN_ISA override."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

import pyattn

KEYS = {"version", "isa", "isa_supported", "isa_compiled", "openmp", "num_threads", "compiler"}
KNOWN_ISAS = ["generic", "avx2", "avx512"]

PROBE = r"""
import json, warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import numpy as np
    import pyattn
    x = np.ones((1, 2, 4), np.float32)
    pyattn.scaled_dot_product_attention(x, x, x)
    cfg = pyattn.get_config()
print(json.dumps({"config": cfg, "threads": pyattn.get_num_threads(),
                  "warnings": [[w.category.__name__, str(w.message)] for w in caught]}))
"""


def run_probe(**env_vars):
    """Import pyattn in a fresh interpreter with PYATTN_ISA / OMP_NUM_THREADS
    set as given (unset otherwise); returns its config, threads and warnings."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYATTN_ISA", "OMP_NUM_THREADS")}
    env.update(env_vars)
    package_parent = str(pathlib.Path(pyattn.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
    # cwd: `python -c` puts the working directory first on sys.path, where a
    # source checkout's pyattn (without the built extension) would shadow it.
    proc = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                          text=True, timeout=120, cwd=package_parent)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def best_isa(cfg):
    """isa_compiled is ordered from lowest to highest preference."""
    return [i for i in cfg["isa_compiled"] if i in cfg["isa_supported"]][-1]


def test_get_config_keys_and_types():
    cfg = pyattn.get_config()
    assert KEYS <= set(cfg)
    assert cfg["version"] == pyattn.__version__
    assert "generic" in cfg["isa_compiled"] and "generic" in cfg["isa_supported"]
    assert cfg["isa"] in cfg["isa_compiled"] and cfg["isa"] in cfg["isa_supported"]
    assert isinstance(cfg["num_threads"], int) and cfg["num_threads"] >= 1
    assert all(isinstance(cfg[k], str) for k in ("version", "isa", "compiler"))


def test_show_config_prints_selected_isa(capsys):
    pyattn.show_config()
    printed = capsys.readouterr().out
    cfg = pyattn.get_config()
    assert cfg["isa"] in printed and cfg["version"] in printed


def test_set_isa_selects_and_restores(isa):
    assert pyattn.get_config()["isa"] == isa


def test_dispatch_picks_best_isa_by_default():
    result = run_probe()
    assert result["config"]["isa"] == best_isa(result["config"])
    assert not [w for w in result["warnings"] if "PYATTN_ISA" in w[1]]


def test_pyattn_isa_generic_forces_generic():
    result = run_probe(PYATTN_ISA="generic")
    assert result["config"]["isa"] == "generic"
    assert not [w for w in result["warnings"] if "PYATTN_ISA" in w[1]]


def assert_refused_with_warning(name):
    result = run_probe(PYATTN_ISA=name)
    assert result["config"]["isa"] == best_isa(result["config"])
    assert any(cat == "RuntimeWarning" and "PYATTN_ISA" in msg
               for cat, msg in result["warnings"]), result["warnings"]


def test_unknown_isa_name_warns_and_falls_back():
    assert_refused_with_warning("no_such_isa")


def test_isa_the_cpu_lacks_warns_and_falls_back():
    supported = pyattn.get_config()["isa_supported"]
    lacking = [i for i in KNOWN_ISAS if i not in supported]
    if not lacking:
        pytest.skip(f"this CPU supports every ISA pyattn knows ({', '.join(supported)})")
    assert_refused_with_warning(lacking[0])


def test_omp_num_threads_is_honoured():
    if not pyattn.get_config()["openmp"]:
        pytest.skip("built without OpenMP: OMP_NUM_THREADS has no pool to size (every call runs on 1 thread)")
    assert run_probe(OMP_NUM_THREADS="3")["threads"] == 3
