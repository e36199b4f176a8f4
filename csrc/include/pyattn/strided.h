// Strided views of the arrays an attention call reads and writes.
//
// Every array argument is described by its batch strides (one per batch
// dimension of the call, 0 where the array is broadcast) plus the strides of
// its two trailing dimensions. All strides are in ELEMENTS, not bytes. This
// header is SIMD-free: it is shared by the bindings, the driver and every ISA.
#pragma once

#include <cstdint>

namespace pyattn {

// Batch dimensions left after size-1 ones are dropped and mergeable
// neighbours are coalesced: at most NumPy's own limit of 64 dimensions, so
// every array NumPy can make fits (real calls have 1-3).
constexpr int kMaxBatchDims = 64;

// Element types. Kernels compute in f32 or f64; bf16 and f16 are storage
// types of q/k/v that the float32 kernels read and convert; i8 is a storage
// type of k/v only (a quantised KV cache: int8 with a float32 scale per
// position, see SdpaParams).
enum class DType : int { f32 = 0, f64 = 1, bf16 = 2, f16 = 3, i8 = 4 };

// The batch dimensions shared by every operand of one call.
struct BatchShape {
  int ndim = 0;
  int64_t shape[kMaxBatchDims] = {};
  int64_t count = 1;  // product of shape; 0 if any dimension is 0
};

// One array: data pointer, per-batch-dimension strides, and the strides of
// its last two dimensions (rows, columns).
struct StridedArray {
  void* data = nullptr;
  int64_t batch_stride[kMaxBatchDims] = {};
  int64_t row_stride = 0;
  int64_t col_stride = 1;
  // Rows of a call may be "folded": row r of an item is row r % L of the
  // (r / L)-th element along one batch dimension that the keys and values
  // broadcast over (grouped-query heads), so those query rows share one pass
  // over K and V. fold_stride steps along that dimension.
  int64_t fold_stride = 0;

  int64_t row_offset(int64_t r, int64_t L) const {
    return (r / L) * fold_stride + (r % L) * row_stride;
  }

  // Element offset of batch element `flat` (row-major over BatchShape).
  int64_t batch_offset(const BatchShape& b, int64_t flat) const {
    int64_t off = 0;
    for (int d = b.ndim - 1; d >= 0; --d) {
      const int64_t n = b.shape[d];
      off += (flat % n) * batch_stride[d];
      flat /= n;
    }
    return off;
  }
};

}  // namespace pyattn
