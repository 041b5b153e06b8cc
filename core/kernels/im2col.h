// im2col and col2im: the patch matrices that turn a 2-d convolution into one GEMM per sample and
// group, and their adjoint that folds columns back onto an image. Plain loops on float*.
#pragma once

#include <cstdint>

namespace sb::kernels {

// A window sweep over a (channels, height, width) image that lands on an (out_h, out_w) grid.
// The column matrix is (channels * kernel_h * kernel_w, out_h * out_w); its row
// r = (c * kernel_h + i) * kernel_w + j holds, for each grid position (oh, ow), the image value at
// (c, oh * stride_h - pad_h + i * dil_h, ow * stride_w - pad_w + j * dil_w), zero outside the
// image. out_h/out_w are given rather than derived: conv_transpose2d's output_padding can make the
// image taller than the grid a convolution over it would produce.
struct ColGeometry {
  int64_t channels, height, width;
  int64_t kernel_h, kernel_w;
  int64_t pad_h, pad_w;
  int64_t stride_h, stride_w;
  int64_t dil_h, dil_w;
  int64_t out_h, out_w;

  int64_t rows() const { return channels * kernel_h * kernel_w; }
  int64_t cols() const { return out_h * out_w; }
};

// col (rows, cols) = the patches of im (channels, height, width).
void im2col(const ColGeometry& g, const float* im, float* col);
// The grid rows [oh0, oh1) only: col (rows, (oh1 - oh0) * out_w), the same columns im2col writes
// for those grid rows. A caller that multiplies the columns tile by tile keeps each tile in cache.
void im2col_rows(const ColGeometry& g, const float* im, float* col, int64_t oh0, int64_t oh1);

// im (channels, height, width) = the adjoint of im2col applied to col (rows, cols): every entry is
// added into the image position im2col read it from. Overwrites im. Deterministic: each image
// element sums its contributions in a fixed order whatever the thread count.
void col2im(const ColGeometry& g, const float* col, float* im);

}  // namespace sb::kernels
