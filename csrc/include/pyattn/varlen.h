// Packed batches of sequences of different lengths (flash-attention's
// "varlen" layout): the SIMD-free C++ entry point.
//
//   query (total_q, Hq, E), key (total_k, Hkv, E), value (total_k, Hkv, Ev),
//   out (total_q, Hq, Ev), lse (total_q, Hq); sequence n is query rows
//   [cu_q[n], cu_q[n+1]) attending to key rows [cu_k[n], cu_k[n+1]).
//
// Each sequence is computed exactly as scaled_dot_product_attention computes
// it on its own (same tiling, so the same bits): its own L_n, S_n for the
// causal alignment and the window. The work items of every sequence --
// (sequence, kv head, row group, key split) -- run in ONE parallel region;
// nothing is padded, so the cost grows with sum_n L_n * S_n.
#pragma once

#include <cstdint>

#include "pyattn/sdpa.h"

namespace pyattn {

struct VarlenParams {
  // The attention of one sequence, as scaled_dot_product_attention would be
  // given it, with L = S = 0 and the q/k/v/out/lse data pointers at row 0
  // of the packed arrays: batch = key/value heads, fold = query heads per
  // key/value head (grouped-query attention), row strides = the packed
  // arrays' token strides. The driver points a copy at each sequence.
  SdpaParams seq;
  int64_t num_seqs = 0;
  const int64_t* cu_q = nullptr;  // num_seqs + 1 offsets: 0, non-decreasing, total_q
  const int64_t* cu_k = nullptr;  // num_seqs + 1 offsets: 0, non-decreasing, total_k
};

// Computes every sequence as described above. Thread-safe; results are
// bitwise identical for every num_threads. Throws std::bad_alloc if the
// scratch space cannot be had.
void varlen_attention(const VarlenParams& params);

}  // namespace pyattn
