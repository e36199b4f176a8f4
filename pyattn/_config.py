"""Threads, dispatch and build configuration (docs/api.md section 5)."""

from __future__ import annotations

import os
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


_THREAD_WAITS = ("auto", "passive", "active")


def set_thread_wait(policy: str) -> None:
    """What pyattn's OpenMP threads do between calls (process-wide).

    - ``"passive"``: after each multi-threaded call the calling thread's
      OpenMP pool is released (its threads exit), so none of pyattn's threads
      spins while the process runs something else; each call starts its
      threads anew (tens of microseconds).
    - ``"active"``: threads stay in the OpenMP runtime's pool, which spins
      idle threads for a while (``GOMP_SPINCOUNT``/``OMP_WAIT_POLICY``)
      before they sleep: fastest for back-to-back pyattn calls, but the
      spinning takes CPU time from the next operation of another runtime.
    - ``"auto"`` (default): passive when pyattn's OpenMP runtime is a private
      copy (a wheel's renamed ``libgomp-<hash>.so``: nothing else reuses its
      threads), active when it is the process's shared ``libgomp.so.1``, whose
      threads torch's OpenMP regions reuse as well (then nothing spins beside
      torch: it is the same team).

    The environment variable ``PYATTN_THREAD_WAIT`` sets it at import.
    Results never depend on it.
    """
    if policy not in _THREAD_WAITS:
        raise ValueError(f"thread wait policy must be one of {_THREAD_WAITS}, got {policy!r}")
    _core.set_thread_wait(policy)


def get_thread_wait() -> str:
    """The thread wait setting (``"auto"``, ``"passive"`` or ``"active"``)."""
    return _core.thread_wait_info()["setting"]


def _thread_wait_description() -> str:
    info = _core.thread_wait_info()
    shared = "private OpenMP runtime" if info["private_runtime"] else "shared OpenMP runtime"
    return f"{info['setting']} ({'passive' if info['passive'] else 'active'}; {shared})"


def _thread_wait_from_environment() -> None:
    policy = os.environ.get("PYATTN_THREAD_WAIT")
    if policy:
        try:
            set_thread_wait(policy.strip().lower())
        except ValueError as exc:
            warnings.warn(f"PYATTN_THREAD_WAIT ignored: {exc}", RuntimeWarning, stacklevel=3)


def get_config() -> dict:
    """Version, ISAs (selected, supported by this CPU, compiled in), OpenMP
    runtime, default thread count, thread wait policy, the OpenMP runtime
    libraries loaded in the process now, and compiler."""
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
        "thread_wait": _thread_wait_description(),
        "openmp_runtimes": list(_core.openmp_runtimes_loaded()),
        "compiler": b["compiler"],
    }


def show_config() -> None:
    """Prints get_config() as one 'key: value' line each."""
    for key, value in get_config().items():
        if isinstance(value, list):
            value = ", ".join(value)
        print(f"{key:>15}: {value}")


_several_runtimes_warned = False


def warn_if_several_openmp_runtimes(stacklevel: int = 3) -> bool:
    """Warns (once per process) when more than one OpenMP runtime library is
    loaded. Each runtime has its own thread pool, and idle threads of one
    spin on the cores while the other's threads work: torch right after
    pyattn, or pyattn right after torch, then runs several times slower.
    pyattn.torch calls it when imported and the transformers backend's
    register() when called (torch is loaded by then). Returns whether
    several runtimes are loaded."""
    global _several_runtimes_warned
    loaded = list(_core.openmp_runtimes_loaded())
    if len(loaded) < 2 or _core.build_info()["openmp"] is None:
        return False
    if not _several_runtimes_warned:
        _several_runtimes_warned = True
        names = ", ".join(os.path.basename(path) for path in loaded)
        warnings.warn(
            f"{len(loaded)} OpenMP runtimes are loaded in this process ({names}); pyattn uses "
            f"{_core.build_info()['openmp']}. Each has a thread pool of its own whose idle threads "
            "spin while the other's threads work, which can make pyattn and torch run several "
            "times slower when their calls alternate. Use one runtime (pyattn built or installed "
            "against the system's libgomp.so.1, as from source or from the manylinux wheels, "
            "shares torch's), or set OMP_WAIT_POLICY=passive in the environment before Python "
            "starts. See 'Threads next to torch and ONNX Runtime' in docs/torch.md.",
            RuntimeWarning, stacklevel=stacklevel)
    return True


def warn_if_isa_refused() -> None:
    msg = _core.dispatch_info()["warning"]
    if msg:
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
