// The AVX-512 target (F, DQ, BW, VL + FMA: x86-64 "v4"). Only this
// translation unit is compiled for AVX-512, through the target region below;
// the rest of the extension stays baseline so it runs (and dispatches) on any
// x86-64 CPU.
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
// P V: 6 rows x 4 vectors (Ev = 64 floats per pass) = 24 accumulators.
using SdpaShape = TileShape<12, 2, 6, 4>;
// Additive scores: 8 rows x 2 vectors = 16 accumulators of the 32 zmm.
using AdditiveShape = TileShape<8, 2, 6, 4>;

#include "target_kernels-inl.h"

}  // namespace avx512
}  // namespace pyattn

PYATTN_TARGET_END

namespace pyattn {
namespace avx512 {
PYATTN_DEFINE_KERNEL_TABLE("avx512")
}  // namespace avx512
}  // namespace pyattn
