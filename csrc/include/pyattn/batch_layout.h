// Folding an N-d broadcast batch into the few dimensions the kernels walk.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "pyattn/strided.h"

namespace pyattn {

// Collects the batch strides of every operand of a call (0 where it is
// broadcast), then drops size-1 dimensions and merges neighbours that every
// operand lays out contiguously, so a (B, H) batch of contiguous arrays
// becomes one dimension and offsets cost one multiply.
class BatchLayoutBuilder {
 public:
  explicit BatchLayoutBuilder(std::vector<int64_t> shape) : shape_(std::move(shape)) {}
  // `strides` has one entry (in elements) per batch dimension.
  void add(StridedArray* target, std::vector<int64_t> strides);
  // Removes the innermost batch dimension of size > 1 along which every
  // operand in `shared` is broadcast (stride 0) and records each operand's
  // stride along it as its fold_stride; returns its size (1 if none). The
  // rows of all elements along it then share one pass over the shared
  // operands (grouped-query attention: query heads over one K/V head).
  int64_t fold_shared(const std::vector<const StridedArray*>& shared);
  // Writes the folded shape and every operand's batch strides. Returns false
  // if more than kMaxBatchDims dimensions remain.
  bool finish(BatchShape* out);

 private:
  std::vector<int64_t> shape_;
  std::vector<StridedArray*> targets_;
  std::vector<std::vector<int64_t>> strides_;
};

}  // namespace pyattn
