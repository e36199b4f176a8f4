// Helpers of the bindings that do not go through call_args.h's prepare_call
// (varlen): the dtype and the visibility fields.
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

}  // namespace pyattn::bindings
