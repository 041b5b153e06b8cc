// UNet, with UNet-S, the reference segmentation network (../shared/reference/unet_s.py), as its
// depth-2 case: matched layer for layer with the same state_dict keys, for every norm.
#pragma once

#include <string>
#include <vector>

#include "models/block.h"
#include "models/options.h"

namespace sb {

// UNet-S's scheme at any depth D. Level l (1..D+1) has width base_width * 2^(l-1), and the
// children are registered in this order (so this is also the state_dict order):
//   e1 .. e{D+1}   encoder Blocks; e{l+1} runs after a 2x2 max-pool of e{l}'s output
//   u{D}, d{D}, .. u1, d1
//                  u{l}: ConvTranspose2d(2^l b -> 2^(l-1) b, kernel 2, stride 2)
//                  d{l}: Block on concat(u{l}(y), skip from e{l}), upsampled first
//   head           Conv2d 1x1 -> classes
// A PyTorch twin with the same attribute names loads its state_dict unchanged; at depth 2 that
// twin is unet_s.py's UNetS.
// Input (N, in_channels, H, W) with H and W divisible by 2^D; output (N, classes, H, W).
class UNet : public Module {
 public:
  static constexpr int64_t kDefaultDepth = 4;  // when options.depth is 0
  static constexpr int64_t kMaxDepth = 8;
  // `model` names the network in errors and in name(): "unet", or "unet-s" for depth 2.
  explicit UNet(const ModelOptions& options = {}, const std::string& model = "unet");
  Var forward(const Var& x) override;
  std::string name() const override;
  // The options it was built with, depth resolved.
  const ModelOptions& config() const { return opt_; }

 private:
  ModelOptions opt_;
  std::string model_;
  std::vector<std::shared_ptr<Block>> enc_;  // e1 .. e{D+1}
  std::vector<ModulePtr> up_;                // up_[l - 1] is u{l}
  std::vector<std::shared_ptr<Block>> dec_;  // dec_[l - 1] is d{l}
  ModulePtr head_;
};

}  // namespace sb
