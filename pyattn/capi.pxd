# pyattn's C API for Cython: `cimport pyattn.capi as capi`.
#
# Scaled-dot-product attention over raw pointers, sizes and strides, callable
# without the GIL. Compile with include_dirs=[pyattn.get_include()] and call
# capi.import_pyattn() once (with the GIL, e.g. at module level) before the
# first capi.sdpa(). The full description of every field is in the header
# pyattn_capi.h and in pyattn's docs (docs/capi.md).
#
#     cdef capi.sdpa_params p
#     cdef capi.error err
#     capi.sdpa_params_init(&p)          # every option at its default
#     p.dtype = capi.FLOAT32
#     p.B, p.Hq, p.Hkv, p.L, p.S, p.E, p.Ev = 1, 8, 2, 1, n, 64, 64
#     p.q.data = q_ptr; p.q.stride_b = ...; ...   # strides in elements
#     p.causal = capi.CAUSAL_LOWER_RIGHT
#     with nogil:
#         rc = capi.sdpa(&p, &err)       # capi.OK, or a code; err.message says why

from libc.stdint cimport int32_t, int64_t, uint32_t

cdef extern from "pyattn_capi.h" nogil:
    enum:
        CAPI_VERSION "PYATTN_CAPI_VERSION"

    # Return codes
    enum:
        OK "PYATTN_OK"
        ERR_NULL "PYATTN_ERR_NULL"
        ERR_SHAPE "PYATTN_ERR_SHAPE"
        ERR_STRIDE "PYATTN_ERR_STRIDE"
        ERR_VALUE "PYATTN_ERR_VALUE"
        ERR_VERSION "PYATTN_ERR_VERSION"
        ERR_MEMORY "PYATTN_ERR_MEMORY"
        ERR_INTERNAL "PYATTN_ERR_INTERNAL"

    # dtype
    enum:
        FLOAT32 "PYATTN_FLOAT32"
        FLOAT64 "PYATTN_FLOAT64"

    # mask_kind
    enum:
        MASK_NONE "PYATTN_MASK_NONE"
        MASK_BOOL "PYATTN_MASK_BOOL"
        MASK_FLOAT "PYATTN_MASK_FLOAT"

    # causal
    enum:
        CAUSAL_NONE "PYATTN_CAUSAL_NONE"
        CAUSAL_UPPER_LEFT "PYATTN_CAUSAL_UPPER_LEFT"
        CAUSAL_LOWER_RIGHT "PYATTN_CAUSAL_LOWER_RIGHT"

    # One strided array: strides in elements along (batch, heads, rows, columns).
    ctypedef struct strided_array "pyattn_array":
        const void* data
        int64_t stride_b
        int64_t stride_h
        int64_t stride_row
        int64_t stride_col

    ctypedef struct sdpa_params "pyattn_sdpa_params":
        size_t struct_size
        int32_t dtype
        int32_t num_threads
        int64_t B
        int64_t Hq
        int64_t Hkv
        int64_t L
        int64_t S
        int64_t E
        int64_t Ev
        strided_array q
        strided_array k
        strided_array v
        strided_array out
        strided_array weights
        strided_array lse
        int32_t mask_kind
        int32_t causal
        strided_array mask
        int64_t window_left
        int64_t window_right
        const int64_t* kv_lengths
        int64_t kv_lengths_stride
        double scale
        double softcap
        strided_array alibi_slopes
        strided_array sinks

    ctypedef struct error "pyattn_error":
        int code
        char message[256]

    void sdpa_params_init "pyattn_sdpa_params_init" (sdpa_params* p)
    int sdpa "pyattn_sdpa" (const sdpa_params* params, error* err)
    # The installed pyattn's version ("0.1.0"); NULL before import_pyattn().
    const char* version_string "pyattn_version_string" ()

cdef extern from "pyattn_capi.h":
    # Fetches the core's function table (needs the GIL); raises ImportError
    # if pyattn is missing or older than this header.
    int import_pyattn "pyattn_import_capi" () except -1
