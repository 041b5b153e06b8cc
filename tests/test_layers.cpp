// The Module system (names, state_dict, load errors, train/eval) and the basic layers.
#include <doctest/doctest.h>

#include <cmath>

#include "gradcheck.h"
#include "layers/norm/batch_norm.h"
#include "layers/conv2d.h"
#include "layers/norm/group_norm.h"
#include "layers/linear.h"
#include "layers/losses.h"
#include "layers/sequential.h"
#include "layers/simple.h"

using namespace sb;

namespace {
struct Net : Module {
  std::shared_ptr<Conv2d> conv;
  std::shared_ptr<BatchNorm2d> bn;
  std::shared_ptr<Sequential> head;
  Net() {
    conv = register_module("conv", std::make_shared<Conv2d>(3, 4, 3, 1, 1, false));
    bn = register_module("bn", std::make_shared<BatchNorm2d>(4));
    head = register_module("head", std::make_shared<Sequential>(std::initializer_list<ModulePtr>{
                                       std::make_shared<ReLU>(), std::make_shared<Conv2d>(4, 2, 1)}));
  }
  Var forward(const Var& x) override { return head->forward(bn->forward(conv->forward(x))); }
};
}  // namespace

TEST_CASE("module: dotted names are PyTorch's state_dict keys") {
  Net net;
  std::vector<std::string> names;
  for (auto& [n, _] : net.named_parameters()) names.push_back(n);
  CHECK(names == std::vector<std::string>{"conv.weight", "bn.weight", "bn.bias", "head.1.weight", "head.1.bias"});
  StateDict sd = net.state_dict();
  CHECK(sd.floats.count("bn.running_mean"));
  CHECK(sd.floats.count("bn.running_var"));
  CHECK(sd.ints.count("bn.num_batches_tracked"));
  CHECK(sd.ints.at("bn.num_batches_tracked").shape() == Shape{});
  CHECK(net.num_parameters() == 4 * 3 * 9 + 4 + 4 + 2 * 4 + 2);
}

TEST_CASE("module: train/eval is recursive and load_state_dict copies into the parameters") {
  Net a, b;
  a.eval();
  CHECK_FALSE(a.bn->is_training());
  CHECK_FALSE(a.head->is_training());
  a.train();
  CHECK(a.bn->is_training());
  b.load_state_dict(a.state_dict());
  CHECK_CLOSE(b.conv->weight.value(), a.conv->weight.value());
  CHECK_FALSE(b.conv->weight.value().same_storage(a.conv->weight.value()));
}

TEST_CASE("module: load_state_dict reports every missing, unexpected and mis-shaped key at once") {
  Net net;
  StateDict sd = net.state_dict();
  StateDict bad;
  for (auto& [k, v] : sd.floats) bad.floats[k] = v.clone();
  bad.ints = sd.ints;
  bad.floats.erase("bn.bias");
  bad.floats["extra.weight"] = Tensor::zeros({1});
  bad.floats["conv.weight"] = Tensor::zeros({4, 3, 5, 5});
  Tensor before = net.bn->weight.value().clone();
  bad.floats["bn.weight"] = Tensor::full({4}, 9.f);
  try {
    net.load_state_dict(bad);
    FAIL("expected an error");
  } catch (const Error& e) {
    std::string m = e.what();
    CHECK(m.find("conv.weight: checkpoint (4, 3, 5, 5), model (4, 3, 3, 3)") != std::string::npos);
    CHECK(m.find("missing keys (1):\n    bn.bias") != std::string::npos);
    CHECK(m.find("unexpected keys (1):\n    extra.weight") != std::string::npos);
  }
  // A failed load changes nothing.
  CHECK_CLOSE(net.bn->weight.value(), before);
  // Non-strict loads ignore missing and unexpected keys but never a wrong shape.
  bad.floats["conv.weight"] = Tensor::zeros({4, 3, 3, 3});
  net.load_state_dict(bad, false);
  CHECK(net.bn->weight.value()[0] == 9.f);
}

TEST_CASE("module: default initialization follows PyTorch's bounds") {
  manual_seed(3);
  Conv2d conv(8, 16, 3);
  float bound = 1.0f / std::sqrt(8.f * 9.f);
  float lo = 1, hi = -1;
  for (float v : conv.weight.value()) lo = std::min(lo, v), hi = std::max(hi, v);
  CHECK(lo >= -bound);
  CHECK(hi <= bound);
  CHECK(hi > 0.9f * bound);  // actually spread over the range
  for (float v : conv.bias.value()) CHECK(std::fabs(v) <= bound);
  ConvTranspose2d up(8, 4, 2, 2);
  CHECK(up.weight.shape() == Shape{8, 4, 2, 2});
  float tbound = 1.0f / std::sqrt(4.f * 4.f);  // fan_in = out_channels * kH * kW
  for (float v : up.weight.value()) CHECK(std::fabs(v) <= tbound);
  // Seeded: the same seed gives the same weights.
  manual_seed(3);
  Conv2d again(8, 16, 3);
  CHECK_CLOSE(again.weight.value(), conv.weight.value(), 0.0, 0.0);
}

TEST_CASE("module: layers give clear errors for bad configurations") {
  CHECK_THROWS_WITH_AS(GroupNorm(4, 6), doctest::Contains("6 channels are not divisible by 4 groups"), Error);
  CHECK_THROWS_WITH_AS(GroupNorm(0, 6), doctest::Contains("num_groups must be positive"), Error);
  GroupNorm gn(2, 4);
  CHECK_THROWS_WITH_AS(gn.forward(Var(Tensor::zeros({2, 6, 3, 3}))), doctest::Contains("GroupNorm(2, 4): expected input (N, 4, *) but got (2, 6, 3, 3)"), Error);
  BatchNorm2d bn(4);
  CHECK_THROWS_WITH_AS(bn.forward(Var(Tensor::zeros({1, 4, 1, 1}))), doctest::Contains("more than 1 value per channel"), Error);
  CHECK_THROWS_WITH_AS(bn.forward(Var(Tensor::zeros({2, 4, 3}))), doctest::Contains("expected 4-d input"), Error);
  CHECK_THROWS_WITH_AS(Conv2d(3, 4, 3, 1, 0).forward(Var(Tensor::zeros({1, 5, 8, 8}))), doctest::Contains("conv2d"), Error);
}

TEST_CASE("module: BatchNorm2d eval uses running statistics, and batch-stat evaluation updates nothing") {
  BatchNorm2d bn(2);
  Generator g(5);
  Tensor x = Tensor::randn({8, 2, 8, 8}, g, 1.0f, 2.0f);
  bn.forward(Var(x));
  CHECK(bn.running.num_batches_tracked[0] == 1);
  Tensor rm = bn.running.mean.clone();
  bn.eval();
  NoGrad ng;
  Var y_run = bn.forward(Var(x));
  bn.batch_stats_in_eval = true;
  Var y_batch = bn.forward(Var(x));
  CHECK_CLOSE(bn.running.mean, rm, 0.0, 0.0);
  CHECK(bn.running.num_batches_tracked[0] == 1);
  // Batch statistics normalize each channel to mean 0; running ones (after one step of momentum
  // 0.1) do not.
  double m_batch = 0, m_run = 0;
  for (int64_t i = 0; i < 64 * 8; ++i) {
    int64_t n = i / 64, k = i % 64;
    m_batch += y_batch.value()[(n * 2) * 64 + k];
    m_run += y_run.value()[(n * 2) * 64 + k];
  }
  CHECK(std::fabs(m_batch / 512) < 1e-4);
  CHECK(std::fabs(m_run / 512) > 0.5);
}

TEST_CASE("module: Dice and cross-entropy losses ignore 255 and have checked gradients") {
  Generator g(9);
  Tensor logits = Tensor::randn({2, 3, 4, 4}, g);
  IndexTensor t = IndexTensor::zeros({2, 4, 4});
  for (int64_t i = 0; i < t.numel(); ++i) t[i] = static_cast<int64_t>(g.below(3));
  t[0] = 255;
  t[5] = 255;
  DiceLoss dice;
  CrossEntropyLoss ce;
  Var d = dice(Var(logits), t);
  CHECK(d.item() > 0.f);
  CHECK(d.item() < 1.f);
  // A perfect, confident prediction has Dice loss near 0.
  Tensor perfect = Tensor::full({2, 3, 4, 4}, -20.f);
  for (int64_t n = 0; n < 2; ++n)
    for (int64_t i = 0; i < 16; ++i) {
      int64_t c = t[n * 16 + i] == 255 ? 0 : t[n * 16 + i];
      perfect[(n * 3 + c) * 16 + i] = 20.f;
    }
  CHECK(dice(Var(perfect), t).item() < 1e-4);
  // Ignored pixels do not matter: changing their logits changes nothing.
  Tensor moved = logits.clone();
  for (int64_t c = 0; c < 3; ++c) moved[(0 * 3 + c) * 16 + 0] += 5.f * (c + 1);
  CHECK(dice(Var(moved), t).item() == doctest::Approx(d.item()));
  CHECK(ce(Var(moved), t).item() == doctest::Approx(ce(Var(logits), t).item()));
  CHECK_GRADCHECK([&](const std::vector<Var>& v) { return dice(v[0], t); }, {logits});
}
