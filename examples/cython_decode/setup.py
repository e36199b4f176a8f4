"""Builds the example extension `decode` against the installed pyattn:

    python setup.py build_ext --inplace

pyattn must be importable (for pyattn.get_include() and pyattn/capi.pxd);
nothing is linked against it: the C API's functions are looked up at import.
"""

import pyattn
from Cython.Build import cythonize
from setuptools import Extension, setup

ext = Extension("decode", ["decode.pyx"], include_dirs=[pyattn.get_include()])

setup(name="pyattn-cython-decode-example", ext_modules=cythonize([ext], language_level=3, quiet=True))
