// The table of models that make_model() knows by name.
#include "models/registry.h"

#include <functional>

#include "models/unet.h"

namespace sb {

namespace {
struct Entry {
  ModelInfo info;
  std::function<ModulePtr(const ModelOptions&)> make;
};

const std::vector<Entry>& table() {
  static const std::vector<Entry> t = {
      {{"unet-s", "UNet-S: 3 levels, (conv3x3-norm-relu) x 2 per block, base width 16, "
                  "transposed-conv upsampling (../shared/reference/unet_s.py)"},
       [](const ModelOptions& o) -> ModulePtr {
         return std::make_shared<UNetS>(UNetSConfig{o.norm, o.groups, o.base_width, o.classes, o.in_channels});
       }},
  };
  return t;
}
}  // namespace

ModulePtr make_model(const std::string& name, const ModelOptions& opt) {
  std::string known;
  for (const auto& e : table()) {
    if (e.info.name == name) return e.make(opt);
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
