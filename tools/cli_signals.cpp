// How `train` and `compare` stop on a signal: SIGINT, SIGTERM and SIGHUP ask the training loop to
// finish its step, save the state and return, and the command exits with 128 + the signal.
#include <csignal>

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

}  // namespace sb::cli
