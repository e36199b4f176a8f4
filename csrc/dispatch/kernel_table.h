// The function table each ISA target provides, and the dispatcher that picks
// one. SIMD-free; shared by the driver, the targets and the bindings.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "pyattn/additive.h"
#include "pyattn/projection.h"
#include "pyattn/sdpa.h"
#include "../kernels/tiling.h"
#include "../kernels/work_items.h"

namespace pyattn {

// A kernel runs the work items it takes from `work` with one thread's scratch.
using SdpaKernelFn = void (*)(const SdpaParams&, const Tiling&, WorkItems& work, void* scratch);
using AdditiveKernelFn = void (*)(const AdditiveParams&, const Tiling&, WorkItems& work,
                                  void* scratch);
// Runs projection work items (pyattn/projection.h); scratch: D x kProjectChunk
// + kProjectRows x kProjectChunk elements.
using ProjectKernelFn = void (*)(const ProjectParams&, WorkItems& work, void* scratch);
// XOR of the 8-byte words of 64-byte lines [begin, end) of data: one thread's
// share of the streaming read that measures the memory roof.
using ReadLinesFn = uint64_t (*)(const void* data, int64_t begin, int64_t end);

// Testing hook: y[i] = f(x[i]) for i < n with the ISA's vectorised function
// `fn` (see VecMathFn in vec_math-inl.h); x, y float (f32) or double (f64).
enum class VecMathFn : int { exp = 0, tanh = 1, exp2 = 2 };
using VecMathKernelFn = void (*)(VecMathFn fn, const void* x, void* y, int64_t n);

struct KernelTable {
  const char* isa;          // "generic", "avx2", ...
  SdpaKernelFn sdpa[4];     // indexed by the storage DType of q/k/v
  SdpaKernelFn sdpa_float_query[5];  // float32 q, k/v stored as the index DType
                                     // (bf16, f16, i8; null for f32 / f64)
  AdditiveKernelFn additive[2];
  ProjectKernelFn project[2];   // f32, f64
  VecMathKernelFn vec_math[2];  // f32, f64
  ReadLinesFn read_lines;
};

// One per target translation unit (csrc/targets/<isa>.cpp).
namespace generic { const KernelTable& kernel_table(); }
#if PYATTN_HAVE_X86_TARGETS
namespace avx2 { const KernelTable& kernel_table(); }
namespace avx512 { const KernelTable& kernel_table(); }
#endif

struct DispatchInfo {
  std::vector<std::string> compiled;   // lowest first
  std::vector<std::string> supported;  // by this CPU, among compiled
  std::string selected;
  std::string requested;               // PYATTN_ISA, "" if unset
  std::string warning;                 // non-empty if the request was refused
};

// The table of the selected ISA: chosen at first use (best supported, or
// PYATTN_ISA), then fixed unless set_isa() is called.
const KernelTable& active_kernels();
// The table of the best ISA this CPU supports, whatever PYATTN_ISA selects:
// for measurements of the machine itself (the read roof).
const KernelTable& best_supported_kernels();
DispatchInfo dispatch_info();
// Testing hook: selects a compiled, supported ISA by name; returns the name
// of the previous one. Throws std::invalid_argument otherwise.
std::string set_isa(const std::string& name);

}  // namespace pyattn
