// Non-temporal ("streaming") stores for outputs too large to stay in the cache: they write whole
// lines straight to memory, skipping the read-for-ownership of each line and leaving the cache to
// the inputs the op is still reading. Ops decide per call with streaming_min_bytes().
#pragma once

#include <cstdint>

namespace sb::kernels {

// Copies n floats from src (a small staging buffer, hot in L1) to dst, with non-temporal stores
// where the CPU has them (x86: 32-byte ones at simd_level() avx2 and avx512, 16-byte SSE2 ones at
// baseline) and plain ones elsewhere. Call stream_fence() before other threads may read dst.
void stream_store(float* dst, const float* src, int64_t n);

// Orders this thread's streaming stores before its later stores (and so before the barrier that
// ends a parallel loop): non-temporal stores are weakly ordered.
void stream_fence();

// Ops whose bytes read plus written reach this write their outputs with stream_store: by the
// time they finish, an output this large would have left the cache anyway. The default is half
// the last-level cache (from sysfs; 8 MiB when it is not reported). Measured on a 32 MiB L3,
// GroupNorm forward + backward on (N, 64, 64, 64) (docs/PERFORMANCE.md, round 3): streaming
// costs 29% at N = 2 (2 MiB tensors, which stay cached), is even at N = 4, and saves 16% and
// 23% at N = 8 and 16.
int64_t streaming_min_bytes();
// Overrides the default; a negative value restores it. 0 streams every output (the tests use it
// to run the streaming paths on small inputs); INT64_MAX never streams.
void set_streaming_min_bytes(int64_t bytes);

}  // namespace sb::kernels
