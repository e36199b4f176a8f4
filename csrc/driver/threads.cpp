#include "pyattn/threads.h"

#include <atomic>
#include <mutex>
#include <string>

#if defined(__unix__) || defined(__APPLE__)
#include <dlfcn.h>
#include <pthread.h>
#endif

#ifdef _OPENMP
#include <omp.h>
#endif

namespace pyattn {
namespace {
std::atomic<int> g_num_threads{0};  // 0: follow OpenMP's default
std::atomic<bool> g_went_parallel{false};
std::atomic<bool> g_forked_after_parallel{false};

// Runs in the child of a fork(); the child's memory is a copy of the parent's,
// so g_went_parallel says whether the parent had entered a parallel region.
void on_fork_child() {
  if (g_went_parallel.load()) g_forked_after_parallel.store(true);
}
}  // namespace

void install_fork_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
#if defined(__unix__) || defined(__APPLE__)
    pthread_atfork(nullptr, nullptr, &on_fork_child);
#endif
  });
}

void before_parallel_region() {
  if (!g_went_parallel.load(std::memory_order_relaxed)) g_went_parallel.store(true);
}

bool parallel_regions_usable() { return !g_forked_after_parallel.load(); }

int max_team_size() {
#ifdef _OPENMP
  // More threads than this only contend for the cores; far more (millions)
  // would make the OpenMP runtime abort the process when it cannot create them.
  static const int cap = [] {
    const int procs = omp_get_num_procs() > 0 ? omp_get_num_procs() : 1;
    int n = procs > kMinTeamCap / 4 ? procs * 4 : kMinTeamCap;
    const int limit = omp_get_thread_limit();
    if (limit > 0 && limit < n) n = limit;
    return n;
  }();
  return cap;
#else
  return 1;
#endif
}

int default_num_threads() {
  const int n = g_num_threads.load(std::memory_order_relaxed);
  if (n > 0) return n;
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

void set_num_threads(int n) { g_num_threads.store(n, std::memory_order_relaxed); }

bool num_threads_set() { return g_num_threads.load(std::memory_order_relaxed) > 0; }

bool openmp_enabled() {
#ifdef _OPENMP
  return true;
#else
  return false;
#endif
}

const char* openmp_description() {
#ifdef _OPENMP
#define PYATTN_STR2(x) #x
#define PYATTN_STR(x) PYATTN_STR2(x)
  // The runtime library that provides OpenMP here (libgomp, libomp, ...).
  static const std::string desc = [] {
    std::string lib = "OpenMP runtime";
#if defined(__unix__) || defined(__APPLE__)
    Dl_info info;
    if (dladdr(reinterpret_cast<void*>(&omp_get_max_threads), &info) && info.dli_fname) {
      lib = info.dli_fname;
      const size_t slash = lib.rfind('/');
      if (slash != std::string::npos) lib = lib.substr(slash + 1);
    }
#endif
    return lib + " (OpenMP " PYATTN_STR(_OPENMP) ")";
  }();
  return desc.c_str();
#else
  return "none (built without OpenMP: single-threaded)";
#endif
}

}  // namespace pyattn
