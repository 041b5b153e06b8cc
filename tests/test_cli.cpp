// The train/eval command line end to end: a short training saves a checkpoint that eval rebuilds
// from its metadata; bad flags and files are clear errors with a non-zero status below 128.
#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cli_util.h"
#include "core/io/safetensors.h"
#include "temp_dir.h"
#include <string>

namespace {

struct CliOutput {
  std::string out;  // stdout and stderr
  int status;
};

CliOutput cli(const std::string& args) {
  sbtest::CliResult r = sbtest::run_cli(args);
  return {r.all(), r.code};
}

std::string fixture(const std::string& name) { return std::string(SB_FIXTURES_DIR) + "/" + name + ".safetensors"; }

}  // namespace

TEST_CASE("cli: train saves a checkpoint that eval rebuilds from its metadata") {
  auto dir = std::filesystem::temp_directory_path() / ("sb_cli_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::string data = "tensors:" + fixture("train_bn_sgd_data");
  auto t = cli("train --norm gn --groups 2 --base-width 4 --data " + data + " --val-data " + data +
               " --batch 2 --epochs 2 --threads 1 --out " + dir.string());
  INFO(t.out);
  CHECK(t.status == 0);
  CHECK(t.out.find("epoch 2") != std::string::npos);
  CHECK(std::filesystem::exists(dir / "metrics.csv"));
  auto e = cli("eval --weights " + (dir / "model.safetensors").string() + " --data " + data +
               " --batch 3 --json --save-logits " + (dir / "logits.safetensors").string());
  INFO(e.out);
  CHECK(e.status == 0);
  auto j = nlohmann::json::parse(e.out);
  CHECK(j["images"] == 6);
  CHECK(j["miou"].is_number());
  CHECK(j["class_iou"].size() == 3);
  CHECK(j["confusion"].size() == 9);
  CHECK(std::filesystem::exists(dir / "logits.safetensors"));
  // The text form says what it evaluated and shows per-class IoU and the confusion matrix, whose
  // counts add up to the labelled pixels.
  auto text = cli("eval --weights " + (dir / "model.safetensors").string() + " --data " + data + " --batch 3");
  INFO(text.out);
  CHECK(text.status == 0);
  CHECK(text.out.find("validation split: 6 images of ") != std::string::npos);
  CHECK(text.out.find("confusion (rows: true class, columns: predicted; pixels)") != std::string::npos);
  int64_t counted = 0;
  for (int64_t v : j["confusion"]) counted += v;
  CHECK(counted > 0);
  for (const char* row : {"class 0 ", "class 1 ", "class 2 "}) CHECK(text.out.find(row) != std::string::npos);
  // A model flag given alone overrides that setting only; the rest come from the checkpoint
  // (base width 4 and 3 classes here), not from the flags' defaults (16, and the data's).
  auto same = cli("eval --weights " + (dir / "model.safetensors").string() + " --groups 2 --data " + data +
                  " --json");
  INFO(same.out);
  CHECK(same.status == 0);
  auto other = cli("eval --weights " + (dir / "model.safetensors").string() + " --base-width 8 --data " + data);
  INFO(other.out);
  CHECK(other.status == 1);
  CHECK(other.out.find("e1.c1.weight") != std::string::npos);  // the shapes differ from the checkpoint's
  std::filesystem::remove_all(dir);
}

TEST_CASE("cli: bad flags, values and files are clear errors") {
  struct Case {
    std::string args, expect;
  };
  std::string data = "tensors:" + fixture("train_bn_sgd_data");
  for (const Case& c : std::vector<Case>{
           {"train --batch 0 --data " + data, "--batch"},
           {"train --batch two --data " + data, "--batch"},
           {"train --no-such-flag", "no-such-flag"},
           {"train --norm xn --data " + data + " --steps 1", "unknown norm 'xn'"},
           {"train --model unet-xl --data " + data + " --steps 1", "unknown model 'unet-xl'"},
           {"train --norm gn --groups 3 --data " + data + " --steps 1", "not divisible by 3 groups"},
           {"train --data tensors:/nonexistent.safetensors --steps 1", "/nonexistent.safetensors"},
           {"train --out /proc/version --data " + data + " --steps 1", "--out"},
           {"eval --weights /nonexistent.safetensors", "/nonexistent.safetensors"},
       }) {
    auto r = cli(c.args);
    INFO(c.args << "\n" << r.out);
    CHECK(r.status != 0);
    CHECK(r.status < 128);
    CHECK(r.out.find(c.expect) != std::string::npos);
  }
}

TEST_CASE("cli: predict writes a colour mask and an overlay per image") {
  auto dir = std::filesystem::temp_directory_path() / ("sb_predict_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  auto d = cli("data shapes --out " + (dir / "data").string() + " --count 2 --val-count 2 --image-size 16 --seed 1");
  REQUIRE(d.status == 0);
  auto t = cli("train --data shapes:train=8,val=4,size=16 --base-width 4 --epochs 1 --batch 4 --threads 1 --out " +
               (dir / "run").string());
  INFO(t.out);
  REQUIRE(t.status == 0);
  auto p = cli("predict --weights " + (dir / "run" / "model.safetensors").string() + " --input " +
               (dir / "data" / "val" / "images").string() + " --out " + (dir / "pred").string());
  INFO(p.out);
  CHECK(p.status == 0);
  int masks = 0, overlays = 0;
  for (auto& e : std::filesystem::directory_iterator(dir / "pred")) {
    std::string n = e.path().filename().string();
    masks += n.find("_mask.png") != std::string::npos;
    overlays += n.find("_overlay.png") != std::string::npos;
  }
  CHECK(masks == 2);
  CHECK(overlays == 2);
  auto bad = cli("predict --weights " + (dir / "run" / "model.safetensors").string() + " --input " +
                 (dir / "run").string() + " --out " + (dir / "pred2").string());
  CHECK(bad.status == 1);
  CHECK(bad.out.find("no PNG, JPEG or BMP images") != std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST_CASE("cli: a flag or subcommand that does not parse reads like every other error, with a guess") {
  struct Case {
    std::string args, expect;
  };
  for (const Case& c : std::vector<Case>{
           {"train --epoch 1", "smallbatch train: error: unknown flag '--epoch'; did you mean '--epochs'?"},
           {"train --lrr=0.1", "smallbatch train: error: unknown flag '--lrr'; did you mean '--lr'?"},
           {"trian", "smallbatch: error: unexpected argument 'trian'; did you mean 'train'?"},
           {"bench --zzzzzz 3", "smallbatch bench: error: unknown flag '--zzzzzz'\n"},
           {"train --batch x", "smallbatch train: error: --batch: expected a number, got 'x'"},
           // compare's warm-up counts epochs, train's steps: distinct names, and the old one is pointed on.
           {"compare --norm-warmup 2", "smallbatch compare: error: unknown flag '--norm-warmup'; did you mean '--norm-warmup-epochs'?"},
       }) {
    sbtest::CliResult r = sbtest::run_cli(c.args);
    INFO(c.args << "\n" << r.err);
    CHECK(r.code >= 100);
    CHECK(r.code < 128);
    CHECK(r.err.find(c.expect) != std::string::npos);
    CHECK(r.err.find("--help") != std::string::npos);
  }
  // bench spells the image size as every other command does; --size still works.
  CHECK(sbtest::run_cli("bench --image-size 16 --steps 1 --warmup 0 --batch 1 --base-width 4 --groups 2 --json").code == 0);
  CHECK(sbtest::run_cli("bench --size 16 --steps 1 --warmup 0 --batch 1 --base-width 4 --groups 2 --json").code == 0);
}

TEST_CASE("cli: train skips a batch whose every pixel is ignored, and says so in the epoch line") {
  sbtest::TempDir t("sb_cli_empty");
  sb::TensorFile f;
  f.floats["images"] = sb::Tensor::full({4, 3, 8, 8}, 0.5f);
  sb::IndexTensor masks = sb::IndexTensor::full({4, 8, 8}, 255);  // images 2 and 3: all ignored
  for (int64_t i = 0; i < 128; ++i) masks[i] = i % 2;
  f.ints["masks"] = masks;
  sb::save_safetensors(t / "data.safetensors", f);
  auto r = sbtest::run_cli("train --data tensors:" + t / "data.safetensors" + " --classes 2 --val-data none --batch 2 "
                           "--no-shuffle --epochs 2 --base-width 4 --groups 2 --threads 1 --out " + t / "run");
  INFO(r.all());
  CHECK(r.code == 0);
  CHECK(r.out.find("epoch 1  step 2") != std::string::npos);
  CHECK(r.out.find("(1 batches without a labelled pixel skipped)") != std::string::npos);
  CHECK(r.out.find("skipped 2 batches without a labelled pixel (all 255)") != std::string::npos);
  CHECK(r.all().find("diverged") == std::string::npos);
}

TEST_CASE("cli: eval takes the checkpoint's training image size, names the classes, and limits with --val-limit") {
  sbtest::TempDir t("sb_eval_size");
  auto tr = sbtest::run_cli("train --data shapes:train=8,val=4,size=32 --base-width 4 --groups 2 --batch 4 --steps 1 "
                            "--threads 1 --workers 0 --out " + t / "run");
  INFO(tr.all());
  REQUIRE(tr.code == 0);
  // Trained at 32 x 32 (the data spec's size): eval of --data shapes (64 by default) uses 32.
  auto e = sbtest::run_cli("eval --weights " + t / "run/model.safetensors" + " --data shapes --val-limit 2 --threads 1");
  INFO(e.all());
  CHECK(e.code == 0);
  CHECK(e.out.find("2 images of 32 x 32") != std::string::npos);
  for (const char* row : {"0 background ", "1 circle ", "2 rectangle ", "3 triangle "}) CHECK(e.out.find(row) != std::string::npos);
  // --image-size says otherwise; --limit is the older spelling of --val-limit.
  auto big = sbtest::run_cli("eval --weights " + t / "run/model.safetensors" + " --data shapes --image-size 48 --limit 1 --threads 1 --json");
  INFO(big.all());
  CHECK(big.code == 0);
  auto j = nlohmann::json::parse(big.out);
  CHECK(j["images"] == 1);
  CHECK(j["class_names"][1] == "circle");
  // Trained with --image-size: the checkpoint records it.
  auto tr2 = sbtest::run_cli("train --data shapes:train=8,val=4 --image-size 16 --base-width 4 --groups 2 --batch 4 --steps 1 "
                             "--threads 1 --workers 0 --out " + t / "run16");
  REQUIRE(tr2.code == 0);
  auto e16 = sbtest::run_cli("eval --weights " + t / "run16/model.safetensors" + " --data shapes --val-limit 1 --threads 1");
  CHECK(e16.out.find("1 images of 16 x 16") != std::string::npos);
  // The help says where the model's settings come from instead of showing train's defaults.
  auto help = sbtest::run_cli("eval --help");
  CHECK(help.out.find("(default: from the checkpoint)") != std::string::npos);
  CHECK(help.out.find("=16") == std::string::npos);  // train shows --base-width INT:POSITIVE=16
}

TEST_CASE("cli: compare run again on its --out takes the saved sweep for every flag not given") {
  sbtest::TempDir t("sb_cli_extend");
  const std::string out = t / "sweep";
  auto first = sbtest::run_cli("compare --norms gn --groups 2 --batch-sizes 4 --seeds 1 --epochs 1 --lr 0.05 "
                               "--data shapes:train=8,val=4,size=16 --base-width 4 --threads 1 --out " + out);
  INFO(first.all());
  REQUIRE(first.code == 0);
  // Only --seeds given: the rest (epochs, lr, data, norms, batch sizes) come from compare.json, not
  // from the preset, and one new run trains.
  auto more = sbtest::run_cli("compare --seeds 2 --out " + out);
  INFO(more.all());
  CHECK(more.code == 0);
  CHECK(more.out.find("extending the sweep in " + out + " with seeds 1 to 2") != std::string::npos);
  CHECK(more.out.find("[run 2/2] gn batch 4 seed 1") != std::string::npos);
  CHECK(more.out.find("[run 1/2]") == std::string::npos);
  auto j = nlohmann::json::parse(std::ifstream(out + "/compare.json"));
  CHECK(j["epochs"] == 1);
  CHECK(j["seeds"] == 2);
  CHECK(j["base_lr"].dump() == "0.05");
  // A shared setting given with another value is refused, by flag, with both values.
  auto other = sbtest::run_cli("compare --epochs 2 --out " + out);
  CHECK(other.code == 1);
  CHECK(other.err.find("--epochs: saved 1, now 2") != std::string::npos);
}

TEST_CASE("cli: a sync-preset sweep of one-process runs (--ranks-per-run 1) continues from its --out alone") {
  sbtest::TempDir t("sb_cli_sync_k1");
  const std::string out = t / "sweep";
  auto first = sbtest::run_cli("compare --preset sync --ranks-per-run 1 --seeds 1 --epochs 1 "
                               "--data shapes:train=8,val=4,size=16 --base-width 4 --threads 1 --out " + out);
  INFO(first.all());
  REQUIRE(first.code == 0);
  // compare.json leaves ranks_per_run out at 1: read back as 1, not as the sync preset's 4,2.
  auto again = sbtest::run_cli("compare --out " + out);
  INFO(again.all());
  CHECK(again.code == 0);
  CHECK(again.out.find("continuing the sweep") != std::string::npos);
  CHECK(again.out.find("[run ") == std::string::npos);  // every run was finished
}
