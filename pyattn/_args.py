"""The Python half of the argument rules: what only Python can do.

Every attention op's structural rules -- q/k/v dtypes and shapes, batch
broadcasting, grouped-query heads, masks, kv_lengths, the default scale,
the score options (softcap, ALiBi slopes, sinks: their table is
csrc/include/pyattn/score_options.h), window clamping, result sizes,
``out`` -- are written once, in C++ (csrc/bindings/call_args.h), and raise
the TypeError / ValueError that names the argument. This module turns
Python-typed options into the plain values the core takes (``is_causal`` -> a code from
``_core.CAUSAL``, ``window`` -> two sides, numbers -> floats / ints,
refusing wrong types), and gives the other ops (varlen, merge, layers) the
core's shared rules by name.
"""

from __future__ import annotations

import numbers

import numpy as np

from . import _core

# The core's definitions (csrc/bindings/call_args.h), under the names the ops use.
FLOAT_DTYPE_NAMES = _core.FLOAT_DTYPE_NAMES
as_array = _core.as_array  # (x, name) -> ndarray, else TypeError naming it
is_float_dtype = _core.is_float_dtype  # float16, bfloat16, float32 or float64
compute_dtype = _core.compute_dtype  # float64 for float64, else float32


def check_inputs(named: dict) -> tuple[dict, np.dtype]:
    """Arrays of one supported float dtype, each at least 2-D (the core's rule)."""
    arrays, dtype = _core.check_float_inputs(tuple(named), tuple(named.values()))
    return dict(zip(named, arrays)), dtype


def for_core(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """`a` in `dtype` with a unit-stride last dimension (a copy only if needed)."""
    return np.ascontiguousarray(a, dtype=dtype) if a.dtype != dtype else _core.kernel_ready(a)


CAUSAL = _core.CAUSAL  # is_causal's codes (csrc/bindings/call_args.h)
STORAGE = _core.STORAGE  # element-type codes of the core (pyattn/strided.h DType)
_CAUSAL_STRINGS = {"upper_left": CAUSAL["upper_left"], "lower_right": CAUSAL["lower_right"]}

# Window sides are passed as int64: wider ones are the same as unbounded
# (the core clamps every side to L + S + 1).
_SIDE_MAX = 2**62


def causal_code(is_causal) -> int:
    """is_causal as the core's code: False, True (= "upper_left"),
    "upper_left" or "lower_right"."""
    if is_causal is False:
        return CAUSAL["none"]
    if is_causal is True:
        return CAUSAL["upper_left"]
    if isinstance(is_causal, str):
        code = _CAUSAL_STRINGS.get(is_causal)
        if code is None:
            raise ValueError(f"is_causal must be False, True, 'upper_left' or 'lower_right', got {is_causal!r}")
        return code
    if isinstance(is_causal, np.bool_):
        return causal_code(bool(is_causal))
    raise TypeError(f"is_causal must be a bool or 'upper_left'/'lower_right', got {type(is_causal).__name__}")


def _window_side(x, which: str) -> int:
    if x is None:
        return -1
    if type(x) is int and 0 <= x <= _SIDE_MAX:  # (the common case first)
        return x
    if type(x) is not int and (isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Integral)):
        raise TypeError(f"window {which} side must be an int or None, got {type(x).__name__}")
    x = int(x)
    if x < 0:
        raise ValueError(f"window {which} side must be >= 0, got {x}")
    return min(x, _SIDE_MAX)


def window_sides(window) -> tuple[int, int]:
    """-> (left, right), -1 for an unbounded side: None, an int w (= (w, 0))
    or a (left, right) pair of ints or None."""
    if window is None:
        return -1, -1
    if type(window) is int and 0 <= window <= _SIDE_MAX:
        return window, 0
    if isinstance(window, (tuple, list)):
        if len(window) != 2:  # not one of the accepted forms: a type error, as in the reference
            raise TypeError(f"window must be None, an int or a (left, right) pair, got {window!r}")
        return _window_side(window[0], "left"), _window_side(window[1], "right")
    if type(window) is int or (isinstance(window, numbers.Integral) and not isinstance(window, (bool, np.bool_))):
        return _window_side(window, "left"), 0
    raise TypeError(f"window must be None, an int or a (left, right) tuple, got {type(window).__name__}")


def real_or_none(x, name: str):
    """scale checked to be a real number (not a bool) or None; its value is
    the core's rule, which reads it as a float (the core applies the same
    type rule to scalar score options such as softcap)."""
    if x is None or type(x) is float:
        return x
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Real):
        raise TypeError(f"{name} must be a real number or None, got {type(x).__name__}")
    return x


def int_at_least(x, name: str, minimum: int, none_ok: bool = False, maximum=None) -> int:
    """`x` as an int in [minimum, maximum]: TypeError for a non-integer
    (bools too), ValueError outside the range, both naming the argument."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Integral):
        kind = "an int or None" if none_ok else "an int"
        raise TypeError(f"{name} must be {kind}, got {type(x).__name__}")
    x = int(x)
    if x < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {x}")
    if maximum is not None and x > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {x}")
    return x


MAX_THREADS = 2**31 - 1  # the core counts threads in a C int


def thread_count(num_threads) -> int:
    """num_threads as the core takes it: 0 for None (the global setting)."""
    if num_threads is None:
        return 0
    if type(num_threads) is int and 1 <= num_threads <= MAX_THREADS:
        return num_threads
    return int_at_least(num_threads, "num_threads", 1, none_ok=True, maximum=MAX_THREADS)


def prepare_per_head(x, name: str, batch: tuple, dtype: np.dtype):
    """A per-head score option, e.g. sinks (the core's rule): None, or a
    float array of one value per query head broadcastable to `batch` without
    adding dimensions, in `dtype`, each value passing the option's rule."""
    return None if x is None else _core.per_head(x, name, batch, dtype)


def check_out(out, shape: tuple, dtype: np.dtype, inputs: dict) -> np.ndarray:
    """out for a result of `shape` and `dtype` (the core's rule); `inputs`:
    name -> (what the user passed, the array the kernels read)."""
    return _core.check_out(out, shape, dtype, [(n, a) for n, pair in inputs.items() for a in pair])


def check_size(shape: tuple, itemsize: int, name: str) -> None:
    """Refuse results whose byte size overflows before asking for memory."""
    _core.check_size(shape, itemsize, name)


def call_shape(q, k, v, enable_gqa) -> tuple:
    """(batch, L, S, E, Ev) of an attention call on q, k, v (the core's rule:
    feature sizes, rows, batch broadcasting, grouped-query heads)."""
    return _core.call_shape((q, k, v), bool(enable_gqa))


def scale_value(scale, E: int) -> float:
    """The scale a call uses: ``scale`` (a finite real number), or 1/sqrt(E)
    (1 for E = 0) for None."""
    return _core.scale_or_default(real_or_none(scale, "scale"), E)
