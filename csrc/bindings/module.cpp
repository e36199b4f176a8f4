// The private extension module pyattn._core.
#include <pybind11/pybind11.h>

#include "bindings.h"
#include "pyattn/threads.h"

PYBIND11_MODULE(_core, m) {
  m.doc() = "pyattn's compiled core (private: use the pyattn package)";
  pyattn::install_fork_handler();  // before any fork a user may do after importing pyattn
  pyattn::bindings::register_sdpa(m);
  pyattn::bindings::register_additive(m);
  pyattn::bindings::register_varlen(m);
  pyattn::bindings::register_config(m);
  pyattn::bindings::register_capi(m);
}
