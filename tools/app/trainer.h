// The training and evaluation loops behind `smallbatch train` and `smallbatch eval`, as a
// library so that `compare` and the tests run exactly what the command line runs.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "datasets/dataset.h"
#include "layers/module.h"
#include "tools/app/checkpoint.h"
#include "tools/app/metrics.h"

namespace sb {

struct TrainConfig {
  ModelSpec spec;
  std::string data = "shapes";
  int64_t batch = 8;
  int64_t steps = 0;   // exactly one of steps and epochs is positive
  int64_t epochs = 0;
  bool shuffle = true;
  std::string optim = "sgd";  // sgd | adam | adamw
  float lr = 0.01f, momentum = 0.9f, weight_decay = 0.f;
  bool decay_norm_and_bias = true;  // PyTorch's default: weight decay on every parameter
  std::string schedule = "const";   // const | step | cosine | poly
  int64_t warmup_steps = 0;
  float clip_grad = 0.f;           // 0: no clipping
  uint64_t seed = 0;
  int threads = 0;
  int loader_workers = 2;
  std::string init;                // starting weights (.safetensors), optional
  std::string save;                // final weights, optional
};

struct StepReport {
  int64_t step, total_steps;
  float loss, lr, grad_norm;
};

struct TrainResult {
  std::vector<float> losses;       // per step
  std::vector<float> grad_norms;   // per step, before clipping
  double seconds = 0;
};

// Builds the model (seeded), loads --init, trains, saves --save. `on_step` is called after
// every optimizer step (progress display).
TrainResult train(const TrainConfig& cfg, ModulePtr* model_out = nullptr,
                  const std::function<void(const StepReport&)>& on_step = {});

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
                    Tensor* logits_out = nullptr);

}  // namespace sb
