"""MultiHeadAttention: the inference-time equivalent of torch.nn.MultiheadAttention.

Built only on the public fast path: the input projections are NumPy matmuls
(one per distinct input -- a single fused QKV matmul for self-attention), the
heads are strided views of the projection (no copy, no loop over heads), one
``scaled_dot_product_attention`` call writes straight into the buffer the out
projection reads, and the out projection is one more matmul.
"""

from __future__ import annotations

import numbers

import numpy as np

from . import _args, _core
from .attention import scaled_dot_product_attention

_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)


def _to_numpy(value, name: str) -> np.ndarray:
    """A NumPy array from an array-like or a torch tensor (detached, on the CPU)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        t = value.detach().cpu()
        try:
            return t.numpy()
        except TypeError:  # bfloat16 and other dtypes NumPy has no name for
            return t.float().numpy()
    return _args.as_array(value, name)


def _module_dtype(dtype) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from exc
    if dt not in (_F32, _F64):
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


def _linear(x: np.ndarray, weight: np.ndarray, bias) -> np.ndarray:
    """``x @ weight.T + bias`` for 2-D ``x`` (one GEMM; the bias added in place)."""
    y = np.matmul(x, weight.T)
    if bias is not None:
        y += bias
    return y


class MultiHeadAttention:
    """Multi-head attention layer (inference only), equivalent to
    ``torch.nn.MultiheadAttention`` in eval mode, on NumPy arrays.

    Args:
        embed_dim: query (and output) feature size ``E``; ``num_heads`` must
            divide it (``head_dim = E // num_heads``).
        num_heads: number of query heads ``H``.
        bias: learnable biases of the input and output projections.
        kdim, vdim: feature sizes of ``key`` and ``value`` (default ``E``).
            When either differs from ``E`` the layer keeps separate
            ``q_proj_weight``/``k_proj_weight``/``v_proj_weight`` (as torch);
            otherwise one packed ``in_proj_weight``.
        batch_first: inputs and output are ``(B, L, E)`` instead of ``(L, B, E)``.
        num_kv_heads: ``Hkv`` key/value heads (default ``H``); ``Hkv < H``
            (dividing ``H``) gives grouped-query attention: the key/value
            projections have ``Hkv * head_dim`` outputs, query head ``h`` uses
            kv head ``h // (H // Hkv)``. The packed ``in_proj_weight`` then has
            shape ``(E + 2 * Hkv * head_dim, E)``. No torch equivalent.
        dtype: ``numpy.float32`` or ``numpy.float64``; parameters, inputs and
            results all have this dtype (other input dtypes: ``TypeError``).
        rng: seed (int) or ``numpy.random.Generator`` for the initial weights,
            drawn as in torch's ``_reset_parameters``: xavier-uniform input
            projection(s), out projection uniform in ``+-1/sqrt(E)``, biases
            zero. The default seed 0 makes construction deterministic. Load
            trained weights with :meth:`load_state_dict` or :meth:`from_torch`.

    Parameters are NumPy arrays of ``dtype`` with torch's names:
    ``in_proj_weight`` (or ``q_proj_weight``, ``k_proj_weight``,
    ``v_proj_weight``; the others are ``None``), ``in_proj_bias``,
    ``out_proj_weight``, ``out_proj_bias`` (``None`` without bias).

    Differences from torch (all deliberate):

    * A query row that sees no key (every key masked by ``attn_mask`` /
      ``key_padding_mask``) gets an attention output of zeros -- the layer
      output is then ``out_proj_bias`` -- and a weights row of zeros, where
      torch gives NaN.
    * Inference only: no dropout, no ``add_bias_kv``/``add_zero_attn``.
    * Invalid arguments raise ``ValueError``/``TypeError`` naming the
      argument where torch raises ``AssertionError``/``RuntimeError``.

    The full contract: docs/api.md, section 4.
    """

    def __init__(self, embed_dim, num_heads, *, bias=True, kdim=None, vdim=None,
                 batch_first=False, num_kv_heads=None, dtype=np.float32, rng=0):
        self._setup(embed_dim, num_heads, bias, kdim, vdim, batch_first, num_kv_heads, dtype)
        self._reset_parameters(rng)

    # ------------------------------------------------------------------
    # construction and parameters
    # ------------------------------------------------------------------

    def _setup(self, embed_dim, num_heads, bias, kdim, vdim, batch_first, num_kv_heads, dtype):
        E = _args.int_at_least(embed_dim, "embed_dim", 1)
        H = _args.int_at_least(num_heads, "num_heads", 1)
        if E % H:
            raise ValueError(f"embed_dim ({E}) must be divisible by num_heads ({H})")
        Hkv = H if num_kv_heads is None else _args.int_at_least(num_kv_heads, "num_kv_heads", 1)
        if H % Hkv:
            raise ValueError(f"num_kv_heads ({Hkv}) must divide num_heads ({H})")
        self.embed_dim, self.num_heads, self.num_kv_heads = E, H, Hkv
        self.head_dim = E // H
        self.kdim = E if kdim is None else _args.int_at_least(kdim, "kdim", 1)
        self.vdim = E if vdim is None else _args.int_at_least(vdim, "vdim", 1)
        self._qkv_same_embed_dim = self.kdim == E and self.vdim == E
        self.batch_first = bool(batch_first)
        self.bias = bool(bias)
        self.dtype = _module_dtype(dtype)
        kvd = Hkv * self.head_dim
        self._kv_dim = kvd
        # name -> shape of every parameter this configuration has
        shapes = {}
        if self._qkv_same_embed_dim:
            shapes["in_proj_weight"] = (E + 2 * kvd, E)
        else:
            shapes["q_proj_weight"] = (E, E)
            shapes["k_proj_weight"] = (kvd, self.kdim)
            shapes["v_proj_weight"] = (kvd, self.vdim)
        if self.bias:
            shapes["in_proj_bias"] = (E + 2 * kvd,)
        shapes["out_proj.weight"] = (E, E)
        if self.bias:
            shapes["out_proj.bias"] = (E,)
        self._shapes = shapes
        for attr in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight",
                     "in_proj_bias", "out_proj_weight", "out_proj_bias"):
            setattr(self, attr, None)
        for key, shape in shapes.items():
            setattr(self, self._attr(key), np.zeros(shape, self.dtype))

    @staticmethod
    def _attr(key: str) -> str:
        return key.replace(".", "_")

    def _reset_parameters(self, rng) -> None:
        if not isinstance(rng, np.random.Generator):
            if isinstance(rng, (bool, np.bool_)) or not isinstance(rng, numbers.Integral):
                raise TypeError(f"rng must be an int seed or a numpy.random.Generator, got {type(rng).__name__}")
            rng = np.random.default_rng(int(rng))

        def xavier(shape):
            fan_out, fan_in = shape
            bound = np.sqrt(6.0 / (fan_in + fan_out))
            return rng.uniform(-bound, bound, size=shape).astype(self.dtype)

        for key in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"):
            if key in self._shapes:
                setattr(self, key, xavier(self._shapes[key]))
        bound = 1.0 / np.sqrt(self.embed_dim)  # nn.Linear's kaiming_uniform(a=sqrt(5))
        self.out_proj_weight = rng.uniform(-bound, bound, size=self._shapes["out_proj.weight"]).astype(self.dtype)
        # biases stay zero, as torch's _reset_parameters sets them

    def state_dict(self) -> dict:
        """The parameters under torch's key names (the arrays themselves, not copies)."""
        return {key: getattr(self, self._attr(key)) for key in self._shapes}

    def load_state_dict(self, state_dict, strict: bool = True) -> None:
        """Loads parameters given under torch's key names.

        ``state_dict`` maps ``in_proj_weight`` (or ``q_proj_weight``,
        ``k_proj_weight``, ``v_proj_weight`` when kdim/vdim differ from
        embed_dim), ``in_proj_bias``, ``out_proj.weight`` and
        ``out_proj.bias`` (the biases only with ``bias=True``) to NumPy arrays
        or torch tensors; the values are copied into this layer's dtype. A
        missing key raises ``KeyError``; so does an unexpected one when
        ``strict`` (e.g. ``bias_k`` of a torch module with ``add_bias_kv``).
        A wrong shape raises ``ValueError``, a non-float value ``TypeError``,
        each naming the key. Nothing is changed unless every value is valid.
        """
        missing = [key for key in self._shapes if key not in state_dict]
        if missing:
            raise KeyError(f"state_dict is missing {missing} (expected keys: {list(self._shapes)})")
        if strict:
            unexpected = [key for key in state_dict if key not in self._shapes]
            if unexpected:
                raise KeyError(f"state_dict has unexpected keys {unexpected} (expected keys: {list(self._shapes)})")
        loaded = {}
        for key, shape in self._shapes.items():
            value = _to_numpy(state_dict[key], key)
            if not _args.is_float_dtype(value.dtype):
                raise TypeError(f"state_dict[{key!r}]: dtype {value.dtype} is not a float dtype")
            if value.shape != shape:
                raise ValueError(f"state_dict[{key!r}] has shape {value.shape}; expected {shape}")
            loaded[key] = np.array(value, dtype=self.dtype, copy=True)
        for key, value in loaded.items():
            setattr(self, self._attr(key), value)

    @classmethod
    def from_torch(cls, module, *, dtype=None) -> "MultiHeadAttention":
        """A copy of a ``torch.nn.MultiheadAttention`` (embed_dim, num_heads,
        kdim, vdim, batch_first, bias and its weights). ``dtype`` defaults to
        the module's: float64 for a float64 module, else float32. Modules with
        ``add_bias_kv`` or ``add_zero_attn`` are refused (``ValueError``);
        dropout is not applied (inference)."""
        if getattr(module, "bias_k", None) is not None or getattr(module, "bias_v", None) is not None:
            raise ValueError("from_torch: modules with add_bias_kv=True are not supported")
        if getattr(module, "add_zero_attn", False):
            raise ValueError("from_torch: modules with add_zero_attn=True are not supported")
        if dtype is None:
            dtype = _F64 if str(module.out_proj.weight.dtype) == "torch.float64" else _F32
        self = cls.__new__(cls)
        self._setup(module.embed_dim, module.num_heads, module.in_proj_bias is not None,
                    module.kdim, module.vdim, module.batch_first, None, dtype)
        self.load_state_dict(module.state_dict())
        return self

    def __repr__(self):
        extra = "" if self.num_kv_heads == self.num_heads else f", num_kv_heads={self.num_kv_heads}"
        if not self._qkv_same_embed_dim:
            extra += f", kdim={self.kdim}, vdim={self.vdim}"
        return (f"MultiHeadAttention(embed_dim={self.embed_dim}, num_heads={self.num_heads}{extra}, "
                f"bias={self.bias}, batch_first={self.batch_first}, dtype={self.dtype})")

    # ------------------------------------------------------------------
    # forward
    # ------------------------------------------------------------------

    def _input(self, x, name: str, ndim: int, features: int) -> np.ndarray:
        a = _args.as_array(x, name)
        if a.dtype != self.dtype:
            raise TypeError(f"{name}: dtype {a.dtype} does not match the layer's dtype {self.dtype}")
        if a.ndim != ndim:
            raise ValueError(f"{name} must be {ndim}-D like query, got shape {a.shape}")
        if a.shape[-1] != features:
            raise ValueError(f"{name} has {a.shape[-1]} features (shape {a.shape}); the layer expects {features}")
        return a

    def _project(self, query, key, value, nq, nk):
        """2-D q (nq, E), k (nk, kvd), v (nk, kvd); views into one fused
        projection when the inputs are the same array."""
        E, kvd = self.embed_dim, self._kv_dim
        xq = query.reshape(nq, query.shape[-1])
        xk = xq if key is query else key.reshape(nk, key.shape[-1])
        xv = xk if value is key else value.reshape(nk, value.shape[-1])
        b = self.in_proj_bias
        bq, bk, bv = (None,) * 3 if b is None else (b[:E], b[E:E + kvd], b[E + kvd:])
        if not self._qkv_same_embed_dim:
            return (_linear(xq, self.q_proj_weight, bq), _linear(xk, self.k_proj_weight, bk),
                    _linear(xv, self.v_proj_weight, bv))
        w = self.in_proj_weight
        if key is value:
            if query is key:  # self-attention: one GEMM
                proj = _linear(xq, w, b)
                return proj[:, :E], proj[:, E:E + kvd], proj[:, E + kvd:]
            kv = _linear(xk, w[E:], None if b is None else b[E:])
            return _linear(xq, w[:E], bq), kv[:, :kvd], kv[:, kvd:]
        return _linear(xq, w[:E], bq), _linear(xk, w[E:E + kvd], bk), _linear(xv, w[E + kvd:], bv)

    def _mask(self, name, mask, shapes):
        m = _args.as_array(mask, name)
        if m.dtype != np.bool_ and not _args.is_float_dtype(m.dtype):
            raise TypeError(f"{name}: dtype {m.dtype} is not supported; expected bool or a float dtype")
        if m.shape not in shapes:
            expected = " or ".join(str(s) for s in shapes)
            raise ValueError(f"{name} has shape {m.shape}; expected {expected}")
        return m

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True,
                attn_mask=None, average_attn_weights=True, is_causal=False):
        """Attention of ``query`` over ``key``/``value``, as torch's module.

        Shapes (``E`` = embed_dim, ``L`` query length, ``S`` key length,
        ``B`` batch):
            query ``(L, B, E)`` (``(B, L, E)`` with ``batch_first``; ``(L, E)``
            unbatched), key ``(S, B, kdim)``, value ``(S, B, vdim)`` in the
            same layout.

        Args:
            key_padding_mask: ``(B, S)`` (``(S,)`` unbatched); bool ``True`` =
                ignore that key, or float added to the scores.
            need_weights: also return the attention weights.
            attn_mask: ``(L, S)`` or ``(B * num_heads, L, S)``
                (``(num_heads, L, S)`` unbatched); bool ``True`` = NOT allowed
                (torch's module convention, the opposite of
                ``scaled_dot_product_attention``), or float added to the
                scores. Both masks combine (a bool one counts as ``-inf``).
            average_attn_weights: weights averaged over heads ``(B, L, S)``;
                else per head ``(B, num_heads, L, S)`` (batch dim dropped when
                unbatched).
            is_causal: torch's hint that ``attn_mask`` is the causal mask; it
                needs ``attn_mask`` (``ValueError`` without, where torch raises
                ``RuntimeError``). As torch: with no ``key_padding_mask`` and
                ``need_weights=False`` the causal rule (upper-left, key ``j``
                visible iff ``j <= i``) is applied instead of ``attn_mask``;
                otherwise ``attn_mask`` is applied and the hint is unused.

        Returns:
            ``(attn_output, attn_weights or None)``: attn_output in the query's
            layout with ``E`` features, weights as above. Query rows that see
            no key get zeros (output ``out_proj_bias``), where torch gives NaN.
        """
        q_in = _args.as_array(query, "query")
        if q_in.ndim not in (2, 3):
            raise ValueError(f"query must be 2-D (unbatched) or 3-D (batched), got shape {q_in.shape}")
        batched = q_in.ndim == 3
        nd = q_in.ndim
        q_in = self._input(q_in, "query", nd, self.embed_dim)
        # the same array passed twice stays one array (one fused projection)
        E = self.embed_dim
        k_in = q_in if key is query and self.kdim == E else self._input(key, "key", nd, self.kdim)
        if value is key and self.vdim == self.kdim:
            v_in = k_in
        elif value is query and self.vdim == E:
            v_in = q_in
        else:
            v_in = self._input(value, "value", nd, self.vdim)
        if k_in.shape[:-1] != v_in.shape[:-1]:
            raise ValueError(f"key {k_in.shape} and value {v_in.shape} must agree in all but the last dimension")
        seq_first = batched and not self.batch_first
        if batched:
            if seq_first:
                (L, B), S = q_in.shape[:2], k_in.shape[0]
                kb = k_in.shape[1]
            else:
                (B, L), S = q_in.shape[:2], k_in.shape[1]
                kb = k_in.shape[0]
            if kb != B:
                raise ValueError(f"query (shape {q_in.shape}) and key (shape {k_in.shape}) have different batch sizes")
        else:
            B, L, S = 1, q_in.shape[0], k_in.shape[0]
        H, Hkv, hd = self.num_heads, self.num_kv_heads, self.head_dim

        # masks -> one SDPA mask (True = may attend, or an additive float bias),
        # broadcastable to (B, H, L, S)
        if not isinstance(is_causal, (bool, np.bool_)):
            raise TypeError(f"is_causal must be a bool, got {type(is_causal).__name__}")
        kpm = am = None
        if key_padding_mask is not None:
            kpm = self._mask("key_padding_mask", key_padding_mask, [(B, S)] if batched else [(S,)])
            kpm = kpm.reshape(B, 1, 1, S)
        if attn_mask is not None:
            am = self._mask("attn_mask", attn_mask, [(L, S), (B * H, L, S)])
            if am.ndim == 3:
                am = am.reshape(B, H, L, S)
        if is_causal and am is None:
            raise ValueError("is_causal=True needs attn_mask (torch's hint semantics: it says attn_mask is "
                             "the causal mask); pass the causal mask, e.g. np.triu(np.ones((L, S), bool), 1)")
        causal = bool(is_causal) and kpm is None and not need_weights
        mask = None if causal else _merge_masks(am, kpm, self.dtype)

        # projections -> (B, H, L, hd) views, no copies
        nq, nk = L * B, S * B
        q2, k2, v2 = self._project(q_in, k_in, v_in, nq, nk)
        if seq_first:
            q = q2.reshape(L, B, H, hd).transpose(1, 2, 0, 3)
            k = k2.reshape(S, B, Hkv, hd).transpose(1, 2, 0, 3)
            v = v2.reshape(S, B, Hkv, hd).transpose(1, 2, 0, 3)
            buf = np.empty((L, B, H, hd), self.dtype)
            out = buf.transpose(1, 2, 0, 3)
        else:
            q = q2.reshape(B, L, H, hd).transpose(0, 2, 1, 3)
            k = k2.reshape(B, S, Hkv, hd).transpose(0, 2, 1, 3)
            v = v2.reshape(B, S, Hkv, hd).transpose(0, 2, 1, 3)
            buf = np.empty((B, L, H, hd), self.dtype)
            out = buf.transpose(0, 2, 1, 3)

        result = scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=Hkv != H,
            return_weights=bool(need_weights), out=out)
        weights = None
        if need_weights:
            weights = result[1]
            if average_attn_weights:
                del result
                weights = weights.mean(axis=1)  # (the per-head weights die here)
                # They were only a step on the way: not kept for the next call
                # (see csrc/bindings/weights_memory.h).
                _core.release_kept_weights()
            if not batched:
                weights = weights[0]

        y = _linear(buf.reshape(nq, self.embed_dim), self.out_proj_weight, self.out_proj_bias)
        if batched:
            y = y.reshape(q_in.shape[:2] + (self.embed_dim,))
        return y, weights

    __call__ = forward


def _merge_masks(am, kpm, dtype):
    """attn_mask and key_padding_mask (torch convention) -> one SDPA mask:
    bool "may attend" when both are bool, else a float bias (a bool mask
    counting as -inf) in ``dtype``, or float64 if a mask is float64."""
    if am is None and kpm is None:
        return None
    masks = [m for m in (am, kpm) if m is not None]
    if all(m.dtype == np.bool_ for m in masks):
        hidden = masks[0] if len(masks) == 1 else np.logical_or(am, kpm)
        return np.logical_not(hidden)
    fdt = _F64 if any(m.dtype == _F64 for m in masks) else dtype
    biases = [np.where(m, fdt.type(-np.inf), fdt.type(0)) if m.dtype == np.bool_ else m.astype(fdt, copy=False)
              for m in masks]
    return biases[0] if len(biases) == 1 else biases[0] + biases[1]
