// BatchNorm2d: the checks, the observer hook, and the choice of statistics.
#include "layers/norm/batch_norm.h"

namespace sb {

BatchNorm2d::BatchNorm2d(int64_t num_features, BatchNormConfig cfg) : features_(num_features), cfg_(cfg) {
  SB_CHECK(num_features > 0, "BatchNorm2d: num_features must be positive, got ", num_features);
  if (cfg.affine) {
    weight = register_parameter("weight", Tensor::ones({num_features}));
    bias = register_parameter("bias", Tensor::zeros({num_features}));
  }
  if (cfg.track_running_stats) {
    running.mean = register_buffer("running_mean", Tensor::zeros({num_features}));
    running.var = register_buffer("running_var", Tensor::ones({num_features}));
    running.num_batches_tracked = register_buffer("num_batches_tracked", IndexTensor::zeros({}));
    running.momentum = cfg.momentum.value_or(0.f);
    running.cumulative = !cfg.momentum.has_value();
  }
}

Var BatchNorm2d::forward(const Var& x) {
  SB_CHECK(x.dim() == 4, name(), ": expected 4-d input (N, C, H, W) but got ", x.shape());
  SB_CHECK(x.size(1) == features_, name(), ": expected ", features_, " channels but got input ", x.shape());
  if (observer && running_stats()) observer->observe(*this, x.value());
  return normalize(x);
}

Var BatchNorm2d::normalize(const Var& x) { return normalize_with(x, is_training() || batch_stats_in_eval); }

Var BatchNorm2d::normalize_with(const Var& x, bool use_batch_stats) {
  // Batch statistics in eval mode: normalize as training does, leaving the running ones alone.
  const bool frozen_buffers = use_batch_stats && !is_training();
  return batch_norm(x, frozen_buffers ? nullptr : running_stats(), weight, bias, use_batch_stats, cfg_.eps,
                    cfg_.activation);
}

}  // namespace sb
