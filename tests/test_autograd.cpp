// The autograd engine: accumulation, no_grad, graph freeing, and error messages.
#include <doctest/doctest.h>

#include "core/ops.h"
#include "gradcheck.h"

using namespace sb;

TEST_CASE("autograd: gradients accumulate when a value feeds several ops") {
  Var x(Tensor::from({3}, {1, 2, 3}), true);
  Var y = sum(x * x + x * 3.0f + x);  // dy/dx = 2x + 4
  y.backward();
  CHECK_CLOSE(x.grad(), Tensor::from({3}, {6, 8, 10}));
}

TEST_CASE("autograd: leaf gradients accumulate across backward calls until zero_grad") {
  Var x(Tensor::from({2}, {1, -1}), true);
  sum(x * 2.0f).backward();
  sum(x * 2.0f).backward();
  CHECK_CLOSE(x.grad(), Tensor::from({2}, {4, 4}));
  x.zero_grad();
  CHECK_FALSE(x.grad().defined());
}

TEST_CASE("autograd: no_grad records no graph") {
  Var x(Tensor::from({2}, {1, 2}), true);
  NoGrad ng;
  Var y = sum(x * x);
  CHECK_FALSE(y.requires_grad());
  CHECK(y.node()->inputs.empty());
  CHECK_THROWS_WITH_AS(y.backward(), doctest::Contains("does not require grad"), Error);
}

TEST_CASE("autograd: inputs that need no grad build no graph") {
  Var x(Tensor::from({2}, {1, 2}), false);
  Var y = exp(x) * x;
  CHECK_FALSE(y.requires_grad());
  CHECK(y.node()->inputs.empty());
}

TEST_CASE("autograd: backward frees the graph and its memory comes back") {
  Generator g(0);
  Var w(Tensor::randn({256, 256}, g), true);
  int64_t before = live_tensor_bytes();
  Var loss;
  {
    Var h = w;
    for (int i = 0; i < 10; ++i) h = tanh(h * 1.5f);  // saves 10 activations of 256 KiB
    loss = sum(h);
  }
  int64_t during = live_tensor_bytes();
  CHECK(during - before > 10 * 256 * 256 * 4);
  loss.backward();
  int64_t after = live_tensor_bytes();
  // What remains: w's gradient (256 KiB) and the scalar loss.
  CHECK(after - before <= 256 * 256 * 4 + 1024);
  CHECK(loss.node()->inputs.empty());
}

TEST_CASE("autograd: a second backward through a freed graph is a clear error") {
  Var x(Tensor::from({2}, {1, 2}), true);
  Var y = sum(x * x);
  y.backward();
  CHECK_THROWS_WITH_AS(y.backward(), doctest::Contains("already freed"), Error);
  // Part of a freed graph reused in a new one is caught too.
  Var a(Tensor::from({2}, {1, 2}), true);
  Var mid = a * 2.0f;
  sum(mid).backward();
  CHECK_THROWS_WITH_AS(sum(mid * 3.0f).backward(), doctest::Contains("already freed"), Error);
}

TEST_CASE("autograd: a deep chain needs no recursion") {
  Var x(Tensor::from({1}, {0.5f}), true);
  Var h = x;
  for (int i = 0; i < 200000; ++i) h = h + 0.0f;
  sum(h).backward();
  CHECK(x.grad()[0] == doctest::Approx(1.0));
  // Dropping a deep graph without backward must not recurse either.
  Var k = x;
  for (int i = 0; i < 200000; ++i) k = k * 1.0f;
  k = Var();
  CHECK(x.defined());
}

TEST_CASE("autograd: backward of a non-scalar needs grad_output") {
  Var x(Tensor::from({2}, {1, 2}), true);
  Var y = x * 2.0f;
  CHECK_THROWS_WITH_AS(y.backward(), doctest::Contains("implicit gradient needs a scalar"), Error);
  y.backward(Tensor::from({2}, {1, 10}));
  CHECK_CLOSE(x.grad(), Tensor::from({2}, {2, 20}));
}
