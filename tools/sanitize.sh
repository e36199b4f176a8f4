#!/usr/bin/env bash
# pyattn under the sanitizers. Builds the core twice in copies of this checkout
# (the checkout's own build is not touched) and runs:
#   1. the WHOLE test suite with AddressSanitizer + UndefinedBehaviorSanitizer
#      (OpenMP on; leak detection off: CPython leaves objects allocated at exit);
#   2. LeakSanitizer over tools/sanitizer_workload.py (every entry point),
#      reporting the leaks allocated through pyattn's core (tools/lsan_report.py);
#   3. ThreadSanitizer over 8 Python threads calling a mix of entry points
#      (tools/stress.py threads and its test), one OpenMP thread per call (GNU
#      libgomp is not TSan-instrumented: its barriers look like races to TSan).
# Usage: tools/sanitize.sh [pytest args for step 1, default: the whole suite]
# Env: SANITIZE_DIR (default /tmp/pyattn-sanitize), SANITIZE_STEPS (default
# "asan lsan tsan"), SANITIZE_OMP_THREADS (see below).
set -uo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
dir="${SANITIZE_DIR:-/tmp/pyattn-sanitize}"
steps="${SANITIZE_STEPS:-asan lsan tsan}"
status=0
libasan="$(gcc -print-file-name=libasan.so)"
libubsan="$(gcc -print-file-name=libubsan.so)"
libtsan="$(gcc -print-file-name=libtsan.so)"
# allocator_may_return_null: an impossible allocation returns NULL (-> MemoryError),
# as with the normal allocator, instead of ASan stopping the process.
asan_common="allocator_may_return_null=1:abort_on_error=1:halt_on_error=1:detect_odr_violation=0:strict_string_checks=1:check_initialization_order=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
# SANITIZE_OMP_THREADS=1: one OpenMP thread by default (tests passing
# num_threads still start teams) -- on a loaded machine a 2-thread team waits
# for its second thread at every region, which makes the run many times longer.
if [[ -n "${SANITIZE_OMP_THREADS:-}" ]]; then export OMP_NUM_THREADS="$SANITIZE_OMP_THREADS"; fi

if [[ " $steps " == *" asan "* || " $steps " == *" lsan "* ]]; then
  "$here/tools/sanitize_build.sh" address,undefined "$dir/asan" || exit 1
  run_asan() {
    (cd "$dir/asan" && PYTHONPATH="$dir/asan" LD_PRELOAD="$libasan:$libubsan" PYTHONMALLOC=malloc "$@")
  }
  cfg="$(ASAN_OPTIONS="detect_leaks=0:$asan_common" run_asan python -c 'import pyattn; c = pyattn.get_config(); print(c["openmp"], c["isa"])')"
  echo "ASan+UBSan build: openmp, isa = $cfg"
  case "$cfg" in None*|"") echo "FAIL: the sanitizer build has no OpenMP"; exit 1;; esac
fi

if [[ " $steps " == *" asan "* ]]; then
  echo "=== 1. the test suite under ASan + UBSan ==="
  ASAN_OPTIONS="detect_leaks=0:$asan_common" run_asan python -m pytest -q -p no:cacheprovider "${@:-tests}" \
    || { echo "FAIL: test suite under ASan+UBSan"; status=1; }
fi

if [[ " $steps " == *" lsan "* ]]; then
  echo "=== 2. LeakSanitizer over tools/sanitizer_workload.py ==="
  log="$dir/lsan.log"
  ASAN_OPTIONS="detect_leaks=1:exitcode=0:$asan_common" LSAN_OPTIONS="report_objects=0:max_leaks=0" \
    run_asan python tools/sanitizer_workload.py 3 > "$log" 2>&1
  grep -q "workload done" "$log" || { tail -40 "$log"; echo "FAIL: the LSan workload did not finish"; status=1; }
  python "$here/tools/lsan_report.py" "$log" || { echo "FAIL: leaks through pyattn (full report: $log)"; status=1; }
fi

if [[ " $steps " == *" tsan "* ]]; then
  echo "=== 3. ThreadSanitizer: Python threads calling pyattn, one OpenMP thread each ==="
  "$here/tools/sanitize_build.sh" thread "$dir/tsan" || exit 1
  # setarch -R: TSan's fixed shadow layout needs the address space without ASLR
  # on kernels with high mmap randomisation. tools/tsan.supp explains its one entry.
  # test_concurrent_calls_from_python_threads is not run here: it asks for
  # num_threads=2, and libgomp's uninstrumented barriers then look like races.
  run_tsan() {
    (cd "$dir/tsan" && PYTHONPATH="$dir/tsan" OMP_NUM_THREADS=1 \
       TSAN_OPTIONS="halt_on_error=1:report_signal_unsafe=0:suppressions=$here/tools/tsan.supp" \
       LD_PRELOAD="$libtsan" setarch "$(uname -m)" -R "$@")
  }
  run_tsan python tools/stress.py threads --seconds 60 --threads 8 --omp-threads 1 \
    || { echo "FAIL: ThreadSanitizer (stress threads)"; status=1; }
  run_tsan python -m pytest -q -p no:cacheprovider tests/test_stress.py -k python_threads_mixed_calls \
    || { echo "FAIL: ThreadSanitizer (pytest)"; status=1; }
fi
exit $status
