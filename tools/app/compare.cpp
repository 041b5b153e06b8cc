// The comparison sweep: plans the runs, trains each one (resumable), measures stability, and
// keeps every finished run's outcome in its own result.json.
#include "tools/app/compare.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <numeric>
#include <optional>
#include <set>

#include "core/io/fileio.h"
#include "tools/app/json_number.h"
#include "core/io/safetensors.h"
#include "core/platform.h"
#include "core/threads.h"
#include "core/distributed.h"
#include "tools/app/data_parallel.h"
#include "tools/app/precise_bn.h"
#include "tools/app/provenance.h"
#include "layers/norm/batch_norm.h"
#include "layers/norm/evo_norm.h"
#include "models/registry.h"
#include "layers/norm/norm.h"

namespace sb {

namespace fs = std::filesystem;

void CompareConfig::apply_preset() {
  SB_CHECK(preset == "quick" || preset == "full" || preset == "sync", "--preset: expected quick, full or sync, got '",
           preset, "'");
  // sync: bn against syncbn and gn with runs over 2 and 4 ranks at 2 and 1 images per rank, on the
  // quick preset's data and epochs; it needs mpirun -np 4 (oversubscribed on 2 cores).
  const bool quick = preset == "quick", sync = preset == "sync";
  if (ranks_per_run.empty()) ranks_per_run = sync ? std::vector<int64_t>{4, 2} : std::vector<int64_t>{1};
  // A bound far above any job's rank count keeps K x batch and the least common multiple of the
  // K list in range.
  for (auto k : ranks_per_run)
    SB_CHECK(k > 0 && k <= kMaxRanksPerRun, "--ranks-per-run: expected 1 to ", kMaxRanksPerRun, " ranks, got ", k);
  std::sort(ranks_per_run.begin(), ranks_per_run.end(), std::greater<>());
  if (auto twice = std::adjacent_find(ranks_per_run.begin(), ranks_per_run.end()); twice != ranks_per_run.end())
    fail("--ranks-per-run: ", *twice, " is listed twice");
  if (norms.empty()) {
    norms = quick ? std::vector<std::string>{"bn", "gn"}
                  : sync ? std::vector<std::string>{"bn", "syncbn", "gn"} : norm_kinds();
    // A run in one process: syncbn is bn there. Over several ranks per run it is an arm of its own.
    if (max_ranks_per_run() <= 1) std::erase(norms, std::string("syncbn"));
  }
  if (groups.empty()) groups = {8};
  if (batch_sizes.empty())
    batch_sizes = quick ? std::vector<int64_t>{16, 8, 4, 2}
                        : sync ? std::vector<int64_t>{2, 1} : std::vector<int64_t>{32, 16, 8, 4, 2, 1};
  if (seeds == 0) seeds = 3;
  if (epochs == 0) epochs = preset == "full" ? 16 : 12;
  if (base_width == 0) base_width = 8;
  if (base_lr == 0.f) base_lr = 0.1f;
  // Tuned on the development machine (README, "Presets and measured results"): at difficulty 1
  // or with ~150 steps at batch 16 the models still predict background everywhere, which
  // compares nothing; base_lr 0.2 at batch 16 trained worse than 0.1 for both BN and GN.
  if (data == "shapes") data = "shapes:train=1024,val=128,size=32,difficulty=0.5";
  if (warmup_epochs == 0) warmup_epochs = 1;
  SB_CHECK(!norms.empty() && !batch_sizes.empty(), "compare: nothing to run");
  for (auto& n : norms) {
    const auto& known = norm_kinds();
    SB_CHECK(std::find(known.begin(), known.end(), n) != known.end(), "--norms: unknown normalization '", n,
             "' (known: ", [&] {
               std::string k;
               for (auto& x : known) k += (k.empty() ? "" : ", ") + x;
               return k;
             }(), ")");
    SB_CHECK(std::count(norms.begin(), norms.end(), n) == 1, "--norms: '", n, "' is listed twice");
  }
  if (norm_warmup_epochs == 0) norm_warmup_epochs = std::max<double>(1, std::round(epochs / 3.0));
  SB_CHECK(norm_warmup_epochs > 0 && norm_warmup_epochs <= epochs, "--norm-warmup-epochs: expected epochs in (0, ",
           epochs, "], got ", norm_warmup_epochs);
  for (auto b : batch_sizes)
    SB_CHECK(b > 0 && b <= std::numeric_limits<int64_t>::max() / kMaxRanksPerRun, "--batch-sizes: expected 1 to ",
             std::numeric_limits<int64_t>::max() / kMaxRanksPerRun, " images, got ", b);
  for (auto g : groups) SB_CHECK(g > 0, "--groups: must be positive, got ", g);
  SB_CHECK(seeds > 0, "--seeds: must be positive, got ", seeds);
  SB_CHECK(precise_bn >= -1, "--precise-bn: the number of images must be positive, got ", precise_bn);
  SB_CHECK(epochs > 0, "--epochs: must be positive, got ", epochs);
  SB_CHECK(lr_scaling == "linear" || lr_scaling == "sqrt" || lr_scaling == "none",
           "--lr-scaling: expected linear, sqrt or none, got '", lr_scaling, "'");
  // Large batches first, as in the paper's tables.
  std::sort(batch_sizes.begin(), batch_sizes.end(), std::greater<>());
}

nlohmann::json CompareConfig::to_json() const {
  nlohmann::json j = {{"preset", preset}, {"norms", norms}, {"groups", groups}, {"batch_sizes", batch_sizes},
          {"seeds", seeds}, {"epochs", epochs}, {"data", data}, {"model", model}, {"base_width", base_width},
          {"lr_scaling", lr_scaling}, {"base_lr", json_float(base_lr)}, {"ref_batch", ref_batch}, {"optim", optim},
          {"momentum", json_float(momentum)}, {"weight_decay", json_float(weight_decay)}, {"warmup_epochs", warmup_epochs},
          {"norm_warmup_epochs", norm_warmup_epochs},
          {"limit", limit}, {"val_limit", val_limit}, {"image_size", image_size}, {"threads", threads},
          {"version", SMALLBATCH_VERSION}};
  // Absent at 1: a sweep of single-process runs keeps its compare.json as before; one K as a number.
  if (ranks_per_run.size() > 1) j["ranks_per_run"] = ranks_per_run;
  else if (max_ranks_per_run() > 1) j["ranks_per_run"] = ranks_per_run.front();
  // Absent when off: a sweep from before PreciseBN keeps its compare.json as it was.
  if (precise_bn_images() > 0) j["precise_bn"] = precise_bn_images();
  return j;
}

std::string RunSpec::label() const {
  return str(norm.kind, group_sweep ? str("(G=", norm.groups, ")") : "", rank_sweep ? str("(K=", ranks, ")") : "");
}

std::string RunSpec::dir_name() const {
  std::string n = norm.kind;
  for (char& c : n)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return str(n, norm.groups > 0 ? str("_g", norm.groups) : "", rank_sweep ? str("_k", ranks) : "", "_b", batch, "_s", seed);
}

static float scaled_lr(const CompareConfig& cfg, int64_t batch) {
  double r = static_cast<double>(batch) / static_cast<double>(cfg.ref_batch);
  if (cfg.lr_scaling == "linear") return static_cast<float>(cfg.base_lr * r);
  if (cfg.lr_scaling == "sqrt") return static_cast<float>(cfg.base_lr * std::sqrt(r));
  return cfg.base_lr;
}

std::vector<RunSpec> plan_runs(const CompareConfig& cfg) {
  std::vector<RunSpec> out;
  bool sweep = cfg.groups.size() > 1;
  const std::vector<int64_t> ks = cfg.ranks_per_run.empty() ? std::vector<int64_t>{1} : cfg.ranks_per_run;
  for (int64_t seed = 0; seed < cfg.seeds; ++seed)
    for (int64_t k : ks)
    for (int64_t b : cfg.batch_sizes)
      for (const auto& norm : cfg.norms) {
        const bool gn = norm_info(norm).traits.uses_groups;
        std::vector<int64_t> gs = gn ? cfg.groups : std::vector<int64_t>{0};
        // syncbn over one rank is bn: in a sweep over several K, not trained twice.
        if (k == 1 && ks.size() > 1 && norm_info(norm).traits.uses_sync_group) continue;
        for (int64_t g : gs) {
          RunSpec r;
          r.norm = NormSpec{norm, g, 0};
          r.group_sweep = sweep && gn;
          r.ranks = k;
          r.rank_sweep = ks.size() > 1;
          r.batch = b;
          r.seed = seed;
          r.lr = scaled_lr(cfg, b * k);  // the optimization batch
          out.push_back(r);
        }
      }
  return out;
}

int64_t count_loss_spikes(const std::vector<float>& losses, int64_t batch) {
  // Per-step losses of small batches are noisy by nature (one hard image doubles a batch-2
  // loss), so steps are grouped into stretches of about 32 images and the stretches compared.
  const size_t per = static_cast<size_t>(std::max<int64_t>(1, (32 + batch - 1) / std::max<int64_t>(1, batch)));
  std::vector<double> stretch;
  for (size_t i = 0; i + per <= losses.size(); i += per) {
    double s = 0;
    for (size_t k = 0; k < per; ++k) s += losses[i + k];
    stretch.push_back(s / static_cast<double>(per));
  }
  const size_t window = 10;
  int64_t spikes = 0;
  std::vector<double> buf;
  for (size_t i = window; i < stretch.size(); ++i) {
    buf.assign(stretch.begin() + (i - window), stretch.begin() + i);
    std::nth_element(buf.begin(), buf.begin() + window / 2, buf.end());
    if (!(stretch[i] <= 1.5 * buf[window / 2])) ++spikes;  // NaN counts as a spike
  }
  return spikes;
}

static double percentile(std::vector<float> v, double q) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * (v.size() - 1) + 0.5))];
}

static nlohmann::json num(double v) { return std::isnan(v) ? nlohmann::json(nullptr) : nlohmann::json(v); }
static double num_of(const nlohmann::json& j, const char* k) {
  return !j.contains(k) || j.at(k).is_null() ? NAN : j.at(k).get<double>();
}

nlohmann::json RunOutcome::to_json() const {
  nlohmann::json ep = nlohmann::json::array();
  for (auto& e : epochs)
    ep.push_back({{"epoch", e.epoch}, {"step", e.step}, {"lr", e.lr}, {"train_loss", num(e.train_loss)},
                  {"val_loss", num(e.val_loss)}, {"val_pixel_acc", num(e.val_pixel_acc)},
                  {"val_miou", num(e.val_miou)}, {"empty_batches", e.empty_batches}, {"seconds", e.seconds},
                  {"images_per_s", e.images_per_s}});
  nlohmann::json g = nlohmann::json::array();
  for (auto& l : gaps) g.push_back({{"layer", l.layer}, {"mean_shift", l.mean_shift}, {"log_var_ratio", l.log_var_ratio}});
  nlohmann::json j = {{"norm", spec.norm.kind}, {"groups", spec.norm.groups}, {"group_sweep", spec.group_sweep}, {"batch", spec.batch}, {"seed", spec.seed}, {"lr", json_float(spec.lr)},
          {"diverged", diverged}, {"note", note}, {"epochs", ep}, {"final_miou", num(final_miou)},
          {"best_miou", num(best_miou)}, {"batchstat_miou", num(batchstat_miou)},
          {"precise_miou", num(precise_miou)}, {"first_loss", num(first_loss)},
          {"last_loss", num(last_loss)}, {"loss_spikes", loss_spikes}, {"empty_batches", empty_batches}, {"grad_norm_median", num(grad_norm_median)},
          {"grad_norm_p90", num(grad_norm_p90)}, {"grad_norm_max", num(grad_norm_max)}, {"bn_gaps", g},
          {"seconds", seconds}, {"host", host}, {"rank", rank}};
  // Only for runs over several ranks: a one-process sweep's result.json stays as it was.
  if (spec.ranks > 1) {
    j["ranks"] = spec.ranks, j["rank_sweep"] = spec.rank_sweep;
    j["step_ms"] = num(step_ms), j["syncbn_comm_ms"] = num(syncbn_comm_ms), j["allreduce_wait_ms"] = num(allreduce_wait_ms);
  }
  return j;
}

RunOutcome RunOutcome::from_json(const nlohmann::json& j) {
  RunOutcome o;
  o.spec.norm.kind = j.at("norm");
  o.spec.norm.groups = j.at("groups");
  o.spec.batch = j.at("batch");
  o.spec.seed = j.at("seed");
  o.spec.lr = j.at("lr");
  o.spec.group_sweep = j.value("group_sweep", false);
  o.spec.ranks = j.value("ranks", int64_t{1});
  o.spec.rank_sweep = j.value("rank_sweep", false);
  o.step_ms = num_of(j, "step_ms"), o.syncbn_comm_ms = num_of(j, "syncbn_comm_ms");
  o.allreduce_wait_ms = num_of(j, "allreduce_wait_ms");
  o.diverged = j.at("diverged");
  o.note = j.at("note");
  for (auto& e : j.at("epochs")) {
    EpochRecord r;
    r.epoch = e.at("epoch"), r.step = e.at("step"), r.lr = e.at("lr");
    r.train_loss = num_of(e, "train_loss"), r.val_loss = num_of(e, "val_loss");
    r.val_pixel_acc = num_of(e, "val_pixel_acc"), r.val_miou = num_of(e, "val_miou");
    r.seconds = e.at("seconds"), r.images_per_s = e.at("images_per_s");
    r.empty_batches = e.value("empty_batches", int64_t{0});
    o.epochs.push_back(r);
  }
  o.final_miou = num_of(j, "final_miou"), o.best_miou = num_of(j, "best_miou");
  o.batchstat_miou = num_of(j, "batchstat_miou");
  o.precise_miou = num_of(j, "precise_miou");  // absent in runs from before PreciseBN: NaN
  o.first_loss = num_of(j, "first_loss"), o.last_loss = num_of(j, "last_loss");
  o.loss_spikes = j.at("loss_spikes");
  o.empty_batches = j.value("empty_batches", int64_t{0});
  o.grad_norm_median = num_of(j, "grad_norm_median"), o.grad_norm_p90 = num_of(j, "grad_norm_p90");
  o.grad_norm_max = num_of(j, "grad_norm_max");
  for (auto& g : j.at("bn_gaps")) o.gaps.push_back({g.at("layer"), g.at("mean_shift"), g.at("log_var_ratio")});
  o.seconds = j.at("seconds");
  o.host = j.value("host", std::string());  // absent in runs from before it was recorded
  o.rank = j.value("rank", int64_t{0});
  return o;
}

// Saves the initial weights for a seed once; every run of that seed starts from them, so runs
// differ only in their normalization layers (and batch size).
static std::string init_for_seed(const CompareConfig& cfg, int64_t classes, int64_t seed) {
  std::string path = str(cfg.out, "/init/seed", seed, ".safetensors");
  if (fs::exists(path)) return path;
  fs::create_directories(cfg.out + "/init");
  manual_seed(static_cast<uint64_t>(seed));
  ModelOptions o;
  o.norm.kind = "none";  // convs with biases: a superset of every norm kind's conv parameters
  o.classes = classes;
  o.base_width = cfg.base_width;
  ModulePtr m = make_model(cfg.model, o);
  TensorFile f = m->state_dict();
  save_safetensors(path, f);
  return path;
}

// The train/test-gap diagnostic of one BN-family layer: how far its batch statistics are from
// its running ones, summed over the batches it observes (means are taken at the end).
struct GapObserver : BatchNormObserver {
  double mean_shift_sum = 0;  // per batch: mean over channels of |mu_batch - mu_run| / sigma_run
  double log_var_sum = 0;     // per batch: mean over channels of |log(var_batch / var_run)|
  int64_t batches = 0;
  void observe(const BatchNorm2d& layer, const Tensor& x) override {
    const ChannelMoments batch = channel_moments(x);
    const Tensor &rm = layer.running.mean, &rv = layer.running.var;
    const float eps = layer.config().eps;
    const int64_t C = rm.numel();
    double shift = 0, logvar = 0;
    for (int64_t c = 0; c < C; ++c) {
      shift += std::fabs(batch.mean[c] - rm[c]) / std::sqrt(rv[c] + eps);
      logvar += std::fabs(std::log((batch.var[c] + eps) / (rv[c] + eps)));
    }
    mean_shift_sum += shift / C;
    log_var_sum += logvar / C;
    ++batches;
  }
};

// Per-run measurements after training: BN's batch-statistics evaluation, the BN layer gaps,
// and the first validation predictions (for the overlay figure).
// Last, PreciseBN: the running statistics recomputed over `precise_images` training images (with
// the eval transform `train_tf`, in batches of the training batch size), and the mIoU with them.
// It changes the model's buffers, so it comes after everything that reads the running statistics;
// the run's saved weights keep the running statistics training left.
static void measure_after(RunOutcome& o, Module& model, const Dataset& val, const SampleTransform& tf,
                          const std::string& dir, const Dataset& train, const SampleTransform& train_tf,
                          int64_t precise_images) {
  bool has_bn = false;
  model.apply([&](Module& m) {
    has_bn = has_bn || dynamic_cast<BatchNorm2d*>(&m) != nullptr || dynamic_cast<EvoNorm2dB0*>(&m) != nullptr;
  });
  // The images one normalization saw in training: a rank's batch, or for syncbn all its ranks'
  // (evaluated in one process, batches that size normalize as the group did).
  const int64_t norm_batch = o.spec.batch * (norm_info(o.spec.norm.kind).traits.uses_sync_group ? o.spec.ranks : 1);
  if (has_bn) {
    o.batchstat_miou = evaluate(model, val, norm_batch, BNEval::Batch, nullptr, tf).miou;
    std::vector<std::pair<BatchNorm2d*, GapObserver>> stats;
    model.apply([&](Module& m) {
      if (auto* bn = dynamic_cast<BatchNorm2d*>(&m)) stats.push_back({bn, {}});
    });
    for (auto& [bn, st] : stats) bn->observer = &st;
    evaluate(model, val, norm_batch, BNEval::Running, nullptr, tf);
    for (auto& [bn, st] : stats) {
      bn->observer = nullptr;
      if (st.batches) o.gaps.push_back({bn->path(), st.mean_shift_sum / st.batches, st.log_var_sum / st.batches});
    }
  }
  // Predictions on the first validation images, as class indices.
  Tensor logits;
  int64_t n = std::min<int64_t>(4, val.size());
  struct Head : Dataset {
    const Dataset& d;
    int64_t n;
    Head(const Dataset& d_, int64_t n_) : d(d_), n(n_) {}
    int64_t size() const override { return n; }
    Sample get(int64_t i) const override { return d.get(i); }
    int64_t num_classes() const override { return d.num_classes(); }
    std::string describe() const override { return "head"; }
  } head(val, n);
  evaluate(model, head, n, BNEval::Running, &logits, tf);
  int64_t K = logits.size(1), HW = logits.size(2) * logits.size(3);
  IndexTensor pred = IndexTensor::empty({n, logits.size(2), logits.size(3)});
  for (int64_t b = 0; b < n; ++b)
    for (int64_t i = 0; i < HW; ++i) {
      int64_t best = 0;
      for (int64_t k = 1; k < K; ++k)
        if (logits[(b * K + k) * HW + i] > logits[(b * K + best) * HW + i]) best = k;
      pred[b * HW + i] = best;
    }
  TensorFile f;
  f.ints["pred"] = pred;
  if (world().rank() == 0) save_safetensors(dir + "/pred.safetensors", f);  // a run's rank 0 writes for it
  // Every layer with running statistics (running_stats_layers), not only BatchNorm2d's family.
  if (precise_images > 0 && precise_bn(model, train, precise_images, norm_batch, train_tf).layers > 0)
    o.precise_miou = evaluate(model, val, norm_batch, BNEval::Running, nullptr, tf).miou;
}

// A sweep killed while writing leaves temporary files beside their targets: compare.json and the
// report's files here, the initial weights in init/, each run's files in its folder. Only those
// are removed, never anything else: --out may be a folder that holds other files too.
static void remove_stale_sweep_temporaries(const CompareConfig& cfg, const std::vector<RunSpec>& plan) {
  remove_stale_temporaries(cfg.out, {DirLock::kFileName, "compare.json", "platform.json", "runs.csv", "summary.csv", "summary.md", "report.html",
                                     "fig1_miou_vs_batch.png", "fig2_val_curves.png", "fig3_bn_gap.png",
                                     "fig4_predictions.png", "fig5_miou_vs_norm_batch.png"});
  std::vector<std::string> inits;
  for (int64_t seed = 0; seed < cfg.seeds; ++seed) inits.push_back(str("seed", seed, ".safetensors"));
  remove_stale_temporaries(cfg.out + "/init", inits);
  // A finished run's train() is never called again, so its files are cleaned here too.
  std::vector<std::string> run_files = train_output_files();
  run_files.insert(run_files.end(), {"result.json", "pred.safetensors"});
  for (const RunSpec& r : plan) remove_stale_temporaries(cfg.out + "/runs/" + r.dir_name(), run_files);
}

// The flag that sets each key of compare.json, for messages.
static std::string compare_flag(const std::string& key) {
  static const std::map<std::string, std::string> flags = {
      {"preset", "--preset"}, {"epochs", "--epochs"}, {"data", "--data"}, {"model", "--model"},
      {"base_width", "--base-width"}, {"lr_scaling", "--lr-scaling"}, {"base_lr", "--lr"},
      {"ref_batch", "--ref-batch"}, {"norm_warmup_epochs", "--norm-warmup-epochs"}, {"limit", "--limit"},
      {"val_limit", "--val-limit"}, {"image_size", "--image-size"}, {"precise_bn", "--precise-bn"},
      {"ranks_per_run", "--ranks-per-run"}};
  auto it = flags.find(key);
  return it != flags.end() ? it->second : key;
}

// A sweep continued in the same --out: its axes (norms, groups, batch sizes, seeds) are the
// union of the saved ones and these, so a norm, batch size, group count or seed can be added and
// the report covers every run; what every run shares (data, epochs, learning rate, width, ...)
// must be the same, or the finished runs would not compare with the new ones. A difference there
// is refused, naming each flag with its saved and new value.
static void extend_sweep(CompareConfig& cfg, const nlohmann::json& saved, const std::function<void(const std::string&)>& log) {
  static const std::set<std::string> axes = {"norms", "groups", "batch_sizes", "seeds", "threads", "version"};
  nlohmann::json now = cfg.to_json();
  std::string refused;
  for (auto& [k, v] : now.items()) {
    if (axes.count(k)) continue;
    if (!saved.contains(k)) refused += str("\n  ", compare_flag(k), ": not in the saved sweep, now ", setting_text(v));
    else if (!same_setting(saved[k], v))
      refused += str("\n  ", compare_flag(k), ": saved ", setting_text(saved[k]), ", now ", setting_text(v));
  }
  for (auto& [k, v] : saved.items())
    if (!axes.count(k) && !now.contains(k)) refused += str("\n  ", compare_flag(k), ": saved ", setting_text(v), ", now not set");
  SB_CHECK(refused.empty(), "compare: ", cfg.out, " holds a sweep whose shared configuration differs from this one:",
           refused, "\nA sweep can be extended with more --norms, --batch-sizes, --groups or --seeds, and its finished "
           "runs are reused; a change to what every run shares needs another --out.");
  std::vector<std::string> added;
  try {
    std::vector<std::string> norms = saved.at("norms");
    for (const std::string& n : cfg.norms)
      if (std::find(norms.begin(), norms.end(), n) == norms.end()) norms.push_back(n), added.push_back("norm " + n);
    std::vector<int64_t> groups = saved.at("groups");
    for (int64_t g : cfg.groups)
      if (std::find(groups.begin(), groups.end(), g) == groups.end()) groups.push_back(g), added.push_back(str("groups ", g));
    std::vector<int64_t> batches = saved.at("batch_sizes");
    for (int64_t b : cfg.batch_sizes)
      if (std::find(batches.begin(), batches.end(), b) == batches.end()) batches.push_back(b), added.push_back(str("batch ", b));
    std::sort(batches.begin(), batches.end(), std::greater<>());
    const int64_t seeds = saved.at("seeds");
    if (cfg.seeds > seeds) added.push_back(str("seeds ", seeds, " to ", cfg.seeds));
    cfg.norms = norms, cfg.groups = groups, cfg.batch_sizes = batches, cfg.seeds = std::max(seeds, cfg.seeds);
    if (saved.contains("threads") && saved.at("threads") != now.at("threads"))
      log(str("threads: ", cfg.threads, " (the sweep's earlier sessions used ", saved.at("threads").dump(),
              "; the results do not depend on it)"));
  } catch (const nlohmann::json::exception& e) {
    fail(cfg.out, "/compare.json: the saved sweep's norms, groups, batch sizes or seeds are malformed (", e.what(), ")");
  }
  if (!added.empty()) {
    std::string list;
    for (const std::string& a : added) list += (list.empty() ? "" : ", ") + a;
    log(str("extending the sweep in ", cfg.out, " with ", list, "; its finished runs are reused"));
  }
}

double background_only_miou(const Dataset& val, const SampleTransform& tf) {
  std::vector<int64_t> counts(static_cast<size_t>(std::max<int64_t>(1, val.num_classes())), 0);
  int64_t labelled = 0;
  Generator gen(0);
  for (int64_t i = 0; i < val.size(); ++i) {
    Sample s = val.get(i);
    if (tf) s = tf(std::move(s), gen);
    for (int64_t k : s.mask)
      if (k >= 0 && k < static_cast<int64_t>(counts.size())) ++counts[static_cast<size_t>(k)], ++labelled;
  }
  if (labelled == 0) return NAN;
  int64_t present = 0;
  for (size_t k = 0; k < counts.size(); ++k) present += counts[k] > 0 || k == 0;
  return static_cast<double>(counts[0]) / static_cast<double>(labelled) / static_cast<double>(present);
}

// Runs spread over ranks: their relative cost and their assignment.

// The time of a run per batch size, relative to batch 8, measured where the table serves: two
// ranks training at once on this project's 2-core VM, the full preset's runs (16 epochs, bn and
// gn, 1 thread each; docs/PERFORMANCE.md, "compare over MPI"). Every run sees the same images, so
// only the cost per image changes: batch 32 and 16 leave the caches the two ranks share, batch 1
// pays a step's fixed overhead on every image. A fixed table, not a calibration at start: every
// rank and every session deals the runs the same way, and nothing is measured on a loaded machine
// at the worst moment. Batch sizes between the entries are interpolated in log2(batch); beyond
// the ends, the end's value.
static constexpr std::pair<int64_t, double> kRelativeRunCost[] = {
    {1, 0.99}, {2, 0.84}, {4, 0.81}, {8, 1.00}, {16, 1.22}, {32, 1.53}};

double relative_run_cost(int64_t batch) {
  const auto* first = std::begin(kRelativeRunCost);
  const auto* last = std::end(kRelativeRunCost) - 1;
  if (batch <= first->first) return first->second;
  if (batch >= last->first) return last->second;
  const auto* hi = first;
  while (hi->first < batch) ++hi;
  const auto* lo = hi - 1;
  const double t = std::log2(static_cast<double>(batch) / static_cast<double>(lo->first)) /
                   std::log2(static_cast<double>(hi->first) / static_cast<double>(lo->first));
  return lo->second + t * (hi->second - lo->second);
}

std::vector<int> assign_runs(const std::vector<double>& costs, int ranks) {
  SB_CHECK(ranks > 0, "assign_runs: ", ranks, " ranks");
  std::vector<size_t> order(costs.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return costs[a] > costs[b]; });
  std::vector<double> load(static_cast<size_t>(ranks), 0.0);
  std::vector<int> rank_of(costs.size(), 0);
  for (size_t i : order) {
    const size_t least = static_cast<size_t>(std::min_element(load.begin(), load.end()) - load.begin());
    rank_of[i] = static_cast<int>(least);
    load[least] += costs[i];
  }
  return rank_of;
}

namespace {

// What every run of the sweep shares: the data, its transforms, the class count.
struct SweepData {
  DatasetPtr train, val;
  SampleTransform val_tf, train_eval_tf;
  int64_t classes = 0;
  int64_t precise_images = 0;
  DataOptions dopt;
};

struct TrainedRun {
  RunOutcome outcome;
  bool interrupted = false;
  double seconds = 0;  // wall time, for the ETA
};

}  // namespace

// The saved sweep in --out, when there is one: its settings checked against these, its axes
// joined to these (extend_sweep), PreciseBN kept off for a sweep started without it.
static void adopt_saved_sweep(CompareConfig& cfg, const std::function<void(const std::string&)>& log) {
  const std::string cfg_path = cfg.out + "/compare.json";
  if (!fs::exists(cfg_path)) return;
  nlohmann::json saved;
  try {
    saved = nlohmann::json::parse(read_file(cfg_path));
  } catch (const nlohmann::json::exception& e) {
    fail(cfg_path, ": not valid JSON (", e.what(), ")");
  }
  if (saved.is_object() && !saved.contains("precise_bn")) {
    // Started before PreciseBN existed (or without it): continue it as it was, or refuse an
    // explicit --precise-bn, which its finished runs could not show.
    SB_CHECK(cfg.precise_bn <= 0, "compare: ", cfg.out, " holds a sweep started without PreciseBN; continue it "
             "without --precise-bn, or give another --out");
    if (cfg.precise_bn == 0) log("this sweep was started without PreciseBN; continuing it without");
    cfg.precise_bn = -1;
  }
  extend_sweep(cfg, saved, log);
  log(str("continuing the sweep in ", cfg.out));
}

static SweepData open_sweep_data(const CompareConfig& cfg, const std::function<void(const std::string&)>& log) {
  SweepData d;
  d.dopt.limit = cfg.limit;
  d.dopt.image_size = cfg.image_size;
  d.train = open_dataset(cfg.data, Split::Train, 0, d.dopt);
  d.classes = d.train->num_classes();
  DataOptions vopt = d.dopt;
  vopt.limit = cfg.val_limit;
  d.val = open_dataset(cfg.data, Split::Val, d.classes, vopt);
  d.val_tf = make_transform(cfg.data, Split::Val, vopt);
  // PreciseBN's images: training images with the evaluation transform (no augmentation).
  d.train_eval_tf = make_transform(cfg.data, Split::Val, d.dopt);
  d.precise_images = cfg.precise_bn_images();
  if (d.precise_images > d.train->size()) {
    if (cfg.precise_bn > 0)
      log(str("PreciseBN: ", d.precise_images, " images asked but the training set has ", d.train->size(),
              "; using all ", d.train->size()));
    d.precise_images = d.train->size();
  }
  return d;
}

static std::string run_dir(const CompareConfig& cfg, const RunSpec& spec) { return cfg.out + "/runs/" + spec.dir_name(); }

static TrainConfig run_train_config(const CompareConfig& cfg, const SweepData& d, const RunSpec& spec) {
  TrainConfig tc;
  tc.spec.model = cfg.model;
  tc.spec.options.norm = spec.norm;
  if (tc.spec.options.norm.groups == 0) tc.spec.options.norm.groups = 8;  // unused, as the flag's default
  tc.spec.options.classes = d.classes;
  tc.spec.options.base_width = cfg.base_width;
  tc.data = cfg.data;
  tc.data_opt = d.dopt;
  tc.val_limit = cfg.val_limit;
  tc.batch = spec.batch;
  tc.val_batch = 16;
  tc.epochs = cfg.epochs;
  tc.optim = cfg.optim;
  tc.lr = spec.lr;
  tc.momentum = cfg.momentum;
  tc.weight_decay = cfg.weight_decay;
  tc.schedule = "cosine";
  const int64_t global_batch = spec.batch * spec.ranks;
  int64_t steps_per_epoch = (d.train->size() + global_batch - 1) / global_batch;
  tc.warmup_steps = static_cast<int64_t>(std::llround(cfg.warmup_epochs * steps_per_epoch));
  if (norm_info(spec.norm.kind).traits.uses_warmup)
    tc.spec.options.norm.warmup = std::max<int64_t>(1, std::llround(cfg.norm_warmup_epochs * steps_per_epoch));
  tc.seed = static_cast<uint64_t>(spec.seed);
  tc.threads = num_threads();
  tc.init = init_for_seed(cfg, d.classes, spec.seed);
  tc.init_strict = false;
  tc.out = run_dir(cfg, spec);
  return tc;
}

// A finished run's outcome, or nothing when it has no result.json or an unreadable one (then it
// is trained again). A finished run is reused when its own configuration is this run's (the
// shared settings were checked before; this catches a folder from elsewhere): else refused.
static std::optional<RunOutcome> finished_run(const RunSpec& spec, const TrainConfig& tc,
                                              const std::function<void(const std::string&)>& log) {
  const std::string& dir = tc.out;
  const std::string result_path = dir + "/result.json";
  if (!fs::exists(result_path)) return std::nullopt;
  // Its starting weights' path and thread count may differ: neither changes the result.
  if (fs::exists(dir + "/config.json")) {
    nlohmann::json mine = tc.to_json(), theirs;
    // The ranks the run trains on, as its config.json records them, whichever ranks read it now.
    mine.erase("ranks");
    if (spec.ranks > 1) mine["ranks"] = spec.ranks;
    try {
      theirs = nlohmann::json::parse(read_file(dir + "/config.json"));
    } catch (const std::exception& e) {
      fail(dir, "/config.json: not valid JSON (", e.what(), "); move the run away to train it again");
    }
    mine.erase("init"), mine.erase("threads"), theirs.erase("init"), theirs.erase("threads");
    mine.erase("conv3x3"), theirs.erase("conv3x3");  // the last bits only, as the thread count
    ResumeDifferences d = resume_differences(theirs, mine);
    std::string diff;
    for (const std::string& t : d.refused_text) diff += "\n  " + t;
    for (const std::string& t : d.allowed_text) diff += "\n  " + t;
    SB_CHECK(diff.empty(), "compare: the finished run ", dir, " was trained with other settings than this "
             "sweep gives it:", diff, "\nMove that folder away to train it again, or use another --out.");
  }
  try {
    RunOutcome done = RunOutcome::from_json(nlohmann::json::parse(read_file(result_path)));
    done.spec.group_sweep = spec.group_sweep;  // a sweep extended with more --groups labels its G
    done.spec.ranks = spec.ranks, done.spec.rank_sweep = spec.rank_sweep;
    return done;
  } catch (const std::exception& e) {
    log(str(result_path, " is unreadable (", e.what(), "); running it again"));
    return std::nullopt;
  }
}

// Trains one run (continuing it when an earlier session was interrupted in it), measures it and
// saves its result.json, unless interrupted.
// This machine's name, for runs.csv's host column ("unknown" if the system will not say).
static std::string host_name() {
  char name[256] = {};
  return ::gethostname(name, sizeof name - 1) == 0 && name[0] ? std::string(name) : std::string("unknown");
}

// `job_rank`: the rank of the whole job that writes the run (provenance only).
static TrainedRun train_run(TrainConfig tc, const RunSpec& spec, const SweepData& d, const CompareHooks& hooks,
                            int64_t job_rank) {
  const std::string dir = tc.out;
  tc.resume = true;  // a run interrupted mid-way continues from its last saved state
  TrainHooks th;
  th.should_stop = hooks.should_stop;
  th.on_step = hooks.on_step;
  TrainedRun run;
  RunOutcome& o = run.outcome;
  o.spec = spec;
  o.host = host_name();
  o.rank = job_rank;
  auto r0 = std::chrono::steady_clock::now();
  ModulePtr model;
  TrainResult tr;
  try {
    tr = train(tc, &model, th);
  } catch (const Diverged& e) {
    o.diverged = true;
    o.note = e.what();
  }
  if (tr.interrupted) {
    run.interrupted = true;
    return run;
  }
  run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - r0).count();
  o.seconds = tr.seconds;
  if (spec.ranks > 1 && tr.session_steps > 0) {
    const double per_step_ms = 1e3 / static_cast<double>(tr.session_steps);
    o.step_ms = tr.step_seconds * per_step_ms;
    o.syncbn_comm_ms = tr.syncbn_comm_seconds * per_step_ms;
    o.allreduce_wait_ms = tr.allreduce_wait_seconds * per_step_ms;
  }
  o.epochs = tr.epochs;
  if (!o.diverged) {
    o.final_miou = tr.epochs.empty() ? NAN : tr.epochs.back().val_miou;
    o.best_miou = tr.best_miou;
    o.empty_batches = tr.empty_batches;
    // The steps that learned: a batch without a labelled pixel was skipped (its loss is NaN).
    std::vector<float> losses, grad_norms;
    for (size_t s = 0; s < tr.losses.size(); ++s)
      if (!std::isnan(tr.losses[s])) losses.push_back(tr.losses[s]), grad_norms.push_back(tr.grad_norms[s]);
    size_t n = losses.size(), k = std::max<size_t>(1, n / 20);
    double a = 0, b = 0;
    for (size_t s = 0; s < k && s < n; ++s) a += losses[s], b += losses[n - 1 - s];
    o.first_loss = n ? a / k : NAN;
    o.last_loss = n ? b / k : NAN;
    if (n == 0) {
      o.diverged = true;
      o.note = "no training batch had a labelled pixel (every mask is 255, ignore)";
    } else if (!(o.last_loss < o.first_loss)) {
      o.diverged = true;
      o.note = str("the loss ended higher than it began (", o.last_loss, " vs ", o.first_loss, ")");
    }
    o.loss_spikes = count_loss_spikes(losses, spec.batch);
    o.grad_norm_median = percentile(grad_norms, 0.5);
    o.grad_norm_p90 = percentile(grad_norms, 0.9);
    o.grad_norm_max = percentile(grad_norms, 1.0);
    measure_after(o, *model, *d.val, d.val_tf, dir, *d.train, d.train_eval_tf, d.precise_images);
  }
  if (world().rank() == 0) {  // a run over several ranks: its rank 0 writes for it, as train does
    fs::create_directories(dir);
    write_file_atomic(dir + "/result.json", o.to_json().dump(1) + "\n");
  }
  return run;
}

static std::string outcome_text(const TrainedRun& run) {
  const RunOutcome& o = run.outcome;
  return str("        final val mIoU ", std::isnan(o.final_miou) ? std::string("-") : str(o.final_miou),
             o.diverged ? "  DIVERGED: " + o.note : std::string(), "  (", static_cast<int>(run.seconds), " s)");
}

// This rank's share of a sweep spread over the ranks of `comm`: rank 0 says which runs are
// finished, every rank deals the unfinished ones the same way (assign_runs) and trains its own.
// Runs over K ranks each (--ranks-per-run) go to groups of K consecutive ranks, one K after
// another (largest first), each run data-parallel over its group's communicator; runs of one rank
// are trained in a single process (the caller made world() this process alone). Returns whether
// any rank was interrupted; every rank has finished its runs by then. Rank 0 calls
// `before_training` once when there is a run to train.
static bool train_my_share(Communicator& comm, const CompareConfig& cfg, const SweepData& d,
                           const std::vector<RunSpec>& plan, const CompareHooks& hooks,
                           const std::function<void(const std::string&)>& log,
                           const std::function<void()>& before_training) {
  // Rank 0 alone reads the finished runs (refusing a folder from another configuration) before
  // any rank trains, so every rank deals the same unfinished runs.
  std::vector<char> unfinished(plan.size(), 0);
  if (comm.rank() == 0) {
    for (size_t i = 0; i < plan.size(); ++i)
      unfinished[i] = !finished_run(plan[i], run_train_config(cfg, d, plan[i]), log).has_value();
    if (std::count(unfinished.begin(), unfinished.end(), 1) > 0) before_training();
  }
  if (!plan.empty()) comm.broadcast(unfinished.data(), static_cast<int64_t>(unfinished.size()), 0);
  for (const int64_t k : cfg.ranks_per_run) {
    std::vector<size_t> todo;
    std::vector<double> costs;
    for (size_t i = 0; i < plan.size(); ++i)
      if (unfinished[i] && plan[i].ranks == k) todo.push_back(i), costs.push_back(relative_run_cost(plan[i].batch));
    const int per_run = static_cast<int>(k);
    const int groups = comm.size() / per_run, my_group = comm.rank() / per_run;
    std::shared_ptr<Communicator> run_comm =
        per_run > 1 ? comm.split(per_run) : std::static_pointer_cast<Communicator>(std::make_shared<SingleProcess>());
    const std::vector<int> rank_of = assign_runs(costs, groups);
    std::vector<double> load(static_cast<size_t>(groups), 0.0);
    std::vector<int> count(static_cast<size_t>(groups), 0);
    for (size_t n = 0; n < todo.size(); ++n)
      load[static_cast<size_t>(rank_of[n])] += costs[n], ++count[static_cast<size_t>(rank_of[n])];
    std::string per_group;
    for (int g = 0; g < groups; ++g) per_group += str(g ? ", " : "", count[static_cast<size_t>(g)]);
    const double total = std::accumulate(load.begin(), load.end(), 0.0);
    const double longest = *std::max_element(load.begin(), load.end());
    const std::string unit = per_run > 1 ? str("group of ", per_run, " ranks") : std::string("rank");
    log(str(todo.size(), " of ", plan.size(), " runs to train", cfg.ranks_per_run.size() > 1 ? str(" over ", k, " ranks each") : "",
            ", spread over ", comm.size(), " ranks (runs per ", unit, ": ", per_group, "; the busiest ",
            per_run > 1 ? std::string("group") : unit, "'s estimated load is ",
            std::round(1000 * (total > 0 ? longest / (total / groups) : 1.0)) / 1000, "x the mean)"));
    // Longest first on each group too, in the order they were dealt: the last runs to finish are short.
    std::vector<size_t> mine;
    std::vector<size_t> by_cost(todo.size());
    for (size_t n = 0; n < todo.size(); ++n) by_cost[n] = n;
    std::stable_sort(by_cost.begin(), by_cost.end(), [&](size_t a, size_t b) { return costs[a] > costs[b]; });
    for (size_t n : by_cost)
      if (rank_of[n] == my_group) mine.push_back(todo[n]);
    double interrupted = 0;
    for (size_t n = 0; n < mine.size(); ++n) {
      const RunSpec& spec = plan[mine[n]];
      log(str("[rank ", comm.rank(), ": run ", n + 1, "/", mine.size(), "] ", spec.label(), " batch ", spec.batch,
              " seed ", spec.seed, " lr ", spec.lr));
      const TrainedRun run = [&] {
        WorldScope in_group(run_comm);  // the run's ranks; for K = 1 this process alone
        return train_run(run_train_config(cfg, d, spec), spec, d, hooks, comm.rank());
      }();
      if (run.interrupted) {
        interrupted = 1;
        break;
      }
      log(outcome_text(run));
    }
    comm.sum(&interrupted, 1);  // also the barrier after which every run folder of this K is complete
    if (interrupted > 0) return true;
  }
  return false;
}

CompareResult run_compare(const CompareConfig& cfg_in, const CompareHooks& hooks) {
  CompareConfig cfg = cfg_in;
  cfg.apply_preset();
  auto log = [&](const std::string& m) {
    if (hooks.log) hooks.log(m);
  };
  Communicator& comm = world();
  const bool spread = comm.size() > 1;
  int64_t every_k = 1;  // the least rank count every K divides
  for (const int64_t k : cfg.ranks_per_run) every_k = std::lcm(every_k, k);
  for (const int64_t k : cfg.ranks_per_run)
    SB_CHECK(comm.size() % k == 0, "--ranks-per-run ", k, " does not divide the ", comm.size(),
             comm.size() == 1 ? " rank of this job (start it with mpirun -np R, R a multiple of "
                              : " ranks of this job (give mpirun -np a multiple of ",
             every_k, ")");
  // Every rank has read the saved sweep for its defaults (cmd_compare) before rank 0 rewrites it.
  if (spread) comm.barrier();
  // One sweep per folder at a time: a second would remove the first's live temporaries and
  // train the same runs into the same files. Held until the sweep returns; in a job of several
  // ranks, by rank 0 for the job (the others hold each run's own lock while they train it).
  DirLock lock;
  std::string cfg_path = cfg.out + "/compare.json";
  auto take_folder = [&] {
    std::error_code ec;
    SB_CHECK(!fs::exists(cfg.out) || fs::is_directory(cfg.out), "--out: '", cfg.out, "' exists and is not a directory");
    fs::create_directories(cfg.out + "/runs", ec);
    SB_CHECK(!ec, "--out: cannot create '", cfg.out, "/runs' (", ec.message(), ")");
    lock = DirLock(cfg.out, "--out");
    adopt_saved_sweep(cfg, log);
    remove_stale_sweep_temporaries(cfg, plan_runs(cfg));
    write_file_atomic(cfg_path, cfg.to_json().dump(2) + "\n");
    log(str("on ", platform_summary()));
  };
  if (!spread) {
    take_folder();
  } else {
    // Rank 0 takes the folder for the job; its refusal (locked, another configuration) ends every rank.
    std::string refused;
    if (comm.rank() == 0) try {
        take_folder();
      } catch (const std::exception& e) {
        refused = e.what();
      }
    refused = comm.broadcast_text(refused);
    if (!refused.empty()) fail(refused);
    if (comm.rank() != 0) adopt_saved_sweep(cfg, [](const std::string&) {});  // the sweep rank 0 just saved
    check_same_on_all_ranks(comm, cfg.to_json(), "sweep configuration");
  }
  auto plan = plan_runs(cfg);
  // The machine the timings come from, for the report (timings compare only between like
  // machines): written by the session that trains, before its first run, so a session that only
  // reads finished runs and redraws the report keeps the machine that trained them. Apart from
  // compare.json, which must match across sessions that may run on different machines.
  bool machine_noted = false;
  const std::function<void()> note_machine = [&] {
    if (!machine_noted) write_file_atomic(cfg.out + "/platform.json", platform_json().dump(2) + "\n");
    machine_noted = true;
  };

  const SweepData data = open_sweep_data(cfg, log);
  std::optional<WorldScope> alone;
  CompareResult result;
  auto t0 = std::chrono::steady_clock::now();
  if (spread) {
    // Every seed's starting weights exist before any rank reads them.
    if (comm.rank() == 0)
      for (int64_t seed = 0; seed < cfg.seeds; ++seed) init_for_seed(cfg, data.classes, seed);
    comm.barrier();
    // From here every run is trained, and its configuration compared with a finished one's, as in
    // a one-process sweep: world() is this process alone, and the job's collectives go through comm.
    alone.emplace(std::make_shared<SingleProcess>());
    result.interrupted = train_my_share(comm, cfg, data, plan, hooks, log, note_machine);
    // Rank 0 now reads every run as a resumed single-process sweep does, below, and reports.
    if (result.interrupted || comm.rank() != 0) {
      result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      return result;
    }
  }
  // Seconds of the runs trained in this session, per batch size: small batches take longer per
  // image, so the ETA prices each remaining run by its own batch size where one was timed.
  std::map<int64_t, std::pair<double, int>> timed;  // batch -> (seconds, runs)
  double trained_seconds = 0;
  int trained_runs = 0;
  for (size_t i = 0; i < plan.size(); ++i) {
    const RunSpec& spec = plan[i];
    const TrainConfig tc = run_train_config(cfg, data, spec);
    if (std::optional<RunOutcome> done = finished_run(spec, tc, log)) {
      result.runs.push_back(*done);
      continue;
    }
    double eta = NAN;
    if (trained_runs) {
      eta = 0;
      for (size_t k = i; k < plan.size(); ++k) {
        if (k > i && fs::exists(run_dir(cfg, plan[k]) + "/result.json")) continue;  // done
        auto it = timed.find(plan[k].batch);
        eta += it != timed.end() ? it->second.first / it->second.second : trained_seconds / trained_runs;
      }
    }
    log(str("[run ", i + 1, "/", plan.size(), "] ", spec.label(), " batch ", spec.batch, " seed ", spec.seed,
            " lr ", spec.lr, std::isnan(eta) ? std::string() : str("  (ETA ", static_cast<int>(eta / 60), "m",
            static_cast<int>(std::fmod(eta, 60.0)), "s)")));
    // In a job of several ranks, a run rank 0 finds unfinished here (its result.json vanished or
    // is unreadable) is trained again by rank 0 alone; a run of several ranks cannot be.
    SB_CHECK(spec.ranks == 1, "compare: ", run_dir(cfg, spec), " did not finish (no readable result.json); run "
             "the sweep again to train it");
    note_machine();
    const TrainedRun run = train_run(tc, spec, data, hooks, comm.rank());
    if (run.interrupted) {
      result.interrupted = true;
      break;
    }
    trained_seconds += run.seconds;
    ++trained_runs;
    timed[spec.batch].first += run.seconds;
    ++timed[spec.batch].second;
    log(outcome_text(run));
    result.runs.push_back(run.outcome);
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!result.interrupted)
    result.summary_md = write_report(cfg, result.runs, result.seconds, background_only_miou(*data.val, data.val_tf));
  return result;
}

}  // namespace sb
