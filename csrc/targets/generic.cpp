// The portable target: plain C++ kernels (one-lane Vec), compiled for the
// baseline ISA of the build. Always available, and the PYATTN_ISA=generic
// fallback.
#include "target_prelude.h"

namespace pyattn {
namespace generic {

#include "../kernels/vec_scalar-inl.h"

using VecF32 = ScalarVec<float>;
using VecF64 = ScalarVec<double>;
// Register tiles: 4 rows x 4 columns for every product (16 accumulators,
// which the compiler keeps in the 16 SSE registers of baseline x86-64).
using SdpaShape = TileShape<4, 4, 4, 4, 8>;
using AdditiveShape = TileShape<4, 4, 4, 4, 8>;

#include "target_kernels-inl.h"

PYATTN_DEFINE_KERNEL_TABLE("generic")

}  // namespace generic
}  // namespace pyattn
