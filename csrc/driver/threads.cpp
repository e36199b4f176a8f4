#include "pyattn/threads.h"

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <dlfcn.h>
#include <pthread.h>
#endif
#if defined(__linux__) || defined(__FreeBSD__)
#include <link.h>
#elif defined(__APPLE__)
#include <mach-o/dyld.h>
#endif

#ifdef _OPENMP
#include <omp.h>
#endif

// omp_pause_resource_all (OpenMP 5.0): GCC >= 9 and clang >= 8 declare it
// while still reporting an older _OPENMP.
#if defined(_OPENMP) && (_OPENMP >= 201811 || (defined(__clang__) && __clang_major__ >= 8) || \
                         (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 9))
#define PYATTN_CAN_RELEASE_POOL 1
#else
#define PYATTN_CAN_RELEASE_POOL 0
#endif

namespace pyattn {
namespace {
std::atomic<int> g_num_threads{0};  // 0: follow OpenMP's default
std::atomic<bool> g_went_parallel{false};
std::atomic<bool> g_forked_after_parallel{false};
std::atomic<int> g_thread_wait{static_cast<int>(ThreadWait::automatic)};

#ifdef _OPENMP
// The file name of the loaded OpenMP runtime ("" if unknown).
std::string openmp_runtime_file() {
#if defined(__unix__) || defined(__APPLE__)
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&omp_get_max_threads), &info) && info.dli_fname) {
    std::string lib = info.dli_fname;
    const size_t slash = lib.rfind('/');
    return slash == std::string::npos ? lib : lib.substr(slash + 1);
  }
#endif
  return "";
}
#endif

#if defined(__linux__) || defined(__FreeBSD__) || defined(__APPLE__)
// Whether a shared object's file name is that of an OpenMP runtime (GNU,
// LLVM or Intel, plain or renamed by auditwheel/delocate).
bool is_openmp_runtime_file(const std::string& path) {
  const size_t slash = path.rfind('/');
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  for (const char* prefix : {"libgomp.", "libgomp-", "libomp.", "libomp-", "libiomp5.", "libiomp5-", "libiomp5md."})
    if (base.rfind(prefix, 0) == 0) return true;
  return false;
}
#endif

#if defined(__linux__) || defined(__FreeBSD__)
int collect_openmp_runtime(struct dl_phdr_info* info, size_t, void* data) {
  if (info->dlpi_name && is_openmp_runtime_file(info->dlpi_name))
    static_cast<std::vector<std::string>*>(data)->push_back(info->dlpi_name);
  return 0;
}
#endif

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

void set_thread_wait(ThreadWait w) { g_thread_wait.store(static_cast<int>(w)); }

ThreadWait thread_wait() { return static_cast<ThreadWait>(g_thread_wait.load(std::memory_order_relaxed)); }

bool openmp_runtime_private() {
#ifdef _OPENMP
  // auditwheel / delocate rename a bundled runtime to <name>-<hash>.<ext>.
  static const bool renamed = [] {
    const std::string f = openmp_runtime_file();
    for (const char* base : {"libgomp-", "libomp-", "libiomp5-"})
      if (f.rfind(base, 0) == 0) return true;
    return false;
  }();
  return renamed;
#else
  return false;
#endif
}

std::vector<std::string> openmp_runtimes_loaded() {
  std::vector<std::string> found;
#if defined(__linux__) || defined(__FreeBSD__)
  dl_iterate_phdr(&collect_openmp_runtime, &found);
#elif defined(__APPLE__)
  for (uint32_t i = 0, n = _dyld_image_count(); i < n; ++i) {
    const char* name = _dyld_get_image_name(i);
    if (name && is_openmp_runtime_file(name)) found.push_back(name);
  }
#endif
  return found;
}

bool thread_wait_is_passive() {
  if (!PYATTN_CAN_RELEASE_POOL) return false;
  const ThreadWait w = thread_wait();
  return w == ThreadWait::passive || (w == ThreadWait::automatic && openmp_runtime_private());
}

void after_parallel_region() {
#if PYATTN_CAN_RELEASE_POOL
  if (thread_wait_is_passive()) omp_pause_resource_all(omp_pause_soft);
#endif
}

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
    std::string lib = openmp_runtime_file();
    if (lib.empty()) lib = "OpenMP runtime";
    return lib + " (OpenMP " PYATTN_STR(_OPENMP) ")";
  }();
  return desc.c_str();
#else
  return "none (built without OpenMP: single-threaded)";
#endif
}

}  // namespace pyattn
