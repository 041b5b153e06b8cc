// Input that parses but makes no sense (issue 19, item 6): each flag and input tried at and past
// its edges. What cannot be meant is an error (status 1..127, the flag, what was expected, what
// was found); what is legal but rarely wanted is one warning line on stderr, and the run goes on.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "cli_util.h"
#include "core/io/safetensors.h"
#include "datasets/shapes.h"
#include "datasets/transforms.h"
#include "optim/optimizer.h"
#include "temp_dir.h"
#include "tools/app/checkpoint.h"
#include "tools/app/data_spec.h"

namespace {

// A small, fast training: 4 images of 16 x 16, one step, no validation.
const std::string kTrainBase = "train --data shapes:train=4,val=4,size=16 --base-width 4 --val-data none --workers 0";
const std::string kTrain = kTrainBase + " --groups 2 --threads 1";

struct Case {
  std::string what, args;
  std::vector<std::string> want;  // each must appear in stderr
};

void expect_error(const Case& c) {
  sbtest::CliResult r = sbtest::run_cli(c.args);
  INFO(c.what << "\nsmallbatch " << c.args << "\nstdout: " << r.out << "\nstderr: " << r.err);
  CHECK(r.code >= 1);
  CHECK(r.code < 128);
  CHECK(r.err.find("error") != std::string::npos);
  for (const auto& w : c.want) CHECK_MESSAGE(r.err.find(w) != std::string::npos, "missing: ", w);
}

void expect_warning(const Case& c) {
  sbtest::CliResult r = sbtest::run_cli(c.args);
  INFO(c.what << "\nsmallbatch " << c.args << "\nstdout: " << r.out << "\nstderr: " << r.err);
  CHECK(r.code == 0);
  CHECK(r.err.find("warning: ") != std::string::npos);
  for (const auto& w : c.want) CHECK_MESSAGE(r.err.find(w) != std::string::npos, "missing: ", w);
}

}  // namespace

TEST_CASE("nonsense: optimizer settings outside their meaningful range are errors naming the flag") {
  for (const Case& c : std::vector<Case>{
           {"momentum 1 never forgets a gradient", kTrain + " --steps 1 --momentum 1", {"--momentum", "[0, 1)", "got 1"}},
           {"momentum above 1", kTrain + " --steps 1 --momentum 1.5", {"--momentum", "[0, 1)", "got 1.5"}},
           {"an infinite learning rate", kTrain + " --steps 1 --lr inf", {"--lr", "finite", "inf"}},
           {"an infinite weight decay", kTrain + " --steps 1 --wd inf", {"--wd", "finite", "inf"}},
           {"an infinite clipping norm", kTrain + " --steps 1 --clip-grad inf", {"--clip-grad", "finite"}},
           {"lr x wd >= 1 (SGD)", kTrain + " --steps 1 --lr 0.5 --wd 2", {"--lr 0.5 x --wd 2", "below 1"}},
           {"lr x wd >= 1 (AdamW)", kTrain + " --steps 1 --optim adamw --lr 1 --wd 1", {"--lr 1 x --wd 1", "below 1"}},
       })
    expect_error(c);
}

TEST_CASE("nonsense: sizes past any use are errors naming the flag") {
  for (const Case& c : std::vector<Case>{
           {"epochs by the billion", kTrain + " --epochs 1000000000", {"--epochs 1000000000", "at most 100000000 steps"}},
           {"steps by the billion", kTrain + " --steps 1000000000", {"--steps 1000000000", "at most 100000000 steps"}},
           {"a hundred thousand loader threads", kTrain + " --steps 1 --workers 100000", {"--workers", "at most 256", "100000"}},
           {"data: a thousand loader threads", "data stats --data shapes:train=4,val=4,size=16 --workers 1000",
            {"--workers", "at most 256"}},
           {"a negative seed wraps to 2^64 - 1", kTrain + " --steps 1 --seed -1", {"--seed", "whole number", "'-1'"}},
           {"data: a negative seed", "data stats --data shapes:train=4,val=4,size=16 --seed -5", {"--seed", "'-5'"}},
           {"a hundred thousand threads", kTrainBase + " --steps 1 --threads 100000", {"--threads", "at most 1024", "100000"}},
       })
    expect_error(c);
}

// Past the int64 / uint64 range CLI11's integer conversion saturates (strtoll): 99999999999999999999
// epochs became 9223372036854775807 without a word. Every integer flag now refuses it.
TEST_CASE("nonsense: whole numbers past the int64 range are errors, not saturated") {
  const std::string big = "99999999999999999999";
  for (const Case& c : std::vector<Case>{
           {"epochs past int64", kTrain + " --epochs " + big, {"--epochs", "at most 9223372036854775807", big}},
           {"batch past int64", kTrain + " --steps 1 --batch " + big, {"--batch", "at most 9223372036854775807"}},
           {"seed past uint64", kTrain + " --steps 1 --seed " + big, {"--seed", "at most 18446744073709551615", big}},
           {"precise-bn one past int64", kTrain + " --steps 1 --precise-bn 9223372036854775808",
            {"--precise-bn", "at most 9223372036854775807"}},
           {"bench --steps past int64", "bench --steps " + big, {"--steps", "at most 9223372036854775807"}},
           {"compare --batch-sizes past int64", "compare --norms gn --batch-sizes 2," + big,
            {"--batch-sizes", big, "past the largest whole number"}},
       })
    expect_error(c);
  // The largest seed is still accepted.
  sbtest::CliResult r = sbtest::run_cli(kTrain + " --steps 1 --seed 18446744073709551615");
  INFO(r.err);
  CHECK(r.code == 0);
}

TEST_CASE("nonsense: sweep lists with repeats, and a --limit below a batch size, are errors") {
  sbtest::TempDir d("sb_nonsense_compare");
  const std::string base = "compare --data shapes:train=8,val=4,size=16 --seeds 1 --epochs 1 --threads 1 --out " +
                           (d.path / "c").string();
  for (const Case& c : std::vector<Case>{
           {"a batch size twice", base + " --norms gn --batch-sizes 4,2,4", {"--batch-sizes", "4 is listed twice"}},
           {"a group count twice", base + " --norms gn --groups 2,2 --batch-sizes 2", {"--groups", "2 is listed twice"}},
           {"--limit below a batch size", base + " --norms gn --batch-sizes 4,2 --limit 2",
            {"--limit 2", "batch size 4", "--batch-sizes"}},
       })
    expect_error(c);
  CHECK(!std::filesystem::exists(d.path / "c" / "summary.csv"));
}

TEST_CASE("nonsense: checkpoint values no trained model holds are errors naming the tensor") {
  sbtest::TempDir d("sb_nonsense_ckpt");
  sb::ModelSpec spec;
  spec.options.norm.kind = "bn";
  spec.options.classes = 5;
  spec.options.base_width = 4;
  spec.data = "shapes";
  auto variant = [&](const std::string& name, float value, const std::string& key) {
    sb::ModulePtr m = spec.build();
    std::string path = (d.path / name).string();
    sb::save_model(path, *m, spec);
    sb::TensorFile f = sb::load_safetensors(path);
    f.floats.at(key).data()[1] = value;
    sb::save_safetensors(path, f);
    return path;
  };
  const std::string neg = variant("neg.safetensors", -0.5f, "e1.n1.running_var");
  const std::string nan_var = variant("nanvar.safetensors", NAN, "e2.n2.running_var");
  const std::string nan_w = variant("nanw.safetensors", NAN, "e1.c1.weight");
  const std::string inf_mean = variant("infmean.safetensors", INFINITY, "d1.n1.running_mean");
  const std::string data = " --data shapes:train=4,val=4,size=16 --threads 1";
  for (const Case& c : std::vector<Case>{
           {"a negative running_var", "eval --weights " + neg + data, {neg, "e1.n1.running_var", "negative", "-0.5"}},
           {"a NaN running_var", "eval --weights " + nan_var + data, {"e2.n2.running_var", "nan", "finite"}},
           {"a NaN weight", "eval --weights " + nan_w + data, {"e1.c1.weight", "nan"}},
           {"an infinite running_mean", "eval --weights " + inf_mean + data, {"d1.n1.running_mean", "inf"}},
           {"predict: a negative running_var", "predict --weights " + neg + " --input " + neg + " --out " + (d.path / "p").string(),
            {"e1.n1.running_var", "negative"}},
       })
    expect_error(c);
}

TEST_CASE("nonsense: legal but unlikely settings warn on stderr, one line each, and the run goes on") {
  std::vector<Case> cases = {
      {"--lr 0", kTrain + " --steps 1 --lr 0", {"--lr 0", "will not change"}},
      {"--lr far above the usual range", kTrain + " --steps 1 --lr 5", {"--lr 5", "far above"}},
      {"--momentum with adam", kTrain + " --steps 1 --optim adam --momentum 0.5", {"--momentum", "sgd only", "adam ignores"}},
      {"--clip-grad tiny", kTrain + " --steps 1 --clip-grad 1e-9", {"--clip-grad 1e-09", "almost nothing"}},
      {"--groups with a norm without groups", kTrain + " --steps 1 --norm bn --batch 2", {"--groups", "--norm bn ignores"}},
      {"--groups above every layer's width", kTrainBase + " --threads 1 --steps 1 --groups 64", {"--groups 64", "widest", "one group per channel"}},
      {"--batch larger than the data (--steps)", kTrain + " --steps 1 --batch 8", {"--batch 8", "4 samples", "more than once"}},
      {"--limit below --batch (--epochs)", kTrain + " --epochs 1 --batch 4 --limit 2", {"--batch 4", "--limit 2", "smaller batch"}},
      {"--warmup longer than the run", kTrain + " --steps 2 --warmup 100", {"--warmup 100", "2 steps", "last step"}},
  };
  const unsigned cores = std::thread::hardware_concurrency();
  if (cores > 0 && cores < 1024)
    cases.push_back({"--threads above the cores", kTrainBase + " --steps 1 --threads " + std::to_string(cores + 1),
                     {"--threads " + std::to_string(cores + 1), "cores"}});
  for (const Case& c : cases) expect_warning(c);

  sbtest::TempDir d("sb_nonsense_eval");
  sb::ModelSpec spec;
  spec.options.norm.kind = "gn";
  spec.options.norm.groups = 2;
  spec.options.classes = 5;
  spec.options.base_width = 4;
  const std::string path = (d.path / "gn.safetensors").string();
  sb::save_model(path, *spec.build(), spec);
  expect_warning({"eval --bn-mode batch without BatchNorm",
                  "eval --weights " + path + " --data shapes:train=4,val=4,size=16 --threads 1 --bn-mode batch",
                  {"--bn-mode batch", "changes nothing"}});
}

TEST_CASE("nonsense: the library refuses optimizer settings outside their range") {
  sb::Var w(sb::Tensor::ones({3}), true);
  CHECK_THROWS_WITH(sb::SGD(std::vector<sb::Var>{w}, sb::SGDOptions{.lr = 0.1f, .momentum = 1.f}),
                    doctest::Contains("momentum must be in [0, 1)"));
  CHECK_THROWS_WITH(sb::SGD(std::vector<sb::Var>{w}, sb::SGDOptions{.lr = 0.5f, .weight_decay = 2.f}),
                    doctest::Contains("learning rate x weight decay must be below 1"));
  CHECK_THROWS_WITH(sb::SGD(std::vector<sb::Var>{w}, sb::SGDOptions{.lr = 0.1f, .weight_decay = INFINITY}),
                    doctest::Contains("weight decay must be >= 0 and finite"));
  CHECK_THROWS_WITH(sb::Adam(std::vector<sb::Var>{w}, sb::adamw_options(1.f, 1.f)), doctest::Contains("AdamW"));
  CHECK_NOTHROW(sb::Adam(std::vector<sb::Var>{w}, sb::AdamOptions{.lr = 1.f, .weight_decay = 1.f}));  // Adam's L2 is not a decay factor
  CHECK_NOTHROW(sb::SGD(std::vector<sb::Var>{w}, sb::SGDOptions{.lr = 0.1f, .momentum = 0.99f, .weight_decay = 5.f}));
}

TEST_CASE("nonsense: a transform never picks a normalization on its own") {
  sb::ShapesOptions so;
  so.train = 2;
  so.size = 16;
  sb::ShapesDataset shapes(so, true);
  sb::Generator gen(0);
  // The default options normalize, but with whose statistics? Not ImageNet's by surprise: say which.
  sb::TransformOptions t;
  CHECK_THROWS_WITH(sb::build_transform(t), doctest::Contains("no mean and std were given"));
  CHECK_THROWS_WITH(sb::build_transform(t), doctest::Contains("kShapesMean"));
  t.mean = sb::kShapesMean, t.std = sb::kShapesStd;
  sb::Sample a = sb::build_transform(t)(shapes.get(0), gen);
  // What the command line applies to `--data shapes` is exactly that.
  sb::Sample b = sb::make_transform("shapes:train=2,size=16", sb::Split::Train, {})(shapes.get(0), gen);
  REQUIRE(a.image.numel() == b.image.numel());
  for (int64_t i = 0; i < a.image.numel(); ++i) REQUIRE(a.image.data()[i] == b.image.data()[i]);
  // No normalization at all, when asked.
  t = {};
  t.normalize = false;
  CHECK(!sb::build_transform(t));
}
