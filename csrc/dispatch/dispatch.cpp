// Run-time CPU dispatch: detect the CPU once (cpuid through the compiler's
// __builtin_cpu_supports, which also checks that the OS saves the wide
// registers), pick the best compiled target, honour PYATTN_ISA.
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <stdexcept>

#include "kernel_table.h"

namespace pyattn {
namespace {

struct Target {
  const char* name;
  const KernelTable& (*table)();
  bool (*cpu_has)();
};

bool always() { return true; }

#if PYATTN_HAVE_X86_TARGETS
bool cpu_has_avx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("f16c");
}
bool cpu_has_avx512() {
  return cpu_has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
}
#endif

// Lowest first; the best supported one is the default.
const Target kTargets[] = {
    {"generic", &generic::kernel_table, &always},
#if PYATTN_HAVE_X86_TARGETS
    {"avx2", &avx2::kernel_table, &cpu_has_avx2},
    {"avx512", &avx512::kernel_table, &cpu_has_avx512},
#endif
};
constexpr int kNumTargets = sizeof(kTargets) / sizeof(kTargets[0]);

struct State {
  std::atomic<const KernelTable*> active{nullptr};
  const KernelTable* best = nullptr;
  DispatchInfo info;
};

State& state() {
  static State s;
  static std::once_flag once;
  std::call_once(once, [] {
    DispatchInfo& info = s.info;
    int best = 0;
    for (int i = 0; i < kNumTargets; ++i) {
      info.compiled.push_back(kTargets[i].name);
      if (kTargets[i].cpu_has()) {
        info.supported.push_back(kTargets[i].name);
        best = i;
      }
    }
    s.best = &kTargets[best].table();
    int chosen = best;
    if (const char* env = std::getenv("PYATTN_ISA"); env && *env) {
      info.requested = env;
      int found = -1;
      for (int i = 0; i < kNumTargets; ++i)
        if (info.requested == kTargets[i].name) found = i;
      if (found < 0) {
        info.warning = "PYATTN_ISA=" + info.requested +
                       " is not an ISA pyattn was compiled with; using " + kTargets[best].name;
      } else if (!kTargets[found].cpu_has()) {
        info.warning = "PYATTN_ISA=" + info.requested +
                       " is not supported by this CPU; using " + kTargets[best].name;
      } else {
        chosen = found;
      }
    }
    info.selected = kTargets[chosen].name;
    s.active.store(&kTargets[chosen].table());
  });
  return s;
}

}  // namespace

const KernelTable& active_kernels() { return *state().active.load(std::memory_order_acquire); }

const KernelTable& best_supported_kernels() { return *state().best; }

DispatchInfo dispatch_info() {
  DispatchInfo info = state().info;
  info.selected = active_kernels().isa;
  return info;
}

std::string set_isa(const std::string& name) {
  State& s = state();
  for (int i = 0; i < kNumTargets; ++i) {
    if (name != kTargets[i].name) continue;
    if (!kTargets[i].cpu_has())
      throw std::invalid_argument("ISA '" + name + "' is not supported by this CPU");
    std::string prev = s.active.load()->isa;
    s.active.store(&kTargets[i].table(), std::memory_order_release);
    return prev;
  }
  throw std::invalid_argument("ISA '" + name + "' is not compiled into pyattn");
}

}  // namespace pyattn
