// The score options of a call, read from their table (see score_args.h).
#include "score_args.h"

#include "call_args.h"

namespace pyattn::bindings {

namespace {

const char* kind_name(ScoreOptionKind kind) { return kind == ScoreOptionKind::scalar ? "scalar" : "per_head"; }

// "softcap, alibi_slopes, sinks": the keywords of the table.
std::string option_names() {
  std::string r;
  for (const ScoreOption& o : kScoreOptions) r += (r.empty() ? "" : ", ") + std::string(o.name);
  return r;
}

// A scalar option's value: a real number (pyattn/_args.py's rule for
// numbers: not a bool), as a double, passing the row's rule.
double scalar_value(py::handle x, const ScoreOption& option, const py::dtype& cdt) {
  double c;
  if (PyFloat_CheckExact(x.ptr())) {  // (the common case, checked quickly)
    c = PyFloat_AS_DOUBLE(x.ptr());
  } else {
    static const py::object* real = new py::object(py::module_::import("numbers").attr("Real"));
    static const py::object* np_bool = new py::object(py::module_::import("numpy").attr("bool_"));
    if (PyBool_Check(x.ptr()) || py::isinstance(x, *np_bool) || !py::isinstance(x, *real))
      throw py::type_error(std::string(option.name) + " must be a real number or None, got " +
                           py::str(py::type::handle_of(x).attr("__name__")).cast<std::string>());
    c = x.cast<double>();
  }
  if (!option.ok(c)) throw score_value_error(option, x, cdt);
  return c;
}

constexpr size_t kOptionCount = sizeof(kScoreOptions) / sizeof(kScoreOptions[0]);

// The keywords as interned Python strings, made once (and never freed: they
// must outlive the interpreter's teardown order): a dict lookup by them
// compares pointers and reuses their hash.
PyObject* const* option_keys() {
  static PyObject* const* keys = [] {
    PyObject** k = new PyObject*[kOptionCount];
    for (size_t i = 0; i < kOptionCount; ++i) {
      k[i] = PyUnicode_InternFromString(kScoreOptions[i].name);
      if (!k[i]) throw py::error_already_set();
    }
    return k;
  }();
  return keys;
}

}  // namespace

const ScoreOption* score_option(const std::string& name) {
  for (const ScoreOption& o : kScoreOptions)
    if (name == o.name) return &o;
  return nullptr;
}

py::value_error score_value_error(const ScoreOption& option, py::handle shown, const py::dtype& dtype) {
  std::string must = option.must;
  const std::string mark = "{dtype}";
  const size_t at = must.find(mark);
  if (at != std::string::npos) must.replace(at, mark.size(), py::str(dtype).cast<std::string>());
  return py::value_error(std::string(option.name) + " " + must + ", got " + py::repr(shown).cast<std::string>());
}

void read_score_options(py::handle options, const std::vector<py::ssize_t>& batch, const py::dtype& cdt,
                        ScoreVariants* v, std::vector<ScoreArray>* arrays) {
  if (options.is_none()) return;
  PyObject* d = options.ptr();
  if (!PyDict_Check(d))
    throw py::type_error("the score options must be a dict or None, got " +
                         py::str(py::type::handle_of(options).attr("__name__")).cast<std::string>());
  PyObject* const* keys = option_keys();
  Py_ssize_t found = 0;
  for (size_t i = 0; i < kOptionCount; ++i) {
    const ScoreOption& o = kScoreOptions[i];
    PyObject* x = PyDict_GetItemWithError(d, keys[i]);  // (borrowed; NULL: not given)
    if (!x) {
      if (PyErr_Occurred()) throw py::error_already_set();
      continue;
    }
    ++found;
    if (x == Py_None) continue;
    if (o.kind == ScoreOptionKind::scalar) {
      v->*o.scalar = scalar_value(x, o, cdt);
    } else {
      arrays->push_back(ScoreArray{&o, x, per_head(x, o, batch, cdt)});
    }
  }
  if (found == PyDict_Size(d)) return;
  for (const auto& item : py::reinterpret_borrow<py::dict>(options)) {
    const bool known = py::isinstance<py::str>(item.first) && score_option(item.first.cast<std::string>());
    if (!known)
      throw py::type_error("unknown score option " + py::repr(item.first).cast<std::string>() +
                           " (the score options are " + option_names() + ")");
  }
}

void register_score_args(py::module_& m) {
  py::dict options;
  for (const ScoreOption& o : kScoreOptions) options[o.name] = kind_name(o.kind);
  m.attr("SCORE_OPTIONS") = options;
}

}  // namespace pyattn::bindings
