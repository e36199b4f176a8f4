// pyattn._core.varlen: build VarlenParams from prepared arrays, release the
// GIL, call the C++ entry point. Argument normalisation lives in
// pyattn/varlen.py; the checks here are a last line of defence (a bad call
// raises instead of reading out of bounds).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "array_view.h"
#include "attention_args.h"
#include "bindings.h"
#include "call_args.h"
#include "score_args.h"
#include "pyattn/batch_layout.h"
#include "pyattn/threads.h"
#include "pyattn/varlen.h"

namespace pyattn::bindings {

namespace {

// A cu_seqlens array: 1-D int64 of `count` entries, 0 first, non-decreasing,
// `total` last. Returns a contiguous copy of its values.
std::vector<int64_t> offsets(const py::array& a, const char* name, int64_t total) {
  if (!has_dtype<int64_t>(a)) throw py::type_error(std::string(name) + ": dtype must be int64");
  if (a.ndim() != 1 || a.shape(0) < 1) throw py::value_error(std::string(name) + ": must be 1-D and not empty");
  const int64_t n = a.shape(0);
  const int64_t stride = element_strides(a, name)[0];
  const int64_t* d = static_cast<const int64_t*>(a.data());
  std::vector<int64_t> cu(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) cu[static_cast<size_t>(i)] = d[i * stride];
  if (cu.front() != 0 || cu.back() != total)
    throw py::value_error(std::string(name) + ": must start at 0 and end at the total row count");
  for (size_t i = 1; i < cu.size(); ++i)
    if (cu[i] < cu[i - 1]) throw py::value_error(std::string(name) + ": must be non-decreasing");
  return cu;
}

// Strides (elements) of a 3-D (or, for lse, 2-D) operand, size-1 dims as 0.
std::vector<int64_t> strides_of(const py::array& a, const char* name, int ndim) {
  if (a.ndim() != ndim) throw py::value_error(std::string(name) + ": wrong number of dimensions");
  std::vector<int64_t> s = element_strides(a, name);
  for (int d = 0; d < ndim; ++d)
    if (a.shape(d) == 1) s[d] = 0;
  if (ndim == 3 && a.shape(2) > 1 && a.size() > 0 && s[2] != 1)
    throw py::value_error(std::string(name) + ": last dimension must have unit stride");
  return s;
}

// score: the score options (None or a dict: score_args.h), per-head ones
// given per query head, (Hq,).
void varlen(const py::array& q, const py::array& k, const py::array& v, const py::array& cu_q,
            const py::array& cu_k, const py::array& out, const py::object& lse, py::handle scale,
            int storage, py::handle score, int causal, int64_t window_left, int64_t window_right,
            int num_threads) {
  VarlenParams vp;
  SdpaParams& p = vp.seq;
  // storage 2 / 3: q, k, v hold bfloat16 / float16 bits (uint16 arrays) and
  // out / lse are float32; else all share q's float32/float64 dtype.
  const bool half = storage == static_cast<int>(DType::bf16) || storage == static_cast<int>(DType::f16);
  p.dtype = half ? DType::f32 : dtype_of(q, "query");
  p.storage = half ? static_cast<DType>(storage) : p.dtype;
  const py::dtype dt = half ? py::dtype::of<float>() : q.dtype();
  const py::dtype st = half ? py::dtype::of<uint16_t>() : dt;
  for (const py::array* a : {&q, &k, &v})
    if (!same_dtype(a->dtype(), st)) throw py::type_error("query, key and value must share one dtype");
  if (!same_dtype(out.dtype(), dt)) throw py::type_error("out: wrong dtype for this call");

  const std::vector<int64_t> sq = strides_of(q, "query", 3), sk = strides_of(k, "key", 3),
                             sv = strides_of(v, "value", 3), so = strides_of(out, "out", 3);
  const int64_t total_q = q.shape(0), hq = q.shape(1), total_k = k.shape(0), hkv = k.shape(1);
  p.E = q.shape(2);
  p.Ev = v.shape(2);
  if (k.shape(2) != p.E || v.shape(0) != total_k || v.shape(1) != hkv || out.shape(0) != total_q ||
      out.shape(1) != hq || out.shape(2) != p.Ev)
    throw py::value_error("query/key/value/out: inconsistent shapes");
  if (!kv_heads_divide(hq, hkv))
    throw py::value_error("key/value heads must divide query heads");
  if (!out.writeable()) throw py::value_error("out is read-only");
  const std::vector<int64_t> cq = offsets(cu_q, "cu_seqlens_q", total_q);
  const std::vector<int64_t> ck = offsets(cu_k, "cu_seqlens_k", total_k);
  if (cq.size() != ck.size()) throw py::value_error("cu_seqlens_q and cu_seqlens_k differ in length");
  vp.num_seqs = static_cast<int64_t>(cq.size()) - 1;
  vp.cu_q = cq.data();
  vp.cu_k = ck.data();
  std::vector<ScoreArray> score_arrays;  // (Hq,) each
  read_score_options(score, {hq}, dt, &p.variants, &score_arrays);
  if (hq == 0) return;
  const int64_t group = hq / hkv;

  p.scale = scale_or_default(scale, p.E);
  set_visibility(p, causal != static_cast<int>(Causal::none), causal == static_cast<int>(Causal::lower_right),
                 window_side(window_left, total_q, total_k), window_side(window_right, total_q, total_k),
                 num_threads > 0 ? num_threads : default_num_threads());
  // Heads as the batch (hkv, group), laid out as scaled_dot_product_attention
  // lays out one sequence's (Hq, L, E) query against (Hkv, S, E) keys with
  // grouped-query heads: the same fold, so the same tiling and bits.
  BatchLayoutBuilder builder({hkv, group});
  auto heads = [&](const std::vector<int64_t>& s) {  // a per-query-head stride as (kv head, group)
    return std::vector<int64_t>{hkv == 1 ? 0 : s[1] * group, group == 1 ? 0 : s[1]};
  };
  builder.add(&p.q, heads(sq));
  builder.add(&p.k, {hkv == 1 ? 0 : sk[1], 0});
  builder.add(&p.v, {hkv == 1 ? 0 : sv[1], 0});
  builder.add(&p.out, heads(so));
  py::array lse_arr;
  if (!lse.is_none()) {
    lse_arr = lse.cast<py::array>();
    if (!same_dtype(lse_arr.dtype(), dt)) throw py::type_error("lse: wrong dtype");
    if (lse_arr.ndim() != 2 || lse_arr.shape(0) != total_q || lse_arr.shape(1) != hq)
      throw py::value_error("lse: wrong shape");
    if (!lse_arr.writeable()) throw py::value_error("lse is read-only");
    const std::vector<int64_t> sl = strides_of(lse_arr, "lse", 2);
    p.lse.data = lse_arr.mutable_data();
    p.lse.row_stride = sl[0];
    builder.add(&p.lse, heads(sl));
  }
  // Per-head score options as (Hkv, G) views: query head h = (kv head, h in its group).
  for (const ScoreArray& x : score_arrays) {
    const py::array& a = x.array;  // (Hq,), or (1,) / () broadcast
    const py::ssize_t step = a.ndim() == 1 && a.shape(0) == hq ? a.strides(0) : 0;
    add_operand(builder, {hkv, group}, py::array(a.dtype(), {hkv, group}, {step * group, step}, a.data(), a),
                x.option->name, 0, &(p.variants.*(x.option->per_head)));
  }
  for (const auto& [view, s] : {std::pair{&p.q, &sq}, {&p.k, &sk}, {&p.v, &sv}, {&p.out, &so}})
    view->row_stride = (*s)[0];
  p.q.data = const_cast<void*>(q.data());
  p.k.data = const_cast<void*>(k.data());
  p.v.data = const_cast<void*>(v.data());
  p.out.data = const_cast<void*>(out.data());  // (checked writeable above)
  p.fold = builder.fold_shared({&p.k, &p.v});
  if (!builder.finish(&p.batch)) throw py::value_error("too many batch dimensions");

  py::gil_scoped_release release;
  varlen_attention(vp);
}

}  // namespace

void register_varlen(py::module_& m) {
  m.def("varlen", &varlen, py::arg("query"), py::arg("key"), py::arg("value"),
        py::arg("cu_seqlens_q"), py::arg("cu_seqlens_k"), py::arg("out"), py::arg("lse"),
        py::arg("scale"), py::arg("storage"), py::arg("score"), py::arg("causal"),
        py::arg("window_left"), py::arg("window_right"), py::arg("num_threads"),
        "Low-level packed variable-length attention on prepared arrays (see pyattn.varlen). "
        "Writes out/lse.");
}

}  // namespace pyattn::bindings
