// `smallbatch compare`: the main job. Parses the sweep flags, runs the sweep with progress, and
// prints the summary table and where the report is.
#include <algorithm>
#include <cerrno>
#include <unistd.h>

#include <cstdio>
#include <sstream>

#include "core/threads.h"
#include "core/io/fileio.h"
#include <filesystem>
#include <nlohmann/json.hpp>
#include <type_traits>
#include "tools/app/compare.h"
#include "tools/app/mpi_launch.h"
#include "layers/norm/norm.h"
#include "tools/cli.h"

namespace sb::cli {

// "16,8,4" -> {16, 8, 4}, naming the flag on a bad entry.
static std::vector<int64_t> parse_ints(const std::string& flag, const std::string& s) {
  std::vector<int64_t> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    char* end = nullptr;
    errno = 0;
    long long v = std::strtoll(item.c_str(), &end, 10);
    SB_CHECK(!item.empty() && end && *end == '\0' && v > 0, flag, ": expected positive whole numbers separated by "
             "commas, got '", s, "'");
    SB_CHECK(errno != ERANGE, flag, ": ", item, " is past the largest whole number (9223372036854775807)");
    // A repeat would train the same configuration twice and count it twice in the means.
    SB_CHECK(std::find(out.begin(), out.end(), v) == out.end(), flag, ": ", v, " is listed twice in '", s,
             "'; give each value once");
    out.push_back(v);
  }
  SB_CHECK(!out.empty(), flag, ": empty list");
  return out;
}

static std::vector<std::string> parse_words(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

// A sweep continued in the same --out takes its saved settings (compare.json) for every flag not
// given, so `compare --out D --seeds 5` adds seeds and nothing else, rather than the preset's
// defaults for the rest. Flags given are checked against the saved sweep by run_compare().
static void take_saved_sweep(const CLI::App& cmd, CompareConfig& cfg) {
  const std::string path = cfg.out + "/compare.json";
  if (!std::filesystem::is_regular_file(path)) return;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(path));
  } catch (const std::exception& e) {
    fail(path, ": not valid JSON (", e.what(), ")");
  }
  if (!j.is_object()) return;
  auto take = [&](const char* flag, const char* key, auto& field) {
    if ((*flag && cmd.count(flag) > 0) || !j.contains(key)) return;
    try {
      field = j.at(key).get<std::remove_reference_t<decltype(field)>>();
    } catch (const nlohmann::json::exception& e) {
      fail(path, ": \"", key, "\" is malformed (", e.what(), ")");
    }
  };
  take("--preset", "preset", cfg.preset);
  take("--seeds", "seeds", cfg.seeds);
  take("--epochs", "epochs", cfg.epochs);
  take("--data", "data", cfg.data);
  take("--model", "model", cfg.model);
  take("--base-width", "base_width", cfg.base_width);
  take("--lr", "base_lr", cfg.base_lr);
  take("--ref-batch", "ref_batch", cfg.ref_batch);
  take("--lr-scaling", "lr_scaling", cfg.lr_scaling);
  take("--norm-warmup-epochs", "norm_warmup_epochs", cfg.norm_warmup_epochs);
  take("--limit", "limit", cfg.limit);
  take("--val-limit", "val_limit", cfg.val_limit);
  take("--image-size", "image_size", cfg.image_size);
  take("--precise-bn", "precise_bn", cfg.precise_bn);
  // One K is saved as a number, several as a list; absent means runs of one process each,
  // whatever the preset's default.
  if (cmd.count("--ranks-per-run") == 0) {
    if (!j.contains("ranks_per_run")) cfg.ranks_per_run = {1};
    else if (j.at("ranks_per_run").is_number_integer()) cfg.ranks_per_run = {j.at("ranks_per_run").get<int64_t>()};
    else take("", "ranks_per_run", cfg.ranks_per_run);
  }
  take("", "warmup_epochs", cfg.warmup_epochs);
  take("", "optim", cfg.optim);
  take("", "momentum", cfg.momentum);
  take("", "weight_decay", cfg.weight_decay);
  if (cmd.count("--threads") == 0 && j.contains("threads") && j.at("threads").is_number_integer())
    cfg.threads = j.at("threads").get<int>();
  take("--norms", "norms", cfg.norms);
  take("--groups", "groups", cfg.groups);
  take("--batch-sizes", "batch_sizes", cfg.batch_sizes);
}

void add_compare_command(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("compare", "the main job: GroupNorm vs BatchNorm (and friends) across batch sizes "
                                            "and seeds, with a report");
  struct Opts {
    std::string norms, groups, batch_sizes, ranks_per_run;
    CompareConfig cfg;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("--preset", o->cfg.preset, "quick (bn, gn; at most 10 minutes on 2 cores), full (every norm, batch 32 to 1, "
                                             "3 seeds) or sync (bn, syncbn, gn over 2 and 4 ranks per run; mpirun -np 4)")
      ->capture_default_str()->check(CLI::IsMember({"quick", "full", "sync"}));
  cmd->add_option("--norms", o->norms, "comma-separated normalizations: " + norm_kinds_text() +
                                          " (quick: bn,gn; full: all; sync: bn,syncbn,gn; `smallbatch models` says what each is)");
  // In epochs, so every batch size gets the same share of the run; train's --norm-warmup counts
  // steps (it trains one batch size), hence the distinct name.
  cmd->add_option("--norm-warmup-epochs", o->cfg.norm_warmup_epochs,
                  "epochs of brn's r_max/d_max ramp and of frozenbn's BatchNorm before it freezes (default: epochs / 3; "
                  "train's --norm-warmup counts steps)")
      ->check(Positive);
  cmd->add_option("--groups", o->groups, "GroupNorm groups; several (1,2,4,8,16) sweep the group count");
  cmd->add_option("--batch-sizes", o->batch_sizes, "comma-separated images per batch (quick: 16,8,4,2; full: 32,...,1; sync: 2,1 per rank)");
  cmd->add_option("--seeds", o->cfg.seeds, "seeds per configuration (default 3)")->check(Positive);
  cmd->add_option("--epochs", o->cfg.epochs, "epochs per run, every run sees the same images (quick 12, full 16)")->check(Positive);
  cmd->add_option("--data", o->cfg.data, "data source (default: shapes:train=1024,val=128,size=32,difficulty=0.5)")->capture_default_str();
  cmd->add_option("--model", o->cfg.model, "model")->capture_default_str();
  cmd->add_option("--base-width", o->cfg.base_width, "channels of the model's first level (default 8, the presets' small model, so a sweep "
                                         "of dozens of runs fits in minutes; train's default is the model's own, 16)")->check(Positive);
  cmd->add_option("--lr", o->cfg.base_lr, "learning rate at --ref-batch (default 0.1)")->check(Positive);
  cmd->add_option("--ref-batch", o->cfg.ref_batch, "batch size at which the learning rate is --lr")
      ->capture_default_str()->check(Positive);
  cmd->add_option("--lr-scaling", o->cfg.lr_scaling, "how the learning rate follows the batch size")
      ->capture_default_str()->check(CLI::IsMember({"linear", "sqrt", "none"}));
  cmd->add_option("--limit", o->cfg.limit, "use at most N training samples")->check(Positive);
  cmd->add_option("--val-limit", o->cfg.val_limit, "use at most M validation samples")->check(Positive);
  cmd->add_option("--image-size", o->cfg.image_size, "resize or crop images to S x S")->check(Positive);
  cmd->add_option("--precise-bn", o->cfg.precise_bn,
                  "PreciseBN images: the BN family is also evaluated with running statistics recomputed over N "
                  "training images (default 1024, at most the training set)")
      ->check(Positive);
  cmd->add_option("--threads", o->cfg.threads, "threads (default: SMALLBATCH_NUM_THREADS or all cores; under mpirun, per rank: the cores shared among the machine's ranks)")->check(Positive);
  cmd->add_option("--ranks-per-run", o->ranks_per_run,
                  "under mpirun: train each run data-parallel over K consecutive ranks (K must divide the ranks; "
                  "--batch-sizes are then per rank, and syncbn joins the full preset); several, comma-separated "
                  "(sync: 4,2), sweep K");
  cmd->add_option("--out", o->cfg.out, "output directory; run again with the same one to continue a sweep")->capture_default_str();
  cmd->callback([o, cmd, &action] {
    action = [o, cmd]() -> int {
      // Under mpirun or srun: one rank of the job, which spreads the runs over the ranks.
      const int ranks = join_mpi_launch("compare");
      stdout_is_progress();  // the results go to --out
      install_stop_signals();
      CompareConfig cfg = o->cfg;
      if (!o->norms.empty()) cfg.norms = parse_words(o->norms);
      if (!o->groups.empty()) cfg.groups = parse_ints("--groups", o->groups);
      if (!o->batch_sizes.empty()) cfg.batch_sizes = parse_ints("--batch-sizes", o->batch_sizes);
      if (!o->ranks_per_run.empty()) cfg.ranks_per_run = parse_ints("--ranks-per-run", o->ranks_per_run);
      take_saved_sweep(*cmd, cfg);
      check_threads("compare", cfg.threads);
      set_num_threads(cfg.threads > 0 ? cfg.threads : default_rank_threads());
      cfg.threads = num_threads();
      cfg.apply_preset();
      if (cfg.limit > 0)
        for (int64_t b : cfg.batch_sizes)
          SB_CHECK(b <= cfg.limit, "--limit ", cfg.limit, " is smaller than batch size ", b,
                   " (--batch-sizes): a batch would hold the same samples more than once. Raise --limit or drop that batch size");
      auto plan = plan_runs(cfg);
      std::string ks;
      for (int64_t k : cfg.ranks_per_run) ks += str(ks.empty() ? " x " : " and ", k);
      ks = cfg.ranks_per_run.size() > 1 ? ks + " ranks per run" : "";
      progress("smallbatch compare (%s preset): %zu runs = %zu norms x %zu batch sizes%s x %lld seeds, %lld epochs each, "
                  "%d threads, output in %s\n",
                  cfg.preset.c_str(), plan.size(), cfg.norms.size(), cfg.batch_sizes.size(), ks.c_str(), (long long)cfg.seeds,
                  (long long)cfg.epochs, cfg.threads, cfg.out.c_str());
      if (ranks > 1)
        progress("spread over %d ranks (%d threads each); rank 0 reports for the job and writes the report\n", ranks,
                 cfg.threads);
      CompareHooks hooks;
      // Not under mpirun: it gives each rank a terminal of its own even when the job's output goes to a file.
      const bool tty = isatty(STDOUT_FILENO) && !launched_by_mpi();
      hooks.log = [tty](const std::string& m) { progress("%s%s\n", tty ? "\r\033[K" : "", m.c_str()); };
      // On a terminal, the run in training shows its progress on one line, rewritten in place.
      if (tty)
        hooks.on_step = [](const StepReport& s) {
          progress("\r\033[K%s", fit_terminal_line(str("        epoch ", s.epoch + 1, "/", s.epochs, "  step ", s.step, "/",
                                                       s.total_steps, "  loss ", s.loss, "  ",
                                                       static_cast<int>(s.images_per_s), " img/s"))
                                      .c_str());
        };
      hooks.should_stop = [] { return stop_signal() != 0; };
      CompareResult r = run_compare(cfg, hooks);
      if (r.interrupted) {
        progress("interrupted; finished runs are kept. Run the same command again to continue.\n");
        return 128 + stop_signal();
      }
      progress("\n%s\nreport: %s/report.html (tables: summary.md, summary.csv; per-epoch rows: runs.csv; "
                  "figures: fig*.png)\n",
                  r.summary_md.c_str(), cfg.out.c_str());
      return 0;
    };
  });
}

}  // namespace sb::cli
