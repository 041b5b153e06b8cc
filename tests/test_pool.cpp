// max_pool2d, avg_pool2d and upsample: PyTorch reference values (tools/scripts/fixtures/fx_pool.py),
// finite-difference gradients, PyTorch's output-size rules, error messages, and max_pool2d's
// 2x2 fast path against the definition.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "core/ops.h"
#include "fixtures.h"
#include "gradcheck.h"
#include "layers/pool/ops.h"

using namespace sb;

namespace {

// Runs `op` on the fixture's x, compares the output with PyTorch's, then backpropagates the
// stored upstream grad gy and compares the input grad.
void check_fixture(const std::string& name, const std::function<Var(const Var&)>& op) {
  INFO("fixture " << name);
  auto f = sbtest::load_fixture(name);
  Var x(f.get_float("x").clone(), true);
  Var y = op(x);
  CHECK_CLOSE(y.value(), f.get_float("y"));
  y.backward(f.get_float("gy"));
  CHECK_CLOSE(x.grad(), f.get_float("gx"));
}

// Distinct values at least 0.05 apart in random order, so no max-pool window holds two values
// within the finite-difference step of each other (the max is not differentiable at a tie).
Tensor distinct_values(Shape shape, uint64_t seed) {
  Tensor t = Tensor::empty(std::move(shape));
  Generator g(seed);
  for (int64_t i = 0; i < t.numel(); ++i) t[i] = static_cast<float>(i);
  for (int64_t i = t.numel() - 1; i > 0; --i) std::swap(t[i], t[static_cast<int64_t>(g.below(i + 1))]);
  for (auto& v : t) v = (v - t.numel() / 2.f) * 0.05f;
  return t;
}

Pool2dOptions pool(Pair kernel, Pair stride, Pair padding = 0, bool ceil_mode = false,
                   bool count_include_pad = true) {
  Pool2dOptions o;
  o.kernel = kernel;
  o.stride = stride;
  o.padding = padding;
  o.ceil_mode = ceil_mode;
  o.count_include_pad = count_include_pad;
  return o;
}

}  // namespace

TEST_CASE("max_pool2d: matches PyTorch values and gradients") {
  check_fixture("pool_max_k2s2", [](const Var& x) { return max_pool2d(x, pool(2, 2)); });
  check_fixture("pool_max_k3s2p1", [](const Var& x) { return max_pool2d(x, pool(3, 2, 1)); });
  check_fixture("pool_max_k3s2_ceil", [](const Var& x) { return max_pool2d(x, pool(3, 2, 0, true)); });
  check_fixture("pool_max_k2s2p1_ceil", [](const Var& x) { return max_pool2d(x, pool(2, 2, 1, true)); });
  check_fixture("pool_max_k3x2s2x1", [](const Var& x) { return max_pool2d(x, pool({3, 2}, {2, 1})); });
}

TEST_CASE("max_pool2d: ties go to the first element of the window, as in PyTorch") {
  // Integer inputs in {0, 1, 2}: most 3x3 windows hold several copies of their max, and the
  // gradient lands on whichever one PyTorch chose.
  check_fixture("pool_max_ties", [](const Var& x) { return max_pool2d(x, pool(3, 1, 1)); });
}

TEST_CASE("max_pool2d: stride defaults to the kernel") {
  Pool2dOptions o;
  o.kernel = 2;
  CHECK(max_pool2d(Var(Tensor::zeros({1, 1, 6, 4})), o).shape() == Shape{1, 1, 3, 2});
}

TEST_CASE("max_pool2d: output size follows PyTorch's ceil_mode rule") {
  auto out_hw = [](int64_t h, int64_t w, Pool2dOptions o) {
    Shape s = max_pool2d(Var(Tensor::zeros({1, 1, h, w})), o).shape();
    return Shape{s[2], s[3]};
  };
  CHECK(out_hw(7, 8, pool(2, 2)) == Shape{3, 4});
  CHECK(out_hw(7, 8, pool(2, 2, 0, true)) == Shape{4, 4});
  // H = 5, k 2, s 2, p 1: ceil would give 4 rows, but the 4th window would start at row 6, in
  // the right padding (5 + 1 = 6), so PyTorch keeps 3. W = 8 keeps its 5th window (starts at 7).
  CHECK(out_hw(5, 8, pool(2, 2, 1, true)) == Shape{3, 5});
  CHECK(out_hw(5, 8, pool(2, 2, 1, false)) == Shape{3, 5});
  CHECK(out_hw(6, 6, pool(3, 2, 1, true)) == Shape{4, 4});
  CHECK(out_hw(6, 6, pool(3, 2, 1, false)) == Shape{3, 3});
}

TEST_CASE("max_pool2d: NaN in a window propagates, and its gradient goes to the last NaN") {
  // PyTorch's rule "v > best || isnan(v)" keeps updating on every NaN (checked with torch 1.13).
  Var x(Tensor::from({1, 1, 2, 2}, {1.f, NAN, NAN, 2.f}), true);
  Var y = max_pool2d(x, pool(2, 2));
  CHECK(std::isnan(y.item()));
  y.backward(Tensor::ones({1, 1, 1, 1}));
  CHECK_CLOSE(x.grad(), Tensor::from({1, 1, 2, 2}, {0.f, 0.f, 1.f, 0.f}), 0.0);
}

TEST_CASE("max_pool2d: gradcheck") {
  Tensor x = distinct_values({2, 2, 7, 6}, 1);
  for (Pool2dOptions o : {pool(2, 2), pool(3, 2, 1), pool(3, 2, 1, true), pool(2, 2, 1, true),
                          pool({3, 2}, {1, 2}, {1, 0})}) {
    CHECK_GRADCHECK([o](const std::vector<Var>& v) { return max_pool2d(v[0], o); }, {x});
  }
}

TEST_CASE("max_pool2d: rejects bad inputs and options, naming every shape") {
  Var x(Tensor::zeros({2, 3, 8, 8}));
  CHECK_THROWS_WITH_AS(max_pool2d(Var(Tensor::zeros({3, 8})), pool(2, 2)),
                       "max_pool2d: expected a 4-d input (N, C, H, W) but got (3, 8)", Error);
  CHECK_THROWS_WITH_AS(max_pool2d(x, pool(0, 2)),
                       "max_pool2d: kernel must be positive but got (0, 0) for input (2, 3, 8, 8)", Error);
  CHECK_THROWS_WITH_AS(max_pool2d(x, pool(2, {1, 0})),
                       "max_pool2d: stride must be positive but got (1, 0) for input (2, 3, 8, 8)", Error);
  CHECK_THROWS_WITH_AS(max_pool2d(x, pool(3, 1, -1)),
                       "max_pool2d: padding must be non-negative but got (-1, -1) for input (2, 3, 8, 8)",
                       Error);
  CHECK_THROWS_WITH_AS(max_pool2d(x, pool(3, 1, {1, 2})),
                       "max_pool2d: padding (1, 2) must be at most half the kernel (3, 3) (as in "
                       "PyTorch), for input (2, 3, 8, 8)",
                       Error);
  CHECK_THROWS_WITH_AS(max_pool2d(Var(Tensor::zeros({1, 1, 2, 8})), pool(3, 1)),
                       "max_pool2d: output size (0, 6) is too small (input (1, 1, 2, 8), kernel (3, 3), "
                       "stride (1, 1), padding (0, 0), ceil_mode false)",
                       Error);
}

TEST_CASE("avg_pool2d: matches PyTorch values and gradients") {
  check_fixture("pool_avg_k2s2", [](const Var& x) { return avg_pool2d(x, pool(2, 2)); });
  check_fixture("pool_avg_k3s2p1", [](const Var& x) { return avg_pool2d(x, pool(3, 2, 1)); });
  check_fixture("pool_avg_k3s2p1_nopad", [](const Var& x) { return avg_pool2d(x, pool(3, 2, 1, false, false)); });
  check_fixture("pool_avg_k3s2p1_ceil", [](const Var& x) { return avg_pool2d(x, pool(3, 2, 1, true)); });
  check_fixture("pool_avg_k3s2p1_ceil_nopad",
                [](const Var& x) { return avg_pool2d(x, pool(3, 2, 1, true, false)); });
  check_fixture("pool_avg_k2s2p1_ceil", [](const Var& x) { return avg_pool2d(x, pool(2, 2, 1, true)); });
}

TEST_CASE("avg_pool2d: divisors by hand") {
  // (1, 1, 3, 3) of ones, k 2, s 2, p 1: the four 2x2 windows hold 1, 2, 2 and 4 real cells.
  // Counting padding they divide by 4; not counting it, by their real cells only.
  Tensor ones = Tensor::ones({1, 1, 3, 3});
  Tensor with_pad = avg_pool2d(Var(ones), pool(2, 2, 1)).value();
  CHECK_CLOSE(with_pad, Tensor::from({1, 1, 2, 2}, {0.25f, 0.5f, 0.5f, 1.f}));
  Tensor without_pad = avg_pool2d(Var(ones), pool(2, 2, 1, false, false)).value();
  CHECK_CLOSE(without_pad, Tensor::ones({1, 1, 2, 2}));
  // ceil_mode on a (1, 1, 1, 3) row, k 2, s 2: the last window overhangs the input by one cell
  // with no padding there, so it averages over 1 cell, not 2.
  Tensor row = Tensor::from({1, 1, 1, 3}, {2.f, 4.f, 6.f});
  CHECK_CLOSE(avg_pool2d(Var(row), pool({1, 2}, {1, 2}, 0, true)).value(), Tensor::from({1, 1, 1, 2}, {3.f, 6.f}));
  // The same along H, where the rule is applied separately.
  Tensor col = row.clone().reshape({1, 1, 3, 1});
  CHECK_CLOSE(avg_pool2d(Var(col), pool({2, 1}, {2, 1}, 0, true)).value(), Tensor::from({1, 1, 2, 1}, {3.f, 6.f}));
}

TEST_CASE("avg_pool2d: gradcheck") {
  Generator g(2);
  Tensor x = Tensor::randn({2, 2, 7, 6}, g);
  for (Pool2dOptions o : {pool(2, 2), pool(3, 2, 1), pool(3, 2, 1, false, false), pool(3, 2, 1, true),
                          pool(3, 2, 1, true, false), pool({3, 2}, {1, 2}, {1, 0})}) {
    CHECK_GRADCHECK([o](const std::vector<Var>& v) { return avg_pool2d(v[0], o); }, {x});
  }
}

TEST_CASE("avg_pool2d: rejects bad inputs and options, naming every shape") {
  CHECK_THROWS_WITH_AS(avg_pool2d(Var(Tensor::zeros({4, 8, 8})), pool(2, 2)),
                       "avg_pool2d: expected a 4-d input (N, C, H, W) but got (4, 8, 8)", Error);
  CHECK_THROWS_WITH_AS(avg_pool2d(Var(Tensor::zeros({1, 1, 8, 8})), pool(2, 2, 2)),
                       "avg_pool2d: padding (2, 2) must be at most half the kernel (2, 2) (as in "
                       "PyTorch), for input (1, 1, 8, 8)",
                       Error);
  CHECK_THROWS_WITH_AS(avg_pool2d(Var(Tensor::zeros({1, 1, 8, 1})), pool(2, 2)),
                       doctest::Contains("avg_pool2d: output size (4, 0) is too small"), Error);
}

TEST_CASE("upsample: nearest matches PyTorch values and gradients") {
  const UpsampleMode m = UpsampleMode::Nearest;
  check_fixture("upsample_nearest_up2x", [m](const Var& x) { return upsample(x, 10, 12, m); });
  check_fixture("upsample_nearest_up", [m](const Var& x) { return upsample(x, 8, 11, m); });
  check_fixture("upsample_nearest_down", [m](const Var& x) { return upsample(x, 3, 4, m); });
  check_fixture("upsample_nearest_mixed", [m](const Var& x) { return upsample(x, 7, 3, m); });
  // Sizes where PyTorch's float arithmetic picks a different source row than exact arithmetic.
  check_fixture("upsample_nearest_float_h", [m](const Var& x) { return upsample(x, 22, 3, m); });
  check_fixture("upsample_nearest_float_w", [m](const Var& x) { return upsample(x, 3, 46, m); });
}

TEST_CASE("upsample: bilinear matches PyTorch values and gradients") {
  const UpsampleMode m = UpsampleMode::Bilinear;
  check_fixture("upsample_bilinear_up2x", [m](const Var& x) { return upsample(x, 10, 12, m); });
  check_fixture("upsample_bilinear_up", [m](const Var& x) { return upsample(x, 8, 11, m); });
  check_fixture("upsample_bilinear_down", [m](const Var& x) { return upsample(x, 3, 4, m); });
  check_fixture("upsample_bilinear_mixed", [m](const Var& x) { return upsample(x, 7, 3, m); });
}

TEST_CASE("upsample: same size is the identity") {
  Generator g(3);
  Tensor x = Tensor::randn({1, 2, 4, 5}, g);
  for (UpsampleMode m : {UpsampleMode::Nearest, UpsampleMode::Bilinear})
    CHECK_CLOSE(upsample(Var(x), 4, 5, m).value(), x, 0.0);
}

TEST_CASE("upsample: gradcheck") {
  Generator g(4);
  Tensor x = Tensor::randn({2, 2, 5, 6}, g);
  for (UpsampleMode m : {UpsampleMode::Nearest, UpsampleMode::Bilinear})
    for (Shape size : {Shape{10, 12}, Shape{8, 11}, Shape{3, 4}, Shape{7, 3}}) {
      INFO("mode " << (m == UpsampleMode::Nearest ? "nearest" : "bilinear") << " to " << shape_str(size));
      CHECK_GRADCHECK([m, size](const std::vector<Var>& v) { return upsample(v[0], size[0], size[1], m); },
                      {x});
    }
}

TEST_CASE("upsample: rejects bad inputs, naming every shape") {
  CHECK_THROWS_WITH_AS(upsample(Var(Tensor::zeros({2, 5, 6})), 4, 4, UpsampleMode::Nearest),
                       "upsample: expected a 4-d input (N, C, H, W) but got (2, 5, 6)", Error);
  CHECK_THROWS_WITH_AS(upsample(Var(Tensor::zeros({1, 2, 5, 6})), 0, 4, UpsampleMode::Bilinear),
                       "upsample: output size (0, 4) must be positive (input (1, 2, 5, 6))", Error);
  CHECK_THROWS_WITH_AS(upsample(Var(Tensor::zeros({1, 2, 0, 6})), 3, 4, UpsampleMode::Bilinear),
                       "upsample: input (1, 2, 0, 6) has an empty plane (output size (3, 4))", Error);
}

namespace {

// max_pool2d by its definition, one window at a time, with PyTorch's rule: scan the window in
// row-major order, take v when v > best or v is NaN. Returns the output and the input grad for
// upstream grad gy (each window's grad to its winner, summed where windows overlap).
void max_pool_reference(const Tensor& x, int64_t k, int64_t s, int64_t OH, int64_t OW, const Tensor& gy,
                        Tensor& y, Tensor& gx) {
  const int64_t planes = x.size(0) * x.size(1), H = x.size(2), W = x.size(3);
  y = Tensor::empty({x.size(0), x.size(1), OH, OW});
  gx = Tensor::zeros(x.shape());
  for (int64_t p = 0; p < planes; ++p)
    for (int64_t oh = 0; oh < OH; ++oh)
      for (int64_t ow = 0; ow < OW; ++ow) {
        float best = -std::numeric_limits<float>::infinity();
        int64_t arg = -1;
        for (int64_t h = oh * s; h < std::min(oh * s + k, H); ++h)
          for (int64_t w = ow * s; w < std::min(ow * s + k, W); ++w) {
            const float v = x[(p * H + h) * W + w];
            if (arg < 0 || v > best || std::isnan(v)) best = v, arg = h * W + w;
          }
        y[(p * OH + oh) * OW + ow] = best;
        gx[p * H * W + arg] += gy[(p * OH + oh) * OW + ow];
      }
}

bool same_bits(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape()) return false;
  for (int64_t i = 0; i < a.numel(); ++i)
    if (!(a[i] == b[i] || (std::isnan(a[i]) && std::isnan(b[i])))) return false;
  return true;
}

}  // namespace

TEST_CASE("max_pool2d: the 2x2 stride-2 fast path equals the definition (ties, NaN, -inf, odd sizes)") {
  Generator gen(77);
  struct Case {
    Shape shape;
    bool ceil_mode;
  };
  // Odd sizes in floor mode drop the last row/column (still the fast path); ceil_mode on odd
  // sizes has clipped windows and takes the general loop, checked against the same definition.
  std::vector<Case> cases = {{{1, 1, 2, 2}, false}, {{2, 3, 6, 8}, false}, {{1, 2, 7, 5}, false},
                             {{2, 16, 64, 64}, false}, {{1, 2, 7, 5}, true}, {{1, 1, 3, 4}, false}};
  for (const Case& c : cases) {
    CAPTURE(shape_str(c.shape));
    CAPTURE(c.ceil_mode);
    Tensor x = Tensor::empty(c.shape);
    // Few distinct values, so windows hold ties; a sprinkle of NaN and -inf.
    for (auto& v : x) {
      const uint64_t r = gen.below(20);
      v = r == 0 ? std::numeric_limits<float>::quiet_NaN()
          : r == 1 ? -std::numeric_limits<float>::infinity()
                   : static_cast<float>(gen.below(4));
    }
    Var xv(x.clone(), true);
    Var y = max_pool2d(xv, pool(2, 2, 0, c.ceil_mode));
    const int64_t OH = y.size(2), OW = y.size(3);
    Tensor gy = Tensor::randn(y.shape(), gen);
    y.backward(gy);
    Tensor y_ref, gx_ref;
    max_pool_reference(x, 2, 2, OH, OW, gy, y_ref, gx_ref);
    CHECK(same_bits(y.value(), y_ref));
    CHECK(same_bits(xv.grad(), gx_ref));
  }
}
