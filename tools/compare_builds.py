"""Side-by-side speed of two pyattn builds: ``pyattn-bench`` runs of each,
alternating (A B B A A B ...), over the cases both builds know, pyattn only.

    python tools/compare_builds.py OLD_DIR NEW_DIR [--rounds 2] [--preset full]
        [--threads 1,2] [--case PATTERN ...]

OLD_DIR / NEW_DIR are directories that hold an importable (built) ``pyattn``
package (a checkout built in place, or a site-packages). Each run is a fresh
process with that directory first on PYTHONPATH, started from a neutral
directory. Printed per (case, threads): each build's median time (median of
its runs' medians) and old / new (> 1: the new build is faster). Nothing is
timed here itself: the figures are pyattn-bench's, so its rounds, warm-up and
validation apply.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile


def _cases(build, preset):
    out = subprocess.run([sys.executable, "-m", "pyattn.bench", "--list"], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": build}, cwd=tempfile.gettempdir(), check=True).stdout
    rows = [line.split() for line in out.splitlines()[1:] if line.strip()]
    return {r[0] for r in rows if len(r) > 2 and preset in r[2].split(",")}


def _run(build, preset, threads, cases, path):
    cmd = [sys.executable, "-m", "pyattn.bench", f"--{preset}", "--threads", threads, "--baselines", "none",
           "--no-roof", "--no-progress", "--json", path]
    for c in cases:
        cmd += ["--case", c]
    subprocess.run(cmd, env={**os.environ, "PYTHONPATH": build}, cwd=tempfile.gettempdir(), check=True,
                   stdout=subprocess.DEVNULL)
    with open(path) as f:
        report = json.load(f)
    return {(r["case"], r["threads"]): r["impls"]["pyattn"]["median_s"]
            for r in report["results"] if "pyattn" in r["impls"]}, report["meta"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--rounds", type=int, default=2, help="runs of each build (default 2)")
    ap.add_argument("--preset", default="full", choices=("quick", "full"))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--case", action="append", default=[], help="fnmatch patterns (default: every common case)")
    args = ap.parse_args(argv)
    builds = {"old": os.path.abspath(args.old), "new": os.path.abspath(args.new)}
    common = sorted(_cases(builds["old"], args.preset) & _cases(builds["new"], args.preset))
    if args.case:
        import fnmatch

        common = [c for c in common if any(fnmatch.fnmatch(c, p) for p in args.case)]
    times = {"old": [], "new": []}
    meta = None
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name in (("old", "new") if r % 2 == 0 else ("new", "old")):
                print(f"[compare] round {r + 1}/{args.rounds}: {name} build", file=sys.stderr)
                t, meta = _run(builds[name], args.preset, args.threads, common, os.path.join(tmp, f"{name}{r}.json"))
                times[name].append(t)
    keys = sorted(set.intersection(*(set(t) for runs in times.values() for t in runs)),
                  key=lambda k: (common.index(k[0]), k[1]))
    print(f"CPU: {meta.get('cpu_name') or meta.get('processor')}; pyattn-bench --{args.preset}, "
          f"{args.rounds} alternating runs of each build; old = {builds['old']}, new = {builds['new']}")
    print(f"{'case':22s} {'thr':>3s} {'old':>10s} {'new':>10s} {'old/new':>8s}")
    ratios = []
    for k in keys:
        old = statistics.median(t[k] for t in times["old"])
        new = statistics.median(t[k] for t in times["new"])
        ratios.append(old / new)
        print(f"{k[0]:22s} {k[1]:3d} {_fmt(old):>10s} {_fmt(new):>10s} {old / new:8.3f}")
    print(f"median old/new over {len(ratios)} cells: {statistics.median(ratios):.3f}; "
          f"lowest {min(ratios):.3f}, highest {max(ratios):.3f}")


def _fmt(s):
    return f"{s * 1e3:.3g} ms" if s >= 1e-3 else f"{s * 1e6:.3g} us"


if __name__ == "__main__":
    main()
