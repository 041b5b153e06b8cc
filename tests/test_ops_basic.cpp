// Elementwise, reduction, shape and matrix ops: hand-computed values and finite-difference
// gradient checks, plus the proof that the gradient check catches a wrong backward.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "core/ops.h"
#include "gradcheck.h"

using namespace sb;
using sbtest::gradcheck;

static Tensor rnd(Shape s, uint64_t seed, float lo = -1, float hi = 1) {
  Generator g(seed);
  return Tensor::rand(std::move(s), g, lo, hi);
}

TEST_CASE("gradcheck: catches a deliberately wrong backward") {
  // x * x with a backward that forgets the factor 2.
  auto broken_square = [](const Var& x) {
    Tensor out = Tensor::empty(x.shape());
    for (int64_t i = 0; i < out.numel(); ++i) out[i] = x.value()[i] * x.value()[i];
    return make_result(out, "broken_square", {x}, [](Node& n) {
      Tensor g = Tensor::empty(n.grad.shape());
      for (int64_t i = 0; i < g.numel(); ++i) g[i] = n.grad[i] * n.inputs[0]->value[i];  // should be 2x
      n.inputs[0]->accumulate(g);
    });
  };
  auto r = gradcheck([&](const std::vector<Var>& v) { return broken_square(v[0]); }, {rnd({3, 4}, 1)});
  CHECK_FALSE(r.ok);
  // A transposition bug in a matmul-like backward is caught too.
  auto broken_mm = [](const Var& a, const Var& b) {
    Var y = matmul(a, b);
    return make_result(y.value(), "broken_matmul", {a, b}, [](Node& n) {
      const Tensor& vb = n.inputs[1]->value;  // (K, N); grad A should be dC B^T
      Tensor g = Tensor::zeros(n.inputs[0]->value.shape());
      int64_t M = g.size(0), K = g.size(1), N = vb.size(1);
      for (int64_t i = 0; i < M; ++i)
        for (int64_t k = 0; k < K; ++k)
          for (int64_t j = 0; j < N; ++j) g[i * K + k] += n.grad[i * N + j] * vb[(j % K) * N + (k % N)];
      n.inputs[0]->accumulate(g);
    });
  };
  auto r2 = gradcheck([&](const std::vector<Var>& v) { return broken_mm(v[0], v[1]); },
                      {rnd({3, 4}, 2), rnd({4, 5}, 3)});
  CHECK_FALSE(r2.ok);
  // ...while the real ops pass.
  CHECK(gradcheck([](const std::vector<Var>& v) { return v[0] * v[0]; }, {rnd({3, 4}, 1)}).ok);
  CHECK(gradcheck([](const std::vector<Var>& v) { return matmul(v[0], v[1]); }, {rnd({3, 4}, 2), rnd({4, 5}, 3)}).ok);
}

TEST_CASE("elementwise: values with broadcasting") {
  Var a(Tensor::from({2, 3}, {1, 2, 3, 4, 5, 6}));
  Var row(Tensor::from({3}, {10, 20, 30}));
  Var col(Tensor::from({2, 1}, {100, 200}));
  CHECK_CLOSE((a + row).value(), Tensor::from({2, 3}, {11, 22, 33, 14, 25, 36}));
  CHECK_CLOSE((a - col).value(), Tensor::from({2, 3}, {-99, -98, -97, -196, -195, -194}));
  CHECK_CLOSE((a * row).value(), Tensor::from({2, 3}, {10, 40, 90, 40, 100, 180}));
  CHECK_CLOSE((row / a).value(), Tensor::from({2, 3}, {10, 10, 10, 2.5, 4, 5}));
  CHECK_CLOSE((row + col).value(), Tensor::from({2, 3}, {110, 120, 130, 210, 220, 230}));
  CHECK_CLOSE((a * 2.0f + 1.0f).value(), Tensor::from({2, 3}, {3, 5, 7, 9, 11, 13}));
  CHECK_CLOSE((1.0f - a).value(), Tensor::from({2, 3}, {0, -1, -2, -3, -4, -5}));
  Var s(Tensor::scalar(2));
  CHECK_CLOSE((a * s).value(), Tensor::from({2, 3}, {2, 4, 6, 8, 10, 12}));
  CHECK_THROWS_WITH_AS(a + Var(Tensor::zeros({2})), doctest::Contains("add: shapes (2, 3) and (2,) do not broadcast"), Error);
}

TEST_CASE("elementwise: per-channel (1, C, 1, 1) broadcasting and its gradient") {
  Tensor x = rnd({2, 3, 4, 5}, 4);
  Tensor w = rnd({1, 3, 1, 1}, 5);
  Var vx(x), vw(w, true);
  Var y = vx * vw;
  CHECK(y.shape() == Shape{2, 3, 4, 5});
  CHECK(y.value().at({1, 2, 3, 4}) == doctest::Approx(x.at({1, 2, 3, 4}) * w[2]));
  sum(y).backward();
  // d/dw_c = sum of x over (N, H, W) for channel c
  for (int c = 0; c < 3; ++c) {
    double s = 0;
    for (int n = 0; n < 2; ++n)
      for (int i = 0; i < 20; ++i) s += x[(n * 3 + c) * 20 + i];
    CHECK(vw.grad()[c] == doctest::Approx(s).epsilon(1e-5));
  }
  CHECK_GRADCHECK([](const std::vector<Var>& v) { return v[0] * v[1] + v[1]; }, {x, w});
  CHECK_GRADCHECK([](const std::vector<Var>& v) { return v[0] / v[1]; }, {x, rnd({1, 3, 1, 1}, 6, 1, 2)});
  CHECK_GRADCHECK([](const std::vector<Var>& v) { return v[0] - v[1]; }, {x, rnd({4, 1}, 7)});
}

TEST_CASE("elementwise: unary values and gradients") {
  Var x(Tensor::from({4}, {-2, -0.5, 0.5, 2}));
  CHECK_CLOSE(relu(x).value(), Tensor::from({4}, {0, 0, 0.5, 2}));
  CHECK_CLOSE(neg(x).value(), Tensor::from({4}, {2, 0.5, -0.5, -2}));
  CHECK_CLOSE(sigmoid(x).value(), Tensor::from({4}, {0.11920292f, 0.37754067f, 0.62245933f, 0.88079708f}));
  CHECK_CLOSE(tanh(x).value(), Tensor::from({4}, {-0.96402758f, -0.46211716f, 0.46211716f, 0.96402758f}));
  CHECK_CLOSE(exp(x).value(), Tensor::from({4}, {0.13533528f, 0.60653066f, 1.64872127f, 7.3890561f}));
  Var p(Tensor::from({3}, {0.25, 1, 4}));
  CHECK_CLOSE(log(p).value(), Tensor::from({3}, {-1.38629436f, 0, 1.38629436f}));
  CHECK_CLOSE(sqrt(p).value(), Tensor::from({3}, {0.5, 1, 2}));
  CHECK_CLOSE(pow(p, 1.5f).value(), Tensor::from({3}, {0.125, 1, 8}));
  Tensor t = rnd({3, 4}, 8);
  Tensor pos = rnd({3, 4}, 9, 0.5, 2);
  CHECK_GRADCHECK([](const std::vector<Var>& v) { return exp(v[0]); }, {t});
  CHECK_GRADCHECK([](const std::vector<Var>& v) { return log(v[0]); }, {pos});
  CHECK_GRADCHECK([](const std::vector<Var>& v) { return sqrt(v[0]); }, {pos});
  CHECK_GRADCHECK([](const std::vector<Var>& v) { return pow(v[0], 2.5f); }, {pos});
  CHECK_GRADCHECK([](const std::vector<Var>& v) { return sigmoid(v[0]); }, {t});
  CHECK_GRADCHECK([](const std::vector<Var>& v) { return tanh(v[0]); }, {t});
  CHECK_GRADCHECK([](const std::vector<Var>& v) { return -v[0] * 3.0f; }, {t});
  // relu away from its kink, where finite differences are meaningful
  Tensor away = Tensor::from({4}, {-1.5, -0.3, 0.4, 1.2});
  CHECK_GRADCHECK([](const std::vector<Var>& v) { return relu(v[0]); }, {away});
}

TEST_CASE("reduce: sum and mean over all and along axes") {
  Var x(Tensor::arange(24).reshape({2, 3, 4}));
  CHECK(sum(x).item() == doctest::Approx(276));
  CHECK(mean(x).item() == doctest::Approx(11.5));
  CHECK_CLOSE(sum(x, {1}).value(), Tensor::from({2, 4}, {12, 15, 18, 21, 48, 51, 54, 57}));
  CHECK(sum(x, {1}, true).shape() == Shape{2, 1, 4});
  CHECK_CLOSE(mean(x, {0, 2}).value(), Tensor::from({3}, {7.5, 11.5, 15.5}));
  CHECK_CLOSE(sum(x, {-1}).value(), Tensor::from({2, 3}, {6, 22, 38, 54, 70, 86}));
  CHECK_THROWS_WITH_AS(sum(x, {3}), doctest::Contains("sum: axis 3 out of range for a 3-d tensor"), Error);
  Tensor t = rnd({2, 3, 4}, 10);
  CHECK_GRADCHECK([](const std::vector<Var>& v) { return sum(v[0], {1}); }, {t});
  CHECK_GRADCHECK([](const std::vector<Var>& v) { return mean(v[0], {0, 2}, true); }, {t});
  CHECK_GRADCHECK([](const std::vector<Var>& v) { return mean(v[0]); }, {t});
}

TEST_CASE("shape: reshape, concat and slice") {
  Var x(Tensor::arange(6).reshape({2, 3}));
  Var y(Tensor::arange(4).reshape({2, 2}));
  Var c = concat({x, y}, 1);
  CHECK_CLOSE(c.value(), Tensor::from({2, 5}, {0, 1, 2, 0, 1, 3, 4, 5, 2, 3}));
  CHECK_CLOSE(concat({x, x}, 0).value(), Tensor::from({4, 3}, {0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5}));
  CHECK_THROWS_WITH_AS(concat({x, y}, 0), doctest::Contains("concat: along axis 0 all other dimensions must match, got (2, 3), (2, 2)"), Error);
  CHECK_CLOSE(slice(x, 1, 1, 3).value(), Tensor::from({2, 2}, {1, 2, 4, 5}));
  CHECK_CLOSE(slice(x, 1, 0, 3, 2).value(), Tensor::from({2, 2}, {0, 2, 3, 5}));
  CHECK_CLOSE(slice(x, -1, -1, 100).value(), Tensor::from({2, 1}, {2, 5}));
  CHECK(slice(x, 0, 5, 9).shape() == Shape{0, 3});
  CHECK(reshape(x, {3, -1}).shape() == Shape{3, 2});
  Tensor a = rnd({2, 3, 4}, 11), b = rnd({2, 1, 4}, 12);
  CHECK_GRADCHECK([](const std::vector<Var>& v) { return concat({v[0], v[1], v[0]}, 1); }, {a, b});
  CHECK_GRADCHECK([](const std::vector<Var>& v) { return slice(v[0], 2, 1, 4, 2); }, {a});
  CHECK_GRADCHECK([](const std::vector<Var>& v) { return reshape(v[0], {4, 6}) * 2.0f; }, {a});
}

TEST_CASE("linalg: matmul and linear") {
  Var a(Tensor::from({2, 3}, {1, 2, 3, 4, 5, 6}));
  Var b(Tensor::from({3, 2}, {7, 8, 9, 10, 11, 12}));
  CHECK_CLOSE(matmul(a, b).value(), Tensor::from({2, 2}, {58, 64, 139, 154}));
  Var w(Tensor::from({2, 3}, {1, 0, -1, 2, 1, 0}));
  Var bias(Tensor::from({2}, {0.5, -0.5}));
  CHECK_CLOSE(linear(a, w, bias).value(), Tensor::from({2, 2}, {-1.5, 3.5, -1.5, 12.5}));
  CHECK_THROWS_WITH_AS(matmul(a, a), doctest::Contains("matmul: (2, 3) x (2, 3): inner dimensions 3 and 2 differ"), Error);
  CHECK_THROWS_WITH_AS(linear(a, b), doctest::Contains("linear: input (2, 3) has 3 features but weight (3, 2) expects 2"), Error);
  CHECK_GRADCHECK([](const std::vector<Var>& v) { return matmul(v[0], v[1]); }, {rnd({4, 5}, 13), rnd({5, 3}, 14)});
  CHECK_GRADCHECK([](const std::vector<Var>& v) { return linear(v[0], v[1], v[2]); },
                  {rnd({4, 5}, 15), rnd({3, 5}, 16), rnd({3}, 17)});
  CHECK_GRADCHECK([](const std::vector<Var>& v) { return linear(v[0], v[1]); }, {rnd({4, 5}, 15), rnd({3, 5}, 16)});
}

TEST_CASE("elementwise: relu follows PyTorch at NaN, -0 and the infinities") {
  // PyTorch 1.13 on the CPU: relu([nan, -0., 0., -1., 2., inf, -inf]) = [nan, -0., 0., 0., 2., inf,
  // 0.], and the gradient of its sum is [1, 0, 0, 0, 1, 1, 0] (threshold_backward passes the
  // gradient unless the output is <= 0).
  Var x(Tensor::from({7}, {NAN, -0.f, 0.f, -1.f, 2.f, INFINITY, -INFINITY}), true);
  Var y = relu(x);
  y.backward(Tensor::ones({7}));
  const Tensor& v = y.value();
  CHECK(std::isnan(v[0]));
  CHECK(v[1] == 0.f);
  CHECK(std::signbit(v[1]));
  CHECK(v[2] == 0.f);
  CHECK(!std::signbit(v[2]));
  CHECK(v[3] == 0.f);
  CHECK(v[4] == 2.f);
  CHECK(v[5] == INFINITY);
  CHECK(v[6] == 0.f);
  const std::vector<float> want_grad = {1, 0, 0, 0, 1, 1, 0};
  for (int64_t i = 0; i < 7; ++i) {
    CAPTURE(i);
    CHECK(x.grad()[i] == want_grad[i]);
  }
}
