// Pair: the (h, w) of a 2-D op's kernel, stride, padding or dilation, shared by the convolution
// (layers/conv/ops.h) and pooling (layers/pool/ops.h) ops and their layers. An int means both.
#pragma once

#include <cstdint>

namespace sb {

struct Pair {
  int64_t h, w;
  Pair(int64_t v = 0) : h(v), w(v) {}  // NOLINT: an int means both
  Pair(int64_t h_, int64_t w_) : h(h_), w(w_) {}
};

}  // namespace sb
