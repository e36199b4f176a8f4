// Scaled-dot-product attention driver: tiling, dispatch, threads.
#include <new>

#include "pyattn/sdpa.h"
#include "../dispatch/kernel_table.h"
#include "../kernels/tiling.h"
#include "parallel.h"

namespace pyattn {

void scaled_dot_product_attention(const SdpaParams& p) {
  if (p.batch.count == 0 || p.L == 0) return;
  const size_t elem = p.dtype == DType::f64 ? sizeof(double) : sizeof(float);
  Tiling t;
  if (!make_sdpa_tiling(p.batch.count, p.L, p.S, p.E, p.Ev, elem, p.weights.data != nullptr, &t))
    throw std::bad_alloc();
  const SdpaKernelFn fn = active_kernels().sdpa[static_cast<int>(p.dtype)];
  parallel_for_items(t.items, p.num_threads, static_cast<size_t>(t.scratch_elems) * elem,
                     [&](int64_t begin, int64_t end, void* scratch) { fn(p, t, begin, end, scratch); });
}

}  // namespace pyattn
