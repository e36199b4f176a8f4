// The portable target: plain C++ kernels (one-lane Vec), compiled for the
// baseline ISA of the build. Always available, and the PYATTN_ISA=generic
// fallback.
#include "target_prelude.h"

namespace pyattn {
namespace generic {

#include "../kernels/vec_scalar-inl.h"
#include "../kernels/vec_math-inl.h"
#include "../kernels/attention_loop-inl.h"
#include "../kernels/sdpa-inl.h"
#include "../kernels/additive-inl.h"

// Register tiles: 4 rows x 4 columns for both products (16 accumulators,
// which the compiler keeps in the 16 SSE registers of baseline x86-64).
using Shape = TileShape<4, 4, 4, 4>;

const KernelTable& kernel_table() {
  static constexpr KernelTable table = {
      "generic",
      {&sdpa_kernel<ScalarVec<float>, Shape>, &sdpa_kernel<ScalarVec<double>, Shape>},
      {&additive_kernel<ScalarVec<float>, Shape>, &additive_kernel<ScalarVec<double>, Shape>},
  };
  return table;
}

}  // namespace generic
}  // namespace pyattn
