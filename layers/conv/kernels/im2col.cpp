// im2col / col2im loops. Bounds are worked out once per row of the grid, so the inner loops are
// plain copies (contiguous when the stride is 1) with no per-element test for padding.
#include "layers/conv/kernels/im2col.h"

#include <omp.h>

#include <algorithm>
#include <cstring>

#include "core/kernels/simd.h"

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

// The copy loops below stay loops: rows of a few dozen floats make a memcpy call per row cost
// more than the copy. (GCC's attribute; clang, which only the fuzz build uses, has none.)
#if defined(__clang__)
#define SB_COPY_LOOPS
#else
#define SB_COPY_LOOPS __attribute__((optimize("no-tree-loop-distribute-patterns")))
#endif
#define SB_BODY SB_COPY_LOOPS __attribute__((always_inline)) static inline

// Column rows [r0, r1) of im2col_rows. Compiled for AVX-512 and AVX2 beside the baseline
// (SB_SIMD_VARIANTS), the level chosen per call: with the tile in L2 the copy runs at the width
// of the vector stores.
SB_BODY void im2col_block_body(const ColGeometry& g, const float* im, float* col, int64_t oh0, int64_t oh1,
                               int64_t r0, int64_t r1) {
  const int64_t kk = g.kernel_h * g.kernel_w, cols = (oh1 - oh0) * g.out_w;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t c = r / kk, i = (r / g.kernel_w) % g.kernel_h, j = r % g.kernel_w;
    const int64_t offset = j * g.dil_w - g.pad_w;
    int64_t lo, hi;
    valid_range(offset, g.stride_w, g.width, g.out_w, lo, hi);
    const float* plane = im + c * g.height * g.width;  // (height, width)
    float* dst = col + r * cols;                       // (oh1 - oh0, out_w)
    for (int64_t oh = oh0; oh < oh1; ++oh, dst += g.out_w) {
      const int64_t ih = oh * g.stride_h - g.pad_h + i * g.dil_h;
      if (ih < 0 || ih >= g.height) {
        for (int64_t ow = 0; ow < g.out_w; ++ow) dst[ow] = 0.f;
        continue;
      }
      // The image value at grid column ow is src[(ow - lo) * stride_w]; lo keeps it in bounds.
      const float* src = plane + ih * g.width + lo * g.stride_w + offset;
      for (int64_t ow = 0; ow < lo; ++ow) dst[ow] = 0.f;
      if (g.stride_w == 1) {
        for (int64_t ow = lo; ow < hi; ++ow) dst[ow] = src[ow - lo];
      } else {
        for (int64_t ow = lo; ow < hi; ++ow) dst[ow] = src[(ow - lo) * g.stride_w];
      }
      for (int64_t ow = hi; ow < g.out_w; ++ow) dst[ow] = 0.f;
    }
  }
}

SB_SIMD_VARIANTS(SB_COPY_LOOPS, void, im2col_block, (g, im, col, oh0, oh1, r0, r1), const ColGeometry& g,
                 const float* im, float* col, int64_t oh0, int64_t oh1, int64_t r0, int64_t r1)

// The level for a copy kernel: inside a caller's parallel region an exception would end the
// process, and every level copies the same bits.
static Simd copy_level() { return omp_in_parallel() ? simd_level_nothrow() : simd_level(); }

void im2col_rows(const ColGeometry& g, const float* im, float* col, int64_t oh0, int64_t oh1) {
  const int64_t rows = g.rows();
  const Simd level = copy_level();
  // Nested inside a caller's parallel region (one sample per thread) this stays on its thread.
  if (omp_in_parallel() || rows * (oh1 - oh0) * g.out_w <= kParallelMin) {
    im2col_block(level, g, im, col, oh0, oh1, 0, rows);
    return;
  }
  // Rows are the unit of work: a (c, i, j) row's bounds are worked out once, and its grid rows
  // are then only copies and zero fills.
#pragma omp parallel
  {
    const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
    im2col_block(level, g, im, col, oh0, oh1, rows * t / nt, rows * (t + 1) / nt);
  }
}

void im2col(const ColGeometry& g, const float* im, float* col) { im2col_rows(g, im, col, 0, g.out_h); }

void pad_image(const ColGeometry& g, const float* im, float* padded) {
  const int64_t Hp = g.padded_height(), Wp = g.padded_width();
  const bool parallel = !omp_in_parallel() && g.channels > 1 && g.channels * Hp * Wp > kParallelMin;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t c = 0; c < g.channels; ++c) {
    float* dst = padded + c * Hp * Wp;                     // (Hp, Wp)
    const float* src = im + c * g.height * g.width;        // (height, width)
    std::memset(dst, 0, sizeof(float) * g.pad_h * Wp);     // rows above
    for (int64_t h = 0; h < g.height; ++h) {
      float* row = dst + (g.pad_h + h) * Wp;
      std::memset(row, 0, sizeof(float) * g.pad_w);
      std::memcpy(row + g.pad_w, src + h * g.width, sizeof(float) * g.width);
      std::memset(row + g.pad_w + g.width, 0, sizeof(float) * (Wp - g.pad_w - g.width));
    }
    std::memset(dst + (g.pad_h + g.height) * Wp, 0, sizeof(float) * (Hp - g.pad_h - g.height) * Wp);  // below
  }
}

// Column rows [r0, r1) of im2col_rows_padded: one copy of out_w values per (row, grid row).
SB_BODY void im2col_padded_block_body(const ColGeometry& g, const float* padded, float* col, int64_t oh0,
                                      int64_t oh1, int64_t r0, int64_t r1) {
  const int64_t kk = g.kernel_h * g.kernel_w, cols = (oh1 - oh0) * g.out_w;
  const int64_t Hp = g.padded_height(), Wp = g.padded_width(), ow_n = g.out_w, sw = g.stride_w;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t c = r / kk, i = (r / g.kernel_w) % g.kernel_h, j = r % g.kernel_w;
    // Grid position (oh, ow) reads padded (oh * stride_h + i * dil_h, ow * stride_w + j * dil_w).
    const float* src = padded + c * Hp * Wp + (oh0 * g.stride_h + i * g.dil_h) * Wp + j * g.dil_w;
    float* dst = col + r * cols;  // (oh1 - oh0, out_w)
    const int64_t src_step = g.stride_h * Wp;
    if (sw == 1) {
      for (int64_t oh = oh0; oh < oh1; ++oh, dst += ow_n, src += src_step)
        for (int64_t ow = 0; ow < ow_n; ++ow) dst[ow] = src[ow];
    } else {
      for (int64_t oh = oh0; oh < oh1; ++oh, dst += ow_n, src += src_step)
        for (int64_t ow = 0; ow < ow_n; ++ow) dst[ow] = src[ow * sw];
    }
  }
}

SB_SIMD_VARIANTS(SB_COPY_LOOPS, void, im2col_padded_block, (g, padded, col, oh0, oh1, r0, r1),
                 const ColGeometry& g, const float* padded, float* col, int64_t oh0, int64_t oh1, int64_t r0,
                 int64_t r1)

void im2col_rows_padded(const ColGeometry& g, const float* padded, float* col, int64_t oh0, int64_t oh1) {
  const int64_t rows = g.rows();
  const Simd level = copy_level();
  if (omp_in_parallel() || rows * (oh1 - oh0) * g.out_w <= kParallelMin) {
    im2col_padded_block(level, g, padded, col, oh0, oh1, 0, rows);
    return;
  }
#pragma omp parallel
  {
    const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
    im2col_padded_block(level, g, padded, col, oh0, oh1, rows * t / nt, rows * (t + 1) / nt);
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
