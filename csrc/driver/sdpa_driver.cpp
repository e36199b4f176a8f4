// Scaled-dot-product attention driver: the shared driver sequence (tiling,
// dispatch, threads, split-KV merge) of attention_driver.h.
#include "pyattn/sdpa.h"
#include "../dispatch/kernel_table.h"
#include "attention_driver.h"

namespace pyattn {

void scaled_dot_product_attention(const SdpaParams& p) {
  run_attention(p, p.E, scores_in_log2(p), active_kernels().sdpa[static_cast<int>(p.storage)]);
}

}  // namespace pyattn
