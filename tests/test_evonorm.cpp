// The normalization-activation layers FRN + TLU (frn), EvoNorm-S0 (evonorm-s0) and EvoNorm-B0
// (evonorm-b0): forward, input and parameter gradients and B0's running variance against
// PyTorch references written from the papers' formulas with timm's semantics
// (tools/scripts/fixtures/fx_evonorm.py), finite differences, the edge cases, the registry
// entries and the unet-s keys. Training parity of unet-s is in test_train.cpp.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "core/threads.h"
#include "fixtures.h"
#include "gradcheck.h"
#include "layers/norm/evo_norm.h"
#include "layers/norm/norm.h"
#include "models/registry.h"
#include "simd_levels.h"
#include "tools/app/compare.h"

using namespace sb;

namespace {

Tensor randn_t(Shape s, uint64_t seed, float mean = 0.f, float std = 1.f) {
  Generator g(seed);
  return Tensor::randn(std::move(s), g, mean, std);
}

// Runs fixture case `name` on the layer the registry builds for it: parameters (and B0's
// running_var) from the fixture, then each step in train or eval mode, comparing y, dx, every
// parameter's gradient and running_var.
void check_case_once(const std::string& name) {
  CAPTURE(name);
  TensorFile f = sbtest::load_fixture("evonorm");
  auto meta = nlohmann::json::parse(f.metadata.at(name));
  const Tensor& x0 = f.get_float(name + ".0.x");
  NormSpec spec;
  spec.kind = meta["kind"];
  spec.groups = meta["groups"].get<int64_t>() > 0 ? meta["groups"].get<int64_t>() : 8;
  // The factory is asked for the ReLU a Block asks for; these layers replace it.
  ModulePtr m = make_norm(spec, x0.size(1), Activation::ReLU);
  StateDict sd = m->state_dict();
  for (auto& [k, v] : sd.floats) v.copy_from(f.get_float(name + "." + k + "0"));
  int step = 0;
  for (const std::string mode : meta["steps"]) {
    CAPTURE(step);
    const std::string p = str(name, ".", step, ".");
    mode == "train" ? m->train() : m->eval();
    Var x(f.get_float(p + "x").clone(), true);
    Var y = m->forward(x);
    sum(mul(y, Var(f.get_float(p + "dy")))).backward();
    CHECK_CLOSE(y.value(), f.get_float(p + "y"), 2e-5);
    CHECK_CLOSE(x.grad(), f.get_float(p + "dx"), 1e-4);
    for (auto& [k, v] : m->named_parameters()) {
      CAPTURE(k);
      CHECK_CLOSE(v.grad(), f.get_float(p + "d" + k), 1e-4);
      v.zero_grad();
    }
    for (auto& [k, v] : m->named_buffers()) {
      CAPTURE(k);
      CHECK_CLOSE(v, f.get_float(p + k), 1e-5);
    }
    ++step;
  }
}

// At every SIMD level the CPU has: the ops' per-plane loops are compiled for each.
void check_case(const std::string& name) {
  sbtest::for_each_simd_level([&] { check_case_once(name); });
}

}  // namespace

TEST_CASE("evonorm: FRN + TLU forward and gradients match PyTorch") { check_case("frn"); }

TEST_CASE("evonorm: FRN at H x W = 1 normalizes by x^2 itself and matches PyTorch") {
  check_case("frn_hw1");
  // nu2 = x^2: y = max(w x / sqrt(x^2 + eps) + b, tau), about w sign(x) + b for |x| >> sqrt(eps).
  FilterResponseNormTlu2d frn(2);
  frn.tau.value()[0] = -5.f, frn.tau.value()[1] = -5.f;
  Tensor x = Tensor::zeros({2, 2, 1, 1});
  x[0] = 3.f, x[1] = -0.002f, x[2] = 0.f, x[3] = 40.f;
  Tensor y = frn.forward(Var(x)).value();
  for (int64_t i = 0; i < 4; ++i) CHECK(y[i] == doctest::Approx(x[i] / std::sqrt(x[i] * x[i] + 1e-5)).epsilon(1e-6));
}

TEST_CASE("evonorm: EvoNorm-S0 forward and gradients match PyTorch, for 1, some and C groups") {
  check_case("s0");
  check_case("s0_g1");
  check_case("s0_in");  // one value per group: the variance is 0 and the std sqrt(eps), not an error
}

TEST_CASE("evonorm: EvoNorm-B0 training steps, running_var and evaluation match PyTorch") { check_case("b0"); }

TEST_CASE("evonorm: EvoNorm-B0 at batch 1 uses the image's own variance over H, W as the batch's") {
  check_case("b0_b1");
  // With one image the batch variance of a channel is that image's variance, so the denominator is
  // sqrt(ivar + eps) + max(0, v x): x / denominator exactly.
  EvoNorm2dB0 b0(3);
  Tensor x = randn_t({1, 3, 4, 4}, 5, 0.5f, 2.f);
  Tensor y = b0.forward(Var(x)).value();
  for (int64_t c = 0; c < 3; ++c) {
    double mean = 0, var = 0;
    for (int64_t i = 0; i < 16; ++i) mean += x[c * 16 + i] / 16.0;
    for (int64_t i = 0; i < 16; ++i) var += (x[c * 16 + i] - mean) * (x[c * 16 + i] - mean) / 16.0;
    for (int64_t i = 0; i < 16; ++i) {
      const double xi = x[c * 16 + i];
      CHECK(y[c * 16 + i] == doctest::Approx(xi / (std::sqrt(var + 1e-3) + std::max(0.0, xi))).epsilon(1e-5));
    }
    // running_var = 0.9 + 0.1 * var * 16 / 15
    CHECK(b0.running_var[c] == doctest::Approx(0.9 + 0.1 * var * 16.0 / 15.0).epsilon(1e-6));
  }
  // A single value per channel has no variance to carry: an error, as n / (n - 1) is in timm.
  CHECK_THROWS_WITH_AS(b0.forward(Var(Tensor::ones({1, 3, 1, 1}))), doctest::Contains("more than one value per channel"),
                       Error);
  b0.eval();
  CHECK_NOTHROW(b0.forward(Var(Tensor::ones({1, 3, 1, 1}))));  // evaluation reads running_var
}

TEST_CASE("evonorm: EvoNorm-B0 eval uses running_var, batch_stats_in_eval the batch's, neither updates it") {
  EvoNorm2dB0 b0(4);
  Tensor x = randn_t({3, 4, 5, 5}, 7, 1.f, 3.f);
  b0.train();
  Tensor y_train = b0.forward(Var(x)).value().clone();
  Tensor rv = b0.running_var.clone();
  b0.eval();
  Tensor y_eval = b0.forward(Var(x)).value().clone();
  CHECK_CLOSE(b0.running_var, rv, 0.0);
  CHECK_FALSE(sbtest::allclose(y_eval, y_train, 1e-3).ok);
  b0.batch_stats_in_eval = true;
  Tensor y_batch = b0.forward(Var(x)).value().clone();
  CHECK_CLOSE(y_batch, y_train, 0.0);  // the same statistics, the same bits
  CHECK_CLOSE(b0.running_var, rv, 0.0);
  // eval with running_var = the batch variance reproduces training's output
  b0.batch_stats_in_eval = false;
  for (int64_t c = 0; c < 4; ++c) b0.running_var[c] = float((rv[c] - 0.9) / 0.1 * (74.0 / 75.0));
  CHECK_CLOSE(b0.forward(Var(x)).value(), y_train, 1e-5);
}

TEST_CASE("evonorm: gradients of frn_tlu, evonorm_s0 and evonorm_b0 agree with finite differences") {
  sbtest::for_each_simd_level([] {
    Tensor x = randn_t({2, 4, 3, 3}, 11, 0.3f, 1.5f);
    Tensor w = randn_t({4}, 12, 1.f, 0.5f), b = randn_t({4}, 13, 0.f, 0.5f);
    Tensor tau = randn_t({4}, 14, 0.f, 0.3f), v = randn_t({4}, 15, 1.f, 1.f);
    // FRN's max() has a kink where weight * xhat + bias = tau: steps of 1e-3 keep the finite
    // differences off it for these inputs.
    CHECK_GRADCHECK([](const std::vector<Var>& in) { return frn_tlu(in[0], in[1], in[2], in[3]); }, {x, w, b, tau}, 1e-3);
    CHECK_GRADCHECK([](const std::vector<Var>& in) { return evonorm_s0(in[0], 2, in[1], in[2], in[3]); }, {x, w, b, v});
    CHECK_GRADCHECK([](const std::vector<Var>& in) { return evonorm_s0(in[0], 4, in[1], in[2], in[3]); }, {x, w, b, v});
    CHECK_GRADCHECK([](const std::vector<Var>& in) { return evonorm_b0(in[0], in[1], in[2], in[3], Tensor(), true, false); },
                    {x, w, b, v});
    Tensor rv = randn_t({4}, 16, 2.f, 0.3f);
    CHECK_GRADCHECK([&](const std::vector<Var>& in) { return evonorm_b0(in[0], in[1], in[2], in[3], rv, false, false); },
                    {x, w, b, v});
    // H x W = 1 and batch 1
    Tensor x1 = randn_t({3, 4, 1, 1}, 17, 0.f, 2.f), xb = randn_t({1, 4, 3, 2}, 18, 0.f, 2.f);
    CHECK_GRADCHECK([](const std::vector<Var>& in) { return frn_tlu(in[0], in[1], in[2], in[3]); }, {x1, w, b, tau});
    CHECK_GRADCHECK([](const std::vector<Var>& in) { return evonorm_b0(in[0], in[1], in[2], in[3], Tensor(), true, false); },
                    {xb, w, b, v});
  });
}

TEST_CASE("evonorm: results do not depend on the thread count") {
  Tensor x = randn_t({4, 16, 32, 32}, 21, 0.f, 1.f), dy = randn_t({4, 16, 32, 32}, 22);
  auto run = [&](const std::string& kind, int threads) {
    set_num_threads(threads);
    ModulePtr m = make_norm(NormSpec::parse(kind), 16);
    Var xv(x.clone(), true);
    sum(mul(m->forward(xv), Var(dy))).backward();
    std::vector<Tensor> out{xv.grad().clone()};
    for (auto& [k, p] : m->named_parameters()) out.push_back(p.grad().clone());
    return out;
  };
  const int before = num_threads();
  sbtest::for_each_simd_level([&] {
    for (std::string kind : {"frn", "evonorm-s0", "evonorm-b0"}) {
      CAPTURE(kind);
      auto one = run(kind, 1), two = run(kind, 2);
      for (size_t i = 0; i < one.size(); ++i) CHECK_CLOSE(one[i], two[i], 0.0);
    }
  });
  set_num_threads(before);
}

TEST_CASE("evonorm: groups that do not divide the channels are an error naming both, as timm's assert") {
  CHECK_THROWS_WITH_AS(EvoNorm2dS0(6, 4), doctest::Contains("6 channels are not divisible by 4 groups"), Error);
  CHECK_THROWS_WITH_AS(make_norm(NormSpec::parse("evonorm-s0(groups=4)"), 6),
                       doctest::Contains("not divisible by 4 groups"), Error);
  CHECK_THROWS_WITH_AS(evonorm_s0(Var(Tensor::ones({1, 6, 2, 2})), 4, Var(Tensor::ones({6})), Var(Tensor::zeros({6})),
                                  Var(Tensor::ones({6}))),
                       doctest::Contains("evonorm_s0: 6 channels of input (1, 6, 2, 2) are not divisible by 4"), Error);
  // Narrow layers get min(groups, C) groups, as gn's: 8 groups on 4 channels is 4 groups of one.
  auto s0 = std::dynamic_pointer_cast<EvoNorm2dS0>(make_norm(NormSpec::parse("evonorm-s0(groups=8)"), 4));
  REQUIRE(s0);
  CHECK(s0->num_groups() == 4);
  // And a model says which layer cannot split, before building anything.
  ModelOptions o;
  o.norm = NormSpec::parse("evonorm-s0(groups=3)");
  CHECK_THROWS_WITH_AS(make_model("unet-s", o), doctest::Contains("not divisible by 3 groups"), Error);
}

TEST_CASE("evonorm: the registry entries replace the ReLU, and their traits say so") {
  for (std::string kind : {"frn", "evonorm-s0", "evonorm-b0"}) {
    CAPTURE(kind);
    const NormInfo& info = norm_info(kind);
    CHECK(info.traits.includes_activation);
    CHECK_FALSE(info.traits.conv_bias);
    CHECK(info.traits.batch_statistics == (kind == "evonorm-b0"));
    CHECK(info.traits.running_statistics == (kind == "evonorm-b0"));
    CHECK(info.traits.uses_groups == (kind == "evonorm-s0"));
    // Asked for a fused ReLU, the factory builds the layer alone: negative outputs stay.
    Tensor x = randn_t({2, 4, 3, 3}, 31);
    ModulePtr with = make_norm(NormSpec{kind}, 4, Activation::ReLU), without = make_norm(NormSpec{kind}, 4);
    if (kind == "frn") std::dynamic_pointer_cast<FilterResponseNormTlu2d>(with)->tau.value().fill_(-1.f);
    if (kind == "frn") std::dynamic_pointer_cast<FilterResponseNormTlu2d>(without)->tau.value().fill_(-1.f);
    Tensor a = with->forward(Var(x)).value(), b = without->forward(Var(x)).value();
    CHECK_CLOSE(a, b, 0.0);
    bool negative = false;
    for (int64_t i = 0; i < a.numel(); ++i) negative = negative || a[i] < 0;
    CHECK(negative);
  }
  for (std::string kind : {"bn", "gn", "ln", "in", "none", "gn+ws", "brn", "frozenbn"})
    CHECK_FALSE(norm_info(kind).traits.includes_activation);
  CHECK(NormSpec::parse("evonorm-s0(groups=4)").format() == "evonorm-s0(groups=4)");
  CHECK(NormSpec::parse("frn").format() == "frn");
  CHECK_THROWS_WITH_AS(NormSpec::parse("frn(groups=2)"), doctest::Contains("'frn' has no setting 'groups'"), Error);
}

TEST_CASE("evonorm: unet-s keys are timm's names in places n1 and n2, with bias-free convolutions") {
  struct Want {
    std::string kind;
    std::vector<std::string> params, buffers;
  };
  for (const Want& w : {Want{"frn", {"weight", "bias", "tau"}, {}}, Want{"evonorm-s0", {"weight", "bias", "v"}, {}},
                        Want{"evonorm-b0", {"weight", "bias", "v"}, {"running_var"}}}) {
    CAPTURE(w.kind);
    ModelOptions o;
    o.norm = NormSpec::parse(w.kind);
    StateDict sd = make_model("unet-s", o)->state_dict();
    for (const std::string blk : {"e1", "e2", "e3", "d2", "d1"})
      for (const std::string n : {"n1", "n2"}) {
        int64_t count = 0;
        for (auto& [k, v] : sd.floats)
          if (k.rfind(blk + "." + n + ".", 0) == 0) ++count;
        CHECK(count == int64_t(w.params.size() + w.buffers.size()));
        for (const auto& p : w.params) CHECK(sd.floats.count(blk + "." + n + "." + p) == 1);
        for (const auto& p : w.buffers) CHECK(sd.floats.count(blk + "." + n + "." + p) == 1);
        CHECK(sd.floats.count(blk + ".c1.bias") == 0);
        CHECK(sd.floats.count(blk + ".c2.bias") == 0);
      }
    CHECK(sd.floats.at("e1.n1.weight").shape() == Shape{16});
    CHECK(sd.floats.at("e3.n2.bias").shape() == Shape{64});
    CHECK(sd.ints.empty());  // no num_batches_tracked: timm's EvoNorm2dB0 has none
  }
}

TEST_CASE("evonorm: compare's full preset sweeps frn and the EvoNorms, evonorm-s0 joins a group sweep") {
  CompareConfig full;
  full.preset = "full";
  full.apply_preset();
  for (std::string kind : {"frn", "evonorm-s0", "evonorm-b0"})
    CHECK(std::count(full.norms.begin(), full.norms.end(), kind) == 1);
  CompareConfig quick;
  quick.apply_preset();
  CHECK(quick.norms == std::vector<std::string>{"bn", "gn"});
  CompareConfig c;
  c.norms = {"frn", "evonorm-s0", "evonorm-b0"};
  c.groups = {2, 4};
  c.batch_sizes = {2};
  c.seeds = 1;
  c.apply_preset();
  std::vector<std::string> labels, dirs;
  for (auto& r : plan_runs(c)) labels.push_back(r.label()), dirs.push_back(r.dir_name());
  CHECK(labels == std::vector<std::string>{"frn", "evonorm-s0(G=2)", "evonorm-s0(G=4)", "evonorm-b0"});
  CHECK(dirs == std::vector<std::string>{"frn_b2_s0", "evonorm_s0_g2_b2_s0", "evonorm_s0_g4_b2_s0", "evonorm_b0_b2_s0"});
}

TEST_CASE("evonorm: EvoNorm-B0's knobs for the BN-family tools: observer and a cumulative momentum") {
  EvoNorm2dB0 b0(2);
  struct Seen : EvoNormB0Observer {
    std::vector<float> first_var;
    int calls = 0;
    void observe(const EvoNorm2dB0& layer, const Tensor& x) override {
      ++calls;
      CHECK(x.size(1) == 2);
      first_var.push_back(layer.running_var[0]);
    }
  } seen;
  b0.observer = &seen;
  // momentum 1 / k for the k-th batch: running_var ends as the mean of the unbiased variances.
  std::vector<double> unbiased;
  for (int k = 1; k <= 3; ++k) {
    Tensor x = randn_t({2, 2, 3, 3}, 40 + k, 0.f, float(k));
    double mean = 0, q = 0;
    for (int64_t n = 0; n < 2; ++n)
      for (int64_t i = 0; i < 9; ++i) mean += x[n * 18 + i] / 18.0;
    for (int64_t n = 0; n < 2; ++n)
      for (int64_t i = 0; i < 9; ++i) q += (x[n * 18 + i] - mean) * (x[n * 18 + i] - mean);
    unbiased.push_back(q / 17.0);
    b0.set_momentum(1.f / float(k));
    b0.forward(Var(x));
  }
  CHECK(seen.calls == 3);
  CHECK(seen.first_var[0] == 1.f);  // seen before the first update
  CHECK(b0.running_var[0] == doctest::Approx((unbiased[0] + unbiased[1] + unbiased[2]) / 3).epsilon(1e-5));
  CHECK_THROWS_WITH_AS(b0.set_momentum(1.5f), doctest::Contains("momentum must be in [0, 1]"), Error);
}
