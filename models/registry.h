// Models by name: make_model("unet", options) with ModelOptions (models/options.h), and the
// table `smallbatch models` lists.
#pragma once

#include <string>
#include <vector>

#include "layers/module.h"
#include "models/options.h"

namespace sb {

// One ModelOptions field a model reads.
struct ModelOptionInfo {
  std::string name;           // the field, e.g. "base_width" (the flag is --base-width)
  std::string default_value;  // as text, e.g. "16"
  std::string help;
};

struct ModelInfo {
  std::string name, description;
  std::vector<ModelOptionInfo> options;
};

// Throws an sb::Error listing the known models when `name` is unknown, and one naming the
// model and the option when the options do not make a valid model.
ModulePtr make_model(const std::string& name, const ModelOptions& opt = {});
std::vector<ModelInfo> registered_models();

}  // namespace sb
