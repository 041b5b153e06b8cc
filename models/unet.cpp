// UNet-S, UNet and their building blocks.
#include "models/unet.h"

#include <algorithm>

#include "core/ops.h"
#include "layers/batch_norm.h"
#include "layers/batch_renorm.h"
#include "layers/conv2d.h"
#include "layers/group_norm.h"
#include "layers/simple.h"

namespace sb {

const std::vector<std::string>& norm_kinds() {
  static const std::vector<std::string> kinds = {"bn", "gn", "ln", "in", "none", "gn+ws", "brn", "frozenbn"};
  return kinds;
}

static std::string known_norms() {
  std::string s;
  for (const auto& k : norm_kinds()) s += (s.empty() ? "" : ", ") + k;
  return s;
}

ModulePtr make_norm(const std::string& kind, int64_t c, int64_t groups, int64_t warmup_steps) {
  if (kind == "bn") return std::make_shared<BatchNorm2d>(c);
  if (kind == "gn" || kind == "gn+ws") {
    SB_CHECK(groups > 0, "norm '", kind, "': groups must be positive, got ", groups);
    return std::make_shared<GroupNorm>(std::min(groups, c), c);
  }
  if (kind == "ln") return std::make_shared<GroupNorm>(1, c);
  if (kind == "in") return std::make_shared<GroupNorm>(c, c);
  if (kind == "none") return std::make_shared<Identity>();
  if (kind == "brn") {
    BatchRenormConfig r;
    r.ramp_steps = warmup_steps;
    return std::make_shared<BatchRenorm2d>(c, r);
  }
  if (kind == "frozenbn") return std::make_shared<FreezingBatchNorm2d>(c, warmup_steps);
  fail("unknown norm '", kind, "' (known: ", known_norms(), ")");
}

bool norm_needs_conv_bias(const std::string& kind) { return kind == "none"; }
bool norm_uses_weight_standardization(const std::string& kind) { return kind == "gn+ws"; }

Block::Block(int64_t cin, int64_t cout, const std::string& norm, int64_t groups, int64_t norm_warmup) {
  Conv2dConfig conv{cin, cout, 3, 1, 1, 1, 1, norm_needs_conv_bias(norm)};
  conv.weight_standardization = norm_uses_weight_standardization(norm);
  c1 = register_module("c1", std::make_shared<Conv2d>(conv));
  n1 = register_module("n1", make_norm(norm, cout, groups, norm_warmup));
  conv.in_channels = cout;
  c2 = register_module("c2", std::make_shared<Conv2d>(conv));
  n2 = register_module("n2", make_norm(norm, cout, groups, norm_warmup));
}

Var Block::forward(const Var& x) {
  Var h = n1->call_relu((*c1)(x));  // norm + ReLU, fused where the norm has a fused op
  return n2->call_relu((*c2)(h));
}

UNetS::UNetS(const UNetSConfig& cfg) : cfg_(cfg) {
  SB_CHECK(cfg.base > 0 && cfg.classes > 0 && cfg.in_channels > 0,
           "unet-s: base width, classes and in_channels must be positive, got base=", cfg.base,
           " classes=", cfg.classes, " in_channels=", cfg.in_channels);
  int64_t b = cfg.base;
  // Registration order is the reference's attribute order, hence its state_dict order.
  e1 = register_module("e1", std::make_shared<Block>(cfg.in_channels, b, cfg.norm, cfg.groups, cfg.norm_warmup));
  e2 = register_module("e2", std::make_shared<Block>(b, 2 * b, cfg.norm, cfg.groups, cfg.norm_warmup));
  e3 = register_module("e3", std::make_shared<Block>(2 * b, 4 * b, cfg.norm, cfg.groups, cfg.norm_warmup));
  u2 = register_module("u2", std::make_shared<ConvTranspose2d>(4 * b, 2 * b, 2, 2));
  d2 = register_module("d2", std::make_shared<Block>(4 * b, 2 * b, cfg.norm, cfg.groups, cfg.norm_warmup));
  u1 = register_module("u1", std::make_shared<ConvTranspose2d>(2 * b, b, 2, 2));
  d1 = register_module("d1", std::make_shared<Block>(2 * b, b, cfg.norm, cfg.groups, cfg.norm_warmup));
  head = register_module("head", std::make_shared<Conv2d>(Conv2dConfig{b, cfg.classes, 1}));
}

Var UNetS::forward(const Var& x) {
  SB_CHECK(x.dim() == 4 && x.size(1) == cfg_.in_channels && x.size(2) % 4 == 0 && x.size(3) % 4 == 0,
           "unet-s: expected input (N, ", cfg_.in_channels, ", H, W) with H and W divisible by 4 but got ",
           x.shape());
  Pool2dOptions pool;
  pool.kernel = 2;
  Var x1 = (*e1)(x);                          // (N, b, H, W)
  Var x2 = (*e2)(max_pool2d(x1, pool));       // (N, 2b, H/2, W/2)
  Var x3 = (*e3)(max_pool2d(x2, pool));       // (N, 4b, H/4, W/4)
  Var y = (*d2)(concat({(*u2)(x3), x2}, 1));  // upsampled first, skip second
  y = (*d1)(concat({(*u1)(y), x1}, 1));
  return (*head)(y);                          // (N, classes, H, W)
}

void check_norm_widths(const std::string& model, const std::string& norm, int64_t groups,
                       const std::vector<std::pair<std::string, int64_t>>& widths) {
  const auto& known = norm_kinds();
  SB_CHECK(std::find(known.begin(), known.end(), norm) != known.end(), model, ": unknown norm '", norm,
           "' (known: ", known_norms(), ")");
  if (norm != "gn" && norm != "gn+ws") return;
  SB_CHECK(groups > 0, model, ": norm '", norm, "' needs groups > 0, got groups=", groups);
  for (const auto& [where, w] : widths) {
    int64_t g = std::min(groups, w);  // make_norm's rule: narrow layers get one group per channel
    SB_CHECK(w % g == 0, model, ": norm '", norm, "' with groups=", groups, " cannot split ", where, "'s ", w,
             " channels into ", g, " equal groups; choose a base_width whose multiples are divisible by ",
             groups, ", or other groups");
  }
}

UNet::UNet(const UNetConfig& cfg) : cfg_(cfg) {
  SB_CHECK(cfg.base > 0 && cfg.classes > 0 && cfg.in_channels > 0,
           "unet: base_width, classes and in_channels must be positive, got base_width=", cfg.base,
           " classes=", cfg.classes, " in_channels=", cfg.in_channels);
  SB_CHECK(cfg.depth >= 1 && cfg.depth <= UNetConfig::kMaxDepth, "unet: depth must be in [1, ",
           UNetConfig::kMaxDepth, "] (down-sampling steps), got ", cfg.depth);
  const int64_t D = cfg.depth, b = cfg.base;
  auto width = [b](int64_t level) { return b << (level - 1); };  // level 1 .. D + 1
  std::vector<std::pair<std::string, int64_t>> widths;
  for (int64_t l = 1; l <= D + 1; ++l) widths.emplace_back(str("e", l), width(l));
  check_norm_widths("unet", cfg.norm, cfg.groups, widths);

  // Registration order = state_dict order; for D = 2 it is UNet-S's order, key for key.
  for (int64_t l = 1; l <= D + 1; ++l)
    enc_.push_back(register_module(str("e", l), std::make_shared<Block>(l == 1 ? cfg.in_channels : width(l - 1),
                                                                      width(l), cfg.norm, cfg.groups, cfg.norm_warmup)));
  up_.resize(D);
  dec_.resize(D);
  for (int64_t l = D; l >= 1; --l) {
    up_[l - 1] = register_module(str("u", l), std::make_shared<ConvTranspose2d>(width(l + 1), width(l), 2, 2));
    dec_[l - 1] = register_module(str("d", l), std::make_shared<Block>(width(l + 1), width(l), cfg.norm, cfg.groups, cfg.norm_warmup));
  }
  head_ = register_module("head", std::make_shared<Conv2d>(Conv2dConfig{b, cfg.classes, 1}));
}

std::string UNet::name() const {
  return str("UNet(depth=", cfg_.depth, ", base_width=", cfg_.base, ", norm=", cfg_.norm, ")");
}

Var UNet::forward(const Var& x) {
  const int64_t f = int64_t{1} << cfg_.depth;  // the total down-sampling factor
  SB_CHECK(x.dim() == 4 && x.size(1) == cfg_.in_channels, "unet: expected input (N, ", cfg_.in_channels,
           ", H, W) but got ", x.shape());
  SB_CHECK(x.size(2) > 0 && x.size(3) > 0 && x.size(2) % f == 0 && x.size(3) % f == 0, "unet: depth ",
           cfg_.depth, " needs H and W divisible by 2^depth = ", f, " but got input ", x.shape(),
           "; use a smaller depth or crop the input");
  Pool2dOptions pool;
  pool.kernel = 2;
  // feats[l - 1]: e{l}'s output (N, 2^(l-1) b, H / 2^(l-1), W / 2^(l-1)); the last is the bottleneck.
  std::vector<Var> feats;
  for (size_t i = 0; i < enc_.size(); ++i)
    feats.push_back((*enc_[i])(i == 0 ? x : max_pool2d(feats.back(), pool)));
  Var y = feats.back();  // (N, 2^D b, H / 2^D, W / 2^D)
  for (int64_t l = cfg_.depth; l >= 1; --l)  // upsampled first, skip second, as in UNet-S
    y = (*dec_[l - 1])(concat({(*up_[l - 1])(y), feats[l - 1]}, 1));
  return (*head_)(y);  // (N, classes, H, W)
}

}  // namespace sb
