// BatchNorm2d with PyTorch's semantics: batch statistics in training (biased variance for the
// output, unbiased for running_var), running statistics in eval, num_batches_tracked as an
// int64 buffer, momentum = nullopt for a cumulative average.
#pragma once

#include <cmath>
#include <optional>
#include <typeinfo>

#include "core/ops_norm.h"
#include "layers/module.h"

namespace sb {

// How far a layer's batch statistics are from its running ones, accumulated over forward
// passes while BatchNorm2d::gap_stats points here (compare's train/test-gap diagnostic).
struct BNGapStats {
  double mean_shift_sum = 0;  // per batch: mean over channels of |mu_batch - mu_run| / sigma_run
  double log_var_sum = 0;     // per batch: mean over channels of |log(var_batch / var_run)|
  int64_t batches = 0;
  void add(const Tensor& x, const Tensor& running_mean, const Tensor& running_var, float eps);
};

struct BatchNormConfig {
  float eps = 1e-5f;
  std::optional<float> momentum = 0.1f;  // nullopt: cumulative moving average
  bool affine = true;
  bool track_running_stats = true;
};

class BatchNorm2d : public Module {
 public:
  explicit BatchNorm2d(int64_t num_features, BatchNormConfig cfg = {})
      : features_(num_features), cfg_(cfg) {
    SB_CHECK(num_features > 0, "BatchNorm2d: num_features must be positive, got ", num_features);
    if (cfg.affine) {
      weight = register_parameter("weight", Tensor::ones({num_features}));
      bias = register_parameter("bias", Tensor::zeros({num_features}));
    }
    if (cfg.track_running_stats) {
      running_mean = register_buffer("running_mean", Tensor::zeros({num_features}));
      running_var = register_buffer("running_var", Tensor::ones({num_features}));
      num_batches_tracked = register_buffer("num_batches_tracked", IndexTensor::zeros({}));
    }
  }
  Var forward(const Var& x) override {
    check_input(x);
    if (gap_stats && running_mean.defined()) gap_stats->add(x.value(), running_mean, running_var, cfg_.eps);
    return forward_with(x, is_training() || batch_stats_in_eval);
  }
  // Normalizes with batch statistics or with the running statistics, whatever the module's
  // mode (evaluation with --bn-mode uses it). Running statistics are updated only in training
  // mode, so measuring with batch statistics in eval mode changes nothing.
  Var forward_with(const Var& x, bool use_batch_stats) {
    if (use_batch_stats && !is_training())
      return batch_norm(x, Tensor(), Tensor(), weight, bias, true, 0.f, cfg_.eps);
    int64_t* tracked = num_batches_tracked.defined() ? num_batches_tracked.data() : nullptr;
    return batch_norm(x, running_mean, running_var, weight, bias, use_batch_stats,
                      cfg_.momentum.value_or(0.f), cfg_.eps, !cfg_.momentum.has_value(), tracked);
  }
  // forward() then ReLU as one fused op (batch_norm_relu), with forward()'s checks, statistics
  // and modes. A subclass that redefines forward() keeps the unfused default.
  Var forward_relu(const Var& x) override {
    if (typeid(*this) != typeid(BatchNorm2d)) return Module::forward_relu(x);
    SB_CHECK(x.dim() == 4, name(), ": expected 4-d input (N, C, H, W) but got ", x.shape());
    SB_CHECK(x.size(1) == features_, name(), ": expected ", features_, " channels but got input ",
             x.shape());
    if (gap_stats && running_mean.defined()) gap_stats->add(x.value(), running_mean, running_var, cfg_.eps);
    const bool use_batch_stats = is_training() || batch_stats_in_eval;  // as forward_with
    if (use_batch_stats && !is_training())
      return batch_norm_relu(x, Tensor(), Tensor(), weight, bias, true, 0.f, cfg_.eps);
    int64_t* tracked = num_batches_tracked.defined() ? num_batches_tracked.data() : nullptr;
    return batch_norm_relu(x, running_mean, running_var, weight, bias, use_batch_stats,
                           cfg_.momentum.value_or(0.f), cfg_.eps, !cfg_.momentum.has_value(), tracked);
  }
  std::string name() const override { return str("BatchNorm2d(", features_, ")"); }
  int64_t num_features() const { return features_; }
  // Throws naming the layer unless x is (N, num_features, H, W).
  void check_input(const Var& x) const {
    SB_CHECK(x.dim() == 4, name(), ": expected 4-d input (N, C, H, W) but got ", x.shape());
    SB_CHECK(x.size(1) == features_, name(), ": expected ", features_, " channels but got input ",
             x.shape());
  }
  const BatchNormConfig& config() const { return cfg_; }
  // In eval mode, normalize with the batch's statistics instead of the running ones (without
  // updating them): how `eval --bn-mode batch` measures BatchNorm's train/test gap.
  bool batch_stats_in_eval = false;
  BNGapStats* gap_stats = nullptr;
  Var weight, bias;                    // (C,), initialized to 1 and 0
  Tensor running_mean, running_var;    // (C,), initialized to 0 and 1
  IndexTensor num_batches_tracked;     // () int64

 private:
  int64_t features_;
  BatchNormConfig cfg_;
};

inline void BNGapStats::add(const Tensor& x, const Tensor& rm, const Tensor& rv, float eps) {
  int64_t N = x.size(0), C = x.size(1), HW = x.numel() / (N * C);
  double shift = 0, logvar = 0;
  for (int64_t c = 0; c < C; ++c) {
    double s = 0, ss = 0;
    for (int64_t n = 0; n < N; ++n) {
      const float* p = x.data() + (n * C + c) * HW;
      for (int64_t i = 0; i < HW; ++i) s += p[i];
    }
    double mu = s / (N * HW);
    for (int64_t n = 0; n < N; ++n) {
      const float* p = x.data() + (n * C + c) * HW;
      for (int64_t i = 0; i < HW; ++i) ss += (p[i] - mu) * (p[i] - mu);
    }
    double var = ss / (N * HW);
    shift += std::fabs(mu - rm[c]) / std::sqrt(rv[c] + eps);
    logvar += std::fabs(std::log((var + eps) / (rv[c] + eps)));
  }
  mean_shift_sum += shift / C;
  log_var_sum += logvar / C;
  ++batches;
}

}  // namespace sb
