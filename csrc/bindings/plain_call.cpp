// The fast path's common checks and operands (see plain_call.h).
#include "plain_call.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "array_view.h"
#include "pyattn/threads.h"
#include "weights_memory.h"

namespace pyattn::bindings {

namespace {

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

// DType::bf16 / DType::f16 if `dt` is bfloat16 (ml_dtypes, when installed)
// or float16, else DType::f32. The dtype objects are looked up once (and
// never freed: they must outlive the interpreter's teardown order).
DType half_storage(const py::dtype& dt) {
  if (dt.itemsize() != 2) return DType::f32;
  static const py::dtype* f16 = new py::dtype("float16");
  static const py::object* bf16 = [] {
    try {
      return new py::object(py::dtype::from_args(py::module_::import("ml_dtypes").attr("bfloat16")));
    } catch (py::error_already_set&) {
      return new py::object(py::none());
    }
  }();
  if (same_dtype(dt, *f16)) return DType::f16;
  if (!bf16->is_none() && same_dtype(dt, py::reinterpret_borrow<py::dtype>(*bf16))) return DType::bf16;
  return DType::f32;
}

// Whether every element of `a` (float32 or float64, any strides) passes `ok`.
template <class T, class Pred>
bool all_elements(const py::array& a, Pred ok) {
  const py::ssize_t nd = a.ndim();
  if (a.size() == 0) return true;
  std::vector<py::ssize_t> idx(nd, 0);
  const char* base = static_cast<const char*>(a.data());
  for (;;) {
    py::ssize_t off = 0;
    for (py::ssize_t d = 0; d < nd; ++d) off += idx[d] * a.strides(d);
    T x;
    std::memcpy(&x, base + off, sizeof(T));
    if (!ok(x)) return false;
    py::ssize_t d = nd - 1;
    for (; d >= 0; --d) {
      if (++idx[d] < a.shape(d)) break;
      idx[d] = 0;
    }
    if (d < 0) return true;
  }
}

// alibi_slopes / sinks for the fast path: a `cdt` array broadcasting to the
// batch dims (q's, of which there are nb) without adding any, whose values
// the argument rule accepts (finite slopes; sinks neither NaN nor +inf).
bool per_head_ok(const py::object& x, const py::dtype& cdt, const py::array& q, py::ssize_t nb,
                 bool slopes) {
  if (!py::isinstance<py::array>(x)) return false;
  const auto a = py::reinterpret_borrow<py::array>(x);
  if (!same_dtype(a.dtype(), cdt) || a.ndim() > nb) return false;
  const py::ssize_t off = nb - a.ndim();
  for (py::ssize_t d = 0; d < a.ndim(); ++d)
    if ((a.shape(d) != q.shape(off + d) && a.shape(d) != 1) || a.strides(d) % a.itemsize()) return false;
  auto good = [slopes](auto v) { return slopes ? std::isfinite(v) : !std::isnan(v) && v != INFINITY; };
  return has_dtype<double>(a) ? all_elements<double>(a, good) : all_elements<float>(a, good);
}

}  // namespace

py::object PlainCall::result() const {
  // bfloat16 / float16 inputs: out and weights back in their dtype (as the
  // general path does, NumPy's rounding); lse stays float32.
  py::object o = out, w = weights;
  if (!result_dtype.is_none()) {
    o = out.attr("astype")(result_dtype);
    if (!w.is_none()) w = w.attr("astype")(result_dtype);
  }
  if (!w.is_none() && !lse.is_none()) return py::make_tuple(o, w, lse);
  if (!w.is_none()) return py::make_tuple(o, w);
  if (!lse.is_none()) return py::make_tuple(o, lse);
  return o;
}

bool prepare_plain_call(AttentionParams& p, StridedArray* q_view, StridedArray* k_view,
                        const py::handle& qh, const py::handle& kh, const py::handle& vh,
                        const PlainOptions& o, PlainCall* call) {
  if (!py::isinstance<py::array>(qh) || !py::isinstance<py::array>(kh) || !py::isinstance<py::array>(vh))
    return false;
  const auto q = py::reinterpret_borrow<py::array>(qh);
  const auto k = py::reinterpret_borrow<py::array>(kh);
  const auto v = py::reinterpret_borrow<py::array>(vh);
  const py::ssize_t nd = q.ndim();
  if (nd < 2 || k.ndim() != nd || v.ndim() != nd) return false;
  const py::dtype dt = q.dtype();
  const bool f64 = has_dtype<double>(q);
  const DType storage = f64 ? DType::f64 : has_dtype<float>(q) ? DType::f32
                        : o.half_inputs ? half_storage(dt) : DType::f32;
  const bool half = storage == DType::bf16 || storage == DType::f16;
  if (!(f64 || half || has_dtype<float>(q)) || !same_dtype(k.dtype(), dt) || !same_dtype(v.dtype(), dt))
    return false;
  if (half && !o.out.is_none()) return false;  // (the general path converts into it)
  // The dtype the kernels compute in, and the results are allocated in.
  const py::dtype cdt = half ? py::dtype::of<float>() : dt;
  const int64_t ritem = cdt.itemsize();
  // Grouped-query heads: dim nd - 3 holds Hq query heads, Hk key/value heads.
  const py::ssize_t hd = nd - 3;
  int64_t group = 1;
  if (o.gqa) {
    if (nd < 3 || k.shape(hd) != v.shape(hd) || k.shape(hd) < 1 || q.shape(hd) % k.shape(hd)) return false;
    group = q.shape(hd) / k.shape(hd);
  }
  for (py::ssize_t d = 0; d < nd - 2; ++d) {
    const bool heads = o.gqa && d == hd;
    if (v.shape(d) != k.shape(d) || (!heads && k.shape(d) != q.shape(d))) return false;
  }
  const int64_t L = q.shape(nd - 2), E = q.shape(nd - 1), S = k.shape(nd - 2), Ev = v.shape(nd - 1);
  if (k.shape(nd - 1) != E || v.shape(nd - 2) != S) return false;
  const int64_t item = q.itemsize();
  for (const py::array* a : {&q, &k, &v}) {
    if (a->shape(nd - 1) > 1 && a->strides(nd - 1) != item) return false;
    for (py::ssize_t d = 0; d < nd; ++d)
      if (a->strides(d) % item) return false;
  }
  // (Optional arrays are held as py::object: a default py::array would be
  // an empty NumPy array made on every call.)
  const bool have_len = !o.lengths.is_none();
  if (have_len) {
    if (!py::isinstance<py::array>(o.lengths) || nd < 3 || (o.gqa && nd < 4)) return false;
    const auto len = py::reinterpret_borrow<py::array>(o.lengths);
    if (!has_dtype<int64_t>(len) || len.ndim() != 1 || len.shape(0) != q.shape(0) ||
        len.strides(0) % len.itemsize())
      return false;
    const auto* n = static_cast<const int64_t*>(len.data());
    const py::ssize_t st = len.strides(0) / len.itemsize();
    for (py::ssize_t i = 0; i < len.shape(0); ++i)
      if (n[i * st] < 0 || n[i * st] > S) return false;
  }
  // The mask: bool or q's dtype, broadcasting to (batch..., L, S) without
  // more dimensions than that.
  const bool have_mask = !o.mask.is_none();
  if (have_mask) {
    if (!py::isinstance<py::array>(o.mask)) return false;
    const auto m = py::reinterpret_borrow<py::array>(o.mask);
    if (!(has_dtype<bool>(m) || same_dtype(m.dtype(), cdt)) || m.ndim() > nd) return false;
    const py::ssize_t off = nd - m.ndim();
    for (py::ssize_t d = 0; d < m.ndim(); ++d) {
      const int64_t want = off + d == nd - 2 ? L : off + d == nd - 1 ? S : q.shape(off + d);
      if ((m.shape(d) != want && m.shape(d) != 1) || m.strides(d) % m.itemsize()) return false;
    }
  }

  // Score variants (the general path names any error).
  if (!(o.softcap >= 0 && std::isfinite(o.softcap))) return false;
  const bool have_slopes = !o.alibi_slopes.is_none(), have_sinks = !o.sinks.is_none();
  if (have_slopes && !per_head_ok(o.alibi_slopes, cdt, q, nd - 2, true)) return false;
  if (have_sinks && !per_head_ok(o.sinks, cdt, q, nd - 2, false)) return false;

  // Results too large to address: the general path says so.
  std::vector<py::ssize_t> shape(q.shape(), q.shape() + nd);
  shape[nd - 1] = Ev;
  std::vector<py::ssize_t> w_shape, lse_shape;
  if (o.want_weights) {
    w_shape = shape;
    w_shape[nd - 1] = S;
  }
  if (o.want_lse) lse_shape.assign(q.shape(), q.shape() + nd - 1);
  if (!addressable(shape, ritem) || !addressable(w_shape, ritem) || !addressable(lse_shape, ritem))
    return false;
  py::array out;
  if (o.out.is_none()) {
    out = py::array(cdt, shape);
  } else {
    if (!py::isinstance<py::array>(o.out)) return false;
    out = py::reinterpret_borrow<py::array>(o.out);
    if (!same_dtype(out.dtype(), dt) || out.ndim() != nd || !out.writeable()) return false;
    for (py::ssize_t d = 0; d < nd; ++d)
      if (out.shape(d) != shape[d] || out.strides(d) % item) return false;
    if (Ev > 1 && out.strides(nd - 1) != item) return false;
    std::vector<py::handle> inputs = {qh, kh, vh, o.mask, o.lengths, o.alibi_slopes, o.sinks};
    inputs.insert(inputs.end(), o.more_inputs.begin(), o.more_inputs.end());
    for (const py::handle& a : inputs)
      if (!a.is_none() && py::isinstance<py::array>(a) &&
          may_overlap(out, py::reinterpret_borrow<py::array>(a)))
        return false;
  }
  call->E = E;
  call->storage = storage;
  call->result_dtype = half ? py::object(dt) : py::none();
  call->out = out;
  if (o.want_weights) {
    WeightsArray w = new_weights_array(cdt, w_shape, /*keep_when_freed=*/!half);  // (half: converted)
    call->weights = std::move(w.array);
    p.weights_resident = w.resident;
  } else {
    call->weights = py::none();
    release_kept_weights();
  }
  call->lse = o.want_lse ? py::object(py::array(cdt, lse_shape)) : py::none();

  p.dtype = f64 ? DType::f64 : DType::f32;
  p.L = L;
  p.S = S;
  p.Ev = Ev;
  p.vis.causal = o.causal != 0;
  p.vis.lower_right = o.causal == 2;
  // Sides wider than any distance mean unbounded (as _args.parse_window clamps them).
  const int64_t limit = L + S + 1;
  p.vis.window_left = o.window_left < 0 ? -1 : std::min(o.window_left, limit);
  p.vis.window_right = o.window_right < 0 ? -1 : std::min(o.window_right, limit);
  p.num_threads = o.num_threads > 0 ? o.num_threads : default_num_threads();
  p.variants.softcap = o.softcap;

  // Operands over the call's batch: q's batch dims, the head dim split in
  // (Hk, group) with grouped-query heads (k and v broadcast over group).
  std::vector<int64_t> batch(q.shape(), q.shape() + nd - 2);
  py::array qv = q, kv = k, vv = v, ov = out;
  py::object lv = call->lse, wv = call->weights, mv;
  if (have_mask) {  // size-1 dimensions prepended up to q's
    const auto m = py::reinterpret_borrow<py::array>(o.mask);
    std::vector<py::ssize_t> sh(nd, 1), st(nd, 0);
    for (py::ssize_t d = 0; d < m.ndim(); ++d) {
      sh[nd - m.ndim() + d] = m.shape(d);
      st[nd - m.ndim() + d] = m.strides(d);
    }
    mv = view_of(m, sh, st);
  }
  // Per-query-head arrays over the batch dims (size-1 dims prepended up to them).
  auto per_head_view = [&](const py::object& x) {
    const auto a = py::reinterpret_borrow<py::array>(x);
    const py::ssize_t nb0 = nd - 2;
    std::vector<py::ssize_t> sh(nb0, 1), st(nb0, 0);
    for (py::ssize_t d = 0; d < a.ndim(); ++d) {
      sh[nb0 - a.ndim() + d] = a.shape(d);
      st[nb0 - a.ndim() + d] = a.strides(d);
    }
    return view_of(a, sh, st);
  };
  py::object slv = have_slopes ? py::object(per_head_view(o.alibi_slopes)) : py::none();
  py::object skv = have_sinks ? py::object(per_head_view(o.sinks)) : py::none();
  if (o.gqa) {
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
    if (o.want_weights) wv = split(py::reinterpret_borrow<py::array>(wv), hk, group);
    if (o.want_lse) lv = split(py::reinterpret_borrow<py::array>(lv), hk, group);
    if (have_mask) {  // per query head, or one for all heads
      const auto m = py::reinterpret_borrow<py::array>(mv);
      mv = m.shape(hd) == 1 ? split(m, 1, 1) : split(m, hk, group);
    }
    for (py::object* x : {&slv, &skv}) {  // the same
      if (x->is_none()) continue;
      const auto a = py::reinterpret_borrow<py::array>(*x);
      *x = a.shape(hd) == 1 ? split(a, 1, 1) : split(a, hk, group);
    }
  }
  const size_t nb = batch.size();
  BatchLayoutBuilder builder(batch);
  add_operand(builder, batch, qv, "query", 2, q_view);
  add_operand(builder, batch, kv, "key", 2, k_view);
  add_operand(builder, batch, vv, "value", 2, &p.v);
  add_operand(builder, batch, ov, "out", 2, &p.out, /*writable=*/true);
  if (o.want_weights)
    add_operand(builder, batch, py::reinterpret_borrow<py::array>(wv), "weights", 2, &p.weights, /*writable=*/true);
  if (o.want_lse)
    add_operand(builder, batch, py::reinterpret_borrow<py::array>(lv), "lse", 1, &p.lse, /*writable=*/true);
  if (have_mask) {
    const auto m = py::reinterpret_borrow<py::array>(mv);
    p.mask_kind = has_dtype<bool>(m) ? MaskKind::boolean : MaskKind::additive;
    add_operand(builder, batch, m, "attn_mask", 2, &p.mask);
  }
  if (have_len) {  // lengths of the first batch dimension, broadcast over the others
    std::vector<py::ssize_t> sh(nb, 1), st(nb, 0);
    const auto len = py::reinterpret_borrow<py::array>(o.lengths);
    sh[0] = len.shape(0);
    st[0] = len.strides(0);
    py::array nv = view_of(len, sh, st);
    add_operand(builder, batch, nv, "kv_lengths", 0, &p.vis.lengths);
    call->views[7] = std::move(nv);
  }
  if (have_slopes)
    add_operand(builder, batch, py::reinterpret_borrow<py::array>(slv), "alibi_slopes", 0,
                &p.variants.alibi_slopes);
  if (have_sinks)
    add_operand(builder, batch, py::reinterpret_borrow<py::array>(skv), "sinks", 0, &p.variants.sinks);
  call->views[8] = std::move(slv);
  call->views[9] = std::move(skv);
  call->views[0] = std::move(qv);
  call->views[1] = std::move(kv);
  call->views[2] = std::move(vv);
  call->views[3] = std::move(ov);
  call->views[4] = std::move(wv);
  call->views[5] = std::move(lv);
  call->views[6] = std::move(mv);
  {  // as the general path does (grouped-query heads, and any batch dim K/V broadcast over)
    std::vector<const StridedArray*> shared = {k_view, &p.v};
    if (have_len) shared.push_back(&p.vis.lengths);
    p.fold = builder.fold_shared(shared);
  }
  return builder.finish(&p.batch);
}

}  // namespace pyattn::bindings
