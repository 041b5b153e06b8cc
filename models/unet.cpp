// UNet (and UNet-S, its depth-2 case).
#include "models/unet.h"

#include "core/ops.h"
#include "layers/conv/ops.h"
#include "layers/conv2d.h"
#include "layers/pool/ops.h"

namespace sb {

UNet::UNet(const ModelOptions& options, const std::string& model) : opt_(options), model_(model) {
  if (opt_.depth == 0) opt_.depth = kDefaultDepth;
  const ModelOptions& o = opt_;
  SB_CHECK(o.base_width > 0 && o.classes > 0 && o.in_channels > 0, model,
           ": base_width, classes and in_channels must be positive, got base_width=", o.base_width,
           " classes=", o.classes, " in_channels=", o.in_channels);
  SB_CHECK(o.depth >= 1 && o.depth <= kMaxDepth, model, ": depth must be in [1, ", kMaxDepth,
           "] (down-sampling steps), got ", o.depth);
  const int64_t D = o.depth, b = o.base_width;
  auto width = [b](int64_t level) { return b << (level - 1); };  // level 1 .. D + 1
  std::vector<std::pair<std::string, int64_t>> widths;
  for (int64_t l = 1; l <= D + 1; ++l) widths.emplace_back(str("e", l), width(l));
  check_norm_widths(model, o.norm, widths);

  // Registration order = state_dict order; for D = 2 it is unet_s.py's order, key for key.
  for (int64_t l = 1; l <= D + 1; ++l)
    enc_.push_back(register_module(str("e", l), std::make_shared<Block>(l == 1 ? o.in_channels : width(l - 1),
                                                                      width(l), o.norm)));
  up_.resize(D);
  dec_.resize(D);
  for (int64_t l = D; l >= 1; --l) {
    up_[l - 1] = register_module(str("u", l), std::make_shared<ConvTranspose2d>(width(l + 1), width(l), 2, 2));
    dec_[l - 1] = register_module(str("d", l), std::make_shared<Block>(width(l + 1), width(l), o.norm));
  }
  head_ = register_module("head", std::make_shared<Conv2d>(Conv2dConfig{b, o.classes, 1}));
}

std::string UNet::name() const {
  if (model_ == "unet-s") return "UNetS(norm=" + opt_.norm.kind + ")";
  return str("UNet(depth=", opt_.depth, ", base_width=", opt_.base_width, ", norm=", opt_.norm.kind, ")");
}

Var UNet::forward(const Var& x) {
  const int64_t f = int64_t{1} << opt_.depth;  // the total down-sampling factor
  SB_CHECK(x.dim() == 4 && x.size(1) == opt_.in_channels, model_, ": expected input (N, ", opt_.in_channels,
           ", H, W) but got ", x.shape());
  SB_CHECK(x.size(2) > 0 && x.size(3) > 0 && x.size(2) % f == 0 && x.size(3) % f == 0, model_, ": depth ",
           opt_.depth, " needs H and W divisible by 2^depth = ", f, " but got input ", x.shape(),
           "; use a smaller depth or crop the input (H and W divisible by ", f, ")");
  Pool2dOptions pool;
  pool.kernel = 2;
  // feats[l - 1]: e{l}'s output (N, 2^(l-1) b, H / 2^(l-1), W / 2^(l-1)); the last is the bottleneck.
  std::vector<Var> feats;
  for (size_t i = 0; i < enc_.size(); ++i)
    feats.push_back((*enc_[i])(i == 0 ? x : max_pool2d(feats.back(), pool)));
  Var y = feats.back();  // (N, 2^D b, H / 2^D, W / 2^D)
  for (int64_t l = opt_.depth; l >= 1; --l)  // upsampled first, skip second, as in UNet-S
    y = (*dec_[l - 1])(concat({(*up_[l - 1])(y), feats[l - 1]}, 1));
  return (*head_)(y);  // (N, classes, H, W)
}

}  // namespace sb
