// unet-s against the PyTorch reference: state_dict keys and shapes, and for every norm kind the
// train-mode logits, loss, every parameter's gradient, BatchNorm buffers, and eval logits.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "core/ops.h"
#include "fixtures.h"
#include "gradcheck.h"
#include "layers/loss/ops.h"
#include "models/registry.h"
#include "models/unet.h"

using namespace sb;

TEST_CASE("unet-s: state_dict keys and shapes equal the reference's for every norm kind") {
  auto fx = sbtest::load_fixture("unet_keys");
  auto keys = nlohmann::json::parse(fx.metadata.at("keys"));
  for (const char* norm : {"bn", "gn", "ln", "in", "none"}) {
    CAPTURE(norm);
    ModelOptions opt;
    opt.norm.kind = norm;
    ModulePtr m = make_model("unet-s", opt);
    // PyTorch's order: parameters and buffers interleaved per module; compare as a set of
    // (name, shape) plus the parameter order, which optimizers depend on.
    StateDict sd = m->state_dict();
    std::vector<std::pair<std::string, Shape>> ours, theirs;
    for (auto& [k, v] : sd.floats) ours.emplace_back(k, v.shape());
    for (auto& [k, v] : sd.ints) ours.emplace_back(k, v.shape());
    for (auto& e : keys[norm]) theirs.emplace_back(e[0].get<std::string>(), e[1].get<Shape>());
    std::sort(ours.begin(), ours.end());
    std::sort(theirs.begin(), theirs.end());
    CHECK(ours == theirs);
    std::vector<std::string> param_order, ref_order;
    for (auto& [k, _] : m->named_parameters()) param_order.push_back(k);
    for (auto& e : keys[norm]) {
      std::string k = e[0];
      if (k.find("running_") == std::string::npos && k.find("num_batches") == std::string::npos)
        ref_order.push_back(k);
    }
    CHECK(param_order == ref_order);
  }
}

static void check_unet_parity(const std::string& norm, int base, int groups) {
  auto fx = sbtest::load_fixture("unet_" + norm + "_b" + std::to_string(base));
  ModelOptions opt;
  opt.norm.kind = norm;
  opt.norm.groups = groups;
  opt.classes = 3;
  opt.base_width = base;
  ModulePtr m = make_model("unet-s", opt);
  StateDict init;
  for (auto& [k, v] : fx.floats)
    if (k.rfind("init.", 0) == 0) init.floats[k.substr(5)] = v;
  for (auto& [k, v] : fx.ints)
    if (k.rfind("init.", 0) == 0) init.ints[k.substr(5)] = v;
  m->load_state_dict(init);
  m->train();
  Var logits = m->forward(Var(fx.get_float("x")));
  Var loss = cross_entropy(logits, fx.get_int("y"));
  CHECK_CLOSE(logits.value(), fx.get_float("logits"), 1e-4);
  CHECK(loss.item() == doctest::Approx(fx.get_float("loss")[0]).epsilon(1e-4));
  loss.backward();
  for (auto& [k, p] : m->named_parameters()) {
    CAPTURE(k);
    REQUIRE(p.grad().defined());
    CHECK_CLOSE(p.grad(), fx.get_float("grad." + k), 1e-4);
  }
  StateDict sd = m->state_dict();
  for (auto& [k, v] : fx.floats)
    if (k.rfind("after.", 0) == 0) {
      CAPTURE(k);
      CHECK_CLOSE(sd.floats.at(k.substr(6)), v, 1e-4);
    }
  for (auto& [k, v] : fx.ints)
    if (k.rfind("after.", 0) == 0) CHECK(sd.ints.at(k.substr(6))[0] == v[0]);
  m->eval();
  NoGrad ng;
  CHECK_CLOSE(m->forward(Var(fx.get_float("x"))).value(), fx.get_float("eval_logits"), 1e-4);
}

TEST_CASE("unet-s: matches PyTorch with BatchNorm (bn)") {
  check_unet_parity("bn", 4, 2);
  check_unet_parity("bn", 8, 4);
}
TEST_CASE("unet-s: matches PyTorch with GroupNorm (gn)") {
  check_unet_parity("gn", 4, 2);
  check_unet_parity("gn", 8, 4);
}
TEST_CASE("unet-s: matches PyTorch with LayerNorm (ln)") { check_unet_parity("ln", 4, 2); }
TEST_CASE("unet-s: matches PyTorch with InstanceNorm (in)") { check_unet_parity("in", 4, 2); }
TEST_CASE("unet-s: matches PyTorch without normalization (none)") { check_unet_parity("none", 4, 2); }

TEST_CASE("unet-s: bad settings are clear errors") {
  ModelOptions opt;
  opt.norm.kind = "xn";
  CHECK_THROWS_WITH_AS(make_model("unet-s", opt), doctest::Contains("unknown norm 'xn' (known: bn, syncbn, gn, ln, in, none, gn+ws, brn, frozenbn, frn, evonorm-s0, evonorm-b0)"), Error);
  CHECK_THROWS_WITH_AS(make_model("unet-xl"), doctest::Contains("unknown model 'unet-xl' (known: unet-s"), Error);
  opt.norm.kind = "gn";
  opt.norm.groups = 3;  // 16 channels in 3 groups
  CHECK_THROWS_WITH_AS(make_model("unet-s", opt), doctest::Contains("16 channels are not divisible by 3 groups"), Error);
  ModulePtr m = make_model("unet-s");
  CHECK_THROWS_WITH_AS(m->forward(Var(Tensor::zeros({1, 3, 10, 10}))), doctest::Contains("divisible by 4"), Error);
}
