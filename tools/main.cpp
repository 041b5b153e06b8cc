// The `smallbatch` command line: parses the subcommand and turns every error into a message on
// stderr and a non-zero exit status (1 for errors, CLI11's codes for bad flags).
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "core/distributed.h"
#include "core/errors.h"
#include "core/io/fileio.h"
#include "core/platform.h"
#include "core/threads.h"
#include "tools/app/mpi_launch.h"
#include "tools/app/provenance.h"
#include "tools/cli.h"

namespace {

// Edits (insertions, deletions, substitutions) between a and b.
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

// The candidate closest to `typed`, when it is close enough to be what was meant; else "".
std::string closest(const std::string& typed, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_d = std::max<size_t>(2, typed.size() / 3) + 1;
  for (const std::string& c : candidates) {
    const size_t d = edit_distance(typed, c);
    if (d < best_d || (c.rfind(typed, 0) == 0 && typed.size() >= 3 && best.empty())) best = c, best_d = d;
  }
  return best;
}

// Writes `text` to stderr in as few write() calls as the system allows, not piece by piece as
// `std::cerr << a << b` does: under mpirun the ranks' lines share one output, and a message
// written in pieces can have another rank's line land in the middle of it.
// A closed stderr leaves nothing more to say.
void print_error(const std::string& text) { (void)sb::write_all(STDERR_FILENO, text.data(), text.size()); }

// A parse error as every other error reads, "smallbatch CMD: error: ...", with a suggestion for a
// mistyped flag or subcommand. Keeps CLI11's exit code (100 to 127).
int parse_error(CLI::App& app, const CLI::ParseError& e) {
  if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
  CLI::App* cmd = &app;
  for (CLI::App* sub = &app; sub;) {
    std::vector<CLI::App*> parsed = sub->get_subcommands();
    sub = parsed.empty() ? nullptr : parsed.front();
    if (sub) cmd = sub;
  }
  const std::string name = cmd == &app ? "smallbatch" : "smallbatch " + cmd->get_name();
  std::string message = e.what();
  if (dynamic_cast<const CLI::ExtrasError*>(&e)) {
    message.clear();
    std::vector<std::string> flags, subcommands;
    for (const CLI::Option* o : cmd->get_options())
      for (const std::string& l : o->get_lnames()) flags.push_back("--" + l);
    for (const CLI::App* s : cmd->get_subcommands({})) subcommands.push_back(s->get_name());
    const std::vector<std::string> rest = cmd->remaining();
    for (size_t i = 0; i < rest.size(); ++i) {
      const std::string& arg = rest[i];
      const bool flag = arg.rfind("-", 0) == 0;
      // "--epoch 1": the 1 is the unknown flag's value, not a second mistake.
      if (flag && arg.find('=') == std::string::npos && i + 1 < rest.size() && rest[i + 1].rfind("-", 0) != 0) ++i;
      const std::string typed = arg.substr(0, arg.find('='));
      if (!message.empty()) message += "; ";
      message += flag ? "unknown flag '" + typed + "'" : "unexpected argument '" + arg + "'";
      const std::string guess = closest(typed, flag ? flags : subcommands);
      if (!guess.empty()) message += "; did you mean '" + guess + "'?";
    }
    if (message.empty()) message = e.what();
  }
  print_error(name + ": error: " + message + "\nRun '" + name + " --help' for " +
              (cmd == &app ? "the commands" : "its flags") + ".\n");
  return e.get_exit_code();
}

// "rank 1 of 4: " in a data-parallel run, else "".
std::string rank_prefix() {
  const sb::Communicator& w = sb::world();
  return w.size() > 1 ? "rank " + std::to_string(w.rank()) + " of " + std::to_string(w.size()) + ": " : "";
}

// A failed rank ends the whole job at once (its message already printed): the other ranks would
// otherwise wait for it in their next collective for ever.
int end_job(int status) {
  if (sb::world().size() > 1) sb::world().abort(status);
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  sb::set_command_line(argc, argv);
  // A closed stdout (`smallbatch train | head -1`) makes writes fail with EPIPE instead of killing
  // the process: see finish_stdout and progress in tools/cli.h.
  std::signal(SIGPIPE, SIG_IGN);
  sb::cli::install_crash_report();
  CLI::App app{"smallbatch: a small, fast, honest deep-learning training framework in C++.\n"
               "It trains segmentation networks and measures how GroupNorm and BatchNorm compare "
               "at small batch sizes."};
  app.require_subcommand(0, 1);
  // The version, and what this build runs on here: a timing means little without it.
  app.set_version_flag("--version", [] {
    sb::check_environment();
    return std::string("smallbatch ") + SMALLBATCH_VERSION + "\n" + sb::platform_summary();
  });
  sb::cli::Action action;
  sb::cli::add_compare_command(app, action);
  sb::cli::add_train_command(app, action);
  sb::cli::add_eval_command(app, action);
  sb::cli::add_predict_command(app, action);
  sb::cli::add_data_command(app, action);
  sb::cli::add_models_command(app, action);
  sb::cli::add_bench_command(app, action);
  sb::cli::add_doctor_command(app, action);
  sb::cli::refuse_integer_overflow(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return sb::cli::finish_stdout(parse_error(app, e), "");  // --help and --version print to stdout
  } catch (const std::exception& e) {  // --version reads the environment, which may be malformed
    print_error(std::string("smallbatch: error: ") + e.what() + "\n");
    return 1;
  }
  if (!action) {
    std::cout << app.help();
    return sb::cli::finish_stdout(0, "");
  }
  try {
    sb::check_environment();
    // Only train and compare share work over MPI ranks; any other command under mpirun would run
    // once per rank, each printing (and writing) the same, so it is refused by name.
    const std::string command = app.get_subcommands()[0]->get_name();
    SB_CHECK(!sb::launched_by_mpi() || command == "train" || command == "compare", command,
             " runs in one process: start it without mpirun or srun (train and compare are the commands "
             "that use several ranks)");
    int status = action();
    return sb::cli::finish_stdout(status, app.get_subcommands()[0]->get_name());
  } catch (const std::exception& e) {  // sb::Error and the rest
    print_error("smallbatch " + app.get_subcommands()[0]->get_name() + ": error: " + rank_prefix() + e.what() + "\n");
    return end_job(1);
  }
}
