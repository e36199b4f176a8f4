"""Build pyattn's C++ core (pyattn._core) with pybind11.

Portable by default: every file is compiled for the baseline ISA of the
platform except csrc/targets/<isa>.cpp, which switch themselves to their ISA
with a target pragma; the best one is chosen at run time. OpenMP is used when
the compiler has it (otherwise the build is single-threaded and
pyattn.get_config() says so). Setting PYATTN_NATIVE=1 is an explicit
opt-in to a local -march=native build that must never be shipped.
"""

import os
import platform
import subprocess
import sys
import tempfile
from glob import glob

from pybind11.setup_helpers import ParallelCompile, Pybind11Extension, build_ext
from setuptools import setup


_OPENMP_PROBE = "#include <omp.h>\nint main() { return omp_get_max_threads() > 0 ? 0 : 1; }\n"


def _compiler_accepts(compiler, flags, src=_OPENMP_PROBE):
    """True if `compiler` builds and links a tiny program (by default an
    OpenMP one) with `flags`."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "t.cpp")
        with open(path, "w") as f:
            f.write(src)
        try:
            objs = compiler.compile([path], output_dir=tmp, extra_postargs=flags)
            compiler.link_executable(objs, os.path.join(tmp, "t"), extra_postargs=flags)
        except Exception:
            return False
    return True


class BuildExt(build_ext):
    def build_extensions(self):
        ct = self.compiler.compiler_type
        for ext in self.extensions:
            if ct == "unix":
                ext.extra_compile_args += ["-O3", "-fno-math-errno"]
                # GCC's default inlining budget per translation unit runs out in
                # the ISA targets (each holds the float32, float64, bfloat16,
                # float16 and additive kernels): the attention loop then calls
                # tail tiles and helpers out of line, ~2% of a prefill call.
                inline = ["--param", "inline-unit-growth=200", "--param", "large-function-growth=400"]
                if _compiler_accepts(self.compiler, inline, src="int main() { return 0; }\n"):
                    ext.extra_compile_args += inline
                if _compiler_accepts(self.compiler, ["-fopenmp"]):
                    ext.extra_compile_args.append("-fopenmp")
                    ext.extra_link_args.append("-fopenmp")
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

ext = Pybind11Extension(
    "pyattn._core",
    sorted(glob("csrc/bindings/*.cpp") + glob("csrc/dispatch/*.cpp") + glob("csrc/driver/*.cpp")
           + glob("csrc/kernels/*.cpp") + ["csrc/targets/generic.cpp"]
           + (["csrc/targets/avx2.cpp", "csrc/targets/avx512.cpp"] if _x86 else [])),
    include_dirs=["csrc/include"],
    # Headers and -inl.h kernels: an edit to any of them rebuilds the extension
    # (without this, `pip install .` after a header-only change reused the old one).
    depends=sorted(glob("csrc/**/*.h", recursive=True)),
    define_macros=[("PYATTN_HAVE_X86_TARGETS", "1" if _x86 else "0")],
    cxx_std=17,
)

setup(ext_modules=[ext], cmdclass={"build_ext": BuildExt})
