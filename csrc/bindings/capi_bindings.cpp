// pyattn._core._C_API: the C API's function table in a PyCapsule, which
// pyattn_import_capi() (pyattn/include/pyattn_capi.h) fetches by name.
#include <pybind11/pybind11.h>

#include "../capi/sdpa_capi.h"
#include "bindings.h"

namespace pyattn::bindings {

namespace py = pybind11;

void register_capi(py::module_& m) {
  // The capsule's name must be the attribute's full dotted path (PyCapsule_Import checks it).
  m.attr("_C_API") = py::capsule(const_cast<pyattn_capi_table*>(capi::table()), "pyattn._core._C_API");
  m.attr("CAPI_VERSION") = PYATTN_CAPI_VERSION;
}

}  // namespace pyattn::bindings
