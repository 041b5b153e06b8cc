// Models by name: make_model("unet-s", {norm, groups, classes, in_channels, base_width}).
#pragma once

#include <string>
#include <vector>

#include "layers/module.h"

namespace sb {

struct ModelOptions {
  std::string norm = "gn";  // bn | gn | ln | in | none
  int64_t groups = 8;
  int64_t classes = 4;
  int64_t in_channels = 3;
  int64_t base_width = 16;
};

struct ModelInfo {
  std::string name, description;
};

// Throws an sb::Error listing the known models when `name` is unknown.
ModulePtr make_model(const std::string& name, const ModelOptions& opt = {});
std::vector<ModelInfo> registered_models();

}  // namespace sb
