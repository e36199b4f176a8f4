// Threads, dispatch and build information for pyattn.get_config(); the kept
// weights memory (weights_memory.h) for the Python path and tests.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "../dispatch/kernel_table.h"
#include "../driver/read_bandwidth.h"
#include "../kernels/tiling.h"
#include "array_view.h"
#include "bindings.h"
#include "pyattn/threads.h"
#include "weights_memory.h"

namespace pyattn::bindings {

namespace py = pybind11;

namespace {

std::string compiler() {
#if defined(__clang__)
  return std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  return "gcc " + std::to_string(__GNUC__) + "." + std::to_string(__GNUC_MINOR__) + "." +
         std::to_string(__GNUC_PATCHLEVEL__);
#else
  return "unknown";
#endif
}

}  // namespace

void register_config(py::module_& m) {
  m.def("get_num_threads", &default_num_threads);
  m.def("set_num_threads", [](int n) {
    if (n < 1) throw py::value_error("num_threads must be >= 1");
    set_num_threads(n);
  });
  // Testing hooks: whether set_num_threads was called; back to following OpenMP.
  m.def("num_threads_set", &num_threads_set);
  m.def("reset_num_threads", [] { set_num_threads(0); });
  m.def("set_thread_wait", [](const std::string& policy) {
    if (policy == "auto") set_thread_wait(ThreadWait::automatic);
    else if (policy == "passive") set_thread_wait(ThreadWait::passive);
    else if (policy == "active") set_thread_wait(ThreadWait::active);
    else throw py::value_error("thread wait policy must be 'auto', 'passive' or 'active', got '" + policy + "'");
  });
  m.def("thread_wait_info", [] {
    static const char* names[] = {"auto", "passive", "active"};
    py::dict r;
    r["setting"] = names[static_cast<int>(thread_wait())];
    r["passive"] = thread_wait_is_passive();
    r["private_runtime"] = openmp_runtime_private();
    return r;
  });
  m.def("openmp_runtimes_loaded", [] {
    py::list r;
    for (const std::string& path : openmp_runtimes_loaded()) r.append(path);
    return r;
  }, "The paths of the OpenMP runtime libraries loaded in this process now.");
  m.def("dispatch_info", [] {
    const DispatchInfo d = dispatch_info();
    py::dict r;
    r["compiled"] = d.compiled;
    r["supported"] = d.supported;
    r["selected"] = d.selected;
    r["requested"] = d.requested;
    r["warning"] = d.warning;
    return r;
  });
  m.def("_set_weights_scratch_limit", &set_weights_scratch_limit,
        "Testing hook: per-thread bytes a row group's probabilities may take in scratch "
        "when weights are asked for (0: always in the weights array); returns the previous limit.");
  m.def("_key_splits",
        [](int64_t batch_count, int64_t rows, int64_t S, int64_t E, int64_t Ev, int itemsize) {
          Tiling t;
          if (!make_sdpa_tiling(batch_count, rows, S, E, Ev, static_cast<size_t>(itemsize), false, false, 1, &t))
            throw py::value_error("no tiling for these sizes");
          return t.num_splits;
        },
        "Testing hook: the number of key splits (split-KV) the tiling gives a call of "
        "batch_count (folded) batch elements of `rows` query rows each, without weights.");
  m.def("_new_weights_array",
        [](const py::dtype& dtype, const std::vector<py::ssize_t>& shape, bool keep_when_freed) {
          if (!(same_dtype(dtype, py::dtype::of<float>()) || same_dtype(dtype, py::dtype::of<double>())))
            throw py::type_error("_new_weights_array: dtype must be float32 or float64");
          if (!addressable(shape, dtype.itemsize())) throw py::value_error("_new_weights_array: bad shape");
          return new_weights_array(dtype, shape, keep_when_freed).array;
        },
        py::arg("dtype"), py::arg("shape"), py::arg("keep_when_freed"),
        "An uninitialised C-contiguous array for a weights result (the kept buffer when it fits; "
        "see csrc/bindings/weights_memory.h).");
  m.def("release_kept_weights", &release_kept_weights, "Frees the kept weights buffer, if any.");
  m.def("_kept_weights_bytes", &kept_weights_bytes, "Testing hook: bytes of the kept weights buffer.");
  m.def("set_isa", [](const std::string& name) {
    try {
      return set_isa(name);
    } catch (const std::invalid_argument& e) {
      throw py::value_error(e.what());
    }
  }, "Testing hook: switch the process to another compiled, supported ISA; returns the previous one.");
  m.def("_vec_math", [](const std::string& name, py::array x) {
    VecMathFn fn;
    if (name == "exp") fn = VecMathFn::exp;
    else if (name == "exp2") fn = VecMathFn::exp2;
    else if (name == "tanh") fn = VecMathFn::tanh;
    else throw py::value_error("name must be 'exp', 'exp2' or 'tanh'");
    const bool f32 = x.dtype().equal(py::dtype::of<float>());
    if (!f32 && !x.dtype().equal(py::dtype::of<double>()))
      throw py::type_error("x must be float32 or float64");
    if (x.ndim() != 1 || !(x.flags() & py::array::c_style))
      throw py::value_error("x must be a contiguous 1-D array");
    py::array y = py::module_::import("numpy").attr("empty_like")(x);
    active_kernels().vec_math[f32 ? 0 : 1](fn, x.data(), y.mutable_data(), x.shape(0));
    return y;
  }, "Testing hook: the active ISA's vectorised exp, exp2 or tanh over a 1-D array.");
  m.def("_stream_read", [](const py::array& a, int num_threads) {
    if (num_threads < 1) throw py::value_error("num_threads must be >= 1");
    if (!(a.flags() & py::array::c_style)) throw py::value_error("buffer must be a C-contiguous array");
    const int64_t bytes = static_cast<int64_t>(a.nbytes());
    const void* data = a.data();
    py::gil_scoped_release release;
    return stream_read(data, bytes, num_threads);
  }, py::arg("buffer"), py::arg("num_threads"),
     "Benchmark hook: reads a contiguous buffer once with num_threads threads (the read-bandwidth "
     "roof of pyattn-bench, with the loads of the best ISA the CPU supports); returns the XOR of "
     "the 8-byte words of its whole 64-byte lines.");
  m.def("build_info", [] {
    py::dict r;
    r["compiler"] = compiler();
    r["openmp"] = openmp_enabled() ? py::object(py::str(openmp_description())) : py::object(py::none());
    return r;
  });
}

}  // namespace pyattn::bindings
