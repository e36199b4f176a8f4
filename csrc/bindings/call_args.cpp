// The argument rules of the attention ops (see call_args.h).
#include "call_args.h"

#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "array_view.h"
#include "pyattn/threads.h"
#include "score_args.h"
#include "weights_memory.h"

namespace pyattn::bindings {

namespace {

// numpy, looked up once (and never freed: it must outlive the interpreter's
// teardown order).
const py::object& numpy() {
  static const py::object* np = new py::object(py::module_::import("numpy"));
  return *np;
}

std::string shape_str(const py::ssize_t* s, size_t n) {
  std::string r = "(";
  for (size_t i = 0; i < n; ++i) {
    if (i) r += ", ";
    r += std::to_string(s[i]);
  }
  return r + (n == 1 ? ",)" : ")");
}
std::string shape_str(const std::vector<py::ssize_t>& s) { return shape_str(s.data(), s.size()); }
std::string shape_of(const py::array& a) { return shape_str(a.shape(), static_cast<size_t>(a.ndim())); }
std::string str(py::handle x) { return py::str(x).cast<std::string>(); }

std::vector<py::ssize_t> shape_vec(const py::array& a, py::ssize_t from = 0, py::ssize_t drop = 0) {
  return std::vector<py::ssize_t>(a.shape() + from, a.shape() + a.ndim() - drop);
}

bool whole_item_strides(const py::array& a) {
  for (py::ssize_t d = 0; d < a.ndim(); ++d)
    if (a.strides(d) % a.itemsize()) return false;
  return true;
}

py::array contiguous(const py::array& a) {
  return numpy().attr("ascontiguousarray")(a).cast<py::array>();
}

// ValueError unless `a` broadcasts to `target` without adding dimensions.
void check_broadcasts_to(const py::array& a, const std::vector<py::ssize_t>& target, const char* name,
                         const char* what) {
  const size_t nd = static_cast<size_t>(a.ndim());
  if (nd > target.size())
    throw py::value_error(std::string(name) + " of shape " + shape_of(a) + " has more dimensions than " +
                          what + " " + shape_str(target));
  const size_t off = target.size() - nd;
  for (size_t d = 0; d < nd; ++d)
    if (a.shape(d) != target[off + d] && a.shape(d) != 1)
      throw py::value_error(std::string(name) + " of shape " + shape_of(a) + " does not broadcast to " +
                            what + " " + shape_str(target));
}

// The broadcast of the named shapes (NumPy's rule), else ValueError naming them.
std::vector<py::ssize_t> broadcast_batch(const std::vector<std::pair<const char*, std::vector<py::ssize_t>>>& shapes) {
  bool equal = true;
  size_t nd = 0;
  for (const auto& s : shapes) {
    equal = equal && s.second == shapes[0].second;
    nd = std::max(nd, s.second.size());
  }
  if (equal) return shapes[0].second;
  std::vector<py::ssize_t> r(nd, 1);
  for (const auto& [name, s] : shapes) {
    for (size_t d = 0; d < s.size(); ++d) {
      py::ssize_t& x = r[nd - s.size() + d];
      if (x == 1) {
        x = s[d];
      } else if (s[d] != 1 && s[d] != x) {
        std::string desc;
        for (const auto& [n, sh] : shapes) desc += (desc.empty() ? "" : ", ") + std::string(n) + " " + shape_str(sh);
        throw py::value_error("batch dimensions do not broadcast: " + desc);
      }
    }
  }
  return r;
}

}  // namespace

void check_size(const std::vector<py::ssize_t>& shape, int64_t item, const char* name) {
  if (addressable(shape, item)) return;
  py::int_ bytes(item);
  for (py::ssize_t d : shape) bytes = py::int_(bytes * py::int_(d));
  throw py::value_error(std::string(name) + " of shape " + shape_str(shape) + " would need " + str(bytes) +
                        " bytes, more than can be addressed");
}

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

// Whether `a` and `b` share an element: the bound, then NumPy's exact
// answer (an answer too hard to find counts as "yes").
bool overlaps(const py::array& a, const py::array& b) {
  if (!may_overlap(a, b)) return false;
  try {
    return numpy().attr("shares_memory")(a, b, py::arg("max_work") = 1 << 20).cast<bool>();
  } catch (py::error_already_set&) {
    return true;
  }
}

// A view of `a` with `shape` and byte `strides`, sharing its memory.
py::array view_of(const py::array& a, const std::vector<py::ssize_t>& shape,
                  const std::vector<py::ssize_t>& strides) {
  return py::array(a.dtype(), shape, strides, a.data(), a);
}

// Every element of `a` (of type T, whole-item strides) passes `ok`.
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

// How grouped-query heads lay an operand out over the core's batch: the
// user's batch dim nb - 1 (Hq heads) becomes (Hkv, group).
struct HeadLayout {
  size_t nb = 0;       // the user's batch dims
  bool gqa = false;
  int64_t hkv = 0, group = 1;

  enum Role { query, kv, batched };

  // `a` with `trailing` dims after the batch: size-1 dims prepended up to
  // nb, then (gqa) the head dim split (query; batched arrays with heads) or
  // a size-1 group dim inserted (key/value; batched arrays of one head).
  py::array operator()(const py::array& a, int trailing, Role role) const {
    const size_t nd = nb + static_cast<size_t>(trailing);
    if (!gqa && static_cast<size_t>(a.ndim()) == nd) return a;
    std::vector<py::ssize_t> sh(nd, 1), st(nd, 0);
    const size_t off = nd - static_cast<size_t>(a.ndim());
    for (py::ssize_t d = 0; d < a.ndim(); ++d) {
      sh[off + d] = a.shape(d);
      st[off + d] = a.strides(d);
    }
    if (gqa) {
      const size_t h = nb - 1;
      const bool split = role == query || (role == batched && sh[h] != 1);
      if (split) {
        const py::ssize_t hs = st[h];
        sh[h] = hkv;
        st[h] = hs * group;
        sh.insert(sh.begin() + h + 1, group);
        st.insert(st.begin() + h + 1, hs);
      } else {
        sh.insert(sh.begin() + h + 1, 1);
        st.insert(st.begin() + h + 1, 0);
      }
    }
    return view_of(a, sh, st);
  }
};

// The sizes and batch of a call.
struct CallShape {
  std::vector<py::ssize_t> batch;  // the user's batch shape
  HeadLayout layout;
  int64_t L = 0, S = 0, E = 0, Ev = 0;
};


const char* const kFloatNames = "float16, bfloat16, float32 or float64";

}  // namespace

py::array per_head(py::handle x, const ScoreOption& option, const std::vector<py::ssize_t>& batch,
                   const py::dtype& cdt) {
  const char* name = option.name;
  py::array a = as_array(x, name);
  if (float_kind(a.dtype()) == DType::i8)
    throw py::type_error(std::string(name) + ": dtype " + str(a.dtype()) + " is not supported; expected " + kFloatNames);
  check_broadcasts_to(a, batch, name, "the batch shape");
  if (!same_dtype(a.dtype(), cdt) || !whole_item_strides(a)) {
    if (has_dtype<double>(a) && same_dtype(cdt, py::dtype::of<float>())) {
      py::object quiet = numpy().attr("errstate")(py::arg("over") = "ignore");
      quiet.attr("__enter__")();
      a = a.attr("astype")(cdt).cast<py::array>();
      quiet.attr("__exit__")(py::none(), py::none(), py::none());
    } else {
      a = numpy().attr("ascontiguousarray")(a, py::arg("dtype") = cdt).cast<py::array>();
    }
  }
  auto ok = [&option](auto v) { return option.ok(static_cast<double>(v)); };
  if (!(has_dtype<double>(a) ? all_elements<double>(a, ok) : all_elements<float>(a, ok)))
    throw score_value_error(option, x, a.dtype());
  return a;
}

namespace {

// attn_mask: bool (as it is) or float (in the compute dtype), broadcasting
// to (batch..., L, S) without adding dims.
py::array prepare_mask(py::handle x, const std::vector<py::ssize_t>& full, const py::dtype& cdt) {
  py::array m = as_array(x, "attn_mask");
  const bool boolean = has_dtype<bool>(m);
  if (!boolean && float_kind(m.dtype()) == DType::i8)
    throw py::type_error("attn_mask: dtype " + str(m.dtype()) + " is not supported; expected bool or a float dtype");
  check_broadcasts_to(m, full, "attn_mask", "the scores' shape");
  if (boolean || same_dtype(m.dtype(), cdt))
    return whole_item_strides(m) ? m : contiguous(m);  // read in place with its strides
  const py::object& np = numpy();
  if (has_dtype<double>(m) && cdt.itemsize() == 4) {
    // Keep finite biases finite: finfo(float64).min must stay "visible".
    const double big = 3.4028234663852886e38;  // float32's largest finite value
    m = np.attr("where")(np.attr("isinf")(m), m, np.attr("clip")(m, -big, big)).cast<py::array>();
  }
  return m.attr("astype")(cdt).cast<py::array>();
}

// kv_lengths: int64 over the user's batch (a 1-D array with 2+ batch dims
// applies to the first one), each in [0, S].
py::array prepare_lengths(py::handle x, const std::vector<py::ssize_t>& batch, int64_t S) {
  py::array n = as_array(x, "kv_lengths");
  const char kind = n.dtype().kind();
  if (kind != 'i' && kind != 'u') throw py::type_error("kv_lengths must be an integer array, got dtype " + str(n.dtype()));
  const size_t nb = batch.size();
  if (n.ndim() == 1 && nb >= 2) {
    if (n.shape(0) != batch[0] && n.shape(0) != 1)
      throw py::value_error("kv_lengths of shape " + shape_of(n) + " applies to the first batch dimension, which has size " +
                            std::to_string(batch[0]) + " (batch shape " + shape_str(batch) + ")");
    std::vector<py::ssize_t> sh(nb, 1), st(nb, 0);
    sh[0] = n.shape(0);
    st[0] = n.strides(0);
    n = view_of(n, sh, st);
  } else {
    check_broadcasts_to(n, batch, "kv_lengths", "the batch shape");
  }
  const bool i64 = has_dtype<int64_t>(n);
  if (n.size()) {
    int64_t lo = 0, hi = 0;
    std::string los, his;
    if (kind == 'u' && n.itemsize() == 8) {  // (values above int64's range)
      py::object mn = n.attr("min")(), mx = n.attr("max")();
      if (mn.cast<py::int_>() < py::int_(0) || py::int_(mx.cast<py::int_>()) > py::int_(S)) {
        los = str(py::int_(mn));
        his = str(py::int_(mx));
      }
    } else {
      const py::array w = i64 && whole_item_strides(n) ? n : n.attr("astype")(py::dtype::of<int64_t>()).cast<py::array>();
      bool first = true;
      all_elements<int64_t>(w, [&](int64_t v) {
        lo = first ? v : std::min(lo, v);
        hi = first ? v : std::max(hi, v);
        first = false;
        return true;
      });
      if (!length_in_range(lo, S) || !length_in_range(hi, S)) {
        los = std::to_string(lo);
        his = std::to_string(hi);
      }
    }
    if (!los.empty())
      throw py::value_error("kv_lengths must lie in [0, S=" + std::to_string(S) + "], got values in [" + los + ", " + his + "]");
  }
  if (!i64) n = n.attr("astype")(py::dtype::of<int64_t>()).cast<py::array>();
  return whole_item_strides(n) ? n : contiguous(n);
}

}  // namespace

py::array as_array(py::handle x, const char* name) {
  if (py::isinstance<py::array>(x)) return py::reinterpret_borrow<py::array>(x);
  if (x.is_none()) throw py::type_error(std::string(name) + " must be an array, got None");
  try {
    return numpy().attr("asarray")(x).cast<py::array>();
  } catch (py::error_already_set& e) {  // e.g. a tensor that needs .detach()
    throw py::type_error(std::string(name) + " could not be converted to a NumPy array: " + str(e.value()));
  }
}

DType float_kind(const py::dtype& dt) {
  if (same_dtype(dt, py::dtype::of<float>())) return DType::f32;
  if (same_dtype(dt, py::dtype::of<double>())) return DType::f64;
  if (dt.itemsize() != 2) return DType::i8;
  static const py::dtype* f16 = new py::dtype("float16");
  static const py::object* bf16 = [] {  // (ml_dtypes, when installed)
    try {
      return new py::object(py::dtype::from_args(py::module_::import("ml_dtypes").attr("bfloat16")));
    } catch (py::error_already_set&) {
      return new py::object(py::none());
    }
  }();
  if (same_dtype(dt, *f16)) return DType::f16;
  if (!bf16->is_none() && same_dtype(dt, py::reinterpret_borrow<py::dtype>(*bf16))) return DType::bf16;
  return DType::i8;
}

py::dtype check_float_inputs(const std::vector<std::pair<const char*, py::array>>& arrays) {
  for (const auto& [name, a] : arrays) {
    if (float_kind(a.dtype()) == DType::i8)
      throw py::type_error(std::string(name) + ": dtype " + str(a.dtype()) + " is not supported; expected " + kFloatNames);
    if (a.ndim() < 2)
      throw py::value_error(std::string(name) + " must have at least 2 dimensions (..., rows, features), got shape " +
                            shape_of(a));
  }
  const py::dtype dt = arrays[0].second.dtype();
  for (const auto& [name, a] : arrays) {
    if (same_dtype(a.dtype(), dt)) continue;
    std::string names, got;
    for (const auto& [n, x] : arrays) {
      names += (names.empty() ? "" : ", ") + std::string(n);
      got += (got.empty() ? "" : ", ") + std::string(n) + ": " + str(x.dtype());
    }
    throw py::type_error(names + " must share one dtype, got " + got);
  }
  return dt;
}

py::dtype compute_dtype(const py::dtype& dt) {
  return float_kind(dt) == DType::f64 ? dt : py::dtype::of<float>();
}

py::array kernel_ready(const py::array& a) {
  const py::ssize_t nd = a.ndim();
  if (nd && a.shape(nd - 1) > 1 && a.strides(nd - 1) != a.itemsize()) return contiguous(a);
  return whole_item_strides(a) ? a : contiguous(a);
}

double scale_or_default(py::handle scale, int64_t E) {
  if (scale.is_none()) return default_scale(E);
  const double s = scale.cast<double>();
  if (!std::isfinite(s)) throw py::value_error("scale must be finite, got " + str(py::float_(s)));
  return s;
}

py::array check_out(py::handle out_obj, const std::vector<py::ssize_t>& shape, const py::dtype& dtype,
               const std::vector<std::pair<const char*, py::handle>>& inputs) {
  if (!py::isinstance<py::array>(out_obj))
    throw py::type_error("out must be a numpy.ndarray, got " + str(py::type::handle_of(out_obj).attr("__name__")));
  const auto out = py::reinterpret_borrow<py::array>(out_obj);
  if (!same_dtype(out.dtype(), dtype))
    throw py::type_error("out has dtype " + str(out.dtype()) + "; the result has dtype " + str(dtype));
  if (shape_vec(out) != shape)
    throw py::value_error("out has shape " + shape_of(out) + "; the result has shape " + shape_str(shape));
  if (!out.writeable()) throw py::value_error("out is read-only");
  for (const auto& [name, a] : inputs)
    if (a && py::isinstance<py::array>(a) && overlaps(out, py::reinterpret_borrow<py::array>(a)))
      throw py::value_error(std::string("out overlaps the memory of ") + name);
  return out;
}

namespace {
bool truth(py::handle x) {
  const int t = PyObject_IsTrue(x.ptr());
  if (t < 0) throw py::error_already_set();
  return t != 0;
}
}  // namespace

CallOptions call_options(py::handle mask, py::handle scale, int causal, int64_t window_left,
                         int64_t window_right, py::handle lengths, py::handle out, py::handle want_weights,
                         py::handle want_lse, py::handle gqa, int num_threads, py::handle score) {
  CallOptions o;
  o.mask = mask;
  o.scale = scale;
  o.causal = causal;
  o.window_left = window_left;
  o.window_right = window_right;
  o.lengths = lengths;
  o.out = out;
  o.want_weights = truth(want_weights);
  o.want_lse = truth(want_lse);
  o.gqa = truth(gqa);
  o.num_threads = num_threads;
  o.score = score;
  return o;
}

py::object PreparedCall::result() const {
  py::object o = out, w = weights;
  if (o.is_none()) {
    const auto t = py::reinterpret_borrow<py::array>(target);
    o = same_dtype(t.dtype(), result_dtype) ? target : target.attr("astype")(result_dtype);
  } else if (!o.is(target)) {
    o.attr("__setitem__")(py::ellipsis(), target);
  }
  if (!w.is_none() && !same_dtype(py::reinterpret_borrow<py::array>(w).dtype(), result_dtype))
    w = w.attr("astype")(result_dtype);
  if (!w.is_none() && !lse.is_none()) return py::make_tuple(o, w, lse);
  if (!w.is_none()) return py::make_tuple(o, w);
  if (!lse.is_none()) return py::make_tuple(o, lse);
  return o;
}

CallShape call_shape(const CallOperands& ops, bool gqa, bool same_features = true) {
  const py::array &q = ops.q, &k = ops.k, &v = ops.v;
  const char *qn = ops.names[0], *kn = ops.names[1], *vn = ops.names[2];
  auto shown_shape = [&](int i, const py::array& a) {  // the shape the user passed
    const py::handle x = ops.shown[i];
    return x && py::isinstance<py::array>(x) ? shape_of(py::reinterpret_borrow<py::array>(x)) : shape_of(a);
  };
  for (int i = 0; i < 3; ++i)
    if ((i == 0 ? q : i == 1 ? k : v).ndim() < 2)
      throw py::value_error(std::string(ops.names[i]) + " must have at least 2 dimensions (..., rows, features)");
  const py::ssize_t qd = q.ndim(), kd = k.ndim(), vd = v.ndim();
  const int64_t L = q.shape(qd - 2), E = q.shape(qd - 1), S = k.shape(kd - 2), Ev = v.shape(vd - 1);
  if (same_features && k.shape(kd - 1) != E)
    throw py::value_error(std::string(kn) + " feature size " + std::to_string(k.shape(kd - 1)) + " (shape " +
                          shown_shape(1, k) + ") != " + qn + " feature size " + std::to_string(E) + " (shape " +
                          shown_shape(0, q) + ")");
  if (v.shape(vd - 2) != S)
    throw py::value_error(std::string(vn) + " has " + std::to_string(v.shape(vd - 2)) + " rows (shape " +
                          shown_shape(2, v) + ") but " + kn + " has " + std::to_string(S) + " (shape " +
                          shown_shape(1, k) + ")");

  // The user's batch shape and the grouped-query head layout.
  CallShape r;
  std::vector<py::ssize_t>& batch = r.batch;
  HeadLayout& layout = r.layout;
  const bool same_batch = qd == kd && kd == vd &&
                          std::equal(q.shape(), q.shape() + qd - 2, k.shape()) &&
                          std::equal(q.shape(), q.shape() + qd - 2, v.shape());
  if (!gqa && same_batch) {  // the common case, without the general rule
    batch.assign(q.shape(), q.shape() + qd - 2);
  } else if (!gqa) {
    batch = broadcast_batch({{qn, shape_vec(q, 0, 2)}, {kn, shape_vec(k, 0, 2)}, {vn, shape_vec(v, 0, 2)}});
  } else {
    for (const py::array* a : {&q, &k, &v})
      if (a->ndim() < 3)
        throw py::value_error(std::string("enable_gqa needs (..., heads, rows, features) inputs; ") +
                              ops.names[a == &q ? 0 : a == &k ? 1 : 2] + " has shape " +
                              shown_shape(a == &q ? 0 : a == &k ? 1 : 2, *a));
    const int64_t hq = q.shape(qd - 3), hk = k.shape(kd - 3), hv = v.shape(vd - 3);
    if (hk != hv)
      throw py::value_error("enable_gqa: key and value must have the same number of heads, got " + std::to_string(hk) +
                            " and " + std::to_string(hv));
    if (!kv_heads_divide(hq, hk))
      throw py::value_error("enable_gqa: key/value heads (" + std::to_string(hk) + ") must divide query heads (" +
                            std::to_string(hq) + ")");
    batch = broadcast_batch({{qn, shape_vec(q, 0, 3)}, {kn, shape_vec(k, 0, 3)}, {vn, shape_vec(v, 0, 3)}});
    batch.push_back(hq);
    layout.gqa = true;
    layout.hkv = hk;
    layout.group = hk ? hq / hk : 1;
  }
  layout.nb = batch.size();
  r.L = L;
  r.S = S;
  r.E = E;
  r.Ev = Ev;
  return r;
}

// The shapes of the scores / weights, the result and the lse of a call,
// their byte sizes checked (ValueError naming the one too large).
void result_shapes(const CallShape& sh, bool want_weights, bool want_lse, const py::dtype& rdt,
                   const py::dtype& cdt, std::vector<py::ssize_t>* full, std::vector<py::ssize_t>* out_shape,
                   std::vector<py::ssize_t>* lse_shape) {
  *full = sh.batch;
  full->push_back(sh.L);
  full->push_back(sh.S);
  *out_shape = sh.batch;
  out_shape->push_back(sh.L);
  out_shape->push_back(sh.Ev);
  *lse_shape = sh.batch;
  lse_shape->push_back(sh.L);
  check_size(*out_shape, rdt.itemsize(), "the result");
  if (want_weights) check_size(*full, cdt.itemsize(), "weights");
  if (want_lse) check_size(*lse_shape, cdt.itemsize(), "lse");
}

void prepare_call(AttentionParams& p, StridedArray* q_view, StridedArray* k_view,
                  const CallOperands& ops, const CallOptions& o, PreparedCall* call) {
  const char *qn = ops.names[0], *kn = ops.names[1], *vn = ops.names[2];
  const CallShape sh = call_shape(ops, o.gqa);
  const std::vector<py::ssize_t>& batch = sh.batch;
  const HeadLayout& layout = sh.layout;
  const int64_t L = sh.L, E = sh.E, S = sh.S, Ev = sh.Ev;
  const py::dtype& cdt = ops.cdt;

  // Result sizes, all checked before anything (the results, converted
  // masks, lengths, per-head score options) is allocated.
  std::vector<py::ssize_t> full, out_shape, lse_shape;
  const py::dtype& rdt = ops.result_dtype;
  call->result_dtype = rdt;
  result_shapes(sh, o.want_weights, o.want_lse, rdt, cdt, &full, &out_shape, &lse_shape);
  const std::vector<py::ssize_t>& w_shape = full;

  call->keep.reserve(12);

  // The operands as the kernels read them (copies only if needed).
  const py::array q = ops.convert_q && !same_dtype(ops.q.dtype(), cdt)
                          ? numpy().attr("ascontiguousarray")(ops.q, py::arg("dtype") = cdt).cast<py::array>()
                          : kernel_ready(ops.q);
  const py::array k = kernel_ready(ops.k), v = kernel_ready(ops.v);

  // Score options.
  call->E = E;
  call->scale = scale_or_default(o.scale, E);
  std::vector<ScoreArray> score_arrays;  // (none allocated without per-head options)
  read_score_options(o.score, batch, cdt, &p.variants, &score_arrays);

  // Visibility.
  py::object mask = o.mask.is_none() ? py::object(py::none()) : py::object(prepare_mask(o.mask, full, cdt));
  py::object lengths = o.lengths.is_none() ? py::object(py::none()) : py::object(prepare_lengths(o.lengths, batch, S));
  p.vis.causal = o.causal != static_cast<int>(Causal::none);
  p.vis.lower_right = o.causal == static_cast<int>(Causal::lower_right);
  p.vis.window_left = window_side(o.window_left, L, S);
  p.vis.window_right = window_side(o.window_right, L, S);
  p.num_threads = o.num_threads > 0 ? o.num_threads : default_num_threads();

  // out: the result itself, or where it is copied to.
  if (o.out.is_none()) {
    call->out = py::none();
    call->target = py::array(cdt, out_shape);
  } else {
    // Both what the user passed and what the kernels read (a conversion of it).
    std::vector<std::pair<const char*, py::handle>> inputs;
    for (int i = 0; i < 3; ++i) inputs.push_back({ops.names[i], ops.shown[i]});
    inputs.push_back({qn, q});
    inputs.push_back({kn, k});
    inputs.push_back({vn, v});
    for (const KvExtra& x : ops.kv_extra) inputs.push_back({x.name, x.array});
    for (const auto& x : o.more_inputs) inputs.push_back(x);
    for (const ScoreArray& x : score_arrays) {
      inputs.push_back({x.option->name, x.shown});
      inputs.push_back({x.option->name, x.array});
    }
    inputs.push_back({"attn_mask", o.mask});
    inputs.push_back({"attn_mask", mask});
    inputs.push_back({"kv_lengths", o.lengths});
    inputs.push_back({"kv_lengths", lengths});
    const py::array out = check_out(o.out, out_shape, rdt, inputs);
    const py::ssize_t item = out.itemsize();
    const bool direct = same_dtype(out.dtype(), cdt) && (Ev <= 1 || out.strides(out.ndim() - 1) == item) &&
                        whole_item_strides(out);
    call->out = out;
    call->target = direct ? out : py::array(cdt, out_shape);
  }
  if (o.want_weights) {
    WeightsArray w = new_weights_array(cdt, w_shape, /*keep_when_freed=*/same_dtype(cdt, rdt));
    call->weights = std::move(w.array);
    p.weights_resident = w.resident;
  } else {
    call->weights = py::none();
    release_kept_weights();
  }
  call->lse = o.want_lse ? py::object(py::array(cdt, lse_shape)) : py::none();

  p.dtype = cdt.itemsize() == 8 ? DType::f64 : DType::f32;
  p.L = L;
  p.S = S;
  p.Ev = Ev;

  // Operands over the core's batch.
  std::vector<int64_t> cbatch = batch;
  if (layout.gqa) {
    cbatch[layout.nb - 1] = layout.hkv;
    cbatch.insert(cbatch.begin() + layout.nb, layout.group);
  }
  BatchLayoutBuilder builder(cbatch);
  auto keep = [&](py::array a) {
    call->keep.push_back(a);
    return a;
  };
  add_operand(builder, cbatch, keep(layout(q, 2, HeadLayout::query)), qn, 2, q_view);
  add_operand(builder, cbatch, keep(layout(k, 2, HeadLayout::kv)), kn, 2, k_view);
  add_operand(builder, cbatch, keep(layout(v, 2, HeadLayout::kv)), vn, 2, &p.v);
  add_operand(builder, cbatch, keep(layout(py::reinterpret_borrow<py::array>(call->target), 2, HeadLayout::batched)),
              "out", 2, &p.out, true);
  if (o.want_weights)
    add_operand(builder, cbatch, keep(layout(py::reinterpret_borrow<py::array>(call->weights), 2, HeadLayout::batched)),
                "weights", 2, &p.weights, true);
  if (o.want_lse)
    add_operand(builder, cbatch, keep(layout(py::reinterpret_borrow<py::array>(call->lse), 1, HeadLayout::batched)),
                "lse", 1, &p.lse, true);
  if (!mask.is_none()) {
    const auto m = py::reinterpret_borrow<py::array>(mask);
    p.mask_kind = has_dtype<bool>(m) ? MaskKind::boolean : MaskKind::additive;
    add_operand(builder, cbatch, keep(layout(m, 2, HeadLayout::batched)), "attn_mask", 2, &p.mask);
  }
  if (!lengths.is_none())
    add_operand(builder, cbatch, keep(layout(py::reinterpret_borrow<py::array>(lengths), 0, HeadLayout::batched)),
                "kv_lengths", 0, &p.vis.lengths);
  for (const ScoreArray& x : score_arrays)
    add_operand(builder, cbatch, keep(layout(x.array, 0, HeadLayout::batched)), x.option->name, 0,
                &(p.variants.*(x.option->per_head)));
  std::vector<const StridedArray*> shared = {k_view, &p.v};
  for (const KvExtra& x : ops.kv_extra) {
    add_operand(builder, cbatch, keep(layout(x.array, 2, HeadLayout::kv)), x.name, 2, x.view);
    shared.push_back(x.view);
  }
  // K/V (and what is laid out like them, and lengths) broadcast over
  // grouped-query heads or any batch dim are folded into the query rows.
  if (p.vis.lengths.data) shared.push_back(&p.vis.lengths);
  p.fold = builder.fold_shared(shared);
  if (!builder.finish(&p.batch)) throw py::value_error("too many non-mergeable batch dimensions");
}

void register_call_args(py::module_& m) {
  py::dict causal, storage;
  causal["none"] = static_cast<int>(Causal::none);
  causal["upper_left"] = static_cast<int>(Causal::upper_left);
  causal["lower_right"] = static_cast<int>(Causal::lower_right);
  storage["float32"] = static_cast<int>(DType::f32);
  storage["float64"] = static_cast<int>(DType::f64);
  storage["bfloat16"] = static_cast<int>(DType::bf16);
  storage["float16"] = static_cast<int>(DType::f16);
  storage["int8"] = static_cast<int>(DType::i8);
  m.attr("CAUSAL") = causal;
  m.attr("STORAGE") = storage;
  m.attr("FLOAT_DTYPE_NAMES") = kFloatNames;
  m.def("as_array", [](py::handle x, const std::string& name) { return as_array(x, name.c_str()); },
        py::arg("x"), py::arg("name"), "x as an array (np.asarray), else a TypeError naming it.");
  m.def("is_float_dtype", [](const py::dtype& dt) { return float_kind(dt) != DType::i8; }, py::arg("dtype"),
        "Whether dtype is one of the input float types (float16, bfloat16, float32, float64).");
  m.def("kernel_ready", &kernel_ready, py::arg("a"),
        "a with a unit-stride last dimension and whole-item strides (a copy only if needed).");
  m.def("compute_dtype", [](const py::dtype& dt) { return compute_dtype(dt); }, py::arg("dtype"),
        "The dtype inputs of dtype are computed in: float64 for float64, else float32.");
  m.def("check_float_inputs", [](const py::sequence& names, const py::tuple& arrays) {
    std::vector<std::pair<const char*, py::array>> named;
    const size_t n = arrays.size();
    py::tuple out(n);
    for (size_t i = 0; i < n; ++i) {
      const char* name = PyUnicode_AsUTF8(names[i].ptr());  // (valid while `names` lives)
      if (!name) throw py::error_already_set();
      named.push_back({name, as_array(arrays[i], name)});
      out[i] = named.back().second;
    }
    const py::dtype dt = check_float_inputs(named);
    return py::make_tuple(out, dt);
  }, py::arg("names"), py::arg("arrays"),
        "The arrays (np.asarray'd), each of one float dtype, 2-D or more, all of one dtype: (arrays, dtype).");
  register_score_args(m);
  m.def("per_head", [](py::handle x, const std::string& name, const std::vector<py::ssize_t>& batch,
                       const py::dtype& dtype) {
    const ScoreOption* option = score_option(name);
    if (!option || option->kind != ScoreOptionKind::per_head)
      throw py::value_error(name + " is not a per-head score option");
    return per_head(x, *option, batch, dtype);
  }, py::arg("x"), py::arg("name"), py::arg("batch"), py::arg("dtype"),
        "A per-head score option (alibi_slopes, sinks): one value per query head broadcasting to batch, "
        "in dtype, checked.");
  m.def("check_out", [](py::handle out, const std::vector<py::ssize_t>& shape, const py::dtype& dtype,
                        const py::list& inputs) {
    std::vector<std::string> names;
    std::vector<std::pair<const char*, py::handle>> named;
    names.reserve(inputs.size());
    for (const py::handle& pair : inputs) names.push_back(pair.cast<py::tuple>()[0].cast<std::string>());
    for (size_t i = 0; i < names.size(); ++i) named.push_back({names[i].c_str(), inputs[i].cast<py::tuple>()[1]});
    return check_out(out, shape, dtype, named);
  }, py::arg("out"), py::arg("shape"), py::arg("dtype"), py::arg("inputs"),
        "out checked for a result of shape and dtype, against [(name, array), ...] inputs.");
  m.def("call_shape", [](const py::tuple& qkv, bool gqa) {
    CallOperands ops(as_array(qkv[0], "query"), as_array(qkv[1], "key"), as_array(qkv[2], "value"));
    const CallShape sh = call_shape(ops, gqa);
    return py::make_tuple(py::tuple(py::cast(sh.batch)), sh.L, sh.S, sh.E, sh.Ev);
  }, py::arg("qkv"), py::arg("enable_gqa"),
        "(batch, L, S, E, Ev) of a call on (query, key, value) (2-D or more), or the named ValueError.");
  m.def("check_result_sizes", [](const py::tuple& qkv, bool gqa, bool want_weights, bool want_lse,
                                 const py::dtype& result_dtype) {
    CallOperands ops(as_array(qkv[0], "query"), as_array(qkv[1], "key"), as_array(qkv[2], "value"));
    std::vector<py::ssize_t> full, out_shape, lse_shape;
    result_shapes(call_shape(ops, gqa, /*same_features=*/false), want_weights, want_lse, result_dtype,
                  compute_dtype(result_dtype), &full, &out_shape, &lse_shape);
  }, py::arg("qkv"), py::arg("enable_gqa"), py::arg("want_weights"), py::arg("want_lse"), py::arg("result_dtype"),
        "The shape rules of a call whose query and key features may differ (additive attention, before "
        "its projections), and its result sizes: ValueError naming what is wrong or too large.");
  m.def("scale_or_default", [](py::handle scale, int64_t E) { return scale_or_default(scale, E); },
        py::arg("scale"), py::arg("E"), "scale (a float) checked, or 1/sqrt(E) (1 for E = 0) for None.");
  m.def("check_size", [](const std::vector<py::ssize_t>& shape, int64_t item, const std::string& name) {
    check_size(shape, item, name.c_str());
  }, py::arg("shape"), py::arg("itemsize"), py::arg("name"),
        "ValueError unless an array of shape and itemsize can be addressed.");
}

}  // namespace pyattn::bindings
