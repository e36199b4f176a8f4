// Scaled-dot-product attention driver: the shared driver sequence (tiling,
// dispatch, threads, split-KV merge) of attention_driver.h.
#include "pyattn/sdpa.h"
#include "../dispatch/kernel_table.h"
#include "attention_driver.h"

namespace pyattn {

void scaled_dot_product_attention(const SdpaParams& p) {
  const KernelTable& table = active_kernels();
  const int s = static_cast<int>(p.storage);
  run_attention(p, p.E, scores_in_log2(p), p.float_query ? table.sdpa_float_query[s] : table.sdpa[s]);
}

}  // namespace pyattn
