# cython: language_level=3, boundscheck=False, wraparound=False
"""Incremental decoding through pyattn's C API, without the GIL.

A KV cache is grown one position per step, and each step's single query row
attends to the cache with lower-right causal alignment (query row at the
cache's last valid position) and per-sequence valid lengths -- the loop of
a language model's generation, written in Cython with no Python object
touched between steps.
"""

cimport cython
from libc.stdint cimport int64_t
from libc.string cimport memcpy

cimport pyattn.capi as capi

capi.import_pyattn()  # once, with the GIL


class CapiError(RuntimeError):
    pass


def decode(cython.floating[:, :, :, ::1] q, cython.floating[:, :, :, ::1] k_new,
           cython.floating[:, :, :, ::1] v_new, cython.floating[:, :, :, ::1] k_cache,
           cython.floating[:, :, :, ::1] v_cache, int64_t[::1] lengths,
           cython.floating[:, :, :, ::1] out, cython.floating[:, :, ::1] lse,
           int num_threads=0):
    """Runs T decoding steps.

    q (B, Hq, T, E): step t's query row is q[:, :, t]; k_new, v_new
    (B, Hkv, T, E / Ev): the key/value row each step appends;
    k_cache, v_cache (B, Hkv, S_max, E / Ev): the cache, holding lengths[b]
    valid rows of sequence b (a prompt already in it); lengths (B,) grows by
    one per step. out (B, Hq, T, Ev) and lse (B, Hq, T) receive each step's
    attention output and log-sum-exp.
    """
    cdef Py_ssize_t B = q.shape[0], Hq = q.shape[1], T = q.shape[2], E = q.shape[3]
    cdef Py_ssize_t Hkv = k_cache.shape[1], S_max = k_cache.shape[2], Ev = v_cache.shape[3]
    cdef Py_ssize_t t, b, h
    cdef capi.sdpa_params p
    cdef capi.error err
    cdef int rc = capi.OK
    if (k_new.shape[0] != B or k_new.shape[1] != Hkv or k_new.shape[2] != T or k_new.shape[3] != E
            or v_new.shape[0] != B or v_new.shape[1] != Hkv or v_new.shape[2] != T or v_new.shape[3] != Ev
            or k_cache.shape[0] != B or k_cache.shape[3] != E or v_cache.shape[0] != B
            or v_cache.shape[1] != Hkv or v_cache.shape[2] != S_max or lengths.shape[0] != B
            or out.shape[0] != B or out.shape[1] != Hq or out.shape[2] != T or out.shape[3] != Ev
            or lse.shape[0] != B or lse.shape[1] != Hq or lse.shape[2] != T):
        raise ValueError("decode: inconsistent shapes")
    for b in range(B):
        if lengths[b] < 0 or lengths[b] + T > S_max:
            raise ValueError(f"decode: sequence {b} would not fit in the cache")

    capi.sdpa_params_init(&p)
    p.dtype = capi.FLOAT64 if cython.floating is double else capi.FLOAT32
    p.num_threads = num_threads
    p.B, p.Hq, p.Hkv, p.L, p.S, p.E, p.Ev = B, Hq, Hkv, 1, S_max, E, Ev
    # Strides in elements. The query, out and lse of step t are column t of
    # the (T)-long arrays: their row stride is irrelevant (L = 1).
    p.q.stride_b, p.q.stride_h, p.q.stride_row, p.q.stride_col = Hq * T * E, T * E, E, 1
    p.k.stride_b, p.k.stride_h, p.k.stride_row, p.k.stride_col = Hkv * S_max * E, S_max * E, E, 1
    p.v.stride_b, p.v.stride_h, p.v.stride_row, p.v.stride_col = Hkv * S_max * Ev, S_max * Ev, Ev, 1
    p.out.stride_b, p.out.stride_h, p.out.stride_row, p.out.stride_col = Hq * T * Ev, T * Ev, Ev, 1
    p.lse.stride_b, p.lse.stride_h, p.lse.stride_row = Hq * T, T, 1
    p.k.data = &k_cache[0, 0, 0, 0] if k_cache.size else NULL
    p.v.data = &v_cache[0, 0, 0, 0] if v_cache.size else NULL
    p.kv_lengths = &lengths[0] if B else NULL
    p.kv_lengths_stride = 1
    p.causal = capi.CAUSAL_LOWER_RIGHT

    with nogil:
        for t in range(T):
            for b in range(B):  # append step t's key and value rows
                for h in range(Hkv):
                    memcpy(&k_cache[b, h, lengths[b], 0], &k_new[b, h, t, 0], E * sizeof(cython.floating))
                    memcpy(&v_cache[b, h, lengths[b], 0], &v_new[b, h, t, 0], Ev * sizeof(cython.floating))
                lengths[b] += 1
            p.q.data = &q[0, 0, t, 0]
            p.out.data = &out[0, 0, t, 0]
            p.lse.data = &lse[0, 0, t]
            rc = capi.sdpa(&p, &err)
            if rc != capi.OK:
                break
    if rc != capi.OK:
        raise CapiError(f"pyattn_sdpa failed at step {t} (code {rc}): {err.message.decode()}")
