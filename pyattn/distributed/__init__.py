"""Attention across MPI ranks (needs mpi4py: ``pip install "pyattn[mpi]"``).

- ``ring_attention``: a sequence split along its rows across ranks; each
  rank gets its rows of exact attention over the whole sequence, with the
  key/value shards passed around the ring of ranks while they compute.
- ``sharded_decode``: a KV cache split along its keys across ranks; every
  rank gets the attention of the same query over all ranks' keys.

Both are collective: every rank of the communicator calls them. ``import
pyattn`` does not import this module (nor mpi4py); importing it initialises
MPI (mpi4py does so on import).
"""

from ._mpi import MPI  # noqa: F401  (ImportError with install instructions when mpi4py is missing)
from .decode import sharded_decode
from .ring import ring_attention

__all__ = ["ring_attention", "sharded_decode"]
