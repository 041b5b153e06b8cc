// Two BatchNorm2d variants meant for small batches, with BatchNorm2d's parameters, buffers and
// state_dict keys (a PyTorch BatchNorm2d loads their weights): Batch Renormalization, and
// BatchNorm whose statistics freeze to the running ones after a warm-up.
// Both count training steps in num_batches_tracked, so a resumed run continues exactly.
#pragma once

#include <algorithm>
#include <cmath>

#include "core/ops.h"
#include "layers/batch_norm.h"

namespace sb {

struct BatchRenormConfig {
  float r_max = 3.f;            // Ioffe (2017): r is clipped to [1 / r_max, r_max] ...
  float d_max = 5.f;            // ... and d to [-d_max, d_max]
  int64_t ramp_steps = 0;       // limits grow linearly from (1, 0), plain BN, to (r_max, d_max)
                                // over this many training steps; 0: full limits from the start
};

// Batch Renormalization (Ioffe, 2017). In training, with sigma = sqrt(var + eps),
//   y = weight * ((x - mu_B) / sigma_B * r + d) + bias,
//   r = clip(sigma_B / sigma_run, 1 / r_max, r_max), d = clip((mu_B - mu_run) / sigma_run, -d_max, d_max)
// where r and d are constants for the gradient. Then the running statistics are updated as
// BatchNorm2d's are. Evaluation is BatchNorm2d's: the running statistics.
class BatchRenorm2d : public BatchNorm2d {
 public:
  BatchRenorm2d(int64_t num_features, BatchRenormConfig rcfg = {}, BatchNormConfig cfg = {})
      : BatchNorm2d(num_features, cfg), rcfg_(rcfg) {
    SB_CHECK(rcfg.r_max >= 1.f && rcfg.d_max >= 0.f && rcfg.ramp_steps >= 0,
             "BatchRenorm2d: needs r_max >= 1, d_max >= 0 and ramp_steps >= 0, got r_max=", rcfg.r_max,
             " d_max=", rcfg.d_max, " ramp_steps=", rcfg.ramp_steps);
    SB_CHECK(cfg.track_running_stats, "BatchRenorm2d: needs running statistics (track_running_stats)");
  }

  // The clipping limits at training step `step` (0-based).
  std::pair<float, float> limits(int64_t step) const {
    float t = rcfg_.ramp_steps == 0 ? 1.f : std::min(1.f, float(step) / float(rcfg_.ramp_steps));
    return {1.f + (rcfg_.r_max - 1.f) * t, rcfg_.d_max * t};
  }

  Var forward(const Var& x) override {
    if (!is_training()) return BatchNorm2d::forward(x);
    check_input(x);
    if (gap_stats) gap_stats->add(x.value(), running_mean, running_var, config().eps);
    auto [r_max, d_max] = limits(num_batches_tracked.item());
    const int64_t N = x.size(0), C = x.size(1), HW = x.numel() / (N * C);
    SB_CHECK(N * HW > 1, name(), ": training needs more than one value per channel, got input ", x.shape());
    const float eps = config().eps;
    Tensor r = Tensor::empty({C}), d = Tensor::empty({C});
    const float* px = x.value().data();
    for (int64_t c = 0; c < C; ++c) {  // the batch statistics, in double as batch_norm's
      double s = 0, ss = 0;
      for (int64_t n = 0; n < N; ++n)
        for (int64_t i = 0, o = (n * C + c) * HW; i < HW; ++i) s += px[o + i];
      const double mu = s / double(N * HW);
      for (int64_t n = 0; n < N; ++n)
        for (int64_t i = 0, o = (n * C + c) * HW; i < HW; ++i) ss += (px[o + i] - mu) * (px[o + i] - mu);
      const double sigma_b = std::sqrt(ss / double(N * HW) + eps);
      const double sigma_run = std::sqrt(double(running_var[c]) + eps);
      r[c] = float(std::clamp(sigma_b / sigma_run, 1.0 / r_max, double(r_max)));
      d[c] = float(std::clamp((mu - running_mean[c]) / sigma_run, -double(d_max), double(d_max)));
    }
    // weight * (xhat * r + d) + bias is batch_norm with scale weight * r and shift weight * d + bias.
    Var rv(r), dv(d);
    Var scale = weight.defined() ? weight * rv : rv;
    Var shift = weight.defined() ? weight * dv + bias : dv;
    return batch_norm(x, running_mean, running_var, scale, shift, true, config().momentum.value_or(0.f), eps,
                      !config().momentum.has_value(), num_batches_tracked.data());
  }
  std::string name() const override { return str("BatchRenorm2d(", num_features(), ")"); }
  const BatchRenormConfig& renorm_config() const { return rcfg_; }

 private:
  BatchRenormConfig rcfg_;
};

// BatchNorm2d for `warmup_steps` training steps, then frozen: training normalizes with the
// running statistics, which stop changing, while weight and bias keep learning. The step count
// is num_batches_tracked, which stops at warmup_steps once frozen.
class FreezingBatchNorm2d : public BatchNorm2d {
 public:
  FreezingBatchNorm2d(int64_t num_features, int64_t warmup_steps, BatchNormConfig cfg = {})
      : BatchNorm2d(num_features, cfg), warmup_steps_(warmup_steps) {
    SB_CHECK(warmup_steps >= 0, "FreezingBatchNorm2d: warmup_steps must be >= 0, got ", warmup_steps);
    SB_CHECK(cfg.track_running_stats, "FreezingBatchNorm2d: needs running statistics (track_running_stats)");
  }
  bool frozen() const { return num_batches_tracked.item() >= warmup_steps_; }
  Var forward(const Var& x) override {
    if (!is_training() || !frozen()) return BatchNorm2d::forward(x);
    check_input(x);
    if (gap_stats) gap_stats->add(x.value(), running_mean, running_var, config().eps);
    return forward_with(x, false);  // running statistics; in training mode they are not updated
  }
  std::string name() const override { return str("FreezingBatchNorm2d(", num_features(), ")"); }
  int64_t warmup_steps() const { return warmup_steps_; }

 private:
  int64_t warmup_steps_;
};

}  // namespace sb
