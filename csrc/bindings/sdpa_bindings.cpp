// pyattn._core.sdpa and sdpa_stored_kv: check and lay out the call
// (call_args.h: every argument rule), release the GIL, call the C++ entry
// point, return the results.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "array_view.h"
#include "bindings.h"
#include "call_args.h"
#include "pyattn/sdpa.h"

namespace pyattn::bindings {

namespace {

py::object run(SdpaParams& p, const PreparedCall& call) {
  p.E = call.E;
  p.scale = call.scale;
  {
    py::gil_scoped_release release;
    scaled_dot_product_attention(p);
  }
  return call.result();
}

// scaled_dot_product_attention (pyattn/attention.py) with its options as
// pyattn/_args.py parsed them and its score options as one object (None or
// a dict: score_args.h). bits: -1, or STORAGE["bfloat16"] /
// STORAGE["float16"] when q, k, v are uint16 arrays holding those bits
// (pyattn.torch's bfloat16 tensors; computed and returned in float32).
py::object sdpa(py::handle query, py::handle key, py::handle value, py::handle mask, py::handle scale,
                int causal, int64_t window_left, int64_t window_right, py::handle lengths, py::handle out,
                py::handle want_weights, py::handle want_lse, py::handle gqa, int num_threads, py::handle score,
                int bits) {
  py::array q = as_array(query, "query"), k = as_array(key, "key"), v = as_array(value, "value");
  DType storage;
  py::dtype cdt, result_dtype;
  if (bits < 0) {
    const py::dtype qdt = q.dtype();
    const bool plain = (has_dtype<float>(q) || has_dtype<double>(q)) && k.dtype().is(qdt) && v.dtype().is(qdt) &&
                       q.ndim() >= 2 && k.ndim() >= 2 && v.ndim() >= 2;  // (the common case, checked quickly)
    const py::dtype dt = plain ? qdt : check_float_inputs({{"query", q}, {"key", k}, {"value", v}});
    storage = float_kind(dt);
    cdt = compute_dtype(dt);
    result_dtype = dt;
  } else {
    if (bits != static_cast<int>(DType::bf16) && bits != static_cast<int>(DType::f16))
      throw py::value_error("bits must be the bfloat16 or float16 storage code");
    for (const auto& [name, a] : {std::pair{"query", &q}, {"key", &k}, {"value", &v}}) {
      if (!has_dtype<uint16_t>(*a)) throw py::type_error(std::string(name) + ": must hold 16-bit floats as uint16");
      if (a->ndim() < 2)
        throw py::value_error(std::string(name) + " must have at least 2 dimensions (..., rows, features)");
    }
    storage = static_cast<DType>(bits);
    cdt = py::dtype::of<float>();
    result_dtype = cdt;
  }
  CallOperands ops(q, k, v);
  ops.shown[0] = query;
  ops.shown[1] = key;
  ops.shown[2] = value;
  ops.cdt = cdt;
  ops.result_dtype = result_dtype;
  const CallOptions o = call_options(mask, scale, causal, window_left, window_right, lengths, out, want_weights,
                                     want_lse, gqa, num_threads, score);
  SdpaParams p;
  PreparedCall call;
  prepare_call(p, &p.q, &p.k, ops, o, &call);
  p.storage = storage;
  return run(p, call);
}

// scaled_dot_product_attention of float query rows over keys and values
// stored apart from them (pyattn.KVCache): storage STORAGE["bfloat16"] /
// STORAGE["float16"] (key and value of that dtype, or uint16 bits) or
// STORAGE["int8"] (int8 codes with float32 scales key_scale, value_scale of
// shape (..., S): key j is key_scale[j] * key[j]). Computed in float32;
// out and weights in the query's dtype, lse float32.
py::object sdpa_stored_kv(py::handle query, py::handle key, py::handle value, int storage, py::handle key_scale,
                          py::handle value_scale, py::handle mask, py::handle scale, int causal,
                          int64_t window_left, int64_t window_right, py::handle lengths, py::handle out,
                          py::handle want_weights, py::handle want_lse, py::handle gqa, int num_threads,
                          py::handle score) {
  const bool i8 = storage == static_cast<int>(DType::i8);
  if (!i8 && storage != static_cast<int>(DType::bf16) && storage != static_cast<int>(DType::f16))
    throw py::value_error("storage must be the bfloat16, float16 or int8 storage code");
  py::array q = as_array(query, "query"), k = as_array(key, "key"), v = as_array(value, "value");
  const py::dtype result_dtype = check_float_inputs({{"query", q}});
  const py::dtype f32 = py::dtype::of<float>();
  const py::ssize_t want_item = i8 ? 1 : 2;
  for (const auto& [name, a] : {std::pair{"key", &k}, {"value", &v}}) {
    if (a->itemsize() != want_item || (i8 && !has_dtype<int8_t>(*a)))
      throw py::type_error(std::string(name) + ": dtype " + py::str(a->dtype()).cast<std::string>() +
                           " does not match the storage");
    if (a->ndim() < 2)
      throw py::value_error(std::string(name) + " must have at least 2 dimensions (..., rows, features)");
  }
  CallOperands ops(q, k, v);
  ops.convert_q = true;
  ops.shown[0] = query;
  ops.shown[1] = key;
  ops.shown[2] = value;
  ops.result_dtype = result_dtype;
  ops.cdt = f32;
  SdpaParams p;
  if (i8) {  // (..., S) -> (..., S, 1) float32 with contiguous positions
    if (key_scale.is_none() || value_scale.is_none())
      throw py::value_error("int8 keys/values need key_scale and value_scale");
    StridedArray* views[2] = {&p.k_scale, &p.v_scale};
    const char* names[2] = {"key_scale", "value_scale"};
    const py::handle scales[2] = {key_scale, value_scale};
    for (int i = 0; i < 2; ++i) {
      py::array a = py::module_::import("numpy").attr("ascontiguousarray")(scales[i], py::arg("dtype") = ops.cdt)
                        .cast<py::array>();
      std::vector<py::ssize_t> sh(a.shape(), a.shape() + a.ndim()), st(a.strides(), a.strides() + a.ndim());
      sh.push_back(1);
      st.push_back(a.itemsize());
      if (a.ndim() < 1 || sh[sh.size() - 2] != k.shape(k.ndim() - 2))
        throw py::value_error(std::string(names[i]) + ": needs shape (..., S)");
      ops.kv_extra.push_back({names[i], py::array(a.dtype(), sh, st, a.data(), a), views[i]});
    }
  } else if (!key_scale.is_none() || !value_scale.is_none()) {
    throw py::value_error("key_scale and value_scale are given with int8 keys/values only");
  }
  const CallOptions o = call_options(mask, scale, causal, window_left, window_right, lengths, out, want_weights,
                                     want_lse, gqa, num_threads, score);
  PreparedCall call;
  prepare_call(p, &p.q, &p.k, ops, o, &call);
  p.storage = static_cast<DType>(storage);
  p.float_query = true;
  return run(p, call);
}

}  // namespace

void register_sdpa(py::module_& m) {
  register_call_args(m);
  m.def("sdpa", &sdpa, py::arg("query"), py::arg("key"), py::arg("value"), py::arg("mask"), py::arg("scale"),
        py::arg("causal"), py::arg("window_left"), py::arg("window_right"), py::arg("lengths"), py::arg("out"),
        py::arg("want_weights"), py::arg("want_lse"), py::arg("gqa"), py::arg("num_threads"),
        py::arg("score"), py::arg("bits") = -1,
        "scaled_dot_product_attention with its options parsed by pyattn/_args.py: checks every "
        "argument rule (TypeError / ValueError naming the argument), computes, returns the result.");
  m.def("sdpa_stored_kv", &sdpa_stored_kv, py::arg("query"), py::arg("key"), py::arg("value"),
        py::arg("storage"), py::arg("key_scale"), py::arg("value_scale"), py::arg("mask"), py::arg("scale"),
        py::arg("causal"), py::arg("window_left"), py::arg("window_right"), py::arg("lengths"), py::arg("out"),
        py::arg("want_weights"), py::arg("want_lse"), py::arg("gqa"), py::arg("num_threads"),
        py::arg("score"),
        "sdpa over keys/values stored as bfloat16, float16 or int8 with scales (pyattn.KVCache).");
}

}  // namespace pyattn::bindings
