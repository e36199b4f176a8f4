// The score options of the attention ops (softcap, alibi_slopes, sinks),
// written once: what the kernels read (ScoreVariants), the value rules, and
// ONE TABLE that says how each option is given and checked. The bindings
// read every row of the table generically (csrc/bindings/score_args.h), so
// a new option is a field of ScoreVariants plus a row of kScoreOptions here;
// its epilogue goes to the kernels (csrc/kernels/score_variants-inl.h, with
// its constant at the switch, kernel_switch.h). SIMD-free, no Python.
#pragma once

#include <cmath>
#include <cstdint>

#include "pyattn/strided.h"

namespace pyattn {

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
// A scalar option is a double, 0 when off. A per-head option holds one value
// per query head: an array over the batch with no trailing dimensions
// (row_stride 0, col_stride 1; with folded rows, fold_stride steps between
// the heads of one item), in the compute dtype `dtype`, data null when off;
// value_offset() finds the one of a (batch element, folded row). The value
// rules below hold for every value the kernels see (the bindings check them).
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

// The value rules (a per-head array's values are checked in the compute
// dtype, each widened to double, which keeps NaN, infinities and finiteness).
// softcap: finite and > 0 (0 means off).
inline bool softcap_ok(double c) { return std::isfinite(c) && c > 0; }
// ALiBi slopes are finite; a sink may be -inf (no sink) but not NaN or +inf.
inline bool alibi_slope_ok(double x) { return std::isfinite(x); }
inline bool sink_ok(double x) { return !std::isnan(x) && x != INFINITY; }

// How a score option is given.
enum class ScoreOptionKind : int {
  scalar,    // a real number (not a bool); None or absent: off (the field
             // stays 0, so the rule must refuse 0)
  per_head,  // a float array of one value per query head, broadcasting to
             // the call's batch shape without adding dims (varlen: (Hq,)),
             // converted to the compute dtype; None or absent: off
};

// One score option: its keyword, its kind, where it lands in ScoreVariants,
// its value rule and the ValueError's text when a value breaks the rule:
//   "<name> <must>, got <repr of what the caller passed>"
// with "{dtype}" in `must` replaced by the compute dtype's name (a value
// that only breaks the rule once converted, e.g. a float64 slope beyond
// float32's range).
struct ScoreOption {
  const char* name;
  ScoreOptionKind kind;
  double ScoreVariants::*scalar;          // kind scalar: its field
  StridedArray ScoreVariants::*per_head;  // kind per_head: its field
  bool (*ok)(double);
  const char* must;
};

// THE TABLE of the score options, in the order the bindings read them (and
// lay their arrays out). A row here is all the argument plumbing an option
// needs in Python: the Python layer passes every option it was given to the
// core as one dict, and the bindings read that dict row by row. (The C API,
// a fixed struct, gives each option a field of its own at the struct's end:
// csrc/capi/sdpa_capi.cpp, with the value rules above.)
inline constexpr ScoreOption kScoreOptions[] = {
    {"softcap", ScoreOptionKind::scalar, &ScoreVariants::softcap, nullptr, softcap_ok,
     "must be a finite number > 0"},
    {"alibi_slopes", ScoreOptionKind::per_head, nullptr, &ScoreVariants::alibi_slopes, alibi_slope_ok,
     "must be finite (in {dtype})"},
    {"sinks", ScoreOptionKind::per_head, nullptr, &ScoreVariants::sinks, sink_ok,
     "must not be NaN or +inf (-inf means no sink)"},
};

}  // namespace pyattn
