// The thread-count setting shared by every op.
#pragma once

namespace pyattn {

// Threads a call uses when it does not ask for a number itself: the value
// given to set_num_threads, else OpenMP's current default (which honours
// OMP_NUM_THREADS and omp_set_num_threads, hence threadpoolctl).
int default_num_threads();
void set_num_threads(int n);     // n >= 1; 0: follow OpenMP again
bool num_threads_set();
bool openmp_enabled();
const char* openmp_description();

}  // namespace pyattn
