#include "read_bandwidth.h"

#include <atomic>

#include "../dispatch/kernel_table.h"
#include "parallel.h"

namespace pyattn {

uint64_t stream_read(const void* data, int64_t bytes, int num_threads) {
  constexpr int64_t kChunkLines = (int64_t(1) << 20) / 64;
  const int64_t lines = bytes / 64;
  const int64_t items = (lines + kChunkLines - 1) / kChunkLines;
  const ReadLinesFn read_lines = best_supported_kernels().read_lines;
  std::atomic<uint64_t> result{0};
  parallel_for_items(items, num_threads, 0, ItemOrder{}, [&](WorkItems& work, void*) {
    uint64_t x = 0;
    for (int64_t item = work.next(); item >= 0; item = work.next()) {
      const int64_t end = item * kChunkLines + kChunkLines < lines ? item * kChunkLines + kChunkLines : lines;
      x ^= read_lines(data, item * kChunkLines, end);
    }
    result.fetch_xor(x, std::memory_order_relaxed);
  });
  return result.load();
}

}  // namespace pyattn
