// The AVX2 + FMA target (x86-64 "v3"). Only this translation unit is compiled
// for AVX2, through the target pragma below; the rest of the extension stays
// baseline so it can run (and dispatch) on any x86-64 CPU.
#include "target_prelude.h"

#include <immintrin.h>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif

namespace pyattn {
namespace avx2 {

#include "../kernels/vec_avx2-inl.h"
#include "../kernels/vec_math-inl.h"
#include "../kernels/attention_loop-inl.h"
#include "../kernels/sdpa-inl.h"
#include "../kernels/additive-inl.h"

// Q K^T: 6 rows x 2 vectors = 12 accumulators + 2 panel loads + 1 broadcast
// of the 16 ymm registers. P V: 4 rows x 3 vectors = 12 accumulators.
using Shape = TileShape<6, 2, 4, 3>;

void sdpa_f32(const SdpaParams& p, const Tiling& t, int64_t b, int64_t e, void* s) {
  sdpa_kernel<Avx2F32, Shape>(p, t, b, e, s);
}
void sdpa_f64(const SdpaParams& p, const Tiling& t, int64_t b, int64_t e, void* s) {
  sdpa_kernel<Avx2F64, Shape>(p, t, b, e, s);
}

// Additive scores: 4 rows x 2 vectors = 8 accumulators; each term needs a
// few temporaries (the broadcast factors, numerator, denominator, reciprocal).
using AdditiveShape = TileShape<4, 2, 4, 3>;

void additive_f32(const AdditiveParams& p, const Tiling& t, int64_t b, int64_t e, void* s) {
  additive_kernel<Avx2F32, AdditiveShape>(p, t, b, e, s);
}
void additive_f64(const AdditiveParams& p, const Tiling& t, int64_t b, int64_t e, void* s) {
  additive_kernel<Avx2F64, AdditiveShape>(p, t, b, e, s);
}

}  // namespace avx2
}  // namespace pyattn

#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif

// Outside the target region: the dispatcher may call this on any CPU.
namespace pyattn {
namespace avx2 {

const KernelTable& kernel_table() {
  static constexpr KernelTable table = {
      "avx2", {&sdpa_f32, &sdpa_f64}, {&additive_f32, &additive_f64}};
  return table;
}

}  // namespace avx2
}  // namespace pyattn
