// UNet-S, the reference segmentation network (../shared/reference/unet_s.py), matched layer
// for layer with the same state_dict keys, for every normalization kind; and UNet, its
// generalization to any depth (depth 2 is UNet-S, key for key).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "layers/module.h"

namespace sb {

// The normalization kinds, in the order help texts list them.
const std::vector<std::string>& norm_kinds();
// "bn" BatchNorm2d(C) | "gn" GroupNorm(min(G, C), C) | "ln" GroupNorm(1, C) |
// "in" GroupNorm(C, C) | "none" Identity |
// "gn+ws" GroupNorm as "gn"; the convolutions before it use Weight Standardization |
// "brn" BatchRenorm2d(C) whose r_max, d_max limits ramp up over `warmup_steps` |
// "frozenbn" FreezingBatchNorm2d(C): BatchNorm for `warmup_steps`, then frozen to its running
//     statistics (warmup_steps 0 freezes at once, to the initial statistics 0 and 1).
// Throws on an unknown kind, listing the known ones.
ModulePtr make_norm(const std::string& kind, int64_t channels, int64_t groups, int64_t warmup_steps = 0);
// True for the kinds whose convolutions carry a bias (only "none", as in the reference).
bool norm_needs_conv_bias(const std::string& kind);
// True for "gn+ws": the convolutions feeding the norm standardize their weights.
bool norm_uses_weight_standardization(const std::string& kind);

// (conv3x3 -> norm -> relu) x 2; children c1, n1, c2, n2. `norm_warmup` is make_norm's
// warmup_steps (brn, frozenbn).
class Block : public Module {
 public:
  Block(int64_t cin, int64_t cout, const std::string& norm, int64_t groups, int64_t norm_warmup = 0);
  Var forward(const Var& x) override;
  std::string name() const override { return "Block"; }
  ModulePtr c1, n1, c2, n2;
};

struct UNetSConfig {
  std::string norm = "gn";
  int64_t groups = 8;
  int64_t base = 16;
  int64_t classes = 4;
  int64_t in_channels = 3;
  int64_t norm_warmup = 0;  // training steps, for brn and frozenbn (make_norm)
};

// Input (N, in_channels, H, W) with H and W divisible by 4; output logits (N, classes, H, W).
class UNetS : public Module {
 public:
  explicit UNetS(const UNetSConfig& cfg = {});
  Var forward(const Var& x) override;
  std::string name() const override { return "UNetS(norm=" + cfg_.norm + ")"; }
  const UNetSConfig& config() const { return cfg_; }

 private:
  UNetSConfig cfg_;
  std::shared_ptr<Block> e1, e2, e3, d2, d1;
  ModulePtr u2, u1, head;
};

struct UNetConfig {
  std::string norm = "gn";
  int64_t groups = 8;
  int64_t base = 16;
  int64_t classes = 4;
  int64_t in_channels = 3;
  int64_t depth = 4;  // max-pool down-sampling steps, in [1, kMaxDepth]
  int64_t norm_warmup = 0;  // training steps, for brn and frozenbn (make_norm)
  static constexpr int64_t kMaxDepth = 8;
};

// UNet-S's scheme at any depth D. Level l (1..D+1) has width base * 2^(l-1), and the children
// are registered in this order (so this is also the state_dict order):
//   e1 .. e{D+1}   encoder Blocks; e{l+1} runs after a 2x2 max-pool of e{l}'s output
//   u{D}, d{D}, .. u1, d1
//                  u{l}: ConvTranspose2d(2^l b -> 2^(l-1) b, kernel 2, stride 2)
//                  d{l}: Block on concat(u{l}(y), skip from e{l}), upsampled first
//   head           Conv2d 1x1 -> classes
// A PyTorch twin with the same attribute names loads its state_dict unchanged.
// Input (N, in_channels, H, W) with H and W divisible by 2^D; output (N, classes, H, W).
class UNet : public Module {
 public:
  explicit UNet(const UNetConfig& cfg = {});
  Var forward(const Var& x) override;
  std::string name() const override;
  const UNetConfig& config() const { return cfg_; }

 private:
  UNetConfig cfg_;
  std::vector<std::shared_ptr<Block>> enc_;  // e1 .. e{D+1}
  std::vector<ModulePtr> up_;                // up_[l - 1] is u{l}
  std::vector<std::shared_ptr<Block>> dec_;  // dec_[l - 1] is d{l}
  ModulePtr head_;
};

// Throws naming `model` unless `norm` is a known kind and, for "gn", every layer in `widths`
// ({"e2", 32}, ...) splits into min(groups, width) equal groups, so a bad configuration is
// reported with the model's name before any layer is built.
void check_norm_widths(const std::string& model, const std::string& norm, int64_t groups,
                       const std::vector<std::pair<std::string, int64_t>>& widths);

}  // namespace sb
