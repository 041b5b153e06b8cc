// `smallbatch train` and `smallbatch eval`: flags, then the library's train() and evaluate().
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "core/safetensors.h"
#include "core/threads.h"
#include "tools/app/data_spec.h"
#include "tools/app/trainer.h"
#include "tools/cli.h"

namespace sb::cli {

void ModelFlags::add(CLI::App& cmd) {
  model_opt = cmd.add_option("--model", model, "model name (see `smallbatch models`)")->capture_default_str();
  norm_opt = cmd.add_option("--norm", norm, "normalization: bn, gn, ln, in or none")->capture_default_str();
  groups_opt = cmd.add_option("--groups", groups, "GroupNorm groups (gn)")->capture_default_str()->check(CLI::PositiveNumber);
  classes_opt = cmd.add_option("--classes", classes, "number of classes (default: from the data)")->check(CLI::PositiveNumber);
  in_opt = cmd.add_option("--in-channels", in_channels, "input channels")->capture_default_str()->check(CLI::PositiveNumber);
  width_opt = cmd.add_option("--base-width", base_width, "channels of the first level")->capture_default_str()->check(CLI::PositiveNumber);
}

bool ModelFlags::any_given() const {
  for (auto* o : {model_opt, norm_opt, groups_opt, classes_opt, in_opt, width_opt})
    if (o && o->count() > 0) return true;
  return false;
}

ModelSpec ModelFlags::spec(int64_t classes_default) const {
  ModelSpec s;
  s.model = model;
  s.options.norm = norm;
  s.options.groups = groups;
  s.options.classes = classes > 0 ? classes : classes_default;
  s.options.in_channels = in_channels;
  s.options.base_width = base_width;
  return s;
}

static void add_threads(CLI::App& cmd, int& threads) {
  cmd.add_option("--threads", threads, "threads for OpenMP and OpenBLAS (default: SMALLBATCH_NUM_THREADS or all cores)")
      ->check(CLI::PositiveNumber);
}

static void apply_threads(int threads) { set_num_threads(threads > 0 ? threads : default_num_threads()); }

void add_train_command(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("train", "train a model");
  auto flags = std::make_shared<ModelFlags>();
  auto cfg = std::make_shared<TrainConfig>();
  auto out = std::make_shared<std::string>();
  auto no_shuffle = std::make_shared<bool>(false);
  flags->add(*cmd);
  cmd->add_option("--data", cfg->data, "training data: tensors:FILE")->capture_default_str();
  cmd->add_option("--batch", cfg->batch, "images per step")->capture_default_str()->check(CLI::PositiveNumber);
  auto* steps = cmd->add_option("--steps", cfg->steps, "optimizer steps")->check(CLI::PositiveNumber);
  auto* epochs = cmd->add_option("--epochs", cfg->epochs, "passes over the data")->check(CLI::PositiveNumber);
  steps->excludes(epochs);
  cmd->add_flag("--no-shuffle", *no_shuffle, "take samples in file order (step s uses samples [sB, (s+1)B), wrapping)");
  cmd->add_option("--optim", cfg->optim, "optimizer")->capture_default_str()->check(CLI::IsMember({"sgd", "adam", "adamw"}));
  cmd->add_option("--lr", cfg->lr, "learning rate")->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--momentum", cfg->momentum, "SGD momentum")->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--wd", cfg->weight_decay, "weight decay")->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_flag("!--no-wd-norm-bias", cfg->decay_norm_and_bias, "keep weight decay off norm weights and biases");
  cmd->add_option("--schedule", cfg->schedule, "learning-rate schedule, stepped per iteration")
      ->capture_default_str()->check(CLI::IsMember({"const", "step", "cosine", "poly"}));
  cmd->add_option("--warmup", cfg->warmup_steps, "linear warm-up steps")->check(CLI::NonNegativeNumber);
  cmd->add_option("--clip-grad", cfg->clip_grad, "clip gradients to this global L2 norm (0: off)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--seed", cfg->seed, "seed for initialization, shuffling and augmentation")->capture_default_str();
  add_threads(*cmd, cfg->threads);
  cmd->add_option("--init", cfg->init, "starting weights (.safetensors; a PyTorch state_dict works)")->check(CLI::ExistingFile);
  cmd->add_option("--save", cfg->save, "write the final weights here (.safetensors)");
  cmd->add_option("--out", *out, "output directory: model.safetensors and config.json");
  cmd->callback([=, &action] {
    action = [=]() -> int {
      TrainConfig c = *cfg;
      c.shuffle = !*no_shuffle;
      if (c.steps == 0 && c.epochs == 0) c.epochs = 1;
      apply_threads(c.threads);
      c.threads = num_threads();
      int64_t classes = flags->classes;
      if (classes == 0) classes = open_dataset(c.data, Split::Train, 0)->num_classes();
      c.spec = flags->spec(classes);
      if (!out->empty()) {
        std::error_code ec;
        std::filesystem::create_directories(*out, ec);
        SB_CHECK(!ec && std::filesystem::is_directory(*out), "--out: cannot create directory '", *out, "'",
                 ec ? " (" + ec.message() + ")" : "");
        if (c.save.empty()) c.save = *out + "/model.safetensors";
      }
      auto report_every = std::max<int64_t>(1, (c.steps > 0 ? c.steps : 1000) / 10);
      TrainResult r = train(c, nullptr, [&](const StepReport& s) {
        if (s.step % report_every == 0 || s.step == s.total_steps || s.step == 1)
          std::printf("step %lld/%lld  loss %.4f  lr %.5g  grad_norm %.3g\n", (long long)s.step,
                      (long long)s.total_steps, s.loss, s.lr, s.grad_norm);
        std::fflush(stdout);
        SB_CHECK(std::isfinite(s.loss), "training diverged: the loss is not finite at step ", s.step);
      });
      std::printf("trained %zu steps in %.1f s; final loss %.4f\n", r.losses.size(), r.seconds,
                  r.losses.empty() ? NAN : r.losses.back());
      if (!c.save.empty()) std::printf("saved %s\n", c.save.c_str());
      return 0;
    };
  });
}

void add_eval_command(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("eval", "evaluate a checkpoint: loss, pixel accuracy, mean IoU");
  auto flags = std::make_shared<ModelFlags>();
  struct Opts {
    std::string weights, data = "shapes", save_logits, bn_mode = "running";
    int64_t batch = 8;
    int threads = 0;
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  flags->add(*cmd);
  cmd->add_option("--weights", o->weights, "checkpoint (.safetensors)")->required()->check(CLI::ExistingFile);
  cmd->add_option("--data", o->data, "evaluation data: tensors:FILE")->capture_default_str();
  cmd->add_option("--batch", o->batch, "images per forward pass")->capture_default_str()->check(CLI::PositiveNumber);
  add_threads(*cmd, o->threads);
  cmd->add_option("--save-logits", o->save_logits, "write the eval-mode logits (N, K, H, W) as tensor 'logits'");
  cmd->add_option("--bn-mode", o->bn_mode, "BatchNorm statistics: running (eval) or batch")
      ->capture_default_str()->check(CLI::IsMember({"running", "batch"}));
  cmd->add_flag("--json", o->json, "print one JSON object");
  cmd->callback([=, &action] {
    action = [=]() -> int {
      apply_threads(o->threads);
      TensorFile weights = load_safetensors(o->weights);
      ModelSpec spec;
      if (flags->any_given()) {
        int64_t classes = flags->classes;
        if (classes == 0) classes = open_dataset(o->data, Split::Val, 0)->num_classes();
        spec = flags->spec(classes);
      } else {
        spec = read_model_spec(weights);
      }
      ModulePtr model = spec.build();
      model->load_state_dict(weights, true);
      DatasetPtr data = open_dataset(o->data, Split::Val, spec.options.classes);
      SB_CHECK(data->num_classes() == spec.options.classes, "eval: the data has ", data->num_classes(),
               " classes but the model predicts ", spec.options.classes);
      Tensor logits;
      EvalResult r = evaluate(*model, *data, o->batch, o->bn_mode == "batch" ? BNEval::Batch : BNEval::Running,
                              o->save_logits.empty() ? nullptr : &logits);
      if (!o->save_logits.empty()) {
        TensorFile f;
        f.floats["logits"] = logits;
        save_safetensors(o->save_logits, f);
      }
      auto num = [](double v) { return std::isnan(v) ? nlohmann::json(nullptr) : nlohmann::json(v); };
      nlohmann::json j = {{"loss", num(r.loss)}, {"pixel_acc", num(r.pixel_acc)}, {"miou", num(r.miou)},
                          {"images", r.images}, {"bn_mode", o->bn_mode}};
      j["class_iou"] = nlohmann::json::array();
      for (double v : r.class_iou) j["class_iou"].push_back(num(v));
      j["confusion"] = r.confusion;
      if (o->json) {
        std::cout << j.dump() << "\n";
      } else {
        std::printf("images %lld  loss %.4f  pixel_acc %.4f  mIoU %.4f\n", (long long)r.images, r.loss,
                    r.pixel_acc, r.miou);
        for (size_t k = 0; k < r.class_iou.size(); ++k) std::printf("  class %zu IoU %.4f\n", k, r.class_iou[k]);
      }
      return 0;
    };
  });
}

}  // namespace sb::cli
