// The doctest runner for the whole suite. `smallbatch train` without --out saves into a fresh
// folder under $SMALLBATCH_RUNS_DIR (default ./runs): the suite points it at a temporary folder of
// its own, removed at the end, so the tests that train without --out leave nothing behind.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

int main(int argc, char** argv) {
  const bool own = std::getenv("SMALLBATCH_RUNS_DIR") == nullptr;
  const std::filesystem::path runs =
      std::filesystem::temp_directory_path() / ("sb_test_runs_" + std::to_string(::getpid()));
  if (own) ::setenv("SMALLBATCH_RUNS_DIR", runs.c_str(), 1);
  doctest::Context context(argc, argv);
  const int status = context.run();
  std::error_code ec;
  if (own) std::filesystem::remove_all(runs, ec);
  return status;
}
