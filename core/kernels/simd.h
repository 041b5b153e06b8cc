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
// not a level name, or names a level above the CPU's, throws sb::Error naming the variable (from
// every call). Ops call it before their parallel loops, where an exception would end the process.
Simd simd_level();
// simd_level() for kernels that may run inside a caller's parallel region: the same level, or
// baseline (which every CPU runs) while SMALLBATCH_SIMD is invalid, whose error the next
// simd_level() outside reports. Only for kernels whose result is the same at every level (copies).
Simd simd_level_nothrow() noexcept;
// The level a SMALLBATCH_SIMD value asks for on a CPU whose best is `cpu` (simd_level()'s check,
// exposed for the tests): "avx512", "avx2" or "baseline", at most `cpu`; else sb::Error.
Simd simd_level_from(const char* value, Simd cpu);
// Forces a level for the rest of the process (tests run every kernel at every level the CPU
// has). Throws sb::Error for a level above simd_cpu_level().
void set_simd_level(Simd level);
// "baseline", "avx2", "avx512".
const char* simd_name(Simd level);

// Whether 3x3 stride-1 convolutions with at least 8 channels in and out run by Winograd F(4, 3)
// along rows (half the multiply-adds; layers/conv/kernels/conv_direct.cpp), or all by the direct
// kernel. SMALLBATCH_WINOGRAD: "on" (the default) or "off", which gives the bits of smallbatch
// before Winograd (e.g. to reproduce an older run). Read once; a bad value throws sb::Error naming
// the variable, from every call, as simd_level() does.
bool winograd_enabled();
// The setting a SMALLBATCH_WINOGRAD value asks for ("on" or "off"; else sb::Error), for the tests.
bool winograd_from(const char* value);
// Forces the setting for the rest of the process (tests run both paths).
void set_winograd_enabled(bool on);

}  // namespace sb::kernels

// The targets of a kernel's variants. No "fma": GCC contracts a * b + c into one FMA wherever FMA
// is enabled (in C++ even under -std=c++20), which rounds once instead of twice: the variants keep
// the arithmetic of the target_clones they replaced, bit for bit. (The levels do not all give the
// same bits as each other: each is tested against the references on its own.)
#if defined(__x86_64__) || defined(__i386__)
#define SB_TARGET_AVX512 __attribute__((target("avx512f")))
#define SB_TARGET_AVX2 __attribute__((target("avx2")))
#else
#define SB_TARGET_AVX512
#define SB_TARGET_AVX2
#endif

// Defines a kernel at every level from one body: name_avx512, name_avx2 and name_baseline, each
// name_body (which must be always_inline) compiled for its level, and the dispatcher
// name(sb::kernels::Simd level, params...). `attrs` go on all four (e.g. an optimize attribute the
// body has too), `args` are the parameters' names in parentheses, the rest the parameter list:
//   SB_SIMD_VARIANTS(, double, row_sum, (x, n), const float* x, int64_t n)
#define SB_SIMD_VARIANTS(attrs, ret, name, args, ...)                                      \
  attrs SB_TARGET_AVX512 static ret name##_avx512(__VA_ARGS__) { return name##_body args; } \
  attrs SB_TARGET_AVX2 static ret name##_avx2(__VA_ARGS__) { return name##_body args; }     \
  attrs static ret name##_baseline(__VA_ARGS__) { return name##_body args; }                \
  attrs static ret name(::sb::kernels::Simd level, __VA_ARGS__) {                           \
    switch (level) {                                                                       \
      case ::sb::kernels::Simd::avx512: return name##_avx512 args;                         \
      case ::sb::kernels::Simd::avx2: return name##_avx2 args;                             \
      case ::sb::kernels::Simd::baseline: break;                                           \
    }                                                                                      \
    return name##_baseline args;                                                           \
  }
