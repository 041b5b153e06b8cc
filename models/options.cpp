// The model option table.
#include "models/options.h"

namespace sb {

const std::vector<ModelOptionField>& model_option_fields() {
  using O = ModelOptions;
  static const std::vector<ModelOptionField> fields = {
      {"norm", "normalization: " + norm_kinds_text() + " (`smallbatch models` says what each is)",
       [](O& o) { return &o.norm.kind; }, nullptr, 0, false, true, true},
      {"groups", "groups of gn, gn+ws and evonorm-s0; a layer narrower than this gets one per channel", nullptr,
       [](O& o) { return &o.norm.groups; }, 1, false, true, true},
      {"classes", "classes predicted (train and eval default to the data's)", nullptr,
       [](O& o) { return &o.classes; }, 1, true, true, true},
      {"in_channels", "input channels", nullptr, [](O& o) { return &o.in_channels; }, 1, false, true, true},
      {"base_width", "channels of the first level; each level down doubles them", nullptr,
       [](O& o) { return &o.base_width; }, 1, false, false, true},
      {"depth", "down-sampling steps of unet and fcn (default: the model's)", nullptr,
       [](O& o) { return &o.depth; }, 1, true, false, true},
      {"norm_warmup", "training steps of brn's r_max/d_max ramp and of frozenbn's warm-up before freezing "
                      "(train: 0 means one epoch)",
       nullptr, [](O& o) { return &o.norm.warmup; }, 0, true, false, false},
      {"syncbn_group", "ranks whose batches syncbn normalizes together, in groups of this many consecutive ranks "
                       "(0: all ranks of the run)",
       nullptr, [](O& o) { return &o.norm.sync_group; }, 0, true, false, false},
  };
  return fields;
}

std::string option_text(const ModelOptionField& f, const ModelOptions& o) {
  ModelOptions copy = o;
  return f.text ? *f.text(copy) : std::to_string(*f.number(copy));
}

}  // namespace sb
