// `smallbatch models`: the registered models, what each is, and the options it reads with
// their defaults, straight from the registry so the listing cannot drift from the code.
#include <algorithm>
#include <cstdio>
#include <sstream>
#include <string>

#include "layers/norm/norm.h"
#include "models/registry.h"
#include "tools/cli.h"

namespace sb::cli {

namespace {
// Words of `text` on lines of at most `width` characters, each line starting with `indent`.
std::string wrap(const std::string& text, const std::string& indent, size_t width) {
  std::istringstream words(text);
  std::string out, line, w;
  while (words >> w) {
    if (!line.empty() && indent.size() + line.size() + 1 + w.size() > width) {
      out += indent + line + "\n";
      line.clear();
    }
    line += (line.empty() ? "" : " ") + w;
  }
  if (!line.empty()) out += indent + line + "\n";
  return out;
}

// ModelOptions fields are snake_case; the command-line flags spell them with dashes.
std::string flag_of(std::string field) {
  for (char& c : field)
    if (c == '_') c = '-';
  return "--" + field;
}
}  // namespace

void add_models_command(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("models", "list the registered models and their options");
  cmd->callback([&action] {
    action = []() -> int {
      bool first = true;
      for (const ModelInfo& m : registered_models()) {
        std::printf("%s%s\n%s", first ? "" : "\n", m.name.c_str(), wrap(m.description, "  ", 92).c_str());
        std::printf("  options (default):\n");
        for (const ModelOptionInfo& o : m.options) {
          std::string head = "    " + flag_of(o.name) + " (" + o.default_value + ")";
          if (head.size() < 30) head.resize(30, ' ');
          else head += " ";
          std::printf("%s%s\n", head.c_str(), o.help.c_str());
        }
        first = false;
      }
      // The norms, from their registry (layers/norm/norm.cpp), with the traits the tools act on.
      std::printf("\nnormalizations (--norm, compare --norms):\n");
      for (const NormInfo& n : norm_registry()) {
        const NormTraits& t = n.traits;
        std::string notes;
        for (auto [on, what] : {std::pair{t.batch_statistics, "batch statistics"},
                                {t.running_statistics, "running statistics"}, {t.uses_groups, "--groups"},
                                {t.uses_warmup, "--norm-warmup"}, {t.conv_bias, "conv bias"},
                                {t.weight_standardization, "weight standardization"},
                                {t.includes_activation, "replaces the ReLU"}})
          if (on) notes += std::string(notes.empty() ? " [" : ", ") + what;
        if (!notes.empty()) notes += "]";
        std::string head = "    " + n.name;
        head.resize(std::max<size_t>(head.size() + 1, 16), ' ');
        std::string lines = wrap(n.help + notes, std::string(head.size(), ' '), 92);
        std::printf("%s%s", head.c_str(), lines.substr(head.size()).c_str());
      }
      return 0;
    };
  });
}

}  // namespace sb::cli
