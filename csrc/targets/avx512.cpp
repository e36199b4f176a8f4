// The AVX-512 target (F, DQ, BW, VL + FMA: x86-64 "v4"). Only this
// translation unit is compiled for AVX-512, through the target pragma below;
// the rest of the extension stays baseline so it runs (and dispatches) on any
// x86-64 CPU.
#include "target_prelude.h"

#include <immintrin.h>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,avx512f,avx512dq,avx512bw,avx512vl"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma,avx512f,avx512dq,avx512bw,avx512vl")
#endif

namespace pyattn {
namespace avx512 {

#include "../kernels/vec_avx512-inl.h"
#include "../kernels/vec_math-inl.h"
#include "../kernels/attention_loop-inl.h"
#include "../kernels/sdpa-inl.h"
#include "../kernels/additive-inl.h"

// Q K^T: 12 rows x 2 vectors = 24 accumulators of the 32 zmm registers (the
// query scalars are broadcast straight from memory into the FMAs).
// P V: 6 rows x 4 vectors (Ev = 64 floats per pass) = 24 accumulators.
using Shape = TileShape<12, 2, 6, 4>;

void sdpa_f32(const SdpaParams& p, const Tiling& t, int64_t b, int64_t e, void* s) {
  sdpa_kernel<Avx512F32, Shape>(p, t, b, e, s);
}
void sdpa_f64(const SdpaParams& p, const Tiling& t, int64_t b, int64_t e, void* s) {
  sdpa_kernel<Avx512F64, Shape>(p, t, b, e, s);
}

// Additive scores: 8 rows x 2 vectors = 16 accumulators of the 32 zmm.
using AdditiveShape = TileShape<8, 2, 6, 4>;

void additive_f32(const AdditiveParams& p, const Tiling& t, int64_t b, int64_t e, void* s) {
  additive_kernel<Avx512F32, AdditiveShape>(p, t, b, e, s);
}
void additive_f64(const AdditiveParams& p, const Tiling& t, int64_t b, int64_t e, void* s) {
  additive_kernel<Avx512F64, AdditiveShape>(p, t, b, e, s);
}

}  // namespace avx512
}  // namespace pyattn

#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif

// Outside the target region: the dispatcher may call this on any CPU.
namespace pyattn {
namespace avx512 {

const KernelTable& kernel_table() {
  static constexpr KernelTable table = {
      "avx512", {&sdpa_f32, &sdpa_f64}, {&additive_f32, &additive_f64}};
  return table;
}

}  // namespace avx512
}  // namespace pyattn
