// OpenMP where the build found it, plain loops otherwise.
// MIPRUN_OMP(...) expands to `#pragma omp ...` only when MIPRUN_OPENMP is defined, so the
// sources read the same either way and a build without OpenMP stays warning-free.
#pragma once

#include <cstddef>

#ifdef MIPRUN_OPENMP
#include <omp.h>
#define MIPRUN_PRAGMA_STR(x) #x
#define MIPRUN_OMP(x) _Pragma(MIPRUN_PRAGMA_STR(omp x))
#else
#define MIPRUN_OMP(x)
#endif

namespace miprun {

// Threads a parallel region may use.
inline int max_threads() {
#ifdef MIPRUN_OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

// Index of the calling thread inside a parallel region (0 outside one).
inline int thread_index() {
#ifdef MIPRUN_OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

// Threads in the current team (1 outside a parallel region).
inline int team_size() {
#ifdef MIPRUN_OPENMP
  return omp_get_num_threads();
#else
  return 1;
#endif
}

// Below this many elements of work a loop runs on one thread: starting a team costs more.
constexpr std::size_t kParallelGrain = 1 << 15;

}  // namespace miprun
