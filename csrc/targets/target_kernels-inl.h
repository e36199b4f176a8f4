// The kernels every target compiles, and their entry points (one per op and
// dtype) for the function table. Included INSIDE a target's namespace (and
// target region) after it has defined the Vec types VecF32 / VecF64 and the
// register-tile shapes SdpaShape / AdditiveShape; no include guard.

#include "../kernels/kernel_common-inl.h"
#include "../kernels/vec_math-inl.h"
#include "../kernels/score_variants-inl.h"
// The attention loop's parts, then the loop (attention_loop-inl.h), then
// the scorers that run it.
#include "../kernels/work_item-inl.h"
#include "../kernels/visible_keys-inl.h"
#include "../kernels/kv_block_source-inl.h"
#include "../kernels/softmax_step-inl.h"
#include "../kernels/pv_product-inl.h"
#include "../kernels/weights_sink-inl.h"
#include "../kernels/score_strip-inl.h"
#include "../kernels/attention_loop-inl.h"
#include "../kernels/sdpa-inl.h"
#include "../kernels/additive-inl.h"
#include "../kernels/projection-inl.h"
#include "../kernels/stream_read-inl.h"

// Each SDPA entry point picks its score-variant instantiation at the one
// switch point (kernel_switch.h, which lists them).
template <class V, class S, class SQ = S>
void sdpa_switch(const SdpaParams& p, const Tiling& t, WorkItems& w, void* s) {
  switch_variants(p, [&](auto var) { sdpa_kernel<V, SdpaShape, S, decltype(var), SQ>(p, t, w, s); });
}
void sdpa_f32(const SdpaParams& p, const Tiling& t, WorkItems& w, void* s) {
  sdpa_switch<VecF32, float>(p, t, w, s);
}
void sdpa_f64(const SdpaParams& p, const Tiling& t, WorkItems& w, void* s) {
  sdpa_switch<VecF64, double>(p, t, w, s);
}
// bfloat16 / float16 q, k, v: float32 kernels that convert as they read.
void sdpa_bf16(const SdpaParams& p, const Tiling& t, WorkItems& w, void* s) {
  sdpa_switch<VecF32, Bf16>(p, t, w, s);
}
void sdpa_f16(const SdpaParams& p, const Tiling& t, WorkItems& w, void* s) {
  sdpa_switch<VecF32, F16>(p, t, w, s);
}
// float32 q over keys/values stored as bfloat16 / float16 / int8 (+ scales).
void sdpa_f32q_bf16(const SdpaParams& p, const Tiling& t, WorkItems& w, void* s) {
  sdpa_switch<VecF32, Bf16, float>(p, t, w, s);
}
void sdpa_f32q_f16(const SdpaParams& p, const Tiling& t, WorkItems& w, void* s) {
  sdpa_switch<VecF32, F16, float>(p, t, w, s);
}
void sdpa_f32q_i8(const SdpaParams& p, const Tiling& t, WorkItems& w, void* s) {
  sdpa_switch<VecF32, I8, float>(p, t, w, s);
}
void additive_f32(const AdditiveParams& p, const Tiling& t, WorkItems& w, void* s) {
  additive_kernel<VecF32, AdditiveShape>(p, t, w, s);
}
void additive_f64(const AdditiveParams& p, const Tiling& t, WorkItems& w, void* s) {
  additive_kernel<VecF64, AdditiveShape>(p, t, w, s);
}
// The dense projections of additive attention, with the SDPA score tiles.
void project_f32(const ProjectParams& p, WorkItems& w, void* s) { project_kernel<VecF32, SdpaShape>(p, w, s); }
void project_f64(const ProjectParams& p, WorkItems& w, void* s) { project_kernel<VecF64, SdpaShape>(p, w, s); }

// Testing hook (pyattn._core._vec_math): the vectorised elementary functions
// over an array, the tail through a zero-padded vector.
template <class V>
void vec_math_apply(VecMathFn fn, const void* xv, void* yv, int64_t n) {
  using T = typename V::T;
  const T* x = static_cast<const T*>(xv);
  T* y = static_cast<T*>(yv);
  auto f = [fn](typename V::R v) {
    return fn == VecMathFn::exp ? vexp<V>(v) : fn == VecMathFn::exp2 ? vexp2<V>(v) : vtanh<V>(v);
  };
  int64_t i = 0;
  for (; i + V::W <= n; i += V::W) V::store(y + i, f(V::load(x + i)));
  if (i < n) {
    T buf[V::W] = {};
    for (int64_t j = i; j < n; ++j) buf[j - i] = x[j];
    V::store(buf, f(V::load(buf)));
    for (int64_t j = i; j < n; ++j) y[j] = buf[j - i];
  }
}
void vec_math_f32(VecMathFn fn, const void* x, void* y, int64_t n) { vec_math_apply<VecF32>(fn, x, y, n); }
void vec_math_f64(VecMathFn fn, const void* x, void* y, int64_t n) { vec_math_apply<VecF64>(fn, x, y, n); }
