// The normalizations beyond BN and GN that `compare` sweeps: Batch Renormalization (brn),
// BatchNorm frozen after a warm-up (frozenbn) and GroupNorm with Weight Standardization
// (gn+ws), against PyTorch references (tools/scripts/fixtures/fx_norm_variants.py) and BatchNorm2d.
#include <doctest/doctest.h>

#include <cstring>
#include <sstream>

#include "core/ops.h"
#include "fixtures.h"
#include "gradcheck.h"
#include "layers/conv/ops.h"
#include "layers/loss/ops.h"
#include "layers/norm/batch_renorm.h"
#include "layers/conv2d.h"
#include "layers/norm/group_norm.h"
#include "models/registry.h"
#include "models/unet.h"
#include "tools/app/checkpoint.h"
#include "tools/app/compare.h"

using namespace sb;
using sbtest::allclose;

namespace {

Tensor randn_t(Shape s, uint64_t seed, float mean = 0.f, float std = 1.f) {
  Generator g(seed);
  return Tensor::randn(std::move(s), g, mean, std);
}

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), sizeof(float) * a.numel()) == 0;
}

// One training forward + backward of `m` on x with upstream gradient dy; returns y and dx.
std::pair<Tensor, Tensor> step(Module& m, const Tensor& x, const Tensor& dy) {
  Var xv(x.clone(), true);
  Var y = m.forward(xv);
  sum(mul(y, Var(dy))).backward();
  return {y.value().clone(), xv.grad().clone()};
}

}  // namespace

TEST_CASE("brn: matches the PyTorch-written algorithm over training steps, with clipping and a ramp") {
  TensorFile f = sbtest::load_fixture("norm_variants");
  std::stringstream cases(f.metadata.at("brn_cases"));
  int checked = 0;
  for (std::string name; std::getline(cases, name, ',');) {
    CAPTURE(name);
    const Tensor& p = f.get_float(name + ".params");  // r_max, d_max, ramp_steps, momentum, steps
    BatchRenormConfig rc{p[0], p[1], static_cast<int64_t>(p[2])};
    BatchNormConfig bc;
    bc.momentum = p[3];
    const Tensor& w = f.get_float(name + ".weight");
    BatchRenorm2d brn(w.numel(), rc, bc);
    brn.weight.value().copy_from(w);
    brn.bias.value().copy_from(f.get_float(name + ".bias"));
    brn.running.mean.copy_from(f.get_float(name + ".running_mean0"));
    brn.running.var.copy_from(f.get_float(name + ".running_var0"));
    brn.train();
    for (int s = 0; s < static_cast<int>(p[4]); ++s) {
      CAPTURE(s);
      std::string k = str(name, ".", s, ".");
      brn.weight.zero_grad();
      brn.bias.zero_grad();
      auto [y, dx] = step(brn, f.get_float(k + "x"), f.get_float(k + "dy"));
      auto check = [](const Tensor& got, const Tensor& want) {
        auto c = allclose(got, want, 1e-5);
        CHECK_MESSAGE(c.ok, c.report);
      };
      check(y, f.get_float(k + "y"));
      check(dx, f.get_float(k + "dx"));
      check(brn.weight.grad(), f.get_float(k + "dweight"));
      check(brn.bias.grad(), f.get_float(k + "dbias"));
      check(brn.running.mean, f.get_float(k + "running_mean"));
      check(brn.running.var, f.get_float(k + "running_var"));
      ++checked;
    }
    CHECK(brn.running.num_batches_tracked.item() == static_cast<int64_t>(p[4]));
  }
  CHECK(checked == 8);
}

TEST_CASE("brn: with r_max = 1 and d_max = 0 it is BatchNorm2d, bit for bit") {
  BatchRenorm2d brn(3, {1.f, 0.f, 0});
  BatchNorm2d bn(3);
  for (Module* m : {static_cast<Module*>(&brn), static_cast<Module*>(&bn)}) m->train();
  Tensor w = randn_t({3}, 1, 1.f, 0.3f);
  brn.weight.value().copy_from(w);
  bn.weight.value().copy_from(w);
  for (int s = 0; s < 3; ++s) {
    Tensor x = randn_t({4, 3, 3, 2}, 10 + s, 0.5f, 2.f), dy = randn_t({4, 3, 3, 2}, 20 + s);
    auto [y1, dx1] = step(brn, x, dy);
    auto [y2, dx2] = step(bn, x, dy);
    CHECK(bitwise_equal(y1, y2));
    CHECK(bitwise_equal(dx1, dx2));
  }
  CHECK(bitwise_equal(brn.weight.grad(), bn.weight.grad()));
  CHECK(bitwise_equal(brn.running.mean, bn.running.mean));
  CHECK(bitwise_equal(brn.running.var, bn.running.var));
  // Evaluation is BatchNorm's: running statistics.
  brn.eval();
  bn.eval();
  Tensor x = randn_t({2, 3, 2, 2}, 5);
  CHECK(bitwise_equal(brn.forward(Var(x)).value(), bn.forward(Var(x)).value()));
}

TEST_CASE("brn: the limits ramp linearly from plain BN to (r_max, d_max)") {
  BatchRenorm2d brn(2, {3.f, 5.f, 10});
  CHECK(brn.limits(0) == std::pair<float, float>{1.f, 0.f});
  CHECK(brn.limits(5).first == doctest::Approx(2.f));
  CHECK(brn.limits(5).second == doctest::Approx(2.5f));
  CHECK(brn.limits(10) == std::pair<float, float>{3.f, 5.f});
  CHECK(brn.limits(1000) == std::pair<float, float>{3.f, 5.f});
  CHECK(BatchRenorm2d(2, {3.f, 5.f, 0}).limits(0) == std::pair<float, float>{3.f, 5.f});
  CHECK_THROWS_WITH_AS(BatchRenorm2d(2, {0.5f, 5.f, 0}), doctest::Contains("r_max >= 1"), Error);
}

TEST_CASE("brn: weight and bias gradients match finite differences (r and d do not depend on them)") {
  Tensor x = randn_t({3, 2, 2, 2}, 3, 0.7f, 1.5f);
  auto f = [&](const std::vector<Var>& in) {
    BatchRenorm2d brn(2, {1.2f, 0.3f, 0});
    brn.running.mean.copy_from(randn_t({2}, 4));
    brn.weight = in[0];
    brn.bias = in[1];
    brn.train();
    return brn.forward(Var(x));
  };
  auto r = sbtest::gradcheck(f, {randn_t({2}, 5, 1.f, 0.2f), randn_t({2}, 6)}, 1e-2);
  CHECK_MESSAGE(r.ok, r.report);
}

TEST_CASE("frozenbn: BatchNorm during the warm-up, then frozen to the running statistics") {
  FreezingBatchNorm2d fbn(3, 2);
  BatchNorm2d bn(3);
  fbn.train();
  bn.train();
  for (int s = 0; s < 2; ++s) {  // the warm-up: identical to BatchNorm2d
    Tensor x = randn_t({2, 3, 2, 2}, 30 + s, 1.f, 2.f), dy = randn_t({2, 3, 2, 2}, 40 + s);
    CHECK_FALSE(fbn.frozen());
    auto [y1, dx1] = step(fbn, x, dy);
    auto [y2, dx2] = step(bn, x, dy);
    CHECK(bitwise_equal(y1, y2));
    CHECK(bitwise_equal(dx1, dx2));
  }
  CHECK(fbn.frozen());
  Tensor rm = fbn.running.mean.clone(), rv = fbn.running.var.clone();
  CHECK_FALSE(bitwise_equal(rm, Tensor::zeros({3})));  // the warm-up did update them
  // Frozen: training normalizes exactly as evaluation does, and nothing is updated.
  Tensor x = randn_t({2, 3, 2, 2}, 50, -1.f, 3.f), dy = randn_t({2, 3, 2, 2}, 51);
  auto [y, dx] = step(fbn, x, dy);
  CHECK(bitwise_equal(fbn.running.mean, rm));
  CHECK(bitwise_equal(fbn.running.var, rv));
  CHECK(fbn.running.num_batches_tracked.item() == 2);
  fbn.eval();
  CHECK(bitwise_equal(fbn.forward(Var(x)).value(), y));
  // dx = dy * weight / sqrt(running_var + eps), per channel.
  for (int64_t i = 0; i < x.numel(); ++i) {
    int64_t c = (i / 4) % 3;
    CHECK(dx[i] == doctest::Approx(dy[i] * fbn.weight.value()[c] / std::sqrt(rv[c] + 1e-5f)).epsilon(1e-6));
  }
}

TEST_CASE("gn+ws: a Weight-Standardized Conv2d matches PyTorch, output and gradients") {
  TensorFile f = sbtest::load_fixture("norm_variants");
  Conv2dConfig cfg{3, 4, 3, 1, 1, 1, 1, false};
  cfg.weight_standardization = true;
  Conv2d conv(cfg);
  conv.weight.value().copy_from(f.get_float("ws.weight"));
  auto [y, dx] = step(conv, f.get_float("ws.x"), f.get_float("ws.dy"));
  for (auto [got, want] : {std::pair{y, "ws.y"}, {dx, "ws.dx"}, {conv.weight.grad(), "ws.dweight"}}) {
    CAPTURE(want);
    auto c = allclose(got, f.get_float(want), 1e-5);
    CHECK_MESSAGE(c.ok, c.report);
  }
  // The stored weight stays raw: same keys, same values as a plain Conv2d.
  StateDict sd = conv.state_dict();
  CHECK(sd.floats.size() == 1);
  CHECK(bitwise_equal(sd.get_float("weight"), f.get_float("ws.weight")));
  CHECK(conv.name().find("weight_standardization") != std::string::npos);
}

TEST_CASE("models: brn and frozenbn have bn's state_dict keys, and gn+ws has gn's") {
  auto keys = [](const std::string& norm) {
    ModelOptions o;
    o.norm.kind = norm;
    o.base_width = 8;
    o.norm.warmup = 5;
    std::vector<std::string> k;
    StateDict sd = make_model("unet-s", o)->state_dict();
    for (auto& [name, t] : sd.floats) k.push_back(name + shape_str(t.shape()));
    for (auto& [name, t] : sd.ints) k.push_back(name);
    return k;
  };
  CHECK(keys("brn") == keys("bn"));
  CHECK(keys("frozenbn") == keys("bn"));
  CHECK(keys("gn+ws") == keys("gn"));
  ModelOptions o;
  o.norm.kind = "gn+ws";
  o.base_width = 8;
  ModulePtr m = make_model("unet-s", o);
  int ws = 0;
  m->apply([&](Module& x) {
    if (auto* c = dynamic_cast<Conv2d*>(&x)) ws += c->config().weight_standardization;
  });
  CHECK(ws == 10);  // the two 3x3 convs of each of the 5 blocks; not the up-convs or the head
  o.norm.kind = "brn";
  o.norm.warmup = 7;
  int ramps = 0;
  make_model("unet-s", o)->apply([&](Module& x) {
    if (auto* b = dynamic_cast<BatchRenorm2d*>(&x)) ramps += b->renorm_config().ramp_steps == 7;
  });
  CHECK(ramps == 10);
  o.norm.kind = "nope";
  CHECK_THROWS_WITH_AS(make_model("unet-s", o), doctest::Contains("gn+ws, brn, frozenbn"), Error);
}

TEST_CASE("models: every new norm trains a step with finite gradients") {
  for (std::string norm : {"gn+ws", "brn", "frozenbn"}) {
    CAPTURE(norm);
    ModelOptions o;
    o.norm.kind = norm;
    o.base_width = 8;
    o.norm.warmup = 1;
    ModulePtr m = make_model("unet", o);
    m->train();
    for (int s = 0; s < 2; ++s) {  // frozenbn freezes at the second step
      Var loss = cross_entropy(m->forward(Var(randn_t({2, 3, 16, 16}, 7 + s))), IndexTensor::zeros({2, 16, 16}));
      loss.backward();
      REQUIRE(std::isfinite(loss.value().item()));
    }
    for (auto& [name, p] : m->named_parameters()) {
      CAPTURE(name);
      REQUIRE(p.grad().defined());
      int64_t bad = 0;
      for (int64_t i = 0; i < p.grad().numel(); ++i) bad += !std::isfinite(p.grad()[i]);
      CHECK(bad == 0);
    }
  }
}

TEST_CASE("checkpoint: the model spec keeps norm_warmup") {
  ModelSpec s;
  s.options.norm.kind = "frozenbn";
  s.options.norm.warmup = 12;
  CHECK(ModelSpec::from_json(s.to_json(), "x").options.norm.warmup == 12);
  s.options.norm.warmup = 0;
  CHECK_FALSE(s.to_json().contains("norm_warmup"));
}

TEST_CASE("compare: the full preset sweeps every norm, gn+ws joins a group sweep, bad norms are named") {
  CompareConfig full;
  full.preset = "full";
  full.apply_preset();
  std::vector<std::string> single_process = norm_kinds();
  std::erase(single_process, std::string("syncbn"));  // bn in one process
  CHECK(full.norms == single_process);
  CHECK(full.norm_warmup_epochs == doctest::Approx(5.0));  // 16 epochs / 3, rounded
  CompareConfig c;
  c.norms = {"gn", "gn+ws", "brn"};
  c.groups = {2, 4};
  c.batch_sizes = {2};
  c.seeds = 1;
  c.apply_preset();
  std::vector<std::string> labels, dirs;
  for (auto& r : plan_runs(c)) labels.push_back(r.label()), dirs.push_back(r.dir_name());
  CHECK(labels == std::vector<std::string>{"gn(G=2)", "gn(G=4)", "gn+ws(G=2)", "gn+ws(G=4)", "brn"});
  CHECK(dirs == std::vector<std::string>{"gn_g2_b2_s0", "gn_g4_b2_s0", "gn_ws_g2_b2_s0", "gn_ws_g4_b2_s0", "brn_b2_s0"});
  CompareConfig bad;
  bad.norms = {"bn", "batchnorm"};
  CHECK_THROWS_WITH_AS(bad.apply_preset(), doctest::Contains("--norms: unknown normalization 'batchnorm'"), Error);
  CompareConfig twice;
  twice.norms = {"bn", "bn"};
  CHECK_THROWS_WITH_AS(twice.apply_preset(), doctest::Contains("listed twice"), Error);
}
