// `smallbatch doctor`: what this machine runs, so a timing can be compared with another: the
// CPU, the BLAS library and the kernels it chose, smallbatch's own kernels, threads and load.
#include <cstdio>

#include "core/platform.h"
#include "core/threads.h"
#include "tools/app/provenance.h"
#include "tools/cli.h"

namespace sb::cli {

void add_doctor_command(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("doctor", "show the CPU, the BLAS kernels, smallbatch's kernels and the threads in use");
  static int threads = 0;
  static bool json = false;
  cmd->add_option("--threads", threads, "threads (default: SMALLBATCH_NUM_THREADS or all cores)")->check(Positive);
  cmd->add_flag("--json", json, "print one JSON object");
  cmd->callback([&action] {
    action = []() -> int {
      set_num_threads(threads > 0 ? threads : default_num_threads());
      nlohmann::json j = platform_json();
      if (json) {
        std::printf("%s\n", j.dump().c_str());
      } else {
        std::printf("smallbatch %s\n%s", SMALLBATCH_VERSION, platform_lines(j).c_str());
        if (j.contains("blas_warning")) std::printf("warning    %s\n", j["blas_warning"].get<std::string>().c_str());
      }
      return 0;  // main() turns a failed write to stdout into an error (finish_stdout)
    };
  });
}

}  // namespace sb::cli
