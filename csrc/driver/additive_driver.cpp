// Additive attention driver: tiling, dispatch, threads (as sdpa_driver.cpp).
#include <new>

#include "pyattn/additive.h"
#include "../dispatch/kernel_table.h"
#include "../kernels/tiling.h"
#include "parallel.h"

namespace pyattn {

void additive_attention(const AdditiveParams& p) {
  if (p.batch.count == 0 || p.L == 0) return;
  const size_t elem = p.dtype == DType::f64 ? sizeof(double) : sizeof(float);
  // The scorer keeps two values per (query row, a) -- e^{2 qp} and
  // v_a e^{2 qp} -- and per (key, a) -- kp and e^{2 kp} (additive-inl.h) --
  // so the tiling is sized as for dot products of width 2A.
  Tiling t;
  if (!make_sdpa_tiling(p.batch.count, p.fold * p.L, p.S, 2 * p.A, p.Ev, elem,
                        p.weights.data != nullptr, &t))
    throw std::bad_alloc();
  const AdditiveKernelFn fn = active_kernels().additive[static_cast<int>(p.dtype)];
  parallel_for_items(t.items, p.num_threads, static_cast<size_t>(t.scratch_elems) * elem,
                     [&](int64_t begin, int64_t end, void* scratch) { fn(p, t, begin, end, scratch); });
}

}  // namespace pyattn
