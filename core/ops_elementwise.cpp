// Elementwise ops with NumPy-style broadcasting, and dropout, each with its backward beside its
// forward.
#include <cmath>
#include <cstdint>
#include <memory>

#include "core/ops.h"

namespace sb {

// Loops shorter than this run on one thread: forking costs more than it saves.
static constexpr int64_t kParallelMin = 1 << 15;

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    SB_CHECK(da == db || da == 1 || db == 1, op, ": shapes ", a, " and ", b,
             " do not broadcast (dimension ", i, ": ", da, " vs ", db, ")");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

// Element strides of `shape` seen from the broadcast shape `out` (0 along stretched dims).
static std::vector<int64_t> broadcast_strides(const Shape& shape, const Shape& out) {
  std::vector<int64_t> st(out.size(), 0);
  int64_t s = 1;
  for (size_t k = 0; k < shape.size(); ++k) {
    size_t i = shape.size() - 1 - k, o = out.size() - 1 - k;
    st[o] = shape[i] == 1 ? 0 : s;
    s *= shape[i];
  }
  return st;
}

// out[i] = fn(a[ia], b[ib]) over the broadcast shape. Rows of the last dimension are the inner
// loop; the outer index is decomposed once per row.
template <class F>
static Tensor broadcast_map(const Tensor& a, const Tensor& b, const Shape& out_shape, F fn) {
  Tensor out = Tensor::empty(out_shape);
  const float* pa = a.data();
  const float* pb = b.data();
  float* po = out.data();
  int64_t n = out.numel();
  if (a.shape() == b.shape()) {
#pragma omp parallel for simd if (n > kParallelMin)
    for (int64_t i = 0; i < n; ++i) po[i] = fn(pa[i], pb[i]);
    return out;
  }
  if (b.numel() == 1 && a.shape() == out_shape) {
    float s = pb[0];
#pragma omp parallel for simd if (n > kParallelMin)
    for (int64_t i = 0; i < n; ++i) po[i] = fn(pa[i], s);
    return out;
  }
  if (n == 0) return out;
  auto sa = broadcast_strides(a.shape(), out_shape);
  auto sb_ = broadcast_strides(b.shape(), out_shape);
  int64_t nd = static_cast<int64_t>(out_shape.size());
  int64_t inner = out_shape[nd - 1], ia_step = sa[nd - 1], ib_step = sb_[nd - 1];
  int64_t rows = n / inner;
#pragma omp parallel for if (n > kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    int64_t rem = r, oa = 0, ob = 0;
    for (int64_t d = nd - 2; d >= 0; --d) {
      int64_t idx = rem % out_shape[d];
      rem /= out_shape[d];
      oa += idx * sa[d];
      ob += idx * sb_[d];
    }
    float* o = po + r * inner;
    for (int64_t j = 0; j < inner; ++j) o[j] = fn(pa[oa + j * ia_step], pb[ob + j * ib_step]);
  }
  return out;
}

Tensor sum_to(const Tensor& t, const Shape& shape) {
  if (t.shape() == shape) return t;
  Shape out_shape = t.shape();
  SB_CHECK(broadcast_shapes(shape, t.shape(), "sum_to") == t.shape(), "sum_to: ", shape,
           " does not broadcast to ", t.shape());
  Tensor out = Tensor::zeros(shape);
  if (t.numel() == 0) return out;
  float* po = out.data();
  const float* pt = t.data();
  if (out.numel() == 1) {
    double s = 0;
    int64_t n = t.numel();
#pragma omp parallel for reduction(+ : s) if (n > kParallelMin)
    for (int64_t i = 0; i < n; ++i) s += pt[i];
    po[0] = static_cast<float>(s);
    return out;
  }
  auto so = broadcast_strides(shape, out_shape);
  int64_t nd = static_cast<int64_t>(out_shape.size());
  int64_t inner = out_shape[nd - 1], step = so[nd - 1], rows = t.numel() / inner;
  // Serial: several rows may add into the same output element.
  for (int64_t r = 0; r < rows; ++r) {
    int64_t rem = r, oo = 0;
    for (int64_t d = nd - 2; d >= 0; --d) {
      oo += (rem % out_shape[d]) * so[d];
      rem /= out_shape[d];
    }
    const float* row = pt + r * inner;
    if (step == 0) {
      float s = 0;
      for (int64_t j = 0; j < inner; ++j) s += row[j];
      po[oo] += s;
    } else {
      for (int64_t j = 0; j < inner; ++j) po[oo + j] += row[j];
    }
  }
  return out;
}

template <class F>
static Tensor map_unary(const Tensor& a, F fn) {
  Tensor out = Tensor::empty(a.shape());
  const float* pa = a.data();
  float* po = out.data();
  int64_t n = a.numel();
#pragma omp parallel for simd if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) po[i] = fn(pa[i]);
  return out;
}

static Tensor map_binary(const Tensor& a, const Tensor& b, float (*fn)(float, float)) {
  return broadcast_map(a, b, a.shape(), fn);
}

Var add(const Var& a, const Var& b) {
  Shape s = broadcast_shapes(a.shape(), b.shape(), "add");
  Tensor out = broadcast_map(a.value(), b.value(), s, [](float x, float y) { return x + y; });
  return make_result(out, "add", {a, b}, [](Node& n) {
    if (n.needs(0)) n.inputs[0]->accumulate(sum_to(n.grad, n.inputs[0]->value.shape()));
    if (n.needs(1)) n.inputs[1]->accumulate(sum_to(n.grad, n.inputs[1]->value.shape()));
  });
}

Var sub(const Var& a, const Var& b) {
  Shape s = broadcast_shapes(a.shape(), b.shape(), "sub");
  Tensor out = broadcast_map(a.value(), b.value(), s, [](float x, float y) { return x - y; });
  return make_result(out, "sub", {a, b}, [](Node& n) {
    if (n.needs(0)) n.inputs[0]->accumulate(sum_to(n.grad, n.inputs[0]->value.shape()));
    if (n.needs(1))
      n.inputs[1]->accumulate(sum_to(map_unary(n.grad, [](float g) { return -g; }), n.inputs[1]->value.shape()));
  });
}

Var mul(const Var& a, const Var& b) {
  Shape s = broadcast_shapes(a.shape(), b.shape(), "mul");
  Tensor out = broadcast_map(a.value(), b.value(), s, [](float x, float y) { return x * y; });
  return make_result(out, "mul", {a, b}, [](Node& n) {
    auto mulf = [](float x, float y) { return x * y; };
    const Tensor& va = n.inputs[0]->value;
    const Tensor& vb = n.inputs[1]->value;
    if (n.needs(0)) n.inputs[0]->accumulate(sum_to(map_binary(n.grad, vb, mulf), va.shape()));
    if (n.needs(1)) n.inputs[1]->accumulate(sum_to(map_binary(n.grad, va, mulf), vb.shape()));
  });
}

Var div(const Var& a, const Var& b) {
  Shape s = broadcast_shapes(a.shape(), b.shape(), "div");
  Tensor out = broadcast_map(a.value(), b.value(), s, [](float x, float y) { return x / y; });
  return make_result(out, "div", {a, b}, [out](Node& n) {
    const Tensor& va = n.inputs[0]->value;
    const Tensor& vb = n.inputs[1]->value;
    // d(a/b)/da = 1/b;  d(a/b)/db = -a/b^2 = -out/b
    if (n.needs(0))
      n.inputs[0]->accumulate(sum_to(map_binary(n.grad, vb, [](float g, float y) { return g / y; }), va.shape()));
    if (n.needs(1)) {
      Tensor g_out = map_binary(n.grad, out, [](float g, float o) { return -g * o; });
      n.inputs[1]->accumulate(sum_to(map_binary(g_out, vb, [](float g, float y) { return g / y; }), vb.shape()));
    }
  });
}

Var add(const Var& a, float s) {
  Tensor out = map_unary(a.value(), [s](float x) { return x + s; });
  return make_result(out, "add_scalar", {a}, [](Node& n) { n.inputs[0]->accumulate(n.grad); });
}

Var mul(const Var& a, float s) {
  Tensor out = map_unary(a.value(), [s](float x) { return x * s; });
  return make_result(out, "mul_scalar", {a}, [s](Node& n) {
    n.inputs[0]->accumulate(map_unary(n.grad, [s](float g) { return g * s; }));
  });
}

Var neg(const Var& a) {
  Tensor out = map_unary(a.value(), [](float x) { return -x; });
  return make_result(out, "neg", {a}, [](Node& n) {
    n.inputs[0]->accumulate(map_unary(n.grad, [](float g) { return -g; }));
  });
}

// Unary ops whose derivative is a function of the input (x) or of the output (y); `deriv`
// gets (x, y) and returns dy/dx.
template <class Fwd, class Deriv>
static Var unary_op(const Var& a, const char* name, Fwd fwd, Deriv deriv) {
  Tensor out = map_unary(a.value(), fwd);
  return make_result(out, name, {a}, [out, deriv](Node& n) {
    const Tensor& x = n.inputs[0]->value;
    Tensor g = Tensor::empty(x.shape());
    const float *px = x.data(), *py = out.data(), *pg = n.grad.data();
    float* po = g.data();
    int64_t len = x.numel();
#pragma omp parallel for simd if (len > kParallelMin)
    for (int64_t i = 0; i < len; ++i) po[i] = pg[i] * deriv(px[i], py[i]);
    n.inputs[0]->accumulate(g);
  });
}

Var exp(const Var& a) {
  return unary_op(a, "exp", [](float x) { return std::exp(x); }, [](float, float y) { return y; });
}
Var log(const Var& a) {
  return unary_op(a, "log", [](float x) { return std::log(x); }, [](float x, float) { return 1.f / x; });
}
Var sqrt(const Var& a) {
  return unary_op(a, "sqrt", [](float x) { return std::sqrt(x); }, [](float, float y) { return 0.5f / y; });
}
Var pow(const Var& a, float p) {
  return unary_op(a, "pow", [p](float x) { return std::pow(x, p); },
                  [p](float x, float) { return p * std::pow(x, p - 1.f); });
}
// relu has its own loops: written as selects they vectorize, where the generic unary_op's
// multiply by a 0/1 derivative compiles to a branch per element. As PyTorch (1.13, CPU): the
// forward keeps every x that is not below 0, so NaN stays NaN (a diverging run shows in the loss
// instead of being zeroed here) and -0 stays -0; the backward, like threshold_backward, writes 0
// where the output is <= 0 and passes the gradient elsewhere, NaN included.
Var relu(const Var& a) {
  const Tensor& x = a.value();
  Tensor out = Tensor::empty(x.shape());
  const float* px = x.data();
  float* po = out.data();
  const int64_t n = x.numel();
#pragma omp parallel for simd if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const float v = px[i];
    po[i] = v < 0.f ? 0.f : v;
  }
  // The output is positive (or NaN) exactly where the input is, so backward needs only the output.
  return make_result(out, "relu", {a}, [out](Node& nd) {
    Tensor gx = Tensor::empty(out.shape());
    const float *py = out.data(), *pg = nd.grad.data();
    float* pd = gx.data();
    const int64_t len = out.numel();
#pragma omp parallel for simd if (len > kParallelMin)
    for (int64_t i = 0; i < len; ++i) {
      const float g = pg[i];  // loaded unconditionally, so the select vectorizes without branches
      pd[i] = py[i] <= 0.f ? 0.f : g;
    }
    nd.inputs[0]->accumulate(gx);
  });
}

Var sigmoid(const Var& a) {
  return unary_op(a, "sigmoid", [](float x) { return 1.f / (1.f + std::exp(-x)); },
                  [](float, float y) { return y * (1.f - y); });
}
Var tanh(const Var& a) {
  return unary_op(a, "tanh", [](float x) { return std::tanh(x); }, [](float, float y) { return 1.f - y * y; });
}

namespace {

// splitmix64's output function. Dropout draws random bits as mix(seed + (k + 1) * gamma), the
// k-th output of a splitmix64 stream started at seed: any element's bits can be computed
// directly, so the mask is parallel and the same for every thread count.
inline uint64_t splitmix64_at(uint64_t seed, uint64_t k) {
  uint64_t z = seed + (k + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace

Var dropout(const Var& x, float p, bool training, Generator& gen) {
  SB_CHECK(p >= 0.f && p <= 1.f, "dropout: probability p must be in [0, 1] but got ", p,
           " (input ", x.shape(), ")");
  // As PyTorch: nothing to drop returns the input itself, and draws no random numbers.
  if (!training || p == 0.f || x.numel() == 0) return x;
  const Shape xs = x.shape();
  if (p == 1.f) {
    return make_result(Tensor::zeros(xs), "dropout", {x},
                       [xs](Node& n) { n.inputs[0]->accumulate(Tensor::zeros(xs)); });
  }
  const uint64_t seed = gen.next_u64();
  // Element i is dropped when its 32 random bits, read as a fraction of 2^32, are below p.
  const uint64_t threshold = static_cast<uint64_t>(static_cast<double>(p) * 4294967296.0);
  const float scale = 1.f / (1.f - p);
  const int64_t n = x.numel();
  std::shared_ptr<uint8_t[]> mask(new uint8_t[n]);  // 1 = kept; 1 byte, not a float, per element
  Tensor out = Tensor::empty(xs);
  const float* px = x.value().data();
  float* py = out.data();
  uint8_t* pmask = mask.get();
  const int64_t pairs = (n + 1) / 2;  // each 64-bit draw covers two elements
#pragma omp parallel for schedule(static) if (n > kParallelMin)
  for (int64_t k = 0; k < pairs; ++k) {
    const uint64_t bits = splitmix64_at(seed, static_cast<uint64_t>(k));
    for (int64_t h = 0; h < 2 && 2 * k + h < n; ++h) {
      const int64_t i = 2 * k + h;
      const uint8_t keep = ((h ? bits >> 32 : bits) & 0xFFFFFFFFull) >= threshold;
      pmask[i] = keep;
      py[i] = keep ? px[i] * scale : 0.f;
    }
  }
  return make_result(out, "dropout", {x}, [mask, scale, xs](Node& node) {
    Tensor gx = Tensor::empty(xs);
    const float* pg = node.grad.data();
    const uint8_t* pm = mask.get();
    float* po = gx.data();
    const int64_t n = gx.numel();
#pragma omp parallel for simd if (n > kParallelMin)
    for (int64_t i = 0; i < n; ++i) po[i] = pg[i] * (pm[i] ? scale : 0.f);
    node.inputs[0]->accumulate(gx);
  });
}

}  // namespace sb
