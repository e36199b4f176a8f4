"""pytest-benchmark configuration for benchmarks/ (run: ``pytest benchmarks``).

Files named ``bench_*.py`` are collected here (tests/ keeps ``test_*.py``).
Options: ``--bench-preset {smoke,quick,full}`` (default full: every case of
pyattn.bench.cases) and ``--bench-threads 1,2``. Each benchmark group is one
case at one thread count, so pytest-benchmark's table compares pyattn with its
baselines on the same workload; GFLOP/s is in each benchmark's extra_info.
"""

import pytest


def pytest_addoption(parser):
    group = parser.getgroup("pyattn benchmarks")
    group.addoption("--bench-preset", default="full", choices=("smoke", "quick", "full"),
                    help="which cases of pyattn.bench.cases to run (default: full)")
    group.addoption("--bench-threads", default="1,2",
                    help="comma-separated thread counts (default: 1,2)")


def pytest_collect_file(file_path, parent):
    if (file_path.suffix == ".py" and file_path.name.startswith("bench_")
            and not parent.session.isinitpath(file_path)):
        return pytest.Module.from_parent(parent, path=file_path)
    return None
