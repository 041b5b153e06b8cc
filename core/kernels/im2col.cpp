// im2col / col2im loops. Bounds are worked out once per row of the grid, so the inner loops are
// plain copies (contiguous when the stride is 1) with no per-element test for padding.
#include "core/kernels/im2col.h"

#include <omp.h>

#include <algorithm>
#include <cstring>

namespace sb::kernels {

// Below this many column elements a single thread is faster than forking a team.
static constexpr int64_t kParallelMin = 1 << 15;

// The grid positions o in [0, out) whose image coordinate o * stride + offset falls inside
// [0, size): the half-open range [lo, hi).
static inline void valid_range(int64_t offset, int64_t stride, int64_t size, int64_t out,
                               int64_t& lo, int64_t& hi) {
  lo = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
  hi = size - 1 - offset < 0 ? 0 : (size - 1 - offset) / stride + 1;
  lo = std::min(lo, out);
  hi = std::max(lo, std::min(hi, out));
}

void im2col(const ColGeometry& g, const float* im, float* col) {
  const int64_t rows = g.rows(), kk = g.kernel_h * g.kernel_w;
  // Nested inside a caller's parallel region (one sample per thread) this stays on its thread.
  const bool parallel = !omp_in_parallel() && rows * g.cols() > kParallelMin;
  // (rows, out_h) pairs are the unit of work, so a 1-channel 3x3 kernel still spreads well.
#pragma omp parallel for collapse(2) schedule(static) if (parallel)
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t oh = 0; oh < g.out_h; ++oh) {
      const int64_t c = r / kk, i = (r / g.kernel_w) % g.kernel_h, j = r % g.kernel_w;
      float* dst = col + (r * g.out_h + oh) * g.out_w;  // (out_w,)
      const int64_t ih = oh * g.stride_h - g.pad_h + i * g.dil_h;
      if (ih < 0 || ih >= g.height) {
        std::memset(dst, 0, sizeof(float) * g.out_w);
        continue;
      }
      const float* src = im + (c * g.height + ih) * g.width;  // (width,)
      const int64_t offset = j * g.dil_w - g.pad_w;
      int64_t lo, hi;
      valid_range(offset, g.stride_w, g.width, g.out_w, lo, hi);
      std::fill(dst, dst + lo, 0.f);
      if (g.stride_w == 1) {
        if (hi > lo) std::memcpy(dst + lo, src + lo + offset, sizeof(float) * (hi - lo));
      } else {
        for (int64_t ow = lo; ow < hi; ++ow) dst[ow] = src[ow * g.stride_w + offset];
      }
      std::fill(dst + hi, dst + g.out_w, 0.f);
    }
  }
}

void col2im(const ColGeometry& g, const float* col, float* im) {
  const int64_t kk = g.kernel_h * g.kernel_w, plane = g.height * g.width;
  const bool parallel = !omp_in_parallel() && g.channels > 1 && g.rows() * g.cols() > kParallelMin;
  // One channel per iteration: channels write disjoint image planes, and within a plane the
  // order of the additions is fixed, so the result is the same for any thread count.
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t c = 0; c < g.channels; ++c) {
    float* dst = im + c * plane;  // (height, width)
    std::memset(dst, 0, sizeof(float) * plane);
    for (int64_t i = 0; i < g.kernel_h; ++i) {
      for (int64_t j = 0; j < g.kernel_w; ++j) {
        const float* src = col + (c * kk + i * g.kernel_w + j) * g.cols();  // (out_h, out_w)
        const int64_t offset = j * g.dil_w - g.pad_w;
        int64_t lo, hi;
        valid_range(offset, g.stride_w, g.width, g.out_w, lo, hi);
        for (int64_t oh = 0; oh < g.out_h; ++oh) {
          const int64_t ih = oh * g.stride_h - g.pad_h + i * g.dil_h;
          if (ih < 0 || ih >= g.height) continue;
          float* row = dst + ih * g.width;
          const float* s = src + oh * g.out_w;
          if (g.stride_w == 1) {
            for (int64_t ow = lo; ow < hi; ++ow) row[ow + offset] += s[ow];
          } else {
            for (int64_t ow = lo; ow < hi; ++ow) row[ow * g.stride_w + offset] += s[ow];
          }
        }
      }
    }
  }
}

}  // namespace sb::kernels
