// The AVX-512 target (F, DQ, BW, VL + FMA: x86-64 "v4"). Only this
// translation unit is compiled for AVX-512, through the target region below;
// the rest of the extension stays baseline so it runs (and dispatches) on any
// x86-64 CPU.
// GCC's own AVX-512 headers use a self-initialisation idiom for "undefined"
// vectors that GCC 12 reports as -W(maybe-)uninitialized in every inlined
// intrinsic (~740 false positives): silenced for this unit only, before its
// headers, so that real warnings elsewhere stay visible.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "target_prelude.h"

#include <immintrin.h>

PYATTN_TARGET_BEGIN("avx2,fma,f16c,avx512f,avx512dq,avx512bw,avx512vl")

namespace pyattn {
namespace avx512 {

#include "../kernels/vec_avx512-inl.h"

using VecF32 = Avx512F32;
using VecF64 = Avx512F64;
// Q K^T: 12 rows x 2 vectors = 24 accumulators of the 32 zmm registers (the
// query scalars are broadcast straight from memory into the FMAs).
// P V: 12 rows x 2 vectors = 24 accumulators (2 value loads per 24 FMAs;
// each value row is read once per 32 columns). Strips of 12 rows.
using SdpaShape = TileShape<12, 2, 12, 2, 12>;
// Additive scores: 8 rows x 2 vectors = 16 accumulators of the 32 zmm;
// strips of 24 rows (3 score tiles, 4 P V tiles of 6 x 4).
using AdditiveShape = TileShape<8, 2, 6, 4, 24>;

#include "target_kernels-inl.h"

}  // namespace avx512
}  // namespace pyattn

PYATTN_TARGET_END

namespace pyattn {
namespace avx512 {
PYATTN_DEFINE_KERNEL_TABLE("avx512")
}  // namespace avx512
}  // namespace pyattn
