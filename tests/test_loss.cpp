// softmax, log_softmax, cross_entropy and dropout: PyTorch reference values
// (tools/scripts/fixtures/fx_loss.py), finite-difference gradients, edge cases and error messages.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <utility>

#include "core/ops.h"
#include "core/threads.h"
#include "fixtures.h"
#include "gradcheck.h"
#include "layers/loss/ops.h"

using namespace sb;

namespace {

// Fixture file and the axis it was made along.
const std::pair<const char*, int64_t> kSoftmaxFixtures[] = {
    {"softmax_axis0", 0}, {"softmax_axis1", 1}, {"softmax_axis2", 2}, {"softmax_axis_last", -1}};

// Restores the thread count when the test ends, pass or fail.
struct ThreadsFor {
  int prev = num_threads();
  explicit ThreadsFor(int n) { set_num_threads(n); }
  ~ThreadsFor() { set_num_threads(prev); }
};

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), a.numel() * sizeof(float)) == 0;
}

// -sum_i w[t_i] log_softmax(x)_i[t_i] / sum_i w[t_i] over non-ignored i, composed from
// log_softmax, a constant weighted one-hot mask, mul and sum: the unfused reference.
Var composed_cross_entropy(const Var& logits, const IndexTensor& target, const CrossEntropyOptions& opt) {
  const Shape& xs = logits.shape();
  const int64_t N = xs[0], K = xs[1], S = logits.numel() / (N * K);
  Tensor mask = Tensor::zeros(xs);  // (N, K, S): w[t] at the target class
  double total = 0;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t j = 0; j < S; ++j) {
      int64_t t = target[n * S + j];
      if (t == opt.ignore_index) continue;
      float w = opt.weight.defined() ? opt.weight[t] : 1.f;
      mask[(n * K + t) * S + j] = w;
      total += w;
    }
  return sum(mul(log_softmax(logits, 1), Var(mask))) * static_cast<float>(-1.0 / total);
}

}  // namespace

TEST_CASE("softmax: matches PyTorch values and gradients along several axes") {
  for (auto [name, axis] : kSoftmaxFixtures) {
    INFO("fixture " << std::string(name));
    auto f = sbtest::load_fixture(name);
    Var x(f.get_float("x").clone(), true);
    Var y = softmax(x, axis);
    CHECK_CLOSE(y.value(), f.get_float("softmax.y"));
    y.backward(f.get_float("softmax.gy"));
    CHECK_CLOSE(x.grad(), f.get_float("softmax.gx"));
  }
}

TEST_CASE("log_softmax: matches PyTorch values and gradients along several axes") {
  for (auto [name, axis] : kSoftmaxFixtures) {
    INFO("fixture " << std::string(name));
    auto f = sbtest::load_fixture(name);
    Var x(f.get_float("x").clone(), true);
    Var y = log_softmax(x, axis);
    CHECK_CLOSE(y.value(), f.get_float("log_softmax.y"));
    y.backward(f.get_float("log_softmax.gy"));
    CHECK_CLOSE(x.grad(), f.get_float("log_softmax.gx"));
  }
}

TEST_CASE("softmax: gradcheck along every axis") {
  Generator g(5);
  Tensor x = Tensor::randn({2, 3, 4, 5}, g);
  // (2, 3, 70): axis 1 has 70 positions behind it, more than one block of the strided kernel.
  Tensor wide = Tensor::randn({2, 3, 70}, g);
  for (int64_t axis : {0, 1, 2, 3, -1}) {
    INFO("axis " << axis);
    CHECK_GRADCHECK([axis](const std::vector<Var>& v) { return softmax(v[0], axis); }, {x});
  }
  CHECK_GRADCHECK([](const std::vector<Var>& v) { return softmax(v[0], 1); }, {wide});
}

TEST_CASE("log_softmax: gradcheck along every axis") {
  Generator g(6);
  Tensor x = Tensor::randn({2, 3, 4, 5}, g);
  Tensor wide = Tensor::randn({2, 3, 70}, g);
  for (int64_t axis : {0, 1, 2, 3, -1}) {
    INFO("axis " << axis);
    CHECK_GRADCHECK([axis](const std::vector<Var>& v) { return log_softmax(v[0], axis); }, {x});
  }
  CHECK_GRADCHECK([](const std::vector<Var>& v) { return log_softmax(v[0], 1); }, {wide});
}

TEST_CASE("softmax: large logits do not overflow (the max is subtracted first)") {
  Tensor big = Tensor::from({2, 3}, {1000.f, 1001.f, 1002.f, -1000.f, -1001.f, -1002.f});
  Tensor small = Tensor::from({2, 3}, {0.f, 1.f, 2.f, 0.f, -1.f, -2.f});
  CHECK_CLOSE(softmax(Var(big), 1).value(), softmax(Var(small), 1).value());
  CHECK_CLOSE(log_softmax(Var(big), 1).value(), log_softmax(Var(small), 1).value());
  // Rows sum to 1.
  Tensor p = softmax(Var(big), 1).value();
  CHECK(p[0] + p[1] + p[2] == doctest::Approx(1.0).epsilon(1e-6));
}

TEST_CASE("softmax: axis out of range is an error naming the shape") {
  Var x(Tensor::zeros({2, 3, 4, 5}));
  CHECK_THROWS_WITH_AS(softmax(x, 4), "softmax: axis 4 out of range for input of shape (2, 3, 4, 5)", Error);
  CHECK_THROWS_WITH_AS(log_softmax(x, -5), "log_softmax: axis -5 out of range for input of shape (2, 3, 4, 5)",
                       Error);
}

TEST_CASE("cross_entropy: matches PyTorch values and gradients") {
  for (const char* name : {"cross_entropy_2d", "cross_entropy_2d_ignore", "cross_entropy_2d_weight_ignore",
                           "cross_entropy_2d_ignore_neg", "cross_entropy_4d", "cross_entropy_4d_ignore",
                           "cross_entropy_4d_weight_ignore"}) {
    INFO("fixture " << std::string(name));
    auto f = sbtest::load_fixture(name);
    CrossEntropyOptions opt;
    opt.ignore_index = f.get_int("ignore_index").item();
    if (f.has_float("weight")) opt.weight = f.get_float("weight");
    Var x(f.get_float("logits").clone(), true);
    Var loss = cross_entropy(x, f.get_int("target"), opt);
    CHECK_CLOSE(loss.value(), f.get_float("loss"));
    loss.backward(f.get_float("gy"));
    CHECK_CLOSE(x.grad(), f.get_float("gx"));
  }
}

TEST_CASE("cross_entropy: matches the composed log_softmax + weighted NLL") {
  Generator g(7);
  // (2, 5, 6, 13): 78 pixels per image, so the fused kernel's blocks of 64 split each image.
  Tensor logits = Tensor::randn({2, 5, 6, 13}, g, 0.f, 3.f);
  IndexTensor target = IndexTensor::empty({2, 6, 13});
  for (auto& t : target) t = g.uniform() < 0.2f ? 255 : static_cast<int64_t>(g.below(5));
  CrossEntropyOptions opt;
  opt.weight = Tensor::rand({5}, g, 0.2f, 2.f);
  Var a(logits.clone(), true), b(logits.clone(), true);
  Var fused = cross_entropy(a, target, opt);
  Var composed = composed_cross_entropy(b, target, opt);
  CHECK_CLOSE(fused.value(), composed.value());
  fused.backward();
  composed.backward();
  CHECK_CLOSE(a.grad(), b.grad());
}

TEST_CASE("cross_entropy: gradcheck") {
  Generator g(8);
  SUBCASE("(N, K)") {
    Tensor x = Tensor::randn({6, 4}, g);
    IndexTensor t = IndexTensor::from({6}, {0, 3, 255, 1, 2, 3});
    CHECK_GRADCHECK([t](const std::vector<Var>& v) { return cross_entropy(v[0], t); }, {x});
  }
  SUBCASE("(N, K, H, W) with ignored pixels and class weights") {
    Tensor x = Tensor::randn({2, 3, 4, 5}, g);
    IndexTensor t = IndexTensor::empty({2, 4, 5});
    for (auto& v : t) v = g.uniform() < 0.25f ? 255 : static_cast<int64_t>(g.below(3));
    CrossEntropyOptions opt;
    opt.weight = Tensor::from({3}, {0.5f, 2.f, 1.f});
    CHECK_GRADCHECK([t, opt](const std::vector<Var>& v) { return cross_entropy(v[0], t, opt); }, {x});
  }
}

TEST_CASE("cross_entropy: an out-of-range label is an error naming the value and position") {
  Var x4(Tensor::zeros({2, 5, 3, 4}));
  IndexTensor t4 = IndexTensor::zeros({2, 3, 4});
  t4.at({1, 2, 3}) = 7;
  CHECK_THROWS_WITH_AS(cross_entropy(x4, t4),
                       "cross_entropy: target value 7 at position (1, 2, 3) is not a class in [0, 5) nor "
                       "ignore_index 255 (logits (2, 5, 3, 4), target (2, 3, 4))",
                       Error);
  // The first bad element is reported, whatever the order threads reach them.
  t4.at({0, 1, 0}) = -1;
  CHECK_THROWS_WITH_AS(cross_entropy(x4, t4), doctest::Contains("target value -1 at position (0, 1, 0)"), Error);
  Var x2(Tensor::zeros({3, 4}));
  CHECK_THROWS_WITH_AS(cross_entropy(x2, IndexTensor::from({3}, {0, 4, 5})),
                       doctest::Contains("target value 4 at position (1,) is not a class in [0, 4)"), Error);
  // 255 is only special while it is the ignore_index.
  CrossEntropyOptions opt;
  opt.ignore_index = -100;
  CHECK_THROWS_WITH_AS(cross_entropy(x2, IndexTensor::from({3}, {0, 255, 1}), opt),
                       doctest::Contains("target value 255 at position (1,)"), Error);
}

TEST_CASE("cross_entropy: all elements ignored gives NaN and a zero gradient, as in PyTorch") {
  Var x(Tensor::ones({2, 3, 2, 2}), true);
  Var loss = cross_entropy(x, IndexTensor::full({2, 2, 2}, 255));
  CHECK(std::isnan(loss.item()));
  loss.backward();
  CHECK_CLOSE(x.grad(), Tensor::zeros({2, 3, 2, 2}), 0.0);
}

TEST_CASE("cross_entropy: rejects mismatched shapes, naming every shape") {
  CHECK_THROWS_WITH_AS(cross_entropy(Var(Tensor::zeros({5})), IndexTensor::zeros({1})),
                       "cross_entropy: expected logits (N, K) or (N, K, H, W) but got (5,) (target (1,))",
                       Error);
  CHECK_THROWS_WITH_AS(cross_entropy(Var(Tensor::zeros({2, 3, 4, 5})), IndexTensor::zeros({2, 5, 4})),
                       "cross_entropy: target of shape (2, 5, 4) does not match logits (2, 3, 4, 5) "
                       "(expected target (2, 4, 5))",
                       Error);
  CHECK_THROWS_WITH_AS(cross_entropy(Var(Tensor::zeros({2, 3})), IndexTensor::zeros({3})),
                       doctest::Contains("target of shape (3,) does not match logits (2, 3)"), Error);
  CrossEntropyOptions opt;
  opt.weight = Tensor::ones({4});
  CHECK_THROWS_WITH_AS(cross_entropy(Var(Tensor::zeros({2, 3})), IndexTensor::zeros({2}), opt),
                       "cross_entropy: expected class weights of shape (3,) but got (4,) (logits (2, 3), "
                       "target (2,))",
                       Error);
}

TEST_CASE("cross_entropy: loss and gradient are the same on 1 and 2 threads") {
  Generator g(9);
  Tensor logits = Tensor::randn({2, 8, 64, 64}, g);  // large enough to run in parallel
  IndexTensor target = IndexTensor::empty({2, 64, 64});
  for (auto& t : target) t = static_cast<int64_t>(g.below(8));
  auto run = [&](int threads) {
    ThreadsFor scope(threads);
    Var x(logits.clone(), true);
    Var loss = cross_entropy(x, target);
    loss.backward();
    return std::pair{loss.value(), x.grad()};
  };
  auto [l1, g1] = run(1);
  auto [l2, g2] = run(2);
  CHECK(bitwise_equal(l1, l2));
  CHECK(bitwise_equal(g1, g2));
}

TEST_CASE("dropout: backward is the mask times 1 / (1 - p)") {
  Generator data(10);
  Tensor x = Tensor::rand({4, 5, 6}, data, 0.5f, 1.5f);  // no zeros, so y == 0 marks a dropped element
  Tensor gy = Tensor::randn({4, 5, 6}, data);
  Generator gen(11);
  const float p = 0.4f, scale = 1.f / (1.f - p);
  Var xv(x, true);
  Var y = dropout(xv, p, true, gen);
  y.backward(gy);
  Tensor want_y = Tensor::empty(x.shape()), want_gx = Tensor::empty(x.shape());
  for (int64_t i = 0; i < x.numel(); ++i) {
    bool kept = y.value()[i] != 0.f;
    want_y[i] = kept ? x[i] * scale : 0.f;
    want_gx[i] = kept ? gy[i] * scale : 0.f;
  }
  CHECK_CLOSE(y.value(), want_y, 0.0);
  CHECK_CLOSE(xv.grad(), want_gx, 0.0);
}

TEST_CASE("dropout: gradcheck with the mask fixed by the seed") {
  Generator data(12);
  Tensor x = Tensor::randn({3, 7}, data);
  CHECK_GRADCHECK([](const std::vector<Var>& v) {
    Generator gen(13);  // the same mask on every evaluation
    return dropout(v[0], 0.3f, true, gen);
  }, {x});
}

TEST_CASE("dropout: reproducible from the seed, different across seeds and calls") {
  Tensor x = Tensor::ones({1000});
  Generator a(42), b(42), c(43);
  Tensor ya = dropout(Var(x), 0.5f, true, a).value();
  Tensor yb = dropout(Var(x), 0.5f, true, b).value();
  Tensor yc = dropout(Var(x), 0.5f, true, c).value();
  CHECK(bitwise_equal(ya, yb));
  CHECK_FALSE(bitwise_equal(ya, yc));
  // The generator advances, so the next call draws a new mask.
  CHECK_FALSE(bitwise_equal(ya, dropout(Var(x), 0.5f, true, a).value()));
}

TEST_CASE("dropout: the mask does not depend on the thread count") {
  Tensor x = Tensor::ones({1 << 17});
  auto run = [&](int threads) {
    ThreadsFor scope(threads);
    Generator gen(14);
    return dropout(Var(x), 0.3f, true, gen).value();
  };
  CHECK(bitwise_equal(run(1), run(2)));
}

TEST_CASE("dropout: drops the right fraction") {
  const int64_t n = 200000;
  Tensor x = Tensor::ones({n});
  Generator gen(15);
  for (float p : {0.1f, 0.5f, 0.9f}) {
    INFO("p = " << p);
    Tensor y = dropout(Var(x), p, true, gen).value();
    int64_t dropped = 0;
    for (float v : y) dropped += v == 0.f;
    double frac = static_cast<double>(dropped) / n;
    // 5 standard deviations of a binomial fraction: fails by chance about once in 3 million runs.
    CHECK(std::fabs(frac - p) < 5 * std::sqrt(p * (1 - p) / n));
    // The mean is preserved in expectation: survivors are scaled by 1 / (1 - p).
    double mean = 0;
    for (float v : y) mean += v;
    CHECK(std::fabs(mean / n - 1.0) < 5 * std::sqrt(p / (1 - p) / n));
  }
}

TEST_CASE("dropout: identity in eval mode and for p == 0, zeros for p == 1") {
  Generator data(16);
  Var x(Tensor::randn({3, 4}, data), true);
  Generator gen(17);
  const auto before = gen.state();
  Var eval = dropout(x, 0.5f, false, gen);
  CHECK(eval.value().same_storage(x.value()));
  CHECK(dropout(x, 0.f, true, gen).value().same_storage(x.value()));
  CHECK(gen.state().s[0] == before.s[0]);  // nothing to drop draws nothing
  Var all = dropout(x, 1.f, true, gen);
  CHECK_CLOSE(all.value(), Tensor::zeros({3, 4}), 0.0);
  sum(all).backward();
  CHECK_CLOSE(x.grad(), Tensor::zeros({3, 4}), 0.0);
}

TEST_CASE("dropout: p outside [0, 1] is an error") {
  Generator gen(18);
  Var x(Tensor::ones({2, 3}));
  CHECK_THROWS_WITH_AS(dropout(x, 1.5f, true, gen),
                       "dropout: probability p must be in [0, 1] but got 1.5 (input (2, 3))", Error);
  CHECK_THROWS_WITH_AS(dropout(x, -0.1f, true, gen), doctest::Contains("but got -0.1"), Error);
  CHECK_THROWS_AS(dropout(x, NAN, true, gen), Error);
}
