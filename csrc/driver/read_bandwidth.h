// The machine's read bandwidth, for the benchmarks' memory roof: a streaming
// read of a buffer by `num_threads` threads, each taking 1 MiB chunks in
// turn and fetching 4 KiB ahead of its reads, with the loads of the best ISA
// the CPU supports (whatever PYATTN_ISA selects: the roof is the machine's;
// csrc/kernels/stream_read-inl.h). The threads are the driver's (parallel.h).
#pragma once

#include <cstdint>

namespace pyattn {

// Reads bytes [0, bytes) of `data` (rounded down to whole 64-byte lines) and
// returns the XOR of its 8-byte words, so that the reads cannot be skipped.
uint64_t stream_read(const void* data, int64_t bytes, int num_threads);

}  // namespace pyattn
