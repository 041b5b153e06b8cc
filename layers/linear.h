// Linear: y = x W^T + b with PyTorch's parameters and default initialization.
#pragma once

#include "core/ops.h"
#include "layers/init.h"
#include "layers/module.h"

namespace sb {

class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, bool with_bias = true,
         Generator& gen = default_generator())
      : in_(in_features), out_(out_features) {
    SB_CHECK(in_features > 0 && out_features > 0, "Linear: features must be positive, got ",
             in_features, " -> ", out_features);
    Tensor w = Tensor::empty({out_features, in_features});
    init::default_weight_(w, in_features, gen);
    weight = register_parameter("weight", w);
    if (with_bias) {
      Tensor b = Tensor::empty({out_features});
      init::default_bias_(b, in_features, gen);
      bias = register_parameter("bias", b);
    }
  }
  Var forward(const Var& x) override { return linear(x, weight, bias); }
  std::string name() const override { return str("Linear(", in_, ", ", out_, ")"); }
  Var weight, bias;  // (out, in), (out,)

 private:
  int64_t in_, out_;
};

}  // namespace sb
