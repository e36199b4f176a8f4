// The AVX2 + FMA (+ F16C) target (x86-64 "v3"). Only this translation unit is compiled
// for AVX2, through the target region below; the rest of the extension stays
// baseline so it can run (and dispatch) on any x86-64 CPU.
#include "target_prelude.h"

#include <immintrin.h>

PYATTN_TARGET_BEGIN("avx2,fma,f16c")

namespace pyattn {
namespace avx2 {

#include "../kernels/vec_avx2-inl.h"

using VecF32 = Avx2F32;
using VecF64 = Avx2F64;
// Q K^T: 6 rows x 2 vectors = 12 accumulators + 2 panel loads + 1 broadcast
// of the 16 ymm registers. P V: 4 rows x 3 vectors = 12 accumulators.
using SdpaShape = TileShape<6, 2, 4, 3, 12>;
// Additive scores: 4 rows x 2 vectors = 8 accumulators; each term needs a
// few temporaries (the broadcast factors, numerator, denominator, reciprocal).
using AdditiveShape = TileShape<4, 2, 4, 3, 12>;

#include "target_kernels-inl.h"

}  // namespace avx2
}  // namespace pyattn

PYATTN_TARGET_END

namespace pyattn {
namespace avx2 {
PYATTN_DEFINE_KERNEL_TABLE("avx2")
}  // namespace avx2
}  // namespace pyattn
