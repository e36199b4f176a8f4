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

#include "pyattn/strided.h"

namespace pyattn {

enum class MaskKind : int { none = 0, boolean = 1, additive = 2 };

// Structural visibility shared by every attention op: which keys a query row
// may see, before any explicit mask. Query row i sits at key position
//   p(i) = i              (upper-left alignment)
//   p(i) = i + n - L      (lower-right alignment; n = valid keys of the batch
//                          element: kv_lengths, else S)
// and key j is visible iff  j < n,  (causal: j <= p(i)),
//   p(i) - window_left <= j <= p(i) + window_right  (each side if >= 0).
// The visible keys of a row are therefore one contiguous interval.
struct Visibility {
  bool causal = false;
  bool lower_right = false;     // alignment of p(i) for causal and window
  int64_t window_left = -1;     // -1 = unbounded
  int64_t window_right = -1;    // -1 = unbounded
  StridedArray lengths;         // int64 per batch element; data null = all S
};

struct SdpaParams {
  DType dtype = DType::f32;     // compute and storage type of q/k/v/out
  BatchShape batch;
  int64_t L = 0, S = 0, E = 0, Ev = 0;
  double scale = 1.0;

  StridedArray q, k, v;         // (batch, L, E), (batch, S, E), (batch, S, Ev)
  StridedArray out;             // (batch, L, Ev), col_stride 1

  MaskKind mask_kind = MaskKind::none;
  StridedArray mask;            // (batch, L, S): uint8 (bool) or dtype

  Visibility vis;

  StridedArray weights;         // (batch, L, S) in dtype; data null = not wanted
  StridedArray lse;             // (batch, L) in f32 (f64 for f64); null = not wanted

  int num_threads = 1;          // resolved by the caller, >= 1
};

// Computes attention as described above. Thread-safe; does not allocate
// anything visible to the caller; results are bitwise identical for every
// num_threads. Throws std::bad_alloc if the scratch space cannot be had.
void scaled_dot_product_attention(const SdpaParams& params);

}  // namespace pyattn
