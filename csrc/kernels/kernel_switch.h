// The one switch point of the attention kernels: the runtime options of a
// call that shape its inner loops become template constants here, and
// nowhere else (flash-attention's static_switch.h). SIMD-free; the targets
// call switch_variants() from their entry points (target_kernels-inl.h).
//
// Constants and the kernels instantiated with them, per ISA target
// (generic, avx2, avx512):
//   Epilogue  a set of EpilogueBit (softcap, alibi: 4 sets): the score
//             epilogues (score_variants-inl.h), steps on each strip's score
//             tile.
//   sdpa      4 storage types (f32, f64, bf16, f16) x 4 sets      = 16
//   sdpa      float32 q over k/v stored apart (a KV cache's kv_dtype:
//             bf16, f16, i8) x 4 sets                             = 12
//   additive  2 dtypes x {none}                                   =  2
// i.e. 30 instantiations of attention_loop per target (6 before the
// epilogues and the KV-cache storages). A new epilogue is a bit here (and
// its kX constant, its test in epilogue_of, and kTransforms or kBiases); it
// doubles the sdpa count (each set of epilogues with and without it), as any
// new constant multiplies it by its number of values, so each must buy
// something per score. What runs once per row or per call stays a
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

#include <utility>

#include "pyattn/attention_params.h"

namespace pyattn {

// One bit per score epilogue (score_variants-inl.h); a kernel's epilogue
// constant is the set of bits of the epilogues it applies.
enum EpilogueBit : unsigned { kSoftcapBit = 1u << 0, kAlibiBit = 1u << 1 };
inline constexpr unsigned kEpilogueCombinations = 1u << 2;  // every set of bits

// The template constants of one kernel instantiation.
template <unsigned kEpi>
struct Variant {
  static constexpr unsigned kEpilogue = kEpi;
  static constexpr bool kSoftcap = (kEpi & kSoftcapBit) != 0;
  static constexpr bool kAlibi = (kEpi & kAlibiBit) != 0;
  // What the loop asks (score_strip-inl.h): whether an epilogue transforms
  // the raw scores before the mask (ScoreEpilogue::transform; then the
  // scorer cannot add the float mask as it stores the scores), and whether
  // one adds a bias after it (ScoreEpilogue::add_bias).
  static constexpr bool kTransforms = kSoftcap;
  static constexpr bool kBiases = kAlibi;
};

using PlainVariant = Variant<0>;  // ops without score variants (additive)

// The epilogues p's score variants ask for (ScoreVariants: pyattn/score_options.h).
inline unsigned epilogue_of(const ScoreVariants& v) {
  return (v.softcap > 0 ? kSoftcapBit : 0u) | (v.alibi_slopes.data ? kAlibiBit : 0u);
}

template <class F, unsigned... kEpi>
void switch_epilogue(unsigned epi, F&& f, std::integer_sequence<unsigned, kEpi...>) {
  (void)((epi == kEpi ? (f(Variant<kEpi>{}), true) : false) || ...);
}

// Calls f(Variant<...>{}) with the constants of p's score variants.
template <class F>
void switch_variants(const AttentionParams& p, F&& f) {
  switch_epilogue(epilogue_of(p.variants), f, std::make_integer_sequence<unsigned, kEpilogueCombinations>{});
}

}  // namespace pyattn
