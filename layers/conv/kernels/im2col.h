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
  // The zero-padded image the windows sweep: pad_h rows above the image, pad_w columns to its
  // left, and below and to the right as far as the last window reaches (at least the image).
  int64_t padded_height() const {
    const int64_t reach = (out_h - 1) * stride_h + (kernel_h - 1) * dil_h + 1;
    return reach > pad_h + height ? reach : pad_h + height;
  }
  int64_t padded_width() const {
    const int64_t reach = (out_w - 1) * stride_w + (kernel_w - 1) * dil_w + 1;
    return reach > pad_w + width ? reach : pad_w + width;
  }
  int64_t padded_size() const { return channels * padded_height() * padded_width(); }
};

// col (rows, cols) = the patches of im (channels, height, width).
void im2col(const ColGeometry& g, const float* im, float* col);
// The grid rows [oh0, oh1) only: col (rows, (oh1 - oh0) * out_w), the same columns im2col writes
// for those grid rows. A caller that multiplies the columns tile by tile keeps each tile in cache.
void im2col_rows(const ColGeometry& g, const float* im, float* col, int64_t oh0, int64_t oh1);

// The same columns in two steps, for the callers that matter for speed: pad_image writes the
// zero-padded image (channels, padded_height(), padded_width()) once, and im2col_rows_padded
// reads every column row from it as plain strided copies, with no bounds to test (the padding is
// already there). Bit-identical to im2col_rows; it writes 1/(kernel_h kernel_w) of the column
// matrix's size more, and saves the per-row clipping, whose short scalar loops dominated.
void pad_image(const ColGeometry& g, const float* im, float* padded);
void im2col_rows_padded(const ColGeometry& g, const float* padded, float* col, int64_t oh0, int64_t oh1);

// im (channels, height, width) = the adjoint of im2col applied to col (rows, cols): every entry is
// added into the image position im2col read it from. Overwrites im. Deterministic: each image
// element sums its contributions in a fixed order whatever the thread count.
void col2im(const ColGeometry& g, const float* col, float* im);

}  // namespace sb::kernels
