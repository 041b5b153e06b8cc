// Runs a test body at every instruction-set level this CPU has (Issue 14: every path of
// smallbatch's own SIMD kernels is tested on any machine), forcing each with set_simd_level.
#pragma once

#include <doctest/doctest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "core/kernels/simd.h"

namespace sbtest {

// The levels to test: all that the CPU runs, or only SMALLBATCH_SIMD's when it is set (the CTest
// entry simd.env_baseline runs the kernel tests that way, through the environment variable).
inline std::vector<sb::kernels::Simd> simd_levels() {
  using sb::kernels::Simd;
  const char* env = std::getenv("SMALLBATCH_SIMD");
  if (env && *env) return {sb::kernels::simd_level()};
  std::vector<Simd> out;
  for (Simd l : {Simd::baseline, Simd::avx2, Simd::avx512})
    if (l <= sb::kernels::simd_cpu_level()) out.push_back(l);
  return out;
}

// body() once per level in simd_levels(), that level forced; the level in force before is restored
// after, also when a REQUIRE throws. A failure's message names the level.
template <class F>
void for_each_simd_level(F&& body) {
  struct Restore {
    sb::kernels::Simd prev = sb::kernels::simd_level();
    ~Restore() { sb::kernels::set_simd_level(prev); }
  } restore;
  for (sb::kernels::Simd l : simd_levels()) {
    sb::kernels::set_simd_level(l);
    INFO("SIMD level: " << std::string(sb::kernels::simd_name(l)));
    body();
  }
}

}  // namespace sbtest
