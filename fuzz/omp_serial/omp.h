// A serial stand-in for <omp.h> in the fuzz build: the sources are compiled without -fopenmp
// (their pragmas are ignored, so everything runs on one thread, deterministically), and these
// are the only OpenMP calls they make. It also spares the fuzz build a dependency on libomp.
#pragma once

inline int omp_get_max_threads() { return 1; }
inline int omp_get_num_threads() { return 1; }
inline int omp_get_thread_num() { return 0; }
inline int omp_in_parallel() { return 0; }
inline void omp_set_num_threads(int) {}
