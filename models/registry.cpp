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

// The table's options as `smallbatch models` lists them, with ModelOptions' defaults;
// `depth_default` > 0 adds depth, with its own default and help.
std::vector<ModelOptionInfo> options_with(int64_t depth_default, const std::string& depth_help) {
  std::vector<ModelOptionInfo> o;
  for (const auto& f : model_option_fields()) {
    if (f.key == "depth") continue;
    std::string value = option_text(f, ModelOptions{});
    o.push_back({f.key, f.key == "norm_warmup" ? "0" : value, f.help});
  }
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
         ModelOptions two = o;
         two.depth = 2;
         return std::make_shared<UNet>(two, "unet-s");
       }},
      {{"unet",
        "UNet of any depth: `depth` 2x2 max-pool steps, (conv3x3-norm-relu) x 2 per block, widths "
        "base_width * 2^(level-1), transposed-conv upsampling with skip connections. Keys e1..e{depth+1}, "
        "u{l}, d{l}, head; depth 2 is unet-s key for key. Input H, W divisible by 2^depth.",
        options_with(UNet::kDefaultDepth, str("max-pool down-sampling steps, 1 to ", UNet::kMaxDepth))},
       [](const ModelOptions& o) -> ModulePtr { return std::make_shared<UNet>(o); }},
      {{"fcn",
        "Small FCN: `depth` stages of (conv3x3 stride 2-norm-relu, conv3x3-norm-relu), widths "
        "base_width * 2^(stage-1), a 1x1 classifier, bilinear upsampling by 2^depth to the input size. "
        "Keys s1..s{depth}, head. Input H, W divisible by 2^depth.",
        options_with(FCN::kDefaultDepth, str("stride-2 stages (output stride 2^depth), 1 to ", FCN::kMaxDepth))},
       [](const ModelOptions& o) -> ModulePtr { return std::make_shared<FCN>(o); }},
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
  const int64_t max_depth = std::max(UNet::kMaxDepth, FCN::kMaxDepth);
  if (o.base_width <= 0 || o.classes <= 0 || o.in_channels <= 0 || o.depth < 0 || o.depth > max_depth) return;
  const int64_t depth = name == "unet-s" ? 2
                        : name == "unet" ? depth_or(o.depth, UNet::kDefaultDepth)
                                         : depth_or(o.depth, FCN::kDefaultDepth);
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
