#pragma once
#include <pybind11/pybind11.h>

namespace pyattn::bindings {
void register_sdpa(pybind11::module_& m);
void register_additive(pybind11::module_& m);
void register_varlen(pybind11::module_& m);
void register_config(pybind11::module_& m);
void register_capi(pybind11::module_& m);
}  // namespace pyattn::bindings
