// The one switch point of the attention kernels: the runtime options of a
// call that shape its inner loops become template constants here, and
// nowhere else (flash-attention's static_switch.h). SIMD-free; the targets
// call switch_variants() from their entry points (target_kernels-inl.h).
//
// Constants and the kernels instantiated with them, per ISA target
// (generic, avx2, avx512):
//   Epilogue  {none, softcap, alibi, softcap_alibi}: the score epilogue
//             (score_variants-inl.h), a step on each strip's score tile.
//   sdpa      4 storage types (f32, f64, bf16, f16) x 4 epilogues = 16
//   sdpa      float32 q over k/v stored apart (a KV cache's kv_dtype:
//             bf16, f16, i8) x 4 epilogues                        = 12
//   additive  2 dtypes x {none}                                   =  2
// i.e. 30 instantiations of attention_loop per target (6 before the
// epilogues and the KV-cache storages). A new epilogue adds 4 per target (one per storage type); a new
// constant multiplies the sdpa count by its number of values, so each must
// buy something per score. What runs once per row or per call stays a
// runtime value: the sink (row_finish.h: one branch per finished row, and a
// row without a sink takes exactly the plain softmax's arithmetic) would
// have doubled the instantiations (and the build time of each target) for
// no measurable gain. So do the mask kind (one branch per row: the mask row
// is applied by apply_mask_row, or added by the scorer as it stores the
// tile), causal / window / kv_lengths (each row's visible keys are one
// interval, computed once per row and block: hidden key blocks are never
// visited, and only boundary blocks hide columns) and weights (staged once
// per row and block by the WeightsSink).
#pragma once

#include "pyattn/attention_params.h"

namespace pyattn {

enum class Epilogue : int { none = 0, softcap = 1, alibi = 2, softcap_alibi = 3 };

// The template constants of one kernel instantiation.
template <Epilogue kEpi>
struct Variant {
  static constexpr Epilogue kEpilogue = kEpi;
  static constexpr bool kSoftcap = kEpi == Epilogue::softcap || kEpi == Epilogue::softcap_alibi;
  static constexpr bool kAlibi = kEpi == Epilogue::alibi || kEpi == Epilogue::softcap_alibi;
};

using PlainVariant = Variant<Epilogue::none>;  // ops without score variants (additive)

inline Epilogue epilogue_of(const ScoreVariants& v) {
  const int kind = (v.softcap > 0 ? 1 : 0) | (v.alibi_slopes.data ? 2 : 0);
  return static_cast<Epilogue>(kind);
}

// Calls f(Variant<...>{}) with the constants of p's score variants.
template <class F>
void switch_variants(const AttentionParams& p, F&& f) {
  switch (epilogue_of(p.variants)) {
    case Epilogue::none: return f(Variant<Epilogue::none>{});
    case Epilogue::softcap: return f(Variant<Epilogue::softcap>{});
    case Epilogue::alibi: return f(Variant<Epilogue::alibi>{});
    case Epilogue::softcap_alibi: return f(Variant<Epilogue::softcap_alibi>{});
  }
}

}  // namespace pyattn
