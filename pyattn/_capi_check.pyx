# cython: language_level=3, boundscheck=False, wraparound=False
"""Python access to pyattn's C API, through the shipped pyattn/capi.pxd.

Built with the package, this module is a real consumer of the C API: the
package's own build compiles capi.pxd and pyattn_capi.h (so a broken
declaration fails pyattn's build, not a user's), and the test suite -- also
run against an installed wheel, where no compiler may be at hand -- drives
every field of the C call through it: `call` takes the raw fields (data
addresses, sizes, element strides, options) as a dict, so tests can pass the
addresses of NumPy arrays as well as NULL pointers, bad strides and bad
sizes. `time_calls` times a loop of C calls made without the GIL (the
per-call cost the C API is for). Private: not part of pyattn's API.
"""

from libc.stdint cimport int64_t, uintptr_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

cimport pyattn.capi as capi

capi.import_pyattn()

_ARRAYS = ("q", "k", "v", "out", "weights", "lse", "mask", "alibi_slopes", "sinks")
_INTS = ("B", "Hq", "Hkv", "L", "S", "E", "Ev", "window_left", "window_right",
         "kv_lengths_stride")
_INT32S = ("dtype", "num_threads", "mask_kind", "causal")


cdef void _set_array(capi.strided_array* a, spec) except *:
    """spec: (address, stride_b, stride_h, stride_row, stride_col)."""
    address, sb, sh, sr, sc = spec
    a.data = <const void*><uintptr_t>address
    a.stride_b = sb
    a.stride_h = sh
    a.stride_row = sr
    a.stride_col = sc


cdef capi.strided_array* _array_field(capi.sdpa_params* p, str name) except NULL:
    if name == "q": return &p.q
    if name == "k": return &p.k
    if name == "v": return &p.v
    if name == "out": return &p.out
    if name == "weights": return &p.weights
    if name == "lse": return &p.lse
    if name == "mask": return &p.mask
    if name == "alibi_slopes": return &p.alibi_slopes
    if name == "sinks": return &p.sinks
    raise KeyError(name)


cdef void _fill(capi.sdpa_params* p, dict fields) except *:
    capi.sdpa_params_init(p)
    for name, value in fields.items():
        if name in _ARRAYS:
            _set_array(_array_field(p, name), value)
        elif name in _INTS or name in _INT32S:
            _set_int(p, name, value)
        elif name == "kv_lengths":
            p.kv_lengths = <const int64_t*><uintptr_t>value
        elif name == "scale":
            p.scale = value
        elif name == "softcap":
            p.softcap = value
        elif name == "struct_size":
            p.struct_size = value
        else:
            raise KeyError(f"unknown field {name!r}")


cdef void _set_int(capi.sdpa_params* p, str name, value) except *:
    cdef int64_t x = value
    if name == "B": p.B = x
    elif name == "Hq": p.Hq = x
    elif name == "Hkv": p.Hkv = x
    elif name == "L": p.L = x
    elif name == "S": p.S = x
    elif name == "E": p.E = x
    elif name == "Ev": p.Ev = x
    elif name == "window_left": p.window_left = x
    elif name == "window_right": p.window_right = x
    elif name == "kv_lengths_stride": p.kv_lengths_stride = x
    elif name == "dtype": p.dtype = value
    elif name == "num_threads": p.num_threads = value
    elif name == "mask_kind": p.mask_kind = value
    elif name == "causal": p.causal = value


def call(dict fields):
    """Runs pyattn_sdpa with `fields` over the defaults of
    pyattn_sdpa_params_init (without the GIL); returns (code, message)."""
    cdef capi.sdpa_params p
    cdef capi.error err
    cdef int rc
    _fill(&p, fields)
    err.code = -1
    err.message[0] = 0
    with nogil:
        rc = capi.sdpa(&p, &err)
    if rc != err.code:
        raise AssertionError(f"pyattn_sdpa returned {rc} but set err.code = {err.code}")
    return rc, err.message.decode("utf-8", "replace")


def call_without_error(dict fields):
    """pyattn_sdpa with err = NULL: only the return code."""
    cdef capi.sdpa_params p
    cdef int rc
    _fill(&p, fields)
    with nogil:
        rc = capi.sdpa(&p, NULL)
    return rc


def call_extended(dict fields, bytes extra):
    """pyattn_sdpa with the struct of a newer caller: `fields`, then the
    bytes `extra` (fields this core does not know), struct_size covering both."""
    cdef capi.sdpa_params p
    cdef capi.error err
    cdef int rc
    cdef size_t n = sizeof(capi.sdpa_params) + len(extra)
    cdef char* buf = <char*>malloc(n)
    if buf == NULL:
        raise MemoryError()
    try:
        _fill(&p, fields)
        p.struct_size = n
        memcpy(buf, &p, sizeof(p))
        memcpy(buf + sizeof(p), <const char*>extra, len(extra))
        with nogil:
            rc = capi.sdpa(<capi.sdpa_params*>buf, &err)
    finally:
        free(buf)
    return rc, err.message.decode("utf-8", "replace")


def call_null_params():
    """pyattn_sdpa(NULL, &err): (code, message)."""
    cdef capi.error err
    cdef int rc
    with nogil:
        rc = capi.sdpa(NULL, &err)
    return rc, err.message.decode("utf-8", "replace")


def time_calls(dict fields, long n):
    """Makes the same call n times in one loop without the GIL (the first
    failure stops it); returns (code, message) of the last call."""
    cdef capi.sdpa_params p
    cdef capi.error err
    cdef long i
    cdef int rc = 0
    _fill(&p, fields)
    with nogil:
        for i in range(n):
            rc = capi.sdpa(&p, &err)
            if rc != capi.OK:
                break
    return rc, (err.message.decode("utf-8", "replace") if rc else "")


def sizes():
    """sizeof(pyattn_sdpa_params) and the header's CAPI version, as compiled here."""
    return sizeof(capi.sdpa_params), capi.CAPI_VERSION


def version():
    """The version string of the pyattn whose table was imported."""
    return capi.version_string().decode()
