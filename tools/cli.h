// Shared pieces of the `smallbatch` subcommands: each add_*_command registers its flags and
// sets `action`, which main() runs inside one error handler.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <string>

#include "tools/app/checkpoint.h"

namespace sb::cli {

using Action = std::function<int()>;

// Model flags shared by train, eval and bench; `from_checkpoint` leaves them optional.
struct ModelFlags {
  std::string model = "unet-s";
  std::string norm = "gn";
  int64_t groups = 8;
  int64_t classes = 0;  // 0: from the data (or the checkpoint)
  int64_t in_channels = 3;
  int64_t base_width = 16;
  int64_t depth = 0;  // 0: the model's default
  CLI::Option *model_opt = nullptr, *norm_opt = nullptr, *groups_opt = nullptr, *classes_opt = nullptr,
              *in_opt = nullptr, *width_opt = nullptr, *depth_opt = nullptr;
  void add(CLI::App& cmd);
  bool any_given() const;
  ModelSpec spec(int64_t classes_default) const;
};

void add_train_command(CLI::App& app, Action& action);
void add_eval_command(CLI::App& app, Action& action);
void add_data_command(CLI::App& app, Action& action);     // tools/cmd_data.cpp
void add_compare_command(CLI::App& app, Action& action);  // tools/cmd_compare.cpp
void add_predict_command(CLI::App& app, Action& action);  // tools/cmd_predict.cpp
void add_models_command(CLI::App& app, Action& action);   // tools/cmd_models.cpp
void add_bench_command(CLI::App& app, Action& action);    // tools/cmd_bench.cpp

}  // namespace sb::cli
