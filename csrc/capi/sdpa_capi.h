// The C API's implementation inside pyattn._core (the public declarations
// are pyattn/include/pyattn_capi.h, shipped with the package).
#pragma once

#define PYATTN_CAPI_IMPLEMENTATION  // the core: no import helper, no table pointer
#include "pyattn_capi.h"

namespace pyattn::capi {

// pyattn_capi_table.sdpa: checks the caller's params, translates them into
// SdpaParams and runs the core. Never throws.
int sdpa(const pyattn_sdpa_params* params, pyattn_error* err);

// The table exported in the capsule pyattn._core._C_API (static storage).
const pyattn_capi_table* table();

}  // namespace pyattn::capi
