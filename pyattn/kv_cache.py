"""KVCache: a preallocated key/value cache for incremental decoding."""

from __future__ import annotations


import numpy as np

from . import _args
from .attention import _sdpa_over_stored_kv, scaled_dot_product_attention

KV_DTYPES = (None, "bfloat16", "float16", "int8")
_I8_MAX = 127


def _storage_dtype(kv_dtype: str) -> np.dtype:
    if kv_dtype == "int8":
        return np.dtype(np.int8)
    if kv_dtype == "float16":
        return np.dtype(np.float16)
    try:
        import ml_dtypes
    except ImportError:
        raise ValueError("kv_dtype='bfloat16' needs ml_dtypes (pip install ml_dtypes)") from None
    return np.dtype(ml_dtypes.bfloat16)


def quantize_int8(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 quantisation of the rows of ``x`` (..., d): returns
    ``codes`` int8 (..., d) and ``scales`` float32 (...) with
    ``scale = max|x| / 127`` (rounded to float32) and ``code = rint(x / scale)``
    in [-127, 127], so ``|x - scale * code| <= scale / 2`` per element. A row
    of zeros gets scale 0 and codes 0 (no 0/0: it dequantises to exact
    zeros). A row holding inf or NaN, or whose scale overflows float32, gets
    scale NaN and codes 0: it dequantises to a row of NaN."""
    x64 = np.asarray(x, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        amax = np.max(np.abs(x64), axis=-1) if x64.shape[-1] else np.zeros(x64.shape[:-1])
        scales = (amax / _I8_MAX).astype(np.float32)
        bad = ~np.isfinite(scales)
        scales[bad] = np.nan
        empty = (bad | (scales == 0))[..., None]
        codes = np.where(empty, 0.0, np.rint(x64 / np.where(empty, 1.0, scales.astype(np.float64)[..., None])))
    np.clip(codes, -_I8_MAX, _I8_MAX, out=codes)
    return codes.astype(np.int8), scales


class KVCache:
    """Preallocated keys and values of ``batch`` sequences, each with its own length.

    Args:
        batch: number of sequences ``B``.
        num_kv_heads: key/value heads ``Hkv``.
        head_dim: key feature size ``d`` (also the query's).
        max_seq_len: capacity in positions per sequence.
        value_dim: value feature size ``dv`` (default ``head_dim``).
        dtype: float32, float64, float16 or bfloat16 (the last two are
            computed in float32 by ``attend``, as everywhere in pyattn): the
            dtype of what ``append`` takes and ``attend`` returns.
        kv_dtype: how keys and values are stored: ``None`` (in ``dtype``),
            ``"bfloat16"`` or ``"float16"`` (rounded to that type), or
            ``"int8"`` (symmetric int8 with one float32 scale per batch
            element, kv head and position, for keys and for values:
            ``scale = max|x| / 127`` over the head dim, see
            :func:`quantize_int8`). With a ``kv_dtype``, ``attend`` computes in
            float32 from the stored form (the kernels read it in place) and
            returns ``dtype``; its error is bounded in docs/kv_cache.md.

    Attributes:
        keys: ``(B, Hkv, max_seq_len, d)``, values: ``(B, Hkv, max_seq_len, dv)``
            -- the whole buffers, in the storage dtype (int8 codes for
            ``kv_dtype="int8"``); positions at or beyond an element's length
            are never read into a result (they are hidden by ``kv_lengths``).
        key_scales, value_scales: float32 ``(B, Hkv, max_seq_len)`` for
            ``kv_dtype="int8"`` (key ``j`` is ``key_scales[..., j] *
            keys[..., j, :]``), else ``None``.
        lengths: read-only int64 ``(B,)``, the number of cached positions of
            each element (0 after construction and ``reset()``).

    Example (greedy decoding; ``project`` gives q, k, v of shape (B, H, T, d))::

        cache = pyattn.KVCache(B, Hkv, d, max_seq_len=2048)
        q, k, v = project(prompt)          # T = prompt length
        cache.append(k, v)
        out = cache.attend(q)              # causal over the prompt
        for step in range(n_new):
            q, k, v = project(next_token)  # T = 1
            cache.append(k, v)
            out = cache.attend(q)          # attends to every cached position

    The full contract: docs/api.md, section 4.
    """

    def __init__(self, batch, num_kv_heads, head_dim, max_seq_len, *, value_dim=None, dtype=np.float32,
                 kv_dtype=None):
        B = _args.int_at_least(batch, "batch", 0)
        Hkv = _args.int_at_least(num_kv_heads, "num_kv_heads", 1)
        d = _args.int_at_least(head_dim, "head_dim", 0)
        n = _args.int_at_least(max_seq_len, "max_seq_len", 0)
        dv = d if value_dim is None else _args.int_at_least(value_dim, "value_dim", 0)
        try:
            dt = np.dtype(dtype)
        except TypeError as exc:
            raise TypeError(f"dtype must be a float dtype, got {dtype!r}") from exc
        if not _args.is_float_dtype(dt):
            raise TypeError(f"dtype must be float16, bfloat16, float32 or float64, got {dt}")
        if kv_dtype is not None and not isinstance(kv_dtype, str):
            raise TypeError(f"kv_dtype must be None or one of 'bfloat16', 'float16', 'int8', "
                            f"got {type(kv_dtype).__name__}")
        if kv_dtype not in KV_DTYPES:
            raise ValueError(f"kv_dtype must be None, 'bfloat16', 'float16' or 'int8', got {kv_dtype!r}")
        st = dt if kv_dtype is None else _storage_dtype(kv_dtype)
        self.batch, self.num_kv_heads, self.head_dim, self.value_dim = B, Hkv, d, dv
        self.max_seq_len, self.dtype, self.kv_dtype = n, dt, kv_dtype
        # Stored apart: attend reads keys/values of another dtype than q's.
        self._apart = st != dt
        self.keys = np.zeros((B, Hkv, n, d), st)
        self.values = np.zeros((B, Hkv, n, dv), st)
        self.key_scales = self.value_scales = None
        if kv_dtype == "int8":
            self.key_scales = np.zeros((B, Hkv, n), np.float32)
            self.value_scales = np.zeros((B, Hkv, n), np.float32)
        self._set_lengths(np.zeros(B, np.int64))

    def _set_lengths(self, lengths: np.ndarray, max_length=None, uniform=None) -> None:
        # The longest length and whether all are equal are kept, not recomputed
        # per attend()/append() (a decoding step is a few microseconds of work).
        lengths.flags.writeable = False
        self._lengths = lengths
        if max_length is None:
            max_length = int(lengths.max()) if lengths.size else 0
            uniform = not lengths.size or int(lengths.min()) == max_length
        self._max_length, self._uniform = max_length, uniform

    @property
    def lengths(self) -> np.ndarray:
        # A read-only view: its flag cannot be turned back on (the cache keeps
        # the longest length, which a write behind its back would make stale).
        return self._lengths.view()

    @property
    def max_length(self) -> int:
        """The longest cached sequence: the key dimension ``S`` that ``attend``
        works over (its ``attn_mask`` and weights have ``S`` columns)."""
        return self._max_length

    @property
    def used_keys(self) -> np.ndarray:
        """View ``(B, Hkv, max_length, d)`` of the keys as stored (shorter
        elements' tails are unused)."""
        return self.keys[:, :, : self._max_length]

    @property
    def used_values(self) -> np.ndarray:
        """View ``(B, Hkv, max_length, dv)`` of the values as stored."""
        return self.values[:, :, : self._max_length]

    def dequantize(self) -> tuple[np.ndarray, np.ndarray]:
        """``(keys, values)`` over the first ``max_length`` positions as
        ``attend`` sees them: float32 for a ``kv_dtype`` (int8: each code
        times its position's scale, rounded to float32 -- exactly the numbers
        the kernels compute with), else the views ``used_keys`` and
        ``used_values``."""
        k, v = self.used_keys, self.used_values
        if not self._apart:
            return k, v
        if self.kv_dtype != "int8":
            return k.astype(np.float32), v.astype(np.float32)
        n = self._max_length
        return (k.astype(np.float32) * self.key_scales[:, :, :n, None],
                v.astype(np.float32) * self.value_scales[:, :, :n, None])

    def _stored(self, k, v):
        """k and v in the storage form: (k, v, key scales, value scales)."""
        if not self._apart:
            return k, v, None, None
        if self.kv_dtype == "int8":
            kc, ks = quantize_int8(k)
            vc, vs = quantize_int8(v)
            return kc, vc, ks, vs
        st = self.keys.dtype
        with np.errstate(over="ignore"):  # (out of range: inf, as any cast to a narrower float)
            return k.astype(st), v.astype(st), None, None

    def reset(self, index=None) -> None:
        """Forgets the cached positions of every element, or of the elements
        ``index`` selects (an int, a sequence of ints, a slice or a bool mask
        over the batch -- e.g. to reuse a finished sequence's slot); the
        buffers are kept."""
        if index is None:
            self._set_lengths(np.zeros(self.batch, np.int64))
            return
        lengths = self._lengths.copy()
        try:
            lengths[index] = 0
        except (IndexError, TypeError, ValueError) as exc:
            raise type(exc)(f"reset: bad index {index!r} for batch {self.batch}: {exc}") from None
        self._set_lengths(lengths)

    def _check(self, a, name: str, features: int, T=None) -> np.ndarray:
        a = _args.as_array(a, name)
        if a.dtype != self.dtype:
            raise TypeError(f"{name}: dtype {a.dtype} does not match the cache's dtype {self.dtype}")
        B, Hkv = self.batch, self.num_kv_heads
        if a.ndim != 4 or a.shape[:2] != (B, Hkv) or a.shape[3] != features or (T is not None and a.shape[2] != T):
            want = f"({B}, {Hkv}, {'T' if T is None else T}, {features})"
            raise ValueError(f"{name} must have shape (batch, num_kv_heads, T, {'head_dim' if name == 'k' else 'value_dim'})"
                             f" = {want}, got {a.shape}")
        return a

    def append(self, k, v, *, counts=None) -> np.ndarray:
        """Writes ``k (B, Hkv, T, d)`` and ``v (B, Hkv, T, dv)`` at each element's
        current length (elements may have different lengths) and returns the
        new ``lengths``.

        ``counts`` (integer ``(B,)``, each in ``[0, T]``) appends only the
        first ``counts[b]`` rows of element ``b`` -- a right-padded batch of
        prompts of different lengths; by default every element gets all ``T``.
        Raises before changing anything: ``TypeError`` for a dtype other than
        the cache's (or non-integer counts), ``ValueError`` for wrong shapes
        or counts, or if some element would exceed ``max_seq_len``."""
        k = self._check(k, "k", self.head_dim)
        T = k.shape[2]
        v = self._check(v, "v", self.value_dim, T)
        B = self.batch
        old = self._lengths
        if counts is None:
            # Every element gets all T rows: the longest length grows by T and
            # equal lengths stay equal (one slice copy, no scatter).
            if B and self._max_length + T > self.max_seq_len:
                self._raise_overflow(np.full(B, T, np.int64))
            if T and B:
                k, v, ks, vs = self._stored(k, v)
                if self._uniform:
                    n0 = self._max_length
                    self.keys[:, :, n0:n0 + T] = k
                    self.values[:, :, n0:n0 + T] = v
                    if ks is not None:
                        self.key_scales[:, :, n0:n0 + T] = ks
                        self.value_scales[:, :, n0:n0 + T] = vs
                else:
                    self._scatter(k, v, ks, vs, np.full(B, T, np.int64))
            new = old + T
            self._set_lengths(new, self._max_length + T if B else 0, self._uniform)
            return self.lengths
        add = _args.as_array(counts, "counts")
        if add.dtype.kind not in "iu":
            raise TypeError(f"counts must be an integer array, got dtype {add.dtype}")
        if add.shape != (B,):
            raise ValueError(f"counts must have shape (batch,) = ({B},), got {add.shape}")
        if B and (add.min() < 0 or add.max() > T):
            raise ValueError(f"counts must lie in [0, T={T}], got {add.tolist()}")
        add = add.astype(np.int64)
        if (old + add > self.max_seq_len).any():
            self._raise_overflow(add)
        if T and B:
            self._scatter(*self._stored(k, v), add)
        new = old + add
        self._set_lengths(new)
        return self.lengths

    def _scatter(self, k, v, ks, vs, add) -> None:
        """Row t < add[b] of element b goes to position lengths[b] + t (one
        fancy-indexed copy per buffer)."""
        T = k.shape[2]
        b_idx, t_idx = np.nonzero(np.arange(T) < add[:, None])
        pos = self._lengths[b_idx] + t_idx
        # advanced indices around a slice put the (rows) dim first
        self.keys[b_idx, :, pos] = k[b_idx, :, t_idx]
        self.values[b_idx, :, pos] = v[b_idx, :, t_idx]
        if ks is not None:
            self.key_scales[b_idx, :, pos] = ks[b_idx, :, t_idx]
            self.value_scales[b_idx, :, pos] = vs[b_idx, :, t_idx]

    def _raise_overflow(self, add) -> None:
        old = self._lengths
        over = np.nonzero(old + add > self.max_seq_len)[0]
        raise ValueError(
            f"append of {add[over].tolist()} positions to batch elements {over.tolist()} holding "
            f"{old[over].tolist()} overflows the cache (max_seq_len={self.max_seq_len})")

    def attend(self, q, **sdpa_kwargs):
        """``scaled_dot_product_attention(q, keys, values, kv_lengths=lengths,
        is_causal="lower_right", **sdpa_kwargs)`` over the cached positions.

        ``q`` is ``(B, Hq, L, d)``: the last ``L`` positions of each sequence
        (query row ``i`` of element ``b`` sits at position
        ``lengths[b] - L + i`` and sees the cached keys up to it). ``Hq`` must
        be a multiple of ``Hkv``; ``enable_gqa`` is set when they differ.
        ``is_causal`` may be overridden: ``False`` for a cross-attention
        cache, ``True`` (upper-left) for the queries of a right-padded prefill
        appended with ``counts`` (row ``i`` at position ``i``; rows at or past
        ``lengths[b]`` are padding); ``kv_lengths`` may not. The key dimension is ``max_length``:
        an ``attn_mask`` is broadcast to ``(B, Hq, L, max_length)`` and
        returned weights have that shape.
        """
        q = _args.as_array(q, "q")
        B, Hkv, d = self.batch, self.num_kv_heads, self.head_dim
        if q.ndim != 4 or q.shape[0] != B or q.shape[3] != d:
            raise ValueError(f"q must have shape (batch={B}, heads, L, head_dim={d}), got {q.shape}")
        if q.shape[1] % Hkv:
            raise ValueError(f"q has {q.shape[1]} heads, not a multiple of num_kv_heads={Hkv}")
        if "kv_lengths" in sdpa_kwargs:
            raise TypeError("attend() sets kv_lengths from the cache; it cannot be passed")
        sdpa_kwargs.setdefault("is_causal", "lower_right")
        sdpa_kwargs.setdefault("enable_gqa", q.shape[1] != Hkv)
        if self._apart:
            if q.dtype != self.dtype:
                raise TypeError(f"q: dtype {q.dtype} does not match the cache's dtype {self.dtype}")
            n = self._max_length
            ks = vs = None
            if self.key_scales is not None:
                ks, vs = self.key_scales[:, :, :n], self.value_scales[:, :, :n]
            return _sdpa_over_stored_kv(q, self.used_keys, self.used_values, self.kv_dtype, ks, vs,
                                        kv_lengths=self._lengths, **sdpa_kwargs)
        return scaled_dot_product_attention(q, self.used_keys, self.used_values, kv_lengths=self._lengths,
                                            **sdpa_kwargs)

    def __repr__(self):
        return (f"KVCache(batch={self.batch}, num_kv_heads={self.num_kv_heads}, head_dim={self.head_dim}, "
                f"max_seq_len={self.max_seq_len}, value_dim={self.value_dim}, dtype={self.dtype}, "
                f"kv_dtype={self.kv_dtype!r}, "
                f"lengths={self._lengths.tolist()})")
