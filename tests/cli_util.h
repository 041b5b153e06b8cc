// Runs the `smallbatch` command line from the tests and captures its exit code, stdout and stderr.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace sbtest {

struct CliResult {
  int code = -1;  // the exit status, or 128 + signal
  std::string out, err;
  std::string all() const { return out + err; }
};

// `args` are passed through the shell as written (paths in the tests hold no spaces or quotes);
// `env`, when given, is a list of NAME=value words set for the command alone.
inline CliResult run_cli(const std::string& args, const std::string& env = "") {
  static std::atomic<int> counter{0};
  auto base = std::filesystem::temp_directory_path() /
              ("sb_cli_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
  std::string out = base.string() + ".out", err = base.string() + ".err";
  // Appended piece by piece: GCC 12 warns (-Wrestrict, a false positive) on a chain of +.
  std::string cmd = env.empty() ? "" : "env " + env + " ";
  cmd += "\"";
  cmd += SB_CLI_PATH;
  cmd += "\" ";
  cmd += args;
  cmd += " >";
  cmd += out;
  cmd += " 2>";
  cmd += err;
  int rc = std::system(cmd.c_str());
  auto slurp = [](const std::string& p) {
    std::ifstream f(p);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  };
  CliResult r{WIFEXITED(rc) ? WEXITSTATUS(rc) : 128 + WTERMSIG(rc), slurp(out), slurp(err)};
  std::filesystem::remove(out);
  std::filesystem::remove(err);
  return r;
}

}  // namespace sbtest
