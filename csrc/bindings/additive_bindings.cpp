// pyattn._core.additive: build AdditiveParams from prepared arrays (the
// projections qp, kp computed by pyattn/additive.py), release the GIL, call
// the C++ entry point; additive_plain: the same for a plain call, checked here
// (plain_call.h).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "array_view.h"
#include "attention_args.h"
#include "bindings.h"
#include "plain_call.h"
#include "pyattn/additive.h"

namespace pyattn::bindings {

namespace {

void additive(const py::array& qp, const py::array& kp, const py::array& v, const py::array& v_a,
              const py::array& out, const py::object& mask, const py::object& lengths,
              const py::object& weights, const py::object& lse, bool causal, bool lower_right,
              int64_t window_left, int64_t window_right, int num_threads) {
  AdditiveParams p;
  p.dtype = dtype_of(qp, "qp");
  const py::dtype dt = qp.dtype();
  for (const py::array* a : {&kp, &v, &v_a, &out})
    if (!same_dtype(a->dtype(), dt)) throw py::type_error("qp, kp, value, v_a and out must share one dtype");
  if (out.ndim() < 2) throw py::value_error("out: needs at least 2 dimensions");

  const int nb = static_cast<int>(out.ndim()) - 2;
  std::vector<int64_t> batch(out.shape(), out.shape() + nb);
  p.L = qp.shape(qp.ndim() - 2);
  p.A = qp.shape(qp.ndim() - 1);
  p.S = kp.shape(kp.ndim() - 2);
  p.Ev = v.shape(v.ndim() - 1);
  if (kp.shape(kp.ndim() - 1) != p.A || v.shape(v.ndim() - 2) != p.S ||
      out.shape(nb) != p.L || out.shape(nb + 1) != p.Ev)
    throw py::value_error("qp/kp/value/out: inconsistent trailing shapes");
  if (v_a.ndim() != 1 || v_a.shape(0) != p.A || (p.A > 1 && v_a.strides(0) != v_a.itemsize()))
    throw py::value_error("v_a: must be a contiguous (A,) array");
  p.v_a = v_a.data();
  set_visibility(p, causal, lower_right, window_left, window_right, num_threads);

  BatchLayoutBuilder builder(batch);
  add_operand(builder, batch, qp, "qp", 2, &p.qp);
  add_operand(builder, batch, kp, "kp", 2, &p.kp);
  add_operand(builder, batch, v, "value", 2, &p.v);
  add_operand(builder, batch, out, "out", 2, &p.out, /*writable=*/true);
  for (const auto& [view, a] : {std::pair{&p.qp, &qp}, {&p.kp, &kp}, {&p.v, &v}, {&p.out, &out}})
    if (view->col_stride != 1 && a->shape(a->ndim() - 1) > 1 && a->size() > 0)
      throw py::value_error("qp/kp/value/out: last dimension must have unit stride");
  SharedOperands keep;
  add_shared_operands(p, builder, batch, dt, mask, lengths, weights, lse, keep);
  std::vector<const StridedArray*> shared = {&p.kp, &p.v};
  if (p.vis.lengths.data) shared.push_back(&p.vis.lengths);
  p.fold = builder.fold_shared(shared);
  if (!builder.finish(&p.batch))
    throw py::value_error("too many non-mergeable batch dimensions");

  py::gil_scoped_release release;
  additive_attention(p);
}

// Additive attention over projections qp (..., L, A), kp (..., S, A) of one
// float dtype with v_a (A,) contiguous in it, with the plain call's options;
// None if the call is not a plain one. more_inputs: the other arrays the user
// passed (query, key, w_query, w_key, bias), which out may not overlap.
py::object additive_plain(const py::handle& qp, const py::handle& kp, const py::handle& v,
                          const py::handle& v_a, const py::object& mask, int causal,
                          int64_t window_left, int64_t window_right, const py::object& lengths,
                          const py::object& out, bool want_weights, bool want_lse, int num_threads,
                          const py::tuple& more_inputs) {
  PlainOptions o(mask, causal, window_left, window_right, lengths, out, want_weights, want_lse,
                 /*gqa=*/false, num_threads);
  if (!out.is_none()) {  // (only an out is checked against them)
    o.more_inputs.reserve(1 + more_inputs.size());
    o.more_inputs.push_back(v_a);
    for (const py::handle& a : more_inputs) o.more_inputs.push_back(a);
  }
  AdditiveParams p;
  PlainCall call;
  if (!prepare_plain_call(p, &p.qp, &p.kp, qp, kp, v, o, &call)) return py::none();
  if (!py::isinstance<py::array>(v_a)) return py::none();
  const auto va = py::reinterpret_borrow<py::array>(v_a);
  if (!same_dtype(va.dtype(), call.out.dtype()) || va.ndim() != 1 || va.shape(0) != call.E ||
      (call.E > 1 && va.strides(0) != va.itemsize()))
    return py::none();
  p.A = call.E;
  p.v_a = va.data();
  {
    py::gil_scoped_release release;
    additive_attention(p);
  }
  return call.result();
}

}  // namespace

void register_additive(py::module_& m) {
  m.def("additive_plain", &additive_plain, py::arg("qp"), py::arg("kp"), py::arg("value"),
        py::arg("v_a"), py::arg("mask"), py::arg("causal"), py::arg("window_left"),
        py::arg("window_right"), py::arg("lengths"), py::arg("out"), py::arg("want_weights"),
        py::arg("want_lse"), py::arg("num_threads"), py::arg("more_inputs"),
        "Fast path for a plain additive call on projections (see pyattn.additive); "
        "None if it does not apply.");
  m.def("additive", &additive, py::arg("qp"), py::arg("kp"), py::arg("value"), py::arg("v_a"),
        py::arg("out"), py::arg("mask"), py::arg("lengths"), py::arg("weights"), py::arg("lse"),
        py::arg("causal"), py::arg("lower_right"), py::arg("window_left"),
        py::arg("window_right"), py::arg("num_threads"),
        "Low-level additive attention on prepared projections (see pyattn.attention). "
        "Writes out/weights/lse.");
}

}  // namespace pyattn::bindings
