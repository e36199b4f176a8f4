// pyattn._core.sdpa: build SdpaParams from prepared arrays, release the GIL,
// call the C++ entry point. Argument normalisation lives in pyattn/attention.py.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "array_view.h"
#include "attention_args.h"
#include "bindings.h"
#include "pyattn/sdpa.h"
#include "pyattn/threads.h"

#include <algorithm>
#include <cmath>

namespace pyattn::bindings {

namespace {

void sdpa(const py::array& q, const py::array& k, const py::array& v, const py::array& out,
          const py::object& mask, const py::object& lengths, const py::object& weights,
          const py::object& lse, double scale, int storage, bool causal, bool lower_right,
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
  std::vector<const StridedArray*> shared = {&p.k, &p.v};
  if (p.vis.lengths.data) shared.push_back(&p.vis.lengths);
  p.fold = builder.fold_shared(shared);
  if (!builder.finish(&p.batch))
    throw py::value_error("too many non-mergeable batch dimensions");

  py::gil_scoped_release release;
  scaled_dot_product_attention(p);
}

// Whether the bytes `a` and `b` span intersect (a cheap bound: arrays that
// interleave without sharing an element count as overlapping).
bool may_overlap(const py::array& a, const py::array& b) {
  auto extent = [](const py::array& x, const char** lo, const char** hi) {
    const char* base = static_cast<const char*>(x.data());
    *lo = *hi = base;
    if (x.size() == 0) return false;
    for (py::ssize_t d = 0; d < x.ndim(); ++d) {
      const py::ssize_t span = (x.shape(d) - 1) * x.strides(d);
      if (span < 0) *lo += span;
      else *hi += span;
    }
    *hi += x.itemsize();
    return true;
  };
  const char *alo, *ahi, *blo, *bhi;
  if (!extent(a, &alo, &ahi) || !extent(b, &blo, &bhi)) return false;
  return alo < bhi && blo < ahi;
}

// A view of `a` with `shape` and byte `strides`, sharing its memory.
py::array view_of(const py::array& a, const std::vector<py::ssize_t>& shape,
                  const std::vector<py::ssize_t>& strides) {
  return py::array(a.dtype(), shape, strides, a.data(), a);
}

// The common calls with nothing to normalise -- q, k, v of one float dtype
// and identical batch shapes (grouped-query heads aside), unit-stride rows
// -- checked and run entirely here to keep small calls cheap (a few
// microseconds; the Python path costs tens): plain, causal, windowed and
// masked attention (a bool or q-dtype mask that broadcasts) with or without
// weights and lse, and a KV cache's decoding step (lower-right causal,
// sliding window, kv_lengths, grouped-query heads). Returns None whenever anything
// differs or is wrong; the caller then takes the general path, which also
// produces the error messages.
// scale: None (1/sqrt(E)) or a finite float; causal: 0 none, 1 upper-left,
// 2 lower-right; window_left / window_right: >= 0, or -1 for an unbounded
// side; lengths: None or an array (used only if it is int64, 1-D and
// matches the first batch dimension, values in [0, S]); out: None or an
// array of the result's exact shape and dtype, writable, unit stride along
// its last dimension, whose memory lies clear of every input's (else the
// general path checks it precisely); num_threads: 0 for the default.
py::object sdpa_plain(const py::handle& qh, const py::handle& kh, const py::handle& vh,
                      const py::object& mask, const py::object& scale, int causal,
                      int64_t window_left, int64_t window_right, const py::object& lengths,
                      const py::object& out_arg, bool want_weights, bool want_lse, bool gqa,
                      int num_threads) {
  if (!py::isinstance<py::array>(qh) || !py::isinstance<py::array>(kh) || !py::isinstance<py::array>(vh))
    return py::none();
  const auto q = py::reinterpret_borrow<py::array>(qh);
  const auto k = py::reinterpret_borrow<py::array>(kh);
  const auto v = py::reinterpret_borrow<py::array>(vh);
  const py::ssize_t nd = q.ndim();
  if (nd < 2 || k.ndim() != nd || v.ndim() != nd) return py::none();
  const py::dtype dt = q.dtype();
  if (!(has_dtype<float>(q) || has_dtype<double>(q)) || !same_dtype(k.dtype(), dt) || !same_dtype(v.dtype(), dt))
    return py::none();
  // Grouped-query heads: dim nd - 3 holds Hq query heads, Hk key/value heads.
  const py::ssize_t hd = nd - 3;
  int64_t group = 1;
  if (gqa) {
    if (nd < 3 || k.shape(hd) != v.shape(hd) || k.shape(hd) < 1 || q.shape(hd) % k.shape(hd)) return py::none();
    group = q.shape(hd) / k.shape(hd);
  }
  for (py::ssize_t d = 0; d < nd - 2; ++d) {
    const bool heads = gqa && d == hd;
    if (v.shape(d) != k.shape(d) || (!heads && k.shape(d) != q.shape(d))) return py::none();
  }
  const int64_t L = q.shape(nd - 2), E = q.shape(nd - 1), S = k.shape(nd - 2), Ev = v.shape(nd - 1);
  if (k.shape(nd - 1) != E || v.shape(nd - 2) != S) return py::none();
  const int64_t item = q.itemsize();
  for (const py::array* a : {&q, &k, &v}) {
    if (a->shape(nd - 1) > 1 && a->strides(nd - 1) != item) return py::none();
    for (py::ssize_t d = 0; d < nd; ++d)
      if (a->strides(d) % item) return py::none();
  }
  // (Optional arrays are held as py::object: a default py::array would be
  // an empty NumPy array made on every call.)
  const bool have_len = !lengths.is_none();
  if (have_len) {
    if (!py::isinstance<py::array>(lengths) || nd < 3 || (gqa && nd < 4)) return py::none();
    const auto len = py::reinterpret_borrow<py::array>(lengths);
    if (!has_dtype<int64_t>(len) || len.ndim() != 1 || len.shape(0) != q.shape(0) ||
        len.strides(0) % len.itemsize())
      return py::none();
    const auto* n = static_cast<const int64_t*>(len.data());
    const py::ssize_t st = len.strides(0) / len.itemsize();
    for (py::ssize_t i = 0; i < len.shape(0); ++i)
      if (n[i * st] < 0 || n[i * st] > S) return py::none();
  }

  // The mask: bool or q's dtype, broadcasting to (batch..., L, S) without
  // more dimensions than that.
  const bool have_mask = !mask.is_none();
  if (have_mask) {
    if (!py::isinstance<py::array>(mask)) return py::none();
    const auto m = py::reinterpret_borrow<py::array>(mask);
    if (!(has_dtype<bool>(m) || same_dtype(m.dtype(), dt)) || m.ndim() > nd) return py::none();
    const py::ssize_t off = nd - m.ndim();
    for (py::ssize_t d = 0; d < m.ndim(); ++d) {
      const int64_t want = off + d == nd - 2 ? L : off + d == nd - 1 ? S : q.shape(off + d);
      if ((m.shape(d) != want && m.shape(d) != 1) || m.strides(d) % m.itemsize()) return py::none();
    }
  }

  std::vector<py::ssize_t> shape(q.shape(), q.shape() + nd);
  shape[nd - 1] = Ev;
  std::vector<py::ssize_t> w_shape(shape);
  w_shape[nd - 1] = S;
  {  // a result (or weights, lse) too large to address: the general path says so
    int64_t bytes = item, w_bytes = item, lse_bytes = item;
    for (py::ssize_t d = 0; d < nd; ++d)
      if (__builtin_mul_overflow(bytes, static_cast<int64_t>(shape[d]), &bytes) ||
          (want_weights && __builtin_mul_overflow(w_bytes, static_cast<int64_t>(w_shape[d]), &w_bytes)) ||
          (d < nd - 1 && __builtin_mul_overflow(lse_bytes, static_cast<int64_t>(shape[d]), &lse_bytes)))
        return py::none();
  }
  py::array out;
  if (out_arg.is_none()) {
    out = py::array(dt, shape);
  } else {
    if (!py::isinstance<py::array>(out_arg)) return py::none();
    out = py::reinterpret_borrow<py::array>(out_arg);
    if (!same_dtype(out.dtype(), dt) || out.ndim() != nd || !out.writeable()) return py::none();
    for (py::ssize_t d = 0; d < nd; ++d)
      if (out.shape(d) != shape[d] || out.strides(d) % item) return py::none();
    if (Ev > 1 && out.strides(nd - 1) != item) return py::none();
    for (const py::handle& a : {qh, kh, vh, static_cast<py::handle>(mask), static_cast<py::handle>(lengths)})
      if (!a.is_none() && may_overlap(out, py::reinterpret_borrow<py::array>(a))) return py::none();
  }
  py::object lse, weights;
  if (want_weights) weights = py::array(dt, w_shape);
  if (want_lse) lse = py::array(dt, std::vector<py::ssize_t>(q.shape(), q.shape() + nd - 1));
  SdpaParams p;
  p.dtype = has_dtype<float>(q) ? DType::f32 : DType::f64;
  p.storage = p.dtype;
  p.L = L;
  p.E = E;
  p.S = S;
  p.Ev = Ev;
  p.scale = !scale.is_none() ? scale.cast<double>()
                              : (E > 0 ? 1.0 / std::sqrt(static_cast<double>(E)) : 1.0);
  p.vis.causal = causal != 0;
  p.vis.lower_right = causal == 2;
  // Sides wider than any distance mean unbounded (as _args.parse_window clamps them).
  const int64_t limit = L + S + 1;
  p.vis.window_left = window_left < 0 ? -1 : std::min(window_left, limit);
  p.vis.window_right = window_right < 0 ? -1 : std::min(window_right, limit);
  p.num_threads = num_threads > 0 ? num_threads : default_num_threads();

  // Operands over the call's batch: q's batch dims, the head dim split in
  // (Hk, group) with grouped-query heads (k and v broadcast over group).
  std::vector<int64_t> batch(q.shape(), q.shape() + nd - 2);
  py::array qv = q, kv = k, vv = v, ov = out;
  py::object lv = lse, wv = weights, nv, mv;
  if (have_mask) {  // size-1 dimensions prepended up to q's
    const auto m = py::reinterpret_borrow<py::array>(mask);
    std::vector<py::ssize_t> sh(nd, 1), st(nd, 0);
    for (py::ssize_t d = 0; d < m.ndim(); ++d) {
      sh[nd - m.ndim() + d] = m.shape(d);
      st[nd - m.ndim() + d] = m.strides(d);
    }
    mv = view_of(m, sh, st);
  }
  if (gqa) {
    const int64_t hk = k.shape(hd);
    batch[hd] = hk;
    batch.insert(batch.begin() + hd + 1, group);
    auto split = [&](const py::array& a, int64_t heads, int64_t g) {
      std::vector<py::ssize_t> sh(a.shape(), a.shape() + a.ndim()), st(a.strides(), a.strides() + a.ndim());
      const py::ssize_t hs = st[hd];
      sh[hd] = heads;
      sh.insert(sh.begin() + hd + 1, g);
      st[hd] = hs * g;
      st.insert(st.begin() + hd + 1, hs);
      return view_of(a, sh, st);
    };
    qv = split(q, hk, group);
    kv = split(k, hk, 1);
    vv = split(v, hk, 1);
    ov = split(out, hk, group);
    if (want_weights) wv = split(py::reinterpret_borrow<py::array>(weights), hk, group);
    if (want_lse) lv = split(py::reinterpret_borrow<py::array>(lse), hk, group);
    if (have_mask) {  // per query head, or one for all heads
      const auto m = py::reinterpret_borrow<py::array>(mv);
      mv = m.shape(hd) == 1 ? split(m, 1, 1) : split(m, hk, group);
    }
  }
  const size_t nb = batch.size();
  BatchLayoutBuilder builder(batch);
  add_operand(builder, batch, qv, "query", 2, &p.q);
  add_operand(builder, batch, kv, "key", 2, &p.k);
  add_operand(builder, batch, vv, "value", 2, &p.v);
  add_operand(builder, batch, ov, "out", 2, &p.out, /*writable=*/true);
  if (want_weights)
    add_operand(builder, batch, py::reinterpret_borrow<py::array>(wv), "weights", 2, &p.weights, /*writable=*/true);
  if (want_lse)
    add_operand(builder, batch, py::reinterpret_borrow<py::array>(lv), "lse", 1, &p.lse, /*writable=*/true);
  if (have_mask) {
    const auto m = py::reinterpret_borrow<py::array>(mv);
    p.mask_kind = has_dtype<bool>(m) ? MaskKind::boolean : MaskKind::additive;
    add_operand(builder, batch, m, "attn_mask", 2, &p.mask);
  }
  if (have_len) {  // lengths of the first batch dimension, broadcast over the others
    std::vector<py::ssize_t> sh(nb, 1), st(nb, 0);
    const auto len = py::reinterpret_borrow<py::array>(lengths);
    sh[0] = len.shape(0);
    st[0] = len.strides(0);
    nv = view_of(len, sh, st);
    add_operand(builder, batch, py::reinterpret_borrow<py::array>(nv), "kv_lengths", 0, &p.vis.lengths);
  }
  {  // as sdpa() does (grouped-query heads, and any batch dim K/V broadcast over)
    std::vector<const StridedArray*> shared = {&p.k, &p.v};
    if (have_len) shared.push_back(&p.vis.lengths);
    p.fold = builder.fold_shared(shared);
  }
  if (!builder.finish(&p.batch)) return py::none();
  {
    py::gil_scoped_release release;
    scaled_dot_product_attention(p);
  }
  if (want_weights && want_lse) return py::make_tuple(out, weights, lse);
  if (want_weights) return py::make_tuple(out, weights);
  if (want_lse) return py::make_tuple(out, lse);
  return std::move(out);
}

}  // namespace

void register_sdpa(py::module_& m) {
  m.def("sdpa_plain", &sdpa_plain, py::arg("query"), py::arg("key"), py::arg("value"),
        py::arg("mask"), py::arg("scale"), py::arg("causal"), py::arg("window_left"),
        py::arg("window_right"), py::arg("lengths"), py::arg("out"), py::arg("want_weights"),
        py::arg("want_lse"),
        py::arg("gqa"), py::arg("num_threads"),
        "Fast path for the plain call (see pyattn.attention); None if it does not apply.");
  m.def("sdpa", &sdpa, py::arg("query"), py::arg("key"), py::arg("value"), py::arg("out"),
        py::arg("mask"), py::arg("lengths"), py::arg("weights"), py::arg("lse"),
        py::arg("scale"), py::arg("storage"), py::arg("causal"), py::arg("lower_right"), py::arg("window_left"),
        py::arg("window_right"), py::arg("num_threads"),
        "Low-level SDPA on prepared arrays (see pyattn.attention). Writes out/weights/lse.");
}

}  // namespace pyattn::bindings
