// The options every model is built from, stated once: the table below drives the command-line
// flags, the help texts, the checkpoint JSON and (through make_model) the constructors.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "layers/norm/norm.h"

namespace sb {

struct ModelOptions {
  NormSpec norm;           // kind, groups (gn, gn+ws), warmup steps (brn, frozenbn)
  int64_t classes = 4;
  int64_t in_channels = 3;
  int64_t base_width = 16;
  int64_t depth = 0;       // down-sampling steps (unet, fcn); 0: the model's default
  bool operator==(const ModelOptions&) const = default;
};

// One row of the table: a field of ModelOptions and what to say about it.
struct ModelOptionField {
  std::string key;   // the checkpoint JSON key; the flag is --key with '-' for '_'
  std::string help;  // one line, for flags and `smallbatch models`
  // The field: the norm's kind (text) or a whole number.
  std::string* (*text)(ModelOptions&);
  int64_t* (*number)(ModelOptions&);
  int64_t min_value;       // numbers: 1 (positive) or 0 (zero allowed)
  bool zero_means_auto;    // 0 stands for a value chosen later (from the data, the model, an epoch)
  bool required_in_json;   // older checkpoints lack the others, which then take their defaults
  bool written_when_zero;  // false: left out of the JSON at 0, for readers that predate it
};

// In the order flags and help list them.
const std::vector<ModelOptionField>& model_option_fields();

// The field's value as text ("gn", "16").
std::string option_text(const ModelOptionField& f, const ModelOptions& o);

}  // namespace sb
