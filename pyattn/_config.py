"""Threads, dispatch and build configuration."""

from __future__ import annotations

import warnings

from . import _args, _core

__version__ = "0.1.0"


def set_num_threads(n: int) -> None:
    """Sets the threads every later call uses unless it passes num_threads.

    Process-wide: it applies to calls from every Python thread. Any n >= 1 is
    accepted (even above the core count) and get_num_threads() returns it; a
    call never starts more than 4 threads per processor (at least 32, at most
    OMP_THREAD_LIMIT), which changes no result.

    Until this is called, the default follows OpenMP: OMP_NUM_THREADS, and
    limits set with threadpoolctl (or omp_set_num_threads). OpenMP keeps such
    a limit per thread, so a threadpoolctl limit applies to pyattn calls made
    from the Python thread that set it, not to calls from other threads; use
    set_num_threads (or num_threads=) to limit every thread.
    """
    _core.set_num_threads(_args.int_at_least(n, "num_threads", 1, maximum=_args.MAX_THREADS))


def get_num_threads() -> int:
    """The thread count a call uses by default."""
    return _core.get_num_threads()


def get_config() -> dict:
    """Version, ISAs (selected, supported by this CPU, compiled in), OpenMP
    runtime, default thread count and compiler."""
    d = _core.dispatch_info()
    b = _core.build_info()
    return {
        "version": __version__,
        "isa": d["selected"],
        "isa_supported": list(d["supported"]),
        "isa_compiled": list(d["compiled"]),
        "isa_requested": d["requested"] or None,
        "openmp": b["openmp"],
        "num_threads": get_num_threads(),
        "compiler": b["compiler"],
    }


def show_config() -> None:
    """Prints get_config() as one 'key: value' line each."""
    for key, value in get_config().items():
        if isinstance(value, list):
            value = ", ".join(value)
        print(f"{key:>14}: {value}")


def warn_if_isa_refused() -> None:
    msg = _core.dispatch_info()["warning"]
    if msg:
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
