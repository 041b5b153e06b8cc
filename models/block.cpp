// The conv-norm-act block.
#include "models/block.h"

#include "layers/conv2d.h"

namespace sb {

Block::Block(int64_t cin, int64_t cout, const NormSpec& norm, int64_t stride) {
  const NormTraits& traits = norm_info(norm.kind).traits;
  Conv2dConfig conv{cin, cout, 3, stride, 1, 1, 1, traits.conv_bias};
  conv.weight_standardization = traits.weight_standardization;
  c1 = register_module("c1", std::make_shared<Conv2d>(conv));
  n1 = register_module("n1", make_norm(norm, cout, Activation::ReLU));
  conv.in_channels = cout;
  conv.stride = 1;
  c2 = register_module("c2", std::make_shared<Conv2d>(conv));
  n2 = register_module("n2", make_norm(norm, cout, Activation::ReLU));
}

Var Block::forward(const Var& x) {
  Var h = (*n1)((*c1)(x));  // (N, cout, H / stride, W / stride)
  return (*n2)((*c2)(h));
}

}  // namespace sb
