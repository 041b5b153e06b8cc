// Tensor storage, factories, reshape, the seeded generator and the thread setting.
#include <doctest/doctest.h>

#include <cstdlib>

#include "core/tensor.h"
#include "core/threads.h"

using namespace sb;

TEST_CASE("tensor: copies share storage, clone copies data") {
  Tensor a = Tensor::zeros({2, 3});
  Tensor b = a;
  b[4] = 7;
  CHECK(a.at({1, 1}) == 7);
  Tensor c = a.clone();
  c[4] = 1;
  CHECK(a[4] == 7);
  CHECK_FALSE(c.same_storage(a));
}

TEST_CASE("tensor: factories and shape queries") {
  Tensor t = Tensor::full({2, 3, 4}, 1.5f);
  CHECK(t.numel() == 24);
  CHECK(t.dim() == 3);
  CHECK(t.size(-1) == 4);
  CHECK(t[23] == 1.5f);
  Tensor r = Tensor::arange(5);
  CHECK(r.shape() == Shape{5});
  CHECK(r[4] == 4.f);
  CHECK(Tensor::arange(0, 1, 0.25).numel() == 4);
  CHECK(Tensor::ones({}).numel() == 1);
  CHECK(Tensor::zeros({0, 3}).numel() == 0);
  IndexTensor m = IndexTensor::full({2, 2}, 255);
  CHECK(m.at({1, 0}) == 255);
  CHECK_THROWS_WITH_AS(Tensor::from({2, 2}, {1, 2, 3}), doctest::Contains("holds 4 values but 3"), Error);
  CHECK_THROWS_WITH_AS(t.at({0, 3, 0}), doctest::Contains("index 3 out of range"), Error);
}

TEST_CASE("tensor: reshape infers -1 and rejects a wrong element count") {
  Tensor t = Tensor::arange(12);
  CHECK(t.reshape({3, -1}).shape() == Shape{3, 4});
  CHECK(t.reshape({3, -1}).same_storage(t));
  CHECK_THROWS_WITH_AS(t.reshape({5, -1}), doctest::Contains("cannot reshape (12,)"), Error);
  CHECK_THROWS_WITH_AS(t.reshape({-1, -1}), doctest::Contains("only one dimension can be -1"), Error);
}

TEST_CASE("tensor: the generator is reproducible and well distributed") {
  Generator g1(42), g2(42), g3(43);
  Tensor a = Tensor::randn({10000}, g1), b = Tensor::randn({10000}, g2), c = Tensor::randn({10000}, g3);
  double mean = 0, var = 0;
  bool same = true, differ = false;
  for (int64_t i = 0; i < a.numel(); ++i) {
    same = same && a[i] == b[i];
    differ = differ || a[i] != c[i];
    mean += a[i];
  }
  mean /= a.numel();
  for (int64_t i = 0; i < a.numel(); ++i) var += (a[i] - mean) * (a[i] - mean);
  var /= a.numel();
  CHECK(same);
  CHECK(differ);
  CHECK(std::abs(mean) < 0.05);
  CHECK(std::abs(var - 1) < 0.05);
  Tensor u = Tensor::rand({10000}, g1, -1, 1);
  float lo = 1, hi = -1;
  for (float v : u) lo = std::min(lo, v), hi = std::max(hi, v);
  CHECK(lo >= -1);
  CHECK(hi < 1);
  CHECK(lo < -0.99f);
  // State round trip: resuming from a saved state continues the same stream.
  Generator g(7);
  g.normal();
  auto st = g.state();
  float x1 = g.normal(), x2 = g.normal();
  Generator h(0);
  h.set_state(st);
  CHECK(h.normal() == x1);
  CHECK(h.normal() == x2);
}

TEST_CASE("threads: the count applies and SMALLBATCH_NUM_THREADS is validated") {
  int before = num_threads();
  set_num_threads(1);
  CHECK(num_threads() == 1);
  set_num_threads(before);
  setenv("SMALLBATCH_NUM_THREADS", "3", 1);
  CHECK(default_num_threads() == 3);
  setenv("SMALLBATCH_NUM_THREADS", "two", 1);
  CHECK_THROWS_WITH_AS(default_num_threads(), doctest::Contains("SMALLBATCH_NUM_THREADS"), Error);
  unsetenv("SMALLBATCH_NUM_THREADS");
}
