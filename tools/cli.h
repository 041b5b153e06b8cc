// Shared pieces of the `smallbatch` subcommands: each add_*_command registers its flags and
// sets `action`, which main() runs inside one error handler.
#pragma once

#include <CLI/CLI.hpp>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <string>

#include "tools/app/checkpoint.h"

namespace sb::cli {

using Action = std::function<int()>;

// Number checks for flags. CLI11's PositiveNumber says "Value -3 not in range 0.000000 to
// 17976931348623157...(300 digits)"; these say what is wanted: "--batch: must be positive, got -3".
inline std::string number_check(const std::string& s, bool zero_ok) {
  double v = 0;
  if (!CLI::detail::lexical_cast(s, v)) return "expected a number, got '" + s + "'";
  if (!std::isfinite(v)) return "expected a finite number, got " + s;
  if (v > 0 || (zero_ok && v == 0)) return {};
  return std::string(zero_ok ? "must be zero or positive" : "must be positive") + ", got " + s;
}
inline const CLI::Validator Positive([](std::string& s) { return number_check(s, false); }, "POSITIVE", "Positive");
// --seed N: a whole number from 0 to 2^64 - 1. Without this, "-1" parses and wraps around to
// 18446744073709551615, which config.json then records.
inline const CLI::Validator Seed(
    [](std::string& s) {
      if (s.empty() || s.find_first_not_of("0123456789") != std::string::npos)
        return "expected a whole number from 0 to 18446744073709551615, got '" + s + "'";
      return std::string();
    },
    "SEED", "Seed");
// --workers N (loader threads): zero or more, at most kMaxWorkers (each holds batches in memory;
// thousands of threads only exhaust the process).
inline constexpr int kMaxWorkers = 256;
inline const CLI::Validator Workers(
    [](std::string& s) {
      std::string e = number_check(s, true);
      if (!e.empty()) return e;
      double v = 0;
      CLI::detail::lexical_cast(s, v);
      if (v > kMaxWorkers)
        return "expected at most " + std::to_string(kMaxWorkers) + " loader threads, got " + s + " (2 to 8 keep a training fed)";
      return std::string();
    },
    "WORKERS", "Workers");
inline const CLI::Validator NonNegative([](std::string& s) { return number_check(s, true); }, "NONNEGATIVE",
                                        "NonNegative");

// Whether s is a whole number past the int64 (or uint64) range, which the flag's integer
// conversion (strtoll) would saturate, silently turning 99999999999999999999 into 9223372036854775807.
inline bool whole_number_overflows(const std::string& s, bool is_unsigned) {
  const size_t digits = std::min(s.find_first_not_of("+-"), s.size());
  if (digits == s.size() || s.find_first_not_of("0123456789", digits) != std::string::npos) return false;
  errno = 0;
  if (is_unsigned)
    (void)std::strtoull(s.c_str(), nullptr, 10);
  else
    (void)std::strtoll(s.c_str(), nullptr, 10);
  return errno == ERANGE;
}
// Every integer flag of `app` and its subcommands (CLI11 names their type INT or UINT, lists
// included) refuses values past the int64 / uint64 range instead of saturating them.
inline void refuse_integer_overflow(CLI::App& app) {
  for (CLI::Option* opt : app.get_options()) {
    const std::string type = opt->get_type_name();
    const bool is_unsigned = type.rfind("UINT", 0) == 0;
    if (!is_unsigned && type.rfind("INT", 0) != 0) continue;
    opt->check(CLI::Validator(
        [is_unsigned](std::string& s) {
          if (!whole_number_overflows(s, is_unsigned)) return std::string();
          return "expected at most " + std::string(is_unsigned ? "18446744073709551615" : "9223372036854775807") +
                 ", got " + s;
        },
        "", "NoOverflow"));
  }
  for (CLI::App* sub : app.get_subcommands({})) refuse_integer_overflow(*sub);
}

// `line` cut to the terminal's width (minus one column, so it never wraps): a progress line
// rewritten with \r must stay on one row, or each update stacks another one.
inline std::string fit_terminal_line(std::string line) {
  winsize ws{};
  if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1 && line.size() >= ws.ws_col)
    line.resize(ws.ws_col - 1);
  return line;
}

// Model flags shared by train, eval and bench, one per row of models/options.h's table;
// `from_checkpoint` leaves them optional.
struct ModelFlags {
  std::string model = "unet-s";
  ModelOptions values = auto_defaults();
  CLI::Option* model_opt = nullptr;
  std::vector<std::pair<const ModelOptionField*, CLI::Option*>> given_opts;
  // from_checkpoint (eval): the help says the defaults come from the checkpoint.
  void add(CLI::App& cmd, bool from_checkpoint = false);
  bool any_given() const;
  ModelSpec spec(int64_t classes_default) const;
  // base with the flags given on the command line applied over it; the others keep base's values.
  ModelSpec override_given(ModelSpec base) const;
  // ModelOptions' defaults, with 0 for the options resolved later (classes: from the data).
  static ModelOptions auto_defaults() {
    ModelOptions o;
    o.classes = 0;
    return o;
  }
};

// SIGINT, SIGTERM and SIGHUP, from now until the process ends, only record that they came (a
// second one of the same kind ends the process); stop_signal() is the first one's number, or 0.
// A signal the process started with ignored (nohup's SIGHUP) stays ignored. The training loop
// polls stop_signal() after every step, saves and returns; the command exits with 128 + it.
void install_stop_signals();
int stop_signal();
// A crash (segmentation fault, abort, an uncaught exception) prints a line saying what it was,
// with the process and MPI rank, then the stack, to stderr, and ends with the same signal as before.
void install_crash_report();

// Standard output. main() ignores SIGPIPE, so a closed stdout (`smallbatch train | head -1`)
// makes writes fail instead of killing the process. For commands whose result goes to stdout
// (eval, data, models, bench, ...) main() checks the flush at the end: a failed write (a full
// disk, a closed pipe) is an error, status 1. Commands whose results go to files (train,
// compare, predict) call stdout_is_progress() and print through progress(): once a write
// fails, nothing more is printed, one note goes to stderr, and the work and its saving go on.
void stdout_is_progress();
void progress(const char* format, ...) __attribute__((format(printf, 1, 2)));
// main()'s end: `status`, or 1 with a message naming the command when the result could not be
// written to stdout.
int finish_stdout(int status, const std::string& command);

// One line on stderr, "smallbatch CMD: warning: MESSAGE": for input that is legal but likely not
// what was meant. The run goes on.
void warn(const std::string& command, const std::string& message);
// --threads N: above kMaxThreads an error, above the machine's cores a warning (0: the default).
inline constexpr int kMaxThreads = 1024;
void check_threads(const std::string& command, int threads);

void add_train_command(CLI::App& app, Action& action);
void add_eval_command(CLI::App& app, Action& action);
void add_data_command(CLI::App& app, Action& action);     // tools/cmd_data.cpp
void add_compare_command(CLI::App& app, Action& action);  // tools/cmd_compare.cpp
void add_predict_command(CLI::App& app, Action& action);  // tools/cmd_predict.cpp
void add_models_command(CLI::App& app, Action& action);   // tools/cmd_models.cpp
void add_bench_command(CLI::App& app, Action& action);    // tools/cmd_bench.cpp
void add_doctor_command(CLI::App& app, Action& action);   // tools/cmd_doctor.cpp

}  // namespace sb::cli
