// The differentiable ops: smallbatch's table of contents for everything a model computes.
// Each op checks shapes (throwing sb::Error that names the op and every shape), runs a kernel,
// and records its backward beside its forward in the op's .cpp file.
#pragma once

#include <optional>
#include <vector>

#include "core/autograd.h"

namespace sb {

// ---- elementwise (ops_elementwise.cpp) -------------------------------------------------
// Binary ops broadcast as NumPy/PyTorch do: shapes align from the right, a size-1 dimension
// stretches. Backward sums the gradient back over the stretched dimensions.
Var add(const Var& a, const Var& b);
Var sub(const Var& a, const Var& b);
Var mul(const Var& a, const Var& b);
Var div(const Var& a, const Var& b);
Var add(const Var& a, float s);
Var mul(const Var& a, float s);
Var neg(const Var& a);
Var exp(const Var& a);
Var log(const Var& a);
Var sqrt(const Var& a);
Var pow(const Var& a, float exponent);
Var relu(const Var& a);
Var sigmoid(const Var& a);
Var tanh(const Var& a);

inline Var operator+(const Var& a, const Var& b) { return add(a, b); }
inline Var operator-(const Var& a, const Var& b) { return sub(a, b); }
inline Var operator*(const Var& a, const Var& b) { return mul(a, b); }
inline Var operator/(const Var& a, const Var& b) { return div(a, b); }
inline Var operator-(const Var& a) { return neg(a); }
inline Var operator+(const Var& a, float s) { return add(a, s); }
inline Var operator+(float s, const Var& a) { return add(a, s); }
inline Var operator-(const Var& a, float s) { return add(a, -s); }
inline Var operator-(float s, const Var& a) { return add(neg(a), s); }
inline Var operator*(const Var& a, float s) { return mul(a, s); }
inline Var operator*(float s, const Var& a) { return mul(a, s); }
inline Var operator/(const Var& a, float s) { return mul(a, 1.0f / s); }

// The broadcast result shape of a and b; throws naming `op` when they don't broadcast.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);
// Sums `t` down to `shape` over broadcast dimensions (the backward of broadcasting).
Tensor sum_to(const Tensor& t, const Shape& shape);

// ---- reductions (ops_reduce.cpp) -------------------------------------------------------
// axes may be negative; an empty axes list means all axes.
Var sum(const Var& a);
Var sum(const Var& a, std::vector<int64_t> axes, bool keepdim = false);
Var mean(const Var& a);
Var mean(const Var& a, std::vector<int64_t> axes, bool keepdim = false);

// ---- shape (ops_shape.cpp) -------------------------------------------------------------
Var reshape(const Var& a, Shape shape);  // shares storage; one dimension may be -1
Var concat(const std::vector<Var>& parts, int64_t axis);
// Elements start, start+step, ... < end along `axis` (PyTorch's a[..., start:end:step, ...]);
// negative start/end count from the end and are clamped as in Python.
Var slice(const Var& a, int64_t axis, int64_t start, int64_t end, int64_t step = 1);

// ---- linear algebra (ops_linalg.cpp), on cblas_sgemm ----------------------------------
Var matmul(const Var& a, const Var& b);  // (M, K) x (K, N) -> (M, N)
// x (N, in), weight (out, in), optional bias (out,) -> (N, out): x W^T + b
Var linear(const Var& x, const Var& weight, const Var& bias = Var());

// ---- convolution (ops_conv.cpp): im2col + sgemm -----------------------------------------
struct Pair {
  int64_t h, w;
  Pair(int64_t v = 0) : h(v), w(v) {}  // NOLINT: an int means both
  Pair(int64_t h_, int64_t w_) : h(h_), w(w_) {}
};
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

// ---- pooling and resampling (ops_pool.cpp) ---------------------------------------------
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

// ---- softmax, losses, dropout (ops_loss.cpp) --------------------------------------------
Var softmax(const Var& x, int64_t axis);
Var log_softmax(const Var& x, int64_t axis);
struct CrossEntropyOptions {
  int64_t ignore_index = 255;  // the segmentation convention
  Tensor weight;               // optional per-class weights (K,)
};
// logits (N, K) or (N, K, H, W); target (N) or (N, H, W) with values in [0, K) or ignore_index.
// Mean over non-ignored elements (weighted mean with class weights), as PyTorch's
// reduction='mean'. All elements ignored gives NaN, as in PyTorch.
Var cross_entropy(const Var& logits, const IndexTensor& target, const CrossEntropyOptions& opt = {});
// Zeroes each element with probability p and scales survivors by 1/(1-p); identity when not
// training.
Var dropout(const Var& x, float p, bool training, Generator& gen);

}  // namespace sb
