// pyattn._core.additive: check and lay out the call (call_args.h: every
// argument rule shared with SDPA) on the projections qp, kp computed by
// pyattn/additive.py, release the GIL, call the C++ entry point.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "array_view.h"
#include "bindings.h"
#include "call_args.h"
#include "pyattn/additive.h"
#include "pyattn/projection.h"
#include "pyattn/threads.h"

namespace pyattn::bindings {

namespace {

// Additive attention over projections qp (..., L, A), kp (..., S, A) and
// value (..., S, Ev), all in the compute dtype with unit-stride rows, and
// v_a (A,) contiguous in it; out and weights in result_dtype. shown: what
// the user passed as (query, key, value); more_inputs: (name, array) pairs
// of the other arrays the user passed (out may overlap none of them).
py::object additive(py::handle qp, py::handle kp, py::handle value, py::handle v_a, py::handle mask, int causal,
                    int64_t window_left, int64_t window_right, py::handle lengths, py::handle out,
                    py::handle want_weights, py::handle want_lse, int num_threads, const py::dtype& result_dtype,
                    const py::tuple& shown, const py::tuple& more_inputs) {
  CallOperands ops(as_array(qp, "qp"), as_array(kp, "kp"), as_array(value, "value"));
  for (size_t i = 0; i < 3 && i < shown.size(); ++i) ops.shown[i] = shown[i];
  ops.cdt = ops.q.dtype();
  ops.result_dtype = result_dtype;
  if (float_kind(ops.cdt) != DType::f32 && float_kind(ops.cdt) != DType::f64)
    throw py::type_error("qp: dtype must be float32 or float64");
  for (const py::array* a : {&ops.k, &ops.v})
    if (!same_dtype(a->dtype(), ops.cdt)) throw py::type_error("qp, kp and value must share one dtype");
  const py::array va = as_array(v_a, "v_a");
  const int64_t A = ops.q.shape(ops.q.ndim() - 1);
  if (!same_dtype(va.dtype(), ops.cdt) || va.ndim() != 1 || va.shape(0) != A ||
      (A > 1 && va.strides(0) != va.itemsize()))
    throw py::value_error("v_a: must be a contiguous (A,) array of the compute dtype");
  CallOptions o = call_options(mask, py::none(), causal, window_left, window_right, lengths, out, want_weights,
                               want_lse, py::bool_(false), num_threads, py::none());
  std::vector<std::string> names;
  names.reserve(more_inputs.size());
  for (const py::handle& pair : more_inputs) names.push_back(pair.cast<py::tuple>()[0].cast<std::string>());
  for (size_t i = 0; i < names.size(); ++i)
    o.more_inputs.push_back({names[i].c_str(), more_inputs[i].cast<py::tuple>()[1]});
  AdditiveParams p;
  PreparedCall call;
  prepare_call(p, &p.qp, &p.kp, ops, o, &call);
  p.A = A;
  p.v_a = va.data();
  {
    py::gil_scoped_release release;
    additive_attention(p);
  }
  return call.result();
}

// x (rows, D) with unit-stride rows, w (D, A) and bias (A,) (or None)
// contiguous, all float32 or all float64 (pyattn/additive.py prepares them)
// -> x @ w + bias, a new (rows, A) array, on num_threads threads (0: the
// default).
py::array project(const py::array& x, const py::array& w, py::handle bias, int num_threads) {
  const DType dt = float_kind(x.dtype());
  if (dt != DType::f32 && dt != DType::f64) throw py::type_error("x: dtype must be float32 or float64");
  if (!same_dtype(w.dtype(), x.dtype())) throw py::type_error("w: must have x's dtype");
  if (x.ndim() != 2 || w.ndim() != 2 || w.shape(0) != x.shape(1))
    throw py::value_error("x (rows, D) and w (D, A) do not fit together");
  const int64_t rows = x.shape(0), D = x.shape(1), A = w.shape(1), item = x.itemsize();
  if (rows > 0 && (D > 1 && x.strides(1) != item)) throw py::value_error("x needs unit-stride rows");
  if ((rows > 1 && x.strides(0) % item != 0) ||
      (D > 0 && A > 1 && w.strides(1) != item) || (D > 1 && A > 0 && w.strides(0) != A * item))
    throw py::value_error("x's rows must be whole elements apart and w C-contiguous");
  ProjectParams p;
  if (!bias.is_none()) {
    const py::array b = py::reinterpret_borrow<py::array>(bias);
    if (!same_dtype(b.dtype(), x.dtype()) || b.ndim() != 1 || b.shape(0) != A || (A > 1 && b.strides(0) != item))
      throw py::value_error("bias: must be a contiguous (A,) array of x's dtype");
    p.bias = b.data();
  }
  py::array y(x.dtype(), std::vector<py::ssize_t>{static_cast<py::ssize_t>(rows), static_cast<py::ssize_t>(A)});
  p.dtype = dt;
  p.rows = rows;
  p.D = D;
  p.A = A;
  p.x = x.data();
  p.x_stride = rows > 1 ? x.strides(0) / item : D;
  p.w = w.data();
  p.y = y.mutable_data();
  p.num_threads = num_threads > 0 ? num_threads : default_num_threads();
  {
    py::gil_scoped_release release;
    pyattn::project(p);
  }
  return y;
}

}  // namespace

void register_additive(py::module_& m) {
  m.def("project", &project, py::arg("x"), py::arg("w"), py::arg("bias"), py::arg("num_threads"),
        "x @ w + bias on pyattn's threads (additive attention's projections; see pyattn.additive).");
  m.def("additive", &additive, py::arg("qp"), py::arg("kp"), py::arg("value"), py::arg("v_a"), py::arg("mask"),
        py::arg("causal"), py::arg("window_left"), py::arg("window_right"), py::arg("lengths"), py::arg("out"),
        py::arg("want_weights"), py::arg("want_lse"), py::arg("num_threads"), py::arg("result_dtype"),
        py::arg("shown"), py::arg("more_inputs"),
        "additive_attention on projections (see pyattn.additive): checks the shared argument rules "
        "(TypeError / ValueError naming the argument), computes, returns the result.");
}

}  // namespace pyattn::bindings
