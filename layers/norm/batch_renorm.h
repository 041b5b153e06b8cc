// Two BatchNorm2d variants meant for small batches, with BatchNorm2d's parameters, buffers and
// state_dict keys (a PyTorch BatchNorm2d loads their weights): Batch Renormalization, and
// BatchNorm whose statistics freeze to the running ones after a warm-up.
// Both count training steps in num_batches_tracked, so a resumed run continues exactly.
#pragma once

#include <algorithm>
#include <cmath>

#include "core/ops.h"
#include "layers/norm/batch_norm.h"

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

  const BatchRenormConfig& renorm_config() const { return rcfg_; }

 protected:
  Var normalize(const Var& x) override {
    if (!is_training()) return BatchNorm2d::normalize(x);
    auto [r_max, d_max] = limits(running.num_batches_tracked.item());
    const int64_t C = x.size(1);
    SB_CHECK(x.numel() / C > 1, name(), ": training needs more than one value per channel, got input ", x.shape());
    const float eps = config().eps;
    const ChannelMoments batch = channel_moments(x.value());  // as batch_norm computes them
    Tensor r = Tensor::empty({C}), d = Tensor::empty({C});
    for (int64_t c = 0; c < C; ++c) {
      const double sigma_b = std::sqrt(batch.var[c] + eps);
      const double sigma_run = std::sqrt(double(running.var[c]) + eps);
      r[c] = float(std::clamp(sigma_b / sigma_run, 1.0 / r_max, double(r_max)));
      d[c] = float(std::clamp((batch.mean[c] - running.mean[c]) / sigma_run, -double(d_max), double(d_max)));
    }
    // weight * (xhat * r + d) + bias is batch_norm with scale weight * r and shift weight * d + bias.
    Var rv(r), dv(d);
    Var scale = weight.defined() ? weight * rv : rv;
    Var shift = weight.defined() ? weight * dv + bias : dv;
    return batch_norm(x, &running, scale, shift, true, eps, config().activation);
  }
  const char* kind_name() const override { return "BatchRenorm2d"; }

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
  bool frozen() const { return running.num_batches_tracked.item() >= warmup_steps_; }
  int64_t warmup_steps() const { return warmup_steps_; }

 protected:
  Var normalize(const Var& x) override {
    if (!is_training() || !frozen()) return BatchNorm2d::normalize(x);
    return normalize_with(x, false);  // running statistics; in training mode they are not updated
  }
  const char* kind_name() const override { return "FreezingBatchNorm2d"; }

 private:
  int64_t warmup_steps_;
};

}  // namespace sb
