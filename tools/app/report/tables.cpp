// The report's tables: runs.csv and summary.csv for scripts, and summary.md for people (mIoU and
// error per norm and batch size, stability, BatchNorm's train/test gap overall and per layer, the
// background floor, a conclusion in words, and the machine it ran on).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <sstream>

#include "core/io/fileio.h"
#include "tools/app/report/report.h"

namespace sb::report {

namespace {

std::string fmt(double v, int decimals = 1) {
  if (std::isnan(v)) return "-";
  char b[32];
  std::snprintf(b, sizeof b, "%.*f", decimals, v);
  std::string t = b;
  // A tiny negative rounds to "-0.0", which reads as a sign that isn't there.
  if (t[0] == '-' && t.find_first_not_of("-0.") == std::string::npos) t.erase(0, 1);
  return t;
}

std::string csv_num(double v) {
  if (std::isnan(v)) return "";
  char b[32];
  std::snprintf(b, sizeof b, "%.6g", v);
  return b;
}

// A Markdown table's header: `first`, then one column per batch size.
void table_header(std::ostringstream& md, const char* first, const std::vector<int64_t>& batches) {
  md << "| " << first << " |";
  for (int64_t b : batches) md << " " << b << " |";
  md << "\n|---|";
  for (size_t i = 0; i < batches.size(); ++i) md << "---|";
  md << "\n";
}

// "mean ± std" of a cell's mIoU (or error, 100 - mIoU), with its diverged runs.
std::string cell_text(const Cell& c, bool error) {
  if (c.miou.empty()) return str("diverged (", c.diverged, "/", c.runs, ")");
  // One value has no spread: "± 0.0" would claim a precision nobody measured.
  std::string t = fmt(error ? 100 - c.mean() : c.mean()) + (c.miou.size() > 1 ? " ± " + fmt(c.std()) : "");
  if (c.diverged) t += str(" (", c.diverged, "/", c.runs, " diverged)");
  return t;
}

// Runs over K ranks each (--ranks-per-run): the images a norm normalizes over apart from the
// images a step optimizes over. bn takes each rank's B images, syncbn all K x B, the per-sample
// norms (gn and the rest) one image; the runs of one K and B optimize over K x B at the same
// learning rate. Beside it, what a step cost: its wall time and syncbn's collectives in it.
void normalization_batch_table(std::ostringstream& md, const std::vector<RunOutcome>& runs, const Aggregate& a) {
  struct Row {
    std::string kind;  // the label without its K: "bn", "gn(G=4)"
    int64_t ranks = 1;
    bool synced = false;  // normalizes over all the run's ranks (syncbn)
    std::vector<double> step_ms, syncbn_ms;
  };
  std::map<std::pair<std::string, int64_t>, Row> rows;  // (label, batch)
  std::vector<int64_t> ks;
  for (const RunOutcome& r : runs) {
    if (r.spec.ranks <= 1) continue;
    Row& row = rows[{r.spec.label(), r.spec.batch}];
    RunSpec without_k = r.spec;  // K has its own column
    without_k.rank_sweep = false;
    row.kind = without_k.label(), row.ranks = r.spec.ranks;
    row.synced = norm_info(r.spec.norm.kind).traits.uses_sync_group;
    if (!std::isnan(r.step_ms)) row.step_ms.push_back(r.step_ms), row.syncbn_ms.push_back(r.syncbn_comm_ms);
    if (std::find(ks.begin(), ks.end(), r.spec.ranks) == ks.end()) ks.push_back(r.spec.ranks);
  }
  if (rows.empty()) return;
  std::sort(ks.begin(), ks.end(), std::greater<>());
  md << "\nRuns trained over K ranks each: val mIoU (%) by the batch each norm normalizes over (bn: a rank's "
     << "images; syncbn: all K ranks' images; per-sample norms: one image), at the optimization batch and "
     << "learning rate of K x images per rank. Time per training step (ms, median over seeds, this machine) "
     << "and of it syncbn's collectives (waiting for the other ranks included).\n\n"
     << "| norm | K | images per rank | optimization batch | normalization batch | val mIoU (%) | ms per step | "
        "syncbn collectives (ms per step) |\n|---|---|---|---|---|---|---|---|\n";
  for (int64_t k : ks)
    for (int64_t b : a.batches)
      for (auto& l : a.labels) {
        auto row = rows.find({l, b});
        auto cell = a.cells.find({l, b});
        if (row == rows.end() || row->second.ranks != k || cell == a.cells.end()) continue;
        const Row& r = row->second;
        const bool batch_stats = std::find(a.bn_labels.begin(), a.bn_labels.end(), l) != a.bn_labels.end();
        const std::string normalized = r.synced ? str(k * b) : batch_stats ? str(b) : std::string("1 image");
        md << "| " << r.kind << " | " << k << " | " << b << " | " << k * b << " | " << normalized << " | "
           << cell_text(cell->second, false) << " | " << fmt(Cell::median_of(r.step_ms)) << " | "
           << (r.synced ? fmt(Cell::median_of(r.syncbn_ms)) : std::string("-")) << " |\n";
      }
}

// Rows = norms, columns = batch sizes: the paper's Table 2 layout.
void miou_table(std::ostringstream& md, const Aggregate& a, bool error) {
  table_header(md, "norm \\ batch", a.batches);
  for (auto& l : a.labels) {
    md << "| " << l << " |";
    for (int64_t b : a.batches) {
      auto it = a.cells.find({l, b});
      md << " " << (it == a.cells.end() ? "" : cell_text(it->second, error)) << " |";
    }
    md << "\n";
  }
}

void stability_table(std::ostringstream& md, const Aggregate& a) {
  md << "\nStability: diverged runs / runs, loss spikes (32-image stretches of training whose mean loss is above 1.5x "
        "the median of the 10 stretches before), "
        "median gradient norm.\n\n";
  table_header(md, "norm \\ batch", a.batches);
  for (auto& l : a.labels) {
    md << "| " << l << " |";
    for (int64_t b : a.batches) {
      auto it = a.cells.find({l, b});
      if (it == a.cells.end()) {
        md << " |";
        continue;
      }
      const Cell& c = it->second;
      md << " " << c.diverged << "/" << c.runs << ", " << c.spikes << " spikes, grad " << fmt(Cell::mean_of(c.grad_median), 2)
         << " |";
    }
    md << "\n";
  }
}

// The BatchNorm family's mIoU with running statistics, with batch statistics, and the gap; with
// PreciseBN measured, also its mIoU and the gap taken apart: the part PreciseBN closes (stale
// running averages: precise - running) and the part it leaves (batch - precise).
void bn_gap_table(std::ostringstream& md, const Aggregate& a, bool synced) {
  bool precise = false;
  for (auto& l : a.bn_labels)
    for (int64_t b : a.batches)
      if (auto it = a.cells.find({l, b}); it != a.cells.end() && !it->second.precise.empty()) precise = true;
  md << "\nBatchNorm's train/test gap: val mIoU (%) with running statistics (eval mode) vs with the "
        "statistics of each evaluation batch of the training batch size"
     << (synced ? " (syncbn: of all its ranks' images together)" : "")
     << ".";
  if (precise)
    md << " PreciseBN: with running statistics recomputed after training over training images (a true "
          "average with the final weights). The gap splits into \"stale\" (precise - running: what the "
          "exponential averages of statistics of older weights cost, which PreciseBN closes) and \"adapted\" "
          "(batch - precise: what stays when the averages are exact, the weights having learned to work with "
          "the noise of small-batch statistics).";
  md << "\n\n";
  table_header(md, "eval \\ batch", a.batches);
  std::vector<std::string> modes = {"running", "batch", "gap"};
  if (precise) modes = {"running", "precise", "batch", "gap", "stale", "adapted"};
  for (auto& l : a.bn_labels)
    for (const std::string& mode : modes) {
      md << "| " << l << " " << mode << " |";
      for (int64_t b : a.batches) {
        auto it = a.cells.find({l, b});
        if (it == a.cells.end()) {
          md << " |";
          continue;
        }
        double run = it->second.mean(), bat = Cell::mean_of(it->second.batchstat);
        double pre = Cell::mean_of(it->second.precise);
        double v = mode == "running" ? run : mode == "batch" ? bat : mode == "gap" ? bat - run
                 : mode == "precise" ? pre : mode == "stale" ? pre - run : bat - pre;
        md << " " << fmt(v) << " |";
      }
      md << "\n";
    }
}

// Per layer: how far the statistics of validation batches (of the training batch size) are
// from the running ones, averaged over seeds.
void layer_gap_tables(std::ostringstream& md, const std::vector<RunOutcome>& runs, const Aggregate& a) {
  for (auto& l : a.bn_labels) {
    std::vector<std::string> layers;
    std::map<std::pair<std::string, int64_t>, std::vector<const LayerGap*>> per;
    for (auto& r : runs)
      if (r.spec.label() == l)
        for (auto& g : r.gaps) {
          if (std::find(layers.begin(), layers.end(), g.layer) == layers.end()) layers.push_back(g.layer);
          per[{g.layer, r.spec.batch}].push_back(&g);
        }
    if (layers.empty()) continue;
    md << "\n" << l << ", per layer: mean over channels of |batch mean - running mean| / running std, and of "
       << "|log(batch var / running var)|, on validation batches of the training batch size (mean over seeds).\n\n";
    table_header(md, "layer \\ batch", a.batches);
    for (auto& layer : layers) {
      md << "| " << layer << " |";
      for (int64_t b : a.batches) {
        auto it = per.find({layer, b});
        if (it == per.end()) {
          md << " |";
          continue;
        }
        double shift = 0, logvar = 0;
        for (auto* g : it->second) shift += g->mean_shift, logvar += g->log_var_ratio;
        md << " " << fmt(shift / it->second.size(), 2) << " / " << fmt(logvar / it->second.size(), 2) << " |";
      }
      md << "\n";
    }
  }
}

// What predicting background everywhere scores, and a warning when no cell beats it.
void floor_note(std::ostringstream& md, const Aggregate& a) {
  if (std::isnan(a.floor)) return;
  md << "\nPredicting background everywhere scores " << fmt(a.floor) << " val mIoU on this validation set.";
  bool any_above = false;
  for (auto& [key, c] : a.cells) any_above = any_above || (!c.miou.empty() && c.mean() > a.floor + 0.05);
  if (!any_above)
    md << " **No cell beats it: the models did not learn. Train longer (--epochs) or raise the learning rate "
          "(--lr).**";
  md << "\n";
}

// A few sentences read off the mIoU table: the norms at the smallest batch size, ranked, and
// whether the gap between the first and the last exceeds the spread over seeds; then how each
// norm moved from the largest batch to the smallest.
std::string conclusion(const std::vector<std::string>& labels, const std::vector<int64_t>& batches,
                       const Cells& cells, int64_t seeds) {
  if (batches.empty() || labels.empty()) return "";
  const int64_t small = batches.back(), large = batches.front();
  std::vector<std::pair<double, std::string>> ranked;
  for (auto& l : labels) {
    auto it = cells.find({l, small});
    if (it != cells.end() && !it->second.miou.empty()) ranked.push_back({it->second.mean(), l});
  }
  if (ranked.empty()) return str("At batch ", small, " every run diverged.");
  std::sort(ranked.begin(), ranked.end(), std::greater<>());
  std::ostringstream c;
  auto score = [&](const std::string& l, int64_t b) {
    const Cell& cell = cells.at({l, b});
    return seeds > 1 && cell.miou.size() > 1 ? str(fmt(cell.mean()), " ± ", fmt(cell.std())) : fmt(cell.mean());
  };
  c << "At " << small << (small == 1 ? " image" : " images") << " per batch, ";
  for (size_t i = 0; i < ranked.size(); ++i)
    c << (i == 0 ? "" : i + 1 == ranked.size() ? " and " : ", ") << ranked[i].second << " scores "
      << score(ranked[i].second, small);
  c << " val mIoU.";
  if (ranked.size() > 1) {
    const Cell& best = cells.at({ranked.front().second, small});
    const Cell& worst = cells.at({ranked.back().second, small});
    const double gap = ranked.front().first - ranked.back().first;
    c << " " << ranked.front().second << " leads " << ranked.back().second << " by " << fmt(gap) << " points";
    if (seeds > 1)
      c << (gap > best.std() + worst.std() ? ", more than" : ", within") << " the two cells' spreads over seeds ("
        << fmt(best.std() + worst.std()) << ")";
    else
      c << " (one seed: no spread to compare with)";
    c << ".";
  }
  if (large != small) {
    c << " From " << large << " to " << small << " images per batch";
    bool first = true;
    for (auto& l : labels) {
      auto a = cells.find({l, large}), b = cells.find({l, small});
      if (a == cells.end() || b == cells.end() || a->second.miou.empty() || b->second.miou.empty()) continue;
      const double d = b->second.mean() - a->second.mean();
      c << (first ? ", " : "; ") << l << " " << (d >= 0 ? "gains " : "loses ") << fmt(std::abs(d));
      first = false;
    }
    c << (first ? " no norm has both cells." : " points.");
  }
  return c.str();
}

// "CPU ... (avx512); BLAS core ... (...); smallbatch kernels ...; N threads; load ..." from the
// sweep's platform.json (written by the session that made this report), or "" without one.
std::string machine_line(const std::string& out) {
  const std::string path = out + "/platform.json";
  if (!std::filesystem::exists(path)) return "";
  try {
    const nlohmann::json j = nlohmann::json::parse(read_file(path));
    std::string line = str(j.at("cpu").get<std::string>(), " (", j.at("cpu_simd").get<std::string>(), "); BLAS ",
                           j.at("blas_core").get<std::string>(), " kernels (", j.at("blas_core_origin").get<std::string>(),
                           "); smallbatch kernels ", j.at("kernels").get<std::string>(),
                           j.contains("conv3x3") ? ", 3x3 " + j["conv3x3"].get<std::string>() : std::string(), "; ",
                           j.at("threads").get<int>(),
                           " threads");
    if (j.contains("load_average")) line += str("; load average ", fmt(j["load_average"][0].get<double>(), 2), " at the start");
    return line;
  } catch (const std::exception& e) {
    return str("unknown (", path, " unreadable: ", e.what(), ")");
  }
}

}  // namespace

std::string runs_csv(const std::vector<RunOutcome>& runs) {
  std::string csv =
      "norm,groups,batch,seed,lr,epoch,step,train_loss,val_loss,val_pixel_acc,val_miou,seconds,diverged,host,rank\n";
  for (auto& r : runs)
    for (auto& e : r.epochs)
      csv += str(r.spec.label(), ",", r.spec.norm.groups, ",", r.spec.batch, ",", r.spec.seed, ",", csv_num(r.spec.lr), ",",
                 e.epoch, ",", e.step, ",", csv_num(e.train_loss), ",", csv_num(e.val_loss), ",",
                 csv_num(e.val_pixel_acc), ",", csv_num(e.val_miou), ",", csv_num(e.seconds), ",",
                 r.diverged ? 1 : 0, ",", r.host, ",", r.rank, "\n");
  return csv;
}

std::string summary_csv(const Aggregate& a) {
  std::string csv = "norm,batch,runs,diverged,miou_mean,miou_std,error_mean,error_std,batchstat_miou_mean,loss_spikes,grad_norm_median,precise_miou_mean\n";
  for (auto& l : a.labels)
    for (int64_t b : a.batches) {
      auto it = a.cells.find({l, b});
      if (it == a.cells.end()) continue;
      const Cell& c = it->second;
      csv += str(l, ",", b, ",", c.runs, ",", c.diverged, ",", csv_num(c.mean()), ",", csv_num(c.std()), ",",
                 csv_num(100 - c.mean()), ",", csv_num(c.std()), ",", csv_num(Cell::mean_of(c.batchstat)), ",",
                 c.spikes, ",", csv_num(Cell::mean_of(c.grad_median)), ",", csv_num(Cell::mean_of(c.precise)), "\n");
    }
  return csv;
}

std::string summary_markdown(const CompareConfig& cfg, const std::vector<RunOutcome>& runs, const Aggregate& a,
                             double seconds) {
  std::ostringstream md;
  md << "Validation mIoU (%) after " << cfg.epochs << " epochs, mean ± std over " << cfg.seeds
     << (cfg.seeds == 1 ? " seed" : " seeds") << "; columns are images per batch"
     << (cfg.ranks_per_run.size() > 1   ? std::string(" per rank; a row's K is the ranks each of its runs trained over")
         : cfg.max_ranks_per_run() > 1 ? str(" per rank, each run over ", cfg.max_ranks_per_run(), " ranks")
                                       : std::string())
     << ".\n\n";
  miou_table(md, a, false);
  md << "\nValidation error (100 - mIoU, %), as the paper's Table 2 reports error.\n\n";
  miou_table(md, a, true);
  normalization_batch_table(md, runs, a);
  stability_table(md, a);
  if (!a.bn_labels.empty()) {
    // A norm that normalizes over all of a run's ranks (syncbn), trained over several.
    const bool synced = std::any_of(runs.begin(), runs.end(), [](const RunOutcome& r) {
      return r.spec.ranks > 1 && norm_info(r.spec.norm.kind).traits.uses_sync_group;
    });
    bn_gap_table(md, a, synced);
    layer_gap_tables(md, runs, a);
  }
  floor_note(md, a);
  md << "\n" << conclusion(a.labels, a.batches, a.cells, cfg.seeds) << "\n";
  md << "\n" << runs.size() << " runs in " << fmt(seconds / 60, 1) << " min (this session; finished runs "
     << "loaded from disk take no time).\n";
  const std::string machine = machine_line(cfg.out);
  if (!machine.empty()) md << "\nMeasured on: " << machine << "\n";
  return md.str();
}

}  // namespace sb::report
