"""Digests of pyattn's results over a fixed case table, under every ISA.

Run it on two builds and diff the output: identical lines mean the two
builds compute the same bits for every case (a restructuring or a new
feature must not change existing results). Each case is also computed with
1 and 2 threads, which must agree bitwise.

    PYTHONPATH=<build A> python tools/bits_digest.py > a.txt
    PYTHONPATH=<build B> python tools/bits_digest.py > b.txt
    diff a.txt b.txt && echo "same bits"

`--extended` adds the score variants (softcap, ALiBi, sinks), the KV cache's
storage kinds (bfloat16, float16, int8: prefill and split-key decoding) and
packed variable-length batches (the default table stays the same, so its
digests compare with those of older builds).
"""

from __future__ import annotations

import hashlib
import sys

import numpy as np

import pyattn

try:
    import ml_dtypes

    BF16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover
    BF16 = None


def _rng(name):
    return np.random.default_rng(int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little"))


def _arr(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def sdpa_cases():
    dtypes = [np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16)] + ([BF16] if BF16 else [])
    shapes = {
        "prefill": ((2, 3), 97, 130, 59, 33),
        "square": ((1, 2), 256, 256, 64, 64),
        "decode": ((1, 4), 1, 9000, 64, 64),      # few rows, many keys: split-KV
        "decode4": ((2, 2), 4, 5000, 128, 128),
    }
    for dt in dtypes:
        for sname, (batch, L, S, E, Ev) in shapes.items():
            B = batch[0]
            opts = {
                "plain": {},
                "causal": dict(is_causal=True),
                "lower_right": dict(is_causal="lower_right"),
                "window": dict(window=(16, 3)),
                "lengths": dict(kv_lengths=np.array([S // 2 + 1] * (B - 1) + [0 if L > 1 else 7])),
                "bool_mask": "bool",
                "float_mask": "float",
                "weights_lse": dict(return_weights=True, return_lse=True, is_causal="lower_right"),
                "scale": dict(scale=0.3, return_lse=True),
            }
            for oname, o in opts.items():
                if sname.startswith("decode") and oname == "weights_lse":
                    o = dict(return_lse=True, is_causal="lower_right")  # weights would disable split-KV
                name = f"sdpa/{np.dtype(dt).name}/{sname}/{oname}"

                def make(name=name, batch=batch, L=L, S=S, E=E, Ev=Ev, dt=dt, o=o):
                    rng = _rng(name)
                    q, k, v = (_arr(rng, batch + (L, E), dt), _arr(rng, batch + (S, E), dt),
                               _arr(rng, batch + (S, Ev), dt))
                    kw = dict(o) if isinstance(o, dict) else {}
                    if o == "bool":
                        kw["attn_mask"] = rng.random((L, S)) < 0.7
                    elif o == "float":
                        m = rng.standard_normal((batch[1], L, S)).astype(np.float32 if dt in (np.float16, BF16) else dt)
                        m[rng.random(m.shape) < 0.1] = -np.inf
                        kw["attn_mask"] = m
                    return (q, k, v), kw

                yield name, pyattn.scaled_dot_product_attention, make
    # Grouped-query heads: 8 query heads over 2 kv heads, prefill and decode.
    for L, S in ((33, 300), (1, 9000)):
        name = f"sdpa/gqa/{L}x{S}"

        def make(name=name, L=L, S=S):
            rng = _rng(name)
            q = _arr(rng, (2, 8, L, 64), np.float32)
            k, v = _arr(rng, (2, 2, S, 64), np.float32), _arr(rng, (2, 2, S, 64), np.float32)
            return (q, k, v), dict(enable_gqa=True, is_causal="lower_right", return_lse=True)

        yield name, pyattn.scaled_dot_product_attention, make


def additive_cases():
    for dt in (np.float32, np.float64):
        for oname, o in {"plain": {}, "causal": dict(is_causal=True),
                         "mask_weights": dict(return_weights=True, return_lse=True)}.items():
            name = f"additive/{np.dtype(dt).name}/{oname}"

            def make(name=name, dt=dt, o=o):
                rng = _rng(name)
                q, k, v = _arr(rng, (2, 41, 24), dt), _arr(rng, (2, 77, 20), dt), _arr(rng, (2, 77, 17), dt)
                v_a = _arr(rng, (16,), dt)
                kw = dict(o, w_query=_arr(rng, (24, 16), dt), w_key=_arr(rng, (20, 16), dt),
                          bias=_arr(rng, (16,), dt))
                if oname == "mask_weights":
                    kw["attn_mask"] = rng.random((41, 77)) < 0.6
                return (q, k, v, v_a), kw

            yield name, pyattn.additive_attention, make


def extended_cases():
    """Score variants, stored key/value kinds and varlen batches."""
    variants = {
        "softcap": dict(softcap=3.0),
        "alibi": "alibi",
        "sinks": "sinks",
        "softcap_alibi_sinks": "all",
    }
    shapes = {"prefill": (2, 3, 97, 130, 59, 33), "decode": (1, 4, 1, 9000, 64, 64)}
    for dt in (np.float32, np.float64):
        for sname, (B, H, L, S, E, Ev) in shapes.items():
            for causal in (False, "lower_right"):
                for vname, o in variants.items():
                    for extra in ("", "float_mask", "weights") if sname == "prefill" else ("",):
                        name = f"variants/{np.dtype(dt).name}/{sname}/{causal}/{vname}/{extra}"

                        def make(name=name, B=B, H=H, L=L, S=S, E=E, Ev=Ev, dt=dt, o=o, causal=causal,
                                 extra=extra):
                            rng = _rng(name)
                            q, k, v = (_arr(rng, (B, H, L, E), dt), _arr(rng, (B, H, S, E), dt),
                                       _arr(rng, (B, H, S, Ev), dt))
                            kw = dict(o) if isinstance(o, dict) else {}
                            if o in ("alibi", "all"):
                                kw["alibi_slopes"] = rng.random(H).astype(dt)
                            if o in ("sinks", "all"):
                                kw["sinks"] = rng.standard_normal(H).astype(dt)
                            if o == "all":
                                kw["softcap"] = 2.5
                            kw["is_causal"] = causal
                            if extra == "float_mask":
                                m = rng.standard_normal((L, S)).astype(dt)
                                m[rng.random(m.shape) < 0.1] = -np.inf
                                kw["attn_mask"] = m
                            elif extra == "weights":
                                kw.update(return_weights=True, return_lse=True)
                            return (q, k, v), kw

                        yield name, pyattn.scaled_dot_product_attention, make
    kv_dtypes = ["float16", "int8"] + (["bfloat16"] if BF16 else [])
    for kv_dtype in kv_dtypes:
        for sname, (B, Hkv, Hq, L, S, E, Ev) in {"prefill": (2, 2, 4, 70, 300, 40, 24),
                                                "decode": (1, 2, 2, 1, 9000, 64, 64),
                                                "gqa_decode": (2, 2, 8, 1, 3000, 64, 64)}.items():
            for oname in ("plain", "window", "weights", "variants", "nonfinite"):
                if oname == "weights" and sname != "prefill":
                    continue
                name = f"kvcache/{kv_dtype}/{sname}/{oname}"

                def make(name=name, B=B, Hkv=Hkv, Hq=Hq, L=L, S=S, E=E, Ev=Ev, kv_dtype=kv_dtype,
                         oname=oname):
                    rng = _rng(name)
                    cache = pyattn.KVCache(B, Hkv, E, S, value_dim=Ev, kv_dtype=kv_dtype)
                    k, v = _arr(rng, (B, Hkv, S, E), np.float32), _arr(rng, (B, Hkv, S, Ev), np.float32)
                    if oname == "nonfinite":  # hidden by the window: must stay out of the results
                        v[..., 3, :] = np.inf
                    counts = np.array([S - 7 * b for b in range(B)])
                    cache.append(k, v, counts=counts)
                    q = _arr(rng, (B, Hq, L, E), np.float32)
                    kw = {}
                    if oname in ("window", "nonfinite"):
                        kw["window"] = (500, 0)
                    elif oname == "weights":
                        kw.update(return_weights=True, return_lse=True)
                    elif oname == "variants":
                        kw.update(softcap=4.0, alibi_slopes=rng.random(Hq).astype(np.float32),
                                  sinks=rng.standard_normal(Hq).astype(np.float32), return_lse=True)
                    return (cache, q), kw

                yield name, lambda cache, q, **kw: cache.attend(q, **kw), make
    for causal in (False, True, "lower_right"):
        name = f"varlen/{causal}"

        def make(name=name, causal=causal):
            rng = _rng(name)
            lq, lk = [5, 0, 70, 1], [9, 3, 130, 2000]
            cu_q, cu_k = np.cumsum([0] + lq), np.cumsum([0] + lk)
            q = _arr(rng, (cu_q[-1], 4, 48), np.float32)
            k, v = _arr(rng, (cu_k[-1], 2, 48), np.float32), _arr(rng, (cu_k[-1], 2, 40), np.float32)
            return (q, k, v, cu_q, cu_k), dict(is_causal=causal, window=(64, None), return_lse=True,
                                               softcap=5.0)

        yield name, pyattn.varlen_attention, make


def digest(result):
    parts = result if isinstance(result, tuple) else (result,)
    h = hashlib.sha256()
    for p in parts:
        p = np.ascontiguousarray(p)
        h.update(str((p.dtype.str, p.shape)).encode())
        h.update(p.tobytes())
    return h.hexdigest()[:16]


def main():
    extended = "--extended" in sys.argv[1:]
    cfg = pyattn.get_config()
    isas = [i for i in cfg["isa_compiled"] if i in cfg["isa_supported"]]
    prev = pyattn._core.set_isa(cfg["isa"])
    bad = 0
    try:
        for isa in isas:
            pyattn._core.set_isa(isa)
            for cases in (sdpa_cases(), additive_cases()) + ((extended_cases(),) if extended else ()):
                for name, fn, make in cases:
                    args, kw = make()
                    d1 = digest(fn(*args, num_threads=1, **kw))
                    d2 = digest(fn(*args, num_threads=2, **kw))
                    if d1 != d2:
                        bad += 1
                        print(f"{isa} {name} THREADS DIFFER {d1} {d2}", file=sys.stderr)
                    print(f"{isa} {name} {d1}")
    finally:
        pyattn._core.set_isa(prev)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
