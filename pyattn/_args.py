"""Argument checking and normalisation shared by every public op.

Everything here turns user input into the arrays and plain values the
compiled core expects, or raises a TypeError/ValueError that names the
argument. No input array is copied unless it has to be (a dtype the core does
not compute in, or a last dimension without unit stride); broadcasting and
grouped-query heads are expressed as strided views, never materialised.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

try:  # bfloat16 is optional: it comes from ml_dtypes when installed
    from ml_dtypes import bfloat16 as _bfloat16

    _BF16 = np.dtype(_bfloat16)
except ImportError:  # pragma: no cover - depends on the environment
    _BF16 = None

_F16, _F32, _F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
_STORAGE_DTYPES = tuple(d for d in (_F16, _BF16, _F32, _F64) if d is not None)
FLOAT_DTYPE_NAMES = "float16, bfloat16, float32 or float64"


def is_float_dtype(dt: np.dtype) -> bool:
    return dt in _STORAGE_DTYPES


def half_storage_code(dt: np.dtype) -> int:
    """The core's code for q/k/v stored in 16 bits (2: bfloat16, 3: float16),
    0 for float32/float64."""
    if dt == _F16:
        return 3
    return 2 if _BF16 is not None and dt == _BF16 else 0


def compute_dtype(dt: np.dtype) -> np.dtype:
    """float64 computes in float64; every other float type in float32."""
    return _F64 if dt == _F64 else _F32


def as_array(x, name: str) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    if x is None:
        raise TypeError(f"{name} must be an array, got None")
    try:
        return np.asarray(x)
    except Exception as exc:  # e.g. a tensor that needs .detach()
        raise TypeError(f"{name} could not be converted to a NumPy array: {exc}") from exc


def check_inputs(named: dict) -> tuple[dict, np.dtype]:
    """Arrays of one supported float dtype, each at least 2-D."""
    arrays = {name: as_array(x, name) for name, x in named.items()}
    first_name, first = next(iter(arrays.items()))
    for name, a in arrays.items():
        if not is_float_dtype(a.dtype):
            raise TypeError(f"{name}: dtype {a.dtype} is not supported; expected {FLOAT_DTYPE_NAMES}")
        if a.ndim < 2:
            raise ValueError(f"{name} must have at least 2 dimensions (..., rows, features), got shape {a.shape}")
    for name, a in arrays.items():
        if a.dtype != first.dtype:
            raise TypeError(
                f"{', '.join(arrays)} must share one dtype, got "
                + ", ".join(f"{n}: {x.dtype}" for n, x in arrays.items())
            )
    return arrays, first.dtype


def for_core(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """`a` in `dtype` with a unit-stride last dimension (a copy only if needed)."""
    if a.dtype != dtype:
        return np.ascontiguousarray(a, dtype=dtype)
    if a.ndim and a.shape[-1] > 1 and a.strides[-1] != a.itemsize:
        return np.ascontiguousarray(a)
    if any(s % a.itemsize for s in a.strides):
        return np.ascontiguousarray(a)
    return a


def check_broadcasts_to(a: np.ndarray, target: tuple, name: str, what: str) -> None:
    """ValueError unless `a` broadcasts to `target` without adding dimensions."""
    if a.ndim > len(target):
        raise ValueError(f"{name} of shape {a.shape} has more dimensions than {what} {target}")
    try:
        ok = np.broadcast_shapes(a.shape, target) == target
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{name} of shape {a.shape} does not broadcast to {what} {target}")


def broadcast_batch(named_shapes: dict) -> tuple:
    shapes = list(named_shapes.values())
    if all(sh == shapes[0] for sh in shapes):  # the common case, without NumPy's slower general rule
        return tuple(shapes[0])
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        desc = ", ".join(f"{n} {tuple(s)}" for n, s in named_shapes.items())
        raise ValueError(f"batch dimensions do not broadcast: {desc}") from None


def parse_causal(is_causal) -> tuple[bool, bool]:
    """-> (causal, lower_right alignment)."""
    if isinstance(is_causal, str):
        if is_causal == "upper_left":
            return True, False
        if is_causal == "lower_right":
            return True, True
        raise ValueError(
            f"is_causal must be False, True, 'upper_left' or 'lower_right', got {is_causal!r}"
        )
    if isinstance(is_causal, (bool, np.bool_)):
        return bool(is_causal), False
    raise TypeError(
        f"is_causal must be a bool or 'upper_left'/'lower_right', got {type(is_causal).__name__}"
    )


def _window_side(x, which: str, limit: int) -> int:
    if x is None:
        return -1
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Integral):
        raise TypeError(f"window {which} side must be an int or None, got {type(x).__name__}")
    x = int(x)
    if x < 0:
        raise ValueError(f"window {which} side must be >= 0, got {x}")
    return min(x, limit)  # wider than any distance is the same as unbounded


def parse_window(window, L: int, S: int) -> tuple[int, int]:
    """-> (left, right) with -1 for unbounded."""
    limit = L + S + 1
    if window is None:
        return -1, -1
    if isinstance(window, (tuple, list)):
        if len(window) != 2:  # not one of the accepted forms: a type error, as in the reference
            raise TypeError(f"window must be None, an int or a (left, right) pair, got {window!r}")
        return _window_side(window[0], "left", limit), _window_side(window[1], "right", limit)
    if isinstance(window, numbers.Integral) and not isinstance(window, (bool, np.bool_)):
        return _window_side(window, "left", limit), 0
    raise TypeError(f"window must be None, an int or a (left, right) tuple, got {type(window).__name__}")


def parse_scale(scale, E: int) -> float:
    if scale is None:
        return 1.0 / math.sqrt(E) if E > 0 else 1.0
    if isinstance(scale, (bool, np.bool_)) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale must be a real number or None, got {type(scale).__name__}")
    scale = float(scale)
    if not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale}")
    return scale


def parse_softcap(softcap) -> float:
    """softcap as a float > 0, or 0.0 for None (off)."""
    if softcap is None:
        return 0.0
    if isinstance(softcap, (bool, np.bool_)) or not isinstance(softcap, numbers.Real):
        raise TypeError(f"softcap must be a real number or None, got {type(softcap).__name__}")
    value = float(softcap)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"softcap must be a finite number > 0, got {softcap!r}")
    return value


def prepare_per_head(x, name: str, batch: tuple, dtype: np.dtype):
    """alibi_slopes / sinks: None, or a float array of one value per query
    head broadcastable to `batch` without adding dimensions, returned in the
    compute dtype `dtype` (a view when it already is). Slopes must be finite;
    a sink may be -inf (no sink) but not +inf or NaN."""
    if x is None:
        return None
    a = as_array(x, name)
    if not is_float_dtype(a.dtype):
        raise TypeError(f"{name}: dtype {a.dtype} is not supported; expected {FLOAT_DTYPE_NAMES}")
    check_broadcasts_to(a, batch, name, "the batch shape")
    if a.dtype != dtype or any(st % a.itemsize for st in a.strides):
        if a.dtype == _F64 and dtype == _F32:
            with np.errstate(over="ignore"):
                a = a.astype(dtype)
        else:
            a = np.ascontiguousarray(a, dtype=dtype)
    with np.errstate(invalid="ignore"):
        if name == "alibi_slopes" and not np.all(np.isfinite(a)):
            raise ValueError(f"alibi_slopes must be finite (in {dtype}), got {x!r}")
        if name == "sinks" and np.any(np.isnan(a) | (a == np.inf)):
            raise ValueError(f"sinks must not be NaN or +inf (-inf means no sink), got {x!r}")
    return a


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


def parse_num_threads(num_threads, default) -> int:
    if num_threads is None:
        return default()
    return int_at_least(num_threads, "num_threads", 1, none_ok=True, maximum=MAX_THREADS)


def prepare_mask(attn_mask, batch: tuple, L: int, S: int, dtype: np.dtype):
    """A bool mask as is, or a float mask in the compute dtype, broadcastable
    to batch + (L, S) without adding dimensions."""
    if attn_mask is None:
        return None
    m = as_array(attn_mask, "attn_mask")
    if m.dtype != np.bool_ and not is_float_dtype(m.dtype):
        raise TypeError(f"attn_mask: dtype {m.dtype} is not supported; expected bool or a float dtype")
    full = batch + (L, S)
    check_broadcasts_to(m, full, "attn_mask", "the scores' shape")
    if m.dtype == np.bool_ or m.dtype == dtype:
        if any(st % m.itemsize for st in m.strides):
            return np.ascontiguousarray(m)  # strides of no whole number of items
        return m  # read in place with its strides, whatever they are
    if m.dtype == _F64 and dtype == _F32:
        # Keep finite biases finite: finfo(float64).min must stay "visible".
        f32 = np.finfo(np.float32)
        m = np.where(np.isinf(m), m, np.clip(m, f32.min, f32.max))
    return m.astype(dtype)


def prepare_lengths(kv_lengths, batch: tuple, S: int):
    """int64 lengths broadcastable to `batch` (the 1-D first-batch-dim rule
    applied), each in [0, S]."""
    if kv_lengths is None:
        return None
    n = as_array(kv_lengths, "kv_lengths")
    if n.dtype.kind not in "iu":
        raise TypeError(f"kv_lengths must be an integer array, got dtype {n.dtype}")
    nb = len(batch)
    if n.ndim == 1 and nb >= 2:
        if n.shape[0] not in (batch[0], 1):
            raise ValueError(
                f"kv_lengths of shape {n.shape} applies to the first batch dimension, "
                f"which has size {batch[0]} (batch shape {batch})"
            )
        n = n.reshape(n.shape + (1,) * (nb - 1))
    else:
        check_broadcasts_to(n, batch, "kv_lengths", "the batch shape")
    if n.size:
        lo, hi = int(n.min()), int(n.max())
        if lo < 0 or hi > S:
            raise ValueError(f"kv_lengths must lie in [0, S={S}], got values in [{lo}, {hi}]")
    n = n.astype(np.int64, copy=False)
    return n if not any(st % n.itemsize for st in n.strides) else np.ascontiguousarray(n)


def _overlaps(a: np.ndarray, b: np.ndarray) -> bool:
    try:
        return bool(np.shares_memory(a, b, max_work=1 << 20))
    except np.exceptions.TooHardError if hasattr(np, "exceptions") else Exception:
        return True


def check_out(out, shape: tuple, dtype: np.dtype, inputs: dict) -> np.ndarray:
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
    if out.dtype != dtype:
        raise TypeError(f"out has dtype {out.dtype}; the result has dtype {dtype}")
    if out.shape != shape:
        raise ValueError(f"out has shape {out.shape}; the result has shape {shape}")
    if not out.flags.writeable:
        raise ValueError("out is read-only")
    # inputs: name -> (what the user passed, the array the kernels read). Both
    # are checked: a tensor or memoryview is only seen through the second.
    for name, candidates in inputs.items():
        for a in candidates:
            if isinstance(a, np.ndarray) and _overlaps(out, a):
                raise ValueError(f"out overlaps the memory of {name}")
    return out


_INTP_MAX = int(np.iinfo(np.intp).max)


def check_size(shape: tuple, itemsize: int, name: str) -> None:
    """Refuse results whose byte size overflows before asking for memory."""
    n = itemsize
    for d in shape:
        n *= int(d)
    if n > _INTP_MAX:
        raise ValueError(f"{name} of shape {shape} would need {n} bytes, more than can be addressed")


def split_axis(a: np.ndarray, axis: int, outer: int, inner: int) -> np.ndarray:
    """View of `a` with dimension `axis` (size outer*inner) split in two."""
    st = a.strides[axis]
    shape = a.shape[:axis] + (outer, inner) + a.shape[axis + 1 :]
    strides = a.strides[:axis] + (st * inner, st) + a.strides[axis + 1 :]
    return np.lib.stride_tricks.as_strided(a, shape, strides, writeable=a.flags.writeable)


def with_ndim(a: np.ndarray, ndim: int) -> np.ndarray:
    """View of `a` with size-1 dimensions prepended up to `ndim`."""
    return a if a.ndim == ndim else a.reshape((1,) * (ndim - a.ndim) + a.shape)
