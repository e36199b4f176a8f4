"""The implementations a benchmark case is timed with, pyattn included.

``make_runner(impl, case, inputs, threads)`` returns a :class:`Runner`: a
zero-argument callable doing one attention call, used as a context manager
that holds the thread settings of that implementation while it is timed:

* ``pyattn``: ``num_threads=threads`` on every call (``additive`` cases:
  ``additive_attention``; ``kvcache`` cases: ``KVCache.attend`` of the
  case's filled cache).
* ``numpy``: the NumPy reference recipe in float32, ``s = q @ k^T * scale;
  s -= s.max(-1); p = exp(s); p /= p.sum(-1); p @ v`` (in place where that
  is the same arithmetic); NumPy's BLAS is limited to ``threads`` with
  threadpoolctl when it is importable (else it uses OpenBLAS's own default,
  ``OPENBLAS_NUM_THREADS`` / ``OMP_NUM_THREADS``; see ``blas_thread_control``).
* ``torch``: ``torch.nn.functional.scaled_dot_product_attention`` under
  ``torch.set_num_threads(threads)``, ``enable_gqa=True`` for GQA; for
  ``return_weights`` cases (SDPA has no weights output) the explicit
  ``softmax(q @ k^T * scale) @ v`` returning the weights.
* ``onnxruntime``: a one-node ONNX graph with ``com.microsoft.MultiHeadAttention``
  (inputs ``(B, L, H*E)``, attribute ``num_heads``; ``unidirectional=1`` for
  causal; masks as ``attention_bias``, a bool mask turned into a 0/-inf float
  bias outside the timing), ``intra_op_num_threads=threads`` with intra-op
  spinning off (``session.intra_op.allow_spinning = 0``: its idle workers
  would otherwise spin on the cores after each call and slow whatever is
  timed next). The transposes to its layout are done once, outside the
  timing. No GQA, weights or bfloat16.

Additive cases have a NumPy and a torch baseline: the broadcast recipe
everyone writes first, ``tanh(qp[:, :, None, :] + kp[:, None, :, :]) @ v_a``,
softmax, ``@ v`` (NumPy in row chunks when the (L, S, A) tensor would exceed
1 GiB; torch skips cases that would need more than 4 GiB). KV-cache cases
have no baseline (no baseline stores a quantised cache): their float32-cache
row is timed beside them instead.

An implementation that cannot run a case raises :class:`Unsupported`; one that
is not installed is reported by :func:`available`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math

import numpy as np

from .cases import BFLOAT16

IMPLS = ("pyattn", "numpy", "torch", "onnxruntime")
BASELINES = IMPLS[1:]


class Unsupported(Exception):
    """This implementation cannot run this case (the reason is the message)."""


def available(impl):
    """``(True, "")`` or ``(False, reason)`` for an implementation."""
    if impl in ("pyattn", "numpy"):
        return True, ""
    if impl == "torch":
        return (True, "") if importlib.util.find_spec("torch") else (False, "torch is not installed")
    if impl == "onnxruntime":
        missing = [m for m in ("onnxruntime", "onnx") if importlib.util.find_spec(m) is None]
        return (False, " and ".join(missing) + " not installed") if missing else (True, "")
    raise ValueError(f"unknown implementation {impl!r}; expected one of {IMPLS}")


# --------------------------------------------------------------------------
# NumPy BLAS threads
# --------------------------------------------------------------------------


def blas_thread_control():
    """A description of how NumPy's BLAS threads are controlled."""
    if importlib.util.find_spec("threadpoolctl"):
        from threadpoolctl import threadpool_info

        libs = sorted({i.get("internal_api", "?") for i in threadpool_info() if i.get("user_api") == "blas"})
        found = ", ".join(libs) if libs else "no BLAS library found"
        return f"set to each row's thread count with threadpoolctl ({found})"
    return ("not controlled (threadpoolctl is not installed): NumPy's BLAS uses its default "
            "thread count (OPENBLAS_NUM_THREADS / OMP_NUM_THREADS)")


def blas_threads(threads):
    """Context manager limiting NumPy's BLAS to ``threads`` (a no-op without
    threadpoolctl). Only the BLAS pools are touched, never OpenMP (which
    would also limit pyattn)."""
    if threads is None or importlib.util.find_spec("threadpoolctl") is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads, user_api="blas")


# --------------------------------------------------------------------------
# Runners
# --------------------------------------------------------------------------


class Runner:
    """One implementation bound to one case's inputs and a thread count."""

    def __init__(self, impl, fn, note=None, enter=None, to_output=None):
        self.impl, self._fn, self.note, self._enter = impl, fn, note, enter
        self._to_output = to_output
        self._stack = None

    def __call__(self):
        return self._fn()

    def __enter__(self):
        self._stack = contextlib.ExitStack()
        if self._enter is not None:
            self._stack.enter_context(self._enter())
        return self

    def __exit__(self, *exc):
        self._stack.close()
        return False

    def output(self, result):
        """The attention output of ``result`` as a float32 (B, H, L, Ev) array."""
        out = result[0] if isinstance(result, tuple) else result
        if self._to_output is not None:
            out = self._to_output(out)
        return np.asarray(out, dtype=np.float32)


def make_runner(impl, case, inputs, threads):
    """A :class:`Runner` for ``impl`` on ``case``; raises :class:`Unsupported`."""
    ok, why = available(impl)
    if not ok:
        raise Unsupported(why)
    if case.variant and impl != "pyattn":
        raise Unsupported(f"{case.variant}: timed beside pyattn's own call without it, not against {impl}")
    return {"pyattn": _pyattn, "numpy": _numpy, "torch": _torch, "onnxruntime": _ort}[impl](case, inputs, threads)


def _pyattn(case, inputs, threads):
    import pyattn

    if case.op == "additive":
        from .cases import additive_kwargs

        kw = additive_kwargs(case, inputs)
        q, k, v, v_a = inputs.q, inputs.k, inputs.v, inputs.extra["v_a"]
        fn = pyattn.additive_attention
        return Runner("pyattn", lambda: fn(q, k, v, v_a, num_threads=threads, **kw))
    if case.op == "kvcache":
        attend, q = inputs.extra["caches"][case.kv_dtype].attend, inputs.q
        return Runner("pyattn", lambda: attend(q, num_threads=threads))
    if case.seqlens:  # varlen_attention, or (side runs) the padded batch through SDPA
        from .cases import run_varlen

        return Runner("pyattn", lambda: run_varlen(case, inputs, threads))
    kw = case.sdpa_kwargs(inputs)
    q, k, v = inputs.q, inputs.k, inputs.v
    sdpa = pyattn.scaled_dot_product_attention
    return Runner("pyattn", lambda: sdpa(q, k, v, num_threads=threads, **kw))


def _numpy(case, inputs, threads):
    if case.op == "kvcache":
        raise Unsupported("no NumPy KV cache (see the float32-cache row)")
    if case.op == "additive":
        kw = {n: inputs.extra[n] for n in ("w_query", "w_key", "bias") if n in inputs.extra}
        q, k, v, v_a = inputs.q, inputs.k, inputs.v, inputs.extra["v_a"]
        return Runner("numpy", lambda: additive_numpy_recipe(q, k, v, v_a, causal=case.causal, **kw),
                      enter=lambda: blas_threads(threads))
    if case.seqlens:
        raise Unsupported("the recipe has no packed variable-length layout")
    scale = np.float32(1.0 / math.sqrt(case.E))
    q, k, v = inputs.q, inputs.k, inputs.v
    convert = q.dtype != np.float32  # bfloat16: the float32 conversion is timed
    hidden = bias = None
    if case.mask == "bool":
        hidden = ~inputs.mask
    elif case.mask == "float":
        bias = inputs.mask
    if case.causal:
        tri = np.triu(np.ones((case.L, case.S), bool), 1)
        hidden = tri if hidden is None else hidden | tri
    G = case.H // case.hkv

    def recipe():
        qq, kk, vv = (q, k, v) if not convert else (q.astype(np.float32), k.astype(np.float32),
                                                     v.astype(np.float32))
        if G > 1:  # GQA: fold each kv head's query heads into its rows (free reshape)
            qq = qq.reshape(case.B, case.hkv, G * case.L, case.E)
        s = qq @ kk.swapaxes(-1, -2)
        s *= scale
        if G > 1:
            s = s.reshape(case.B, case.H, case.L, case.S)
        if bias is not None:
            s += bias
        if hidden is not None:
            np.copyto(s, -np.inf, where=hidden)
        s -= s.max(-1, keepdims=True)
        np.exp(s, out=s)
        s /= s.sum(-1, keepdims=True)
        p = s
        if G > 1:
            p = p.reshape(case.B, case.hkv, G * case.L, case.S)
        o = p @ vv
        if G > 1:
            o = o.reshape(case.B, case.H, case.L, case.ev)
            p = p.reshape(case.B, case.H, case.L, case.S)
        return (o, p) if case.weights else o

    note = "float32 recipe incl. conversion" if convert else None
    return Runner("numpy", recipe, note=note, enter=lambda: blas_threads(threads))


def _torch_tensor(a):
    import torch

    if BFLOAT16 is not None and a.dtype == BFLOAT16:
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def _torch_to_numpy(t):
    return t.float().numpy()


def _torch(case, inputs, threads):
    import torch
    import torch.nn.functional as F

    if case.op == "kvcache":
        raise Unsupported("no torch KV cache of this storage (see the float32-cache row)")

    @contextlib.contextmanager
    def torch_threads():
        prev = torch.get_num_threads()
        torch.set_num_threads(threads if threads is not None else prev)
        try:
            with torch.inference_mode():
                yield
        finally:
            torch.set_num_threads(prev)

    if case.seqlens:
        return _torch_padded(case, inputs, torch_threads)
    q, k, v = (_torch_tensor(a) for a in (inputs.q, inputs.k, inputs.v))
    mask = None if inputs.mask is None else torch.from_numpy(inputs.mask)
    scale = 1.0 / math.sqrt(case.E)

    if case.op == "additive":
        need = case.B * case.L * case.S * case.a * 4
        if need > 4 << 30:
            raise Unsupported(f"the broadcast recipe would need {need / 2**30:.0f} GiB")
        t = {n: torch.from_numpy(inputs.extra[n]) for n in ("w_query", "w_key", "bias") if n in inputs.extra}
        v_a = torch.from_numpy(inputs.extra["v_a"])
        return Runner("torch", lambda: additive_torch_recipe(torch, q, k, v, v_a, causal=case.causal, **t),
                      enter=torch_threads, to_output=_torch_to_numpy)

    if case.weights:
        if case.gqa or case.causal or case.mask:
            raise Unsupported("explicit-softmax weights baseline covers plain attention only")

        def explicit():
            p = torch.softmax((q @ k.transpose(-1, -2)) * scale, dim=-1)
            return p @ v, p

        return Runner("torch", explicit, note="explicit softmax(q k^T) v: SDPA returns no weights",
                      enter=torch_threads, to_output=_torch_to_numpy)

    kw = {"is_causal": bool(case.causal), "attn_mask": mask, "scale": scale}
    if case.gqa:
        kw["enable_gqa"] = True
    sdpa = F.scaled_dot_product_attention
    return Runner("torch", lambda: sdpa(q, k, v, **kw), enter=torch_threads, to_output=_torch_to_numpy)


def _torch_padded(case, inputs, torch_threads):
    """A varlen case as torch users run it: SDPA on the padded batch with a
    boolean key-padding mask; the output is unpacked (outside the timing)."""
    import torch.nn.functional as F

    q, k, v = (_torch_tensor(a) for a in inputs.padded)
    mask = _torch_tensor(inputs.mask)
    kw = {"is_causal": bool(case.causal), "attn_mask": mask, "scale": 1.0 / math.sqrt(case.E)}
    if case.gqa:
        kw["enable_gqa"] = True
    lengths, cu = inputs.kv_lengths, inputs.cu_seqlens

    def unpack(out):
        out = _torch_to_numpy(out)
        packed = np.empty((int(cu[-1]),) + (out.shape[1], out.shape[3]), np.float32)
        for i, n in enumerate(lengths):
            packed[cu[i]:cu[i + 1]] = out[i, :, :n].transpose(1, 0, 2)
        return packed

    sdpa = F.scaled_dot_product_attention
    return Runner("torch", lambda: sdpa(q, k, v, **kw), note="padded batch, bool key-padding mask",
                  enter=torch_threads, to_output=unpack)


def _ort(case, inputs, threads):
    if case.op != "sdpa":
        raise Unsupported("MultiHeadAttention covers scaled-dot-product attention only")
    if case.seqlens:
        raise Unsupported("no packed variable-length layout in this baseline")
    if case.gqa:
        raise Unsupported("MultiHeadAttention has no grouped-query attention")
    if case.weights:
        raise Unsupported("MultiHeadAttention returns no softmax weights")
    if inputs.q.dtype != np.float32:
        raise Unsupported(f"MultiHeadAttention on CPU takes no {inputs.q.dtype}")
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    B, H = case.B, case.H

    def bsd(a):  # (B, H, n, d) -> (B, n, H*d), contiguous
        return np.ascontiguousarray(a.transpose(0, 2, 1, 3).reshape(B, a.shape[2], H * a.shape[3]))

    feeds = {"query": bsd(inputs.q), "key": bsd(inputs.k), "value": bsd(inputs.v)}
    node_inputs = ["query", "key", "value"]
    if inputs.mask is not None:
        bias = inputs.mask if case.mask == "float" else np.where(inputs.mask, 0.0, -np.inf).astype(np.float32)
        feeds["attention_bias"] = np.ascontiguousarray(bias[None, None])
        node_inputs += ["", "", "attention_bias"]
    graph_inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(feeds[n].shape)) for n in feeds]
    node = helper.make_node(
        "MultiHeadAttention", node_inputs, ["output"], domain="com.microsoft",
        num_heads=H, unidirectional=int(bool(case.causal)), scale=1.0 / math.sqrt(case.E),
    )
    graph = helper.make_graph(
        [node], "mha", graph_inputs,
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [B, case.L, H * case.ev])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = min(model.ir_version, onnx.IR_VERSION)
    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    run = sess.run

    return Runner("onnxruntime", lambda: run(None, feeds)[0],
                  to_output=lambda r: r.reshape(B, case.L, H, case.ev).transpose(0, 2, 1, 3))


def additive_numpy_recipe(q, k, v, v_a, w_query=None, w_key=None, bias=None, causal=False,
                          max_chunk_bytes=1 << 30, chunk_bytes=256 << 20):
    """The NumPy broadcast recipe of additive attention: the (rows, S, A)
    tanh tensor, whole if it takes at most 1 GiB, else in row chunks of
    ~256 MiB."""
    qp = q if w_query is None else q @ w_query
    if bias is not None:
        qp = qp + bias
    kp = k if w_key is None else k @ w_key
    B, L, A = qp.shape
    S = kp.shape[1]
    per_row = S * A * qp.itemsize
    rows = L if L * per_row <= max_chunk_bytes else max(1, chunk_bytes // per_row)
    scores = np.empty((B, L, S), qp.dtype)
    for b in range(B):
        for i0 in range(0, L, rows):
            t = qp[b, i0:i0 + rows, None, :] + kp[b, None, :, :]
            np.tanh(t, out=t)
            scores[b, i0:i0 + rows] = t @ v_a
    if causal:
        scores[:, np.triu(np.ones((L, S), bool), 1)] = -np.inf
    scores -= scores.max(-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(-1, keepdims=True)
    return scores @ v


def additive_torch_recipe(torch, q, k, v, v_a, w_query=None, w_key=None, bias=None, causal=False):
    """The same recipe in torch: one (B, L, S, A) tensor."""
    qp = q if w_query is None else q @ w_query
    if bias is not None:
        qp = qp + bias
    kp = k if w_key is None else k @ w_key
    scores = torch.tanh(qp[:, :, None, :] + kp[:, None, :, :]) @ v_a
    if causal:
        L, S = scores.shape[-2:]
        scores = scores.masked_fill(torch.ones(L, S, dtype=torch.bool).triu(1), float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def read_roof_runner(nbytes, threads):
    """A streaming read of an ``nbytes`` buffer by ``threads`` threads
    (``pyattn._core._stream_read``: 1 MiB chunks taken in turn, 4 KiB
    fetched ahead, with the loads of the best ISA the CPU supports): the
    machine's practical read bandwidth at that thread count, the roof of the
    memory-bound cases."""
    from pyattn import _core

    buf = np.ones(nbytes // 4, np.float32)  # (touched: no page faults while timed)
    return Runner("read-roof", lambda: _core._stream_read(buf, threads))


def roof_runner(n, threads):
    """NumPy float32 ``n x n @ n x n`` under ``blas_threads(threads)``: the
    machine's practical matmul roof at that thread count."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), np.float32)
    return Runner("numpy-matmul", lambda: np.matmul(a, b, out=c), enter=lambda: blas_threads(threads))
