// Optimizers, schedules and clipping against torch.optim (fixtures from tools/scripts/fixtures/fx_optim.py).
#include <doctest/doctest.h>

#include <cmath>

#include "fixtures.h"
#include "gradcheck.h"
#include "optim/optimizer.h"
#include "optim/schedule.h"

using namespace sb;

static void run_steps(const std::string& name, const std::function<std::unique_ptr<Optimizer>(Var)>& make) {
  auto fx = sbtest::load_fixture("optim");
  Var p(fx.get_float("p0").clone(), true);
  auto opt = make(p);
  const Tensor& grads = fx.get_float("grads");  // (4, 5, 4)
  for (int64_t i = 0; i < grads.size(0); ++i) {
    Tensor g = Tensor::empty({5, 4});
    std::copy(grads.data() + i * 20, grads.data() + (i + 1) * 20, g.data());
    p.set_grad(g);
    opt->step();
    CAPTURE(i);
    CHECK_CLOSE(p.value(), fx.get_float(name + "." + std::to_string(i)), 1e-5);
  }
}

TEST_CASE("optim: SGD matches torch.optim.SGD (plain, momentum, weight decay, dampening, nesterov)") {
  run_steps("sgd", [](Var p) { return std::make_unique<SGD>(std::vector<Var>{p}, SGDOptions{0.1f}); });
  run_steps("sgd_mom_wd", [](Var p) { return std::make_unique<SGD>(std::vector<Var>{p}, SGDOptions{0.05f, 0.9f, 0.f, 1e-2f}); });
  run_steps("sgd_damp", [](Var p) { return std::make_unique<SGD>(std::vector<Var>{p}, SGDOptions{0.05f, 0.8f, 0.3f, 0.f}); });
  run_steps("sgd_nesterov", [](Var p) {
    return std::make_unique<SGD>(std::vector<Var>{p}, SGDOptions{0.05f, 0.9f, 0.f, 1e-3f, true});
  });
}

TEST_CASE("optim: Adam and AdamW match torch.optim") {
  run_steps("adam", [](Var p) {
    AdamOptions o;
    o.lr = 0.01f;
    o.weight_decay = 1e-2f;
    return std::make_unique<Adam>(std::vector<Var>{p}, o);
  });
  run_steps("adamw", [](Var p) {
    AdamOptions o = adamw_options(0.01f, 0.1f);
    o.beta1 = 0.8f;
    o.beta2 = 0.99f;
    return std::make_unique<Adam>(std::vector<Var>{p}, o);
  });
}

TEST_CASE("optim: schedules match torch.optim.lr_scheduler") {
  auto fx = sbtest::load_fixture("optim");
  auto check = [&](const char* key, ScheduleConfig cfg) {
    LRSchedule s(cfg);
    const Tensor& want = fx.get_float(key);
    Tensor got = Tensor::empty(want.shape());
    for (int64_t i = 0; i < want.numel(); ++i) got[i] = s.factor(i);
    INFO(key);
    CHECK_CLOSE(got, want, 1e-5);
  };
  ScheduleConfig c;
  c.kind = "step", c.step_size = 6, c.gamma = 0.5f;
  check("sched.step", c);
  c = {}, c.kind = "multistep", c.milestones = {12, 5};
  check("sched.multistep", c);
  c = {}, c.kind = "cosine", c.total_steps = 20, c.min_factor = 0.05f;
  check("sched.cosine", c);
  c = {}, c.kind = "poly", c.total_steps = 20;
  check("sched.poly", c);
  c = {}, c.kind = "cosine", c.total_steps = 20, c.warmup_steps = 5, c.warmup_start = 0.1f;
  check("sched.warmup_cosine", c);
  c = {}, c.kind = "linear";
  CHECK_THROWS_WITH_AS(LRSchedule{c}, doctest::Contains("unknown kind 'linear'"), Error);
}

TEST_CASE("optim: decay groups keep weight decay off norm weights and biases") {
  Var w(Tensor::ones({2, 2}), true), b(Tensor::ones({2}), true);
  auto groups = decay_groups({{"c.weight", w}, {"n.weight", b}}, 0.1f, 0.5f);
  REQUIRE(groups.size() == 2);
  SGD opt(groups, SGDOptions{0.1f});
  w.set_grad(Tensor::zeros({2, 2}));
  b.set_grad(Tensor::zeros({2}));
  opt.step();
  CHECK(w.value()[0] == doctest::Approx(1 - 0.1 * 0.5));
  CHECK(b.value()[0] == 1.f);
  opt.set_lr_factor(0.5f);
  CHECK(opt.groups()[0].lr == doctest::Approx(0.05));
}

TEST_CASE("optim: gradient clipping by global norm, and state round trip") {
  Var a(Tensor::zeros({2}), true), b(Tensor::zeros({1}), true);
  a.set_grad(Tensor::from({2}, {3, 0}));
  b.set_grad(Tensor::from({1}, {4}));
  Tensor shared = b.grad();
  float norm = clip_grad_norm({a, b}, 1.0f);
  CHECK(norm == doctest::Approx(5));
  CHECK(grad_norm({a, b}) == doctest::Approx(1).epsilon(1e-5));
  CHECK(shared[0] == 4.f);  // the old gradient tensor is not modified in place
  CHECK(clip_grad_norm({a, b}, 10.f) == doctest::Approx(1).epsilon(1e-5));
  // Momentum buffers survive a save/restore, so resumed training continues identically.
  Var p1(Tensor::from({2}, {1, 2}), true), p2(Tensor::from({2}, {1, 2}), true);
  SGD o1({p1}, SGDOptions{0.1f, 0.9f});
  p1.set_grad(Tensor::from({2}, {1, -1}));
  o1.step();
  SGD o2({p2}, SGDOptions{0.1f, 0.9f});
  p2.value().copy_from(p1.value());
  o2.load_state(o1.state());
  p1.set_grad(Tensor::from({2}, {0.5, 0.5}));
  p2.set_grad(Tensor::from({2}, {0.5, 0.5}));
  o1.step();
  o2.step();
  CHECK_CLOSE(p2.value(), p1.value(), 0.0, 0.0);
}
