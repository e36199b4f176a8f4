// The C++ fast path shared by sdpa_plain and additive_plain: the checks and
// operands of a common call (q-like, k-like and v arrays of one float dtype
// and one batch shape, optional mask / window / kv_lengths / out / weights /
// lse), done without the Python layer's normalisation so that a small call
// costs a few microseconds. Anything unusual or wrong makes it decline (the
// op then returns None and the Python path runs, and names any error).
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <utility>
#include <vector>

#include "pyattn/attention_params.h"

namespace pyattn::bindings {

namespace py = pybind11;

struct PlainOptions {
  py::object mask;          // None, or a bool / q-dtype array broadcasting to (batch..., L, S)
  int causal = 0;           // 0 none, 1 upper-left, 2 lower-right
  int64_t window_left = -1, window_right = -1;  // >= 0, or -1 for an unbounded side
  py::object lengths;       // None, or int64 (B,) for the first batch dim, values in [0, S]
  py::object out;           // None, or an ndarray of the result's exact shape and dtype
  bool want_weights = false, want_lse = false;
  bool gqa = false;         // grouped-query heads on dim -3 (q has a multiple of k's heads)
  bool half_inputs = false; // q, k, v may be float16 / bfloat16 (computed in float32; no out=)
  int num_threads = 0;      // 0: the default
  double softcap = 0;       // > 0 (finite), or 0: none
  py::object alibi_slopes;  // None, or a compute-dtype array of finite slopes over the batch dims
  py::object sinks;         // None, or a compute-dtype array over the batch dims (no NaN, no +inf)
  std::vector<py::handle> more_inputs;  // other arrays the user passed: out may not overlap them

  PlainOptions(py::object mask_, int causal_, int64_t left, int64_t right, py::object lengths_,
               py::object out_, bool weights, bool lse, bool gqa_, int threads)
      : mask(std::move(mask_)), causal(causal_), window_left(left), window_right(right),
        lengths(std::move(lengths_)), out(std::move(out_)), want_weights(weights), want_lse(lse),
        gqa(gqa_), num_threads(threads), alibi_slopes(py::none()), sinks(py::none()) {}
};

// What a prepared call keeps alive until the kernel has run, and returns.
struct PlainCall {
  int64_t E = 0;            // the last dimension of q and k
  DType storage = DType::f32;     // element type of q, k, v (bf16 / f16: results in float32)
  py::object result_dtype;        // None, or the dtype out and weights are returned in
  py::array out;
  py::object weights, lse;
  py::object views[10];           // views the operands point into
  py::object result() const;      // out, or (out[, weights][, lse]), in result_dtype
};

// Checks q (..., L, E), k (..., S, E), v (..., S, Ev) and the options; on
// success fills p (dtype, sizes, visibility, score variants, threads, out /
// weights / lse / mask / lengths / v and the op's own q_view / k_view
// operands, batch layout), allocates the results into `call` and returns true. Returns false
// if the call is not a plain one (nothing of the user's is touched).
bool prepare_plain_call(AttentionParams& p, StridedArray* q_view, StridedArray* k_view,
                        const py::handle& q, const py::handle& k, const py::handle& v,
                        const PlainOptions& o, PlainCall* call);

}  // namespace pyattn::bindings
