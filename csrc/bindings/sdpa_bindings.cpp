// pyattn._core.sdpa: build SdpaParams from prepared arrays, release the GIL,
// call the C++ entry point. Argument normalisation lives in pyattn/attention.py.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "array_view.h"
#include "bindings.h"
#include "pyattn/sdpa.h"

namespace pyattn::bindings {

namespace {

void sdpa(const py::array& q, const py::array& k, const py::array& v, const py::array& out,
          const py::object& mask, const py::object& lengths, const py::object& weights,
          const py::object& lse, double scale, bool causal, bool lower_right,
          int64_t window_left, int64_t window_right, int num_threads) {
  SdpaParams p;
  if (has_dtype<float>(q)) {
    p.dtype = DType::f32;
  } else if (has_dtype<double>(q)) {
    p.dtype = DType::f64;
  } else {
    throw py::type_error("query: dtype must be float32 or float64");
  }
  const py::dtype dt = q.dtype();
  for (const py::array* a : {&k, &v, &out})
    if (!a->dtype().is(dt)) throw py::type_error("query, key, value and out must share one dtype");
  if (out.ndim() < 2) throw py::value_error("out: needs at least 2 dimensions");

  const int nb = static_cast<int>(out.ndim()) - 2;
  std::vector<int64_t> batch(out.shape(), out.shape() + nb);
  p.L = q.shape(q.ndim() - 2);
  p.E = q.shape(q.ndim() - 1);
  p.S = k.shape(k.ndim() - 2);
  p.Ev = v.shape(v.ndim() - 1);
  if (k.shape(k.ndim() - 1) != p.E || v.shape(v.ndim() - 2) != p.S ||
      out.shape(nb) != p.L || out.shape(nb + 1) != p.Ev)
    throw py::value_error("query/key/value/out: inconsistent trailing shapes");
  p.scale = scale;
  p.vis.causal = causal;
  p.vis.lower_right = lower_right;
  p.vis.window_left = window_left;
  p.vis.window_right = window_right;
  p.num_threads = num_threads;

  BatchLayoutBuilder builder(batch);
  add_operand(builder, batch, q, "query", 2, &p.q);
  add_operand(builder, batch, k, "key", 2, &p.k);
  add_operand(builder, batch, v, "value", 2, &p.v);
  add_operand(builder, batch, out, "out", 2, &p.out, /*writable=*/true);
  for (const auto& [view, a] : {std::pair{&p.q, &q}, {&p.k, &k}, {&p.v, &v}, {&p.out, &out}})
    if (view->col_stride != 1 && a->shape(a->ndim() - 1) > 1 && a->size() > 0)
      throw py::value_error("query/key/value/out: last dimension must have unit stride");

  py::array mask_a, len_a, w_a, lse_a;  // keep references alive
  if (!mask.is_none()) {
    mask_a = mask.cast<py::array>();
    if (has_dtype<bool>(mask_a)) {
      p.mask_kind = MaskKind::boolean;
    } else if (mask_a.dtype().is(dt)) {
      p.mask_kind = MaskKind::additive;
    } else {
      throw py::type_error("attn_mask: dtype must be bool or the dtype of query");
    }
    add_operand(builder, batch, mask_a, "attn_mask", 2, &p.mask);
  }
  if (!lengths.is_none()) {
    len_a = lengths.cast<py::array>();
    if (!has_dtype<int64_t>(len_a)) throw py::type_error("kv_lengths: dtype must be int64");
    add_operand(builder, batch, len_a, "kv_lengths", 0, &p.vis.lengths);
  }
  if (!weights.is_none()) {
    w_a = weights.cast<py::array>();
    if (!w_a.dtype().is(dt)) throw py::type_error("weights: wrong dtype");
    add_operand(builder, batch, w_a, "weights", 2, &p.weights, true);
    if (p.weights.col_stride != 1 && p.S > 1 && w_a.size() > 0) throw py::value_error("weights: last dimension must have unit stride");
  }
  if (!lse.is_none()) {
    lse_a = lse.cast<py::array>();
    if (!lse_a.dtype().is(dt)) throw py::type_error("lse: wrong dtype");
    add_operand(builder, batch, lse_a, "lse", 1, &p.lse, true);
  }
  if (!builder.finish(&p.batch))
    throw py::value_error("too many non-mergeable batch dimensions");

  py::gil_scoped_release release;
  scaled_dot_product_attention(p);
}

}  // namespace

void register_sdpa(py::module_& m) {
  m.def("sdpa", &sdpa, py::arg("query"), py::arg("key"), py::arg("value"), py::arg("out"),
        py::arg("mask"), py::arg("lengths"), py::arg("weights"), py::arg("lse"),
        py::arg("scale"), py::arg("causal"), py::arg("lower_right"), py::arg("window_left"),
        py::arg("window_right"), py::arg("num_threads"),
        "Low-level SDPA on prepared arrays (see pyattn.attention). Writes out/weights/lse.");
}

}  // namespace pyattn::bindings
