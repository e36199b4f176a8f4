// What every attention op shares: the batch, the values it averages, the
// visibility rules, the explicit mask and the outputs. Each op's params
// struct (SdpaParams, AdditiveParams) extends this with how it scores a
// query against a key. SIMD-free.
#pragma once

#include <cstdint>

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

// Score variants of current models; every one is off by default. The order
// in which a score is made: s = scale * <q, k> (or the op's own score), then
//   softcap > 0:   s = softcap * tanh(s / softcap)         (Gemma 2)
//   + the float mask's bias, then
//   alibi_slopes:  s += -slope * |p(i) - j|                 (BLOOM, MPT)
//                  with p(i) the query row's key position (Visibility);
// then the softmax, whose denominator gains exp(sink) once per row if
//   sinks:         p[i, j] = exp(s[i, j]) / (exp(sink) + sum_j' exp(s[i, j']))
//                  (gpt-oss; no value vector; lse = log(exp(sink) + sum ...);
//                  a row with no visible key: out 0, weights 0, lse = sink).
// alibi_slopes and sinks hold one value per query head: arrays over the batch
// with no trailing dimensions (row_stride 0, col_stride 1; with folded rows,
// fold_stride steps between the heads of one item), in the compute dtype
// `dtype`; value_at() finds the one of a (batch element, folded row).
// Slopes must be finite; a sink may be -inf (no sink) but not +inf or NaN
// (the argument rules check both).
struct ScoreVariants {
  double softcap = 0;           // > 0: on; 0: off
  StridedArray alibi_slopes;    // data null: off
  StridedArray sinks;           // data null: off

  // Element offset of the value for row r (of rows_total = fold * L) of batch element b.
  static int64_t value_offset(const StridedArray& a, const BatchShape& batch, int64_t b, int64_t r,
                              int64_t L) {
    return a.batch_offset(batch, b) + (r / L) * a.fold_stride;
  }
};

struct AttentionParams {
  DType dtype = DType::f32;     // compute and storage type of inputs and out
  BatchShape batch;
  int64_t L = 0, S = 0, Ev = 0;
  int64_t fold = 1;             // query rows per item-batch element: fold * L
                                // (see StridedArray::fold_stride)

  StridedArray v;               // (batch, S, Ev), col_stride 1
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
