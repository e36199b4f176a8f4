// The kernels every target compiles, and their entry points (one per op and
// dtype) for the function table. Included INSIDE a target's namespace (and
// target region) after it has defined the Vec types VecF32 / VecF64 and the
// register-tile shapes SdpaShape / AdditiveShape; no include guard.

#include "../kernels/vec_math-inl.h"
#include "../kernels/attention_loop-inl.h"
#include "../kernels/sdpa-inl.h"
#include "../kernels/additive-inl.h"

void sdpa_f32(const SdpaParams& p, const Tiling& t, int64_t b, int64_t e, void* s) {
  sdpa_kernel<VecF32, SdpaShape>(p, t, b, e, s);
}
void sdpa_f64(const SdpaParams& p, const Tiling& t, int64_t b, int64_t e, void* s) {
  sdpa_kernel<VecF64, SdpaShape>(p, t, b, e, s);
}
// bfloat16 / float16 q, k, v: float32 kernels that convert as they read.
void sdpa_bf16(const SdpaParams& p, const Tiling& t, int64_t b, int64_t e, void* s) {
  sdpa_kernel<VecF32, SdpaShape, Bf16>(p, t, b, e, s);
}
void sdpa_f16(const SdpaParams& p, const Tiling& t, int64_t b, int64_t e, void* s) {
  sdpa_kernel<VecF32, SdpaShape, F16>(p, t, b, e, s);
}
void additive_f32(const AdditiveParams& p, const Tiling& t, int64_t b, int64_t e, void* s) {
  additive_kernel<VecF32, AdditiveShape>(p, t, b, e, s);
}
void additive_f64(const AdditiveParams& p, const Tiling& t, int64_t b, int64_t e, void* s) {
  additive_kernel<VecF64, AdditiveShape>(p, t, b, e, s);
}
