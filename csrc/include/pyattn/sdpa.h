// Scaled-dot-product attention: the SIMD-free C++ entry point.
//
//   s[i, j] = scale * <q_i, k_j> + bias[i, j]   over the keys visible to row i
//   out_i   = sum_j softmax_j(s)[i, j] * v_j,   lse_i = logsumexp_j s[i, j]
//
// The caller (the bindings) fills one SdpaParams per call; the driver splits
// the work and hands the same const SdpaParams& to the kernel of the selected
// ISA. All shape/dtype validation happened before: the core trusts the params.
#pragma once

#include <cstdint>

#include "pyattn/attention_params.h"

namespace pyattn {

struct SdpaParams : AttentionParams {
  DType storage = DType::f32;   // element type of q, k, v: dtype, or bf16/f16
                                // (then dtype is f32: out/weights/lse/mask f32)
  int64_t E = 0;
  double scale = 1.0;
  StridedArray q, k;            // (batch, L, E), (batch, S, E), col_stride 1

  // Keys and values stored apart from the query (a KV cache): q is float32
  // (dtype f32) while k and v are `storage` -- bf16, f16 or i8.
  bool float_query = false;
  // i8 storage (float_query): key j holds codes c with k_j = k_scale[j] * c,
  // value j likewise with AttentionParams::v_scale; one float32 per (batch,
  // position), shape (batch, S, 1) with row_stride 1 (positions contiguous).
  StridedArray k_scale;
};

// Computes attention as described above. Thread-safe; results are bitwise
// identical for every num_threads. Throws std::bad_alloc if the scratch
// space cannot be had.
void scaled_dot_product_attention(const SdpaParams& params);

}  // namespace pyattn
