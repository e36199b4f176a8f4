"""Coverage-guided fuzzing of pyattn with atheris (pip install atheris),
over the same cases and oracle as tools/fuzz_long.py (tests/fuzz_harness.py):
atheris' data provider makes the choices and steers them towards new
coverage of pyattn's Python layer (argument checks, layouts, dispatch).

    python tools/fuzz_atheris.py -runs=20000 [libFuzzer options]

A contract break raises out of the test function: atheris prints the input
and the exception, and stops.
"""

import pathlib
import sys
import warnings

import atheris

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

with atheris.instrument_imports(include=["pyattn"]):
    import pyattn  # noqa: F401

import fuzz_harness as fh  # noqa: E402


def test_one(data):
    fh.run_one(fh.AtherisChooser(atheris.FuzzedDataProvider(data)), with_layers=False)


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    atheris.Setup(sys.argv, test_one)
    atheris.Fuzz()
