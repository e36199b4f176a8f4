"""``pyattn-bench`` / ``python -m pyattn.bench``: time pyattn against its
baselines on a preset suite and print a table.

Every pyattn result is first checked against the float64 reference
(``pyattn.reference``) on a slice of the case (the tolerance of docs/api.md section 7); a
case that fails is not timed and makes the exit status 1. Times are medians
over repeats after a warm-up; a case's implementations are timed in
interleaved rounds (2 with --quick, 6 with --full), so that a burst of load
on a shared machine falls on all of them alike.

Two roofs are measured in the same run at each thread count, in as many
blocks as rounds spread over the run (one median each): NumPy's float32
2048^3 matmul (compute-bound cases: "% matmul" = pyattn's GFLOP/s over it)
and a streaming read of a 512 MiB buffer (``pyattn._core._stream_read``).
Memory-bound cases -- decoding -- show "GB/s", the bytes of q, K, V and the
output one call reads and writes per second, and "% read bw" = that over a
streaming read of a buffer of the same number of bytes at the same thread
count, timed in the same rounds as the case: a footprint that fits a cache
level is compared with a read from that level, not from memory. NumPy's BLAS threads are set to each row's thread count with
threadpoolctl when it is importable (else they are not controlled and the
table says so); ONNX Runtime runs with intra-op spinning off. Note:
OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE in the environment can slow OpenBLAS
(e.g. Haswell kernels on an AVX-512 CPU): the NumPy baseline runs with them,
and the matmul roof, a property of the machine, is then timed in a child
process without them (pyattn/bench/matmul_roof.py); the run reports both.

The "x" columns are speed-ups of pyattn: baseline time / pyattn time
(> 1: pyattn is faster). Ratios between pyattn calls that a comparison
needs side by side are timed in the same rounds too, and printed below the
table: a masked or weights case against the same call without its mask or
weights, a multi-thread prefill-2048 row against 1 thread, a decoding
step over a quantised (int8) or bfloat16 KV cache against the same step over
a float32 cache, and a packed variable-length case against pyattn on the
same sequences padded into one batch (with kv_lengths, and with a boolean
key-padding mask; its torch column is SDPA on the padded batch with that mask).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import time

import numpy as np

from . import baselines as bl
from . import cases as cs
from . import matmul_roof
from .machine import cpu_name
from .timing import format_time, measure, merge_timings

# Timing budget per preset: seconds per (case, implementation) and min repeats.
_BUDGET = {
    "smoke": dict(min_time=0.02, min_repeats=2, max_repeats=20, max_time=0.5),
    "quick": dict(min_time=0.2, min_repeats=3, max_repeats=50, max_time=1.5),
    "full": dict(min_time=1.0, min_repeats=6, max_repeats=300, max_time=8.0),
}
# Each case's implementations are timed in this many interleaved rounds
# (pyattn, baselines, pyattn, ...), each with 1/rounds of the budget: a burst
# of load from other processes on a shared machine, which lasts seconds, then
# falls on all of them alike. (Alternating call by call would make each pay
# for the previous runtime's still-spinning worker threads.)
_ROUNDS = {"smoke": 1, "quick": 2, "full": 6}
_DEFAULT_THREADS = {"smoke": [1], "quick": [1], "full": [1, 2]}
_ROOF_N = 2048
# Bytes of the read-bandwidth roof's buffer: >= 4x any last-level cache share
# a core is likely to have (the smoke preset only checks that it runs).
_READ_BYTES = {"smoke": 32 << 20, "quick": 512 << 20, "full": 512 << 20}
# The runner of a memory-bound case's read of its own bytes (its "% read bw").
_SAME_BYTES = "read (same bytes)"
_OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
_COLUMNS = ("case", "thr", "pyattn", "GFLOP/s", "% matmul", "GB/s", "% read bw", "x numpy", "x torch",
            "x onnxrt")
_SHORT = {"numpy": "x numpy", "torch": "x torch", "onnxruntime": "x onnxrt"}


def _thread_list(text):
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"thread counts must be integers >= 1, got {text!r}")
    return values


def _impl_list(text):
    if text.strip().lower() in ("", "none"):
        return []
    names = [t.strip() for t in text.split(",") if t.strip()]
    alias = {"ort": "onnxruntime", "np": "numpy"}
    names = [alias.get(n, n) for n in names]
    bad = [n for n in names if n not in bl.BASELINES]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown baseline(s) {bad}; choose from {', '.join(bl.BASELINES)} or none")
    return names


def _side_runs(case, threads):
    """pyattn calls timed in the same rounds as ``case`` at ``threads``:
    ``(key, label, case, threads)`` for what its mask or weights cost and
    for its speed-up over 1 thread (see :func:`_side_ratio`)."""
    runs = []
    plain = case.without_extras()
    if plain is not None:
        runs.append(("plain", f"x the time without the {case.extras}", plain, threads))
    if case.scaling and threads > 1:
        runs.append(("1 thread", "x faster than 1 thread", case, 1))
    float_cache = case.with_float_cache()
    if float_cache is not None:
        runs.append(("float cache", f"x faster than the same step over a {case.dtype} cache", float_cache,
                     threads))
    if case.seqlens and case.padded is None:
        for how, what in (("kv_lengths", "kv_lengths"), ("mask", "a bool key-padding mask")):
            padded = dataclasses.replace(case, name=f"{case.name} (padded, {how})", padded=how, presets=())
            runs.append((f"padded {how}", f"x faster than pyattn on the padded batch with {what}",
                         padded, threads))
    return runs


def _side_ratio(key, pyattn_s, side_s):
    """The ratio printed for a side run: time with / time without the
    extras, or the other call's time (1 thread, a padded batch, a float32
    cache) / this row's time."""
    return pyattn_s / side_s if key == "plain" else side_s / pyattn_s


def build_parser():
    p = argparse.ArgumentParser(
        prog="pyattn-bench",
        description="Benchmark pyattn's scaled_dot_product_attention against the NumPy reference "
                    "recipe, torch SDPA and ONNX Runtime MultiHeadAttention (when installed). "
                    "Every pyattn result is validated against the float64 reference first.",
        epilog="Columns 'x numpy/torch/onnxrt' are baseline time / pyattn time (> 1: pyattn faster); "
               "'% matmul' compares pyattn's GFLOP/s with NumPy's float32 2048^3 matmul at the same "
               "thread count (compute-bound cases); 'GB/s' is the bytes of q, K, V and out per call "
               "over the time and '% read bw' that over a streaming read of a buffer of the same size at "
               "the same thread count, in the same rounds (memory-bound cases: decoding). 'n/a': the baseline cannot run the "
               "case; '-': not installed, not selected or not applicable.",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", dest="preset", action="store_const", const="quick",
                   help="a small subset that runs in under a minute (default)")
    g.add_argument("--full", dest="preset", action="store_const", const="full",
                   help="every case (default threads: 1,2)")
    g.add_argument("--smoke", dest="preset", action="store_const", const="smoke",
                   help="a few tiny cases with a minimal timing budget (for tests)")
    p.set_defaults(preset="quick")
    p.add_argument("--threads", type=_thread_list, default=None, metavar="N[,N...]",
                   help="thread counts to run, e.g. 1,2 (default: 1; 1,2 with --full)")
    p.add_argument("--case", action="append", dest="patterns", metavar="PATTERN",
                   help="only cases whose name matches this fnmatch pattern (from the whole table; repeatable)")
    p.add_argument("--baselines", type=_impl_list, default=list(bl.BASELINES), metavar="LIST",
                   help="baselines to time: comma-separated from numpy,torch,onnxruntime, or none "
                        "(default: all that are installed)")
    p.add_argument("--json", metavar="PATH", help="write all results (with every sample) as JSON")
    p.add_argument("--plot", metavar="PATH.png",
                   help="save bar charts: GFLOP/s of compute-bound cases, GB/s of memory-bound ones "
                        "(needs matplotlib)")
    p.add_argument("--no-roof", action="store_true", help="skip the roof measurements (matmul and read)")
    p.add_argument("--no-progress", action="store_true", help="no progress output on stderr")
    p.add_argument("--seed", type=int, default=0, help="random seed of the inputs (default 0)")
    p.add_argument("--list", action="store_true", help="list the case table and exit")
    p.add_argument("--e2e", action="store_true",
                   help="instead of the case table: a small Llama-shaped model (transformers, random "
                        "weights), prefill of --e2e-prefill tokens and --e2e-decode decode steps, pyattn's "
                        "transformers backend against sdpa (default threads: 1,2; needs transformers)")
    p.add_argument("--e2e-prefill", type=int, default=2048, metavar="N", help="prompt length for --e2e")
    p.add_argument("--e2e-decode", type=int, default=64, metavar="N", help="decode steps for --e2e")
    p.add_argument("--neighbours", action="store_true",
                   help="instead of the case table: a torch matmul right after a pyattn call and pyattn "
                        "right after torch (and ONNX Runtime) against each alone, for each pyattn thread "
                        "wait policy (threads: the first of --threads, default 2; needs torch)")
    return p


# --------------------------------------------------------------------------
# Progress (plain text on stderr)
# --------------------------------------------------------------------------


class Progress:
    def __init__(self, total, enabled=True, stream=None):
        self.total, self.done = max(1, total), 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter()
        self._width = 0

    def step(self, label):
        """Announce the next unit of work (shown until the next call)."""
        if not self.enabled:
            return
        frac = self.done / self.total
        bar = "#" * int(round(frac * 24))
        line = f"[{bar:<24}] {self.done:>3}/{self.total} {time.perf_counter() - self.start:6.1f}s  {label}"
        if self.tty:
            pad = max(0, self._width - len(line))
            self.stream.write("\r" + line + " " * pad)
            self._width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self.done += 1

    def message(self, text):
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self._width = 0
        self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self):
        if not self.enabled:
            return
        self.done = self.total
        if self.tty:
            self.stream.write("\r" + " " * self._width + "\r")
        self.stream.write(f"done: {self.total} steps in {time.perf_counter() - self.start:.1f}s\n")
        self.stream.flush()


# --------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------


def _environment(baselines):
    import pyattn

    versions = {"python": platform.python_version(), "numpy": np.__version__, "pyattn": pyattn.__version__}
    for mod in ("torch", "onnxruntime", "onnx", "threadpoolctl", "ml_dtypes"):
        if importlib.util.find_spec(mod):
            try:
                versions[mod] = __import__(mod).__version__
            except Exception:  # pragma: no cover - broken installs
                versions[mod] = "?"
    cfg = pyattn.get_config()
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "pyattn_config": cfg,
        "versions": versions,
        "env": {k: os.environ[k] for k in _OPENBLAS_VARS if k in os.environ},
        "blas_threads": bl.blas_thread_control(),
        "baselines": baselines,
        "load_average": _load_average(),
        "cpu_name": cpu_name(),
    }


def _load_average():
    try:
        return list(os.getloadavg())
    except (AttributeError, OSError):  # not on every platform
        return None


def run(args, out=None):
    out = sys.stdout if out is None else out  # (looked up per call: tests swap it)
    preset = args.preset
    threads_list = args.threads or _DEFAULT_THREADS[preset]
    budget = _BUDGET[preset]
    selected = cs.select(preset, args.patterns)
    if not selected:
        print(f"pyattn-bench: no case matches {args.patterns}", file=sys.stderr)
        return 2

    baselines = []
    skipped = {}
    for name in args.baselines:
        ok, why = bl.available(name)
        (baselines.append(name) if ok else skipped.__setitem__(name, why))
    env = _environment(baselines)

    rounds = _ROUNDS[preset]
    side_count = sum(len(_side_runs(c, t)) for c in selected for t in threads_list)
    read_roof = not args.no_roof and any(c.memory_bound for c in selected)
    if read_roof:  # each memory-bound case's read of the same bytes
        side_count += len(threads_list) * sum(1 for c in selected if c.memory_bound)
    roofs = (0 if args.no_roof else 1) + int(read_roof)
    steps = (len(selected) * len(threads_list) * (1 + rounds * (1 + len(baselines)))
             + rounds * side_count + rounds * len(threads_list) * roofs)
    progress = Progress(steps, enabled=not args.no_progress)
    overrides = matmul_roof.overrides_set()
    for k, val in overrides.items():
        progress.message(f"note: {k}={val} is set; it can slow NumPy's matmul (the NumPy baseline; "
                         "the matmul roof is timed in a child process without it)")
    # Where the roof is timed: see pyattn/bench/matmul_roof.py.
    roof_source = {"process": "child" if overrides else "bench", "without": overrides,
                   "architecture": None, "baseline_architecture": matmul_roof.openblas_architecture()}

    per_round = dict(budget, min_time=budget["min_time"] / rounds, max_time=budget["max_time"] / rounds,
                     min_repeats=max(2, math.ceil(budget["min_repeats"] / rounds)),
                     max_repeats=max(2, budget["max_repeats"] // rounds))
    # The roof is timed in `rounds` blocks spread over the run (before the
    # first case, then evenly between cases) and merged into one median, as
    # each case's implementations are: one block at the start would carry
    # whatever load the machine had then into every "% roof".
    roof_parts = {t: [] for t in threads_list}
    read_parts = {t: [] for t in threads_list}
    roof_at = [] if args.no_roof else [i * len(selected) // rounds for i in range(rounds)]
    read_bytes = _READ_BYTES[preset]

    def time_roof(r):
        for t in threads_list:
            progress.step(f"roof: NumPy float32 matmul {_ROOF_N}^3, {t} thread(s) ({r + 1}/{rounds})")
            tm = None
            if roof_source["process"] == "child":
                try:
                    tm, roof_source["architecture"] = matmul_roof.measure_in_child(_ROOF_N, t, per_round)
                except (OSError, RuntimeError, ValueError, KeyError, subprocess.SubprocessError) as exc:
                    progress.message(f"note: {exc}; the matmul roof is timed in this process instead")
                    roof_source.update(process="bench", failed=str(exc))
                    for parts in roof_parts.values():  # (no roof merged from both)
                        parts.clear()
            if tm is None:
                tm = matmul_roof.measure_here(_ROOF_N, t, per_round)
                roof_source["architecture"] = roof_source["baseline_architecture"]
            roof_parts[t].append(tm)
            if read_roof:
                progress.step(f"roof: streaming read of {read_bytes >> 20} MiB, {t} thread(s) ({r + 1}/{rounds})")
                runner = bl.read_roof_runner(read_bytes, t)
                with runner:
                    tm = measure(runner, **per_round, keep_first=False)
                read_parts[t].append(tm)
                del runner

    results = []
    failed = False
    for index, case in enumerate(selected):
        for r in range(roof_at.count(index)):  # (several at index 0 when there are few cases)
            time_roof(len(roof_parts[threads_list[0]]))
        inputs = cs.make_inputs(case, seed=args.seed)
        for t in threads_list:
            row = {"case": case.name, "group": case.group, "describe": case.describe(), "threads": t,
                   "flops": case.flops, "bytes": case.bytes if case.memory_bound else None,
                   "memory_bound": case.memory_bound, "impls": {}, "notes": {}, "side_by_side": {}}
            side = _side_runs(case, t)
            results.append(row)
            progress.step(f"{case.name} t={t} pyattn (validation)")
            runner = bl.make_runner("pyattn", case, inputs, t)
            with runner:
                try:
                    first = runner()
                    check = cs.validate(case, inputs, first)
                except Exception as exc:  # report it, go on with the other cases
                    check = cs.Validation(False, float("nan"), float("inf"), f"{type(exc).__name__}: {exc}")
                    first = None
            row["validation"] = {"ok": check.ok, "max_abs_err": check.max_abs_err,
                                 "worst_ratio": check.worst_ratio, "checked": check.checked}
            if not check.ok:
                failed = True
                progress.message(f"VALIDATION FAILED {case.name} t={t}: {check}")
                progress.done += rounds * (1 + len(baselines) + len(side))
                continue
            ref_out = runner.output(first)
            del first
            runners = {"pyattn": runner}
            for key, _, side_case, side_t in side:
                runners[f"pyattn ({key})"] = bl.make_runner("pyattn", side_case, inputs, side_t)
            if read_roof and case.memory_bound:
                runners[_SAME_BYTES] = bl.read_roof_runner(case.bytes, t)
            for name in baselines:
                try:
                    runners[name] = bl.make_runner(name, case, inputs, t)
                except bl.Unsupported as exc:
                    row["notes"][name] = f"n/a: {exc}"
                    progress.done += rounds
            parts = {name: [] for name in runners}
            for r in range(rounds):
                for name, runner in runners.items():
                    progress.step(f"{case.name} t={t} {name} ({r + 1}/{rounds})")
                    # Only a baseline's first output is compared; other warm-up
                    # results are dropped before timing (a weights case's is 200 MB,
                    # and a sample that allocates beside it pays for fresh memory:
                    # 0.8-1.0 s instead of 0.2 s in one run).
                    with runner:
                        tm = measure(runner, **per_round, keep_first=r == 0 and name in baselines)
                    parts[name].append(tm)
                    del tm
            if _SAME_BYTES in parts:
                tm = merge_timings(parts.pop(_SAME_BYTES))
                row["read_same_bytes"] = {"gb_per_s": case.bytes / tm.median / 1e9, **tm.as_dict()}
            for key, label, side_case, side_t in side:
                tm = merge_timings(parts.pop(f"pyattn ({key})"))
                row["side_by_side"][key] = {"label": label, "threads": side_t, **_entry(tm, side_case)}
            for name, tm_parts in parts.items():
                runner = runners[name]
                tm = merge_timings(tm_parts)
                row["impls"][name] = _entry(tm, case)
                if name != "pyattn":
                    notes = [runner.note, _agreement(ref_out, runner.output(tm.first_result), case)]
                    if any(notes):
                        row["notes"][name] = "; ".join(n for n in notes if n)
            del runners, parts, runner
            ref_out = None
        del inputs
    progress.finish()
    roof = {}
    for t, parts in roof_parts.items():
        if parts:
            tm = merge_timings(parts)
            roof[t] = {"gflops": cs.matmul_flops(_ROOF_N) / tm.median / 1e9, **tm.as_dict()}
    read = {}
    for t, parts in read_parts.items():
        if parts:
            tm = merge_timings(parts)
            read[t] = {"gb_per_s": read_bytes / tm.median / 1e9, "bytes": read_bytes, **tm.as_dict()}

    for row in results:
        t = row["threads"]
        p = row["impls"].get("pyattn")
        if p is None:
            continue
        if row["memory_bound"]:
            p["gb_per_s"] = row["bytes"] / p["median_s"] / 1e9
            if "read_same_bytes" in row:
                p["pct_read"] = 100.0 * p["gb_per_s"] / row["read_same_bytes"]["gb_per_s"]
        elif t in roof:
            p["pct_roof"] = 100.0 * p["gflops"] / roof[t]["gflops"]
        for name in baselines:
            b = row["impls"].get(name)
            if b is not None:
                p[f"x_{name}"] = b["median_s"] / p["median_s"]
        for key, s in row.get("side_by_side", {}).items():
            s["ratio"] = _side_ratio(key, p["median_s"], s["median_s"])

    report = {"meta": {**env, "preset": preset, "threads": threads_list, "skipped_baselines": skipped,
                       "roof_n": _ROOF_N, "roof_source": roof_source},
              "roof": {str(t): v for t, v in roof.items()},
              "read_roof": {str(t): v for t, v in read.items()}, "results": results}
    print_report(report, out)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, default=_json_default)
        print(f"wrote {args.json}", file=out)
    if args.plot:
        plot(report, args.plot)
        print(f"wrote {args.plot}", file=out)
    return 1 if failed else 0


def _json_default(x):
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    return str(x)


def _entry(tm, case):
    d = tm.as_dict()
    d["gflops"] = case.flops / tm.median / 1e9
    return d


def _agreement(ref, got, case):
    """A note if a baseline's output is far from pyattn's (a baseline bug)."""
    tol = 5e-2 if case.dtype != "float32" else 1e-3
    if got.shape != ref.shape:
        return f"output shape {got.shape} != {ref.shape}"
    err = float(np.max(np.abs(got - ref))) if got.size else 0.0
    return "" if err <= tol else f"output differs from pyattn by {err:.3g}"


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------


def table_rows(report):
    rows = []
    baselines = report["meta"]["baselines"]
    for r in report["results"]:
        p = r["impls"].get("pyattn")
        cells = [r["case"], str(r["threads"])]
        if p is None:
            rows.append(cells + ["FAILED"] + [""] * (len(_COLUMNS) - 3))
            continue
        cells.append(format_time(p["median_s"]))
        cells.append(f"{p['gflops']:.1f}")
        cells.append(f"{p['pct_roof']:.0f}%" if "pct_roof" in p and r["group"] != "tiny" else "-")
        cells.append(f"{p['gb_per_s']:.1f}" if "gb_per_s" in p else "-")
        cells.append(f"{p['pct_read']:.0f}%" if "pct_read" in p else "-")
        for name in bl.BASELINES:
            if name not in baselines:
                cells.append("-")
            elif f"x_{name}" in p:
                cells.append(f"{p[f'x_{name}']:.2f}")
            else:
                cells.append("n/a")
        rows.append(cells)
    return rows


def print_report(report, out=None):
    out = sys.stdout if out is None else out  # (looked up per call: tests swap it)
    meta = report["meta"]
    cfg = meta["pyattn_config"]
    v = meta["versions"]
    print(f"pyattn {cfg['version']} isa={cfg['isa']} openmp={cfg['openmp']} | numpy {v['numpy']}"
          + "".join(f" | {m} {v[m]}" for m in ("torch", "onnxruntime") if m in v and m in meta["baselines"]),
          file=out)
    cpu = meta.get("cpu_name") or meta["processor"] or meta["machine"]
    load = meta.get("load_average")
    print(f"CPU: {cpu}, {meta['cpu_count']} logical CPUs"
          + (f"; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the start" if load else ""), file=out)
    if report["roof"]:
        roofs = ", ".join(f"{t} thr {r['gflops']:.1f}" for t, r in report["roof"].items())
        print(f"matmul roof (NumPy float32 {meta['roof_n']}^3 matmul, GFLOP/s): {roofs}", file=out)
        src = meta.get("roof_source") or {}
        unset = ", ".join(f"{k}={v}" for k, v in (src.get("without") or {}).items())
        if src.get("process") == "child":
            print(f"note: matmul roof timed in a child process without {unset} (OpenBLAS kernels there: "
                  f"{src.get('architecture') or '?'}; the NumPy baseline's: "
                  f"{src.get('baseline_architecture') or '?'})", file=out)
        elif src.get("failed"):
            print(f"note: matmul roof timed with {unset} (OpenBLAS kernels: {src.get('architecture') or '?'}), "
                  f"as its child process without them failed ({src['failed']}): it can understate the roof",
                  file=out)
    if report.get("read_roof"):
        reads = ", ".join(f"{t} thr {r['gb_per_s']:.1f}" for t, r in report["read_roof"].items())
        nbytes = next(iter(report["read_roof"].values()))["bytes"]
        print(f"read roof (streaming read of {nbytes >> 20} MiB, GB/s): {reads}", file=out)
    print(f"NumPy baseline and matmul roof: BLAS threads {meta['blas_threads']}", file=out)
    if "onnxruntime" in meta["baselines"]:
        print("ONNX Runtime: intra_op_num_threads = the row's thread count, intra-op spinning off "
              "(session.intra_op.allow_spinning=0)", file=out)
    for k, val in meta["env"].items():
        if k.startswith("OPENBLAS_CORE") or k.startswith("OPENBLAS_L2"):
            print(f"note: {k}={val} is set (it can slow NumPy's matmul, the NumPy baseline)", file=out)
    if load and meta["cpu_count"] and load[0] > 0.75:
        print(f"note: load average {load[0]:.1f} at the start on {meta['cpu_count']} CPUs: other processes "
              "compete for the cores, multi-threaded timings are unreliable", file=out)
    for name, why in meta["skipped_baselines"].items():
        print(f"baseline {name} skipped: {why}", file=out)
    rows = table_rows(report)
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(_COLUMNS)]

    def fmt(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    print(fmt(_COLUMNS), file=out)
    print(fmt(["-" * w for w in widths]), file=out)
    for r in rows:
        print(fmt(r), file=out)
    print("x <baseline> = baseline time / pyattn time (> 1: pyattn is faster); "
          "% matmul: of the matmul roof (compute-bound cases); GB/s, % read bw: bytes of q, K, V, out "
          "per call / time, and that of a read of as many bytes in the same rounds (memory-bound cases); "
          "tiny cases: time per call.", file=out)
    sides = [(r, key, s) for r in report["results"] for key, s in r.get("side_by_side", {}).items()
             if "ratio" in s]
    if sides:
        print("side by side (timed in the same rounds as the row's pyattn call):", file=out)
        width = max(len(r["case"]) for r, _, _ in sides)
        for r, key, s in sides:
            pair = (f"{format_time(r['impls']['pyattn']['median_s'])} / {format_time(s['median_s'])}"
                    if key == "plain" else
                    f"{format_time(s['median_s'])} / {format_time(r['impls']['pyattn']['median_s'])}")
            print(f"  {r['case']:<{width}}  thr {r['threads']}: {s['ratio']:.2f}{s['label']} ({pair})", file=out)
    notes = {}
    for r in report["results"]:
        for name, note in r["notes"].items():
            notes.setdefault((name, note), []).append(r["case"])
    for (name, note), names in notes.items():
        uniq = sorted(set(names), key=names.index)
        print(f"  {name}: {note} [{', '.join(uniq)}]", file=out)
    for r in report["results"]:
        val = r.get("validation")
        if val and not val["ok"]:
            print(f"  VALIDATION FAILED: {r['case']} threads={r['threads']}: max |err| "
                  f"{val['max_abs_err']:.3g} ({val['worst_ratio']:.3g} x tolerance; {val['checked']})", file=out)


def plot(report, path):
    """Bar charts per thread count: GFLOP/s of the compute-bound cases with
    the matmul roof, GB/s of the memory-bound ones with the read roof."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    threads = report["meta"]["threads"]
    impls = ["pyattn"] + list(report["meta"]["baselines"])
    kinds = [(False, "gflops", "GFLOP/s", report["roof"], "gflops", "NumPy matmul roof"),
             (True, "gb_per_s", "GB/s (q, K, V, out per call)", report.get("read_roof", {}), "gb_per_s",
              "read roof")]
    panels = [(t, k) for t in threads for k in kinds
              if any(r["threads"] == t and r.get("memory_bound", False) == k[0] and not r["case"].startswith("tiny")
                     for r in report["results"])]
    fig, axes = plt.subplots(max(1, len(panels)), 1, figsize=(12, 4 * max(1, len(panels))), squeeze=False)
    for ax, (t, (mem, key, label, roofs, roof_key, roof_label)) in zip(axes[:, 0], panels):
        rows = [r for r in report["results"] if r["threads"] == t and r.get("memory_bound", False) == mem
                and not r["case"].startswith("tiny")]
        names = [r["case"] for r in rows]
        width = 0.8 / len(impls)
        top = 1.0
        for j, impl in enumerate(impls):
            vals = []
            for r in rows:
                e = r["impls"].get(impl, {})
                vals.append(e.get("median_s") and (r["bytes"] / e["median_s"] / 1e9 if mem else e["gflops"]) or 0.0)
            top = max(top, *vals) if vals else top
            ax.bar(np.arange(len(rows)) + (j - (len(impls) - 1) / 2) * width, vals, width, label=impl)
        roof = roofs.get(str(t))
        if roof:
            ax.axhline(roof[roof_key], color="k", ls="--", lw=1, label=roof_label)
            top = max(top, roof[roof_key])
        ax.set_ylim(0, top * 1.3)  # room for the legend above the bars and the roof
        ax.set_xticks(np.arange(len(rows)))
        ax.set_xticklabels(names, rotation=30, ha="right")
        ax.set_ylabel(label)
        ax.set_title(f"{t} thread(s): {'memory-bound' if mem else 'compute-bound'} cases")
        ax.legend(fontsize="small", ncol=len(impls) + 1, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def list_cases(out=None):
    out = sys.stdout if out is None else out  # (looked up per call: tests swap it)
    print(f"{'case':<20} {'group':<11} {'presets':<18} GFLOP  shape", file=out)
    for c in cs.CASES:
        flag = "" if c.available else "  (unavailable: needs ml_dtypes)"
        flag += "  [memory-bound: GB/s]" if c.memory_bound else ""
        print(f"{c.name:<20} {c.group:<11} {','.join(c.presets):<18} {c.flops / 1e9:5.1f}  {c.describe()}{flag}",
              file=out)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        list_cases()
        return 0
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        parser.error("--plot needs matplotlib, which is not installed: pip install matplotlib "
                     "(or, from a pyattn checkout, pip install \".[bench]\")")
    try:
        import pyattn  # noqa: F401  (fail early with a clear message)
    except ImportError as exc:
        print(f"pyattn-bench: cannot import pyattn: {exc}", file=sys.stderr)
        return 2
    if args.neighbours:
        if importlib.util.find_spec("torch") is None:
            print("pyattn-bench: --neighbours needs torch", file=sys.stderr)
            return 2
        from .neighbours import run_neighbours

        run_neighbours((args.threads or [2])[0], rounds=25 if args.preset == "full" else 15,
                       progress=not args.no_progress)
        return 0
    if args.e2e:
        if importlib.util.find_spec("transformers") is None or importlib.util.find_spec("torch") is None:
            print("pyattn-bench: --e2e needs torch and transformers (pip install 'pyattn[bench]')",
                  file=sys.stderr)
            return 2
        from .e2e import run_e2e

        rows, agree = run_e2e(args.threads or [1, 2], prefill=args.e2e_prefill, decode=args.e2e_decode,
                              rounds=6 if args.preset == "full" else 3, progress=not args.no_progress)
        return 0 if agree else 1
    return run(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
