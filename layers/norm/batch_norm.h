// BatchNorm2d with PyTorch's semantics: batch statistics in training (biased variance for the
// output, unbiased for running_var), running statistics in eval, num_batches_tracked as an
// int64 buffer, momentum = nullopt for a cumulative average. The base of the BN family.
#pragma once

#include <optional>

#include "layers/norm/ops.h"
#include "layers/module.h"

namespace sb {

class BatchNorm2d;

// Watches what BN-family layers normalize, through one hook: compare's train/test-gap
// diagnostic (tools/app) is one. observe() sees each input before it is normalized, with the
// layer's running statistics as they are then.
class BatchNormObserver {
 public:
  virtual ~BatchNormObserver() = default;
  virtual void observe(const BatchNorm2d& layer, const Tensor& x) = 0;
};

struct BatchNormConfig {
  float eps = 1e-5f;
  std::optional<float> momentum = 0.1f;  // nullopt: cumulative moving average
  bool affine = true;
  bool track_running_stats = true;
  Activation activation = Activation::None;  // fused: forward() returns act(batch_norm(x))
};

class BatchNorm2d : public Module {
 public:
  explicit BatchNorm2d(int64_t num_features, BatchNormConfig cfg = {});
  // Checks x, shows it to the observer, and normalizes it. The variants change normalize().
  Var forward(const Var& x) final;
  std::string name() const override { return str(kind_name(), "(", features_, ")"); }
  int64_t num_features() const { return features_; }
  const BatchNormConfig& config() const { return cfg_; }
  // The running statistics, or nullptr without them (track_running_stats = false).
  const RunningStats* running_stats() const { return running.mean.defined() ? &running : nullptr; }

  // In eval mode, normalize with the batch's statistics instead of the running ones (without
  // updating them): how `eval --bn-mode batch` measures BatchNorm's train/test gap.
  bool batch_stats_in_eval = false;
  BatchNormObserver* observer = nullptr;
  Var weight, bias;      // (C,), initialized to 1 and 0
  // Handles on the buffers running_mean and running_var ((C,), initialized to 0 and 1) and
  // num_batches_tracked (() int64), with the momentum they are updated with.
  RunningStats running;

 protected:
  // Plain BatchNorm: batch statistics in training (and in eval with batch_stats_in_eval),
  // running statistics otherwise.
  virtual Var normalize(const Var& x);
  // Normalizes with batch statistics or with the running statistics, whatever the module's
  // mode. Running statistics are updated only in training mode.
  Var normalize_with(const Var& x, bool use_batch_stats);
  virtual const char* kind_name() const { return "BatchNorm2d"; }

 private:
  int64_t features_;
  BatchNormConfig cfg_;
};

}  // namespace sb
