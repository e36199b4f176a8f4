// The dense projection's driver (pyattn/projection.h): work items of
// kProjectRows rows x kProjectChunk columns on pyattn's threads.
#include "pyattn/projection.h"

#include <new>

#include "../dispatch/kernel_table.h"
#include "fp_mode.h"
#include "parallel.h"

namespace pyattn {

void project(const ProjectParams& p) {
  if (p.rows <= 0 || p.A <= 0) return;
  const int64_t item = p.dtype == DType::f64 ? 8 : 4;
  const int64_t row_blocks = (p.rows + kProjectRows - 1) / kProjectRows;
  const int64_t chunks = (p.A + kProjectChunk - 1) / kProjectChunk;
  int64_t items, elems, bytes;
  // Scratch per thread: a packed panel (D x at most kProjectChunk) and a tile.
  if (__builtin_mul_overflow(row_blocks, chunks, &items) || __builtin_mul_overflow(p.D, kProjectChunk, &elems) ||
      __builtin_add_overflow(elems, kProjectRows * kProjectChunk, &elems) ||
      __builtin_mul_overflow(elems, item, &bytes))
    throw std::bad_alloc();
  const ProjectKernelFn fn = active_kernels().project[p.dtype == DType::f64 ? 1 : 0];
  parallel_for_items(items, p.num_threads, static_cast<size_t>(bytes), ItemOrder{}, [&](WorkItems& work, void* s) {
    FlushDenormals ftz;  // (fp_mode.h: the mode every kernel runs in)
    fn(p, work, s);
  });
}

}  // namespace pyattn
