// The command line's dealings with the process: how `train` and `compare` stop on a signal
// (SIGINT, SIGTERM and SIGHUP ask the training loop to finish its step, save the state and
// return; the command exits with 128 + the signal), and what a failed write to stdout means.
#include <cerrno>
#include <csignal>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <thread>

#include "core/errors.h"

#include "tools/cli.h"

namespace sb::cli {

static volatile std::sig_atomic_t g_stop_signal = 0;

static void on_stop_signal(int sig) { g_stop_signal = sig; }

void install_stop_signals() {
  g_stop_signal = 0;
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) {
    struct sigaction old {};
    if (sigaction(sig, nullptr, &old) == 0 && old.sa_handler == SIG_IGN) continue;  // nohup, a background job
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    // SA_RESETHAND: a second signal of the same kind takes the default action and ends the
    // process at once. SA_RESTART: the loaders' reads and waits are not cut short.
    sa.sa_flags = SA_RESETHAND | SA_RESTART;
    sigaction(sig, &sa, nullptr);
  }
}

int stop_signal() { return g_stop_signal; }

static bool g_progress_only = false;  // this command's stdout is progress, not its result
static bool g_stdout_closed = false;  // a progress write failed: print nothing more

void stdout_is_progress() { g_progress_only = true; }

void progress(const char* format, ...) {
  if (g_stdout_closed) return;
  va_list args;
  va_start(args, format);
  std::vprintf(format, args);
  va_end(args);
  if (std::fflush(stdout) != 0 || std::ferror(stdout)) {
    int err = errno;
    g_stdout_closed = true;
    std::fprintf(stderr, "smallbatch: standard output failed (%s); the work goes on and is saved as before, "
                 "without printing progress\n", std::strerror(err));
  }
}

int finish_stdout(int status, const std::string& command) {
  std::cout.flush();
  bool failed = std::fflush(stdout) != 0;
  int err = errno;
  failed = failed || std::ferror(stdout) || !std::cout.good();
  if (!failed || g_progress_only) return status;
  std::fprintf(stderr, "smallbatch%s%s: error: writing to standard output failed%s%s; the output is incomplete\n",
               command.empty() ? "" : " ", command.c_str(), err ? ": " : "", err ? std::strerror(err) : "");
  return status == 0 ? 1 : status;
}

}  // namespace sb::cli

namespace sb::cli {

void warn(const std::string& command, const std::string& message) {
  std::fprintf(stderr, "smallbatch %s: warning: %s\n", command.c_str(), message.c_str());
}

void check_threads(const std::string& command, int threads) {
  SB_CHECK(threads <= kMaxThreads, "--threads: expected at most ", kMaxThreads, ", got ", threads);
  const unsigned cores = std::thread::hardware_concurrency();
  if (cores > 0 && threads > static_cast<int>(cores))
    warn(command, str("--threads ", threads, " is more than the ", cores,
                      " cores here: the threads take turns, and the run is slower, not faster"));
}

}  // namespace sb::cli
