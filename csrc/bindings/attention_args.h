// What the bindings of every attention op share: the dtype, the visibility
// rules and the AttentionParams operands (mask, kv_lengths, weights, lse).
// Each op's binding adds its own score operands, then calls these.
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

// Registers the score variants (ScoreVariants): softcap (0 = off) and the
// per-query-head alibi_slopes / sinks (None, or arrays over the batch in the
// compute dtype `dt`, prepared and checked by pyattn/_args.py).
inline void add_score_variants(AttentionParams& p, BatchLayoutBuilder& builder,
                               const std::vector<int64_t>& batch, const py::dtype& dt,
                               double softcap, const py::object& alibi_slopes,
                               const py::object& sinks, SharedOperands& keep) {
  if (!(softcap >= 0) || std::isinf(softcap)) throw py::value_error("softcap must be a finite number > 0");
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

// Registers the optional mask / kv_lengths / weights / lse (None or arrays
// prepared by pyattn/attention.py) with the layout builder.
inline void add_shared_operands(AttentionParams& p, BatchLayoutBuilder& builder,
                                const std::vector<int64_t>& batch, const py::dtype& dt,
                                const py::object& mask, const py::object& lengths,
                                const py::object& weights, const py::object& lse,
                                SharedOperands& keep) {
  if (!mask.is_none()) {
    keep.mask = mask.cast<py::array>();
    if (has_dtype<bool>(keep.mask)) {
      p.mask_kind = MaskKind::boolean;
    } else if (same_dtype(keep.mask.dtype(), dt)) {
      p.mask_kind = MaskKind::additive;
    } else {
      throw py::type_error("attn_mask: dtype must be bool or the dtype of query");
    }
    add_operand(builder, batch, keep.mask, "attn_mask", 2, &p.mask);
  }
  if (!lengths.is_none()) {
    keep.lengths = lengths.cast<py::array>();
    if (!has_dtype<int64_t>(keep.lengths)) throw py::type_error("kv_lengths: dtype must be int64");
    add_operand(builder, batch, keep.lengths, "kv_lengths", 0, &p.vis.lengths);
  }
  if (!weights.is_none()) {
    keep.weights = weights.cast<py::array>();
    if (!same_dtype(keep.weights.dtype(), dt)) throw py::type_error("weights: wrong dtype");
    add_operand(builder, batch, keep.weights, "weights", 2, &p.weights, true);
    if (p.weights.col_stride != 1 && p.S > 1 && keep.weights.size() > 0)
      throw py::value_error("weights: last dimension must have unit stride");
  }
  if (!lse.is_none()) {
    keep.lse = lse.cast<py::array>();
    if (!same_dtype(keep.lse.dtype(), dt)) throw py::type_error("lse: wrong dtype");
    add_operand(builder, batch, keep.lse, "lse", 1, &p.lse, true);
  }
}

}  // namespace pyattn::bindings
