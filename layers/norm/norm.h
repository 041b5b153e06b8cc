// The normalization unit: what a norm is called, what it needs, and how to build one. Every norm
// smallbatch compares is one entry of the registry in norm.cpp; models, flags, help texts,
// checkpoints and the comparison read the registry and never test a norm's name as text.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "layers/norm/ops.h"
#include "layers/module.h"

namespace sb {

// Which norm, with the settings a norm may read: a value that tools carry instead of a name.
struct NormSpec {
  std::string kind = "gn";  // a registry name: bn, gn, ln, in, none, gn+ws, brn, frozenbn, frn, ...
  int64_t groups = 8;       // read by norms with traits.uses_groups; narrower layers get min(groups, C)
  int64_t warmup = 0;       // training steps, read by norms with traits.uses_warmup
  int64_t sync_group = 0;   // ranks whose batches are normalized together, in groups of this many
                            // consecutive ranks (0: all), read by norms with traits.uses_sync_group
  // "gn", or with the settings the kind reads: "gn(groups=4)", "brn(warmup=30)", "syncbn(group=2)". Throws naming
  // the known kinds for an unknown one, and the setting for a malformed one.
  static NormSpec parse(const std::string& text);
  // The inverse of parse: the kind, then the settings its traits say it reads.
  std::string format() const;
  bool operator==(const NormSpec&) const = default;
};

struct NormTraits {
  bool batch_statistics = false;        // training normalizes over the batch (the BN family)
  bool running_statistics = false;      // keeps running statistics for evaluation
  bool conv_bias = false;               // the convolution before it carries a bias
  bool weight_standardization = false;  // the convolutions before it standardize their weights
  bool uses_groups = false;             // reads NormSpec::groups
  bool uses_warmup = false;             // reads NormSpec::warmup
  bool includes_activation = false;     // is a normalization-activation layer (FRN + TLU, EvoNorm):
                                        // its factory ignores the requested activation, which the
                                        // layer replaces, so nothing else is applied after it
  bool uses_sync_group = false;         // reads NormSpec::sync_group (syncbn)
};

// One registry entry. `make` builds the layer for `channels` channels with the activation that
// follows it fused in (the layer then computes act(norm(x)) itself), or, for a norm with
// traits.includes_activation, the layer alone, whose own nonlinearity takes the activation's place.
struct NormInfo {
  std::string name, help;
  NormTraits traits;
  ModulePtr (*make)(const NormSpec& spec, int64_t channels, Activation act);
};

// Every norm, in the order help texts list them.
const std::vector<NormInfo>& norm_registry();
// The entry for `kind`; throws "unknown norm 'xn' (known: bn, gn, ...)".
const NormInfo& norm_info(const std::string& kind);
// The registry's names in order, and as one "bn, gn, ..." string.
std::vector<std::string> norm_kinds();
std::string norm_kinds_text();

ModulePtr make_norm(const NormSpec& spec, int64_t channels, Activation act = Activation::None);

// Throws naming `model` unless `spec.kind` is known and, for norms that use groups, every layer
// in `widths` ({"e2", 32}, ...) splits into min(groups, width) equal groups, so a bad
// configuration is reported with the model's name before any layer is built.
void check_norm_widths(const std::string& model, const NormSpec& spec,
                       const std::vector<std::pair<std::string, int64_t>>& widths);

}  // namespace sb
