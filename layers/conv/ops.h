// The convolution ops, conv2d and conv_transpose2d (PyTorch semantics), used by the Conv2d and
// ConvTranspose2d layers (layers/conv2d.h): im2col + sgemm, or a direct microkernel (kernels/).
#pragma once

#include <cstdint>

#include "core/autograd.h"
#include "layers/pair.h"

namespace sb {

struct Conv2dOptions {
  Pair stride = 1, padding = 0, dilation = 1;
  int64_t groups = 1;
};
// x (N, C_in, H, W), weight (C_out, C_in/groups, kH, kW), optional bias (C_out,)
Var conv2d(const Var& x, const Var& weight, const Var& bias = Var(), Conv2dOptions opt = {});
struct ConvTranspose2dOptions {
  Pair stride = 1, padding = 0, output_padding = 0, dilation = 1;
  int64_t groups = 1;
};
// x (N, C_in, H, W), weight (C_in, C_out/groups, kH, kW), optional bias (C_out,)
// H_out = (H - 1) * stride - 2 * padding + dilation * (kH - 1) + output_padding + 1
Var conv_transpose2d(const Var& x, const Var& weight, const Var& bias = Var(),
                     ConvTranspose2dOptions opt = {});

}  // namespace sb
