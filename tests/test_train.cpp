// Training parity with PyTorch: a few SGD/AdamW steps of unet-s from a PyTorch-made init on a
// PyTorch-made batch stream land on PyTorch's weights and BatchNorm statistics; and the
// train/eval command line end to end.
#include <doctest/doctest.h>

#include <cmath>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/io/safetensors.h"
#include "fixtures.h"
#include "gradcheck.h"
#include "tools/app/trainer.h"

using namespace sb;

static std::string fixture_path(const std::string& name) {
  return std::string(SB_FIXTURES_DIR) + "/" + name + ".safetensors";
}

// Relative error of an update: |ours - theirs| / |theirs| over the whole tensor (L2 norms).
static double update_rel_err(const Tensor& init, const Tensor& ours, const Tensor& theirs) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < init.numel(); ++i) {
    double a = (double)ours[i] - init[i], b = (double)theirs[i] - init[i];
    num += (a - b) * (a - b);
    den += b * b;
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

static void check_train_case(const std::string& name) {
  CAPTURE(name);
  auto expected = sbtest::load_fixture("train_" + name + "_expected");
  auto cfgj = nlohmann::json::parse(expected.metadata.at("config"));
  TrainConfig cfg;
  cfg.spec.options.norm.kind = cfgj["norm"];
  cfg.spec.options.norm.groups = cfgj["groups"];
  cfg.spec.options.classes = cfgj["classes"];
  cfg.spec.options.base_width = 4;
  cfg.data = "tensors:" + fixture_path("train_" + name + "_data");
  cfg.init = fixture_path("train_" + name + "_init");
  cfg.batch = cfgj["batch"];
  cfg.steps = cfgj["steps"];
  cfg.shuffle = false;
  cfg.optim = cfgj["optim"];
  cfg.lr = cfgj["lr"];
  cfg.momentum = cfgj["momentum"];
  cfg.weight_decay = cfgj["wd"];
  ModulePtr model;
  train(cfg, &model);
  TensorFile init = load_safetensors(cfg.init);
  StateDict sd = model->state_dict();
  double worst = 0;
  for (auto& [k, v] : sd.floats) {
    CAPTURE(k);
    const Tensor& want = expected.get_float("final." + k);
    if (k.find("running_") != std::string::npos) {
      CHECK_CLOSE(v, want, 1e-4);
    } else {
      double e = update_rel_err(init.get_float(k), v, want);
      worst = std::max(worst, e);
      CHECK(e <= 1e-3);
    }
  }
  for (auto& [k, v] : sd.ints) CHECK(v[0] == expected.get_int("final." + k)[0]);
  MESSAGE(name << ": worst relative update error " << worst);
  TensorsDataset data(cfg.data.substr(8), cfg.spec.options.classes);
  Tensor logits;
  evaluate(*model, data, 2, BNEval::Running, &logits);
  CHECK_CLOSE(logits, expected.get_float("eval_logits"), 1e-3);
}

TEST_CASE("train: SGD steps with BatchNorm land on PyTorch's weights and running statistics") {
  check_train_case("bn_sgd");
}
TEST_CASE("train: AdamW steps with GroupNorm at odd image sizes match PyTorch") { check_train_case("gn_adamw"); }
TEST_CASE("train: batch 1 with LayerNorm matches PyTorch") { check_train_case("ln_sgd_b1"); }
TEST_CASE("train: batch 3 with InstanceNorm and AdamW matches PyTorch") { check_train_case("in_adamw_b3"); }
TEST_CASE("train: no normalization, 5 classes, batch 4 matches PyTorch") { check_train_case("none_sgd_b4"); }
TEST_CASE("train: BatchNorm at batch 1 with AdamW matches PyTorch") { check_train_case("bn_adamw_b1"); }
TEST_CASE("train: GroupNorm with 7 classes and wrapping batches matches PyTorch") { check_train_case("gn_sgd_b3_k7"); }
// The normalization-activation layers (tools/scripts/fixtures/fx_evonorm.py builds the PyTorch
// twin: unet_s.UNetS with its norms swapped for FRN / EvoNorm and no ReLU after them).
TEST_CASE("train: SGD steps with FRN + TLU match PyTorch") { check_train_case("frn_sgd"); }
TEST_CASE("train: SGD steps with EvoNorm-S0 match PyTorch") { check_train_case("evonorm_s0_sgd"); }
TEST_CASE("train: SGD steps with EvoNorm-B0 land on PyTorch's weights, running_var and eval logits") {
  check_train_case("evonorm_b0_sgd");
}

// ---- the training product: output directory, resume, divergence --------------------------

namespace {
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    path = std::filesystem::temp_directory_path() / ("sb_train_" + std::to_string(::getpid()) + "_" + std::to_string(counter()++));
    std::filesystem::remove_all(path);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  static int& counter() {
    static int c = 0;
    return c;
  }
};

TrainConfig small_config(const std::string& out) {
  TrainConfig c;
  c.spec.options.norm.kind = "bn";
  c.spec.options.norm.groups = 2;
  c.spec.options.classes = 3;
  c.spec.options.base_width = 4;
  c.data = "tensors:" + fixture_path("train_bn_sgd_data");
  c.val_data = c.data;
  c.batch = 2;
  c.epochs = 3;
  c.lr = 0.05f;
  c.optim = "adamw";
  c.schedule = "cosine";
  c.seed = 11;
  c.out = out;
  return c;
}

std::string file_bytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}
}  // namespace

TEST_CASE("train: --out writes metrics.csv, config.json, model, best and state every epoch") {
  TempDir d;
  TrainResult r = train(small_config(d.path.string()));
  REQUIRE(r.epochs.size() == 3);
  for (const char* f : {"metrics.csv", "timing.csv", "config.json", "model.safetensors", "best.safetensors", "state.safetensors"})
    CHECK(std::filesystem::exists(d.path / f));
  std::string csv = file_bytes(d.path / "metrics.csv");
  CHECK(csv.rfind("epoch,step,lr,train_loss,val_loss,val_pixel_acc,val_miou\n", 0) == 0);
  CHECK(std::count(csv.begin(), csv.end(), '\n') == 4);
  std::string timing = file_bytes(d.path / "timing.csv");  // wall-clock time, apart from the results
  CHECK(timing.rfind("epoch,step,seconds,images_per_s\n", 0) == 0);
  CHECK(std::count(timing.begin(), timing.end(), '\n') == 4);
  auto cfg = nlohmann::json::parse(file_bytes(d.path / "config.json"));
  CHECK(cfg["seed"] == 11);
  CHECK(cfg.contains("threads"));
  CHECK(cfg.contains("version"));
  CHECK(r.epochs.back().step == 9);  // 6 images, batch 2: 3 steps per epoch
  CHECK(!std::isnan(r.epochs.back().val_miou));
  // No temporary files are left behind.
  for (auto& e : std::filesystem::directory_iterator(d.path))
    CHECK(e.path().filename().string().find(".tmp") == std::string::npos);
}

TEST_CASE("train: an interrupted run resumed ends with bit-identical weights") {
  TempDir a, b;
  TrainConfig ca = small_config(a.path.string());
  ModulePtr ma;
  TrainResult ra = train(ca, &ma);
  // Interrupt mid-epoch (after step 4 of 9), then resume.
  TrainConfig cb = small_config(b.path.string());
  TrainHooks stop_early;
  int steps = 0;
  stop_early.on_step = [&](const StepReport&) { ++steps; };
  stop_early.should_stop = [&] { return steps == 4; };
  TrainResult rb1 = train(cb, nullptr, stop_early);
  CHECK(rb1.interrupted);
  CHECK(rb1.losses.size() == 4);
  cb.resume = true;
  ModulePtr mb;
  TrainResult rb2 = train(cb, &mb);
  CHECK(rb2.resumed);
  CHECK(rb2.losses == ra.losses);
  StateDict sa = ma->state_dict(), sb = mb->state_dict();
  for (auto& [k, v] : sa.floats) {
    CAPTURE(k);
    CHECK(std::memcmp(v.data(), sb.floats.at(k).data(), v.numel() * sizeof(float)) == 0);
  }
  CHECK(file_bytes(a.path / "model.safetensors") == file_bytes(b.path / "model.safetensors"));
  // The metrics agree except for the timing columns.
  for (size_t i = 0; i < ra.epochs.size(); ++i) {
    CHECK(ra.epochs[i].train_loss == rb2.epochs[i].train_loss);
    CHECK(ra.epochs[i].val_miou == rb2.epochs[i].val_miou);
  }
  // Timing is kept apart, so the files agree byte for byte; the epoch finished before the
  // interruption keeps its timing through the resume (from timing.csv).
  for (const char* f : {"metrics.csv", "best.safetensors", "state.safetensors"}) {
    CAPTURE(f);
    CHECK(file_bytes(a.path / f) == file_bytes(b.path / f));
  }
  CHECK(rb2.epochs[0].seconds > 0);
}

TEST_CASE("train: --resume refuses a directory made with a different configuration") {
  TempDir d;
  TrainConfig c = small_config(d.path.string());
  c.epochs = 1;
  train(c);
  c.resume = true;
  c.lr = 0.1f;
  CHECK_THROWS_WITH_AS(train(c), doctest::Contains("was made with a different configuration:\n  lr: saved 0.05"), Error);
  // A directory without state starts fresh (and says so).
  TempDir e;
  TrainConfig f = small_config(e.path.string());
  f.epochs = 1;
  f.resume = true;
  std::string said;
  TrainHooks h;
  h.log = [&](const std::string& m) { said += m; };
  TrainResult r = train(f, nullptr, h);
  CHECK_FALSE(r.resumed);
  CHECK(said.find("has no saved state; starting fresh") != std::string::npos);
}

TEST_CASE("train: a diverging run stops naming the step and layer, keeping the last good checkpoint") {
  TempDir d;
  TrainConfig c = small_config(d.path.string());
  c.spec.options.norm.kind = "none";
  c.epochs = 1;
  train(c);
  std::string good_model = file_bytes(d.path / "model.safetensors");
  std::string good_state = file_bytes(d.path / "state.safetensors");
  // The same directory, a fresh run at a learning rate that must blow up within its first epoch.
  c.overwrite = true;
  c.optim = "sgd";
  c.schedule = "const";
  c.lr = 1e6f;
  c.epochs = 20;
  try {
    train(c);
    FAIL("expected divergence");
  } catch (const Error& e) {
    std::string m = e.what();
    MESSAGE(m);
    CHECK(m.find("training diverged at step") != std::string::npos);
    // A non-finite value names its layer; a finite loss that exploded says by how much.
    bool names_culprit = m.find("the output of layer '") != std::string::npos ||
                         m.find("the gradient of '") != std::string::npos ||
                         m.find("more than 100 times") != std::string::npos;
    CHECK(names_culprit);
    CHECK(m.find("last good checkpoint is kept") != std::string::npos);
  }
  CHECK(file_bytes(d.path / "model.safetensors") == good_model);
  CHECK(file_bytes(d.path / "state.safetensors") == good_state);
}

TEST_CASE("train: a non-finite weight stops the run at step 1, naming the layer output it poisons") {
  // One NaN in a weight: the first module whose output it reaches is named by its dotted path
  // (children are called through the checked operator(), and relu passes NaN on as PyTorch's does).
  for (const auto& [param, layer] : std::vector<std::pair<std::string, std::string>>{
           {"head.weight", "'head' (Conv2d"}, {"e2.c1.weight", "'e2.c1' (Conv2d"}}) {
    CAPTURE(param);
    TempDir d;
    TrainConfig c = small_config(d.path.string());
    c.epochs = 1;
    TensorFile init = c.spec.build()->state_dict();
    Tensor w = init.floats.at(param).clone();
    w[0] = NAN;
    init.floats[param] = w;
    std::string path = d.path.string() + "_nan.safetensors";
    save_safetensors(path, init);
    c.init = path;
    try {
      train(c);
      FAIL("expected the NaN to stop the run");
    } catch (const Error& e) {
      std::string m = e.what();
      MESSAGE(m);
      CHECK(m.find("training diverged at step 1") != std::string::npos);
      CHECK(m.find("the output of layer " + layer) != std::string::npos);
      CHECK(m.find("nan at flat index") != std::string::npos);
    }
    std::filesystem::remove(path);
  }
}

TEST_CASE("train: divergence is thrown as Diverged, with its step, loss and parameter") {
  // compare tells a diverged run (recorded, and the sweep goes on) from any other failure (which
  // stops the sweep) by this type, not by the words of the message.
  TempDir d;
  TrainConfig c = small_config(d.path.string());
  c.optim = "sgd";
  c.schedule = "const";
  c.lr = 1e6f;
  c.epochs = 20;
  try {
    train(c);
    FAIL("expected divergence");
  } catch (const Diverged& e) {
    std::string m = e.what();
    MESSAGE(m);
    CHECK(e.step >= 1);
    CHECK(m.rfind(str("training diverged at step ", e.step, " "), 0) == 0);
    if (e.parameter.empty()) CHECK((!std::isfinite(e.loss) || m.find("more than 100 times") != std::string::npos));
    else CHECK(m.find("the gradient of '" + e.parameter + "'") != std::string::npos);
  }
  // A NaN weight: the loss of step 1 is not finite.
  TensorFile init = c.spec.build()->state_dict();
  Tensor w = init.floats.at("head.weight").clone();
  w[0] = NAN;
  init.floats["head.weight"] = w;
  std::string path = d.path.string() + "_nan.safetensors";
  save_safetensors(path, init);
  c.init = path;
  c.lr = 0.05f;
  c.overwrite = true;
  try {
    train(c);
    FAIL("expected the NaN to stop the run");
  } catch (const Diverged& e) {
    CHECK(e.step == 1);
    CHECK(std::isnan(e.loss));
    CHECK(e.parameter.empty());
  }
  std::filesystem::remove(path);
  // Any other failure is a plain sb::Error.
  c.init.clear();
  c.data = "tensors:" + d.path.string() + "_missing.safetensors";
  bool plain_error = false;
  try {
    train(c);
  } catch (const Diverged&) {
  } catch (const Error&) {
    plain_error = true;
  }
  CHECK(plain_error);
}

TEST_CASE("train: a resume keeps the best mIoU exactly, so an equal epoch leaves best.safetensors alone") {
  // A learning rate so small that the predictions, and so the mIoU, stay the same every epoch
  // while the weights still move: the first epoch is the best, and a later equal one is not
  // better. A resume used to read the best mIoU back rounded to 6 digits, so an equal epoch
  // could count as better and replace best.safetensors.
  auto config = [](const std::string& out) {
    TrainConfig c = small_config(out);
    c.spec.options.norm.kind = "gn";
    c.optim = "sgd";
    c.schedule = "const";
    c.lr = 1e-5f;
    return c;
  };
  TempDir a, b;
  TrainResult ra = train(config(a.path.string()));
  REQUIRE(ra.epochs.size() == 3);
  REQUIRE(ra.epochs[0].val_miou == ra.epochs[1].val_miou);  // the case this test is about
  TrainConfig cb = config(b.path.string());
  TrainHooks stop;
  int steps = 0;
  stop.on_step = [&](const StepReport&) { ++steps; };
  stop.should_stop = [&] { return steps == 3; };  // at the end of epoch 1
  CHECK(train(cb, nullptr, stop).interrupted);
  cb.resume = true;
  TrainResult rb = train(cb);
  CHECK(rb.best_miou == ra.best_miou);  // exactly
  TensorFile st = load_safetensors((b.path / "state.safetensors").string());
  CHECK(std::stod(st.metadata.at("best_miou")) == ra.best_miou);
  for (const char* f : {"best.safetensors", "model.safetensors", "state.safetensors", "metrics.csv"}) {
    CAPTURE(f);
    CHECK(file_bytes(a.path / f) == file_bytes(b.path / f));
  }
}

TEST_CASE("train: a batch whose every pixel is ignored (255) is skipped and counted, not called divergence") {
  // Three images, batch 1, file order: the middle one's mask is all 255. Training on [A, empty, B]
  // must leave exactly the weights of training on [A, B]: no loss, no gradient, no optimizer
  // step (momentum untouched) for the empty batch. cross_entropy itself keeps PyTorch's meaning,
  // NaN for a mean over zero pixels (tests/test_loss.cpp).
  TempDir d;
  std::filesystem::create_directories(d.path);
  manual_seed(3);
  Tensor images = Tensor::randn({3, 3, 8, 8}, default_generator());
  IndexTensor masks = IndexTensor::empty({3, 8, 8});
  for (int64_t i = 0; i < masks.numel(); ++i) masks[i] = (i * 7 / 5) % 3;
  for (int64_t i = 64; i < 128; ++i) masks[i] = 255;
  auto write = [&](const std::string& name, std::vector<int64_t> keep) {
    Tensor im = Tensor::empty({static_cast<int64_t>(keep.size()), 3, 8, 8});
    IndexTensor mk = IndexTensor::empty({static_cast<int64_t>(keep.size()), 8, 8});
    for (size_t j = 0; j < keep.size(); ++j) {
      std::memcpy(im.data() + j * 192, images.data() + keep[j] * 192, 192 * sizeof(float));
      std::memcpy(mk.data() + j * 64, masks.data() + keep[j] * 64, 64 * sizeof(int64_t));
    }
    TensorFile f;
    f.floats["images"] = im;
    f.ints["masks"] = mk;
    std::string path = (d.path / name).string();
    save_safetensors(path, f);
    return "tensors:" + path;
  };
  auto config = [&](const std::string& data) {
    TrainConfig c = small_config("");
    c.spec.options.norm.kind = "gn";
    c.data = data;
    c.val_data = "none";
    c.batch = 1;
    c.epochs = 1;
    c.shuffle = false;
    c.optim = "sgd";
    c.momentum = 0.9f;
    c.schedule = "const";
    return c;
  };
  ModulePtr with_empty, without;
  TrainResult r = train(config(write("with_empty.safetensors", {0, 1, 2})), &with_empty);
  TrainResult ref = train(config(write("without.safetensors", {0, 2})), &without);
  REQUIRE(r.losses.size() == 3);
  CHECK(std::isnan(r.losses[1]));
  CHECK(r.losses[0] == ref.losses[0]);
  CHECK(r.losses[2] == ref.losses[1]);
  CHECK(r.empty_batches == 1);
  REQUIRE(r.epochs.size() == 1);
  CHECK(r.epochs[0].empty_batches == 1);
  CHECK(r.epochs[0].train_loss == ref.epochs[0].train_loss);  // the mean over the batches that learned
  StateDict a = with_empty->state_dict(), b = without->state_dict();
  for (auto& [k, v] : a.floats) {
    CAPTURE(k);
    CHECK(std::memcmp(v.data(), b.floats.at(k).data(), v.numel() * sizeof(float)) == 0);
  }
  // Every batch empty: nothing to learn, still no divergence.
  TrainConfig all = config(write("all_empty.safetensors", {1, 1}));
  TrainResult re = train(all);
  CHECK(re.empty_batches == 2);
  CHECK(std::isnan(re.epochs[0].train_loss));
}
