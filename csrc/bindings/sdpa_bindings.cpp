// pyattn._core.sdpa: build SdpaParams from prepared arrays, release the GIL,
// call the C++ entry point. Argument normalisation lives in pyattn/attention.py.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "array_view.h"
#include "attention_args.h"
#include "bindings.h"
#include "plain_call.h"
#include "pyattn/sdpa.h"
#include "pyattn/threads.h"

#include <cmath>

namespace pyattn::bindings {

namespace {

void sdpa(const py::array& q, const py::array& k, const py::array& v, const py::array& out,
          const py::object& mask, const py::object& lengths, const py::object& weights,
          const py::object& lse, double scale, int storage, double softcap,
          const py::object& alibi_slopes, const py::object& sinks, bool causal, bool lower_right,
          int64_t window_left, int64_t window_right, int num_threads) {
  SdpaParams p;
  // storage 2 / 3: q, k, v hold bfloat16 / float16 bits (uint16 arrays) and
  // everything else is float32; else all share q's float32/float64 dtype.
  const bool half = storage == static_cast<int>(DType::bf16) || storage == static_cast<int>(DType::f16);
  p.dtype = half ? DType::f32 : dtype_of(q, "query");
  p.storage = half ? static_cast<DType>(storage) : p.dtype;
  const py::dtype dt = half ? py::dtype::of<float>() : q.dtype();
  const py::dtype st = half ? py::dtype::of<uint16_t>() : dt;
  for (const py::array* a : {&q, &k, &v})
    if (!same_dtype(a->dtype(), st)) throw py::type_error("query, key and value must share one dtype");
  if (!same_dtype(out.dtype(), dt)) throw py::type_error("out: wrong dtype for this call");
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
  set_visibility(p, causal, lower_right, window_left, window_right, num_threads);

  BatchLayoutBuilder builder(batch);
  add_operand(builder, batch, q, "query", 2, &p.q);
  add_operand(builder, batch, k, "key", 2, &p.k);
  add_operand(builder, batch, v, "value", 2, &p.v);
  add_operand(builder, batch, out, "out", 2, &p.out, /*writable=*/true);
  for (const auto& [view, a] : {std::pair{&p.q, &q}, {&p.k, &k}, {&p.v, &v}, {&p.out, &out}})
    if (view->col_stride != 1 && a->shape(a->ndim() - 1) > 1 && a->size() > 0)
      throw py::value_error("query/key/value/out: last dimension must have unit stride");

  SharedOperands keep;
  add_shared_operands(p, builder, batch, dt, mask, lengths, weights, lse, keep);
  add_score_variants(p, builder, batch, dt, softcap, alibi_slopes, sinks, keep);
  std::vector<const StridedArray*> shared = {&p.k, &p.v};
  if (p.vis.lengths.data) shared.push_back(&p.vis.lengths);
  p.fold = builder.fold_shared(shared);
  if (!builder.finish(&p.batch))
    throw py::value_error("too many non-mergeable batch dimensions");

  py::gil_scoped_release release;
  scaled_dot_product_attention(p);
}

// The plain call (see plain_call.h), checked and run entirely here:
// plain, causal, windowed and masked attention with or without weights and
// lse, and a KV cache's decoding step (lower-right causal, sliding window,
// kv_lengths, grouped-query heads). None if the call is not a plain one.
// scale: None (1/sqrt(E)) or a finite float (checked by the caller).
py::object sdpa_plain(const py::handle& q, const py::handle& k, const py::handle& v,
                      const py::object& mask, const py::object& scale, int causal,
                      int64_t window_left, int64_t window_right, const py::object& lengths,
                      const py::object& out, bool want_weights, bool want_lse, bool gqa,
                      int num_threads, double softcap, const py::object& alibi_slopes,
                      const py::object& sinks) {
  PlainOptions o(mask, causal, window_left, window_right, lengths, out, want_weights, want_lse,
                 gqa, num_threads);
  o.softcap = softcap;
  o.alibi_slopes = alibi_slopes;
  o.sinks = sinks;
  o.half_inputs = true;  // the SDPA kernels read bfloat16 / float16 q, k, v in place
  SdpaParams p;
  PlainCall call;
  if (!prepare_plain_call(p, &p.q, &p.k, q, k, v, o, &call)) return py::none();
  p.storage = call.storage;
  p.E = call.E;
  p.scale = !scale.is_none() ? scale.cast<double>()
                              : (call.E > 0 ? 1.0 / std::sqrt(static_cast<double>(call.E)) : 1.0);
  {
    py::gil_scoped_release release;
    scaled_dot_product_attention(p);
  }
  return call.result();
}

}  // namespace

void register_sdpa(py::module_& m) {
  m.def("sdpa_plain", &sdpa_plain, py::arg("query"), py::arg("key"), py::arg("value"),
        py::arg("mask"), py::arg("scale"), py::arg("causal"), py::arg("window_left"),
        py::arg("window_right"), py::arg("lengths"), py::arg("out"), py::arg("want_weights"),
        py::arg("want_lse"),
        py::arg("gqa"), py::arg("num_threads"), py::arg("softcap") = 0.0,
        py::arg("alibi_slopes") = py::none(), py::arg("sinks") = py::none(),
        "Fast path for the plain call (see pyattn.attention); None if it does not apply.");
  m.def("sdpa", &sdpa, py::arg("query"), py::arg("key"), py::arg("value"), py::arg("out"),
        py::arg("mask"), py::arg("lengths"), py::arg("weights"), py::arg("lse"),
        py::arg("scale"), py::arg("storage"), py::arg("softcap"), py::arg("alibi_slopes"),
        py::arg("sinks"), py::arg("causal"), py::arg("lower_right"), py::arg("window_left"),
        py::arg("window_right"), py::arg("num_threads"),
        "Low-level SDPA on prepared arrays (see pyattn.attention). Writes out/weights/lse.");
}

}  // namespace pyattn::bindings
