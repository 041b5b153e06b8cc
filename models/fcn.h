// FCN, a small fully convolutional segmentation network: strided conv stages, a 1x1
// classifier at 1/2^depth resolution, and bilinear upsampling back to the input size.
#pragma once

#include <string>
#include <vector>

#include "models/block.h"
#include "models/options.h"

namespace sb {

// Children, in registration (= state_dict) order:
//   s1 .. s{D}   Blocks with stride 2; s{k} has width base * 2^(k-1) and output
//                (N, width, H / 2^k, W / 2^k)
//   head         Conv2d 1x1 -> classes, with bias
// The logits are upsampled bilinearly (PyTorch's align_corners=False) by 2^D to (H, W).
// Input (N, in_channels, H, W) with H and W divisible by 2^D; output (N, classes, H, W).
class FCN : public Module {
 public:
  static constexpr int64_t kDefaultDepth = 3;  // when options.depth is 0; the output stride is 2^depth
  static constexpr int64_t kMaxDepth = 8;
  explicit FCN(const ModelOptions& options = {});
  Var forward(const Var& x) override;
  std::string name() const override;
  // The options it was built with, depth resolved.
  const ModelOptions& config() const { return opt_; }

 private:
  ModelOptions opt_;
  std::vector<std::shared_ptr<Block>> stages_;  // s1 .. s{D}
  ModulePtr head_;
};

}  // namespace sb
