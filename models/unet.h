// UNet-S, the reference segmentation network (../shared/reference/unet_s.py), matched layer
// for layer with the same state_dict keys, for every normalization kind.
#pragma once

#include <string>

#include "layers/module.h"

namespace sb {

// "bn" BatchNorm2d(C) | "gn" GroupNorm(min(G, C), C) | "ln" GroupNorm(1, C) |
// "in" GroupNorm(C, C) | "none" Identity. Throws on an unknown kind, listing the known ones.
ModulePtr make_norm(const std::string& kind, int64_t channels, int64_t groups);
// True for the kinds whose convolutions carry a bias (only "none", as in the reference).
bool norm_needs_conv_bias(const std::string& kind);

// (conv3x3 -> norm -> relu) x 2; children c1, n1, c2, n2.
class Block : public Module {
 public:
  Block(int64_t cin, int64_t cout, const std::string& norm, int64_t groups);
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

}  // namespace sb
