// The training and evaluation loops behind `smallbatch train` and `smallbatch eval`, as a
// library so that `compare` and the tests run exactly what the command line runs.
// A run with an output directory saves its full state after every epoch (and on Ctrl-C), so
// `--resume` continues it to the same weights, bit for bit, as an uninterrupted run.
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/errors.h"
#include "datasets/dataset.h"
#include "layers/module.h"
#include "tools/app/checkpoint.h"
#include "tools/app/data_spec.h"
#include "tools/app/metrics.h"

namespace sb {

struct TrainConfig {
  ModelSpec spec;
  std::string data = "shapes";
  std::string val_data;            // empty: the validation split of `data`; "none": skip validation
  DataOptions data_opt;            // image size, augmentation, limits (train)
  int64_t val_limit = 0;
  int64_t batch = 8;
  int64_t val_batch = 16;
  int64_t steps = 0;               // exactly one of steps and epochs is positive
  int64_t epochs = 0;
  bool shuffle = true;
  std::string optim = "sgd";       // sgd | adam | adamw
  float lr = 0.01f, momentum = 0.9f, weight_decay = 0.f;
  bool decay_norm_and_bias = true; // PyTorch's default: weight decay on every parameter
  std::string schedule = "const";  // const | step | cosine | poly
  int64_t warmup_steps = 0;
  float clip_grad = 0.f;           // 0: no clipping
  uint64_t seed = 0;
  int threads = 0;                 // recorded; the caller sets the thread count
  int loader_workers = 2;
  std::string init;                // starting weights (.safetensors), optional
  bool init_strict = true;         // false: load the keys that exist in the model with the same
                                   // shape, keep the rest (compare: same convs, different norms)
  std::string save;                // final weights, optional
  std::string out;                 // output directory, optional
  bool resume = false;             // continue from out/state.safetensors
  bool overwrite = false;          // replace the run in a non-empty out (else refused)
  int64_t precise_bn = 0;          // > 0: PreciseBN over this many training images before the
                                   // last epoch's validation (so the saved weights carry them)

  // Every setting that changes the result, for config.json and for checking --resume.
  nlohmann::json to_json() const;
  // The settings of to_json() read back (the others keep their defaults); throws naming `where`.
  static TrainConfig from_json(const nlohmann::json& j, const std::string& where);
};

// The configuration of the run saved in `out`: its state's (the authority), else its config.json;
// null when there is neither (nothing to resume). Throws when the one it reads is damaged.
nlohmann::json saved_run_config(const std::string& out);

// What a resume may change in a saved configuration without changing the run: more epochs or
// steps (the run goes on further), and the thread count (the built-in models' results do not
// depend on it). Every other key of `now` that differs from `saved` is returned, in order, as
// "key: saved X, now Y" (nested keys as "model.norm"); "version" never counts.
struct ResumeDifferences {
  std::vector<std::string> refused;       // keys that may not change
  std::vector<std::string> refused_text;  // "key: saved X, now Y", per refused key
  std::vector<std::string> allowed_text;  // what changes, for the user: "--epochs 12 (was 8)"
};
ResumeDifferences resume_differences(const nlohmann::json& saved, const nlohmann::json& now);

struct StepReport {
  int64_t step, total_steps, epoch, epochs;  // step is 1-based after the update
  float loss, lr, grad_norm;
  double images_per_s, eta_seconds;
};

struct EpochRecord {
  int64_t epoch = 0, step = 0;
  double lr = 0, train_loss = 0, val_loss = NAN, val_pixel_acc = NAN, val_miou = NAN;
  double seconds = 0, images_per_s = 0;
  int64_t empty_batches = 0;  // steps whose batch had no labelled pixel (all 255): skipped
};

struct TrainResult {
  std::vector<float> losses;       // per step; NaN for a skipped batch without a labelled pixel
  std::vector<float> grad_norms;   // per step, before clipping; NaN likewise
  int64_t empty_batches = 0;       // such skipped batches, over the whole run so far
  std::vector<EpochRecord> epochs;
  double seconds = 0;
  double best_miou = NAN;
  bool interrupted = false;        // stopped early by should_stop (state saved)
  bool resumed = false;
  std::string skipped;             // --skip-bad's report for the train and val data ("" if none)
  // This session's training steps (not those of an earlier session it resumed): their count and
  // wall time, SyncBatchNorm's collectives in them, and the gradient all-reduce left after backward.
  int64_t session_steps = 0;
  double step_seconds = 0, syncbn_comm_seconds = 0, allreduce_wait_seconds = 0;
};

struct TrainHooks {
  std::function<void(const StepReport&)> on_step;
  // After each epoch's validation; the model is in eval mode.
  std::function<void(const EpochRecord&, Module& model)> on_epoch;
  // Polled after every step; true finishes the step, saves the state and returns.
  std::function<bool()> should_stop;
  // Messages for the user (resumed, started fresh, ...).
  std::function<void(const std::string&)> log;
};

// Before any work: no output may be an input (--save over --init or tensors: data), no input or
// --save may be a file the run in cfg.out writes, and every output name leaves room for its
// temporary. train() calls it; the command line also calls it before it reads a saved run.
void check_outputs(const TrainConfig& cfg);

// What train() throws when the run diverges: the loss or a gradient went non-finite, or the loss
// exploded. what() is the message for the user; compare records such a run as diverged.
struct Diverged : Error {
  Diverged(const std::string& message, int64_t step_, float loss_, std::string parameter_ = {})
      : Error(message), step(step_), loss(loss_), parameter(std::move(parameter_)) {}
  int64_t step;           // the step that diverged, 1-based
  float loss;             // its loss: not finite, or exploded (finite when a gradient was not)
  std::string parameter;  // the parameter whose gradient was not finite; "" when the loss was the sign
};

// Builds the model (seeded), loads init, trains with validation per epoch, writes out/ and
// save. Throws Diverged when the loss or a gradient goes non-finite, naming the step and the
// first layer, or when the loss explodes (100 times above both its first value and chance level,
// log K); the last good checkpoint is left as it was. Other problems throw sb::Error.
TrainResult train(const TrainConfig& cfg, ModulePtr* model_out = nullptr, const TrainHooks& hooks = {});
// The files train() writes in cfg.out: their temporaries, left by a killed session, are the ones
// the next session (or a compare sweep owning the run) removes.
const std::vector<std::string>& train_output_files();

struct EvalResult {
  double loss = 0, pixel_acc = 0, miou = 0;
  std::vector<double> class_iou;
  std::vector<int64_t> confusion;  // (K, K) row-major: true x predicted
  int64_t images = 0;
};

enum class BNEval { Running, Batch };

// Evaluates `model` in eval mode (BatchNorm with running statistics, or with batch statistics
// for BNEval::Batch, which measures BN's train/test gap). `logits_out`, when given, receives
// every logit (N, K, H, W).
EvalResult evaluate(Module& model, const Dataset& data, int64_t batch, BNEval bn = BNEval::Running,
                    Tensor* logits_out = nullptr, const SampleTransform& transform = {});

// The metrics.csv header and one row: the results only, reproducible bit for bit for a given
// seed and thread count.
std::string metrics_csv_header();
std::string metrics_csv_row(const EpochRecord& r);
// The timing.csv header and one row (cumulative seconds, images/s): wall-clock time, kept apart
// from metrics.csv because it differs from run to run.
std::string timing_csv_header();
std::string timing_csv_row(const EpochRecord& r);

}  // namespace sb
