// The norm registry: one entry per normalization, in the order help texts list them. A new
// norm is its layer plus one entry here (README, "Adding a norm").
#include "layers/norm/norm.h"

#include <algorithm>

#include "layers/norm/batch_norm.h"
#include "layers/norm/batch_renorm.h"
#include "layers/norm/evo_norm.h"
#include "layers/norm/group_norm.h"
#include "layers/norm/sync_batch_norm.h"
#include "layers/simple.h"

namespace sb {

namespace {

BatchNormConfig bn_config(Activation act) {
  BatchNormConfig c;
  c.activation = act;
  return c;
}

ModulePtr make_gn(const NormSpec& s, int64_t c, Activation act) {
  SB_CHECK(s.groups > 0, "norm '", s.kind, "': groups must be positive, got ", s.groups);
  return std::make_shared<GroupNorm>(std::min(s.groups, c), c, 1e-5f, true, act);
}

// Traits, in NormTraits' order: batch_statistics, running_statistics, conv_bias,
// weight_standardization, uses_groups, uses_warmup, includes_activation, uses_sync_group.
const std::vector<NormInfo> kRegistry = {
    {"bn", "BatchNorm2d(C)", {true, true, false, false, false, false},
     [](const NormSpec&, int64_t c, Activation act) -> ModulePtr {
       return std::make_shared<BatchNorm2d>(c, bn_config(act));
     }},
    {"syncbn", "SyncBatchNorm(C): BatchNorm whose statistics span the ranks of a data-parallel run "
               "(groups of --syncbn-group consecutive ranks); bn in a single process",
     {true, true, false, false, false, false, false, true},
     [](const NormSpec& s, int64_t c, Activation act) -> ModulePtr {
       return std::make_shared<SyncBatchNorm>(c, static_cast<int>(s.sync_group), bn_config(act));
     }},
    {"gn", "GroupNorm(min(groups, C), C)", {false, false, false, false, true, false}, make_gn},
    {"ln", "GroupNorm(1, C), LayerNorm over (C, H, W)", {},
     [](const NormSpec&, int64_t c, Activation act) -> ModulePtr {
       return std::make_shared<GroupNorm>(1, c, 1e-5f, true, act);
     }},
    {"in", "GroupNorm(C, C), InstanceNorm with affine parameters", {},
     [](const NormSpec&, int64_t c, Activation act) -> ModulePtr {
       return std::make_shared<GroupNorm>(c, c, 1e-5f, true, act);
     }},
    {"none", "no normalization; the convolutions carry a bias", {false, false, true, false, false, false},
     [](const NormSpec&, int64_t, Activation act) -> ModulePtr {
       if (act == Activation::ReLU) return std::make_shared<ReLU>();
       return std::make_shared<Identity>();
     }},
    {"gn+ws", "GroupNorm as gn, after convolutions with Weight Standardization",
     {false, false, false, true, true, false}, make_gn},
    {"brn", "BatchRenorm2d(C), Batch Renormalization; r_max, d_max ramp up over warmup steps",
     {true, true, false, false, false, true},
     [](const NormSpec& s, int64_t c, Activation act) -> ModulePtr {
       BatchRenormConfig r;
       r.ramp_steps = s.warmup;
       return std::make_shared<BatchRenorm2d>(c, r, bn_config(act));
     }},
    {"frozenbn", "FreezingBatchNorm2d(C): BatchNorm for warmup steps, then frozen to its running statistics",
     {true, true, false, false, false, true},
     [](const NormSpec& s, int64_t c, Activation act) -> ModulePtr {
       return std::make_shared<FreezingBatchNorm2d>(c, s.warmup, bn_config(act));
     }},
    // Normalization-activation layers: the requested activation (the block's ReLU) is replaced by
    // the layer's own nonlinearity, so `act` is ignored.
    {"frn", "FilterResponseNormTlu2d(C), FRN + TLU: max(weight * x / sqrt(mean_HW(x^2) + 1e-5) + bias, tau)",
     {false, false, false, false, false, false, true},
     [](const NormSpec&, int64_t c, Activation) -> ModulePtr {
       return std::make_shared<FilterResponseNormTlu2d>(c);
     }},
    {"evonorm-s0", "EvoNorm2dS0(C, min(groups, C)): x * sigmoid(v * x) / group_std(x) * weight + bias",
     {false, false, false, false, true, false, true},
     [](const NormSpec& s, int64_t c, Activation) -> ModulePtr {
       SB_CHECK(s.groups > 0, "norm '", s.kind, "': groups must be positive, got ", s.groups);
       return std::make_shared<EvoNorm2dS0>(c, std::min(s.groups, c));
     }},
    {"evonorm-b0", "EvoNorm2dB0(C): x / max(sqrt(batch_var + 1e-3), v * x + instance_std(x)) * weight + bias",
     {true, true, false, false, false, false, true},
     [](const NormSpec&, int64_t c, Activation) -> ModulePtr {
       return std::make_shared<EvoNorm2dB0>(c);
     }},
};

// "12" as an int64 >= 0, or throws naming the setting.
int64_t parse_setting(const std::string& text, const std::string& key, const std::string& value) {
  SB_CHECK(!value.empty() && value.size() <= 18 && std::all_of(value.begin(), value.end(), ::isdigit),
           "norm '", text, "': ", key, " must be a whole number, got '", value, "'");
  return std::stoll(value);
}

}  // namespace

const std::vector<NormInfo>& norm_registry() { return kRegistry; }

std::vector<std::string> norm_kinds() {
  std::vector<std::string> names;
  for (const auto& n : kRegistry) names.push_back(n.name);
  return names;
}

std::string norm_kinds_text() {
  std::string s;
  for (const auto& n : kRegistry) s += (s.empty() ? "" : ", ") + n.name;
  return s;
}

const NormInfo& norm_info(const std::string& kind) {
  for (const auto& n : kRegistry)
    if (n.name == kind) return n;
  fail("unknown norm '", kind, "' (known: ", norm_kinds_text(), ")");
}

NormSpec NormSpec::parse(const std::string& text) {
  NormSpec s;
  const size_t open = text.find('(');
  s.kind = text.substr(0, open);
  const NormTraits& t = norm_info(s.kind).traits;
  if (open == std::string::npos) return s;
  SB_CHECK(text.back() == ')', "norm '", text, "': expected kind(key=value, ...)");
  std::string rest = text.substr(open + 1, text.size() - open - 2);
  while (!rest.empty()) {
    const size_t comma = rest.find(',');
    std::string item = rest.substr(0, comma);
    rest = comma == std::string::npos ? "" : rest.substr(comma + 1);
    while (!item.empty() && item.front() == ' ') item.erase(item.begin());
    const size_t eq = item.find('=');
    const std::string key = item.substr(0, eq), value = eq == std::string::npos ? "" : item.substr(eq + 1);
    if (key == "groups" && t.uses_groups) s.groups = parse_setting(text, key, value);
    else if (key == "warmup" && t.uses_warmup) s.warmup = parse_setting(text, key, value);
    else if (key == "group" && t.uses_sync_group) s.sync_group = parse_setting(text, key, value);
    else fail("norm '", text, "': '", s.kind, "' has no setting '", key, "'");
  }
  return s;
}

std::string NormSpec::format() const {
  const NormTraits& t = norm_info(kind).traits;
  if (t.uses_groups) return str(kind, "(groups=", groups, ")");
  if (t.uses_warmup) return str(kind, "(warmup=", warmup, ")");
  if (t.uses_sync_group) return sync_group > 0 ? str(kind, "(group=", sync_group, ")") : kind;
  return kind;
}

ModulePtr make_norm(const NormSpec& spec, int64_t channels, Activation act) {
  return norm_info(spec.kind).make(spec, channels, act);
}

void check_norm_widths(const std::string& model, const NormSpec& spec,
                       const std::vector<std::pair<std::string, int64_t>>& widths) {
  const NormInfo* info = nullptr;
  try {
    info = &norm_info(spec.kind);
  } catch (const Error& e) {
    fail(model, ": ", e.what());
  }
  if (!info->traits.uses_groups) return;
  SB_CHECK(spec.groups > 0, model, ": norm '", spec.kind, "' needs groups > 0, got groups=", spec.groups);
  for (const auto& [where, w] : widths) {
    const int64_t g = std::min(spec.groups, w);  // make_gn's rule: narrow layers get one group per channel
    SB_CHECK(w % g == 0, model, ": norm '", spec.kind, "' with groups=", spec.groups, " cannot split ", where,
             ": ", w, " channels are not divisible by ", g, " groups; choose a base_width whose multiples are "
             "divisible by ", spec.groups, ", or other groups");
  }
}

}  // namespace sb
