// PreciseBN (tools/app/precise_bn.h): the recomputed running statistics are the exact mean and
// unbiased variance over the N images each BN-family layer sees, computed here directly in
// double; parameters and the other layers stay as they were; bad requests are clear errors; and
// train, eval and compare carry it end to end (--precise-bn), with the report's decomposition.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cli_util.h"
#include "core/io/safetensors.h"
#include "layers/conv2d.h"
#include "layers/norm/batch_norm.h"
#include "layers/norm/batch_renorm.h"
#include "layers/norm/evo_norm.h"
#include "layers/sequential.h"
#include "layers/simple.h"
#include "temp_dir.h"
#include "tools/app/compare.h"
#include "tools/app/precise_bn.h"
#include "tools/app/trainer.h"

using namespace sb;

namespace {

// N random images (3, H, W), values far from BN's initial running statistics (0, 1).
struct RandomImages : Dataset {
  std::vector<Tensor> images;
  RandomImages(int64_t n, int64_t h, int64_t w, uint64_t seed) {
    Generator g(seed);
    for (int64_t i = 0; i < n; ++i) {
      Tensor t = Tensor::rand({3, h, w}, g, -1.f, 3.f);
      for (int64_t k = 0; k < t.numel(); ++k) t[k] = t[k] * (1.f + float(k % 3)) + float(i % 5) * 0.3f;
      images.push_back(t);
    }
  }
  int64_t size() const override { return static_cast<int64_t>(images.size()); }
  Sample get(int64_t i) const override {
    return {images[static_cast<size_t>(i)], IndexTensor::zeros({images[0].size(1), images[0].size(2)})};
  }
  int64_t num_classes() const override { return 2; }
  std::string describe() const override { return "random images"; }
};

// Per channel mean and unbiased variance of a list of (N, C, H, W) tensors, in double.
struct Expected {
  std::vector<double> mean, var;
};
Expected exact_moments(const std::vector<Tensor>& xs) {
  const int64_t C = xs[0].size(1);
  Expected e{std::vector<double>(C, 0.0), std::vector<double>(C, 0.0)};
  double n = 0;
  for (int64_t c = 0; c < C; ++c) {
    double sum = 0;
    n = 0;
    for (const Tensor& x : xs) {
      const int64_t HW = x.size(2) * x.size(3);
      for (int64_t b = 0; b < x.size(0); ++b)
        for (int64_t i = 0; i < HW; ++i) sum += x[(b * C + c) * HW + i], n += 1;
    }
    e.mean[c] = sum / n;
    double ss = 0;
    for (const Tensor& x : xs) {
      const int64_t HW = x.size(2) * x.size(3);
      for (int64_t b = 0; b < x.size(0); ++b)
        for (int64_t i = 0; i < HW; ++i) {
          const double d = x[(b * C + c) * HW + i] - e.mean[c];
          ss += d * d;
        }
    }
    e.var[c] = ss / (n - 1);
  }
  return e;
}

// The batches PreciseBN forms: its images in its order, `batch` at a time, as (B, 3, H, W).
std::vector<Tensor> precise_batches(const RandomImages& d, int64_t images, int64_t batch) {
  std::vector<int64_t> idx = precise_bn_indices(d.size(), images);
  std::vector<Tensor> out;
  const int64_t H = d.images[0].size(1), W = d.images[0].size(2), per = 3 * H * W;
  for (size_t s = 0; s < idx.size(); s += static_cast<size_t>(batch)) {
    const int64_t n = std::min<int64_t>(batch, static_cast<int64_t>(idx.size() - s));
    Tensor t = Tensor::empty({n, 3, H, W});
    for (int64_t b = 0; b < n; ++b)
      for (int64_t k = 0; k < per; ++k) t[b * per + k] = d.images[static_cast<size_t>(idx[s + b])][k];
    out.push_back(t);
  }
  return out;
}

struct Net {
  std::shared_ptr<Sequential> model;
  std::shared_ptr<BatchNorm2d> bn1, bn2;
  std::shared_ptr<Conv2d> conv;
};

// BatchNorm2d(3) -> Conv2d(3, 4) -> BatchRenorm2d(4) -> ReLU, whose BN layers then saw a known
// stream of training batches (their running statistics are exponential averages of those).
Net make_net() {
  Net n;
  manual_seed(3);
  n.bn1 = std::make_shared<BatchNorm2d>(3);
  n.conv = std::make_shared<Conv2d>(3, 4, 3, 1, 1);
  n.bn2 = std::make_shared<BatchRenorm2d>(4);
  n.model = std::make_shared<Sequential>(std::initializer_list<ModulePtr>{n.bn1, n.conv, n.bn2, std::make_shared<ReLU>()});
  n.model->train();
  RandomImages stream(6, 5, 4, 99);
  NoGrad ng;
  for (const Tensor& x : precise_batches(stream, 6, 2)) (*n.model)(Var(x));
  return n;
}

StateDict snapshot(const Module& m) {
  StateDict sd = m.state_dict(), out;
  for (auto& [k, t] : sd.floats) out.floats[k] = t.clone();
  for (auto& [k, t] : sd.ints) out.ints[k] = t.clone();
  return out;
}

void check_exact(int64_t images, int64_t batch) {
  CAPTURE(images);
  CAPTURE(batch);
  RandomImages data(13, 5, 4, 7);
  Net net = make_net();
  const StateDict before = snapshot(*net.model);
  PreciseBNResult r = precise_bn(*net.model, data, images, batch);
  CHECK(r.layers == 2);
  CHECK(r.images == images);
  CHECK(r.batches == (images + batch - 1) / batch);

  // The expected inputs of each BN layer: bn1 sees the images; bn2 sees the convolution of bn1's
  // output, bn1 normalizing each batch with that batch's statistics (as in training).
  std::vector<Tensor> x1 = precise_batches(data, images, batch), x2;
  {
    NoGrad ng;
    Net copy = make_net();  // the same weights; its buffers are not read with batch statistics
    copy.model->eval();
    copy.bn1->batch_stats_in_eval = true;
    for (const Tensor& x : x1) x2.push_back((*copy.conv)((*copy.bn1)(Var(x))).value());
  }
  const std::pair<BatchNorm2d*, std::vector<Tensor>*> layers[] = {{net.bn1.get(), &x1}, {net.bn2.get(), &x2}};
  for (auto& [bn, xs] : layers) {
    const Expected e = exact_moments(*xs);
    for (size_t c = 0; c < e.mean.size(); ++c) {
      CAPTURE(c);
      CHECK(bn->running.mean[static_cast<int64_t>(c)] == doctest::Approx(e.mean[c]).epsilon(1e-6));
      CHECK(bn->running.var[static_cast<int64_t>(c)] == doctest::Approx(e.var[c]).epsilon(1e-6));
    }
  }
  // Only the running means and variances changed: parameters, the convolution, and
  // num_batches_tracked (training steps, read by brn's ramp) are as they were.
  const StateDict after = net.model->state_dict();
  for (auto& [k, t] : before.floats) {
    CAPTURE(k);
    const bool stat = k.find("running_") != std::string::npos;
    bool same = true;
    for (int64_t i = 0; i < t.numel(); ++i) same = same && t[i] == after.floats.at(k)[i];
    CHECK(same != stat);
  }
  for (auto& [k, t] : before.ints) CHECK(t.item() == after.ints.at(k).item());
  CHECK_FALSE(net.model->is_training());
  CHECK_FALSE(net.bn1->batch_stats_in_eval);
  CHECK(net.bn1->observer == nullptr);
}

}  // namespace

TEST_CASE("precise_bn: the running statistics become the exact mean and unbiased variance over the N images") {
  check_exact(12, 4);  // equal batches
  check_exact(10, 4);  // an unequal last batch (2 images): still exact, batches weighted by size
  check_exact(13, 1);  // batch 1, the whole set
  check_exact(5, 5);   // one batch
}

TEST_CASE("precise_bn: with equal batches the mean is PyTorch's cumulative average (momentum=None)") {
  RandomImages data(12, 5, 4, 7);
  Net net = make_net();
  precise_bn(*net.model, data, 12, 3);
  BatchNormConfig cfg;
  cfg.momentum = std::nullopt;
  BatchNorm2d cumulative(3, cfg);
  cumulative.train();
  NoGrad ng;
  for (const Tensor& x : precise_batches(data, 12, 3)) cumulative(Var(x));
  double var_gap = 0;
  for (int64_t c = 0; c < 3; ++c) {
    CHECK(net.bn1->running.mean[c] == doctest::Approx(cumulative.running.mean[c]).epsilon(1e-5));
    var_gap += std::fabs(net.bn1->running.var[c] - cumulative.running.var[c]);
  }
  // Its running_var, the mean of per-batch variances, misses the spread of the batch means.
  CHECK(var_gap > 1e-3);
}

TEST_CASE("precise_bn: every BN-family layer is found, none is a notice, and bad requests are errors") {
  std::vector<ModulePtr> family = {std::make_shared<BatchNorm2d>(3), std::make_shared<BatchRenorm2d>(3),
                                   std::make_shared<FreezingBatchNorm2d>(3, 2)};
  Sequential s;
  for (auto& m : family) s.push_back(m);
  CHECK(running_stats_layers(s).size() == 3);
  BatchNormConfig untracked;
  untracked.track_running_stats = false;
  Sequential u{std::make_shared<BatchNorm2d>(3, untracked)};
  CHECK(running_stats_layers(u).empty());

  RandomImages data(4, 5, 4, 1);
  std::vector<std::string> said;
  auto log = [&](const std::string& m) { said.push_back(m); };
  manual_seed(1);
  Sequential plain{std::make_shared<Conv2d>(3, 2, 3, 1, 1), std::make_shared<ReLU>()};
  const StateDict before = snapshot(plain);
  PreciseBNResult r = precise_bn(plain, data, 4, 2, {}, log);
  CHECK(r.layers == 0);
  REQUIRE(said.size() == 1);
  CHECK(said[0].find("no BatchNorm-family layer") != std::string::npos);
  CHECK(said[0].find('\n') == std::string::npos);
  for (auto& [k, t] : before.floats)
    for (int64_t i = 0; i < t.numel(); ++i) CHECK(t[i] == plain.state_dict().floats.at(k)[i]);

  said.clear();
  Net net = make_net();
  r = precise_bn(*net.model, data, 100, 3, {}, log);  // more than the data: clamped, said once
  CHECK(r.images == 4);
  CHECK(r.batches == 2);
  REQUIRE(said.size() == 1);
  CHECK(said[0] == "PreciseBN: 100 images asked but the training set has 4; using all 4");
  CHECK_THROWS_WITH_AS(precise_bn(*net.model, data, 0, 2), doctest::Contains("--precise-bn"), Error);
  CHECK_THROWS_WITH_AS(precise_bn(*net.model, data, -3, 2), doctest::Contains("--precise-bn"), Error);
}

// ---- the command line and the sweep ----------------------------------------------------------

namespace {
std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}
const std::string kTrain = "train --data shapes:train=8,val=4,size=16 --base-width 4 --epochs 2 --batch 4 --threads 1 ";
}  // namespace

TEST_CASE("cli: --precise-bn 0 or negative is a flag error on train, eval and compare") {
  for (std::string cmd : {"train", "eval", "compare"})
    for (std::string v : {"0", "-2"}) {
      CAPTURE(cmd);
      CAPTURE(v);
      auto r = sbtest::run_cli(cmd + " --precise-bn " + v);
      CHECK(r.code != 0);
      CHECK(r.code < 128);
      CHECK(r.all().find("--precise-bn") != std::string::npos);
    }
  auto r = sbtest::run_cli("train --precise-bn 0");
  CHECK(r.all().find("must be positive, got 0") != std::string::npos);
}

TEST_CASE("cli: train and eval --precise-bn end to end, and without the flag train's files are unchanged") {
  sbtest::TempDir t("sb_precise");
  auto plain = sbtest::run_cli(kTrain + "--norm bn --out " + (t.path / "plain").string());
  REQUIRE(plain.code == 0);
  auto again = sbtest::run_cli(kTrain + "--norm bn --out " + (t.path / "again").string());
  REQUIRE(again.code == 0);
  auto pre = sbtest::run_cli(kTrain + "--norm bn --precise-bn 6 --out " + (t.path / "pre").string());
  INFO(pre.all());
  REQUIRE(pre.code == 0);
  CHECK(pre.all().find("PreciseBN: recomputed the running statistics of") != std::string::npos);
  CHECK(plain.all().find("PreciseBN") == std::string::npos);
  // Without the flag nothing changes: config.json has no precise_bn, and two runs agree byte for byte.
  for (const char* f : {"config.json", "metrics.csv", "model.safetensors", "best.safetensors"})
    CHECK(slurp(t.path / "plain" / f) == slurp(t.path / "again" / f));
  CHECK(slurp(t.path / "plain" / "config.json").find("precise_bn") == std::string::npos);
  CHECK(nlohmann::json::parse(slurp(t.path / "pre" / "config.json"))["precise_bn"] == 6);
  // The same training: the parameters agree, the running statistics of the saved model differ.
  TensorFile a = load_safetensors((t.path / "plain" / "model.safetensors").string());
  TensorFile b = load_safetensors((t.path / "pre" / "model.safetensors").string());
  bool stats_differ = false;
  for (auto& [k, v] : a.floats) {
    bool same = true;
    for (int64_t i = 0; i < v.numel(); ++i) same = same && v[i] == b.floats.at(k)[i];
    if (k.find("running_") == std::string::npos) CHECK_MESSAGE(same, k);
    else stats_differ = stats_differ || !same;
  }
  CHECK(stats_differ);
  for (auto& [k, v] : a.ints) CHECK(v.item() == b.ints.at(k).item());
  // The first epoch's line is the same; the last one is measured with the PreciseBN statistics.
  const std::string ma = slurp(t.path / "plain" / "metrics.csv"), mb = slurp(t.path / "pre" / "metrics.csv");
  CHECK(ma.substr(0, ma.find('\n', ma.find('\n') + 1)) == mb.substr(0, mb.find('\n', mb.find('\n') + 1)));

  // eval: the same statistics again from the running-statistics checkpoint (clamped to 8 images).
  const std::string w = (t.path / "plain" / "model.safetensors").string();
  auto e = sbtest::run_cli("eval --weights " + w + " --data shapes:train=8,val=4,size=16 --batch 4 --threads 1 --json");
  auto ep = sbtest::run_cli("eval --weights " + w + " --data shapes:train=8,val=4,size=16 --batch 4 --threads 1 --json "
                            "--precise-bn 50");
  INFO(ep.all());
  REQUIRE(e.code == 0);
  REQUIRE(ep.code == 0);
  CHECK(ep.err.find("PreciseBN: 50 images asked but the training set has 8; using all 8") != std::string::npos);
  CHECK(nlohmann::json::parse(ep.out)["images"] == 4);

  // A model without BN: a one-line notice, and the same result as without the flag.
  auto g = sbtest::run_cli(kTrain + "--norm gn --groups 2 --out " + (t.path / "gn").string());
  REQUIRE(g.code == 0);
  const std::string gw = (t.path / "gn" / "model.safetensors").string();
  auto ge = sbtest::run_cli("eval --weights " + gw + " --data shapes:train=8,val=4,size=16 --batch 4 --threads 1 --json");
  auto gp = sbtest::run_cli("eval --weights " + gw + " --data shapes:train=8,val=4,size=16 --batch 4 --threads 1 --json "
                            "--precise-bn 4");
  REQUIRE(gp.code == 0);
  CHECK(gp.err == "PreciseBN: the model has no BatchNorm-family layer; nothing to recompute\n");
  CHECK(gp.out == ge.out);
}

TEST_CASE("compare: BN runs are evaluated three ways, result.json has precise_miou, the report splits the gap") {
  sbtest::TempDir t("sb_precise_cmp");
  CompareConfig c;
  c.norms = {"bn", "gn"};
  c.groups = {2};
  c.batch_sizes = {4, 2};
  c.seeds = 1;
  c.epochs = 2;
  c.data = "shapes:train=12,val=6,size=16";
  c.base_width = 4;
  c.threads = 1;
  c.out = (t.path / "a").string();
  CompareResult r = run_compare(c);  // the default: 1024 images, clamped to the 12 there are
  REQUIRE(r.runs.size() == 4);
  for (auto& run : r.runs) {
    auto j = nlohmann::json::parse(slurp(t.path / "a" / "runs" / run.spec.dir_name() / "result.json"));
    REQUIRE(j.contains("precise_miou"));
    CHECK(j["precise_miou"].is_null() == (run.spec.norm.kind == "gn"));
    CHECK(std::isnan(run.precise_miou) == (run.spec.norm.kind == "gn"));
  }
  CHECK(nlohmann::json::parse(slurp(t.path / "a" / "compare.json"))["precise_bn"] == 1024);
  const std::string md = slurp(t.path / "a" / "summary.md");
  for (const char* want : {"| bn running |", "| bn precise |", "| bn batch |", "| bn gap |", "| bn stale |",
                           "| bn adapted |", "closes"})
    CHECK_MESSAGE(md.find(want) != std::string::npos, want);
  CHECK(slurp(t.path / "a" / "report.html").find("adapted") != std::string::npos);
  CHECK(slurp(t.path / "a" / "summary.csv").find("precise_miou_mean") != std::string::npos);

  // A sweep folder from before PreciseBN (no precise_bn in compare.json, none in result.json)
  // still continues, without PreciseBN; an explicit --precise-bn there is refused clearly.
  auto cj = nlohmann::json::parse(slurp(t.path / "a" / "compare.json"));
  cj.erase("precise_bn");
  { std::ofstream(t.path / "a" / "compare.json") << cj.dump(2) << "\n"; }
  for (auto& run : r.runs) {
    auto p = t.path / "a" / "runs" / run.spec.dir_name() / "result.json";
    auto j = nlohmann::json::parse(slurp(p));
    j.erase("precise_miou");
    std::ofstream(p) << j.dump(1) << "\n";
  }
  std::string said;
  CompareHooks h;
  h.log = [&](const std::string& m) { said += m + "\n"; };
  CompareResult old = run_compare(c, h);
  CHECK(said.find("started without PreciseBN") != std::string::npos);
  REQUIRE(old.runs.size() == 4);
  for (auto& run : old.runs) CHECK(std::isnan(run.precise_miou));
  CHECK(slurp(t.path / "a" / "summary.md").find("| bn stale |") == std::string::npos);
  CHECK(slurp(t.path / "a" / "compare.json").find("precise_bn") == std::string::npos);
  c.precise_bn = 6;
  CHECK_THROWS_WITH_AS(run_compare(c), doctest::Contains("started without PreciseBN"), Error);
}

TEST_CASE("precise_bn: EvoNorm-B0's running variance becomes the exact unbiased variance of its inputs") {
  // B0 keeps a running variance only; PreciseBN replaces it, leaves its parameters alone, and a
  // model with B0 counts as one with running statistics.
  RandomImages data(9, 5, 4, 21);
  manual_seed(5);
  auto b0 = std::make_shared<EvoNorm2dB0>(3);
  auto conv = std::make_shared<Conv2d>(3, 4, 3, 1, 1);
  Sequential model({b0, conv});
  model.train();
  {
    NoGrad ng;
    for (const Tensor& x : precise_batches(data, 6, 3)) model(Var(x));  // running_var moves off 1
  }
  const Tensor v_before = b0->v.value().clone(), w_before = b0->weight.value().clone();
  PreciseBNResult r = precise_bn(model, data, 9, 2);
  CHECK(r.layers == 1);
  CHECK(r.images == 9);
  const Expected e = exact_moments(precise_batches(data, 9, 2));
  for (size_t c = 0; c < e.var.size(); ++c) {
    CAPTURE(c);
    CHECK(b0->running_var[static_cast<int64_t>(c)] == doctest::Approx(e.var[c]).epsilon(1e-6));
  }
  CHECK(std::memcmp(b0->v.value().data(), v_before.data(), 3 * sizeof(float)) == 0);
  CHECK(std::memcmp(b0->weight.value().data(), w_before.data(), 3 * sizeof(float)) == 0);
  CHECK_FALSE(b0->batch_stats_in_eval);  // restored
  CHECK(b0->observer == nullptr);
}
