"""Long differential fuzzing campaign of pyattn's public API.

    python tools/fuzz_long.py --cases 100000 [--start-seed 0] [--workers 1]

Case i is drawn from a NumPy generator seeded with i (tests/fuzz_harness.py
describes the cases and the oracle), so any case re-runs alone with
``--start-seed i --cases 1``. Cases run in child processes: a crash (a signal
or an abort) is counted with the seed that caused it and the campaign goes
on from the next seed. Prints the cases run, crashes, contract breaks by kind
(wrong answer, modified input, missed error, wrong exception, unclear
error) and the outcomes by class (ok, TypeError, ValueError, MemoryError).
Exit status 1 if anything broke. With --workers W the seeds are cut in
chunks run by W child processes at a time; --max-minutes stops the campaign
at a time limit (the summary counts the cases that ran).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def worker(start, stop, with_layers, deadline):
    """Runs seeds [start, stop); one JSON line per case on stdout (the seed
    first, flushed before the case runs, so a crash names its seed)."""
    import warnings
    warnings.simplefilter("ignore")
    import fuzz_harness as fh
    for seed in range(start, stop):
        if time.time() > deadline:
            return
        print(json.dumps({"start": seed}), flush=True)
        try:
            outcomes = fh.run_one(fh.RngChooser(seed), with_layers=with_layers)
            print(json.dumps({"seed": seed, "outcomes": outcomes}), flush=True)
        except fh.Finding as e:
            print(json.dumps({"seed": seed, "finding": e.kind, "msg": str(e)[:2000]}), flush=True)
        except Exception as e:  # the harness itself failed: reported, never hidden
            print(json.dumps({"seed": seed, "finding": "harness error",
                              "msg": f"{type(e).__name__}: {e}"[:2000]}), flush=True)


def run_range(start, stop, with_layers, totals, findings, crashes, env, deadline):
    """Runs [start, stop) in child processes, restarting after a crash."""
    seed = start
    while seed < stop and time.time() < deadline:
        cmd = [sys.executable, __file__, "--worker", str(seed), str(stop), "--deadline", str(deadline)] \
            + ([] if with_layers else ["--no-layers"])
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        current = None
        for line in proc.stdout:
            rec = json.loads(line)
            if "start" in rec:
                current = rec["start"]
                continue
            totals["cases"] += 1
            if "finding" in rec:
                findings.append(rec)
                totals["finding: " + rec["finding"]] += 1
                print(f"seed {rec['seed']}: {rec['msg'][:1000]}", flush=True)
            else:
                for o in rec["outcomes"]:
                    totals["outcome: " + o] += 1
            seed = rec["seed"] + 1
        rc = proc.wait()
        if rc != 0:
            crashes.append({"seed": current, "returncode": rc})
            print(f"CRASH seed {current} (exit status {rc})", flush=True)
            totals["cases"] += 1
            seed = (current if current is not None else seed) + 1


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=100_000)
    p.add_argument("--start-seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1, help="parallel worker processes")
    p.add_argument("--no-layers", action="store_true", help="skip MultiHeadAttention/KVCache sessions")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop after this time (cases not run are not counted)")
    p.add_argument("--worker", nargs=2, type=int, help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, default=float("inf"), help=argparse.SUPPRESS)
    p.add_argument("--json", help="also write the summary to this file")
    args = p.parse_args()
    if args.worker:
        worker(*args.worker, with_layers=not args.no_layers, deadline=args.deadline)
        return 0

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [x for x in [env.get("PYTHONPATH")] if x])
    totals, findings, crashes = collections.Counter(), [], []
    t0 = time.time()
    deadline = t0 + 60 * args.max_minutes if args.max_minutes else float("inf")
    # Split the seeds into chunks run one after the other by each worker
    # thread (each chunk a child process), printing progress as they finish.
    import concurrent.futures as cf
    chunk = max(1, min(10000, args.cases // max(1, args.workers)))
    ranges = [(s, min(s + chunk, args.start_seed + args.cases))
              for s in range(args.start_seed, args.start_seed + args.cases, chunk)]
    with cf.ThreadPoolExecutor(args.workers) as pool:
        futs = [pool.submit(run_range, a, b, not args.no_layers, totals, findings, crashes, env, deadline) for a, b in ranges]
        for f in cf.as_completed(futs):
            f.result()
            print(f"[{time.time() - t0:7.0f} s] cases {totals['cases']}, crashes {len(crashes)}, "
                  f"contract breaks {len(findings)}", flush=True)
    elapsed = time.time() - t0

    import pyattn
    cfg = pyattn.get_config()
    print(f"\npyattn {cfg['version']} isa={cfg['isa']} openmp={cfg['openmp']}; seeds from "
          f"{args.start_seed}, {args.workers} workers; {elapsed:.0f} s")
    print(f"cases run:        {totals['cases']}")
    print(f"crashes:          {len(crashes)}")
    kinds = collections.Counter(f["finding"] for f in findings)
    print(f"wrong answers:    {kinds['wrong answer']}")
    for kind in ("modified input", "missed error", "wrong exception", "unclear error", "harness error"):
        print(f"{kind + ':':<18}{kinds[kind]}")
    print("outcomes by class (calls; a KVCache session makes several):")
    for key, n in sorted(totals.items()):
        if key.startswith("outcome: "):
            print(f"  {key[9:]:<16}{n}")
    for c in crashes[:20]:
        print(f"CRASH seed {c['seed']} (exit status {c['returncode']})")
    for f in findings[:20]:
        print(f"seed {f['seed']}: {f['msg'][:600]}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"cases": totals["cases"], "crashes": crashes, "findings": findings,
                       "outcomes": {k[9:]: n for k, n in totals.items() if k.startswith("outcome: ")},
                       "seconds": elapsed}, fh, indent=1)
    return 1 if crashes or findings else 0


if __name__ == "__main__":
    sys.exit(main())
