// Conv2d and ConvTranspose2d layers: PyTorch's parameters (weight, optional bias), shapes and
// default initialization around the conv2d / conv_transpose2d ops.
#pragma once

#include "layers/conv/ops.h"
#include "layers/module.h"

namespace sb {

struct Conv2dConfig {
  int64_t in_channels, out_channels;
  Pair kernel_size;
  Pair stride = 1, padding = 0, dilation = 1;
  int64_t groups = 1;
  bool bias = true;
  // Weight Standardization (Qiao et al., 2019): each output channel's filter is normalized to
  // zero mean and unit variance over its (C_in/groups, kH, kW) values in every forward, as
  // timm's StdConv2d does (biased variance, eps 1e-5 inside the square root). The stored
  // parameter stays the raw weight, so state_dict keys and shapes are unchanged.
  bool weight_standardization = false;
};

class Conv2d : public Module {
 public:
  explicit Conv2d(const Conv2dConfig& cfg, Generator& gen = default_generator());
  Conv2d(int64_t in, int64_t out, Pair kernel, Pair stride = 1, Pair padding = 0, bool bias = true)
      : Conv2d(Conv2dConfig{in, out, kernel, stride, padding, 1, 1, bias}) {}
  Var forward(const Var& x) override;
  std::string name() const override;
  const Conv2dConfig& config() const { return cfg_; }
  Var weight, bias;  // (C_out, C_in/groups, kH, kW), (C_out,) or undefined

 private:
  Conv2dConfig cfg_;
};

struct ConvTranspose2dConfig {
  int64_t in_channels, out_channels;
  Pair kernel_size;
  Pair stride = 1, padding = 0, output_padding = 0, dilation = 1;
  int64_t groups = 1;
  bool bias = true;
};

class ConvTranspose2d : public Module {
 public:
  explicit ConvTranspose2d(const ConvTranspose2dConfig& cfg, Generator& gen = default_generator());
  ConvTranspose2d(int64_t in, int64_t out, Pair kernel, Pair stride = 1, bool bias = true)
      : ConvTranspose2d(ConvTranspose2dConfig{in, out, kernel, stride, 0, 0, 1, 1, bias}) {}
  Var forward(const Var& x) override;
  std::string name() const override;
  const ConvTranspose2dConfig& config() const { return cfg_; }
  Var weight, bias;  // (C_in, C_out/groups, kH, kW), (C_out,) or undefined

 private:
  ConvTranspose2dConfig cfg_;
};

}  // namespace sb
