// The command line's dealings with the process: how `train` and `compare` stop on a signal
// (SIGINT, SIGTERM and SIGHUP ask the training loop to finish its step, save the state and
// return; the command exits with 128 + the signal), what a failed write to stdout means, and
// what a crash prints.
#include <execinfo.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <iostream>
#include <string>
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

// ---- a crash says what it was and where, then ends as it would have ----

#if defined(__SANITIZE_ADDRESS__)
#define SB_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SB_SANITIZED 1
#endif
#endif

static char g_crash_who[96];  // "smallbatch (pid 123, rank 1): ", made before any crash

static void on_crash(int sig) {
  // Only async-signal-safe calls: a fixed buffer, write(2), and backtrace (preloaded at install).
  char msg[320];
  size_t n = 0;
  auto put = [&](const char* s) {
    while (*s && n + 1 < sizeof msg) msg[n++] = *s++;
  };
  put(g_crash_who);
  put("crashed on signal ");
  char num[8];
  int k = 0;
  for (int v = sig; k == 0 || v > 0; v /= 10) num[k++] = char('0' + v % 10);
  while (k > 0 && n + 1 < sizeof msg) msg[n++] = num[--k];
  put(sig == SIGABRT ? " (abort)" : sig == SIGSEGV ? " (segmentation fault)" : sig == SIGBUS ? " (bus error)"
      : sig == SIGFPE ? " (arithmetic exception)" : sig == SIGILL ? " (illegal instruction)" : "");
  put(": a bug in smallbatch or a library it uses; the stack:\n");
  void* frames[48];
  const int depth = backtrace(frames, 48);
  (void)!::write(STDERR_FILENO, msg, n);
  backtrace_symbols_fd(frames, depth, STDERR_FILENO);
  signal(sig, SIG_DFL);  // end as the signal would have: the exit status still says which
  raise(sig);
}

void install_crash_report() {
#ifndef SB_SANITIZED  // the sanitizers report crashes themselves, better
  std::string who = "smallbatch (pid " + std::to_string(::getpid());
  if (const char* r = std::getenv("OMPI_COMM_WORLD_RANK"); r && *r) who += std::string(", rank ") + r;
  who += "): ";
  std::snprintf(g_crash_who, sizeof g_crash_who, "%s", who.c_str());
  void* warm[1];
  backtrace(warm, 1);  // loads the unwinder now: its first call may allocate, not safe in a handler
  for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT}) {
    struct sigaction sa {};
    sa.sa_handler = on_crash;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESETHAND | SA_NODEFER;
    sigaction(sig, &sa, nullptr);
  }
  // An exception nobody catches (one thrown out of a destructor, a thread or an OpenMP region):
  // name it before the abort.
  std::set_terminate([] {
    std::string what = "std::terminate called without an exception";
    if (std::exception_ptr e = std::current_exception()) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& x) {
        what = std::string("uncaught exception: ") + x.what();
      } catch (...) {
        what = "uncaught exception of a type that is not std::exception";
      }
    }
    const std::string line = std::string(g_crash_who) + what + "\n";
    (void)!::write(STDERR_FILENO, line.data(), line.size());
    std::abort();
  });
#endif
}

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
