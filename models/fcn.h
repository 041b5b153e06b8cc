// FCN, a small fully convolutional segmentation network: strided conv stages, a 1x1
// classifier at 1/2^depth resolution, and bilinear upsampling back to the input size.
#pragma once

#include <string>
#include <vector>

#include "layers/module.h"

namespace sb {

// conv3x3 stride 2 -> norm -> relu -> conv3x3 -> norm -> relu; children c1, n1, c2, n2 (as
// Block's), halving H and W.
class FCNStage : public Module {
 public:
  FCNStage(int64_t cin, int64_t cout, const std::string& norm, int64_t groups, int64_t norm_warmup = 0);
  Var forward(const Var& x) override;
  std::string name() const override { return "FCNStage"; }
  ModulePtr c1, n1, c2, n2;
};

struct FCNConfig {
  std::string norm = "gn";
  int64_t groups = 8;
  int64_t base = 16;
  int64_t classes = 4;
  int64_t in_channels = 3;
  int64_t depth = 3;  // stride-2 stages, in [1, kMaxDepth]; the output stride is 2^depth
  int64_t norm_warmup = 0;  // training steps, for brn and frozenbn (make_norm)
  static constexpr int64_t kMaxDepth = 8;
};

// Children, in registration (= state_dict) order:
//   s1 .. s{D}   FCNStages; s{k} has width base * 2^(k-1) and output (N, width, H / 2^k, W / 2^k)
//   head         Conv2d 1x1 -> classes, with bias
// The logits are upsampled bilinearly (PyTorch's align_corners=False) by 2^D to (H, W).
// Input (N, in_channels, H, W) with H and W divisible by 2^D; output (N, classes, H, W).
class FCN : public Module {
 public:
  explicit FCN(const FCNConfig& cfg = {});
  Var forward(const Var& x) override;
  std::string name() const override;
  const FCNConfig& config() const { return cfg_; }

 private:
  FCNConfig cfg_;
  std::vector<std::shared_ptr<FCNStage>> stages_;  // s1 .. s{D}
  ModulePtr head_;
};

}  // namespace sb
