/* pyattn's C API: scaled-dot-product attention for C, C++ and Cython code,
 * callable without the GIL, over raw pointers, sizes and strides.
 *
 * The functions live in pyattn's compiled core (pyattn._core), which exports
 * a table of them in a PyCapsule ("pyattn._core._C_API"). A caller links to
 * nothing: it calls pyattn_import_capi() once, with the GIL held, then calls
 * pyattn_sdpa() from any thread, with or without the GIL. Cython code uses
 * the declarations of pyattn/capi.pxd (`cimport pyattn.capi`); the directory
 * of this header is pyattn.get_include().
 *
 * Layout of every array: up to two batch dimensions (B, heads), then rows,
 * then columns. Strides are in ELEMENTS (not bytes), may be 0 (broadcast) or
 * negative; the column stride of query, key, value, out and weights must be 1
 * (the mask's may be anything). Results are bitwise identical to those of
 * pyattn.scaled_dot_product_attention on the same arrays, for every
 * num_threads.
 *
 * Versioning: pyattn_sdpa_params starts with its own size. New options
 * (e.g. logit soft-capping, ALiBi slopes, attention sinks) are only ever
 * added at the end of the struct, and their default -- the value that leaves
 * the result unchanged -- is all-zero bytes (0.0, NULL). The core reads the
 * fields the caller's struct_size covers and uses the defaults for the rest,
 * and refuses (PYATTN_ERR_VERSION) a larger struct whose fields unknown to it
 * are not zero. The function table likewise starts with its ABI version and
 * size, and only grows at the end.
 */
#ifndef PYATTN_CAPI_H_
#define PYATTN_CAPI_H_

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The ABI this header describes: the table layout up to and including
 * `sdpa`. A core with an older ABI version is refused by pyattn_import_capi. */
#define PYATTN_CAPI_VERSION 1

/* Return codes (also in pyattn_error.code). */
enum {
  PYATTN_OK = 0,
  PYATTN_ERR_NULL = 1,      /* a required pointer (params, q, k, v, out, ...) is NULL */
  PYATTN_ERR_SHAPE = 2,     /* a size is negative, or sizes do not fit together (GQA heads) */
  PYATTN_ERR_STRIDE = 3,    /* a column stride that must be 1 is not, or an extent overflows */
  PYATTN_ERR_VALUE = 4,     /* an option's value: dtype, causal, window, scale, kv_lengths, mask kind */
  PYATTN_ERR_VERSION = 5,   /* struct_size too small, or unknown non-zero fields after the known ones */
  PYATTN_ERR_MEMORY = 6,    /* scratch memory could not be allocated */
  PYATTN_ERR_INTERNAL = 7   /* anything else (a bug: please report it) */
};

/* Element type of q, k, v, out, weights, lse and a float mask. */
enum { PYATTN_FLOAT32 = 0, PYATTN_FLOAT64 = 1 };

/* Mask kinds. A bool mask holds one byte per element (0 = hidden, anything
 * else = may attend, like NumPy's bool); a float mask has the call's dtype
 * and is added to the scaled scores (-inf hides a key). */
enum { PYATTN_MASK_NONE = 0, PYATTN_MASK_BOOL = 1, PYATTN_MASK_FLOAT = 2 };

/* is_causal: upper-left puts query row i at key position i; lower-right at
 * i + n - L, n the valid keys of its batch element (kv_lengths, else S). */
enum { PYATTN_CAUSAL_NONE = 0, PYATTN_CAUSAL_UPPER_LEFT = 1, PYATTN_CAUSAL_LOWER_RIGHT = 2 };

/* One strided array of a call. Strides in elements: batch, heads, rows,
 * columns (the ones an array does not have are ignored). */
typedef struct pyattn_array {
  const void *data;
  int64_t stride_b, stride_h, stride_row, stride_col;
} pyattn_array;

/* One attention call. Fill it with pyattn_sdpa_params_init() first, which
 * sets struct_size and every option to its default, then set what you need.
 *
 *   query   (B, Hq,  L, E)    key (B, Hkv, S, E)    value (B, Hkv, S, Ev)
 *   out     (B, Hq,  L, Ev)   written
 *   weights (B, Hq,  L, S)    written if data is not NULL
 *   lse     (B, Hq,  L)       written if data is not NULL (stride_col ignored)
 *   mask    (B, Hq,  L, S)    read if mask_kind is not PYATTN_MASK_NONE;
 *                             stride 0 broadcasts a dimension
 *   kv_lengths (B,)           int64, read if data is not NULL: keys j >= n
 *                             of batch element b are not visible
 *
 * Hkv must divide Hq; query head h uses kv head h / (Hq / Hkv) (grouped-query
 * attention; Hkv == Hq is ordinary multi-head attention). Sizes may be 0.
 */
typedef struct pyattn_sdpa_params {
  size_t struct_size;          /* sizeof(pyattn_sdpa_params) as the caller compiled it */
  int32_t dtype;               /* PYATTN_FLOAT32 or PYATTN_FLOAT64 */
  int32_t num_threads;         /* 0: pyattn's default (pyattn.get_num_threads()); else >= 1 */
  int64_t B, Hq, Hkv, L, S, E, Ev;
  pyattn_array q, k, v;
  pyattn_array out;            /* written (data is const void* as in every pyattn_array) */
  pyattn_array weights;        /* optional output, the call's dtype */
  pyattn_array lse;            /* optional output, the call's dtype: natural log-sum-exp */
  int32_t mask_kind;           /* PYATTN_MASK_* */
  int32_t causal;              /* PYATTN_CAUSAL_* */
  pyattn_array mask;
  int64_t window_left;         /* -1: unbounded; else key j visible iff p(i) - left <= j */
  int64_t window_right;        /* -1: unbounded; else j <= p(i) + right */
  const int64_t *kv_lengths;   /* (B,) or NULL; each 0 <= n <= S */
  int64_t kv_lengths_stride;   /* in elements */
  double scale;                /* NaN (the default): 1/sqrt(E), 1 if E == 0; else finite */
  /* Score variants of current models (all zero: off; docs/score_variants.md).
   * The order a score is made in: s = scale * <q, k>; softcap; + the float
   * mask's bias; + ALiBi; softmax with the sink in its denominator. */
  double softcap;              /* 0: off; else finite and > 0: s = softcap * tanh(s / softcap) */
  pyattn_array alibi_slopes;   /* (B, Hq), the call's dtype, read if data is not NULL (stride_b,
                                  stride_h; 0 broadcasts): s -= slope * |p(i) - j|, p(i) the
                                  query row's key position (as for causal); finite */
  pyattn_array sinks;          /* (B, Hq), the call's dtype, read if data is not NULL: exp(sink)
                                  joins each row's softmax denominator with no value (lse
                                  includes it); -inf: no sink; not NaN or +inf */
  /* New options are added here, at the end (see "Versioning" above). */
} pyattn_sdpa_params;

/* Why a call failed: the code it returned and a message naming the field
 * and the values involved. */
typedef struct pyattn_error {
  int code;
  char message[256];
} pyattn_error;

/* The function table the core exports. */
typedef struct pyattn_capi_table {
  uint32_t version;            /* PYATTN_CAPI_VERSION of the core */
  uint32_t table_size;         /* sizeof(pyattn_capi_table) in the core */
  /* Computes attention as described above. Returns PYATTN_OK, or an error
   * code and (if err is not NULL) fills *err; never raises, never prints,
   * never touches out/weights/lse when it fails a check. Thread-safe; does
   * not need the GIL. */
  int (*sdpa)(const pyattn_sdpa_params *params, pyattn_error *err);
  /* pyattn's version string, e.g. "0.1.0". */
  const char *(*version_string)(void);
} pyattn_capi_table;

/* Every option at its default: no mask, not causal, no window, no
 * kv_lengths, no weights or lse, the default scale and threads, float32,
 * all sizes 0 and all pointers NULL. */
static inline void pyattn_sdpa_params_init(pyattn_sdpa_params *p) {
  const unsigned char *end = (const unsigned char *)(p + 1);
  unsigned char *c = (unsigned char *)p;
  while (c != end) *c++ = 0;
  p->struct_size = sizeof(pyattn_sdpa_params);
  p->dtype = PYATTN_FLOAT32;
  p->window_left = -1;
  p->window_right = -1;
  p->kv_lengths_stride = 1;
  p->scale = (double)NAN;
}

#ifndef PYATTN_CAPI_IMPLEMENTATION

/* The table this translation unit imported (one per extension module, as
 * NumPy's PyArray_API). */
static const pyattn_capi_table *pyattn_capi_ptr = NULL;

/* Calls the core; PYATTN_ERR_VERSION if pyattn_import_capi() has not run. */
static inline int pyattn_sdpa(const pyattn_sdpa_params *params, pyattn_error *err) {
  if (pyattn_capi_ptr == NULL) {
    if (err != NULL) {
      static const char msg[] = "pyattn C API: call pyattn_import_capi() (capi.import_pyattn() in Cython) first";
      size_t i = 0;
      err->code = PYATTN_ERR_VERSION;
      for (; i + 1 < sizeof(err->message) && msg[i]; ++i) err->message[i] = msg[i];
      err->message[i] = '\0';
    }
    return PYATTN_ERR_VERSION;
  }
  return pyattn_capi_ptr->sdpa(params, err);
}

/* The installed pyattn's version, e.g. "0.1.0"; NULL before pyattn_import_capi(). */
static inline const char *pyattn_version_string(void) {
  return pyattn_capi_ptr != NULL ? pyattn_capi_ptr->version_string() : NULL;
}

#ifdef Py_PYTHON_H
/* Imports pyattn._core and takes its table (needs the GIL). Returns 0, or
 * -1 with a Python exception set (ImportError if the installed pyattn is
 * older than this header). Calling it again is cheap. */
static inline int pyattn_import_capi(void) {
  const pyattn_capi_table *t;
  if (pyattn_capi_ptr != NULL) return 0;
  t = (const pyattn_capi_table *)PyCapsule_Import("pyattn._core._C_API", 0);
  if (t == NULL) return -1;
  if (t->version < PYATTN_CAPI_VERSION ||
      t->table_size < offsetof(pyattn_capi_table, version_string) + sizeof(t->version_string)) {
    PyErr_Format(PyExc_ImportError,
                 "pyattn C API version %u is older than the version %d this module was built for",
                 (unsigned)t->version, PYATTN_CAPI_VERSION);
    return -1;
  }
  pyattn_capi_ptr = t;
  return 0;
}
#endif /* Py_PYTHON_H */

#endif /* PYATTN_CAPI_IMPLEMENTATION */

#ifdef __cplusplus
}
#endif

#endif /* PYATTN_CAPI_H_ */
