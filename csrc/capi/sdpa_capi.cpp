// The C API's scaled-dot-product attention (pyattn/include/pyattn_capi.h):
// checks a caller's pyattn_sdpa_params -- sizes, pointers, strides, option
// values, overflow -- and translates it into the SdpaParams the core trusts,
// laid out exactly as the Python fast path lays out the same arrays (so the
// results are the same bits), then runs the core. No Python here: this is
// called without the GIL. Errors become a code and a message.
#include "sdpa_capi.h"

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <exception>
#include <new>
#include <string>
#include <vector>

#include "pyattn/batch_layout.h"
#include "pyattn/call_rules.h"
#include "pyattn/score_options.h"
#include "pyattn/sdpa.h"
#include "pyattn/threads.h"

namespace pyattn::capi {

// The C ABI's codes are the core's (one definition each: pyattn/call_rules.h, pyattn/strided.h).
static_assert(PYATTN_CAUSAL_NONE == static_cast<int>(Causal::none) &&
              PYATTN_CAUSAL_UPPER_LEFT == static_cast<int>(Causal::upper_left) &&
              PYATTN_CAUSAL_LOWER_RIGHT == static_cast<int>(Causal::lower_right), "causal codes");
static_assert(PYATTN_FLOAT32 == static_cast<int>(DType::f32) && PYATTN_FLOAT64 == static_cast<int>(DType::f64),
              "dtype codes");
static_assert(PYATTN_MASK_NONE == static_cast<int>(MaskKind::none) &&
              PYATTN_MASK_BOOL == static_cast<int>(MaskKind::boolean) &&
              PYATTN_MASK_FLOAT == static_cast<int>(MaskKind::additive), "mask codes");

namespace {

// The size of the struct's first version (up to and including `scale`):
// every caller's struct is at least this large.
constexpr size_t kParamsV1Size = offsetof(pyattn_sdpa_params, scale) + sizeof(double);

int fail(pyattn_error* err, int code, const char* fmt, ...) {
  if (err) {
    err->code = code;
    va_list args;
    va_start(args, fmt);
    std::vsnprintf(err->message, sizeof(err->message), fmt, args);
    va_end(args);
  }
  return code;
}

bool mul_ok(int64_t a, int64_t b, int64_t* r) { return !__builtin_mul_overflow(a, b, r); }

// One array of the call: its name, the sizes of its (batch, heads, rows,
// cols) dims (the dims it does not have are 1), and the caller's strides.
struct Operand {
  const char* name;
  const pyattn_array* a;
  int64_t dims[4];
  bool unit_cols;   // its column stride must be 1 (when it has more than one column)
  bool required;    // data must not be NULL when it has elements
};

// Element count of `o` (sizes already checked non-negative), or -1 on overflow.
int64_t element_count(const Operand& o) {
  int64_t n = 1;
  for (int64_t d : o.dims)
    if (!mul_ok(n, d, &n)) return -1;
  return n;
}

int check_operand(const Operand& o, int64_t item, pyattn_error* err) {
  const int64_t count = element_count(o);
  int64_t bytes;
  if (count < 0 || !mul_ok(count, item, &bytes))
    return fail(err, PYATTN_ERR_SHAPE, "%s: %lld x %lld x %lld x %lld elements do not fit in 64 bits",
                o.name, (long long)o.dims[0], (long long)o.dims[1], (long long)o.dims[2],
                (long long)o.dims[3]);
  if (count == 0) return PYATTN_OK;  // never read or written
  if (!o.a->data && o.required) return fail(err, PYATTN_ERR_NULL, "%s.data is NULL", o.name);
  const int64_t strides[4] = {o.a->stride_b, o.a->stride_h, o.a->stride_row, o.a->stride_col};
  if (o.unit_cols && o.dims[3] > 1 && strides[3] != 1)
    return fail(err, PYATTN_ERR_STRIDE, "%s.stride_col must be 1 (got %lld)", o.name, (long long)strides[3]);
  // The farthest element from data, in bytes, must be addressable.
  int64_t extent = 0;
  for (int d = 0; d < 4; ++d) {
    if (o.dims[d] <= 1) continue;
    int64_t span;
    const int64_t s = strides[d] < 0 ? -strides[d] : strides[d];
    if (strides[d] == INT64_MIN || !mul_ok(s, o.dims[d] - 1, &span) || __builtin_add_overflow(extent, span, &extent))
      return fail(err, PYATTN_ERR_STRIDE, "%s: strides (%lld, %lld, %lld, %lld) reach beyond 64-bit offsets",
                  o.name, (long long)strides[0], (long long)strides[1], (long long)strides[2],
                  (long long)strides[3]);
  }
  if (!mul_ok(extent + 1, item, &bytes))
    return fail(err, PYATTN_ERR_STRIDE, "%s: strides reach beyond 64-bit byte offsets", o.name);
  return PYATTN_OK;
}

// The caller's struct, with the fields it does not have (an older caller)
// at their defaults. A newer caller's unknown fields must be zero.
int read_params(const pyattn_sdpa_params* user, pyattn_sdpa_params* p, pyattn_error* err) {
  if (!user) return fail(err, PYATTN_ERR_NULL, "params is NULL");
  const size_t size = user->struct_size;
  if (size < kParamsV1Size)
    return fail(err, PYATTN_ERR_VERSION,
                "params.struct_size is %zu, less than any version of pyattn_sdpa_params "
                "(%zu): call pyattn_sdpa_params_init() first",
                size, kParamsV1Size);
  if (size > sizeof(pyattn_sdpa_params)) {
    const unsigned char* extra = reinterpret_cast<const unsigned char*>(user) + sizeof(pyattn_sdpa_params);
    for (size_t i = 0; i < size - sizeof(pyattn_sdpa_params); ++i)
      if (extra[i])
        return fail(err, PYATTN_ERR_VERSION,
                    "params sets options this pyattn does not know (struct_size %zu > %zu): "
                    "install a newer pyattn",
                    size, sizeof(pyattn_sdpa_params));
  }
  pyattn_sdpa_params_init(p);
  std::memcpy(p, user, size < sizeof(*p) ? size : sizeof(*p));
  return PYATTN_OK;
}

// The bytes [lo, hi) an operand's elements span (empty: lo == hi).
struct Span {
  const char* lo;
  const char* hi;
};

Span span_of(const Operand& o, int64_t item) {
  const char* base = static_cast<const char*>(o.a->data);
  if (element_count(o) == 0 || !base) return {base, base};
  const int64_t strides[4] = {o.a->stride_b, o.a->stride_h, o.a->stride_row, o.a->stride_col};
  int64_t lo = 0, hi = 0;  // in elements (bounded by check_operand)
  for (int d = 0; d < 4; ++d) {
    if (o.dims[d] <= 1) continue;
    const int64_t reach = strides[d] * (o.dims[d] - 1);
    (reach < 0 ? lo : hi) += reach;
  }
  return {base + lo * item, base + (hi + 1) * item};
}

bool overlap(const Span& a, const Span& b) { return a.lo < a.hi && b.lo < b.hi && a.lo < b.hi && b.lo < a.hi; }

// Registers `o` with `builder` over the call's batch (B, Hkv, G) and fills
// its trailing strides, as the Python bindings' add_operand does for the
// same arrays: `heads` is the operand's size along (Hkv, G) -- (Hkv, G) for
// query-like arrays, (Hkv, 1) for key/value -- and `sh_kv`, `sh_g` its
// strides along them. A dimension of size 1, or any of an empty array,
// gets stride 0.
void add(BatchLayoutBuilder& builder, const Operand& o, int64_t hkv, int64_t g, int64_t sh_kv,
         int64_t sh_g, int trailing, StridedArray* view) {
  const bool empty = element_count(o) == 0;
  const int64_t dims[5] = {o.dims[0], hkv, g, o.dims[2], o.dims[3]};
  int64_t st[5] = {o.a->stride_b, sh_kv, sh_g, o.a->stride_row, o.a->stride_col};
  for (int d = 0; d < 5; ++d)
    if (dims[d] == 1 || empty) st[d] = 0;
  view->data = const_cast<void*>(o.a->data);
  view->row_stride = trailing >= 1 ? st[3] : 0;
  view->col_stride = trailing >= 2 ? st[4] : 1;
  builder.add(view, {st[0], st[1], st[2]});
}

// Checks the values of a per-head option (B x Hq in the call's dtype T,
// strides checked) against its row of kScoreOptions (the rule and its text,
// as the Python bindings use them).
template <class T>
int check_per_head(const Operand& o, pyattn_error* err) {
  const ScoreOption* opt = nullptr;
  for (const ScoreOption& row : kScoreOptions)
    if (std::strcmp(row.name, o.name) == 0) opt = &row;
  std::string must = opt->must;
  const size_t at = must.find("{dtype}");
  if (at != std::string::npos) must.replace(at, 7, sizeof(T) == 8 ? "float64" : "float32");
  const T* a = static_cast<const T*>(o.a->data);
  for (int64_t b = 0; b < o.dims[0]; ++b)
    for (int64_t h = 0; h < o.dims[1]; ++h) {
      const double x = static_cast<double>(a[b * o.a->stride_b + h * o.a->stride_h]);
      if (!opt->ok(x))
        return fail(err, PYATTN_ERR_VALUE, "%s %s, got %g (batch %lld, head %lld)", o.name, must.c_str(), x,
                    (long long)b, (long long)h);
    }
  return PYATTN_OK;
}

// sdpa() without its guard against exceptions.
int checked_sdpa(const pyattn_sdpa_params* user, pyattn_error* err) {
  pyattn_sdpa_params c;
  if (int rc = read_params(user, &c, err)) return rc;
  if (c.dtype != PYATTN_FLOAT32 && c.dtype != PYATTN_FLOAT64)
    return fail(err, PYATTN_ERR_VALUE, "dtype must be PYATTN_FLOAT32 (0) or PYATTN_FLOAT64 (1), got %d", c.dtype);
  const int64_t item = c.dtype == PYATTN_FLOAT64 ? 8 : 4;
  const struct { const char* name; int64_t n; } sizes[] = {
      {"B", c.B}, {"Hq", c.Hq}, {"Hkv", c.Hkv}, {"L", c.L}, {"S", c.S}, {"E", c.E}, {"Ev", c.Ev}};
  for (const auto& s : sizes)
    if (s.n < 0) return fail(err, PYATTN_ERR_SHAPE, "%s must be >= 0, got %lld", s.name, (long long)s.n);
  if (!kv_heads_divide(c.Hq, c.Hkv))
    return fail(err, PYATTN_ERR_SHAPE, "Hkv (%lld) must divide Hq (%lld)", (long long)c.Hkv, (long long)c.Hq);
  if (c.num_threads < 0)
    return fail(err, PYATTN_ERR_VALUE, "num_threads must be 0 (the default) or >= 1, got %d", c.num_threads);
  if (c.causal < PYATTN_CAUSAL_NONE || c.causal > PYATTN_CAUSAL_LOWER_RIGHT)
    return fail(err, PYATTN_ERR_VALUE, "causal must be PYATTN_CAUSAL_NONE, _UPPER_LEFT or _LOWER_RIGHT (0-2), got %d",
                c.causal);
  if (c.mask_kind < PYATTN_MASK_NONE || c.mask_kind > PYATTN_MASK_FLOAT)
    return fail(err, PYATTN_ERR_VALUE, "mask_kind must be PYATTN_MASK_NONE, _BOOL or _FLOAT (0-2), got %d",
                c.mask_kind);
  if (c.window_left < -1 || c.window_right < -1)
    return fail(err, PYATTN_ERR_VALUE, "window sides must be >= 0, or -1 for unbounded; got (%lld, %lld)",
                (long long)c.window_left, (long long)c.window_right);
  if (!std::isnan(c.scale) && !std::isfinite(c.scale))
    return fail(err, PYATTN_ERR_VALUE, "scale must be finite (or NaN for the default), got %g", c.scale);
  if (c.softcap != 0 && !softcap_ok(c.softcap))
    return fail(err, PYATTN_ERR_VALUE, "softcap must be 0 (off) or a finite number > 0, got %g", c.softcap);

  const int64_t B = c.B, Hq = c.Hq, Hkv = c.Hkv, L = c.L, S = c.S, E = c.E, Ev = c.Ev;
  const int64_t G = Hkv ? Hq / Hkv : 1;
  const Operand q{"q", &c.q, {B, Hq, L, E}, true, true};
  const Operand k{"k", &c.k, {B, Hkv, S, E}, true, true};
  const Operand v{"v", &c.v, {B, Hkv, S, Ev}, true, true};
  const Operand out{"out", &c.out, {B, Hq, L, Ev}, true, true};
  const Operand weights{"weights", &c.weights, {B, Hq, L, S}, true, false};
  const Operand lse{"lse", &c.lse, {B, Hq, L, 1}, false, false};
  const Operand mask{"mask", &c.mask, {B, Hq, L, S}, false, true};
  const Operand slopes{"alibi_slopes", &c.alibi_slopes, {B, Hq, 1, 1}, false, false};
  const Operand sinks{"sinks", &c.sinks, {B, Hq, 1, 1}, false, false};
  const bool have_mask = c.mask_kind != PYATTN_MASK_NONE;
  for (const Operand* o : {&q, &k, &v, &out, &weights, &lse, &mask, &slopes, &sinks}) {
    if ((o == &mask && !have_mask) || (!o->required && !o->a->data)) continue;
    const int64_t o_item = o == &mask && c.mask_kind == PYATTN_MASK_BOOL ? 1 : item;
    if (int rc = check_operand(*o, o_item, err)) return rc;
  }
  for (const Operand* o : {&slopes, &sinks}) {
    if (!o->a->data) continue;
    if (int rc = item == 8 ? check_per_head<double>(*o, err) : check_per_head<float>(*o, err)) return rc;
  }
  // The core's work sizes: every (batch, query row) against every key and feature.
  {
    int64_t rows, cols, n;
    if (!mul_ok(B, Hq, &rows) || !mul_ok(rows, L, &rows) || __builtin_add_overflow(S, E, &cols) ||
        __builtin_add_overflow(cols, Ev, &cols) || !mul_ok(rows, cols, &n) || !mul_ok(n, item, &n))
      return fail(err, PYATTN_ERR_SHAPE, "B * Hq * L * (S + E + Ev) elements do not fit in 64 bits");
  }
  if (c.kv_lengths && B > 0) {
    int64_t span;
    const int64_t s = c.kv_lengths_stride < 0 ? -c.kv_lengths_stride : c.kv_lengths_stride;
    if (c.kv_lengths_stride == INT64_MIN || !mul_ok(s, B - 1, &span) || !mul_ok(span + 1, 8, &span))
      return fail(err, PYATTN_ERR_STRIDE, "kv_lengths_stride %lld reaches beyond 64-bit offsets",
                  (long long)c.kv_lengths_stride);
    for (int64_t b = 0; b < B; ++b) {
      const int64_t n = c.kv_lengths[b * c.kv_lengths_stride];
      if (!length_in_range(n, S))
        return fail(err, PYATTN_ERR_VALUE, "kv_lengths[%lld] = %lld is outside [0, S = %lld]", (long long)b,
                    (long long)n, (long long)S);
    }
  }
  // What the call writes must not overlap anything it reads, nor each other.
  {
    const int64_t mask_item = c.mask_kind == PYATTN_MASK_BOOL ? 1 : item;
    const pyattn_array len{c.kv_lengths, c.kv_lengths_stride, 0, 0, 0};
    const Operand lengths{"kv_lengths", &len, {c.kv_lengths ? B : 0, 1, 1, 1}, false, true};
    const struct { const Operand* o; int64_t item; bool written; } all[] = {
        {&out, item, true}, {&weights, item, c.weights.data != nullptr}, {&lse, item, c.lse.data != nullptr},
        {&q, item, false}, {&k, item, false}, {&v, item, false},
        {&mask, mask_item, have_mask}, {&lengths, 8, false}, {&slopes, item, false}, {&sinks, item, false}};
    for (const auto& w : all) {
      if (!w.written) continue;
      const Span ws = span_of(*w.o, w.item);
      for (const auto& r : all) {
        if (&r == &w || (r.o == &mask && !have_mask) || (!r.written && (r.o == &weights || r.o == &lse)))
          continue;
        if (overlap(ws, span_of(*r.o, r.item)))
          return fail(err, PYATTN_ERR_VALUE, "%s overlaps %s in memory", w.o->name, r.o->name);
      }
    }
  }

  SdpaParams p;
  p.dtype = c.dtype == PYATTN_FLOAT64 ? DType::f64 : DType::f32;
  p.storage = p.dtype;
  p.L = L;
  p.S = S;
  p.E = E;
  p.Ev = Ev;
  p.scale = !std::isnan(c.scale) ? c.scale : default_scale(E);
  p.vis.causal = c.causal != PYATTN_CAUSAL_NONE;
  p.vis.lower_right = c.causal == PYATTN_CAUSAL_LOWER_RIGHT;
  p.vis.window_left = window_side(c.window_left, L, S);
  p.vis.window_right = window_side(c.window_right, L, S);
  p.num_threads = c.num_threads > 0 ? c.num_threads : default_num_threads();
  p.variants.softcap = c.softcap;

  // The batch (B, Hkv, G): query head h = hk * G + g; key/value broadcast over g.
  // (Strides along Hkv: G query heads per kv head. Products cannot
  // overflow: check_operand bounded stride_h * (Hq - 1).)
  BatchLayoutBuilder builder({B, Hkv, G});
  auto add_query_like = [&](const Operand& o, int trailing, StridedArray* view) {
    add(builder, o, Hkv, G, Hkv > 1 ? o.a->stride_h * G : 0, o.a->stride_h, trailing, view);
  };
  add_query_like(q, 2, &p.q);
  add(builder, k, Hkv, 1, c.k.stride_h, 0, 2, &p.k);
  add(builder, v, Hkv, 1, c.v.stride_h, 0, 2, &p.v);
  add_query_like(out, 2, &p.out);
  if (c.weights.data) add_query_like(weights, 2, &p.weights);
  if (c.lse.data) add_query_like(lse, 1, &p.lse);
  if (have_mask) {
    p.mask_kind = c.mask_kind == PYATTN_MASK_BOOL ? MaskKind::boolean : MaskKind::additive;
    add_query_like(mask, 2, &p.mask);
  }
  if (c.kv_lengths) {
    const pyattn_array len{c.kv_lengths, c.kv_lengths_stride, 0, 0, 0};
    const Operand lengths{"kv_lengths", &len, {B, 1, 1, 1}, false, true};
    add(builder, lengths, 1, 1, 0, 0, 0, &p.vis.lengths);
  }
  if (c.alibi_slopes.data) add_query_like(slopes, 0, &p.variants.alibi_slopes);
  if (c.sinks.data) add_query_like(sinks, 0, &p.variants.sinks);
  std::vector<const StridedArray*> shared = {&p.k, &p.v};
  if (c.kv_lengths) shared.push_back(&p.vis.lengths);
  p.fold = builder.fold_shared(shared);
  if (!builder.finish(&p.batch)) return fail(err, PYATTN_ERR_INTERNAL, "batch layout failed");
  scaled_dot_product_attention(p);
  if (err) {
    err->code = PYATTN_OK;
    err->message[0] = '\0';
  }
  return PYATTN_OK;
}

}  // namespace

int sdpa(const pyattn_sdpa_params* params, pyattn_error* err) {
  // Nothing may leave through the C ABI: exceptions become codes.
  try {
    return checked_sdpa(params, err);
  } catch (const std::bad_alloc&) {
    return fail(err, PYATTN_ERR_MEMORY, "out of memory for the scratch space of this call");
  } catch (const std::exception& e) {
    return fail(err, PYATTN_ERR_INTERNAL, "internal error: %s", e.what());
  } catch (...) {
    return fail(err, PYATTN_ERR_INTERNAL, "internal error");
  }
}

const char* version_string() { return PYATTN_VERSION_STRING; }

const pyattn_capi_table* table() {
  static const pyattn_capi_table t = {
      PYATTN_CAPI_VERSION,
      sizeof(pyattn_capi_table),
      &sdpa,
      &version_string,
  };
  return &t;
}

}  // namespace pyattn::capi
