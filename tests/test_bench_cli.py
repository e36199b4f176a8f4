"""Smoke test of the ``pyattn-bench`` CLI (``python -m pyattn.bench``): it runs,
validates, and prints its table. No timing assertions."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import pyattn


def _run_bench(tmp_path, *args):
    # Run from tmp_path with the pyattn this test imported first on the path,
    # so an uninstalled checkout and an installed package both work.
    env = dict(os.environ)
    root = str(pathlib.Path(pyattn.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return subprocess.run(
        [sys.executable, "-m", "pyattn.bench", *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )


def test_bench_cli_smoke(tmp_path):
    out_json = tmp_path / "bench.json"
    proc = _run_bench(tmp_path, "--smoke", "--threads", "1", "--case", "tiny", "--case", "smoke-causal-*",
                      "--json", str(out_json))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    header = proc.stdout.splitlines()
    assert any(line.split()[:4] == ["case", "thr", "pyattn", "GFLOP/s"] for line in header), proc.stdout
    assert "smoke-causal-128" in proc.stdout and "tiny" in proc.stdout
    assert "done:" in proc.stderr  # the progress output
    report = json.loads(out_json.read_text())
    rows = report["results"]
    assert {r["case"] for r in rows} == {"tiny", "smoke-causal-128"}
    assert all(r["validation"]["ok"] for r in rows)
    assert all(r["impls"]["pyattn"]["median_s"] > 0 for r in rows)


def test_bench_cli_side_by_side_ratios(tmp_path, capsys):
    """Masked and weights rows time the call without them in the same
    rounds; a multi-thread scaling row times 1 thread."""
    from pyattn.bench import cli

    out_json = tmp_path / "bench.json"
    code = cli.main(["--smoke", "--threads", "1,2", "--case", "smoke-mask-*", "--case", "smoke-weights-*",
                     "--case", "smoke-prefill-*", "--baselines", "none", "--no-roof", "--no-progress",
                     "--json", str(out_json)])
    captured = capsys.readouterr()
    assert code == 0, captured.out + captured.err
    rows = {(r["case"], r["threads"]): r for r in json.loads(out_json.read_text())["results"]}
    assert set(rows) == {(c, t) for c in ("smoke-mask-bool-128", "smoke-weights-128", "smoke-prefill-128")
                         for t in (1, 2)}
    for t in (1, 2):
        for case in ("smoke-mask-bool-128", "smoke-weights-128"):
            side = rows[case, t]["side_by_side"]
            assert set(side) == {"plain"} and side["plain"]["threads"] == t
            pyattn_s = rows[case, t]["impls"]["pyattn"]["median_s"]
            assert side["plain"]["ratio"] == pytest.approx(pyattn_s / side["plain"]["median_s"])
    assert rows["smoke-prefill-128", 1]["side_by_side"] == {}
    scaling = rows["smoke-prefill-128", 2]["side_by_side"]["1 thread"]
    assert scaling["threads"] == 1
    assert scaling["ratio"] == pytest.approx(
        scaling["median_s"] / rows["smoke-prefill-128", 2]["impls"]["pyattn"]["median_s"])
    assert "x the time without the mask" in captured.out
    assert "x the time without the weights" in captured.out
    assert "x faster than 1 thread" in captured.out


def test_bench_cli_memory_bound_and_additive_columns(tmp_path):
    """A decoding case is shown in GB/s against the read roof measured in the
    same run; an additive case runs from the shared table; the header names
    the CPU, the roofs and how the baselines' threads are set."""
    out_json = tmp_path / "bench.json"
    proc = _run_bench(tmp_path, "--smoke", "--threads", "1", "--case", "smoke-decode-*",
                      "--case", "smoke-additive-*", "--case", "smoke-kv-*", "--baselines", "numpy",
                      "--json", str(out_json))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    header = next(line.split("  ") for line in proc.stdout.splitlines() if line.startswith("case "))
    header = [h.strip() for h in header if h.strip()]
    assert header[:7] == ["case", "thr", "pyattn", "GFLOP/s", "% matmul", "GB/s", "% read bw"], header
    assert "read roof (streaming read of" in proc.stdout and "matmul roof" in proc.stdout
    assert "CPU:" in proc.stdout and "threadpoolctl" in proc.stdout
    report = json.loads(out_json.read_text())
    assert report["read_roof"]["1"]["gb_per_s"] > 0
    rows = {r["case"]: r for r in report["results"]}
    dec = rows["smoke-decode-4k"]
    assert dec["memory_bound"] and dec["validation"]["ok"]
    p = dec["impls"]["pyattn"]
    assert p["gb_per_s"] == pytest.approx(dec["bytes"] / p["median_s"] / 1e9)
    same = dec["read_same_bytes"]  # a read of as many bytes, timed in the case's rounds
    assert same["gb_per_s"] == pytest.approx(dec["bytes"] / same["median_s"] / 1e9)
    assert p["pct_read"] == pytest.approx(100 * p["gb_per_s"] / same["gb_per_s"])
    assert "pct_roof" not in p
    add = rows["smoke-additive-64"]
    assert not add["memory_bound"] and add["validation"]["ok"] and "pct_roof" in add["impls"]["pyattn"]
    assert "x_numpy" in add["impls"]["pyattn"]
    kv = rows["smoke-kv-int8-4k"]  # an int8 cache, validated over its dequantised keys/values
    assert kv["memory_bound"] and kv["validation"]["ok"] and "pct_read" in kv["impls"]["pyattn"]
    side = kv["side_by_side"]["float cache"]
    assert side["ratio"] == pytest.approx(side["median_s"] / kv["impls"]["pyattn"]["median_s"])
    assert "x faster than the same step over a float32 cache" in proc.stdout
    line = next(line for line in proc.stdout.splitlines() if line.startswith("smoke-decode-4k"))
    cells = line.split()  # (the time takes two: "184 µs")
    assert cells[5] == "-" and cells[7].endswith("%")  # % matmul empty, % read bw set


def test_case_bytes_and_memory_bound_groups():
    from pyattn.bench import cases

    c = cases.CASES_BY_NAME["gqa-decode-8k"]
    assert c.memory_bound and not cases.CASES_BY_NAME["prefill-2048"].memory_bound
    # q and out of 32 heads, K and V of 8 kv heads, float32
    assert c.bytes == 4 * (32 * 1 * 128 * 2 + 8 * 8192 * 128 * 2)


def test_plot_hint_names_a_checkout_install(monkeypatch, capsys):
    import importlib.util

    from pyattn.bench import cli

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    with pytest.raises(SystemExit):
        cli.main(["--smoke", "--plot", "x.png"])
    assert 'pip install ".[bench]"' in capsys.readouterr().err


def test_bench_cli_list_and_bad_args(tmp_path):
    proc = _run_bench(tmp_path, "--list")
    assert proc.returncode == 0, proc.stderr
    assert "prefill-4096" in proc.stdout and "gqa-decode-8k" in proc.stdout
    proc = _run_bench(tmp_path, "--threads", "0")
    assert proc.returncode == 2 and "--threads" in proc.stderr


def test_flops_helper():
    from pyattn.bench import cases

    assert cases.flops(1, 12, 2048, 2048, 64) == 4 * 12 * 2048 * 2048 * 64
    assert cases.flops(1, 1, 10, 20, 64, 32) == 2 * 10 * 20 * (64 + 32)
    assert cases.flops(2, 3, 4, 4, 8, causal=True) == cases.flops(2, 3, 4, 4, 8) / 2
    with pytest.raises(ValueError):
        cases.make_inputs(cases.Case("x", "prefill", mask="int"))


def test_bench_cli_reports_a_wrong_result(monkeypatch, capsys):
    """A pyattn result off the reference is not timed: FAILED row, exit 1."""
    from pyattn.bench import cases, cli

    real = cases.Case.sdpa_kwargs  # pyattn gets scale=0.5, the reference 1/sqrt(E)
    monkeypatch.setattr(cases.Case, "sdpa_kwargs", lambda self, inputs: {**real(self, inputs), "scale": 0.5})
    code = cli.main(["--smoke", "--case", "tiny", "--baselines", "none", "--no-roof", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 1
    assert "FAILED" in captured.out and "VALIDATION FAILED" in captured.out


def test_measure_keeps_the_warm_up_result_only_when_asked():
    from pyattn.bench.timing import measure

    calls = []

    def fn():
        calls.append(len(calls))
        return len(calls)

    kept = measure(fn, min_time=0.0, min_repeats=3)
    assert kept.first_result == 1 and len(kept.samples) >= 3
    calls.clear()
    dropped = measure(fn, min_time=0.0, min_repeats=3, keep_first=False)
    assert dropped.first_result is None and len(calls) >= 4


def _roof_smoke_run(tmp_path, capsys):
    """A one-case smoke run with the matmul roof: (its JSON report, its stdout)."""
    from pyattn.bench import cli

    out_json = tmp_path / "bench.json"
    code = cli.main(["--smoke", "--threads", "1", "--case", "smoke-prefill-*", "--baselines", "none",
                     "--no-progress", "--json", str(out_json)])
    captured = capsys.readouterr()
    assert code == 0, captured.out + captured.err
    return json.loads(out_json.read_text()), captured.out


def test_matmul_roof_is_timed_without_openblas_overrides(monkeypatch, tmp_path, capsys):
    """With OPENBLAS_CORETYPE set, the roof is timed in a child process without
    it (OpenBLAS's own kernels), and the report says so. (The child reports
    the overrides it sees; any would make it fail, and the roof fall back.)"""
    from pyattn.bench import matmul_roof

    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.delenv("OPENBLAS_L2_SIZE", raising=False)
    seen = []
    real = matmul_roof.measure_in_child

    def spy(n, threads, budget, **kw):
        seen.append((n, threads))
        return real(n, threads, budget, **kw)

    monkeypatch.setattr(matmul_roof, "measure_in_child", spy)
    report, out = _roof_smoke_run(tmp_path, capsys)
    assert seen == [(2048, 1)]
    assert report["meta"]["roof_source"]["process"] == "child"
    assert report["meta"]["roof_source"]["without"] == {"OPENBLAS_CORETYPE": "Haswell"}
    assert "matmul roof timed in a child process without OPENBLAS_CORETYPE=Haswell" in out
    assert report["roof"]["1"]["gflops"] > 0


def test_matmul_roof_falls_back_to_this_process(monkeypatch, tmp_path, capsys):
    from pyattn.bench import matmul_roof

    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")

    def broken(*args, **kwargs):
        raise RuntimeError("the roof's child process exited with 1: boom")

    monkeypatch.setattr(matmul_roof, "measure_in_child", broken)
    report, out = _roof_smoke_run(tmp_path, capsys)
    assert report["meta"]["roof_source"]["process"] == "bench"
    assert "boom" in report["meta"]["roof_source"]["failed"]
    assert report["roof"]["1"]["gflops"] > 0
    assert "as its child process without them failed" in out


@pytest.mark.parametrize("nbytes", [0, 63, 64, 4096 + 64 * 3 + 17, (1 << 20) + 64 * 5, 3 * (1 << 20) + 640])
def test_stream_read_reads_every_whole_line(nbytes):
    """The read roof's streaming read (the best ISA's loads) returns the XOR
    of every 8-byte word of the buffer's whole 64-byte lines, for any thread
    count: it read each of them exactly once."""
    from pyattn import _core

    rng = np.random.default_rng(nbytes)
    whole = rng.integers(0, 256, size=nbytes + 1, dtype=np.uint8)
    for buf in (whole[:nbytes], whole[1:]):  # (the second one starts off any alignment)
        lines = np.frombuffer(buf[: nbytes // 64 * 64].tobytes(), dtype=np.uint64)
        want = int(np.bitwise_xor.reduce(lines)) if lines.size else 0
        for threads in (1, 2, 3):
            assert _core._stream_read(buf, threads) == want
