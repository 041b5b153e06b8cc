// The `smallbatch` command line: parses the subcommand and turns every error into a message on
// stderr and a non-zero exit status.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>

#include "core/errors.h"
#include "core/threads.h"

int main(int argc, char** argv) {
  CLI::App app{"smallbatch: a small, fast, honest deep-learning training framework in C++"};
  app.require_subcommand(0, 1);
  int threads = 0;
  app.add_option("--threads", threads, "threads for OpenMP and OpenBLAS (default: SMALLBATCH_NUM_THREADS or all cores)")
      ->check(CLI::PositiveNumber);
  bool version = false;
  app.add_flag("--version", version, "print the version");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    sb::set_num_threads(threads > 0 ? threads : sb::default_num_threads());
    if (version || app.get_subcommands().empty()) {
      std::cout << "smallbatch 0.1.0\n";
      if (!version) std::cout << app.help();
      return 0;
    }
  } catch (const sb::Error& e) {
    std::cerr << "smallbatch: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
