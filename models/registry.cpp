// The table of models that make_model() knows by name.
#include "models/registry.h"

#include <algorithm>
#include <cmath>
#include <functional>

#include "models/fcn.h"
#include "models/unet.h"

namespace sb {

namespace {
struct Entry {
  ModelInfo info;
  std::function<ModulePtr(const ModelOptions&)> make;
};

// The options every model reads, with ModelOptions' defaults; `depth_default` > 0 adds depth.
std::vector<ModelOptionInfo> options_with(int64_t depth_default, const std::string& depth_help) {
  const ModelOptions d;
  std::vector<ModelOptionInfo> o = {
      {"norm", d.norm,
       "normalization: bn, gn, ln (GroupNorm(1, C)), in (GroupNorm(C, C)), none, gn+ws (GroupNorm with "
       "Weight Standardization), brn (Batch Renormalization) or frozenbn (BatchNorm frozen after a warm-up)"},
      {"groups", std::to_string(d.groups), "GroupNorm groups for gn; a layer narrower than this gets one per channel"},
      {"base_width", std::to_string(d.base_width), "channels of the first level; each level down doubles them"},
      {"classes", std::to_string(d.classes), "classes predicted (train and eval default to the data's)"},
      {"in_channels", std::to_string(d.in_channels), "input channels"},
  };
  o.push_back({"norm_warmup", "0",
               "training steps: brn's r_max/d_max ramp, frozenbn's warm-up before freezing (train: 0 means one epoch)"});
  if (depth_default > 0) o.push_back({"depth", std::to_string(depth_default), depth_help});
  return o;
}

int64_t depth_or(int64_t depth, int64_t fallback) { return depth == 0 ? fallback : depth; }

const std::vector<Entry>& table() {
  static const std::vector<Entry> t = {
      {{"unet-s",
        "UNet-S: 3 levels, (conv3x3-norm-relu) x 2 per block, base width 16, "
        "transposed-conv upsampling (../shared/reference/unet_s.py). Input H, W divisible by 4.",
        options_with(0, "")},
       [](const ModelOptions& o) -> ModulePtr {
         return std::make_shared<UNetS>(UNetSConfig{o.norm, o.groups, o.base_width, o.classes, o.in_channels, o.norm_warmup});
       }},
      {{"unet",
        "UNet of any depth: `depth` 2x2 max-pool steps, (conv3x3-norm-relu) x 2 per block, widths "
        "base_width * 2^(level-1), transposed-conv upsampling with skip connections. Keys e1..e{depth+1}, "
        "u{l}, d{l}, head; depth 2 is unet-s key for key. Input H, W divisible by 2^depth.",
        options_with(UNetConfig{}.depth, str("max-pool down-sampling steps, 1 to ", UNetConfig::kMaxDepth))},
       [](const ModelOptions& o) -> ModulePtr {
         return std::make_shared<UNet>(UNetConfig{o.norm, o.groups, o.base_width, o.classes, o.in_channels,
                                                  depth_or(o.depth, UNetConfig{}.depth), o.norm_warmup});
       }},
      {{"fcn",
        "Small FCN: `depth` stages of (conv3x3 stride 2-norm-relu, conv3x3-norm-relu), widths "
        "base_width * 2^(stage-1), a 1x1 classifier, bilinear upsampling by 2^depth to the input size. "
        "Keys s1..s{depth}, head. Input H, W divisible by 2^depth.",
        options_with(FCNConfig{}.depth, str("stride-2 stages (output stride 2^depth), 1 to ", FCNConfig::kMaxDepth))},
       [](const ModelOptions& o) -> ModulePtr {
         return std::make_shared<FCN>(FCNConfig{o.norm, o.groups, o.base_width, o.classes, o.in_channels,
                                                depth_or(o.depth, FCNConfig{}.depth), o.norm_warmup});
       }},
  };
  return t;
}
}  // namespace

namespace {
// The sizes come from flags and from a checkpoint's metadata, which may be hostile: a model whose
// weights could not fit in memory is refused before any is allocated, since huge widths would ask
// for terabytes and overflow the int64 shape products (found by fuzzing). The estimate is an upper
// bound, computed in double: four 3x3 convolutions at the widest level, the first convolution and
// a classifier on the widest features. Non-positive sizes and depths out of range are left to
// each model, which reports them itself.
constexpr double kMaxModelParameters = double(int64_t(1) << 30);  // 4 GiB of float32 weights

void check_model_size(const std::string& name, const ModelOptions& o) {
  const int64_t max_depth = std::max(UNetConfig::kMaxDepth, FCNConfig::kMaxDepth);
  if (o.base_width <= 0 || o.classes <= 0 || o.in_channels <= 0 || o.depth < 0 || o.depth > max_depth) return;
  const int64_t depth = name == "unet-s" ? 2
                        : name == "unet" ? depth_or(o.depth, UNetConfig{}.depth)
                                         : depth_or(o.depth, FCNConfig{}.depth);
  const double widest = static_cast<double>(o.base_width) * std::ldexp(1.0, static_cast<int>(depth));
  const double params = 36 * widest * widest + 9.0 * static_cast<double>(o.in_channels) * o.base_width +
                        static_cast<double>(o.classes) * widest;
  SB_CHECK(params <= kMaxModelParameters, name, ": base_width ", o.base_width, ", depth ", depth, ", classes ",
           o.classes, " and in_channels ", o.in_channels, " make a model of up to ", params,
           " parameters, more than the limit of ", static_cast<int64_t>(kMaxModelParameters));
}
}  // namespace

ModulePtr make_model(const std::string& name, const ModelOptions& opt) {
  std::string known;
  for (const auto& e : table()) {
    if (e.info.name == name) {
      check_model_size(name, opt);
      return e.make(opt);
    }
    known += (known.empty() ? "" : ", ") + e.info.name;
  }
  fail("unknown model '", name, "' (known: ", known, ")");
}

std::vector<ModelInfo> registered_models() {
  std::vector<ModelInfo> out;
  for (const auto& e : table()) out.push_back(e.info);
  return out;
}

}  // namespace sb
