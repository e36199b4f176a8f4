// Additive (Bahdanau) attention: the SIMD-free C++ entry point.
//
//   s[i, j] = sum_a v_a[a] * tanh(qp[i, a] + kp[j, a])  (+ the float attn_mask)
//   out_i   = sum_j softmax_j(s)[i, j] * v_j,   lse_i = logsumexp_j s[i, j]
//   over the keys visible to row i.
//
// qp = query @ w_query + bias and kp = key @ w_key are the projections; the
// Python layer computes them (pyattn/projection.h, O((L + S) A) memory)
// before the call. The (L, S, A) tensor of tanh arguments is never formed:
// the kernel scores tiles of rows x keys with A in registers (additive-inl.h).
// Masks, causal/window/kv_lengths, weights and lse are those of
// AttentionParams, handled by the loop every op shares.
#pragma once

#include <cstdint>

#include "pyattn/attention_params.h"

namespace pyattn {

struct AdditiveParams : AttentionParams {
  int64_t A = 0;                // attention (projection) size
  StridedArray qp, kp;          // (batch, L, A), (batch, S, A), col_stride 1
  const void* v_a = nullptr;    // (A,) contiguous, in dtype
};

// Computes additive attention as described above. Thread-safe; results are
// bitwise identical for every num_threads. Throws std::bad_alloc if the
// scratch space cannot be had.
void additive_attention(const AdditiveParams& params);

}  // namespace pyattn
