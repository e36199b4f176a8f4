#!/usr/bin/env bash
# valgrind memcheck of tools/sanitizer_workload.py (every entry point once)
# with the checkout's in-place build; tools/valgrind_report.py then separates
# pyattn's reports from the interpreter's. PYTHONMALLOC=malloc makes every
# Python allocation visible to memcheck. Takes minutes (the interpreter runs
# ~50x slower under memcheck). Exit status 1 if pyattn has a report.
# Usage: tools/valgrind_check.sh [log file]
set -uo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
log="${1:-/tmp/pyattn-valgrind.log}"
cd "$here"
PYTHONPATH="$here" PYTHONMALLOC=malloc OMP_NUM_THREADS=2 valgrind --tool=memcheck \
  --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite \
  --track-origins=yes --num-callers=40 --error-exitcode=99 \
  python tools/sanitizer_workload.py 1 > "$log" 2>&1
rc=$?
grep -q "workload done" "$log" || { tail -40 "$log"; echo "FAIL: the workload did not finish under valgrind (exit $rc)"; exit 1; }
python "$here/tools/valgrind_report.py" "$log"
