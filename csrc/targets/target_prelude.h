// Everything a target translation unit includes BEFORE it switches the
// compiler to its ISA. Standard headers must come first: a header parsed
// after `#pragma GCC target` would give its inline functions the wider ISA,
// and the linker could then pick those copies for baseline code (SIGILL on an
// older CPU). The kernel -inl.h files include nothing themselves.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "pyattn/attention_params.h"
#include "pyattn/additive.h"
#include "pyattn/sdpa.h"
#include "../dispatch/kernel_table.h"
#include "../kernels/tiling.h"
