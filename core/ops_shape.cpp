// Shape ops: reshape (a view), concat along any axis, and strided slicing, with backward.
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/ops.h"

namespace sb {

namespace {
// One contiguous copy of n floats.
struct Copy {
  float* dst;
  const float* src;
  int64_t n;
};

// Adds the copy of n floats, cut into pieces of at most kPiece floats, to `copies`.
constexpr int64_t kPiece = int64_t(1) << 13;
void add_copy(std::vector<Copy>& copies, float* dst, const float* src, int64_t n) {
  for (int64_t k = 0; k < n; k += kPiece) copies.push_back({dst + k, src + k, std::min(kPiece, n - k)});
}

// Runs the copies, on the threads when they move at least 2^15 floats (concat's copies ran on
// the main thread alone: about 1.7% of a 1-thread unet-s step, forward and backward).
void run_copies(const std::vector<Copy>& copies) {
  int64_t total = 0;
  for (const Copy& c : copies) total += c.n;
  const int64_t count = static_cast<int64_t>(copies.size());
#pragma omp parallel for schedule(static) if (!omp_in_parallel() && total >= (int64_t(1) << 15) && count > 1)
  for (int64_t i = 0; i < count; ++i) std::memcpy(copies[i].dst, copies[i].src, copies[i].n * sizeof(float));
}
}  // namespace

Var reshape(const Var& a, Shape shape) {
  Tensor out = a.value().reshape(std::move(shape));  // validates, shares storage
  Shape in_shape = a.shape();
  return make_result(out, "reshape", {a},
                     [in_shape](Node& n) { n.inputs[0]->accumulate(n.grad.reshape(in_shape)); });
}

// Views a tensor as (outer, axis, inner) around `axis`.
struct AxisView {
  int64_t outer = 1, len = 1, inner = 1;
};
static AxisView axis_view(const Shape& s, int64_t axis) {
  AxisView v;
  for (int64_t d = 0; d < axis; ++d) v.outer *= s[d];
  v.len = s[axis];
  for (int64_t d = axis + 1; d < static_cast<int64_t>(s.size()); ++d) v.inner *= s[d];
  return v;
}

Var concat(const std::vector<Var>& parts, int64_t axis) {
  SB_CHECK(!parts.empty(), "concat: needs at least one tensor");
  const Shape& first = parts[0].shape();
  int64_t nd = static_cast<int64_t>(first.size());
  SB_CHECK(nd > 0, "concat: cannot concatenate 0-d tensors");
  SB_CHECK(axis >= -nd && axis < nd, "concat: axis ", axis, " out of range for ", nd, "-d tensors");
  if (axis < 0) axis += nd;
  Shape out_shape = first;
  out_shape[axis] = 0;
  for (size_t i = 0; i < parts.size(); ++i) {
    const Shape& s = parts[i].shape();
    bool ok = static_cast<int64_t>(s.size()) == nd;
    for (int64_t d = 0; ok && d < nd; ++d) ok = d == axis || s[d] == first[d];
    if (!ok) {
      std::string all;
      for (const Var& p : parts) all += (all.empty() ? "" : ", ") + shape_str(p.shape());
      fail("concat: along axis ", axis, " all other dimensions must match, got ", all);
    }
    out_shape[axis] += s[axis];
  }
  Tensor out = Tensor::empty(out_shape);
  AxisView ov = axis_view(out_shape, axis);
  std::vector<int64_t> offsets;  // where each part starts along the axis
  int64_t off = 0;
  std::vector<Copy> copies;
  for (const Var& p : parts) {
    offsets.push_back(off);
    int64_t row = p.shape()[axis] * ov.inner;  // contiguous run per outer index
    const float* src = p.value().data();
    float* dst = out.data() + off * ov.inner;
    for (int64_t o = 0; o < ov.outer; ++o) add_copy(copies, dst + o * ov.len * ov.inner, src + o * row, row);
    off += p.shape()[axis];
  }
  run_copies(copies);
  return make_result(out, "concat", parts, [axis, offsets, ov](Node& n) {
    for (size_t i = 0; i < n.inputs.size(); ++i) {
      if (!n.needs(i)) continue;
      const Shape& s = n.inputs[i]->value.shape();
      Tensor g = Tensor::empty(s);
      int64_t row = s[axis] * ov.inner;
      const float* src = n.grad.data() + offsets[i] * ov.inner;
      std::vector<Copy> copies;
      for (int64_t o = 0; o < ov.outer; ++o) add_copy(copies, g.data() + o * row, src + o * ov.len * ov.inner, row);
      run_copies(copies);
      n.inputs[i]->accumulate(g);
    }
  });
}

Var slice(const Var& a, int64_t axis, int64_t start, int64_t end, int64_t step) {
  int64_t nd = a.dim();
  SB_CHECK(nd > 0, "slice: cannot slice a 0-d tensor");
  SB_CHECK(axis >= -nd && axis < nd, "slice: axis ", axis, " out of range for shape ", a.shape());
  SB_CHECK(step > 0, "slice: step must be positive, got ", step);
  if (axis < 0) axis += nd;
  int64_t len = a.shape()[axis];
  // Python's clamping: negative indices count from the end, then clamp to [0, len].
  auto clamp = [len](int64_t i) {
    if (i < 0) i += len;
    return std::min(std::max<int64_t>(i, 0), len);
  };
  start = clamp(start);
  end = clamp(end);
  int64_t count = end > start ? (end - start + step - 1) / step : 0;
  Shape out_shape = a.shape();
  out_shape[axis] = count;
  Tensor out = Tensor::empty(out_shape);
  AxisView iv = axis_view(a.shape(), axis);
  const float* src = a.value().data();
  for (int64_t o = 0; o < iv.outer; ++o)
    for (int64_t k = 0; k < count; ++k)
      std::memcpy(out.data() + (o * count + k) * iv.inner,
                  src + (o * iv.len + start + k * step) * iv.inner, iv.inner * sizeof(float));
  Shape in_shape = a.shape();
  return make_result(out, "slice", {a}, [in_shape, iv, count, start, step](Node& n) {
    Tensor g = Tensor::zeros(in_shape);
    for (int64_t o = 0; o < iv.outer; ++o)
      for (int64_t k = 0; k < count; ++k)
        std::memcpy(g.data() + (o * iv.len + start + k * step) * iv.inner,
                    n.grad.data() + (o * count + k) * iv.inner, iv.inner * sizeof(float));
    n.inputs[0]->accumulate(g);
  });
}

}  // namespace sb
