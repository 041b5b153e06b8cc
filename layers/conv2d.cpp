// Conv2d and ConvTranspose2d: parameter registration, initialization and forward.
#include "layers/conv2d.h"

#include "layers/norm/ops.h"
#include "layers/init.h"

namespace sb {

static void check_channels(const char* layer, int64_t in, int64_t out, int64_t groups) {
  SB_CHECK(in > 0 && out > 0, layer, ": channels must be positive, got in=", in, " out=", out);
  SB_CHECK(groups > 0 && in % groups == 0 && out % groups == 0, layer, ": in_channels ", in,
           " and out_channels ", out, " must both be divisible by groups ", groups);
}

// A weight (d0, d1, kH, kW) and optional bias (bias_len,) with PyTorch's default initialization,
// whose fan_in is weight.size(1) * kH * kW for both convolutions (for the transposed one that
// is out_channels/groups, as PyTorch computes it). The bias is undefined when not wanted.
static std::pair<Tensor, Tensor> conv_params(const char* layer, int64_t d0, int64_t d1, Pair k, int64_t bias_len,
                                             bool with_bias, Generator& gen) {
  SB_CHECK(k.h > 0 && k.w > 0, layer, ": kernel size must be positive");
  int64_t fan_in = d1 * k.h * k.w;
  Tensor w = Tensor::empty({d0, d1, k.h, k.w}), b;
  init::default_weight_(w, fan_in, gen);
  if (with_bias) {
    b = Tensor::empty({bias_len});
    init::default_bias_(b, fan_in, gen);
  }
  return {w, b};
}

Conv2d::Conv2d(const Conv2dConfig& cfg, Generator& gen) : cfg_(cfg) {
  check_channels("Conv2d", cfg.in_channels, cfg.out_channels, cfg.groups);
  auto [w, b] = conv_params("Conv2d", cfg.out_channels, cfg.in_channels / cfg.groups, cfg.kernel_size,
                            cfg.out_channels, cfg.bias, gen);
  weight = register_parameter("weight", w);
  if (b.defined()) bias = register_parameter("bias", b);
}

Var Conv2d::forward(const Var& x) {
  Var w = weight;
  if (cfg_.weight_standardization) {
    // Per-filter statistics are GroupNorm with one group per output channel on (1, C_out, fan_in).
    const Shape& s = weight.shape();  // (C_out, C_in/groups, kH, kW)
    w = reshape(group_norm(reshape(weight, {1, s[0], s[1] * s[2] * s[3]}), s[0], Var(), Var(), 1e-5f), s);
  }
  return conv2d(x, w, bias, {cfg_.stride, cfg_.padding, cfg_.dilation, cfg_.groups});
}

std::string Conv2d::name() const {
  return str("Conv2d(", cfg_.in_channels, ", ", cfg_.out_channels, ", kernel_size=(", cfg_.kernel_size.h,
             ", ", cfg_.kernel_size.w, "), stride=(", cfg_.stride.h, ", ", cfg_.stride.w, "), padding=(",
             cfg_.padding.h, ", ", cfg_.padding.w, ")", cfg_.groups > 1 ? str(", groups=", cfg_.groups) : "",
             cfg_.bias ? "" : ", bias=False", cfg_.weight_standardization ? ", weight_standardization" : "", ")");
}

ConvTranspose2d::ConvTranspose2d(const ConvTranspose2dConfig& cfg, Generator& gen) : cfg_(cfg) {
  check_channels("ConvTranspose2d", cfg.in_channels, cfg.out_channels, cfg.groups);
  auto [w, b] = conv_params("ConvTranspose2d", cfg.in_channels, cfg.out_channels / cfg.groups, cfg.kernel_size,
                            cfg.out_channels, cfg.bias, gen);
  weight = register_parameter("weight", w);
  if (b.defined()) bias = register_parameter("bias", b);
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
