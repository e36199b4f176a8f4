// A dense projection y = x @ w (+ bias) on pyattn's own threads: additive
// attention's query and key projections, so that the threads of another
// library's BLAS are not left spinning on the cores the attention then
// uses (docs/api.md, section 2). SIMD-free entry point.
#pragma once

#include <cstdint>

#include "pyattn/strided.h"

namespace pyattn {

struct ProjectParams {
  DType dtype = DType::f32;  // f32 or f64: x, w, bias and y
  int64_t rows = 0, D = 0, A = 0;
  const void* x = nullptr;     // (rows, D), rows x_stride apart, unit columns
  int64_t x_stride = 0;
  const void* w = nullptr;     // (D, A) contiguous
  const void* bias = nullptr;  // (A,) contiguous, or null
  void* y = nullptr;           // (rows, A) contiguous
  int num_threads = 1;
};

// Columns per work item: a multiple of every ISA's packed panel width.
constexpr int64_t kProjectChunk = 32;
// Rows per work item (a multiple of every ISA's register-tile height).
constexpr int64_t kProjectRows = 96;

// y[r, c] = sum_e x[r, e] * w[e, c] in order e = 0..D-1, then + bias[c]:
// the same bits for every num_threads. Throws std::bad_alloc if the scratch
// cannot be had.
void project(const ProjectParams& params);

}  // namespace pyattn
