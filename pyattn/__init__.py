"""pyattn: fast, exact attention for CPUs.

    >>> import numpy as np, pyattn
    >>> q = k = v = np.random.rand(2, 8, 128, 64).astype(np.float32)
    >>> out = pyattn.scaled_dot_product_attention(q, k, v, is_causal=True)

See pyattn.reference for the NumPy implementation of the same API, and the
documentation in the docs/ folder of pyattn's source tree and sdist:
docs/index.md lists every page, docs/api.md states every function, option,
error and promise, docs/capi.md the C API for Cython and C
(``cimport pyattn.capi``; ``pyattn.get_include()`` is its header's folder).
"""

import os as _os

try:
    from . import _core
except ImportError as _exc:  # pragma: no cover - depends on how pyattn was installed
    _here = _os.path.dirname(_os.path.abspath(__file__))
    raise ImportError(
        f"pyattn's compiled core (pyattn._core) cannot be imported from {_here}: {_exc}. "
        "If that folder is pyattn's source tree (a checkout), Python is importing the sources "
        "instead of the installed package: run Python from another directory, or build the "
        "core in place with `python setup.py build_ext --inplace` (or `pip install -e .`)."
    ) from _exc

from . import reference
from ._config import (
    __version__, get_config, get_num_threads, get_thread_wait, set_num_threads, set_thread_wait, show_config,
)
from ._config import _thread_wait_from_environment
from ._config import warn_if_isa_refused as _warn_if_isa_refused
from .additive import additive_attention
from .attention import scaled_dot_product_attention
from .kv_cache import KVCache
from .merge import merge_attention_states
from .multihead import MultiHeadAttention
from .varlen import varlen_attention

__all__ = [
    "scaled_dot_product_attention",
    "varlen_attention",
    "additive_attention",
    "merge_attention_states",
    "MultiHeadAttention",
    "KVCache",
    "set_num_threads",
    "get_num_threads",
    "set_thread_wait",
    "get_thread_wait",
    "get_config",
    "show_config",
    "reference",
    "get_include",
    "__version__",
]



def get_include() -> str:
    """The directory of pyattn_capi.h, the C API's header (for Cython
    extensions that ``cimport pyattn.capi``, and for C code)."""
    return _os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "include")


_warn_if_isa_refused()
_thread_wait_from_environment()
