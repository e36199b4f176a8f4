"""Build pyattn's C++ core (pyattn._core) with pybind11.

Portable by default: every file is compiled for the baseline ISA of the
platform except csrc/targets/<isa>.cpp, which switch themselves to their ISA
with a target pragma; the best one is chosen at run time. OpenMP is used when
the compiler has it (otherwise the build is single-threaded and
pyattn.get_config() says so). Setting PYATTN_NATIVE=1 is an explicit
opt-in to a local -march=native build that must never be shipped.

PYATTN_STATIC_RUNTIME=1 links libstdc++ and libgcc statically into the
extensions: the result needs no libstdc++ on the target system, but needs
the glibc the static runtime was built against (on Debian 12 that raises the
floor from glibc 2.34 to 2.36: docs/building.md has the measurements).

Two extensions: pyattn._core (the C++ core, with pybind11) and
pyattn._capi_check (Cython: a user of the C API's capi.pxd built with the
package, through which the tests call the C API).

PYATTN_SANITIZE=address,undefined (or thread, or any list -fsanitize takes)
builds a sanitizer-instrumented core for tools/sanitize.sh: -O1 -g
-fno-omit-frame-pointer plus -fsanitize=<list> when compiling and linking.
Such a build must have OpenMP (the threaded code is what it checks), so it
fails instead of falling back to a single-threaded build.
"""

import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
from glob import glob

from Cython.Build import cythonize
from pybind11.setup_helpers import ParallelCompile, Pybind11Extension, build_ext
from setuptools import Extension, setup


_OPENMP_PROBE = "#include <omp.h>\nint main() { return omp_get_max_threads() > 0 ? 0 : 1; }\n"


def _compiler_accepts(compiler, flags, src=_OPENMP_PROBE, base=()):
    """True if `compiler` builds and links a tiny program (by default an
    OpenMP one) with `flags` on top of `base` (the flags every file of the
    extension gets, e.g. the sanitizer's: the probe must be built the way the
    extension will be, or it fails for reasons unrelated to `flags`)."""
    flags = list(base) + list(flags)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "t.cpp")
        with open(path, "w") as f:
            f.write(src)
        try:
            # link_executable links with the C compiler driver by default;
            # the probe is C++ and a sanitizer runtime needs the same driver
            # for compiling and linking, so link with the C++ one.
            objs = compiler.compile([path], output_dir=tmp, extra_postargs=flags)
            compiler.link_executable(objs, os.path.join(tmp, "t"), extra_postargs=flags,
                                     target_lang="c++")
        except Exception as e:  # CompileError, LinkError
            if os.environ.get("PYATTN_BUILD_VERBOSE") == "1":
                print(f"pyattn: probe with {flags} failed: {e}", file=sys.stderr)
            return False
    return True


def _sanitizer_flags():
    """-fsanitize flags from PYATTN_SANITIZE (empty when unset)."""
    wanted = os.environ.get("PYATTN_SANITIZE", "").strip()
    if not wanted:
        return []
    return [f"-fsanitize={wanted}", "-fno-omit-frame-pointer", "-g"]


def _env_sanitizer_flags():
    """-fsanitize flags given through CFLAGS/CXXFLAGS/LDFLAGS instead. The
    compiler adds CFLAGS/CXXFLAGS to the probe's compile but LDFLAGS only to
    shared-library links, so the probe executable must get them explicitly
    (otherwise its link misses the sanitizer runtime and OpenMP looks absent)."""
    words = shlex.split(" ".join(os.environ.get(v, "") for v in ("CFLAGS", "CXXFLAGS", "LDFLAGS")))
    return sorted({w for w in words if w.startswith("-fsanitize")})


class BuildExt(build_ext):
    def build_extensions(self):
        ct = self.compiler.compiler_type
        static_runtime = os.environ.get("PYATTN_STATIC_RUNTIME") == "1"
        for ext in self.extensions:
            if ct == "unix" and static_runtime:
                ext.extra_link_args += ["-static-libstdc++", "-static-libgcc"]
            if ext.name != "pyattn._core":
                continue
            if ct == "unix":
                sanitize = _sanitizer_flags()
                # A sanitizer build keeps -O1: fast enough to run the whole
                # suite, and instrumented code stays close to the source.
                ext.extra_compile_args += ["-O1" if sanitize else "-O3", "-fno-math-errno"] + sanitize
                ext.extra_link_args += sanitize
                probe_base = sanitize + _env_sanitizer_flags()
                # GCC's default inlining budget per translation unit runs out in
                # the ISA targets (each holds the float32, float64, bfloat16,
                # float16 and additive kernels): the attention loop then calls
                # tail tiles and helpers out of line, ~2% of a prefill call.
                inline = ["--param", "inline-unit-growth=200", "--param", "large-function-growth=400"]
                if _compiler_accepts(self.compiler, inline, src="int main() { return 0; }\n", base=probe_base):
                    ext.extra_compile_args += inline
                if _compiler_accepts(self.compiler, ["-fopenmp"], base=probe_base):
                    ext.extra_compile_args.append("-fopenmp")
                    ext.extra_link_args.append("-fopenmp")
                elif probe_base:
                    raise RuntimeError(
                        f"pyattn: sanitizer build: the compiler cannot build an OpenMP program with "
                        f"{probe_base} (set PYATTN_BUILD_VERBOSE=1 to see why); "
                        "a sanitizer build must check the threaded code, so it does not fall back")
                else:
                    print("pyattn: compiler has no OpenMP; building single-threaded", file=sys.stderr)
                if os.environ.get("PYATTN_NATIVE") == "1":  # opt-in, local builds only
                    ext.extra_compile_args.append("-march=native")  # PYATTN_NATIVE opt-in only
            elif ct == "msvc":
                ext.extra_compile_args += ["/O2", "/openmp"]
        super().build_extensions()


# Compile the translation units in parallel (PYATTN_BUILD_JOBS, default: all cores).
ParallelCompile("PYATTN_BUILD_JOBS").install()

_x86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")

with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "pyattn", "_config.py")) as f:
    _version = re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)

core = Pybind11Extension(
    "pyattn._core",
    sorted(glob("csrc/bindings/*.cpp") + glob("csrc/capi/*.cpp") + glob("csrc/dispatch/*.cpp") + glob("csrc/driver/*.cpp")
           + glob("csrc/kernels/*.cpp") + ["csrc/targets/generic.cpp"]
           + (["csrc/targets/avx2.cpp", "csrc/targets/avx512.cpp"] if _x86 else [])),
    include_dirs=["csrc/include", "pyattn/include"],
    # Headers and -inl.h kernels: an edit to any of them rebuilds the extension
    # (without this, `pip install .` after a header-only change reused the old one).
    depends=sorted(glob("csrc/**/*.h", recursive=True) + ["pyattn/include/pyattn_capi.h"]),
    define_macros=[("PYATTN_HAVE_X86_TARGETS", "1" if _x86 else "0"),
                   ("PYATTN_VERSION_STRING", '"%s"' % _version)],
    cxx_std=17,
)

# A C extension: it includes pyattn_capi.h as C callers do.
capi_check = Extension("pyattn._capi_check", ["pyattn/_capi_check.pyx"], include_dirs=["pyattn/include"])

setup(ext_modules=[core] + cythonize([capi_check], include_path=["."], build_dir="build/cython", quiet=True),
      cmdclass={"build_ext": BuildExt})
