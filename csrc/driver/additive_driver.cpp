// Additive attention driver: the shared driver sequence (attention_driver.h).
#include "pyattn/additive.h"
#include "../dispatch/kernel_table.h"
#include "attention_driver.h"

namespace pyattn {

void additive_attention(const AdditiveParams& p) {
  // The scorer keeps two values per (query row, a) -- e^{2 qp} and
  // v_a e^{2 qp} -- and per (key, a) -- kp and e^{2 kp} (additive-inl.h) --
  // so the tiling is sized as for dot products of width 2A.
  run_attention(p, 2 * p.A, /*log2_scores=*/false, active_kernels().additive[static_cast<int>(p.dtype)]);
}

}  // namespace pyattn
