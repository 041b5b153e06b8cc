// The public modules no model of ours uses (Linear, MaxPool2d, AvgPool2d, Upsample, Dropout),
// through the Module API a user's network calls: forward and gradients against torch.nn
// (tools/scripts/fixtures/fx_layers.py), state_dict keys as PyTorch's, and Dropout's train/eval
// semantics (its random stream is not PyTorch's, so the test checks what a mask does, not which).
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "fixtures.h"
#include "gradcheck.h"
#include "layers/linear.h"
#include "layers/sequential.h"
#include "layers/simple.h"

using namespace sb;

namespace {

const TensorFile& fixture() {
  static const TensorFile f = sbtest::load_fixture("layers_api");
  return f;
}

// The case's module state as PyTorch saved it: state.<name>.<key> under <key>.
StateDict torch_state(const std::string& name) {
  const std::string prefix = "state." + name + ".";
  StateDict sd;
  for (auto& [k, v] : fixture().floats)
    if (k.rfind(prefix, 0) == 0) sd.floats[k.substr(prefix.size())] = v;
  return sd;
}

std::set<std::string> keys(const StateDict& sd) {
  std::set<std::string> out;
  for (auto& [k, _] : sd.floats) out.insert(k);
  for (auto& [k, _] : sd.ints) out.insert(k);
  return out;
}

// Loads PyTorch's state into `m` by PyTorch's keys (strictly: every key must match), runs
// forward on the case's x, backpropagates its gy, and compares the output, the input grad and
// every parameter's grad with torch.nn's.
void check_module(const std::string& name, Module& m) {
  INFO("case " << name << ": " << m.name());
  const TensorFile& f = fixture();
  StateDict want = torch_state(name);
  CHECK(keys(m.state_dict()) == keys(want));
  m.load_state_dict(want);
  Var x(f.get_float(name + ".x").clone(), true);  // (N, in) or (N, C, H, W)
  Var y = m.forward(x);
  CHECK_CLOSE(y.value(), f.get_float(name + ".y"));
  y.backward(f.get_float(name + ".gy"));
  CHECK_CLOSE(x.grad(), f.get_float(name + ".gx"));
  for (auto& [k, p] : m.named_parameters()) {
    INFO("parameter " << k);
    CHECK_CLOSE(p.grad(), f.get_float(name + ".g" + k));
  }
  // None of these modules behaves differently in eval mode: the same bits.
  m.eval();
  NoGrad ng;
  CHECK_CLOSE(m.forward(Var(f.get_float(name + ".x"))).value(), y.value(), 0.0, 0.0);
}

Pool2dOptions pool(Pair kernel, std::optional<Pair> stride, Pair padding = 0, bool ceil_mode = false,
                   bool count_include_pad = true) {
  Pool2dOptions o;
  o.kernel = kernel;
  o.stride = stride;
  o.padding = padding;
  o.ceil_mode = ceil_mode;
  o.count_include_pad = count_include_pad;
  return o;
}

// Each fixture case and the module that should reproduce it (fx_layers.py builds its twin).
const std::vector<std::pair<std::string, std::function<ModulePtr()>>>& cases() {
  static const std::vector<std::pair<std::string, std::function<ModulePtr()>>> c = {
      {"linear", [] { return std::make_shared<Linear>(5, 3); }},
      {"linear_nobias", [] { return std::make_shared<Linear>(6, 2, false); }},
      {"max_k2", [] { return std::make_shared<MaxPool2d>(2); }},
      {"max_k3s2p1", [] { return std::make_shared<MaxPool2d>(pool(3, 2, 1)); }},
      {"max_k3s2_ceil", [] { return std::make_shared<MaxPool2d>(pool(3, 2, 0, true)); }},
      {"max_k3x2s2x1p1x0", [] { return std::make_shared<MaxPool2d>(pool({3, 2}, Pair{2, 1}, {1, 0})); }},
      {"avg_k2", [] { return std::make_shared<AvgPool2d>(2); }},
      {"avg_k3s2p1", [] { return std::make_shared<AvgPool2d>(pool(3, 2, 1)); }},
      {"avg_k3s2p1_nopad", [] { return std::make_shared<AvgPool2d>(pool(3, 2, 1, false, false)); }},
      {"avg_k3s2p1_ceil", [] { return std::make_shared<AvgPool2d>(pool(3, 2, 1, true)); }},
      {"avg_k3s2p1_ceil_nopad", [] { return std::make_shared<AvgPool2d>(pool(3, 2, 1, true, false)); }},
      {"up_nearest_x2", [] { return std::make_shared<Upsample>(2, UpsampleMode::Nearest); }},
      {"up_nearest_x3", [] { return std::make_shared<Upsample>(3, UpsampleMode::Nearest); }},
      {"up_bilinear_x2", [] { return std::make_shared<Upsample>(2, UpsampleMode::Bilinear); }},
      {"up_bilinear_x3", [] { return std::make_shared<Upsample>(3, UpsampleMode::Bilinear); }},
  };
  return c;
}

void check_cases(const std::string& prefix) {
  int checked = 0;
  for (auto& [name, make] : cases())
    if (name.rfind(prefix, 0) == 0) {
      ModulePtr m = make();
      check_module(name, *m);
      ++checked;
    }
  CHECK(checked > 0);
}

Tensor rand_t(Shape s, uint64_t seed, float lo, float hi) {
  Generator g(seed);
  return Tensor::rand(std::move(s), g, lo, hi);
}

}  // namespace

TEST_CASE("layers api: every PyTorch case in the fixture has its module here") {
  std::set<std::string> in_file, here;
  std::stringstream ss(fixture().metadata.at("cases"));
  for (std::string c; std::getline(ss, c, ',');) in_file.insert(c);
  for (auto& [name, _] : cases()) here.insert(name);
  CHECK(in_file == here);
}

TEST_CASE("layers api: Linear matches torch.nn.Linear, with PyTorch's state_dict keys") {
  check_cases("linear");
  CHECK(keys(Linear(5, 3).state_dict()) == std::set<std::string>{"weight", "bias"});
  CHECK(keys(Linear(5, 3, false).state_dict()) == std::set<std::string>{"weight"});
  Linear lin(5, 3);
  CHECK(lin.weight.shape() == Shape{3, 5});
  CHECK(lin.bias.shape() == Shape{3});
  CHECK(lin.parameters().size() == 2);
  CHECK_THROWS_WITH_AS(lin.forward(Var(Tensor::zeros({2, 4}))),
                       doctest::Contains("linear: input (2, 4) has 4 features but weight (3, 5) expects 5"), Error);
}

TEST_CASE("layers api: MaxPool2d matches torch.nn.MaxPool2d (stride, padding, ceil_mode)") {
  check_cases("max_");
}

TEST_CASE("layers api: AvgPool2d matches torch.nn.AvgPool2d (stride, padding, ceil_mode, count_include_pad)") {
  check_cases("avg_");
}

TEST_CASE("layers api: Upsample matches torch.nn.Upsample, nearest and bilinear (align_corners=False)") {
  check_cases("up_");
  CHECK_THROWS_WITH_AS(Upsample(2, UpsampleMode::Nearest).forward(Var(Tensor::zeros({2, 5, 6}))),
                       doctest::Contains("Upsample: expected (N, C, H, W) but got (2, 5, 6)"), Error);
}

TEST_CASE("layers api: parameter-free modules have an empty state_dict") {
  CHECK(keys(MaxPool2d(2).state_dict()).empty());
  CHECK(keys(AvgPool2d(2).state_dict()).empty());
  CHECK(keys(Upsample(2, UpsampleMode::Bilinear).state_dict()).empty());
  CHECK(keys(Dropout(0.5f).state_dict()).empty());
}

TEST_CASE("layers api: Dropout in eval mode is the identity, values and gradient") {
  Dropout d(0.5f);
  d.eval();
  Tensor xt = rand_t({4, 3, 5, 5}, 1, -1.f, 1.f);
  Var x(xt.clone(), true);
  Var y = d.forward(x);
  CHECK_CLOSE(y.value(), xt, 0.0, 0.0);
  Tensor gy = rand_t({4, 3, 5, 5}, 2, -1.f, 1.f);
  y.backward(gy);
  CHECK_CLOSE(x.grad(), gy, 0.0, 0.0);
  // eval() reaches a Dropout inside a container, and train() turns it back on.
  Sequential net{std::make_shared<Dropout>(0.5f)};
  net.eval();
  CHECK_CLOSE(net.forward(Var(xt)).value(), xt, 0.0, 0.0);
  net.train();
  int64_t zeros = 0;
  const Tensor dropped = net.forward(Var(xt)).value();  // a handle: the Var is gone after this line
  for (float v : dropped) zeros += v == 0.f;
  CHECK(zeros > 0);
}

TEST_CASE("layers api: Dropout in training zeroes a fraction p and scales the rest by 1/(1-p)") {
  const Shape shape{8, 4, 32, 32};  // 32768 elements
  Tensor xt = rand_t(shape, 3, 0.5f, 2.f);  // no zeros: a zero in the output means dropped
  Tensor gy = rand_t(shape, 4, -1.f, 1.f);
  for (float p : {0.1f, 0.5f, 0.8f}) {
    INFO("p = " << p);
    Generator gen(7);
    Dropout d(p, &gen);
    REQUIRE(d.is_training());  // modules start in training mode, as in PyTorch
    Var x(xt.clone(), true);
    Var y = d.forward(x);
    y.backward(gy);
    const double n = static_cast<double>(xt.numel());
    const float scale = 1.f / (1.f - p);
    int64_t dropped = 0, wrong = 0, wrong_grad = 0;
    for (int64_t i = 0; i < xt.numel(); ++i) {
      bool kept = y.value()[i] != 0.f;
      dropped += !kept;
      // Survivors are scaled by 1/(1-p), so the expected output is the input; the gradient
      // flows through the survivors with the same factor and not at all through the rest.
      if (kept && std::fabs(y.value()[i] - xt[i] * scale) > 1e-6f * std::fabs(xt[i] * scale)) ++wrong;
      float want_grad = kept ? gy[i] * scale : 0.f;
      if (std::fabs(x.grad()[i] - want_grad) > 1e-6f * std::fabs(want_grad)) ++wrong_grad;
    }
    CHECK(wrong == 0);
    CHECK(wrong_grad == 0);
    // The dropped fraction is p within 5 standard deviations of a binomial count.
    double frac = static_cast<double>(dropped) / n;
    CHECK(std::fabs(frac - p) < 5 * std::sqrt(p * (1 - p) / n));
  }
}

TEST_CASE("layers api: Dropout's masks come from its generator, a new one each call") {
  Tensor xt = rand_t({2, 3, 8, 8}, 5, 0.5f, 2.f);
  Generator g1(11), g2(11);
  Dropout a(0.5f, &g1), b(0.5f, &g2);
  Tensor ya = a.forward(Var(xt)).value();
  CHECK_CLOSE(b.forward(Var(xt)).value(), ya, 0.0, 0.0);  // same seed, same mask
  Tensor ya2 = a.forward(Var(xt)).value();
  int64_t differ = 0;
  for (int64_t i = 0; i < xt.numel(); ++i) differ += (ya[i] == 0.f) != (ya2[i] == 0.f);
  CHECK(differ > 0);  // the next call draws a new mask
}

TEST_CASE("layers api: Dropout with p = 0 keeps everything and p = 1 drops everything, as in PyTorch") {
  Tensor xt = rand_t({2, 3, 4, 4}, 6, 0.5f, 2.f);
  Tensor gy = rand_t({2, 3, 4, 4}, 8, -1.f, 1.f);
  Dropout keep(0.f), drop(1.f);
  Var x(xt.clone(), true);
  Var y = keep.forward(x);
  CHECK_CLOSE(y.value(), xt, 0.0, 0.0);
  y.backward(gy);
  CHECK_CLOSE(x.grad(), gy, 0.0, 0.0);
  Var x1(xt.clone(), true);
  Var y1 = drop.forward(x1);
  CHECK_CLOSE(y1.value(), Tensor::zeros(xt.shape()), 0.0, 0.0);
  y1.backward(gy);
  CHECK_CLOSE(x1.grad(), Tensor::zeros(xt.shape()), 0.0, 0.0);
  CHECK(Dropout().name() == "Dropout(p=0.5)");  // PyTorch's default p
  CHECK_THROWS_WITH_AS(Dropout(1.5f), doctest::Contains("Dropout: p must be in [0, 1], got 1.5"), Error);
}
