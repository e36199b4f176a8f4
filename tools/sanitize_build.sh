#!/usr/bin/env bash
# Builds pyattn's core with PYATTN_SANITIZE=$1 (e.g. address,undefined or
# thread) in a copy of this checkout at $2 (the checkout's own in-place build
# is left alone), and checks that the build has OpenMP.
# Usage: tools/sanitize_build.sh address,undefined /tmp/pyattn-asan
set -euo pipefail
sanitize="$1"
dest="$2"
src="$(cd "$(dirname "$0")/.." && pwd)"

mkdir -p "$dest"
# The sources as they are in the work tree (committed or not), no build output.
(cd "$src" && git ls-files -co --exclude-standard -z) \
  | (cd "$src" && xargs -0 cp -p --parents -t "$dest")
cd "$dest"
# (-p keeps modification times: rebuilding an unchanged copy compiles nothing.)
export CCACHE_DIR="${CCACHE_DIR:-/work/.ccache}" CCACHE_BASEDIR="${CCACHE_BASEDIR:-$dest}"
if command -v ccache >/dev/null; then export CC="${CC:-ccache gcc}" CXX="${CXX:-ccache g++}"; fi
PYATTN_SANITIZE="$sanitize" python setup.py build_ext --inplace -j "${PYATTN_BUILD_JOBS:-2}" \
  > "$dest/build.log" 2>&1 || { tail -30 "$dest/build.log"; exit 1; }
echo "built PYATTN_SANITIZE=$sanitize in $dest (log: $dest/build.log)"
