// The argument rules of the attention ops, written once.
//
// pyattn/_args.py turns Python-typed options into plain values (is_causal ->
// a Causal code, window -> two sides, scale/softcap -> floats, num_threads ->
// an int); everything else about a call is checked and normalised here, for
// every call, and every error is raised here as the TypeError / ValueError
// that names the argument:
//   q/k/v dtypes and ranks, feature sizes and row counts, batch
//   broadcasting, grouped-query heads, the default scale, the score
//   options (score_args.h: softcap, ALiBi slopes and sinks per head, ...),
//   the mask (dtype, broadcasting, conversion to
//   the compute dtype), kv_lengths (dtype, the first-batch-dim rule, range),
//   window clamping, result sizes (all checked before anything is
//   allocated), out (type, dtype, shape, writeable, overlap with the inputs).
// Then it lays the operands out over the core's batch (grouped-query heads
// split as (Hkv, group), nothing copied) and fills the op's params.
//
// The value rules themselves (default scale, window clamping, lengths range,
// grouped heads) are pyattn/call_rules.h, shared with the C API; the score
// options' table and rules are pyattn/score_options.h. The integer codes that cross the Python/C++ boundary are
// defined in pyattn/call_rules.h (Causal) and pyattn/strided.h (DType);
// pyattn._core exports them as CAUSAL and STORAGE, which is where the
// Python layer reads them.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <utility>
#include <vector>

#include "pyattn/attention_params.h"
#include "pyattn/call_rules.h"

namespace pyattn::bindings {

namespace py = pybind11;

// The options of a call, as pyattn/_args.py parsed them.
struct CallOptions {
  py::handle mask, lengths, out;                        // None or any array-like
  py::handle scale;                                     // None or a float
  int causal = 0;                                       // a Causal code
  int64_t window_left = -1, window_right = -1;          // >= 0, or -1: unbounded (not yet clamped)
  bool want_weights = false, want_lse = false, gqa = false;
  int num_threads = 0;                                  // 0: the default
  py::handle score;                                     // the score options: None or a dict (score_args.h)
  // Other arrays the user passed (name, object), which out may not overlap.
  std::vector<std::pair<const char*, py::handle>> more_inputs;
};

// An operand of shape (..., S, 1) laid out like the keys (int8 scales).
struct KvExtra {
  const char* name;
  py::array array;
  StridedArray* view;
};

// The op's score operands (prepare_call makes them kernel-ready: unit-stride
// rows, whole-item strides, q in the compute dtype if convert_q).
// (Arrays are constructed with values: a default py::array would be an
// empty NumPy array made on every call.)
struct CallOperands {
  CallOperands(py::array q_, py::array k_, py::array v_) : q(std::move(q_)), k(std::move(k_)), v(std::move(v_)) {}
  py::array q, k, v;                   // q-like (..., L, E), k-like (..., S, E), v (..., S, Ev)
  const char* names[3] = {"query", "key", "value"};
  py::handle shown[3];                 // what the user passed for them (messages, overlap)
  std::vector<KvExtra> kv_extra;
  py::dtype cdt;                       // compute dtype: lse, weights, masks, per-head score options
  py::dtype result_dtype;              // dtype of out and of the weights returned
  bool convert_q = false;              // q may be of another float dtype than cdt (stored keys/values)
};

// What a prepared call keeps alive until the kernel has run, and returns.
struct PreparedCall {
  int64_t E = 0;                       // the last dimension of q and k
  double scale = 1;                    // the scale option, or its default 1/sqrt(E)
  py::object out;                      // the user's out (None: the result is `target`)
  py::object target;                   // the array the kernels write (out itself when it can)
  py::object weights, lse;
  std::vector<py::object> keep;        // views the operands point into
  py::dtype result_dtype;
  py::object result() const;           // copies target into out if needed; (out[, weights][, lse])
};

// The options from the handles the op's binding received (booleans by truth value).
CallOptions call_options(py::handle mask, py::handle scale, int causal, int64_t window_left,
                         int64_t window_right, py::handle lengths, py::handle out, py::handle want_weights,
                         py::handle want_lse, py::handle gqa, int num_threads, py::handle score);

// Checks and lays out a call (see the top of this file); fills p (dtype,
// sizes, visibility, score variants, threads, v / out / weights / lse / mask /
// lengths, the op's q_view / k_view, batch layout). Raises TypeError /
// ValueError naming the argument; touches nothing of the user's on error.
void prepare_call(AttentionParams& p, StridedArray* q_view, StridedArray* k_view,
                  const CallOperands& ops, const CallOptions& o, PreparedCall* call);

// `x` as an array (np.asarray for anything else), else TypeError naming it.
py::array as_array(py::handle x, const char* name);

// The arrays, each of one float dtype (float16, bfloat16, float32, float64)
// and at least 2-D, all of the same dtype: that dtype, else TypeError /
// ValueError naming them.
py::dtype check_float_inputs(const std::vector<std::pair<const char*, py::array>>& arrays);

// DType::bf16 / f16 / f32 / f64 for those dtypes; DType::i8 for anything else.
DType float_kind(const py::dtype& dt);

// The dtype inputs of `dt` compute in: float64 for float64, else float32.
py::dtype compute_dtype(const py::dtype& dt);

// `a` with a unit-stride last dimension and whole-item strides (a copy only if needed).
py::array kernel_ready(const py::array& a);

// The scale (pyattn/_args.py has checked it is a real number), shared with
// ops that do not go through prepare_call (varlen, distributed): None ->
// 1/sqrt(E) (1 for E = 0), else finite (ValueError naming it).
double scale_or_default(py::handle scale, int64_t E);

// out for a result of `shape` and `dtype`: an ndarray (else TypeError) of
// that dtype (TypeError) and shape, writable, sharing no element with the
// named inputs (ValueError).
py::array check_out(py::handle out, const std::vector<py::ssize_t>& shape, const py::dtype& dtype,
                    const std::vector<std::pair<const char*, py::handle>>& inputs);

// A per-head score option (alibi_slopes, sinks, ...): a float array of one
// value per query head broadcasting to `batch` without adding dims, in
// `dtype`, each value passing the option's rule; TypeError / ValueError
// naming it.
py::array per_head(py::handle x, const ScoreOption& option, const std::vector<py::ssize_t>& batch,
                   const py::dtype& dtype);

// ValueError unless an array of `shape` with `item` bytes per element can be addressed.
void check_size(const std::vector<py::ssize_t>& shape, int64_t item, const char* name);

// Registers the integer codes (CAUSAL, STORAGE), the score options' kinds
// (SCORE_OPTIONS) and the rules other ops reuse from Python
// (check_float_inputs, per_head, check_out, check_size).
void register_call_args(py::module_& m);

}  // namespace pyattn::bindings
