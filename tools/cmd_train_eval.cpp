// `smallbatch train` and `smallbatch eval`: flags, then the library's train() and evaluate().
#include <algorithm>
#include <sys/stat.h>
#include <cerrno>
#include <cstring>
#include <cstdlib>
#include <tuple>
#include <unistd.h>

#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "core/distributed.h"
#include "core/io/fileio.h"
#include "core/io/safetensors.h"
#include "core/platform.h"
#include "core/threads.h"
#include "datasets/shapes.h"
#include "layers/norm/norm.h"
#include "tools/app/data_spec.h"
#include "tools/app/precise_bn.h"
#include "tools/app/mpi_launch.h"
#include "tools/app/trainer.h"
#include "tools/cli.h"

namespace sb::cli {

void ModelFlags::add(CLI::App& cmd, bool from_checkpoint) {
  const std::string note = from_checkpoint ? " (default: from the checkpoint)" : "";
  model_opt = cmd.add_option("--model", model, "model name (see `smallbatch models`)" + note);
  if (!from_checkpoint) model_opt->capture_default_str();
  for (const auto& f : model_option_fields()) {
    std::string flag = "--" + f.key;
    std::replace(flag.begin(), flag.end(), '_', '-');
    CLI::Option* opt = f.text ? cmd.add_option(flag, *f.text(values), f.help + note)
                              : cmd.add_option(flag, *f.number(values), f.help + note)->check(f.min_value > 0 ? Positive : NonNegative);
    if (!f.zero_means_auto && !from_checkpoint) opt->capture_default_str();
    given_opts.emplace_back(&f, opt);
  }
}

bool ModelFlags::any_given() const {
  if (model_opt && model_opt->count() > 0) return true;
  for (const auto& [f, o] : given_opts)
    if (o->count() > 0) return true;
  return false;
}

ModelSpec ModelFlags::spec(int64_t classes_default) const {
  ModelSpec s;
  s.model = model;
  s.options = values;
  if (s.options.classes <= 0) s.options.classes = classes_default;
  return s;
}

ModelSpec ModelFlags::override_given(ModelSpec base) const {
  if (model_opt && model_opt->count() > 0) base.model = model;
  ModelOptions mine = values;
  for (const auto& [f, o] : given_opts) {
    if (o->count() == 0) continue;
    if (f->text) *f->text(base.options) = *f->text(mine);
    else *f->number(base.options) = *f->number(mine);
  }
  return base;
}

static void add_threads(CLI::App& cmd, int& threads) {
  cmd.add_option("--threads", threads, "threads for OpenMP and OpenBLAS (default: SMALLBATCH_NUM_THREADS or all cores; under mpirun, per rank: the cores shared among the machine's ranks)")
      ->check(Positive);
}

static void apply_threads(int threads) { set_num_threads(threads > 0 ? threads : default_rank_threads()); }

static std::string fmt_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  long t = std::lround(s);
  char buf[32];
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%ldh%02ldm", t / 3600, (t / 60) % 60);
  else std::snprintf(buf, sizeof buf, "%ldm%02lds", t / 60, t % 60);
  return buf;
}

static std::string fmt_metric(double v) {
  if (std::isnan(v)) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4f", v);
  return buf;
}

// eval (val_data null) evaluates the validation split: its --image-size defaults to the training
// size the checkpoint records, and its limit is --val-limit as in train and compare (--limit, the
// older spelling, still works).
void add_data_flags(CLI::App& cmd, DataOptions& d, std::string* val_data, int64_t* val_limit) {
  if (val_data)
    cmd.add_option("--image-size", d.image_size, "resize or crop images to S x S")->check(Positive);
  else
    cmd.add_option("--image-size", d.image_size, "resize or crop images to S x S (default: the size the checkpoint "
                   "was trained at, when it records one)")->check(Positive);
  if (val_data) cmd.add_option("--limit", d.limit, "use at most N training samples")->check(Positive);
  else cmd.add_option("--val-limit,--limit", d.limit, "use at most M validation samples (--limit: the older spelling)")->check(Positive);
  cmd.add_flag("--skip-bad", d.skip_bad, "skip unreadable samples (counted and reported) instead of failing");
  cmd.add_option("--max-pixels", d.max_pixels, "refuse images whose header claims more pixels")
      ->capture_default_str()->check(Positive);
  cmd.add_option("--pets-border", d.pets_border, "pets: the trimap border as 'ignore' (255) or its own 'class'")
      ->capture_default_str()->check(CLI::IsMember({"ignore", "class"}));
  if (val_data) cmd.add_option("--val-data", *val_data, "validation data (default: the validation split of --data; 'none' to skip)");
  if (val_limit) cmd.add_option("--val-limit", *val_limit, "use at most M validation samples")->check(Positive);
}

// Flag values and combinations that parse but make no sense: errors for what cannot be meant,
// warnings (stderr, one line each) for what is legal but rarely wanted. The sizes that need the
// data (--batch against the data, --warmup against the run) are checked by train() itself.
static void check_train_flags(const CLI::App& cmd, const TrainConfig& c, const ModelOptions& model) {
  auto given = [&](const char* flag) { return cmd.count(flag) > 0; };
  const bool sgd = c.optim == "sgd";
  SB_CHECK(!sgd || c.momentum < 1, "--momentum: expected a value in [0, 1), got ", c.momentum,
           " (at 1 or more SGD never forgets a gradient and the steps grow without bound)");
  SB_CHECK((c.optim == "adam") || static_cast<double>(c.lr) * c.weight_decay < 1, "--lr ", c.lr, " x --wd ",
           c.weight_decay, " = ", static_cast<double>(c.lr) * c.weight_decay,
           ": expected below 1 (each step scales the weights by 1 - lr x wd, so they would vanish or flip sign)");
  check_threads("train", c.threads);
  if (c.lr == 0) warn("train", "--lr 0: the weights will not change (only BatchNorm's running statistics will)");
  if (c.lr > 1)
    warn("train", str("--lr ", c.lr, " is far above the usual range (1e-5 to 1); expect the run to diverge"));
  if (!sgd && given("--momentum"))
    warn("train", str("--momentum applies to --optim sgd only; ", c.optim, " ignores it (its beta1 is 0.9)"));
  if (c.clip_grad > 0 && c.clip_grad < 1e-4f)
    warn("train", str("--clip-grad ", c.clip_grad, " clips every step to almost nothing: the run will barely move "
                      "(typical gradient norms are 0.1 to 10)"));
  if (given("--groups") && !norm_info(model.norm.kind).traits.uses_groups)
    warn("train", str("--groups applies to group-based norms (gn, gn+ws); --norm ", model.norm.kind, " ignores it"));
}

// --groups above every layer's width: each layer gets one group per channel (make_gn's rule),
// which is InstanceNorm, whatever the number given.
static void warn_groups_wider_than_model(const ModelSpec& spec) {
  if (!norm_info(spec.options.norm.kind).traits.uses_groups) return;
  int64_t widest = 0;
  StateDict sd = spec.build()->state_dict();
  for (const auto& [key, t] : sd.floats)
    if (t.dim() == 1 && key.size() > 7 && key.compare(key.size() - 7, 7, ".weight") == 0) widest = std::max(widest, t.size(0));
  if (widest > 0 && spec.options.norm.groups > widest)
    warn("train", str("--groups ", spec.options.norm.groups, " is more than the widest normalized layer's ", widest,
                      " channels: every layer gets one group per channel (InstanceNorm, as --norm in)"));
}

// Where `train` without --out saves: runs/train, then runs/train-2, runs/train-3, ... (as
// ultralytics does), under $SMALLBATCH_RUNS_DIR when set. The folder is taken with mkdir, which
// fails with EEXIST when it exists, so two commands started at once never take the same one; the
// run then holds it with --out's lock like any other.
static std::string fresh_run_dir() {
  const char* env = std::getenv("SMALLBATCH_RUNS_DIR");
  const std::string root = env && *env ? env : "runs";
  std::error_code ec;
  std::filesystem::create_directories(root, ec);
  SB_CHECK(!ec && std::filesystem::is_directory(root), "cannot create '", root, "' to save the run in",
           ec ? " (" + ec.message() + ")" : "", "; give --out DIR");
  for (int i = 1; i <= 100000; ++i) {
    std::string dir = root + "/train" + (i == 1 ? std::string() : "-" + std::to_string(i));
    if (::mkdir(dir.c_str(), 0777) == 0) return dir;
    SB_CHECK(errno == EEXIST, "cannot create '", dir, "' to save the run in (", std::strerror(errno), "); give --out DIR");
  }
  fail("every name from '", root, "/train' to '", root, "/train-100000' is taken; give --out DIR");
}

// fresh_run_dir() for the whole job: under mpirun rank 0 alone takes a folder (the ranks run the
// same command, and each taking its own would leave runs/train-2, -3, ... empty) and every rank
// saves into that one.
static std::string fresh_run_dir_of_job() {
  Communicator& comm = world();
  return comm.broadcast_text(comm.rank() == 0 ? fresh_run_dir() : std::string());
}

// A folder fresh_run_dir() made, removed again when the run failed before saving anything in it
// (only its configuration and lock are there), so a mistyped command leaves no empty run behind.
static void remove_if_unused(const std::string& dir) {
  std::error_code ec;
  for (auto& e : std::filesystem::directory_iterator(dir, ec)) {
    std::string n = e.path().filename().string();
    if (n != "config.json" && n != DirLock::kFileName) return;
  }
  std::filesystem::remove_all(dir, ec);
}

// --resume on a saved run: its configuration (state.safetensors, else config.json), with the
// flags given on the command line applied over it, so `train --out D --resume` needs no other
// flag. A given flag that changes what a resume may not change is refused, by its name; more
// --epochs or --steps and another --threads go through (train() says so). Settings that are not
// part of the run (--save, --workers, --skip-bad, ...) are this command's.
static TrainConfig resumed_config(const CLI::App& cmd, const ModelFlags& flags, const TrainConfig& given,
                                  const nlohmann::json& saved) {
  TrainConfig c = TrainConfig::from_json(saved, given.out + " (the saved run's configuration)");
  c.out = given.out;
  c.resume = true;
  c.overwrite = given.overwrite;  // with --resume an error, which train() gives
  c.save = given.save;
  c.loader_workers = given.loader_workers;
  c.val_batch = given.val_batch;
  c.data_opt.skip_bad = given.data_opt.skip_bad;
  c.data_opt.max_pixels = given.data_opt.max_pixels;
  c.data_opt.pets_border = given.data_opt.pets_border;
  using F = std::function<void(TrainConfig&, const TrainConfig&)>;
  const std::vector<std::tuple<const char*, const char*, F>> fields = {  // flag, config key, copy
      {"--data", "data", [](TrainConfig& d, const TrainConfig& s) { d.data = s.data; }},
      {"--val-data", "val_data", [](TrainConfig& d, const TrainConfig& s) { d.val_data = s.val_data; }},
      {"--image-size", "image_size", [](TrainConfig& d, const TrainConfig& s) { d.data_opt.image_size = s.data_opt.image_size; }},
      {"--augment", "augment", [](TrainConfig& d, const TrainConfig& s) { d.data_opt.augment = s.data_opt.augment; }},
      {"--limit", "limit", [](TrainConfig& d, const TrainConfig& s) { d.data_opt.limit = s.data_opt.limit; }},
      {"--val-limit", "val_limit", [](TrainConfig& d, const TrainConfig& s) { d.val_limit = s.val_limit; }},
      {"--batch", "batch", [](TrainConfig& d, const TrainConfig& s) { d.batch = s.batch; }},
      {"--steps", "steps", [](TrainConfig& d, const TrainConfig& s) { d.steps = s.steps, d.epochs = 0; }},
      {"--epochs", "epochs", [](TrainConfig& d, const TrainConfig& s) { d.epochs = s.epochs, d.steps = 0; }},
      {"--no-shuffle", "shuffle", [](TrainConfig& d, const TrainConfig& s) { d.shuffle = s.shuffle; }},
      {"--optim", "optim", [](TrainConfig& d, const TrainConfig& s) { d.optim = s.optim; }},
      {"--lr", "lr", [](TrainConfig& d, const TrainConfig& s) { d.lr = s.lr; }},
      {"--momentum", "momentum", [](TrainConfig& d, const TrainConfig& s) { d.momentum = s.momentum; }},
      {"--wd", "weight_decay", [](TrainConfig& d, const TrainConfig& s) { d.weight_decay = s.weight_decay; }},
      {"--no-wd-norm-bias", "decay_norm_and_bias",
       [](TrainConfig& d, const TrainConfig& s) { d.decay_norm_and_bias = s.decay_norm_and_bias; }},
      {"--schedule", "schedule", [](TrainConfig& d, const TrainConfig& s) { d.schedule = s.schedule; }},
      {"--warmup", "warmup_steps", [](TrainConfig& d, const TrainConfig& s) { d.warmup_steps = s.warmup_steps; }},
      {"--clip-grad", "clip_grad", [](TrainConfig& d, const TrainConfig& s) { d.clip_grad = s.clip_grad; }},
      {"--seed", "seed", [](TrainConfig& d, const TrainConfig& s) { d.seed = s.seed; }},
      {"--threads", "threads", [](TrainConfig& d, const TrainConfig& s) { d.threads = s.threads; }},
      {"--init", "init", [](TrainConfig& d, const TrainConfig& s) { d.init = s.init; }},
      {"--precise-bn", "precise_bn", [](TrainConfig& d, const TrainConfig& s) { d.precise_bn = s.precise_bn; }},
  };
  for (const auto& [flag, key, copy] : fields)
    if (cmd.count(flag) > 0) copy(c, given);
  c.spec = flags.override_given(c.spec);
  // The flags that change what may not change, each by name.
  ResumeDifferences d = resume_differences(saved, c.to_json());
  std::string refused;
  for (size_t i = 0; i < d.refused.size(); ++i) {
    std::string flag = "--" + d.refused[i];
    if (d.refused[i].rfind("model.", 0) == 0) flag = "--" + d.refused[i].substr(6);
    if (d.refused[i] == "ranks") flag = "ranks (mpirun -np)";
    for (const auto& [f, key, copy] : fields)
      if (d.refused[i] == key) flag = f;
    std::replace(flag.begin(), flag.end(), '_', '-');
    refused += str("\n  ", flag, d.refused_text[i].substr(d.refused[i].size()));  // "--lr: saved 0.05, now 0.5"
  }
  SB_CHECK(refused.empty(), "--resume: ", given.out, " holds a run made with other settings than these flags ask for:",
           refused, "\nA resume takes the run's own configuration, so these flags can be left out; only more --epochs "
           "(or --steps) and another --threads may change. Use another --out for a different run, or --overwrite to "
           "replace this one.");
  return c;
}

void add_train_command(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("train", "train a model (defaults: unet-s with GroupNorm on the built-in shapes data)");
  auto flags = std::make_shared<ModelFlags>();
  auto cfg = std::make_shared<TrainConfig>();
  auto no_shuffle = std::make_shared<bool>(false);
  flags->add(*cmd);
  cmd->add_option("--data", cfg->data, "training data: shapes, tensors:FILE, folder:DIR, voc:DIR, pets:DIR")->capture_default_str();
  add_data_flags(*cmd, cfg->data_opt, &cfg->val_data, &cfg->val_limit);
  cmd->add_flag("--augment", cfg->data_opt.augment, "random scale, crop, flip and colour jitter for training");
  cmd->add_option("--batch", cfg->batch, "images per step")->capture_default_str()->check(Positive);
  auto* steps = cmd->add_option("--steps", cfg->steps, "optimizer steps")->check(Positive);
  auto* epochs = cmd->add_option("--epochs", cfg->epochs, "passes over the data (default 8)")->check(Positive);
  steps->excludes(epochs);
  cmd->add_flag("--no-shuffle", *no_shuffle, "take samples in file order (step s uses samples [sB, (s+1)B), wrapping)");
  cmd->add_option("--optim", cfg->optim, "optimizer")->capture_default_str()->check(CLI::IsMember({"sgd", "adam", "adamw"}));
  cmd->add_option("--lr", cfg->lr, "learning rate")->capture_default_str()->check(NonNegative);
  cmd->add_option("--momentum", cfg->momentum, "SGD momentum")->capture_default_str()->check(NonNegative);
  cmd->add_option("--wd", cfg->weight_decay, "weight decay")->capture_default_str()->check(NonNegative);
  cmd->add_flag("!--no-wd-norm-bias", cfg->decay_norm_and_bias, "keep weight decay off norm weights and biases");
  cmd->add_option("--schedule", cfg->schedule, "learning-rate schedule, stepped per iteration")
      ->capture_default_str()->check(CLI::IsMember({"const", "step", "cosine", "poly"}));
  cmd->add_option("--warmup", cfg->warmup_steps, "linear warm-up steps")->check(NonNegative);
  cmd->add_option("--clip-grad", cfg->clip_grad, "clip gradients to this global L2 norm (0: off)")->check(NonNegative);
  cmd->add_option("--seed", cfg->seed, "seed for initialization, shuffling and augmentation")->capture_default_str()->check(Seed);
  add_threads(*cmd, cfg->threads);
  cmd->add_option("--workers", cfg->loader_workers, "data loader threads")->capture_default_str()->check(Workers);
  cmd->add_option("--init", cfg->init, "starting weights (.safetensors; a PyTorch state_dict works)")->check(CLI::ExistingFile);
  cmd->add_option("--save", cfg->save, "write the final weights here (.safetensors)");
  cmd->add_option("--out", cfg->out, "output directory: metrics.csv, config.json, model/best.safetensors, state");
  cmd->add_flag("--resume", cfg->resume, "continue the run saved in --out");
  cmd->add_flag("--overwrite", cfg->overwrite, "let a new run replace the files of a non-empty --out (else refused)");
  cmd->add_option("--precise-bn", cfg->precise_bn,
                  "PreciseBN: before the last validation, recompute BatchNorm's running statistics over N training "
                  "images (eval transform, batches of --batch); the saved weights carry them")
      ->check(Positive);
  cmd->callback([=, &action] {
    action = [=]() -> int {
      join_mpi_launch("train");  // under mpirun or srun: one rank of a data-parallel run
      stdout_is_progress();    // the results go to --out and --save
      install_stop_signals();  // first: a signal that comes while the data opens is not lost
      TrainConfig c = *cfg;
      c.shuffle = !*no_shuffle;
      nlohmann::json saved;  // --resume: the run's own configuration, when it saved one
      if (c.resume && !c.out.empty() && std::filesystem::is_directory(c.out)) saved = saved_run_config(c.out);
      if (!saved.is_null()) {
        check_outputs(c);  // an input that is one of the run's files says so, before any other refusal
        c = resumed_config(*cmd, *flags, c, saved);
      }
      if (c.steps == 0 && c.epochs == 0) c.epochs = 8;
      check_train_flags(*cmd, c, saved.is_null() ? flags->values : c.spec.options);
      apply_threads(c.threads);
      c.threads = num_threads();
      if (saved.is_null()) {
        int64_t classes = flags->values.classes;
        if (classes == 0) classes = open_dataset(c.data, Split::Train, 0, c.data_opt)->num_classes();
        c.spec = flags->spec(classes);
      }
      warn_groups_wider_than_model(c.spec);
      if (!c.save.empty()) {  // checked now rather than after the whole training
        std::filesystem::path dir = std::filesystem::path(c.save).parent_path();
        SB_CHECK(std::filesystem::is_directory(dir.empty() ? "." : dir), "--save: cannot write '", c.save, "': '",
                 dir.string(), "' is not a directory");
        SB_CHECK(!std::filesystem::is_directory(c.save), "--save: '", c.save, "' is a directory; give a file name");
      }
      // Without --out the run is saved in a fresh folder, chosen last so that a command refused
      // above leaves nothing behind.
      const bool fresh_out = c.out.empty();
      SB_CHECK(!fresh_out || !c.resume, "--resume needs --out DIR (the run to continue)");
      SB_CHECK(!fresh_out || !c.overwrite, "--overwrite needs --out DIR (the run to replace)");
      if (fresh_out) c.out = fresh_run_dir_of_job();
      if (!c.out.empty() && c.save.empty()) c.save = c.out + "/model.safetensors";
      // Under mpirun a rank's stdout is Open MPI's pseudo-terminal even when the job's output
      // goes to a file, which would then fill with \r-rewritten progress lines: no progress bar.
      bool tty = isatty(STDOUT_FILENO) && !launched_by_mpi();
      TrainHooks hooks;
      hooks.log = [](const std::string& m) { progress("%s\n", m.c_str()); };
      hooks.on_step = [tty](const StepReport& s) {
        if (!tty) return;
        int width = 24, filled = static_cast<int>(width * s.step / std::max<int64_t>(1, s.total_steps));
        std::string bar(filled, '=');
        bar.resize(width, ' ');
        char line[256];
        std::snprintf(line, sizeof line, "epoch %lld/%lld [%s] %lld/%lld  loss %.4f  %.1f img/s  ETA %s",
                      (long long)s.epoch + 1, (long long)s.epochs, bar.c_str(), (long long)s.step,
                      (long long)s.total_steps, s.loss, s.images_per_s, fmt_duration(s.eta_seconds).c_str());
        progress("\r\033[K%s", fit_terminal_line(line).c_str());
      };
      hooks.on_epoch = [tty](const EpochRecord& r, Module&) {
        if (tty) progress("\r\033[K");
        progress("epoch %lld  step %lld  lr %.4g  train_loss %s  val_loss %s  val_acc %s  val_mIoU %s  %.1f img/s  %s%s\n",
                    (long long)r.epoch, (long long)r.step, r.lr, fmt_metric(r.train_loss).c_str(),
                    fmt_metric(r.val_loss).c_str(), fmt_metric(r.val_pixel_acc).c_str(), fmt_metric(r.val_miou).c_str(),
                    r.images_per_s, fmt_duration(r.seconds).c_str(),
                    r.empty_batches ? str("  (", r.empty_batches, " batches without a labelled pixel skipped)").c_str() : "");
      };
      hooks.should_stop = [] { return stop_signal() != 0; };
      progress("training %s (norm %s) on %s: batch %lld, %s, seed %llu, %d threads\n", c.spec.model.c_str(),
                  c.spec.options.norm.kind.c_str(), c.data.c_str(), (long long)c.batch,
                  c.steps ? str(c.steps, " steps").c_str() : str(c.epochs, " epochs").c_str(),
                  (unsigned long long)c.seed, c.threads);
      progress("on %s\n", platform_summary().c_str());
      if (fresh_out) progress("saving in %s (no --out given)\n", c.out.c_str());
      TrainResult r;
      try {
        r = train(c, nullptr, hooks);
      } catch (...) {
        if (fresh_out && world().rank() == 0) remove_if_unused(c.out);
        throw;
      }
      if (!r.skipped.empty()) std::fprintf(stderr, "%s\n", r.skipped.c_str());
      if (r.interrupted) {
        if (tty) progress("\r\033[K");
        progress("interrupted at step %zu; state saved in %s; continue with: smallbatch train --out %s --resume\n",
                 r.losses.size(), c.out.c_str(), c.out.c_str());
        return 128 + stop_signal();
      }
      float final_loss = NAN;  // the last step's that had a labelled pixel
      for (auto it = r.losses.rbegin(); it != r.losses.rend() && std::isnan(final_loss); ++it) final_loss = *it;
      progress("trained %zu steps in %s; final loss %s; best val mIoU %s%s\n", r.losses.size(),
                  fmt_duration(r.seconds).c_str(), fmt_metric(final_loss).c_str(), fmt_metric(r.best_miou).c_str(),
                  r.empty_batches ? str("; skipped ", r.empty_batches, " batches without a labelled pixel (all 255)").c_str() : "");
      if (fresh_out) progress("saved in %s (metrics.csv, config.json, model.safetensors, best.safetensors)\n", c.out.c_str());
      if (!c.save.empty() && (!fresh_out || c.save != c.out + "/model.safetensors")) progress("saved %s\n", c.save.c_str());
      return 0;
    };
  });
}

void add_eval_command(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("eval", "evaluate a checkpoint: loss, pixel accuracy, mean IoU");
  auto flags = std::make_shared<ModelFlags>();
  struct Opts {
    std::string weights, data = "shapes", save_logits, bn_mode = "running";
    int64_t batch = 8, precise_bn = 0;
    int threads = 0;
    bool json = false;
    DataOptions dopt;
  };
  auto o = std::make_shared<Opts>();
  flags->add(*cmd, true);
  cmd->add_option("--weights", o->weights, "checkpoint (.safetensors; a train --out state.safetensors works too)")->required()->check(CLI::ExistingFile);
  cmd->add_option("--data", o->data, "evaluation data (its validation split): shapes, tensors:FILE, folder:DIR, voc:DIR, pets:DIR")->capture_default_str();
  add_data_flags(*cmd, o->dopt, nullptr, nullptr);
  cmd->add_option("--batch", o->batch, "images per forward pass")->capture_default_str()->check(Positive);
  add_threads(*cmd, o->threads);
  cmd->add_option("--save-logits", o->save_logits, "write the eval-mode logits (N, K, H, W) as tensor 'logits'");
  cmd->add_option("--bn-mode", o->bn_mode, "BatchNorm statistics: running (eval) or batch")
      ->capture_default_str()->check(CLI::IsMember({"running", "batch"}));
  cmd->add_option("--precise-bn", o->precise_bn,
                  "PreciseBN: first recompute BatchNorm's running statistics over N images of the training split "
                  "of --data (eval transform, batches of --batch: give the training batch size)")
      ->check(Positive);
  cmd->add_flag("--json", o->json, "print one JSON object");
  cmd->callback([=, &action] {
    action = [=]() -> int {
      if (!o->save_logits.empty()) {  // before any work: the logits must not replace an input
        check_output_name(o->save_logits, "--save-logits");
        SB_CHECK(!std::filesystem::is_directory(o->save_logits), "--save-logits: '", o->save_logits,
                 "' is a directory; give a file name");
        SB_CHECK(!same_file(o->save_logits, o->weights), "--save-logits: '", o->save_logits,
                 "' is the same file as --weights '", o->weights, "'; it would overwrite the checkpoint. Give another name");
        if (o->data.rfind("tensors:", 0) == 0)
          SB_CHECK(!same_file(o->save_logits, o->data.substr(8)), "--save-logits: '", o->save_logits,
                   "' is the same file as --data '", o->data.substr(8), "'; it would overwrite the data. Give another name");
      }
      check_threads("eval", o->threads);
      apply_threads(o->threads);
      TensorFile weights = model_checkpoint(load_safetensors(o->weights));  // a state.safetensors works too
      check_weight_values(weights, "--weights " + o->weights);
      // The checkpoint's own configuration, with any model flags given applied over it (a flag
      // left out keeps the checkpoint's value, not the command's default); without one in the
      // metadata, the flags and their defaults describe the model.
      ModelSpec spec;
      if (weights.metadata.count(kModelMetadataKey) || !flags->any_given()) {
        spec = flags->override_given(read_model_spec(weights));
      } else {
        int64_t classes = flags->values.classes;
        if (classes == 0) classes = open_dataset(o->data, Split::Val, 0, o->dopt)->num_classes();
        spec = flags->spec(classes);
      }
      // The size the model was trained at, unless --image-size says otherwise: a model trained on
      // 32 x 32 crops scores something else at 64 x 64. tensors: data is used as it is.
      if (cmd->count("--image-size") == 0 && o->data.rfind("tensors:", 0) != 0) {
        int64_t trained = spec.image_size;
        if (trained <= 0 && spec.data.rfind("shapes", 0) == 0) {
          const size_t colon = spec.data.find(':');
          try {
            trained = parse_shapes_params(colon == std::string::npos ? "" : spec.data.substr(colon + 1)).size;
          } catch (const std::exception&) {
          }
        }
        if (trained > 0) o->dopt.image_size = trained;
      }
      ModulePtr model = spec.build();
      model->load_state_dict(weights, true);
      if (o->bn_mode == "batch" && !norm_info(spec.options.norm.kind).traits.batch_statistics)
        warn("eval", str("--bn-mode batch: the model's norm (", spec.options.norm.kind,
                         ") keeps no batch statistics, so the flag changes nothing"));
      DatasetPtr data = open_dataset(o->data, Split::Val, spec.options.classes, o->dopt);
      SB_CHECK(data->num_classes() == spec.options.classes, "eval: the data has ", data->num_classes(),
               " classes but the model predicts ", spec.options.classes);
      Tensor logits;
      const SampleTransform tf = make_transform(o->data, Split::Val, o->dopt);
      if (o->precise_bn > 0) {
        DatasetPtr train_data = open_dataset(o->data, Split::Train, spec.options.classes, o->dopt);
        auto note = [](const std::string& m) { std::fprintf(stderr, "%s\n", m.c_str()); };
        PreciseBNResult p = precise_bn(*model, *train_data, o->precise_bn, o->batch, tf, note);
        if (p.layers > 0)
          note(str("PreciseBN: recomputed the running statistics of ", p.layers, " layers over ", p.images,
                   " training images (", p.batches, " batches of up to ", o->batch, ")"));
      }
      EvalResult r = evaluate(*model, *data, o->batch, o->bn_mode == "batch" ? BNEval::Batch : BNEval::Running,
                              o->save_logits.empty() ? nullptr : &logits, tf);
      if (!o->save_logits.empty()) {
        TensorFile f;
        f.floats["logits"] = logits;
        save_safetensors(o->save_logits, f);
      }
      if (std::string sk = skip_report(*data); !sk.empty()) std::fprintf(stderr, "%s\n", sk.c_str());
      auto num = [](double v) { return std::isnan(v) ? nlohmann::json(nullptr) : nlohmann::json(v); };
      nlohmann::json j = {{"loss", num(r.loss)}, {"pixel_acc", num(r.pixel_acc)}, {"miou", num(r.miou)},
                          {"images", r.images}, {"bn_mode", o->bn_mode}};
      j["class_iou"] = nlohmann::json::array();
      for (double v : r.class_iou) j["class_iou"].push_back(num(v));
      j["confusion"] = r.confusion;
      j["class_names"] = class_names(o->data, static_cast<int64_t>(r.class_iou.size()));
      if (o->json) {
        std::cout << j.dump() << "\n";
      } else {
        // What was evaluated, then the scores, per-class IoU and the confusion matrix.
        std::string size = "?";
        if (data->size() > 0) {
          Generator g(0);
          Sample first = data->get(0);
          if (tf) first = tf(std::move(first), g);
          size = str(first.mask.size(1), " x ", first.mask.size(0));
        }
        std::printf("%s (%s, %s) on %s, validation split: %lld images of %s, BatchNorm %s statistics\n",
                    o->weights.c_str(), spec.model.c_str(), spec.options.norm.kind.c_str(), o->data.c_str(),
                    (long long)r.images, size.c_str(), o->bn_mode.c_str());
        std::printf("loss %.4f  pixel accuracy %.4f  mean IoU %.4f\n", r.loss, r.pixel_acc, r.miou);
        const size_t K = r.class_iou.size();
        const std::vector<std::string> names = class_names(o->data, static_cast<int64_t>(K));
        int w = 10;
        for (const std::string& n : names) w = std::max(w, static_cast<int>(n.size()) + 4);
        std::printf("\n%-*s %8s   confusion (rows: true class, columns: predicted; pixels)\n", w, "class", "IoU");
        for (size_t t = 0; t < K; ++t) {
          std::printf("%-*s %8s  ", w, str(t, " ", names[t]).c_str(),
                      std::isnan(r.class_iou[t]) ? "-" : str(std::round(r.class_iou[t] * 1e4) / 1e4).c_str());
          for (size_t p = 0; p < K; ++p) std::printf(" %10lld", (long long)r.confusion[t * K + p]);
          std::printf("\n");
        }
      }
      return 0;
    };
  });
}

}  // namespace sb::cli
