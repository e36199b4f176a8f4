// The machine's read bandwidth, for the benchmarks' memory roof: a streaming
// read of a buffer by `num_threads` threads, each taking 1 MiB chunks in
// turn and fetching 4 KiB ahead of its reads. SIMD-free baseline code (the compiler vectorises the XOR loop with
// the baseline ISA's 16-byte loads, far more than one core can fetch from
// memory); the threads are the driver's (parallel.h).
#pragma once

#include <cstdint>

namespace pyattn {

// Reads bytes [0, bytes) of `data` (rounded down to whole 64-byte lines) and
// returns the XOR of its 8-byte words, so that the reads cannot be skipped.
uint64_t stream_read(const void* data, int64_t bytes, int num_threads);

}  // namespace pyattn
