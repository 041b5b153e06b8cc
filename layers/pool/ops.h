// The pooling and resampling ops on (N, C, H, W): max_pool2d, avg_pool2d and upsample, used by
// the MaxPool2d, AvgPool2d and Upsample layers (layers/simple.h).
#pragma once

#include <cstdint>
#include <optional>

#include "core/autograd.h"
#include "layers/pair.h"

namespace sb {

struct Pool2dOptions {
  Pair kernel = 2;
  std::optional<Pair> stride;  // defaults to kernel, as in PyTorch
  Pair padding = 0;
  bool ceil_mode = false;
  bool count_include_pad = true;  // avg_pool2d only
};
Var max_pool2d(const Var& x, Pool2dOptions opt);  // saves argmax indices for backward
Var avg_pool2d(const Var& x, Pool2dOptions opt);
enum class UpsampleMode { Nearest, Bilinear };
// To (out_h, out_w). Bilinear follows PyTorch's align_corners=False; nearest is PyTorch's
// "nearest" (floor(dst * in / out)).
Var upsample(const Var& x, int64_t out_h, int64_t out_w, UpsampleMode mode);

}  // namespace sb
