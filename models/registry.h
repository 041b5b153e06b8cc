// Models by name: make_model("unet", {norm, groups, classes, in_channels, base_width, depth}),
// and the table `smallbatch models` lists.
#pragma once

#include <string>
#include <vector>

#include "layers/module.h"

namespace sb {

// One set of options for every model; each model reads the fields its ModelInfo lists and
// ignores the others (unet-s has a fixed depth).
struct ModelOptions {
  std::string norm = "gn";  // bn | gn | ln | in | none | gn+ws | brn | frozenbn
  int64_t groups = 8;
  int64_t classes = 4;
  int64_t in_channels = 3;
  int64_t base_width = 16;
  int64_t depth = 0;        // down-sampling steps (unet, fcn); 0: the model's default
  int64_t norm_warmup = 0;  // brn: steps over which r_max, d_max ramp up; frozenbn: steps before
                            // the statistics freeze (make_norm)
};

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
