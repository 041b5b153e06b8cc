// What runs: the CPU, the BLAS library and the kernels it chose, the instruction set of
// smallbatch's own kernels, and the thread count; and the guard that keeps OpenBLAS off its
// generic kernels on CPUs it fails to recognize (OpenBLAS 0.3.21 on Intel models >= 176).
#pragma once

#include <string>

namespace sb {

struct BlasInfo {
  std::string library;  // "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY SkylakeX MAX_THREADS=64", or "unknown BLAS"
  std::string core;     // the kernels in use: "SkylakeX", "Haswell", ... ("unknown" when not OpenBLAS)
  // How that core was chosen: "detected by OpenBLAS", "OPENBLAS_CORETYPE=...", or
  // "switched by smallbatch from Prescott (OpenBLAS did not recognize this CPU)".
  std::string origin;
  std::string warning;  // non-empty when slow kernels run and smallbatch could not fix it
};

struct PlatformInfo {
  std::string cpu;       // "Intel(R) Xeon(R) Processor (GenuineIntel family 6 model 207)"
  std::string cpu_simd;  // the widest vector instructions the CPU and OS offer: "avx512", "avx2", "avx", "sse2"
  BlasInfo blas;
  std::string kernels;   // smallbatch's own kernels: "avx512", "avx2" or "baseline" (SMALLBATCH_SIMD may force)
  std::string conv3x3;   // "winograd" (F(4, 3) where a layer has >= 8 channels) or "direct" (SMALLBATCH_WINOGRAD=off)
  int threads = 1;
};

// Makes sure OpenBLAS runs the kernels this CPU deserves, before smallbatch's first BLAS call
// (the library runs it at load time and again, as a no-op, at the first GEMM). When OpenBLAS
// picked a core without AVX2 on a CPU with AVX2 or AVX-512 and no OPENBLAS_CORETYPE was given, it
// re-runs OpenBLAS's own core selection in-process with OPENBLAS_CORETYPE set to the core it
// should have found (the environment is restored afterwards). When that is impossible, it prints
// one warning with the exact remedy to stderr. A user's OPENBLAS_CORETYPE is always respected.
// Idempotent and thread-safe; returns what it found.
const BlasInfo& ensure_blas_kernels();

// Everything above, for `smallbatch doctor`, bench, train's first lines and compare's report.
PlatformInfo platform_info();
// One line: "CPU ...; BLAS OpenBLAS 0.3.21 (SkylakeX, ...); kernels avx512; 2 threads".
std::string platform_summary();

// Reads every SMALLBATCH_* setting now (SMALLBATCH_SIMD, SMALLBATCH_NUM_THREADS,
// SMALLBATCH_STREAMING_MIN_BYTES), so a malformed one is an error before any work starts rather
// than in the middle of it. Throws sb::Error naming the variable and its value.
void check_environment();

namespace detail {
// The decision ensure_blas_kernels() takes, apart so tests can give it any CPU: returns the
// OpenBLAS core to switch to ("" for none). cpu_simd as in PlatformInfo; bf16: AVX512_BF16;
// amd: an AMD CPU; available(name): the loaded OpenBLAS has that core.
std::string blas_core_to_switch_to(const std::string& core, const std::string& cpu_simd, bool bf16, bool amd,
                                   bool (*available)(const char* name));
// Re-runs OpenBLAS's core selection with OPENBLAS_CORETYPE=name; true when the core in use is
// then `name`. For ensure_blas_kernels() and the test that compares it with a fresh process.
bool blas_switch_core(const char* name);
}  // namespace detail

}  // namespace sb
