// The conv-norm-act block UNet and FCN are made of.
#pragma once

#include "layers/module.h"
#include "layers/norm/norm.h"

namespace sb {

// (conv3x3 -> norm -> relu) x 2, the ReLU fused into the norm (or replaced by it, for a norm
// with traits.includes_activation: FRN + TLU, EvoNorm); children c1, n1, c2, n2. The
// first convolution has `stride` (1 in UNet's blocks, 2 in FCN's stages, which halve H and W).
// The convolutions carry a bias and standardize their weights as the norm's traits say.
class Block : public Module {
 public:
  Block(int64_t cin, int64_t cout, const NormSpec& norm, int64_t stride = 1);
  Var forward(const Var& x) override;
  std::string name() const override { return "Block"; }
  ModulePtr c1, n1, c2, n2;
};

}  // namespace sb
