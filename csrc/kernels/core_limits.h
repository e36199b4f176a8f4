// The size limits and memory policies of the core, in one place. SIMD-free
// and safe to include from any translation unit (constants only).
#pragma once

#include <cstddef>
#include <cstdint>

namespace pyattn {

// Query tiles (q_block rows each) per row group, at most: each packed key
// block is shared by this many score tiles (tiling.cpp), and the loop keeps
// one visible-key interval per tile in arrays of this size
// (ItemKeys, visible_keys-inl.h).
constexpr int kMaxTilesPerGroup = 8;

// Scratch of up to this many bytes (all threads of a call together) stays
// with the calling thread for its next call (parallel.h): malloc and free
// were 15% of a tiny call. Larger scratch lives for one call.
constexpr size_t kCachedScratchBytes = size_t(4) << 20;

// Default bound on the row-group probabilities kept in scratch when weights
// are asked for, all threads of a call together (tiling.cpp; a testing hook
// changes it). Beyond it they are kept in the weights array itself.
constexpr int64_t kWeightsScratchBytes = int64_t(32) << 20;

// Weights results up to this size are served by glibc from memory mapped
// before, so their writes can be deferred to overlap the next row group
// (two scratch buffers, tiling.cpp); larger ones are fresh pages unless the
// bindings reuse a kept buffer (weights_resident).
constexpr int64_t kSmallWeightsBytes = int64_t(32) << 20;

// The bindings keep the memory of a freed weights result at least this large
// for the next call's weights (bindings/weights_memory.h).
constexpr int64_t kMinKeptWeightsBytes = int64_t(16) << 20;

// Every result too large to be "small" must be eligible for keeping, or it
// would pay fresh pages on every call with no way to avoid it.
static_assert(kMinKeptWeightsBytes <= kSmallWeightsBytes,
              "weights results above the small size must be keepable");
// A thread's cached scratch must fit beside the weights scratch of one call.
static_assert(static_cast<int64_t>(kCachedScratchBytes) <= kWeightsScratchBytes,
              "cached scratch within the weights scratch bound");

}  // namespace pyattn
