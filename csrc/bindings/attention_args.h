// Helpers of the bindings that do not go through call_args.h's prepare_call
// (varlen): the dtype, the visibility fields and the score-variant operands.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "array_view.h"
#include "pyattn/attention_params.h"

namespace pyattn::bindings {

// float32 or float64 from `a` (whose name is `name`), else TypeError.
inline DType dtype_of(const py::array& a, const char* name) {
  if (has_dtype<float>(a)) return DType::f32;
  if (has_dtype<double>(a)) return DType::f64;
  throw py::type_error(std::string(name) + ": dtype must be float32 or float64");
}

inline void set_visibility(AttentionParams& p, bool causal, bool lower_right,
                           int64_t window_left, int64_t window_right, int num_threads) {
  p.vis.causal = causal;
  p.vis.lower_right = lower_right;
  p.vis.window_left = window_left;
  p.vis.window_right = window_right;
  p.num_threads = num_threads;
}

// Arrays the params point into, kept alive until the call returns.
struct SharedOperands {
  py::array mask, lengths, weights, lse, alibi_slopes, sinks;
};

// Registers the score variants (ScoreVariants): softcap (0 = off, else
// checked by softcap_or_off) and the per-query-head alibi_slopes / sinks
// (None, or arrays over the batch in the compute dtype `dt`, checked by
// call_args.h's per_head).
inline void add_score_variants(AttentionParams& p, BatchLayoutBuilder& builder,
                               const std::vector<int64_t>& batch, const py::dtype& dt,
                               double softcap, const py::object& alibi_slopes,
                               const py::object& sinks, SharedOperands& keep) {
  p.variants.softcap = softcap;
  const std::pair<const py::object*, std::pair<py::array*, StridedArray*>> arrays[] = {
      {&alibi_slopes, {&keep.alibi_slopes, &p.variants.alibi_slopes}},
      {&sinks, {&keep.sinks, &p.variants.sinks}}};
  const char* names[] = {"alibi_slopes", "sinks"};
  for (int i = 0; i < 2; ++i) {
    const py::object& x = *arrays[i].first;
    if (x.is_none()) continue;
    py::array& a = *arrays[i].second.first;
    a = x.cast<py::array>();
    if (!same_dtype(a.dtype(), dt))
      throw py::type_error(std::string(names[i]) + ": dtype must be the compute dtype");
    add_operand(builder, batch, a, names[i], 0, arrays[i].second.second);
  }
}

}  // namespace pyattn::bindings
