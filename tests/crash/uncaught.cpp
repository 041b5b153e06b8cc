// For tests/crash_report.sh: a program with the command line's crash report installed whose worker
// thread throws an exception nobody catches, as a bug would (std::terminate, then SIGABRT).
#include <stdexcept>
#include <thread>

#include "tools/cli.h"

int main() {
  sb::cli::install_crash_report();
  std::thread worker([] { throw std::runtime_error("thrown by a worker thread"); });
  worker.join();
  return 0;  // not reached
}
