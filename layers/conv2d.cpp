// Conv2d and ConvTranspose2d: parameter registration, initialization and forward.
#include "layers/conv2d.h"

#include "layers/init.h"

namespace sb {

static void check_channels(const char* layer, int64_t in, int64_t out, int64_t groups) {
  SB_CHECK(in > 0 && out > 0, layer, ": channels must be positive, got in=", in, " out=", out);
  SB_CHECK(groups > 0 && in % groups == 0 && out % groups == 0, layer, ": in_channels ", in,
           " and out_channels ", out, " must both be divisible by groups ", groups);
}

Conv2d::Conv2d(const Conv2dConfig& cfg, Generator& gen) : cfg_(cfg) {
  check_channels("Conv2d", cfg.in_channels, cfg.out_channels, cfg.groups);
  SB_CHECK(cfg.kernel_size.h > 0 && cfg.kernel_size.w > 0, "Conv2d: kernel size must be positive");
  int64_t cin_g = cfg.in_channels / cfg.groups;
  int64_t fan_in = cin_g * cfg.kernel_size.h * cfg.kernel_size.w;
  Tensor w = Tensor::empty({cfg.out_channels, cin_g, cfg.kernel_size.h, cfg.kernel_size.w});
  init::default_weight_(w, fan_in, gen);
  weight = register_parameter("weight", w);
  if (cfg.bias) {
    Tensor b = Tensor::empty({cfg.out_channels});
    init::default_bias_(b, fan_in, gen);
    bias = register_parameter("bias", b);
  }
}

Var Conv2d::forward(const Var& x) {
  return conv2d(x, weight, bias, {cfg_.stride, cfg_.padding, cfg_.dilation, cfg_.groups});
}

std::string Conv2d::name() const {
  return str("Conv2d(", cfg_.in_channels, ", ", cfg_.out_channels, ", kernel_size=(", cfg_.kernel_size.h,
             ", ", cfg_.kernel_size.w, "), stride=(", cfg_.stride.h, ", ", cfg_.stride.w, "), padding=(",
             cfg_.padding.h, ", ", cfg_.padding.w, ")", cfg_.groups > 1 ? str(", groups=", cfg_.groups) : "",
             cfg_.bias ? "" : ", bias=False", ")");
}

ConvTranspose2d::ConvTranspose2d(const ConvTranspose2dConfig& cfg, Generator& gen) : cfg_(cfg) {
  check_channels("ConvTranspose2d", cfg.in_channels, cfg.out_channels, cfg.groups);
  SB_CHECK(cfg.kernel_size.h > 0 && cfg.kernel_size.w > 0, "ConvTranspose2d: kernel size must be positive");
  int64_t cout_g = cfg.out_channels / cfg.groups;
  // PyTorch computes fan_in from weight.size(1) * kH * kW, i.e. out_channels/groups here.
  int64_t fan_in = cout_g * cfg.kernel_size.h * cfg.kernel_size.w;
  Tensor w = Tensor::empty({cfg.in_channels, cout_g, cfg.kernel_size.h, cfg.kernel_size.w});
  init::default_weight_(w, fan_in, gen);
  weight = register_parameter("weight", w);
  if (cfg.bias) {
    Tensor b = Tensor::empty({cfg.out_channels});
    init::default_bias_(b, fan_in, gen);
    bias = register_parameter("bias", b);
  }
}

Var ConvTranspose2d::forward(const Var& x) {
  return conv_transpose2d(x, weight, bias,
                          {cfg_.stride, cfg_.padding, cfg_.output_padding, cfg_.dilation, cfg_.groups});
}

std::string ConvTranspose2d::name() const {
  return str("ConvTranspose2d(", cfg_.in_channels, ", ", cfg_.out_channels, ", kernel_size=(",
             cfg_.kernel_size.h, ", ", cfg_.kernel_size.w, "), stride=(", cfg_.stride.h, ", ", cfg_.stride.w,
             "))");
}

}  // namespace sb
