// The size threshold for streaming stores (see stream.h): half the last-level cache, read from
// sysfs. glibc's sysconf(_SC_LEVEL3_CACHE_SIZE) is not used: in a VM it reports the host's
// (320 MiB on a machine whose guest sees 32 MiB).
#include "core/kernels/stream.h"

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

#include "core/errors.h"
#include "core/kernels/simd.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace sb::kernels {

#if defined(__x86_64__) || defined(__i386__)
// Copy-out loops: a scalar head up to the store width's alignment, streaming stores, a scalar
// tail. 32-byte streaming stores measured 15 to 25% faster than 16-byte ones on Zen 4 (8 and
// 32 MiB copies, 2 threads); 64-byte ones gained nothing more.
__attribute__((target("avx"))) static void stream_store_avx(float* dst, const float* src, int64_t n) {
  int64_t i = 0;
  for (; i < n && (reinterpret_cast<uintptr_t>(dst + i) & 31) != 0; ++i) dst[i] = src[i];
  for (; i + 8 <= n; i += 8) _mm256_stream_ps(dst + i, _mm256_loadu_ps(src + i));
  for (; i < n; ++i) dst[i] = src[i];
}

static void stream_store_sse2(float* dst, const float* src, int64_t n) {
  int64_t i = 0;
  for (; i < n && (reinterpret_cast<uintptr_t>(dst + i) & 15) != 0; ++i) dst[i] = src[i];
  for (; i + 4 <= n; i += 4) _mm_stream_ps(dst + i, _mm_loadu_ps(src + i));
  for (; i < n; ++i) dst[i] = src[i];
}

// The level's store: AVX at avx2 and avx512 (both include AVX), SSE2 at baseline. Called inside
// parallel loops, hence simd_level_nothrow(): both stores copy the same bits.
void stream_store(float* dst, const float* src, int64_t n) {
  if (simd_level_nothrow() == Simd::baseline) stream_store_sse2(dst, src, n);
  else stream_store_avx(dst, src, n);
}

void stream_fence() { _mm_sfence(); }
#else
void stream_store(float* dst, const float* src, int64_t n) {
  std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
}

void stream_fence() {}
#endif

static std::atomic<int64_t> g_override{-1};

// Size in bytes of cpu0's highest-level cache per sysfs, or 0 when sysfs does not say.
static int64_t last_level_cache_bytes() {
  int best_level = 0;
  int64_t best_bytes = 0;
  for (int index = 0; index < 8; ++index) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index) + "/";
    std::ifstream level_file(dir + "level"), size_file(dir + "size");
    int level = 0;
    std::string size;  // "32768K"
    if (!(level_file >> level) || !(size_file >> size) || size.empty()) continue;
    int64_t bytes = 0;
    try {
      bytes = std::stoll(size);
    } catch (...) {
      continue;
    }
    const char unit = size.back();
    bytes <<= unit == 'K' ? 10 : unit == 'M' ? 20 : unit == 'G' ? 30 : 0;
    if (level > best_level) best_level = level, best_bytes = bytes;
  }
  return best_bytes;
}

// SMALLBATCH_STREAMING_MIN_BYTES, when set, replaces half the last-level cache (for measuring
// the two store kinds against each other from the command line).
static int64_t default_streaming_min_bytes() {
  static const int64_t bytes = [] {
    if (const char* env = std::getenv("SMALLBATCH_STREAMING_MIN_BYTES"); env && *env) {
      char* end = nullptr;
      errno = 0;
      const long long v = std::strtoll(env, &end, 10);
      SB_CHECK(end && *end == '\0' && errno == 0 && v >= 0, "SMALLBATCH_STREAMING_MIN_BYTES: expected a whole number of "
               "bytes, 0 or more, but got '", shown(env), "'");
      return static_cast<int64_t>(v);
    }
    const int64_t llc = last_level_cache_bytes();
    return llc > 0 ? llc / 2 : int64_t(8) << 20;
  }();
  return bytes;
}

int64_t streaming_min_bytes() {
  const int64_t o = g_override.load(std::memory_order_relaxed);
  return o >= 0 ? o : default_streaming_min_bytes();
}

void set_streaming_min_bytes(int64_t bytes) { g_override.store(bytes < 0 ? -1 : bytes); }

}  // namespace sb::kernels
