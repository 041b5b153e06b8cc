// FCN: strided stages, a 1x1 classifier, bilinear upsampling to the input size.
#include "models/fcn.h"

#include "core/ops.h"
#include "layers/conv/ops.h"
#include "layers/conv2d.h"
#include "layers/pool/ops.h"

namespace sb {

FCN::FCN(const ModelOptions& options) : opt_(options) {
  if (opt_.depth == 0) opt_.depth = kDefaultDepth;
  const ModelOptions& cfg = opt_;
  SB_CHECK(cfg.base_width > 0 && cfg.classes > 0 && cfg.in_channels > 0,
           "fcn: base_width, classes and in_channels must be positive, got base_width=", cfg.base_width,
           " classes=", cfg.classes, " in_channels=", cfg.in_channels);
  SB_CHECK(cfg.depth >= 1 && cfg.depth <= kMaxDepth, "fcn: depth must be in [1, ",
           kMaxDepth, "] (stride-2 stages), got ", cfg.depth);
  auto width = [&](int64_t k) { return cfg.base_width << (k - 1); };  // stage k = 1 .. D
  std::vector<std::pair<std::string, int64_t>> widths;
  for (int64_t k = 1; k <= cfg.depth; ++k) widths.emplace_back(str("s", k), width(k));
  check_norm_widths("fcn", cfg.norm, widths);
  for (int64_t k = 1; k <= cfg.depth; ++k)
    stages_.push_back(register_module(
        str("s", k), std::make_shared<Block>(k == 1 ? cfg.in_channels : width(k - 1), width(k), cfg.norm, 2)));
  head_ = register_module("head", std::make_shared<Conv2d>(Conv2dConfig{width(cfg.depth), cfg.classes, 1}));
}

std::string FCN::name() const {
  return str("FCN(depth=", opt_.depth, ", base_width=", opt_.base_width, ", norm=", opt_.norm.kind, ")");
}

Var FCN::forward(const Var& x) {
  const int64_t f = int64_t{1} << opt_.depth;  // the output stride
  SB_CHECK(x.dim() == 4 && x.size(1) == opt_.in_channels, "fcn: expected input (N, ", opt_.in_channels,
           ", H, W) but got ", x.shape());
  // Stride-2 convolutions round odd sizes up, which would misalign the upsampled logits with
  // the pixels; exact multiples keep every logit centred on its 2^D x 2^D patch.
  SB_CHECK(x.size(2) > 0 && x.size(3) > 0 && x.size(2) % f == 0 && x.size(3) % f == 0, "fcn: depth ",
           opt_.depth, " needs H and W divisible by 2^depth = ", f, " but got input ", x.shape(),
           "; use a smaller depth or crop the input");
  Var h = x;
  for (auto& s : stages_) h = (*s)(h);  // ends at (N, base * 2^(D-1), H / 2^D, W / 2^D)
  Var logits = (*head_)(h);             // (N, classes, H / 2^D, W / 2^D)
  return upsample(logits, x.size(2), x.size(3), UpsampleMode::Bilinear);  // (N, classes, H, W)
}

}  // namespace sb
