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
  // Writes the folded shape and every operand's batch strides. Returns false
  // if more than kMaxBatchDims dimensions remain.
  bool finish(BatchShape* out);

 private:
  std::vector<int64_t> shape_;
  std::vector<StridedArray*> targets_;
  std::vector<std::vector<int64_t>> strides_;
};

}  // namespace pyattn
