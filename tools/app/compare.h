// `smallbatch compare`: sweeps normalization x batch size x seed, trains and evaluates each run,
// and writes the report (runs.csv, summary.csv/.md, PNG plots, report.html). Each finished run
// is saved at once, so an interrupted sweep continues where it stopped.
#pragma once

#include <algorithm>
#include <functional>
#include <string>
#include <vector>

#include <cmath>
#include <nlohmann/json.hpp>

#include "layers/norm/norm.h"

#include "tools/app/trainer.h"

namespace sb {

struct CompareConfig {
  std::string preset = "quick";
  std::vector<std::string> norms;       // norm_kinds(): bn, gn, ln, in, none, gn+ws, brn, frozenbn
  std::vector<int64_t> groups;          // GroupNorm groups; several values: a group-count sweep
  std::vector<int64_t> batch_sizes;     // images per step
  int64_t seeds = 0;
  int64_t epochs = 0;
  std::string data = "shapes";
  std::string model = "unet-s";
  int64_t base_width = 0;
  std::string lr_scaling = "linear";    // linear | sqrt | none
  float base_lr = 0.f;                  // the learning rate at ref_batch
  int64_t ref_batch = 16;
  std::string optim = "sgd";
  float momentum = 0.9f, weight_decay = 1e-4f;
  double warmup_epochs = 0;
  double norm_warmup_epochs = 0;        // brn's r_max/d_max ramp, frozenbn's warm-up (0: epochs / 3)
  int64_t limit = 0, val_limit = 0, image_size = 0;
  int threads = 0;
  // Under mpirun: each run trained data-parallel over K consecutive ranks, at batch_sizes images
  // per rank (the optimization batch is K x batch), for each K listed; {1}: each run in one process.
  // Several values (the sync preset's 2, 4) make K an axis of the sweep, run one K after another.
  std::vector<int64_t> ranks_per_run;
  static constexpr int64_t kMaxRanksPerRun = 1 << 20;
  int64_t max_ranks_per_run() const {
    return ranks_per_run.empty() ? 1 : *std::max_element(ranks_per_run.begin(), ranks_per_run.end());
  }
  std::string out = "runs/compare";
  // PreciseBN images for the BN family's third evaluation: 0 for the default (kPreciseBNDefault,
  // clamped to the training set), -1 for none (a sweep started before PreciseBN existed).
  int64_t precise_bn = 0;
  static constexpr int64_t kPreciseBNDefault = 1024;
  int64_t precise_bn_images() const { return precise_bn == 0 ? kPreciseBNDefault : std::max<int64_t>(0, precise_bn); }

  // Fills every unset field from the preset; throws on an unknown preset or bad values.
  void apply_preset();
  nlohmann::json to_json() const;
};

// One training run of the sweep.
struct RunSpec {
  // The norm passed to the model; groups 0 for norms that don't use groups (written so in
  // result.json and runs.csv), warmup set when the run starts.
  NormSpec norm{"gn", 0, 0};
  bool group_sweep = false;  // part of a group-count sweep: labelled with its G
  int64_t ranks = 1;         // the ranks the run trains over (--ranks-per-run)
  bool rank_sweep = false;   // part of a sweep over several K: labelled and named with its K
  int64_t batch = 0;         // images per rank
  int64_t seed = 0;
  float lr = 0;
  // The norm ("bn", "gn+ws", ...), "gn(G=4)" in a group sweep, "bn(K=2)" in a sweep over K.
  std::string label() const;
  std::string dir_name() const;
};

struct LayerGap {
  std::string layer;
  double mean_shift = 0;  // mean over channels of |batch mean - running mean| / running std
  double log_var_ratio = 0;  // mean over channels of |log(batch var / running var)|
};

struct RunOutcome {
  RunSpec spec;
  bool diverged = false;
  std::string note;  // why it diverged, when it did
  std::vector<EpochRecord> epochs;
  double final_miou = NAN, best_miou = NAN;
  double batchstat_miou = NAN;  // BN evaluated with batch statistics (batch = training batch)
  double precise_miou = NAN;    // BN evaluated with PreciseBN's recomputed running statistics
  double first_loss = NAN, last_loss = NAN;
  int64_t loss_spikes = 0;
  int64_t empty_batches = 0;    // batches without a labelled pixel, skipped by training
  double grad_norm_median = NAN, grad_norm_p90 = NAN, grad_norm_max = NAN;
  std::vector<LayerGap> gaps;   // BN only
  double seconds = 0;
  // Where it was trained (provenance, like the timings): the host's name and the job's rank that
  // wrote it (0 in a one-process sweep), so a slow or faulty machine can be found in runs.csv.
  std::string host;
  int64_t rank = 0;
  // A run over several ranks (spec.ranks > 1), timings of its training steps in the session that
  // finished it, in ms per step: the whole step, SyncBatchNorm's collectives in it (waiting for
  // the other ranks included; 0 for other norms), the gradient all-reduce left after backward.
  double step_ms = NAN, syncbn_comm_ms = NAN, allreduce_wait_ms = NAN;

  nlohmann::json to_json() const;
  static RunOutcome from_json(const nlohmann::json& j);
};

struct CompareHooks {
  std::function<void(const std::string&)> log;
  std::function<bool()> should_stop;  // Ctrl-C: finish the current step, save, stop
  std::function<void(const StepReport&)> on_step;  // progress of the run in training
};

struct CompareResult {
  std::vector<RunOutcome> runs;
  bool interrupted = false;
  double seconds = 0;
  std::string summary_md;  // the tables, as printed at the end
};

// Every run the configuration asks for, in execution order.
std::vector<RunSpec> plan_runs(const CompareConfig& cfg);
// Loss spikes, comparable across batch sizes: the per-step losses of `batch`-image steps are
// averaged over stretches of ceil(32 / batch) steps (about 32 images), and a spike is a stretch
// whose mean exceeds 1.5x the median of the 10 stretches before it.
int64_t count_loss_spikes(const std::vector<float>& losses, int64_t batch);

// Runs the sweep. Under an MPI launch (world() with several ranks) the unfinished runs are dealt
// to the ranks (assign_runs), each rank trains its own in a single process, and rank 0 then reads
// every run's result.json and writes the report; the other ranks return no runs.
CompareResult run_compare(const CompareConfig& cfg, const CompareHooks& hooks = {});

// The time of one run at `batch` images per step, relative to one at batch 8: a table measured
// per batch size (see compare.cpp). Only ratios between batch sizes matter.
double relative_run_cost(int64_t batch);
// Deals runs with the given costs to `ranks` ranks, longest first, each to the rank with the
// least cost so far (ties: the lower run index first, the lower rank): the same answer on every
// rank. Returns the rank of each run.
std::vector<int> assign_runs(const std::vector<double>& costs, int ranks);

// Writes runs.csv, summary.csv, summary.md, the plots and report.html from finished runs.
// background_miou: what predicting background (class 0) everywhere scores on the validation set,
// the floor a model that learned anything beats (NaN when unknown).
std::string write_report(const CompareConfig& cfg, const std::vector<RunOutcome>& runs, double seconds,
                         double background_miou = NAN);
// The mIoU (0..1) of predicting class 0 at every pixel of `val` (after `tf`): class 0's IoU is its
// share of the labelled pixels, every other class present scores 0, absent classes don't count.
double background_only_miou(const Dataset& val, const SampleTransform& tf);

}  // namespace sb
