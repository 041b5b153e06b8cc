// Normalization-activation layers: each replaces a norm AND the activation after it, as in their
// papers, with timm's semantics, parameter names and defaults, so a PyTorch module with the same
// attributes loads their state_dict with strict=True (README, "Layers and the normalizations").
//   FilterResponseNormTlu2d  FRN + TLU (Singh & Krishnan, 2020)      weight, bias, tau
//   EvoNorm2dS0              EvoNorm-S0 (Liu et al., 2020), per sample  weight, bias, v
//   EvoNorm2dB0              EvoNorm-B0, batch statistics + running_var weight, bias, v; running_var
// Each op has a closed-form backward (evo_norm.cpp), statistics accumulated in double, and is
// parallel over (sample, channel) or (sample, group) with the parameter gradients summed in a
// fixed order, so results do not depend on the thread count.
#pragma once

#include "layers/module.h"
#include "layers/norm/ops.h"

namespace sb {

// FRN + TLU on x (N, C, H, W), per (sample, channel): nu2 = mean over H, W of x^2, then
//   y = max(weight[c] * x / sqrt(nu2 + eps) + bias[c], tau[c]).
// weight, bias, tau: (C,). At ties of max() the gradient is split in halves, as torch.maximum does.
Var frn_tlu(const Var& x, const Var& weight, const Var& bias, const Var& tau, float eps = 1e-5f);

// EvoNorm-S0 on x (N, C, H, W): with sigma the standard deviation of each (sample, group) of
// C / groups consecutive channels (biased variance, eps inside the square root),
//   y = x * sigmoid(v[c] * x) / sqrt(var_group + eps) * weight[c] + bias[c].
// Throws when C is not divisible by groups (timm asserts the same).
Var evonorm_s0(const Var& x, int64_t groups, const Var& weight, const Var& bias, const Var& v,
               float eps = 1e-5f);

// EvoNorm-B0 on x (N, C, H, W):
//   y = x / max(sqrt(var_c + eps), v[c] * x + sqrt(ivar_nc + eps)) * weight[c] + bias[c]
// ivar_nc: the biased variance of sample n, channel c over H, W. var_c: with use_batch_stats the
// biased variance of channel c over (N, H, W), differentiated through; otherwise *running_var,
// a constant. With update_running (training), then
//   running_var = (1 - momentum) * running_var + momentum * var_c * n / (n - 1),  n = N * H * W,
// which needs n > 1 (timm divides by n - 1 too). Ties of max() split the gradient in halves.
Var evonorm_b0(const Var& x, const Var& weight, const Var& bias, const Var& v, Tensor running_var,
               bool use_batch_stats, bool update_running, float momentum = 0.1f, float eps = 1e-3f);

// timm's FilterResponseNormTlu2d(num_features): weight 1, bias 0, tau 0; eps 1e-5, a constant.
class FilterResponseNormTlu2d : public Module {
 public:
  explicit FilterResponseNormTlu2d(int64_t num_features, float eps = 1e-5f);
  Var forward(const Var& x) override;
  std::string name() const override { return str("FilterResponseNormTlu2d(", channels_, ")"); }
  float eps() const { return eps_; }
  Var weight, bias, tau;  // (C,) each

 private:
  int64_t channels_;
  float eps_;
};

// timm's EvoNorm2dS0(num_features, groups): weight 1, bias 0, v 1; eps 1e-5. No buffers.
class EvoNorm2dS0 : public Module {
 public:
  EvoNorm2dS0(int64_t num_features, int64_t groups, float eps = 1e-5f);
  Var forward(const Var& x) override;
  std::string name() const override { return str("EvoNorm2dS0(", channels_, ", groups=", groups_, ")"); }
  int64_t num_groups() const { return groups_; }
  float eps() const { return eps_; }
  Var weight, bias, v;  // (C,) each

 private:
  int64_t channels_, groups_;
  float eps_;
};

class EvoNorm2dB0;

// Watches what an EvoNorm2dB0 normalizes, as BatchNormObserver does for the BN family: observe()
// sees each input before it is normalized, with running_var as it is then.
class EvoNormB0Observer {
 public:
  virtual ~EvoNormB0Observer() = default;
  virtual void observe(const EvoNorm2dB0& layer, const Tensor& x) = 0;
};

// timm's EvoNorm2dB0(num_features): weight 1, bias 0, v 1, buffer running_var 1; momentum 0.1,
// eps 1e-3. Training normalizes with the batch variance and updates running_var; eval uses
// running_var. Batch 1 is allowed (its batch variance is then the one image's variance over
// H, W); a single value per channel in training is an error.
class EvoNorm2dB0 : public Module {
 public:
  explicit EvoNorm2dB0(int64_t num_features, float momentum = 0.1f, float eps = 1e-3f);
  Var forward(const Var& x) override;
  std::string name() const override { return str("EvoNorm2dB0(", channels_, ")"); }
  int64_t num_features() const { return channels_; }
  float momentum() const { return momentum_; }
  // The weight of the next batch in running_var's update, in [0, 1]: 1 / k for the k-th batch
  // makes running_var the plain average of the batches' unbiased variances (PreciseBN).
  void set_momentum(float m) {
    SB_CHECK(m >= 0.f && m <= 1.f, name(), ": momentum must be in [0, 1], got ", m);
    momentum_ = m;
  }
  float eps() const { return eps_; }

  // In eval mode, normalize with the batch's variance instead of running_var (without updating
  // it): BatchNorm2d's knob of the same name, for `eval --bn-mode batch`.
  bool batch_stats_in_eval = false;
  EvoNormB0Observer* observer = nullptr;
  Var weight, bias, v;  // (C,) each
  Tensor running_var;   // (C,), a handle on the buffer

 private:
  int64_t channels_;
  float momentum_, eps_;
};

}  // namespace sb
