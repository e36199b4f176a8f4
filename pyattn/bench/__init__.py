"""Benchmarks of pyattn: the shared case table (cases.py), the baselines
(baselines.py), timing (timing.py) and the ``pyattn-bench`` CLI (cli.py).

Run ``pyattn-bench --help`` or ``python -m pyattn.bench``. The pytest-benchmark
files in the repository's ``benchmarks/`` import the same case table.
"""

from .cases import CASES, flops


def main(argv=None):
    """Entry point of the ``pyattn-bench`` console script."""
    from .cli import main as _main

    return _main(argv)


__all__ = ["CASES", "flops", "main"]
