// The one place OpenMP appears: runs kernel(work, scratch) once on each of up
// to num_threads threads, each with its own scratch; the calls share the work
// items [0, items) through `work` (work_items.h), taking them one at a time
// in `order` (one thread runs them in plain order). Items are independent
// and their arithmetic does not depend on which thread runs them, so the
// split never changes the result.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>

#include "pyattn/threads.h"
#include "../kernels/core_limits.h"
#include "../kernels/work_items.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace pyattn {

struct AlignedFree {
  void operator()(void* p) const { ::operator delete(p, std::align_val_t(64)); }
};
using ScratchPtr = std::unique_ptr<char, AlignedFree>;

// Throws std::bad_alloc if the scratch of every thread cannot be allocated.
inline ScratchPtr allocate_scratch(size_t per_thread_bytes, int threads) {
  const size_t total = per_thread_bytes * static_cast<size_t>(threads);
  if (threads > 0 && total / static_cast<size_t>(threads) != per_thread_bytes) throw std::bad_alloc();
  return ScratchPtr(static_cast<char*>(::operator new(total ? total : 64, std::align_val_t(64))));
}

// The scratch a calling thread keeps between calls (see parallel_for_items;
// its size bound kCachedScratchBytes is in kernels/core_limits.h).
struct ScratchCache {
  ScratchPtr buf;
  size_t bytes = 0;
};
inline ScratchCache& thread_scratch_cache() {
  thread_local ScratchCache cache;
  return cache;
}

template <class Fn>
void parallel_for_items(int64_t items, int num_threads, size_t scratch_bytes, ItemOrder order,
                        Fn&& kernel) {
  if (items <= 0) return;
  int threads = num_threads < 1 ? 1 : num_threads;
  if (threads > max_team_size()) threads = max_team_size();
  if (static_cast<int64_t>(threads) > items) threads = static_cast<int>(items);
#ifndef _OPENMP
  threads = 1;
#endif
  if (!parallel_regions_usable()) threads = 1;  // forked child: see threads.h
  // Round each thread's scratch to whole cache lines so threads never share one.
  const size_t stride = (scratch_bytes + 63) / 64 * 64;
  // Scratch of up to kCachedScratchBytes in all is kept by the calling thread
  // for its next call (malloc and free were 15% of a tiny call); larger
  // scratch is allocated for the call and freed after it. Each calling
  // thread has its own, so concurrent calls from Python threads never share.
  ScratchCache& cache = thread_scratch_cache();
  ScratchPtr owned;
  char* base;
  if (stride <= kCachedScratchBytes / static_cast<size_t>(threads)) {
    const size_t total = stride * static_cast<size_t>(threads);
    if (cache.bytes < total) {
      cache.buf.reset();
      cache.bytes = 0;
      cache.buf = allocate_scratch(total, 1);
      cache.bytes = total;
    }
    base = cache.buf.get();
  } else {
    owned = allocate_scratch(stride, threads);
    base = owned.get();
  }
  if (threads == 1) {
    WorkItems all(items);
    kernel(all, static_cast<void*>(base));
    return;
  }
#ifdef _OPENMP
  before_parallel_region();
  std::atomic<int64_t> taken{0};
#pragma omp parallel num_threads(threads)
  {
    void* mine = base + stride * static_cast<size_t>(omp_get_thread_num());
    WorkItems shared(items, &taken, order);
    kernel(shared, mine);
  }
  after_parallel_region();  // (passive wait: the pool's threads are released)
#endif
}

}  // namespace pyattn
