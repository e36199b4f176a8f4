// What every attention op shares: the batch, the values it averages, the
// visibility rules, the explicit mask, the score variants (ScoreVariants:
// pyattn/score_options.h) and the outputs. Each op's params
// struct (SdpaParams, AdditiveParams) extends this with how it scores a
// query against a key. SIMD-free.
#pragma once

#include <cstdint>

#include "pyattn/score_options.h"
#include "pyattn/strided.h"

namespace pyattn {

enum class MaskKind : int { none = 0, boolean = 1, additive = 2 };

// Structural visibility: which keys a query row may see before any explicit
// mask. Query row i sits at key position
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

struct AttentionParams {
  DType dtype = DType::f32;     // compute and storage type of inputs and out
  BatchShape batch;
  int64_t L = 0, S = 0, Ev = 0;
  int64_t fold = 1;             // query rows per item-batch element: fold * L
                                // (see StridedArray::fold_stride)

  StridedArray v;               // (batch, S, Ev), col_stride 1
  StridedArray v_scale;         // int8 values (SdpaParams::storage i8): float32 per
                                // (batch, position), (batch, S, 1), row_stride 1
  StridedArray out;             // (batch, L, Ev), col_stride 1

  MaskKind mask_kind = MaskKind::none;
  StridedArray mask;            // (batch, L, S): uint8 (bool) or dtype, any strides

  Visibility vis;
  ScoreVariants variants;

  StridedArray weights;         // (batch, L, S) in dtype, col_stride 1; null = not wanted
  bool weights_resident = false;  // weights memory written before (a reused buffer), so
                                  // no page faults: its writes may be deferred at any size
  StridedArray lse;             // (batch, L) in dtype; null = not wanted

  int num_threads = 1;          // resolved by the caller, >= 1
};

// Whether kernels whose scorer supports it keep scores in log2 units (cheaper
// exponentials; see attention_loop-inl.h). Not with a float mask: its biases
// times log2 e could overflow. The driver's split-KV merge must agree.
inline bool scores_in_log2(const AttentionParams& p) { return p.mask_kind != MaskKind::additive; }
inline constexpr double kLog2e = 1.44269504088896340736;  // scores to log2 units
inline constexpr double kLn2 = 0.693147180559945309417;   // and back (lse)

}  // namespace pyattn
