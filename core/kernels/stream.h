// Non-temporal ("streaming") stores for outputs too large to stay in the cache: they write whole
// lines straight to memory, skipping the read-for-ownership of each line and leaving the cache to
// the inputs the op is still reading. Ops decide per call with streaming_min_bytes().
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace sb::kernels {

// Copies n floats from src (a small staging buffer, hot in L1) to dst, with non-temporal stores
// where the CPU has them (x86's SSE2 baseline) and plain ones elsewhere. The 16-byte stores are
// enough: a streaming op runs at memory speed, and full lines leave the write-combining buffers
// whatever the store width. Call stream_fence() before other threads may read dst.
inline void stream_store(float* dst, const float* src, int64_t n) {
#if defined(__SSE2__)
  int64_t i = 0;
  for (; i < n && (reinterpret_cast<uintptr_t>(dst + i) & 15) != 0; ++i) dst[i] = src[i];
  for (; i + 4 <= n; i += 4) _mm_stream_ps(dst + i, _mm_loadu_ps(src + i));
  for (; i < n; ++i) dst[i] = src[i];
#else
  std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
#endif
}

// Orders this thread's streaming stores before its later stores (and so before the barrier that
// ends a parallel loop): non-temporal stores are weakly ordered.
inline void stream_fence() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

// Ops whose bytes read plus written reach this write their outputs with stream_store: by the
// time they finish, an output this large would have left the cache anyway. The default is half
// the last-level cache (from sysfs; 8 MiB when it is not reported). Measured on a 32 MiB L3
// with GroupNorm over (N, 64, 64, 64): streaming costs 25% at N = 2 and 4 (outputs that stay
// cached) and saves 30% at N = 8 and 16, counting a read of the output afterwards.
int64_t streaming_min_bytes();
// Overrides the default; a negative value restores it. 0 streams every output (the tests use it
// to run the streaming paths on small inputs); INT64_MAX never streams.
void set_streaming_min_bytes(int64_t bytes);

}  // namespace sb::kernels
