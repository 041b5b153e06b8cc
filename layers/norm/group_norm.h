// GroupNorm(num_groups, num_channels, eps, affine): statistics per sample and per group of
// channels, a learned scale and shift per channel. G = 1 is LayerNorm over (C, H, W); G = C is
// InstanceNorm. No running statistics: inference normalizes exactly as training does.
#pragma once

#include "layers/norm/ops.h"
#include "layers/module.h"

namespace sb {

class GroupNorm : public Module {
 public:
  // `act` is fused into the op: forward() returns act(group_norm(x)).
  GroupNorm(int64_t num_groups, int64_t num_channels, float eps = 1e-5f, bool affine = true,
            Activation act = Activation::None)
      : groups_(num_groups), channels_(num_channels), eps_(eps), act_(act) {
    SB_CHECK(num_groups > 0, "GroupNorm: num_groups must be positive, got ", num_groups);
    SB_CHECK(num_channels > 0, "GroupNorm: num_channels must be positive, got ", num_channels);
    SB_CHECK(num_channels % num_groups == 0, "GroupNorm(", num_groups, ", ", num_channels, "): ",
             num_channels, " channels are not divisible by ", num_groups, " groups");
    if (affine) {
      weight = register_parameter("weight", Tensor::ones({num_channels}));
      bias = register_parameter("bias", Tensor::zeros({num_channels}));
    }
  }
  Var forward(const Var& x) override {
    SB_CHECK(x.dim() >= 2 && x.size(1) == channels_, name(), ": expected input (N, ", channels_,
             ", *) but got ", x.shape());
    return group_norm(x, groups_, weight, bias, eps_, act_);
  }
  std::string name() const override { return str("GroupNorm(", groups_, ", ", channels_, ")"); }
  int64_t num_groups() const { return groups_; }
  Activation activation() const { return act_; }
  Var weight, bias;  // (C,) each, initialized to 1 and 0; undefined when affine = false

 private:
  int64_t groups_, channels_;
  float eps_;
  Activation act_;
};

}  // namespace sb
