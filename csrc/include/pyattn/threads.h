// The thread-count setting shared by every op.
#pragma once

#include <string>
#include <vector>

namespace pyattn {

// Threads a call uses when it does not ask for a number itself: the value
// given to set_num_threads, else OpenMP's current default (which honours
// OMP_NUM_THREADS and omp_set_num_threads, hence threadpoolctl).
int default_num_threads();
void set_num_threads(int n);     // n >= 1; 0: follow OpenMP again
bool num_threads_set();
bool openmp_enabled();

// The most threads one call starts, whatever num_threads asks for: 4 per
// processor (at least kMinTeamCap), and no more than OMP_THREAD_LIMIT.
// Results do not depend on the thread count, so the cap never changes one.
constexpr int kMinTeamCap = 32;
int max_team_size();

// GNU OpenMP's thread pool does not survive fork(): a forked child that
// enters a parallel region after the parent used one hangs. The module
// installs a fork handler when it is imported (install_fork_handler); the
// driver calls before_parallel_region() before each region and runs
// single-threaded when parallel_regions_usable() is false, i.e. in a child
// forked after the parent went parallel.
void install_fork_handler();
void before_parallel_region();
bool parallel_regions_usable();
const char* openmp_description();

// What the OpenMP threads a call started do once it returns.
//   active:  stay in the OpenMP runtime's pool, which spins idle threads for
//            a while (GOMP_SPINCOUNT / OMP_WAIT_POLICY) before they sleep:
//            the next call starts fastest, but until they sleep they take
//            CPU time from whatever the process runs next;
//   passive: the calling thread's pool is released after every
//            multi-threaded call (omp_pause_resource_all), so nothing of
//            pyattn's runs between calls; each call starts its threads anew;
//   automatic: passive when pyattn's OpenMP runtime is a private copy (a
//            wheel's renamed libgomp-<hash>.so), whose pool nothing else in
//            the process reuses; active when it is the shared runtime
//            (libgomp.so.1), whose pool torch's OpenMP regions reuse too --
//            releasing it would make them start their threads anew.
enum class ThreadWait { automatic = 0, passive = 1, active = 2 };
void set_thread_wait(ThreadWait w);
ThreadWait thread_wait();
bool thread_wait_is_passive();       // the policy in effect (automatic resolved)
bool openmp_runtime_private();       // the runtime's file is a renamed private copy
void after_parallel_region();        // releases the pool when passive

// The paths of the OpenMP runtime libraries loaded in this process now
// (libgomp, libomp, libiomp5, renamed copies included; empty where the
// platform cannot list its loaded libraries). More than one means more than
// one thread pool: each spins its idle threads beside the others' work.
std::vector<std::string> openmp_runtimes_loaded();

}  // namespace pyattn
