// The model zoo beyond unet-s: unet at any depth and fcn. Shapes, gradients, state_dict names,
// clear errors for bad configurations, a few SGD steps that must lower the loss, and the
// `smallbatch models` listing.
#include <doctest/doctest.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <regex>
#include <set>

#include "core/ops.h"
#include "gradcheck.h"
#include "layers/loss/ops.h"
#include "models/fcn.h"
#include "models/registry.h"
#include "models/unet.h"
#include "optim/optimizer.h"

using namespace sb;

namespace {

ModelOptions small_options(const std::string& norm, int64_t depth, int64_t base = 4, int64_t groups = 2) {
  ModelOptions o;
  o.norm.kind = norm;
  o.norm.groups = groups;
  o.base_width = base;
  o.classes = 3;
  o.depth = depth;
  return o;
}

// The distinct first components of the dotted parameter names, in registration order.
std::vector<std::string> child_order(const Module& m) {
  std::vector<std::string> out;
  for (auto& [k, _] : m.named_parameters()) {
    std::string head = k.substr(0, k.find('.'));
    if (out.empty() || out.back() != head) out.push_back(head);
  }
  return out;
}

// doctest::Contains copies its pattern, so a temporary string may build it.
doctest::Contains has(const std::string& s) { return doctest::Contains(s.c_str()); }

// x (N, 3, H, W) and its target (N, H, W): the image is a grid of 4 x 4 tiles, each of a
// random class k in [0, 3) that raises channel k, under noise. Learnable from local evidence
// by every model, including fcn's coarse, upsampled logits.
std::pair<Tensor, IndexTensor> toy_batch(int64_t n, int64_t h, int64_t w, uint64_t seed) {
  Generator g(seed);
  Tensor x = Tensor::randn({n, 3, h, w}, g, 0.f, 0.5f);  // (N, 3, H, W)
  IndexTensor y = IndexTensor::zeros({n, h, w});         // (N, H, W)
  for (int64_t i = 0; i < n; ++i)
    for (int64_t ty = 0; ty < h; ty += 4)
      for (int64_t tx = 0; tx < w; tx += 4) {
        int64_t k = (int64_t)g.below(3);
        for (int64_t r = ty; r < std::min(ty + 4, h); ++r)
          for (int64_t c = tx; c < std::min(tx + 4, w); ++c) {
            x[((i * 3 + k) * h + r) * w + c] += 1.f;
            y[(i * h + r) * w + c] = k;
          }
      }
  return {x, y};
}

}  // namespace

TEST_CASE("models: the registry lists unet-s, unet and fcn with the options each reads") {
  std::vector<std::string> names;
  for (const auto& m : registered_models()) {
    names.push_back(m.name);
    CHECK(!m.description.empty());
    std::set<std::string> opts;
    for (const auto& o : m.options) {
      CHECK(!o.default_value.empty());
      CHECK(!o.help.empty());
      opts.insert(o.name);
    }
    for (const char* o : {"norm", "groups", "base_width", "classes", "in_channels"}) CHECK(opts.count(o) == 1);
    CHECK(opts.count("depth") == (m.name == "unet-s" ? 0u : 1u));
  }
  CHECK(names == std::vector<std::string>{"unet-s", "unet", "fcn"});
  CHECK_THROWS_WITH_AS(make_model("fcn-xl"), doctest::Contains("unknown model 'fcn-xl' (known: unet-s, unet, fcn)"),
                       Error);
}

TEST_CASE("models: unet and fcn keep the input size for several sizes, depths and norms") {
  NoGrad ng;
  for (std::string name : {"unet", "fcn"})
    for (int64_t depth : {1, 2, 3, 4})
      for (std::string norm : {"bn", "gn", "ln", "in", "none"}) {
        CAPTURE(name);
        CAPTURE(depth);
        CAPTURE(norm);
        ModulePtr m = make_model(name, small_options(norm, depth));
        const int64_t f = int64_t{1} << depth;
        // Square and not, the smallest legal size and larger ones; N = 2 keeps BatchNorm legal
        // at a 1 x 1 bottleneck.
        for (auto [h, w] : std::vector<std::pair<int64_t, int64_t>>{{f, f}, {2 * f, 3 * f}, {4 * f, 2 * f}}) {
          // GroupNorm(C, C) needs more than one position per channel: not at a 1 x 1 bottleneck.
          if (norm == "in" && h == f && w == f) continue;
          Tensor x = Tensor::randn({2, 3, h, w}, default_generator());
          Var y = m->forward(Var(x));
          CHECK(y.shape() == Shape{2, 3, h, w});
        }
      }
}

TEST_CASE("models: the model's default depth applies when depth is 0") {
  NoGrad ng;
  ModelOptions o = small_options("gn", 0);
  auto unet = std::dynamic_pointer_cast<UNet>(make_model("unet", o));
  auto fcn = std::dynamic_pointer_cast<FCN>(make_model("fcn", o));
  REQUIRE(unet);
  REQUIRE(fcn);
  CHECK(unet->config().depth == UNet::kDefaultDepth);
  CHECK(fcn->config().depth == FCN::kDefaultDepth);
  CHECK(unet->forward(Var(Tensor::zeros({1, 3, 16, 16}))).shape() == Shape{1, 3, 16, 16});
  CHECK(fcn->forward(Var(Tensor::zeros({1, 3, 8, 8}))).shape() == Shape{1, 3, 8, 8});
}

TEST_CASE("models: unet at depth 2 is unet-s, key for key and value for value") {
  for (std::string norm : {"gn", "bn"}) {
    CAPTURE(norm);
    ModelOptions o = small_options(norm, 2);
    ModulePtr s = make_model("unet-s", o), u = make_model("unet", o);
    std::vector<std::pair<std::string, Shape>> ks, ku;
    for (auto& [k, v] : s->named_parameters()) ks.emplace_back(k, v.shape());
    for (auto& [k, v] : u->named_parameters()) ku.emplace_back(k, v.shape());
    CHECK(ks == ku);  // the same names in the same (optimizer) order
    StateDict sd = s->state_dict();
    u->load_state_dict(sd, true);
    Tensor x = Tensor::randn({2, 3, 8, 12}, default_generator());
    Tensor ys = s->forward(Var(x)).value(), yu = u->forward(Var(x)).value();
    CHECK_CLOSE(yu, ys, 1e-6);
  }
}

TEST_CASE("models: state_dict names are dotted, unique and in the documented order") {
  std::regex dotted("[a-z][a-z0-9_]*(\\.[a-z0-9_]+)*");
  for (std::string name : {"unet-s", "unet", "fcn"})
    for (std::string norm : {"bn", "gn", "none"}) {
      CAPTURE(name);
      CAPTURE(norm);
      ModulePtr m = make_model(name, small_options(norm, 3));
      StateDict sd = m->state_dict();
      std::set<std::string> seen;
      size_t count = 0;
      auto see = [&](const std::string& k) {
        CAPTURE(k);
        CHECK(std::regex_match(k, dotted));
        CHECK(seen.insert(k).second);
        ++count;
      };
      for (auto& [k, _] : m->named_parameters()) see(k);
      for (auto& [k, _] : m->named_buffers()) see(k);
      for (auto& [k, _] : m->named_int_buffers()) see(k);
      CHECK(count == sd.floats.size() + sd.ints.size());
      CHECK(m->named_buffers().empty() == (norm != "bn"));  // only BatchNorm has running statistics
    }
  ModulePtr u = make_model("unet", small_options("gn", 3));
  CHECK(child_order(*u) == std::vector<std::string>{"e1", "e2", "e3", "e4", "u3", "d3", "u2", "d2", "u1", "d1", "head"});
  ModulePtr f = make_model("fcn", small_options("gn", 3));
  CHECK(child_order(*f) == std::vector<std::string>{"s1", "s2", "s3", "head"});
  StateDict sd = f->state_dict();
  // GroupNorm models' convolutions carry no bias, as in unet-s; the classifier does.
  CHECK(sd.floats.at("s1.c1.weight").shape() == Shape{4, 3, 3, 3});
  CHECK(sd.floats.count("s1.c1.bias") == 0);
  CHECK(sd.floats.at("s3.n2.weight").shape() == Shape{16});
  CHECK(sd.floats.at("head.weight").shape() == Shape{3, 16, 1, 1});
  CHECK(sd.floats.at("head.bias").shape() == Shape{3});
  StateDict su = u->state_dict();
  CHECK(su.floats.at("e4.c2.weight").shape() == Shape{32, 32, 3, 3});
  CHECK(su.floats.at("u3.weight").shape() == Shape{32, 16, 2, 2});
  CHECK(su.floats.at("d3.c1.weight").shape() == Shape{16, 32, 3, 3});
}

TEST_CASE("models: every parameter of unet and fcn gets a finite gradient") {
  for (std::string name : {"unet", "fcn"})
    for (std::string norm : {"bn", "gn", "none"}) {
      CAPTURE(name);
      CAPTURE(norm);
      ModulePtr m = make_model(name, small_options(norm, 2));
      auto [x, y] = toy_batch(2, 8, 8, 7);
      cross_entropy(m->forward(Var(x)), y).backward();
      for (auto& [k, p] : m->named_parameters()) {
        CAPTURE(k);
        REQUIRE(p.grad().defined());
        CHECK(p.grad().shape() == p.shape());
        double sq = 0;
        bool finite = true;
        for (float g : p.grad()) {
          finite = finite && std::isfinite(g);
          sq += (double)g * g;
        }
        CHECK(finite);
        CHECK(sq > 0);
      }
    }
}

TEST_CASE("models: unet and fcn input gradients match finite differences") {
  // Without normalization, whose statistics over a few tiny planes are far from linear at the
  // finite-difference step; ReLU kinks and max-pool winners rarely flip at a 1e-3 step.
  for (std::string name : {"unet", "fcn"}) {
    CAPTURE(name);
    // Fixed weights, so the result does not depend on which tests ran before (they draw from
    // the same default generator).
    manual_seed(5);
    ModulePtr m = make_model(name, small_options("none", 2, 4));
    Generator g(3);
    Tensor x = Tensor::randn({1, 3, 8, 8}, g);
    Var xv(x.clone(), true);
    sum(m->forward(xv)).backward();
    double sq = 0;
    for (float v : xv.grad()) sq += (double)v * v;
    CHECK(sq > 1e-8);  // a live network, so the comparison below means something
    CHECK_GRADCHECK([&](const std::vector<Var>& in) { return m->forward(in[0]); }, {x}, 1e-3, 1e-3, 1e-2, 64);
  }
}

TEST_CASE("models: bad unet and fcn configurations are clear errors") {
  for (std::string name : {"unet", "fcn"}) {
    CAPTURE(name);
    std::string n = name;
    ModelOptions o = small_options("gn", 9);
    CHECK_THROWS_WITH_AS(make_model(name, o), has(n + ": depth must be in [1, 8]"), Error);
    o.depth = -1;
    CHECK_THROWS_WITH_AS(make_model(name, o), doctest::Contains("got -1"), Error);
    o = small_options("xn", 2);
    CHECK_THROWS_WITH_AS(make_model(name, o), has(n + ": unknown norm 'xn' (known: bn, syncbn, gn, ln, in, none, gn+ws, brn, frozenbn, frn, evonorm-s0, evonorm-b0)"),
                         Error);
    o = small_options("gn", 2, 12, 8);  // 12 channels in 8 groups
    CHECK_THROWS_WITH_AS(make_model(name, o), has(n + ": norm 'gn' with groups=8 cannot split"), Error);
    o = small_options("gn", 2, 4, 0);
    CHECK_THROWS_WITH_AS(make_model(name, o), has(n + ": norm 'gn' needs groups > 0"), Error);
    o = small_options("gn", 2);
    o.classes = 0;
    CHECK_THROWS_WITH_AS(make_model(name, o), has(n + ": base_width, classes and in_channels must be positive"),
                         Error);

    // The input: channels, and a size the depth cannot halve that many times.
    ModulePtr m = make_model(name, small_options("gn", 3));
    CHECK_THROWS_WITH_AS(m->forward(Var(Tensor::zeros({1, 4, 16, 16}))),
                         has(n + ": expected input (N, 3, H, W) but got (1, 4, 16, 16)"), Error);
    CHECK_THROWS_WITH_AS(m->forward(Var(Tensor::zeros({1, 3, 4, 4}))),
                         has(n + ": depth 3 needs H and W divisible by 2^depth = 8 but got input (1, 3, 4, 4)"),
                         Error);
    CHECK_THROWS_WITH_AS(m->forward(Var(Tensor::zeros({1, 3, 16, 20}))),
                         doctest::Contains("divisible by 2^depth = 8 but got input (1, 3, 16, 20)"), Error);
  }
  // The same layers narrower than `groups` get one group per channel, as in unet-s.
  CHECK_NOTHROW(make_model("unet", small_options("gn", 2, 4, 32)));
}

TEST_CASE("models: a few SGD steps on a fixed batch lower the loss of every model") {
  for (std::string name : {"unet-s", "unet", "fcn"})
    for (std::string norm : {"gn", "bn"}) {
      CAPTURE(name);
      CAPTURE(norm);
      manual_seed(1);
      // unet at depth 3, so it is not unet-s again (depth 2 is, weights and all).
      ModulePtr m = make_model(name, small_options(norm, name == "unet" ? 3 : 2, 8, 4));
      auto [x, y] = toy_batch(2, 16, 16, 11);
      SGDOptions so;
      so.lr = 0.05f;
      so.momentum = 0.9f;
      SGD opt(m->parameters(), so);
      std::vector<float> losses;
      for (int step = 0; step < 12; ++step) {
        Var loss = cross_entropy(m->forward(Var(x)), y);
        losses.push_back(loss.item());
        opt.zero_grad();
        loss.backward();
        opt.step();
      }
      INFO("first " << losses.front() << " last " << losses.back());
      CHECK(std::isfinite(losses.back()));
      CHECK(losses.back() < 0.8f * losses.front());
    }
}

#ifdef SB_CLI_PATH
TEST_CASE("models: `smallbatch models` lists every model with its options") {
  REQUIRE_MESSAGE(std::filesystem::exists(SB_CLI_PATH), "build the command first: " SB_CLI_PATH);
  std::unique_ptr<FILE, int (*)(FILE*)> p(popen("\"" SB_CLI_PATH "\" models", "r"), pclose);
  REQUIRE(p);
  std::string out;
  std::array<char, 4096> buf;
  while (size_t n = std::fread(buf.data(), 1, buf.size(), p.get())) out.append(buf.data(), n);
  int status = pclose(p.release());
  CHECK(status == 0);
  INFO(out);
  for (const auto& m : registered_models()) {
    bool listed = out.rfind(m.name + "\n", 0) == 0 || out.find("\n" + m.name + "\n") != std::string::npos;
    CHECK_MESSAGE(listed, m.name);
  }
  CHECK(out.find("--depth (4)") != std::string::npos);
  CHECK(out.find("--depth (3)") != std::string::npos);
  CHECK(out.find("--base-width (16)") != std::string::npos);
}
#endif
