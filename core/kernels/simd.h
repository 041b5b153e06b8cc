// Which instruction set smallbatch's own kernels run: the best the CPU has, or the level that
// SMALLBATCH_SIMD forces (tests force every level the machine can run, so each path is tested).
#pragma once

namespace sb::kernels {

// Ordered: a level includes everything below it. avx2 means AVX2 + FMA; avx512 means AVX-512F
// (+ AVX2 + FMA); baseline is plain x86-64 (SSE2) or whatever the compiler targets elsewhere.
enum class Simd { baseline = 0, avx2 = 1, avx512 = 2 };

// The best level this CPU (and its OS, which must save the wider registers) supports.
Simd simd_cpu_level();
// The level in force: SMALLBATCH_SIMD when set, else simd_cpu_level(). Read once. A value that is
// not a level name, or names a level above the CPU's, throws sb::Error naming the variable.
Simd simd_level();
// Forces a level for the rest of the process (tests run every kernel at every level the CPU
// has). Throws sb::Error for a level above simd_cpu_level().
void set_simd_level(Simd level);
// "baseline", "avx2", "avx512".
const char* simd_name(Simd level);

}  // namespace sb::kernels
