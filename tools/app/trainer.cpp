// The training loop (data -> forward -> loss -> backward -> optimizer step) and evaluation.
#include "tools/app/trainer.h"

#include <chrono>
#include <cmath>
#include <cstring>

#include "core/ops.h"
#include "core/safetensors.h"
#include "core/threads.h"
#include "datasets/loader.h"
#include "layers/batch_norm.h"
#include "optim/optimizer.h"
#include "optim/schedule.h"
#include "tools/app/data_spec.h"

namespace sb {

static std::unique_ptr<Optimizer> make_optimizer(const TrainConfig& cfg, const Module& model) {
  auto groups = decay_groups(model.named_parameters(), cfg.lr, cfg.weight_decay, cfg.decay_norm_and_bias);
  if (cfg.optim == "sgd") {
    SGDOptions o;
    o.lr = cfg.lr, o.momentum = cfg.momentum, o.weight_decay = cfg.weight_decay;
    return std::make_unique<SGD>(groups, o);
  }
  if (cfg.optim == "adam" || cfg.optim == "adamw") {
    AdamOptions o;
    o.lr = cfg.lr, o.weight_decay = cfg.weight_decay, o.decoupled = cfg.optim == "adamw";
    return std::make_unique<Adam>(groups, o);
  }
  fail("--optim: unknown optimizer '", cfg.optim, "' (known: sgd, adam, adamw)");
}

TrainResult train(const TrainConfig& cfg, ModulePtr* model_out,
                  const std::function<void(const StepReport&)>& on_step) {
  SB_CHECK(cfg.batch > 0, "--batch: must be positive, got ", cfg.batch);
  SB_CHECK((cfg.steps > 0) != (cfg.epochs > 0), "give exactly one of --steps and --epochs (positive)");
  if (cfg.threads > 0) set_num_threads(cfg.threads);
  DatasetPtr data = open_dataset(cfg.data, Split::Train, cfg.spec.options.classes);
  manual_seed(cfg.seed);
  ModulePtr model = cfg.spec.build();
  if (!cfg.init.empty()) load_weights(*model, cfg.init);
  auto opt = make_optimizer(cfg, *model);

  LoaderOptions lo;
  lo.batch_size = cfg.batch;
  lo.shuffle = cfg.shuffle;
  lo.seed = cfg.seed;
  lo.workers = cfg.loader_workers;
  DataLoader loader(data, lo);
  int64_t total = cfg.steps > 0 ? cfg.steps : cfg.epochs * loader.batches_per_epoch();
  ScheduleConfig sc;
  sc.kind = cfg.schedule;
  sc.total_steps = total;
  sc.step_size = std::max<int64_t>(1, total / 3);
  sc.warmup_steps = cfg.warmup_steps;
  LRSchedule schedule(sc);

  TrainResult res;
  auto t0 = std::chrono::steady_clock::now();
  model->train();
  auto params = model->parameters();
  int64_t step = 0;
  auto run_batch = [&](const Batch& b) {
    opt->set_lr_factor(schedule.factor(step));
    opt->zero_grad();
    Var logits = model->forward(Var(b.images));
    Var loss = cross_entropy(logits, b.masks);
    loss.backward();
    float gn = grad_norm(params);
    if (cfg.clip_grad > 0) clip_grad_norm(params, cfg.clip_grad);
    opt->step();
    res.losses.push_back(loss.item());
    res.grad_norms.push_back(gn);
    ++step;
    if (on_step) on_step({step, total, loss.item(), opt->groups()[0].lr, gn});
  };
  Batch b;
  if (cfg.steps > 0) {
    loader.start_steps(0, cfg.steps);
    while (loader.next(b)) run_batch(b);
  } else {
    for (int64_t e = 0; e < cfg.epochs; ++e) {
      loader.start_epoch(e);
      while (loader.next(b)) run_batch(b);
    }
  }
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!cfg.save.empty()) save_model(cfg.save, *model, cfg.spec);
  if (model_out) *model_out = model;
  return res;
}

// Sets how every BatchNorm2d in `model` normalizes in eval mode.
static void set_bn_eval_stats(Module& model, bool batch_stats) {
  model.apply([&](Module& m) {
    if (auto* bn = dynamic_cast<BatchNorm2d*>(&m)) bn->batch_stats_in_eval = batch_stats;
  });
}

EvalResult evaluate(Module& model, const Dataset& data, int64_t batch, BNEval bn, Tensor* logits_out) {
  SB_CHECK(batch > 0, "--batch: must be positive, got ", batch);
  model.eval();
  set_bn_eval_stats(model, bn == BNEval::Batch);
  struct Restore {
    Module& m;
    ~Restore() { set_bn_eval_stats(m, false); }
  } restore{model};
  NoGrad ng;
  int64_t K = data.num_classes();
  ConfusionMatrix cm(K);
  LoaderOptions lo;
  lo.batch_size = batch;
  lo.shuffle = false;
  lo.workers = 1;
  DataLoader loader(std::shared_ptr<const Dataset>(&data, [](const Dataset*) {}), lo);
  loader.start_epoch(0);
  double loss_sum = 0;
  int64_t counted = 0;
  EvalResult r;
  std::vector<Tensor> all_logits;
  Batch b;
  while (loader.next(b)) {
    Var logits = model.forward(Var(b.images));
    SB_CHECK(logits.size(1) == K, "eval: the model predicts ", logits.size(1), " classes but the data has ", K);
    int64_t valid = 0;
    for (int64_t v : b.masks) valid += v != 255;
    if (valid > 0) {
      loss_sum += static_cast<double>(cross_entropy(logits, b.masks).item()) * valid;
      counted += valid;
    }
    cm.add(logits.value(), b.masks);
    r.images += b.images.size(0);
    if (logits_out) all_logits.push_back(logits.value());
  }
  r.loss = counted ? loss_sum / counted : NAN;
  r.pixel_acc = cm.pixel_accuracy();
  r.miou = cm.mean_iou();
  r.class_iou = cm.iou();
  r.confusion = cm.counts();
  if (logits_out) {
    Shape s = all_logits[0].shape();
    s[0] = r.images;
    Tensor all = Tensor::empty(s);
    int64_t off = 0;
    for (auto& t : all_logits) {
      std::memcpy(all.data() + off, t.data(), t.numel() * sizeof(float));
      off += t.numel();
    }
    *logits_out = all;
  }
  return r;
}

}  // namespace sb
