// Thread-count control shared by our OpenMP loops and OpenBLAS.
#include "core/threads.h"

#include <omp.h>

#include <cstdlib>
#include <string>
#include <thread>

#include "core/errors.h"
#include "core/platform.h"

// Weak: with a BLAS other than OpenBLAS (which has no such call) the program still links and runs.
extern "C" __attribute__((weak)) void openblas_set_num_threads(int);

namespace sb {

void set_num_threads(int n) {
  if (n <= 0) n = static_cast<int>(std::thread::hardware_concurrency());
  if (n <= 0) n = 1;
  omp_set_num_threads(n);
  ensure_blas_kernels();  // OpenBLAS's core is settled before anything of OpenBLAS's is touched
  if (openblas_set_num_threads) openblas_set_num_threads(n);
}

int num_threads() { return omp_get_max_threads(); }

int default_num_threads() {
  const char* env = std::getenv("SMALLBATCH_NUM_THREADS");
  if (env && *env) {
    char* end = nullptr;
    long v = std::strtol(env, &end, 10);
    SB_CHECK(end && *end == '\0' && v > 0 && v <= 4096,
             "SMALLBATCH_NUM_THREADS: expected a positive whole number but got '", shown(env), "'");
    return static_cast<int>(v);
  }
  unsigned hc = std::thread::hardware_concurrency();
  return hc ? static_cast<int>(hc) : 1;
}

}  // namespace sb
