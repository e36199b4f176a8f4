#include "read_bandwidth.h"

#include <atomic>

#include "parallel.h"

namespace pyattn {

uint64_t stream_read(const void* data, int64_t bytes, int num_threads) {
  constexpr int64_t kChunk = int64_t(1) << 20;
  // Words fetched ahead (4 KiB): the hardware prefetcher alone left one
  // thread's stream latency-bound on the development machine.
  constexpr int64_t kAhead = 512;
  const int64_t words = bytes / 64 * 8;
  const int64_t chunk_words = kChunk / 8;
  const int64_t items = (words + chunk_words - 1) / chunk_words;
  const uint64_t* w = static_cast<const uint64_t*>(data);
  std::atomic<uint64_t> result{0};
  parallel_for_items(items, num_threads, 0, ItemOrder{}, [&](WorkItems& work, void*) {
    uint64_t a[8] = {};
    for (int64_t item = work.next(); item >= 0; item = work.next()) {
      const int64_t end = item * chunk_words + chunk_words < words ? item * chunk_words + chunk_words : words;
      for (int64_t i = item * chunk_words; i < end; i += 8) {
        __builtin_prefetch(w + i + kAhead);
        for (int k = 0; k < 8; ++k) a[k] ^= w[i + k];
      }
    }
    result.fetch_xor(a[0] ^ a[1] ^ a[2] ^ a[3] ^ a[4] ^ a[5] ^ a[6] ^ a[7], std::memory_order_relaxed);
  });
  return result.load();
}

}  // namespace pyattn
