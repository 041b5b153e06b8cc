// The `smallbatch` command line: parses the subcommand and turns every error into a message on
// stderr and a non-zero exit status (1 for errors, CLI11's codes for bad flags).
#include <csignal>
#include <cstdio>
#include <iostream>

#include "core/errors.h"
#include "core/platform.h"
#include "core/threads.h"
#include "tools/cli.h"

int main(int argc, char** argv) {
  // A closed stdout (`smallbatch train | head -1`) makes writes fail with EPIPE instead of killing
  // the process: see finish_stdout and progress in tools/cli.h.
  std::signal(SIGPIPE, SIG_IGN);
  CLI::App app{"smallbatch: a small, fast, honest deep-learning training framework in C++.\n"
               "It trains segmentation networks and measures how GroupNorm and BatchNorm compare "
               "at small batch sizes."};
  app.require_subcommand(0, 1);
  // The version, and what this build runs on here: a timing means little without it.
  app.set_version_flag("--version", [] { return std::string("smallbatch ") + SMALLBATCH_VERSION + "\n" + sb::platform_summary(); });
  sb::cli::Action action;
  sb::cli::add_compare_command(app, action);
  sb::cli::add_train_command(app, action);
  sb::cli::add_eval_command(app, action);
  sb::cli::add_predict_command(app, action);
  sb::cli::add_data_command(app, action);
  sb::cli::add_models_command(app, action);
  sb::cli::add_bench_command(app, action);
  sb::cli::add_doctor_command(app, action);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return sb::cli::finish_stdout(app.exit(e), "");  // --help and --version print to stdout
  }
  if (!action) {
    std::cout << app.help();
    return sb::cli::finish_stdout(0, "");
  }
  try {
    int status = action();
    return sb::cli::finish_stdout(status, app.get_subcommands()[0]->get_name());
  } catch (const sb::Error& e) {
    std::cerr << "smallbatch " << app.get_subcommands()[0]->get_name() << ": error: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "smallbatch " << app.get_subcommands()[0]->get_name() << ": error: " << e.what() << "\n";
    return 1;
  }
}
