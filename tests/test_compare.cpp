// The comparison sweep on a tiny configuration: every output is written, an interrupted sweep
// continues where it stopped and ends with the same table (and without the temporaries a killed
// one left), and bad settings are clear errors.
#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <vector>

#include <nlohmann/json.hpp>

#include "temp_dir.h"
#include "tools/app/compare.h"

using namespace sb;

namespace {
CompareConfig tiny(const std::string& out) {
  CompareConfig c;
  c.norms = {"bn", "gn"};
  c.groups = {2};
  c.batch_sizes = {4, 2};
  c.seeds = 1;
  c.epochs = 2;
  c.data = "shapes:train=12,val=6,size=16";
  c.base_width = 4;
  c.threads = 1;
  c.out = out;
  return c;
}
std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p);
  return std::string(std::istreambuf_iterator<char>(in), {});
}
}  // namespace

TEST_CASE("compare: a tiny sweep writes every output, and an interrupted sweep continues to the same table") {
  auto base = std::filesystem::temp_directory_path() / ("sb_compare_" + std::to_string(::getpid()));
  std::filesystem::remove_all(base);
  CompareConfig a = tiny((base / "a").string());
  CompareResult ra = run_compare(a);
  REQUIRE(ra.runs.size() == 4);
  for (const char* f : {"runs.csv", "summary.csv", "summary.md", "report.html", "fig1_miou_vs_batch.png",
                        "fig2_val_curves.png", "fig3_bn_gap.png", "fig4_predictions.png", "compare.json"})
    CHECK(std::filesystem::exists(base / "a" / f));
  std::string md = slurp(base / "a" / "summary.md");
  CHECK(md.find("| bn |") != std::string::npos);
  CHECK(md.find("| gn |") != std::string::npos);
  CHECK(slurp(base / "a" / "report.html").find("data:image/png;base64,") != std::string::npos);
  // A one-process sweep's summary says nothing of ranks or syncbn.
  CHECK(md.find("syncbn") == std::string::npos);
  CHECK(md.find("ranks") == std::string::npos);
  // What the timings were measured on: the CPU, the BLAS core, smallbatch's kernels, the threads.
  CHECK(md.find("Measured on: ") != std::string::npos);
  CHECK(md.find("BLAS ") != std::string::npos);
  CHECK(slurp(base / "a" / "report.html").find("<h2>Machine</h2>") != std::string::npos);
  CHECK(slurp(base / "a" / "platform.json").find("\"blas_core\"") != std::string::npos);
  {
    // A session that trains nothing (every run finished) only redraws the report: the machine
    // stays the one that trained, not the one redrawing.
    nlohmann::json p = nlohmann::json::parse(slurp(base / "a" / "platform.json"));
    p["cpu"] = "the machine that trained";
    { std::ofstream(base / "a" / "platform.json") << p.dump(2) << "\n"; }
    const std::string before = slurp(base / "a" / "platform.json");
    CHECK(run_compare(tiny((base / "a").string())).runs.size() == 4);
    CHECK(slurp(base / "a" / "platform.json") == before);
    CHECK(slurp(base / "a" / "summary.md").find("Measured on: the machine that trained") != std::string::npos);
  }
  // BN runs measured their batch-statistics evaluation and layer gaps.
  for (auto& r : ra.runs) {
    CHECK(r.epochs.size() == 2);
    if (r.spec.norm.kind == "bn" && !r.diverged) {
      CHECK_FALSE(std::isnan(r.batchstat_miou));
      CHECK_FALSE(r.gaps.empty());
    }
  }

  // Interrupt the same sweep in its second run, then run it again.
  CompareConfig b = tiny((base / "b").string());
  int polls = 0;
  CompareHooks h;
  h.should_stop = [&] { return ++polls == 5; };
  CompareResult rb1 = run_compare(b, h);
  CHECK(rb1.interrupted);
  std::string said;
  CompareHooks h2;
  h2.log = [&](const std::string& m) { said += m + "\n"; };
  CompareResult rb2 = run_compare(b, h2);
  CHECK_FALSE(rb2.interrupted);
  CHECK(said.find("continuing the sweep") != std::string::npos);
  REQUIRE(rb2.runs.size() == 4);
  for (size_t i = 0; i < 4; ++i) {
    CHECK(rb2.runs[i].final_miou == ra.runs[i].final_miou);
    CHECK(rb2.runs[i].spec.dir_name() == ra.runs[i].spec.dir_name());
  }
  // The tables agree except for the closing line with the session's duration.
  auto table = [](std::string s) { return s.substr(0, s.rfind("runs in")); };
  CHECK(table(slurp(base / "b" / "summary.md")) == table(md));

  // A different configuration in the same directory is refused.
  CompareConfig c = tiny((base / "a").string());
  c.epochs = 3;
  CHECK_THROWS_WITH_AS(run_compare(c), doctest::Contains("shared configuration differs"), Error);
  std::filesystem::remove_all(base);
}

TEST_CASE("compare: a finished sweep is extended with a seed, a batch size or a norm, and its runs are reused") {
  sbtest::TempDir t("sb_compare_extend");
  CompareConfig a = tiny(t / "s");
  a.norms = {"gn"};
  a.batch_sizes = {4};
  REQUIRE(run_compare(a).runs.size() == 1);
  const std::string first_result = slurp(t.path / "s/runs/gn_g2_b4_s0/result.json");
  // One more seed, batch size and norm: only the new runs train; the report covers all of them.
  CompareConfig b = tiny(t / "s");
  b.norms = {"bn"};
  b.batch_sizes = {2};
  b.seeds = 2;
  std::string said;
  CompareHooks h;
  h.log = [&](const std::string& m) { said += m + "\n"; };
  CompareResult rb = run_compare(b, h);
  INFO(said);
  REQUIRE(rb.runs.size() == 8);  // gn, bn x batch 4, 2 x seeds 0, 1
  CHECK(said.find("extending the sweep in " + t / "s" + " with norm bn, batch 2, seeds 1 to 2") != std::string::npos);
  size_t trained = 0;
  for (size_t p = said.find("[run "); p != std::string::npos; p = said.find("[run ", p + 1)) ++trained;
  CHECK(trained == 7);
  CHECK(slurp(t.path / "s/runs/gn_g2_b4_s0/result.json") == first_result);
  const std::string md = slurp(t.path / "s/summary.md");
  CHECK(md.find("| bn |") != std::string::npos);
  CHECK(md.find("| gn |") != std::string::npos);
  auto saved = nlohmann::json::parse(slurp(t.path / "s/compare.json"));
  CHECK(saved["norms"] == nlohmann::json({"gn", "bn"}));
  CHECK(saved["batch_sizes"] == nlohmann::json({4, 2}));
  CHECK(saved["seeds"] == 2);
  // Run again as first given: nothing to train, the same eight runs.
  said.clear();
  CHECK(run_compare(a, h).runs.size() == 8);
  CHECK(said.find("[run ") == std::string::npos);
  // A change to what every run shares is refused, naming each flag with both values.
  CompareConfig c = tiny(t / "s");
  c.epochs = 3;
  c.base_lr = 0.2f;
  CHECK_THROWS_WITH_AS(run_compare(c), doctest::Contains("--epochs: saved 2, now 3"), Error);
  CHECK_THROWS_WITH_AS(run_compare(c), doctest::Contains("--lr: saved 0.1, now 0.2"), Error);
  // No float noise in the configuration: 0.1f is written as 0.1.
  CHECK(slurp(t.path / "s/compare.json").find("\"base_lr\": 0.1,") != std::string::npos);
  CHECK(slurp(t.path / "s/compare.json").find("0000000") == std::string::npos);
  const std::string html = slurp(t.path / "s/report.html");
  const size_t conf = html.find("<h2>Configuration</h2>");
  REQUIRE(conf != std::string::npos);
  const std::string shown = html.substr(conf, html.find("</pre>", conf) - conf);
  CHECK(shown.find("\"base_lr\": 0.1,") != std::string::npos);
  CHECK(shown.find("0000000") == std::string::npos);
  // A compare.json written before, with the float's double expansion, still continues.
  std::string json = slurp(t.path / "s/compare.json");
  json.replace(json.find("\"base_lr\": 0.1,"), 15, "\"base_lr\": 0.10000000149011612,");
  std::ofstream(t.path / "s/compare.json") << json;
  said.clear();
  CHECK(run_compare(a, h).runs.size() == 8);
  CHECK(said.find("[run ") == std::string::npos);
}

TEST_CASE("compare: presets fill the sweep and bad settings are errors") {
  CompareConfig q;
  q.apply_preset();
  CHECK(q.norms == std::vector<std::string>{"bn", "gn"});
  CHECK(q.seeds >= 2);
  CHECK(q.batch_sizes.front() == 16);
  CHECK(plan_runs(q).size() == q.norms.size() * q.batch_sizes.size() * q.seeds);
  CompareConfig g;
  g.norms = {"gn"};
  g.groups = {1, 2, 4};
  g.apply_preset();
  auto plan = plan_runs(g);
  CHECK(plan.size() == 3 * g.batch_sizes.size() * g.seeds);
  CHECK(plan[1].label() == "gn(G=2)");
  // The sync preset: bn, syncbn, gn over K = 4 then 2 ranks per run, 2 and 1 images per rank.
  CompareConfig sync;
  sync.preset = "sync";
  sync.apply_preset();
  CHECK(sync.norms == std::vector<std::string>{"bn", "syncbn", "gn"});
  CHECK(sync.ranks_per_run == std::vector<int64_t>{4, 2});
  CHECK(sync.batch_sizes == std::vector<int64_t>{2, 1});
  const auto sync_plan = plan_runs(sync);
  CHECK(sync_plan.size() == 3 * 2 * 2 * sync.seeds);
  CHECK(sync_plan[0].label() == "bn(K=4)");
  CHECK(sync_plan[0].dir_name() == "bn_k4_b2_s0");
  CHECK(sync_plan[0].lr == doctest::Approx(0.1f * 8 / 16));  // the optimization batch 4 x 2
  // syncbn over one rank is bn: a K list with 1 does not train it twice.
  CompareConfig with_one;
  with_one.norms = {"bn", "syncbn"};
  with_one.ranks_per_run = {2, 1};
  with_one.apply_preset();
  for (const RunSpec& r : plan_runs(with_one)) CHECK_FALSE((r.norm.kind == "syncbn" && r.ranks == 1));
  CHECK(plan_runs(with_one).size() == 3 * with_one.batch_sizes.size() * with_one.seeds);
  // K past any job's size is refused (K x batch would overflow), and so is a K listed twice.
  CompareConfig huge_k;
  huge_k.ranks_per_run = {int64_t{1} << 40};
  CHECK_THROWS_WITH_AS(huge_k.apply_preset(), doctest::Contains("--ranks-per-run: expected 1 to 1048576 ranks"), Error);
  CompareConfig twice;
  twice.ranks_per_run = {2, 2};
  CHECK_THROWS_WITH_AS(twice.apply_preset(), doctest::Contains("--ranks-per-run: 2 is listed twice"), Error);
  CompareConfig huge_b;
  huge_b.batch_sizes = {std::numeric_limits<int64_t>::max()};
  CHECK_THROWS_WITH_AS(huge_b.apply_preset(), doctest::Contains("--batch-sizes: expected 1 to"), Error);
  CompareConfig bad;
  bad.preset = "huge";
  CHECK_THROWS_WITH_AS(bad.apply_preset(), doctest::Contains("--preset"), Error);
  CHECK(count_loss_spikes(std::vector<float>(30, 1.f), 32) == 0);
  std::vector<float> l(30, 1.f);
  l[25] = 5.f;
  CHECK(count_loss_spikes(l, 32) == 1);
  l[26] = NAN;
  CHECK(count_loss_spikes(l, 32) == 2);
  // At batch 4 a stretch is 8 steps: one step at 5 lifts its stretch's mean to 1.5, not above.
  std::vector<float> b4(160, 1.f);
  b4[100] = 5.f;
  CHECK(count_loss_spikes(b4, 4) == 0);
  b4[101] = 5.f;
  CHECK(count_loss_spikes(b4, 4) == 1);
  CHECK(count_loss_spikes(std::vector<float>(79, 1.f), 4) == 0);  // 9 whole stretches: too few to judge
}

TEST_CASE("compare: gn+ws, brn and frozenbn sweep end to end, and the BN family gets gap tables") {
  auto base = std::filesystem::temp_directory_path() / ("sb_compare_variants_" + std::to_string(::getpid()));
  std::filesystem::remove_all(base);
  CompareConfig c = tiny(base.string());
  c.norms = {"gn+ws", "brn", "frozenbn"};
  c.batch_sizes = {2};
  c.epochs = 3;
  c.norm_warmup_epochs = 1;
  CompareResult r = run_compare(c);
  REQUIRE(r.runs.size() == 3);
  for (auto& run : r.runs) {
    CAPTURE(run.spec.label());
    CHECK_FALSE(run.diverged);
    CHECK(run.epochs.size() == 3);
    bool bn_family = run.spec.norm.kind != "gn+ws";
    CHECK(std::isnan(run.batchstat_miou) != bn_family);
    CHECK(run.gaps.empty() != bn_family);
  }
  std::string md = slurp(base / "summary.md");
  for (const char* want : {"| gn+ws |", "| brn |", "| frozenbn |", "| brn gap |", "| frozenbn gap |",
                           "brn, per layer", "frozenbn, per layer", "| e1.n1 |"})
    CHECK_MESSAGE(md.find(want) != std::string::npos, want);
  CHECK(md.find("gn+ws gap") == std::string::npos);
  // frozenbn froze after one epoch (12 images / batch 2 = 6 steps): its step counter stopped there.
  auto state = slurp(base / "runs" / "frozenbn_b2_s0" / "config.json");
  CHECK(state.find("\"norm_warmup\": 6") != std::string::npos);
  std::filesystem::remove_all(base);
}

TEST_CASE("compare: a sweep removes the temporaries a killed sweep left, and nothing else") {
  namespace fs = std::filesystem;
  sbtest::TempDir dir("sb_compare_tmp");
  CompareConfig c = tiny(dir.path.string());
  c.batch_sizes = {2};
  c.epochs = 1;
  REQUIRE(run_compare(c).runs.size() == 2);
  // Beside every file the sweep wrote, the temporaries a process killed mid-write leaves, in
  // write_file_atomic's naming (NAME.tmp-PID-N) and save_safetensors' (NAME.tmp-PID-RANDOM-N):
  // planting them beside what was actually written also catches a new output file that the
  // clean-up does not know about.
  std::vector<fs::path> written, planted;
  for (auto& e : fs::recursive_directory_iterator(dir.path))
    if (e.is_regular_file()) written.push_back(e.path());
  std::map<fs::path, std::string> before;
  auto plant = [](const fs::path& p) { std::ofstream(p) << "half-written"; };
  for (auto& f : written) {
    before[f] = slurp(f);
    for (const char* suffix : {".tmp-999999-3", ".tmp-999999-123456789-0"}) {
      planted.push_back(f.string() + suffix);
      plant(planted.back());
    }
  }
  // Files that only look like temporaries: not beside a file of the sweep, or not the writers'
  // suffix.
  const fs::path run = dir.path / "runs" / "bn_b2_s0";
  std::vector<fs::path> others = {dir.path / "notes.txt", dir.path / "notes.txt.tmp-999999-1",
                                  dir.path / "runs.csv.tmp-old", run / "result.json.tmp-999999-1.bak",
                                  dir.path / "init" / "seed7.safetensors.tmp-999999-1"};
  for (auto& f : others) plant(f);
  REQUIRE(fs::exists(run / "result.json"));

  CompareResult r = run_compare(c);
  REQUIRE(r.runs.size() == 2);
  for (auto& p : planted) CHECK_MESSAGE(!fs::exists(p), p.string());
  for (auto& p : others) CHECK_MESSAGE(fs::exists(p), p.string());
  // The finished runs were skipped: their files and the initial weights are as they were.
  for (auto& [f, bytes] : before)
    if (f.parent_path() != dir.path) CHECK_MESSAGE(slurp(f) == bytes, f.string());
}

namespace {
// Two 2x2 samples with known labels: class 0 on 4 of the 7 labelled pixels, classes 1 and 2 on the rest.
struct KnownMasks : Dataset {
  int64_t size() const override { return 2; }
  Sample get(int64_t i) const override {
    Sample s{Tensor::zeros({3, 2, 2}), IndexTensor::empty({2, 2})};
    const int64_t labels[2][4] = {{0, 0, 1, 255}, {0, 2, 2, 0}};
    for (int64_t k = 0; k < 4; ++k) s.mask[k] = labels[i][k];
    return s;
  }
  int64_t num_classes() const override { return 4; }
  std::string describe() const override { return "known masks"; }
};

RunOutcome outcome(const std::string& norm, int64_t batch, int64_t seed, double miou) {
  RunOutcome o;
  o.spec.norm.kind = norm, o.spec.batch = batch, o.spec.seed = seed, o.spec.lr = 0.1f;
  o.final_miou = o.best_miou = miou;
  return o;
}
}  // namespace

TEST_CASE("compare: the background-everywhere score is class 0's share over the classes present") {
  // IoU of class 0: 4 / 7 (every labelled pixel is predicted 0); classes 1 and 2 score 0; class 3
  // is absent from the labels and never predicted, so it does not count; 255 is ignored.
  CHECK(background_only_miou(KnownMasks(), SampleTransform{}) == doctest::Approx(4.0 / 7.0 / 3.0));
}

TEST_CASE("compare: the report reads its table: reference line, a warning when nothing learned, a conclusion") {
  sbtest::TempDir dir;
  CompareConfig cfg = tiny((dir.path / "r").string());
  cfg.seeds = 2;
  std::filesystem::create_directories(cfg.out);
  std::vector<RunOutcome> runs = {outcome("bn", 4, 0, 0.40), outcome("bn", 4, 1, 0.44), outcome("gn", 4, 0, 0.41),
                                  outcome("gn", 4, 1, 0.43), outcome("bn", 2, 0, 0.20), outcome("bn", 2, 1, 0.22),
                                  outcome("gn", 2, 0, 0.45), outcome("gn", 2, 1, 0.47)};
  std::string md = write_report(cfg, runs, 1.0, 0.25);
  CHECK(md.find("Predicting background everywhere scores 25.0") != std::string::npos);
  CHECK(md.find("did not learn") == std::string::npos);
  CHECK(md.find("At 2 images per batch, gn scores 46.0 ± 1.4 and bn scores 21.0 ± 1.4 val mIoU.") != std::string::npos);
  CHECK(md.find("gn leads bn by 25.0 points, more than the two cells' spreads over seeds") != std::string::npos);
  CHECK(md.find("From 4 to 2 images per batch, bn loses 21.0; gn gains 4.0 points.") != std::string::npos);
  const std::string html = slurp(dir.path / "r" / "report.html");
  for (const char* caption : {"<b>Figure 1.</b>", "<b>Figure 2.</b>", "<b>Figure 3.</b>"})
    CHECK(html.find(caption) != std::string::npos);
  CHECK(html.find("predicting background everywhere") != std::string::npos);
  // Nothing above the floor: the report says so.
  md = write_report(cfg, runs, 1.0, 0.50);
  CHECK(md.find("No cell beats it: the models did not learn") != std::string::npos);
  // One seed: no "± 0.0", which would claim a spread nobody measured.
  cfg.seeds = 1;
  std::vector<RunOutcome> one = {outcome("bn", 4, 0, 0.40), outcome("gn", 4, 0, 0.41), outcome("bn", 2, 0, 0.20),
                                 outcome("gn", 2, 0, 0.45)};
  md = write_report(cfg, one, 1.0, 0.25);
  CHECK(md.find("± 0.0") == std::string::npos);
  CHECK(md.find("| 40.0 |") != std::string::npos);
  CHECK(md.find("one seed: no spread to compare with") != std::string::npos);
}

TEST_CASE("compare: runs are dealt to ranks once each, the same way every time, and balanced by their cost") {
  // The measured table (two ranks at once): batch 32 dearest, then 16; batch 4 cheapest, batch 1
  // above 2; interpolated between its entries and flat beyond them.
  CHECK(relative_run_cost(32) > relative_run_cost(16));
  CHECK(relative_run_cost(16) > relative_run_cost(8));
  CHECK(relative_run_cost(8) > relative_run_cost(4));
  CHECK(relative_run_cost(1) > relative_run_cost(2));
  CHECK(relative_run_cost(2) > relative_run_cost(4));
  CHECK(relative_run_cost(8) == 1.0);
  CHECK(relative_run_cost(3) > relative_run_cost(4));
  CHECK(relative_run_cost(3) < relative_run_cost(2));
  CHECK(relative_run_cost(64) == relative_run_cost(32));
  // A hand-checked case: 3, 3, 2, 2 over 3 ranks, longest first to the least loaded rank.
  CHECK(assign_runs({2, 3, 2, 3}, 3) == std::vector<int>{2, 0, 2, 1});
  CHECK(assign_runs({2, 3, 2, 3}, 1) == std::vector<int>{0, 0, 0, 0});
  CHECK(assign_runs({}, 4).empty());
  // The full preset over 16, 64 and 256 ranks.
  CompareConfig full;
  full.preset = "full";
  full.apply_preset();
  const std::vector<RunSpec> plan = plan_runs(full);
  std::vector<double> costs;
  double longest = 0, total = 0;
  for (const RunSpec& r : plan) {
    costs.push_back(relative_run_cost(r.batch));
    longest = std::max(longest, costs.back());
    total += costs.back();
  }
  for (int ranks : {2, 3, 16, 64, 256}) {
    INFO(ranks, " ranks");
    const std::vector<int> rank_of = assign_runs(costs, ranks);
    CHECK(assign_runs(costs, ranks) == rank_of);  // deterministic
    REQUIRE(rank_of.size() == costs.size());      // every run once
    std::vector<double> load(static_cast<size_t>(ranks), 0.0);
    for (size_t i = 0; i < costs.size(); ++i) {
      REQUIRE(rank_of[i] >= 0);
      REQUIRE(rank_of[i] < ranks);
      load[static_cast<size_t>(rank_of[i])] += costs[i];
    }
    // Greedy longest-first: the busiest rank ends at most one run after the least busy one
    // (Graham's bound), so its load is at most the mean plus the longest run, and never below
    // the longest run.
    const double busiest = *std::max_element(load.begin(), load.end());
    const double idlest = *std::min_element(load.begin(), load.end());
    CHECK(busiest - idlest <= longest + 1e-9);
    CHECK(busiest <= total / ranks + longest + 1e-9);
    if (ranks <= 16) CHECK(busiest <= 1.05 * total / ranks);  // many runs per rank: nearly even
  }
}
