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
#include <type_traits>

#include "pyattn/attention_params.h"
#include "pyattn/half.h"
#include "pyattn/additive.h"
#include "pyattn/projection.h"
#include "pyattn/sdpa.h"
#include "../dispatch/kernel_table.h"
#include "../kernels/core_limits.h"
#include "../kernels/kernel_switch.h"
#include "../kernels/row_finish.h"
#include "../kernels/tiling.h"
#include "../kernels/work_items.h"

// The parts of the attention loop (csrc/kernels/) are functions and structs
// of their own that must compile to the same code as if written inline in
// the loop: their per-item and per-strip steps are forced inline.
#define PYATTN_INLINE inline __attribute__((always_inline))
// Steps run once per key block or per item that stay calls (keeping the
// loop's code small).
#define PYATTN_OUTLINE __attribute__((noinline))

// Compile what follows for one ISA (a comma-separated GCC/clang target list),
// up to PYATTN_TARGET_END.
#define PYATTN_PRAGMA(x) _Pragma(#x)
#if defined(__clang__)
#define PYATTN_TARGET_BEGIN(isa) \
  PYATTN_PRAGMA(clang attribute push(__attribute__((target(isa))), apply_to = function))
#define PYATTN_TARGET_END PYATTN_PRAGMA(clang attribute pop)
#elif defined(__GNUC__)
#define PYATTN_TARGET_BEGIN(isa) PYATTN_PRAGMA(GCC push_options) PYATTN_PRAGMA(GCC target(isa))
#define PYATTN_TARGET_END PYATTN_PRAGMA(GCC pop_options)
#endif

// Defines <isa>::kernel_table() from the entry points that
// target_kernels-inl.h defined in the same namespace. Use it OUTSIDE the
// target region: the dispatcher calls it on any CPU.
#define PYATTN_DEFINE_KERNEL_TABLE(name)                                       \
  const KernelTable& kernel_table() {                                          \
    static constexpr KernelTable table = {                                     \
        name, {&sdpa_f32, &sdpa_f64, &sdpa_bf16, &sdpa_f16},                   \
        {nullptr, nullptr, &sdpa_f32q_bf16, &sdpa_f32q_f16, &sdpa_f32q_i8},   \
        {&additive_f32, &additive_f64},                                        \
        {&project_f32, &project_f64},                                          \
        {&vec_math_f32, &vec_math_f64},                                        \
        &read_lines};                                                          \
    return table;                                                              \
  }
