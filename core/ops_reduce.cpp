// Reductions: sum and mean over all elements or along axes, with their backward (a broadcast).
#include "core/ops.h"

namespace sb {

// Sorted, de-duplicated, non-negative axes; empty input means all axes.
static std::vector<int64_t> normalize_axes(std::vector<int64_t> axes, int64_t nd, const char* op) {
  if (axes.empty()) {
    for (int64_t d = 0; d < nd; ++d) axes.push_back(d);
    return axes;
  }
  for (auto& a : axes) {
    SB_CHECK(a >= -nd && a < nd, op, ": axis ", a, " out of range for a ", nd, "-d tensor");
    if (a < 0) a += nd;
  }
  std::sort(axes.begin(), axes.end());
  axes.erase(std::unique(axes.begin(), axes.end()), axes.end());
  return axes;
}

// Shape with the reduced axes kept as size 1.
static Shape keepdim_shape(const Shape& s, const std::vector<int64_t>& axes) {
  Shape k = s;
  for (int64_t a : axes) k[a] = 1;
  return k;
}

// Broadcasts `g` (of shape `small`, which broadcasts to `big`) up to `big`.
static Tensor expand_to(const Tensor& g, const Shape& big) {
  Tensor zero = Tensor::zeros(big);
  // zero + g with broadcasting; reuses the elementwise kernel through a throwaway graph-free add.
  NoGrad ng;
  return add(Var(zero), Var(g)).value();
}

// Sums over `axes` into a tensor of keepdim shape. Accumulates in double per output element.
static Tensor reduce_sum(const Tensor& x, const std::vector<int64_t>& axes) {
  Shape ks = keepdim_shape(x.shape(), axes);
  if (ks == x.shape()) return x.clone();
  // sum_to accumulates in float per row then adds; do it in double here for accuracy on
  // large reductions: view x as (outer, reduced..., inner) is not general, so use sum_to when
  // the reduced axes are not a contiguous block, and a direct (outer, mid, inner) loop when
  // they are.
  int64_t nd = x.dim();
  bool contiguous_block = axes.back() - axes.front() + 1 == static_cast<int64_t>(axes.size());
  if (!contiguous_block) return sum_to(x, ks);
  int64_t outer = 1, mid = 1, inner = 1;
  for (int64_t d = 0; d < axes.front(); ++d) outer *= x.shape()[d];
  for (int64_t d = axes.front(); d <= axes.back(); ++d) mid *= x.shape()[d];
  for (int64_t d = axes.back() + 1; d < nd; ++d) inner *= x.shape()[d];
  Tensor out = Tensor::empty(ks);
  const float* px = x.data();
  float* po = out.data();
#pragma omp parallel for collapse(2) if (outer * inner * mid > (1 << 15))
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      double s = 0;
      const float* base = px + o * mid * inner + i;
      for (int64_t m = 0; m < mid; ++m) s += base[m * inner];
      po[o * inner + i] = static_cast<float>(s);
    }
  return out;
}

static Shape drop_axes(const Shape& s, const std::vector<int64_t>& axes) {
  Shape r;
  for (int64_t d = 0; d < static_cast<int64_t>(s.size()); ++d)
    if (!std::binary_search(axes.begin(), axes.end(), d)) r.push_back(s[d]);
  return r;
}

static Var reduce(const Var& a, std::vector<int64_t> axes_in, bool keepdim, bool is_mean) {
  const char* op = is_mean ? "mean" : "sum";
  auto axes = normalize_axes(std::move(axes_in), a.dim(), op);
  Shape in_shape = a.shape();
  Shape ks = keepdim_shape(in_shape, axes);
  int64_t count = 1;
  for (int64_t ax : axes) count *= in_shape[ax];
  Tensor out = reduce_sum(a.value(), axes);
  if (is_mean) {
    float inv = 1.f / static_cast<float>(count);
    for (auto& v : out) v *= inv;
  }
  Shape out_shape = keepdim ? ks : drop_axes(in_shape, axes);
  out = out.reshape(out_shape);
  return make_result(out, op, {a}, [in_shape, ks, count, is_mean](Node& n) {
    Tensor g = expand_to(n.grad.reshape(ks), in_shape);
    if (is_mean) {
      float inv = 1.f / static_cast<float>(count);
      for (auto& v : g) v *= inv;
    }
    n.inputs[0]->accumulate(g);
  });
}

Var sum(const Var& a) { return reduce(a, {}, false, false); }
Var sum(const Var& a, std::vector<int64_t> axes, bool keepdim) {
  return reduce(a, std::move(axes), keepdim, false);
}
Var mean(const Var& a) { return reduce(a, {}, false, true); }
Var mean(const Var& a, std::vector<int64_t> axes, bool keepdim) {
  return reduce(a, std::move(axes), keepdim, true);
}

}  // namespace sb
