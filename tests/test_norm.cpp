// GroupNorm and BatchNorm: PyTorch fixtures, hand-worked values, composed references built from
// basic ops, double-precision stability checks, finite-difference gradients, error messages;
// the fused norm + ReLU ops against relu() of the plain ones, as ops and as layers.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "core/kernels/stream.h"
#include "core/ops.h"
#include "layers/norm/ops.h"
#include "core/threads.h"
#include "fixtures.h"
#include "gradcheck.h"
#include "layers/norm/batch_norm.h"
#include "layers/norm/batch_renorm.h"
#include "layers/norm/group_norm.h"
#include "simd_levels.h"

using namespace sb;

namespace {

// The ops' earlier positional form (running mean, var, momentum, cumulative and counter as
// separate arguments), kept for the fixture-driven tests: each call builds the RunningStats the
// op takes and copies the counter back.
Var bn_positional(const Var& x, const Tensor& rm, const Tensor& rv, const Var& w, const Var& b, bool training,
                  float momentum, float eps = 1e-5f, bool cumulative = false, int64_t* tracked = nullptr,
                  Activation act = Activation::None) {
  if (!rm.defined() && !rv.defined()) return batch_norm(x, nullptr, w, b, training, eps, act);
  RunningStats rs{rm, rv, IndexTensor(), momentum, cumulative};
  if (tracked) rs.num_batches_tracked = IndexTensor::from({}, {*tracked});
  Var y = batch_norm(x, &rs, w, b, training, eps, act);
  if (tracked) *tracked = rs.num_batches_tracked.item();
  return y;
}
Var bn_relu_positional(const Var& x, const Tensor& rm, const Tensor& rv, const Var& w, const Var& b,
                       bool training, float momentum, float eps = 1e-5f, bool cumulative = false,
                       int64_t* tracked = nullptr) {
  return bn_positional(x, rm, rv, w, b, training, momentum, eps, cumulative, tracked, Activation::ReLU);
}
Var gn_relu(const Var& x, int64_t groups, const Var& w, const Var& b) {
  return group_norm(x, groups, w, b, 1e-5f, Activation::ReLU);
}

}  // namespace

using sbtest::gradcheck;

namespace {

Tensor randn_t(Shape s, uint64_t seed, float mean = 0.f, float std = 1.f) {
  Generator g(seed);
  return Tensor::randn(std::move(s), g, mean, std);
}

Tensor rand_t(Shape s, uint64_t seed, float lo, float hi) {
  Generator g(seed);
  return Tensor::rand(std::move(s), g, lo, hi);
}

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');) out.push_back(item);
  return out;
}

// (1, C, 1, ...) for a per-channel parameter of an input of shape xs.
Shape channel_view(const Shape& xs) {
  Shape v(xs.size(), 1);
  v[1] = xs[1];
  return v;
}

Var affine(const Var& y, const Var& weight, const Var& bias) {
  Var out = y;
  if (weight.defined()) out = out * reshape(weight, channel_view(y.shape()));
  if (bias.defined()) out = out + reshape(bias, channel_view(y.shape()));
  return out;
}

// (x - mean) / sqrt(biased var + eps) over `axes`, composed from basic ops.
Var normalize_composed(const Var& x, const std::vector<int64_t>& axes, float eps) {
  Var mu = mean(x, axes, true);
  Var d = x - mu;
  Var var = mean(d * d, axes, true);
  return d / sqrt(var + eps);
}

// The references the fused ops are checked against: GroupNorm is a reshape to (N, G, rest) and
// a normalization over the last axis; BatchNorm normalizes over every axis but C.
Var group_norm_composed(const Var& x, int64_t G, const Var& weight, const Var& bias, float eps = 1e-5f) {
  Var xr = reshape(x, {x.size(0), G, -1});  // (N, G, C/G * spatial)
  return affine(reshape(normalize_composed(xr, {2}, eps), x.shape()), weight, bias);
}

std::vector<int64_t> all_axes_but_channel(int64_t dim) {
  std::vector<int64_t> axes{0};
  for (int64_t d = 2; d < dim; ++d) axes.push_back(d);
  return axes;
}

Var batch_norm_train_composed(const Var& x, const Var& weight, const Var& bias, float eps = 1e-5f) {
  return affine(normalize_composed(x, all_axes_but_channel(x.dim()), eps), weight, bias);
}

Var batch_norm_eval_composed(const Var& x, const Tensor& rm, const Tensor& rv, const Var& weight,
                             const Var& bias, float eps = 1e-5f) {
  Shape v = channel_view(x.shape());
  Var y = (x - Var(rm.reshape(v))) / sqrt(Var(rv.reshape(v)) + eps);
  return affine(y, weight, bias);
}

struct Grads {
  Tensor y, dx, dw, db;
};

// Runs f(x, w, b), backpropagates dy, and returns the output and the three gradients.
template <class F>
Grads run(F f, const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& dy) {
  Var vx(x.clone(), true);
  Var vw = w.defined() ? Var(w.clone(), true) : Var();
  Var vb = b.defined() ? Var(b.clone(), true) : Var();
  Var y = f(vx, vw, vb);
  y.backward(dy);
  return {y.value(), vx.grad(), vw.defined() ? vw.grad() : Tensor(), vb.defined() ? vb.grad() : Tensor()};
}

void check_same(const Grads& got, const Grads& want) {
  CHECK_CLOSE(got.y, want.y);
  CHECK_CLOSE(got.dx, want.dx);
  if (want.dw.defined()) CHECK_CLOSE(got.dw, want.dw);
  if (want.db.defined()) CHECK_CLOSE(got.db, want.db);
}

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), a.numel() * sizeof(float)) == 0;
}

// Sets the OpenMP thread count for a scope.
struct ThreadScope {
  int prev = num_threads();
  explicit ThreadScope(int n) { set_num_threads(n); }
  ~ThreadScope() { set_num_threads(prev); }
};

}  // namespace

// ---- GroupNorm ----------------------------------------------------------------------------

TEST_CASE("group_norm: matches PyTorch GroupNorm, forward and gradients") {
  sbtest::for_each_simd_level([&] {
    TensorFile f = sbtest::load_fixture("group_norm");
    auto cases = split_commas(f.metadata.at("cases"));
    CHECK(cases.size() == 7);
    for (const std::string& name : cases) {
      CAPTURE(name);
      auto get = [&](const std::string& k) { return f.get_float(name + "." + k); };
      int64_t G = std::stoll(f.metadata.at(name + ".num_groups"));
      float eps = std::stof(f.metadata.at(name + ".eps"));
      bool has_affine = f.has_float(name + ".weight");
      Tensor w = has_affine ? get("weight") : Tensor(), b = has_affine ? get("bias") : Tensor();
      Grads got = run([&](const Var& x, const Var& vw, const Var& vb) { return group_norm(x, G, vw, vb, eps); },
                      get("x"), w, b, get("dy"));
      check_same(got, {get("y"), get("dx"), has_affine ? get("dweight") : Tensor(),
                       has_affine ? get("dbias") : Tensor()});
    }
  });
}

TEST_CASE("group_norm: the worked example, with and without affine") {
  // N = 3, C = 4, G = 2: each group is a pair of values, normalized to -1 and +1.
  Var x(Tensor::from({3, 4}, {5, 4, 7, 2, 1, 6, 2, 3, 4, 8, 1, 9}));
  Var y = group_norm(x, 2, Var(), Var());
  CHECK_CLOSE(y.value(), Tensor::from({3, 4}, {1, -1, 1, -1, -1, 1, -1, 1, -1, 1, -1, 1}), 1e-3);
  Var w(Tensor::from({4}, {1, 1, 2, 0.5f})), b(Tensor::from({4}, {0, 0, 1, -1}));
  Var ya = group_norm(x, 2, w, b);
  CHECK_CLOSE(ya.value(), Tensor::from({3, 4}, {1, -1, 3, -1.5f, -1, 1, -1, -0.5f, -1, 1, -1, -0.5f}), 1e-3);
  // The mean and variance of the first group are 4.5 and 0.25: the exact value with eps.
  CHECK(y.value()[0] == doctest::Approx(0.5 / std::sqrt(0.25 + 1e-5)).epsilon(1e-6));
}

TEST_CASE("group_norm: G = 1 is LayerNorm over (C, H, W), G = C is InstanceNorm") {
  Tensor x = randn_t({2, 6, 4, 3}, 11, 0.3f, 2.f), dy = randn_t({2, 6, 4, 3}, 12);
  Tensor w = randn_t({6}, 13, 1.f, 0.5f), b = randn_t({6}, 14);
  auto layer_norm = [](const Var& v, const Var& vw, const Var& vb) {
    return affine(normalize_composed(v, {1, 2, 3}, 1e-5f), vw, vb);
  };
  auto instance_norm = [](const Var& v, const Var& vw, const Var& vb) {
    return affine(normalize_composed(v, {2, 3}, 1e-5f), vw, vb);
  };
  SUBCASE("G = 1") {
    check_same(run([](const Var& v, const Var& vw, const Var& vb) { return group_norm(v, 1, vw, vb); }, x, w, b, dy),
               run(layer_norm, x, w, b, dy));
  }
  SUBCASE("G = C") {
    check_same(run([](const Var& v, const Var& vw, const Var& vb) { return group_norm(v, 6, vw, vb); }, x, w, b, dy),
               run(instance_norm, x, w, b, dy));
  }
}

TEST_CASE("group_norm: fused matches the composed reference, forward and backward") {
  sbtest::for_each_simd_level([&] {
    struct Case {
      Shape shape;
      int64_t groups;
      bool affine;
    };
    // The last two are large enough to take the multi-threaded path.
    std::vector<Case> cases = {{{3, 4}, 2, true},          {{2, 8, 5}, 4, false},     {{2, 6, 3, 5}, 3, true},
                               {{1, 4, 2, 2}, 4, true},      {{2, 32, 16, 16}, 8, true}, {{1, 64, 24, 24}, 32, true}};
    uint64_t seed = 100;
    for (const Case& c : cases) {
      CAPTURE(shape_str(c.shape));
      CAPTURE(c.groups);
      int64_t C = c.shape[1];
      Tensor x = randn_t(c.shape, seed++, -0.5f, 1.5f), dy = randn_t(c.shape, seed++);
      Tensor w = c.affine ? randn_t({C}, seed++, 1.f, 0.5f) : Tensor();
      Tensor b = c.affine ? randn_t({C}, seed++) : Tensor();
      int64_t G = c.groups;
      check_same(run([G](const Var& v, const Var& vw, const Var& vb) { return group_norm(v, G, vw, vb); }, x, w, b, dy),
                 run([G](const Var& v, const Var& vw, const Var& vb) { return group_norm_composed(v, G, vw, vb); },
                     x, w, b, dy));
    }
  });
}

// Double-precision GroupNorm forward and backward, straight from the definitions, for the
// stability checks. x (N, C, S) flattened; returns y and dx (affine-free).
static void group_norm_double(const Tensor& x, int64_t G, const Tensor& dy, std::vector<double>& y,
                              std::vector<double>& dx) {
  int64_t N = x.size(0), M = x.numel() / (N * G);
  y.assign(x.numel(), 0);
  dx.assign(x.numel(), 0);
  for (int64_t ng = 0; ng < N * G; ++ng) {
    const float* xg = x.data() + ng * M;
    const float* dyg = dy.data() + ng * M;
    double mu = 0, var = 0, mdy = 0, mdyx = 0;
    for (int64_t i = 0; i < M; ++i) mu += xg[i];
    mu /= M;
    for (int64_t i = 0; i < M; ++i) var += (xg[i] - mu) * (xg[i] - mu);
    var /= M;
    double rs = 1 / std::sqrt(var + 1e-5);
    for (int64_t i = 0; i < M; ++i) {
      y[ng * M + i] = (xg[i] - mu) * rs;
      mdy += dyg[i] / (double)M;
      mdyx += dyg[i] * y[ng * M + i] / (double)M;
    }
    for (int64_t i = 0; i < M; ++i) dx[ng * M + i] = rs * (dyg[i] - mdy - y[ng * M + i] * mdyx);
  }
}

static Tensor to_float(const std::vector<double>& v, const Shape& s) {
  Tensor t = Tensor::empty(s);
  for (int64_t i = 0; i < t.numel(); ++i) t[i] = static_cast<float>(v[i]);
  return t;
}

TEST_CASE("group_norm: stable statistics for 0.01 * randn + 100") {
  sbtest::for_each_simd_level([&] {
    Shape s{2, 4, 8, 8};
    Tensor x = randn_t(s, 21, 100.f, 0.01f), dy = randn_t(s, 22);
    // The input really is hard: E[x^2] - E[x]^2 in float32 has nothing left of the variance (1e-4).
    {
      float m = 0, m2 = 0;
      for (int64_t i = 0; i < 128; ++i) m += x[i] / 128, m2 += x[i] * x[i] / 128;
      CHECK(std::fabs((m2 - m * m) - 1e-4f) > 1e-4f * 0.5f);
    }
    std::vector<double> y_ref, dx_ref;
    group_norm_double(x, 2, dy, y_ref, dx_ref);
    Grads got = run([](const Var& v, const Var& vw, const Var& vb) { return group_norm(v, 2, vw, vb); }, x,
                    Tensor(), Tensor(), dy);
    CHECK_CLOSE(got.y, to_float(y_ref, s));
    CHECK_CLOSE(got.dx, to_float(dx_ref, s));
    // With a weight and bias the parameter gradients stay accurate too: dweight_c = sum dy * xhat.
    Tensor w = randn_t({4}, 23, 1.f, 0.5f), b = randn_t({4}, 24);
    Grads ga = run([](const Var& v, const Var& vw, const Var& vb) { return group_norm(v, 2, vw, vb); }, x, w, b, dy);
    Tensor dw_ref = Tensor::empty({4});
    for (int64_t c = 0; c < 4; ++c) {
      double s_ = 0;
      for (int64_t n = 0; n < 2; ++n)
        for (int64_t i = 0; i < 64; ++i) s_ += dy[(n * 4 + c) * 64 + i] * y_ref[(n * 4 + c) * 64 + i];
      dw_ref[c] = static_cast<float>(s_);
    }
    CHECK_CLOSE(ga.dw, dw_ref);
  });
}

TEST_CASE("group_norm: finite-difference gradients") {
  auto gn = [](int64_t G) {
    return [G](const std::vector<Var>& v) { return group_norm(v[0], G, v[1], v[2]); };
  };
  Tensor w = randn_t({6}, 32, 1.f, 0.5f), b = randn_t({6}, 33);
  CHECK_GRADCHECK(gn(3), {randn_t({2, 6, 3}, 31), w, b});
  CHECK_GRADCHECK(gn(1), {randn_t({3, 6}, 34), w, b});
  CHECK_GRADCHECK(gn(6), {randn_t({2, 6, 2, 2}, 35), w, b});
  CHECK_GRADCHECK([](const std::vector<Var>& v) { return group_norm(v[0], 2, Var(), Var()); },
                  {randn_t({2, 4, 3}, 36)});
  // The composed reference passes the same check, so agreeing with it means something.
  CHECK_GRADCHECK([](const std::vector<Var>& v) { return group_norm_composed(v[0], 3, v[1], v[2]); },
                  {randn_t({2, 6, 3}, 31), w, b});
}

TEST_CASE("group_norm: the gradient check catches a backward that drops the variance term") {
  // group_norm's value with dx = rstd * (dy - mean_g(dy)): the xhat * mean_g(dy * xhat) term,
  // which carries the gradient through the variance, is missing.
  auto broken = [](const Var& x) {
    Var y = group_norm(x.detach(), 2, Var(), Var());
    return make_result(y.value(), "broken_group_norm", {x}, [](Node& n) {
      NoGrad ng;
      const Tensor& xv = n.inputs[0]->value;
      Var xr(xv.reshape({xv.size(0), 2, -1}));
      Var d = xr - mean(xr, {2}, true);
      Var rs = pow(mean(d * d, {2}, true) + 1e-5f, -0.5f);
      Var g(n.grad.reshape(xr.shape()));
      n.inputs[0]->accumulate(((g - mean(g, {2}, true)) * rs).value().reshape(xv.shape()));
    });
  };
  auto r = gradcheck([&](const std::vector<Var>& v) { return broken(v[0]); }, {randn_t({2, 4, 3}, 41)});
  CHECK_FALSE(r.ok);
  CHECK(gradcheck([](const std::vector<Var>& v) { return group_norm(v[0], 2, Var(), Var()); },
                  {randn_t({2, 4, 3}, 41)}).ok);
}

TEST_CASE("group_norm: results do not depend on the thread count") {
  sbtest::for_each_simd_level([&] {
    Shape s{2, 32, 24, 24};  // above the single-thread cutoff
    Tensor x = randn_t(s, 51), dy = randn_t(s, 52), w = randn_t({32}, 53), b = randn_t({32}, 54);
    auto f = [](const Var& v, const Var& vw, const Var& vb) { return group_norm(v, 8, vw, vb); };
    Grads one, many;
    {
      ThreadScope t(1);
      one = run(f, x, w, b, dy);
    }
    {
      ThreadScope t(4);
      many = run(f, x, w, b, dy);
    }
    CHECK(bitwise_equal(one.y, many.y));
    CHECK(bitwise_equal(one.dx, many.dx));
    CHECK(bitwise_equal(one.dw, many.dw));
    CHECK(bitwise_equal(one.db, many.db));
  });
}

TEST_CASE("group_norm: errors name the numbers involved") {
  Var x(randn_t({2, 6, 3}, 61));
  Var w6(Tensor::ones({6}));
  CHECK_THROWS_WITH_AS(group_norm(x, 4, Var(), Var()),
                       doctest::Contains("group_norm: 6 channels are not divisible by 4 groups"), Error);
  CHECK_THROWS_WITH_AS(group_norm(x, 0, Var(), Var()),
                       doctest::Contains("group_norm: num_groups must be positive but got 0"), Error);
  CHECK_THROWS_WITH_AS(group_norm(x, -3, Var(), Var()), doctest::Contains("got -3"), Error);
  CHECK_THROWS_WITH_AS(group_norm(x, 2, Var(Tensor::ones({5})), Var()),
                       doctest::Contains("group_norm: weight of shape (5,) does not match the 6 channels of "
                                         "input of shape (2, 6, 3); expected (6,)"),
                       Error);
  CHECK_THROWS_WITH_AS(group_norm(x, 2, w6, Var(Tensor::ones({1, 6}))),
                       doctest::Contains("bias of shape (1, 6)"), Error);
  CHECK_THROWS_WITH_AS(group_norm(Var(Tensor::ones({6})), 2, Var(), Var()),
                       doctest::Contains("group_norm: expected an input of shape (N, C) or (N, C, *) but got (6,)"),
                       Error);
  // One value per group: (x - mean) would be 0 everywhere.
  CHECK_THROWS_WITH_AS(group_norm(Var(Tensor::ones({2, 4})), 4, Var(), Var()),
                       doctest::Contains("holds a single value (1 channel x 1 spatial position)"), Error);
  CHECK_THROWS_WITH_AS(group_norm(Var(Tensor::ones({3, 5, 1, 1})), 5, Var(), Var()),
                       doctest::Contains("all zeros"), Error);
  // Two values per group are fine.
  CHECK_NOTHROW(group_norm(Var(Tensor::ones({2, 4})), 2, Var(), Var()));
  CHECK_NOTHROW(group_norm(Var(Tensor::ones({1, 4, 2})), 4, Var(), Var()));
}

// ---- BatchNorm ----------------------------------------------------------------------------

// Replays one case of batch_norm.safetensors: training steps from the stored initial running
// stats, each compared with PyTorch (output, gradients, running stats, num_batches_tracked),
// then the eval step.
static void check_batch_norm_fixture(const std::string& name) {
  sbtest::for_each_simd_level([&] {
    TensorFile f = sbtest::load_fixture("batch_norm");
    auto meta = [&](const std::string& k) { return f.metadata.at(name + "." + k); };
    auto get = [&](const std::string& k) { return f.get_float(name + "." + k); };
    const bool track = meta("track") == "1", has_affine = meta("affine") == "1";
    const bool cumulative = meta("momentum") == "none";
    const float momentum = cumulative ? 0.f : std::stof(meta("momentum")), eps = std::stof(meta("eps"));
    Tensor rm, rv;
    int64_t tracked = 0;
    if (track) {
      rm = get("init.running_mean").clone();
      rv = get("init.running_var").clone();
      tracked = f.get_int(name + ".init.num_batches_tracked").item();
    }
    Tensor w = has_affine ? get("weight") : Tensor(), b = has_affine ? get("bias") : Tensor();
    auto step = [&](const std::string& prefix, bool training) {
      auto want = [&](const std::string& k) { return get(prefix + "." + k); };
      Grads got = run(
          [&](const Var& x, const Var& vw, const Var& vb) {
            return bn_positional(x, rm, rv, vw, vb, training, momentum, eps, cumulative, track ? &tracked : nullptr);
          },
          want("x"), w, b, want("dy"));
      check_same(got, {want("y"), want("dx"), has_affine ? want("dweight") : Tensor(),
                       has_affine ? want("dbias") : Tensor()});
    };
    int steps = std::stoi(meta("steps"));
    for (int k = 0; k < steps; ++k) {
      std::string prefix = "step" + std::to_string(k);
      CAPTURE(prefix);
      step(prefix, true);
      if (track) {
        CHECK_CLOSE(rm, get(prefix + ".running_mean"));
        CHECK_CLOSE(rv, get(prefix + ".running_var"));
        CHECK(tracked == f.get_int(name + "." + prefix + ".num_batches_tracked").item());
      }
    }
    Tensor rm_before = rm.clone(), rv_before = rv.clone();
    int64_t tracked_before = tracked;
    step("eval", false);
    if (track) {  // eval leaves the running stats alone
      CHECK(bitwise_equal(rm, rm_before));
      CHECK(bitwise_equal(rv, rv_before));
      CHECK(tracked == tracked_before);
    }
  });
}

TEST_CASE("batch_norm: matches PyTorch BatchNorm2d, training steps with running stats, then eval") {
  check_batch_norm_fixture("m01");
}

TEST_CASE("batch_norm: matches PyTorch with 2 values per channel (unbiased running_var = 2x biased)") {
  check_batch_norm_fixture("n2");
}

TEST_CASE("batch_norm: matches PyTorch momentum=None (cumulative average), affine=false") {
  check_batch_norm_fixture("cum");
}

TEST_CASE("batch_norm: matches PyTorch BatchNorm1d on (N, C)") { check_batch_norm_fixture("nc"); }

TEST_CASE("batch_norm: matches PyTorch track_running_stats=False (batch statistics in eval too)") {
  check_batch_norm_fixture("untracked");
}

TEST_CASE("batch_norm: running stats by hand: unbiased variance, momentum, cumulative average") {
  // Two values per channel: channel 0 holds {1, 3} (mean 2, biased var 1, unbiased 2),
  // channel 1 holds {0, 4} (mean 2, biased var 4, unbiased 8).
  Var x(Tensor::from({2, 2, 1, 1}, {1, 0, 3, 4}));
  Tensor rm = Tensor::zeros({2}), rv = Tensor::ones({2});
  int64_t tracked = 0;
  Var y = bn_positional(x, rm, rv, Var(), Var(), true, 0.5f, 0.f, false, &tracked);
  CHECK_CLOSE(y.value(), Tensor::from({2, 2, 1, 1}, {-1, -1, 1, 1}));  // biased variance normalizes
  CHECK_CLOSE(rm, Tensor::from({2}, {1, 1}));                          // 0.5 * 0 + 0.5 * 2
  CHECK_CLOSE(rv, Tensor::from({2}, {1.5f, 4.5f}));                    // 0.5 * 1 + 0.5 * {2, 8}
  CHECK(tracked == 1);
  // Cumulative: after k batches the running stats are the plain average of the k batch stats.
  rm.fill_(7.f);
  rv.fill_(7.f);
  tracked = 0;
  bn_positional(x, rm, rv, Var(), Var(), true, 0.1f, 1e-5f, true, &tracked);  // momentum ignored
  CHECK_CLOSE(rm, Tensor::from({2}, {2, 2}));
  CHECK_CLOSE(rv, Tensor::from({2}, {2, 8}));
  bn_positional(Var(Tensor::from({2, 2, 1, 1}, {5, 0, 7, 0})), rm, rv, Var(), Var(), true, 0.1f, 1e-5f, true,
             &tracked);  // mean {6, 0}, unbiased var {2, 0}
  CHECK_CLOSE(rm, Tensor::from({2}, {4, 1}));
  CHECK_CLOSE(rv, Tensor::from({2}, {2, 4}));
  CHECK(tracked == 2);
  // Without a counter, momentum alone drives the update.
  bn_positional(x, rm, rv, Var(), Var(), true, 1.f);
  CHECK_CLOSE(rm, Tensor::from({2}, {2, 2}));
  CHECK_CLOSE(rv, Tensor::from({2}, {2, 8}));
}

TEST_CASE("batch_norm: fused matches the composed reference, training and eval") {
  sbtest::for_each_simd_level([&] {
    struct Case {
      Shape shape;
      bool affine;
    };
    // The last one is large enough to take the multi-threaded path. Two values per channel are
    // left to the fixture and stability tests: there training dx is ~eps/var times its terms, and
    // the composed float32 reference keeps only its rounding noise.
    std::vector<Case> cases = {{{4, 3}, true}, {{2, 4, 3, 3}, true}, {{3, 2, 5}, false}, {{4, 16, 24, 24}, true}};
    uint64_t seed = 200;
    for (const Case& c : cases) {
      CAPTURE(shape_str(c.shape));
      int64_t C = c.shape[1];
      Tensor x = randn_t(c.shape, seed++, 0.5f, 2.f), dy = randn_t(c.shape, seed++);
      Tensor w = c.affine ? randn_t({C}, seed++, 1.f, 0.5f) : Tensor();
      Tensor b = c.affine ? randn_t({C}, seed++) : Tensor();
      Tensor rm = randn_t({C}, seed++), rv = rand_t({C}, seed++, 0.5f, 2.f);
      Tensor rm1 = rm.clone(), rv1 = rv.clone();  // the training call updates these
      auto fused_train = [&](const Var& v, const Var& vw, const Var& vb) {
        return bn_positional(v, rm1, rv1, vw, vb, true, 0.1f);
      };
      auto composed_train = [](const Var& v, const Var& vw, const Var& vb) {
        return batch_norm_train_composed(v, vw, vb);
      };
      auto fused_eval = [&](const Var& v, const Var& vw, const Var& vb) {
        return bn_positional(v, rm, rv, vw, vb, false, 0.1f);
      };
      auto composed_eval = [&](const Var& v, const Var& vw, const Var& vb) {
        return batch_norm_eval_composed(v, rm, rv, vw, vb);
      };
      {
        INFO("training");
        check_same(run(fused_train, x, w, b, dy), run(composed_train, x, w, b, dy));
      }
      {
        INFO("eval");
        check_same(run(fused_eval, x, w, b, dy), run(composed_eval, x, w, b, dy));
      }
    }
  });
}

TEST_CASE("batch_norm: stable statistics and running stats for 0.01 * randn + 100") {
  sbtest::for_each_simd_level([&] {
    Shape s{4, 3, 5, 5};
    const int64_t C = 3, S = 25, count = 100;
    Tensor x = randn_t(s, 71, 100.f, 0.01f), dy = randn_t(s, 72);
    // Double-precision reference per channel, from the definitions.
    std::vector<double> y_ref(x.numel()), dx_ref(x.numel());
    Tensor mean_ref = Tensor::empty({C}), var_ref = Tensor::empty({C});
    for (int64_t c = 0; c < C; ++c) {
      auto at = [&](int64_t n, int64_t i) { return (n * C + c) * S + i; };
      double mu = 0, q = 0, mdy = 0, mdyx = 0;
      for (int64_t n = 0; n < 4; ++n)
        for (int64_t i = 0; i < S; ++i) mu += x[at(n, i)];
      mu /= count;
      for (int64_t n = 0; n < 4; ++n)
        for (int64_t i = 0; i < S; ++i) q += (x[at(n, i)] - mu) * (x[at(n, i)] - mu);
      double rs = 1 / std::sqrt(q / count + 1e-5);
      for (int64_t n = 0; n < 4; ++n)
        for (int64_t i = 0; i < S; ++i) {
          y_ref[at(n, i)] = (x[at(n, i)] - mu) * rs;
          mdy += dy[at(n, i)] / (double)count;
          mdyx += dy[at(n, i)] * y_ref[at(n, i)] / (double)count;
        }
      for (int64_t n = 0; n < 4; ++n)
        for (int64_t i = 0; i < S; ++i) dx_ref[at(n, i)] = rs * (dy[at(n, i)] - mdy - y_ref[at(n, i)] * mdyx);
      mean_ref[c] = static_cast<float>(mu);
      var_ref[c] = static_cast<float>(q / (count - 1));
    }
    // momentum 1 from zeros: the running stats become exactly the batch mean and unbiased variance.
    Tensor rm = Tensor::zeros({C}), rv = Tensor::zeros({C});
    Grads got = run([&](const Var& v, const Var& vw, const Var& vb) {
      return bn_positional(v, rm, rv, vw, vb, true, 1.f);
    }, x, Tensor(), Tensor(), dy);
    CHECK_CLOSE(got.y, to_float(y_ref, s));
    CHECK_CLOSE(got.dx, to_float(dx_ref, s));
    CHECK_CLOSE(rm, mean_ref);
    CHECK_CLOSE(rv, var_ref);
  });
}

TEST_CASE("batch_norm: finite-difference gradients, training and eval") {
  Tensor w = randn_t({4}, 82, 1.f, 0.5f), b = randn_t({4}, 83);
  Tensor rm = randn_t({4}, 84), rv = Tensor::from({4}, {0.5f, 1.f, 2.f, 0.8f});
  SUBCASE("training, no running stats") {
    auto train = [](const std::vector<Var>& v) { return bn_positional(v[0], Tensor(), Tensor(), v[1], v[2], true, 0.1f); };
    CHECK_GRADCHECK(train, {randn_t({3, 4, 2, 2}, 81), w, b});
    CHECK_GRADCHECK(train, {randn_t({5, 4}, 85), w, b});
  }
  SUBCASE("training with running stats (updated on every call; the output does not use them)") {
    Tensor rm1 = rm.clone(), rv1 = rv.clone();
    CHECK_GRADCHECK([&](const std::vector<Var>& v) { return bn_positional(v[0], rm1, rv1, v[1], v[2], true, 0.1f); },
                    {randn_t({2, 4, 3}, 86), w, b});
  }
  SUBCASE("eval") {
    CHECK_GRADCHECK([&](const std::vector<Var>& v) { return bn_positional(v[0], rm, rv, v[1], v[2], false, 0.1f); },
                    {randn_t({3, 4, 2, 2}, 87), w, b});
    CHECK_GRADCHECK([&](const std::vector<Var>& v) { return bn_positional(v[0], rm, rv, Var(), Var(), false, 0.1f); },
                    {randn_t({3, 4}, 88)});
  }
  SUBCASE("composed references") {
    CHECK_GRADCHECK([](const std::vector<Var>& v) { return batch_norm_train_composed(v[0], v[1], v[2]); },
                    {randn_t({3, 4, 2, 2}, 81), w, b});
    CHECK_GRADCHECK([&](const std::vector<Var>& v) { return batch_norm_eval_composed(v[0], rm, rv, v[1], v[2]); },
                    {randn_t({3, 4, 2, 2}, 87), w, b});
  }
}

TEST_CASE("batch_norm: results do not depend on the thread count") {
  sbtest::for_each_simd_level([&] {
    Shape s{4, 16, 24, 24};
    Tensor x = randn_t(s, 91), dy = randn_t(s, 92), w = randn_t({16}, 93), b = randn_t({16}, 94);
    auto f = [](const Var& v, const Var& vw, const Var& vb) {
      return bn_positional(v, Tensor(), Tensor(), vw, vb, true, 0.1f);
    };
    Grads one, many;
    {
      ThreadScope t(1);
      one = run(f, x, w, b, dy);
    }
    {
      ThreadScope t(4);
      many = run(f, x, w, b, dy);
    }
    CHECK(bitwise_equal(one.y, many.y));
    CHECK(bitwise_equal(one.dx, many.dx));
    CHECK(bitwise_equal(one.dw, many.dw));
    CHECK(bitwise_equal(one.db, many.db));
  });
}

TEST_CASE("batch_norm: errors name the shapes involved") {
  Tensor rm = Tensor::zeros({8}), rv = Tensor::ones({8});
  Var one(Tensor::ones({1, 8, 1, 1}));
  CHECK_THROWS_WITH_AS(bn_positional(one, rm, rv, Var(), Var(), true, 0.1f),
                       doctest::Contains("batch_norm: expected more than 1 value per channel when training, got "
                                         "input of shape (1, 8, 1, 1)"),
                       Error);
  // Without running stats eval uses batch statistics too, so the same applies.
  CHECK_THROWS_WITH_AS(bn_positional(Var(Tensor::ones({1, 8})), Tensor(), Tensor(), Var(), Var(), false, 0.1f),
                       doctest::Contains("more than 1 value per channel"), Error);
  // Eval with running stats normalizes a single sample fine.
  CHECK_NOTHROW(bn_positional(one, rm, rv, Var(), Var(), false, 0.1f));
  Var x(Tensor::ones({2, 8, 3, 3}));
  CHECK_THROWS_WITH_AS(bn_positional(x, Tensor::zeros({7}), rv, Var(), Var(), true, 0.1f),
                       doctest::Contains("batch_norm: running_mean of shape (7,) and running_var of shape (8,) do not "
                                         "match the 8 channels of input of shape (2, 8, 3, 3)"),
                       Error);
  CHECK_THROWS_WITH_AS(bn_positional(x, rm, Tensor(), Var(), Var(), true, 0.1f),
                       doctest::Contains("only running_mean was given"), Error);
  CHECK_THROWS_WITH_AS(bn_positional(x, rm, rv, Var(Tensor::ones({4})), Var(), true, 0.1f),
                       doctest::Contains("batch_norm: weight of shape (4,) does not match the 8 channels"), Error);
  CHECK_THROWS_WITH_AS(bn_positional(x, rm, rv, Var(), Var(Tensor::ones({8, 1})), true, 0.1f),
                       doctest::Contains("bias of shape (8, 1)"), Error);
  CHECK_THROWS_WITH_AS(bn_positional(Var(Tensor::ones({8})), Tensor(), Tensor(), Var(), Var(), true, 0.1f),
                       doctest::Contains("batch_norm: expected an input of shape (N, C) or (N, C, *) but got (8,)"),
                       Error);
  CHECK_THROWS_WITH_AS(bn_positional(x, rm, rv, Var(), Var(), true, 0.1f, 1e-5f, true),
                       doctest::Contains("needs num_batches_tracked"), Error);
  // A failed call changes nothing.
  CHECK(bitwise_equal(rm, Tensor::zeros({8})));
  CHECK(bitwise_equal(rv, Tensor::ones({8})));
}

// ---- the float kernels on large sets ------------------------------------------------------

TEST_CASE("group_norm: float-block statistics stay exact-ish on large sets of 0.01 * randn + 100") {
  sbtest::for_each_simd_level([&] {
    // 2048 values per group: eight float blocks combined in double, pilot-shifted mean. The
    // reference is straight double arithmetic from the definitions.
    Shape s{2, 4, 32, 32};
    Tensor x = randn_t(s, 25, 100.f, 0.01f), dy = randn_t(s, 26);
    std::vector<double> y_ref, dx_ref;
    group_norm_double(x, 2, dy, y_ref, dx_ref);
    Grads got = run([](const Var& v, const Var& vw, const Var& vb) { return group_norm(v, 2, vw, vb); }, x,
                    Tensor(), Tensor(), dy);
    CHECK_CLOSE(got.y, to_float(y_ref, s));
    CHECK_CLOSE(got.dx, to_float(dx_ref, s));
    // An outlier as the pilot (the first value of each group, 30 standard deviations out).
    Tensor xo = x.clone();
    xo[0] = 100.3f;
    xo[2048] = 99.7f;
    group_norm_double(xo, 2, dy, y_ref, dx_ref);
    got = run([](const Var& v, const Var& vw, const Var& vb) { return group_norm(v, 2, vw, vb); }, xo, Tensor(),
              Tensor(), dy);
    CHECK_CLOSE(got.y, to_float(y_ref, s));
    CHECK_CLOSE(got.dx, to_float(dx_ref, s));
  });
}

// ---- fused norm + ReLU ----------------------------------------------------------------------

namespace {

// Inputs whose normalized values stay at least ~0.1 away from ReLU's kink (x = +-(1 + |randn|)
// with random signs, positive weights, small biases), so finite differences never cross it.
Tensor away_from_kink(Shape s, uint64_t seed) {
  Tensor x = randn_t(s, seed), sign = randn_t(std::move(s), seed + 1);
  for (int64_t i = 0; i < x.numel(); ++i) x[i] = (sign[i] < 0 ? -1.f : 1.f) * (1.f + 0.5f * std::fabs(x[i]));
  return x;
}

// y, dx, dw, db of the fused op against relu() of the plain one: the output bit for bit, the
// gradients to float rounding (the two sum the same terms, one masked in a separate pass).
void check_fused(const Grads& fused, const Grads& plain) {
  CHECK(bitwise_equal(fused.y, plain.y));
  CHECK_CLOSE(fused.dx, plain.dx, 1e-6);
  if (plain.dw.defined()) CHECK_CLOSE(fused.dw, plain.dw, 1e-6);
  if (plain.db.defined()) CHECK_CLOSE(fused.db, plain.db, 1e-6);
}

}  // namespace

TEST_CASE("group_norm_relu: equals relu(group_norm), forward and backward, small and large groups") {
  sbtest::for_each_simd_level([&] {
    struct Case {
      Shape shape;
      int64_t groups;
      bool affine;
    };
    // The first three take the double kernels (fewer than 64 values per group), the rest the
    // float ones; the last two are large enough to run multi-threaded.
    std::vector<Case> cases = {{{3, 4}, 2, true},          {{2, 8, 5}, 4, false},      {{2, 6, 3, 5}, 3, true},
                               {{2, 4, 8, 8}, 2, false},     {{2, 32, 16, 16}, 8, true}, {{1, 64, 24, 24}, 32, true}};
    uint64_t seed = 300;
    for (const Case& c : cases) {
      CAPTURE(shape_str(c.shape));
      int64_t C = c.shape[1], G = c.groups;
      Tensor x = randn_t(c.shape, seed++, -0.5f, 1.5f), dy = randn_t(c.shape, seed++);
      Tensor w = c.affine ? randn_t({C}, seed++, 1.f, 0.5f) : Tensor();
      Tensor b = c.affine ? randn_t({C}, seed++) : Tensor();
      Grads fused = run([G](const Var& v, const Var& vw, const Var& vb) { return gn_relu(v, G, vw, vb); },
                        x, w, b, dy);
      Grads plain = run([G](const Var& v, const Var& vw, const Var& vb) { return relu(group_norm(v, G, vw, vb)); },
                        x, w, b, dy);
      check_fused(fused, plain);
      // And against the composed reference, as the plain op is, except with 2 values per group,
      // where dx is ~eps-small and the float32 composition keeps only its rounding noise.
      if (x.numel() / (c.shape[0] * G) > 2)
        check_same(fused, run([G](const Var& v, const Var& vw, const Var& vb) {
          return relu(group_norm_composed(v, G, vw, vb));
        }, x, w, b, dy));
    }
  });
}

TEST_CASE("batch_norm_relu: equals relu(batch_norm), training (running stats too) and eval") {
  sbtest::for_each_simd_level([&] {
    struct Case {
      Shape shape;
      bool affine;
    };
    std::vector<Case> cases = {{{4, 3}, true}, {{2, 4, 3, 3}, true}, {{3, 2, 5}, false}, {{2, 3, 8, 8}, false},
                               {{4, 16, 24, 24}, true}};
    uint64_t seed = 400;
    for (const Case& c : cases) {
      CAPTURE(shape_str(c.shape));
      int64_t C = c.shape[1];
      Tensor x = randn_t(c.shape, seed++, 0.5f, 2.f), dy = randn_t(c.shape, seed++);
      Tensor w = c.affine ? randn_t({C}, seed++, 1.f, 0.5f) : Tensor();
      Tensor b = c.affine ? randn_t({C}, seed++) : Tensor();
      Tensor rm = randn_t({C}, seed++), rv = rand_t({C}, seed++, 0.5f, 2.f);
      for (bool training : {true, false}) {
        CAPTURE(training);
        Tensor rm1 = rm.clone(), rv1 = rv.clone(), rm2 = rm.clone(), rv2 = rv.clone();
        int64_t t1 = 3, t2 = 3;
        Grads fused = run([&](const Var& v, const Var& vw, const Var& vb) {
          return bn_relu_positional(v, rm1, rv1, vw, vb, training, 0.1f, 1e-5f, false, &t1);
        }, x, w, b, dy);
        Grads plain = run([&](const Var& v, const Var& vw, const Var& vb) {
          return relu(bn_positional(v, rm2, rv2, vw, vb, training, 0.1f, 1e-5f, false, &t2));
        }, x, w, b, dy);
        check_fused(fused, plain);
        CHECK(bitwise_equal(rm1, rm2));
        CHECK(bitwise_equal(rv1, rv2));
        CHECK(t1 == t2);
      }
      // No running statistics: batch statistics in both modes.
      Grads fused = run([](const Var& v, const Var& vw, const Var& vb) {
        return bn_relu_positional(v, Tensor(), Tensor(), vw, vb, false, 0.1f);
      }, x, w, b, dy);
      Grads plain = run([](const Var& v, const Var& vw, const Var& vb) {
        return relu(bn_positional(v, Tensor(), Tensor(), vw, vb, false, 0.1f));
      }, x, w, b, dy);
      check_fused(fused, plain);
    }
  });
}

TEST_CASE("norm + relu: finite-difference gradients, and the check catches an unmasked backward") {
  Tensor w = rand_t({4}, 501, 0.5f, 1.5f), b = rand_t({4}, 502, -0.2f, 0.2f);
  // (2, 4, 3): 6 values per group (double kernels); (2, 4, 8, 8): 128 (float kernels).
  for (Shape s : {Shape{2, 4, 3}, Shape{2, 4, 8, 8}}) {
    CAPTURE(shape_str(s));
    Tensor x = away_from_kink(s, 503);
    CHECK_GRADCHECK([](const std::vector<Var>& v) { return gn_relu(v[0], 2, v[1], v[2]); }, {x, w, b});
    CHECK_GRADCHECK([](const std::vector<Var>& v) {
      return bn_relu_positional(v[0], Tensor(), Tensor(), v[1], v[2], true, 0.1f);
    }, {x, w, b});
    Tensor rm = randn_t({4}, 504, 0.f, 0.1f), rv = rand_t({4}, 505, 0.8f, 1.2f);
    CHECK_GRADCHECK([&](const std::vector<Var>& v) {
      return bn_relu_positional(v[0], rm, rv, v[1], v[2], false, 0.1f);
    }, {x, w, b});
    // relu's value with the unmasked gradient of group_norm: the check must fail.
    auto unmasked = [](const std::vector<Var>& v) {
      Var y = group_norm(v[0], 2, v[1], v[2]);
      return y + (relu(y) - y).detach();
    };
    CHECK_FALSE(gradcheck(unmasked, {x, w, b}).ok);
  }
}

TEST_CASE("group_norm_relu and batch_norm_relu: results do not depend on the thread count") {
  sbtest::for_each_simd_level([&] {
    Shape s{2, 32, 24, 24};
    Tensor x = randn_t(s, 511), dy = randn_t(s, 512), w = randn_t({32}, 513), b = randn_t({32}, 514);
    auto gn = [](const Var& v, const Var& vw, const Var& vb) { return gn_relu(v, 8, vw, vb); };
    auto bn = [](const Var& v, const Var& vw, const Var& vb) {
      return bn_relu_positional(v, Tensor(), Tensor(), vw, vb, true, 0.1f);
    };
    for (int k = 0; k < 2; ++k) {
      CAPTURE(k);
      Grads one, many;
      {
        ThreadScope t(1);
        one = k == 0 ? run(gn, x, w, b, dy) : run(bn, x, w, b, dy);
      }
      {
        ThreadScope t(4);
        many = k == 0 ? run(gn, x, w, b, dy) : run(bn, x, w, b, dy);
      }
      CHECK(bitwise_equal(one.y, many.y));
      CHECK(bitwise_equal(one.dx, many.dx));
      CHECK(bitwise_equal(one.dw, many.dw));
      CHECK(bitwise_equal(one.db, many.db));
    }
  });
}

TEST_CASE("layers: a norm built with a ReLU equals relu(the same norm without) for GroupNorm and the BN family") {
  Tensor x = randn_t({2, 8, 6, 6}, 521, 0.3f, 1.5f), dy = randn_t({2, 8, 6, 6}, 522);
  auto compare = [&](Module& fused_m, Module& plain_m) {
    Var xa(x.clone(), true), xb(x.clone(), true);
    Var ya = fused_m.forward(xa), yb = relu(plain_m.forward(xb));
    CHECK(bitwise_equal(ya.value(), yb.value()));
    ya.backward(dy);
    yb.backward(dy);
    CHECK_CLOSE(xa.grad(), xb.grad(), 1e-6);
    auto pa = fused_m.parameters(), pb = plain_m.parameters();
    REQUIRE(pa.size() == pb.size());
    for (size_t i = 0; i < pa.size(); ++i) CHECK_CLOSE(pa[i].grad(), pb[i].grad(), 1e-6);
    auto ba = fused_m.named_buffers(), bb = plain_m.named_buffers();
    for (size_t i = 0; i < ba.size(); ++i) CHECK(bitwise_equal(ba[i].second, bb[i].second));
  };
  BatchNormConfig with_relu;
  with_relu.activation = Activation::ReLU;
  SUBCASE("GroupNorm") {
    GroupNorm a(4, 8, 1e-5f, true, Activation::ReLU), b(4, 8);
    compare(a, b);
  }
  SUBCASE("BatchNorm2d: training, eval, and eval with batch statistics") {
    BatchNorm2d a(8, with_relu), b(8);
    compare(a, b);  // training: running statistics updated alike
    a.eval(), b.eval();
    compare(a, b);
    a.batch_stats_in_eval = b.batch_stats_in_eval = true;
    compare(a, b);
  }
  SUBCASE("BatchRenorm2d and FreezingBatchNorm2d: training and eval") {
    BatchRenorm2d a(8, {}, with_relu), b(8);
    compare(a, b);
    compare(a, b);  // the second step renormalizes against running statistics that moved
    a.eval(), b.eval();
    compare(a, b);
    FreezingBatchNorm2d fa(8, 1, with_relu), fb(8, 1);
    compare(fa, fb);  // warm-up
    compare(fa, fb);  // frozen
  }
  CHECK_THROWS_WITH_AS(GroupNorm(2, 8, 1e-5f, true, Activation::ReLU).forward(Var(Tensor::ones({2, 6, 3}))),
                       doctest::Contains("GroupNorm(2, 8): expected input (N, 8, *) but got (2, 6, 3)"), Error);
  CHECK_THROWS_WITH_AS(BatchNorm2d(8, with_relu).forward(Var(Tensor::ones({2, 6, 3, 3}))),
                       doctest::Contains("BatchNorm2d(8): expected 8 channels"), Error);
}

// ---- streaming stores -------------------------------------------------------------------------

namespace {

// Sets the size from which norm outputs are written with streaming stores, for a scope.
struct StreamScope {
  explicit StreamScope(int64_t bytes) { kernels::set_streaming_min_bytes(bytes); }
  ~StreamScope() { kernels::set_streaming_min_bytes(-1); }
};

}  // namespace

TEST_CASE("norm ops: streaming-store outputs equal cached-store outputs bit for bit") {
  sbtest::for_each_simd_level([&] {
    // Shapes with rows of odd lengths (misaligned row starts, tails shorter than a vector), rows
    // longer than one 256-value staging block, and the float and double kernels.
    const std::vector<Shape> shapes = {{2, 4, 7, 9}, {3, 8, 33, 17}, {2, 16, 24, 24}, {4, 3}, {1, 8, 3, 5}};
    uint64_t seed = 900;
    for (const Shape& s : shapes) {
      CAPTURE(shape_str(s));
      const int64_t C = s[1];
      Tensor x = randn_t(s, seed++, 0.3f, 1.2f), dy = randn_t(s, seed++);
      Tensor w = randn_t({C}, seed++, 1.f, 0.3f), b = randn_t({C}, seed++);
      const int64_t G = C % 4 == 0 ? C / 4 : 1;
      for (int k = 0; k < 6; ++k) {
        CAPTURE(k);
        Tensor rm = Tensor::zeros({C}), rv = Tensor::ones({C});
        auto f = [&](const Var& v, const Var& vw, const Var& vb) {
          switch (k) {
            case 0: return group_norm(v, G, vw, vb);
            case 1: return gn_relu(v, G, vw, vb);
            case 2: return bn_positional(v, rm, rv, vw, vb, true, 0.1f);
            case 3: return bn_relu_positional(v, rm, rv, vw, vb, true, 0.1f);
            case 4: return bn_positional(v, rm, rv, vw, vb, false, 0.1f);
            default: return bn_relu_positional(v, rm, rv, vw, vb, false, 0.1f);
          }
        };
        Grads cached, streamed;
        {
          StreamScope never(INT64_MAX);
          cached = run(f, x, w, b, dy);
        }
        rm = Tensor::zeros({C}), rv = Tensor::ones({C});
        {
          StreamScope always(0);
          streamed = run(f, x, w, b, dy);
        }
        CHECK(bitwise_equal(cached.y, streamed.y));
        CHECK(bitwise_equal(cached.dx, streamed.dx));
        CHECK(bitwise_equal(cached.dw, streamed.dw));
        CHECK(bitwise_equal(cached.db, streamed.db));
      }
    }
  });
}

TEST_CASE("norm ops: the streaming threshold defaults to a positive size and can be restored") {
  const int64_t def = kernels::streaming_min_bytes();
  CHECK(def > 0);
  kernels::set_streaming_min_bytes(123);
  CHECK(kernels::streaming_min_bytes() == 123);
  kernels::set_streaming_min_bytes(-1);
  CHECK(kernels::streaming_min_bytes() == def);
}

TEST_CASE("group_norm_relu and batch_norm_relu: a NaN input propagates, as relu(norm(x)) does in PyTorch") {
  // PyTorch 1.13: relu(group_norm(x)) is NaN over the whole group of a NaN input; the fused op
  // used to write 0 there (its select was y > 0 ? y : 0), hiding the NaN from the loss.
  Tensor x = randn_t({2, 4, 3, 3}, 71);
  x[5] = NAN;  // sample 0, group 0 (channels 0 and 1)
  Var y = gn_relu(Var(x), 2, Var(), Var());
  Var y_plain = relu(group_norm(Var(x), 2, Var(), Var()));
  const int64_t group = 2 * 9;
  for (int64_t i = 0; i < x.numel(); ++i) {
    CAPTURE(i);
    CHECK(std::isnan(y.value()[i]) == (i < group));
    CHECK(std::isnan(y_plain.value()[i]) == (i < group));
  }
  Var b = bn_relu_positional(Var(x), Tensor(), Tensor(), Var(), Var(), true, 0.1f);
  for (int64_t i = 0; i < x.numel(); ++i) {
    CAPTURE(i);
    const int64_t c = (i / 9) % 4;  // channel 0 holds the NaN, in both samples' statistics
    CHECK(std::isnan(b.value()[i]) == (c == 0));
  }
}
