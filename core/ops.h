// The generic differentiable ops: elementwise, reductions, shape and linear algebra.
// Each op checks shapes (throwing sb::Error that names the op and every shape), runs a kernel,
// and records its backward beside its forward in the op's .cpp file. The ops of one layer family
// sit beside its layers: layers/conv/ops.h, layers/pool/ops.h, layers/loss/ops.h, layers/norm/ops.h.
#pragma once

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

// Zeroes each element with probability p and scales survivors by 1/(1-p); identity when not
// training.
Var dropout(const Var& x, float p, bool training, Generator& gen);

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

}  // namespace sb
