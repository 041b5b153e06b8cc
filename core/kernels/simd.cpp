// CPUID-based choice of the kernels' instruction set, with SMALLBATCH_SIMD to force a lower one.
#include "core/kernels/simd.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "core/errors.h"

namespace sb::kernels {

Simd simd_cpu_level() {
#if defined(__x86_64__) || defined(__i386__)
  // libgcc's checks include the OS's XCR0 bits, so a CPU whose OS does not save the AVX-512
  // registers reports no AVX-512 here.
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    return Simd::avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Simd::avx2;
#endif
  return Simd::baseline;
}

const char* simd_name(Simd level) {
  switch (level) {
    case Simd::avx512: return "avx512";
    case Simd::avx2: return "avx2";
    case Simd::baseline: break;
  }
  return "baseline";
}

Simd simd_level_from(const char* value, Simd cpu) {
  Simd wanted;
  if (std::strcmp(value, "avx512") == 0) wanted = Simd::avx512;
  else if (std::strcmp(value, "avx2") == 0) wanted = Simd::avx2;
  else if (std::strcmp(value, "baseline") == 0) wanted = Simd::baseline;
  else fail("SMALLBATCH_SIMD: expected avx512, avx2 or baseline but got '", shown(value), "'");
  SB_CHECK(wanted <= cpu, "SMALLBATCH_SIMD=", value, ": this CPU supports at most ", simd_name(cpu));
  return wanted;
}

static Simd read_level() {
  const Simd cpu = simd_cpu_level();
  const char* env = std::getenv("SMALLBATCH_SIMD");
  if (!env || !*env) return cpu;
  return simd_level_from(env, cpu);
}

// -1 until the first call reads SMALLBATCH_SIMD; then the level's number.
static std::atomic<int> g_level{-1};

Simd simd_level() {
  const int level = g_level.load(std::memory_order_relaxed);
  if (level >= 0) return static_cast<Simd>(level);
  // Read once; a bad value fails every call, not just the first.
  static std::once_flag once;
  static std::string error;
  std::call_once(once, [] {
    try {
      int expected = -1;
      g_level.compare_exchange_strong(expected, static_cast<int>(read_level()));
    } catch (const Error& e) {
      error = e.what();
    }
  });
  if (!error.empty()) throw Error(error);
  return static_cast<Simd>(g_level.load(std::memory_order_relaxed));
}

Simd simd_level_nothrow() noexcept {
  const int level = g_level.load(std::memory_order_relaxed);
  if (level >= 0) return static_cast<Simd>(level);
  try {
    return simd_level();
  } catch (...) {
    return Simd::baseline;
  }
}

void set_simd_level(Simd level) {
  const Simd cpu = simd_cpu_level();
  SB_CHECK(level <= cpu, "set_simd_level(", simd_name(level), "): this CPU supports at most ", simd_name(cpu));
  g_level.store(static_cast<int>(level), std::memory_order_relaxed);
}

bool winograd_from(const char* value) {
  if (std::strcmp(value, "on") == 0) return true;
  if (std::strcmp(value, "off") == 0) return false;
  fail("SMALLBATCH_WINOGRAD: expected on or off but got '", shown(value), "'");
}

// -1 until the first call reads SMALLBATCH_WINOGRAD; then 0 or 1.
static std::atomic<int> g_winograd{-1};

bool winograd_enabled() {
  const int on = g_winograd.load(std::memory_order_relaxed);
  if (on >= 0) return on == 1;
  static std::once_flag once;
  static std::string error;
  std::call_once(once, [] {
    try {
      const char* env = std::getenv("SMALLBATCH_WINOGRAD");
      int expected = -1;
      g_winograd.compare_exchange_strong(expected, !env || !*env || winograd_from(env) ? 1 : 0);
    } catch (const Error& e) {
      error = e.what();
    }
  });
  if (!error.empty()) throw Error(error);
  return g_winograd.load(std::memory_order_relaxed) == 1;
}

void set_winograd_enabled(bool on) { g_winograd.store(on ? 1 : 0, std::memory_order_relaxed); }

}  // namespace sb::kernels
