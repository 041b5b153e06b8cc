// The report's numbers: each run's outcome gathered into its (norm label, batch size) cell, once,
// for the tables and the figures to read.
#include <algorithm>
#include <cmath>

#include "tools/app/report/report.h"

namespace sb::report {

namespace {

// Row labels in the configuration's order.
std::vector<std::string> row_labels(const std::vector<RunOutcome>& runs) {
  std::vector<std::string> labels;
  for (auto& r : runs)
    if (std::find(labels.begin(), labels.end(), r.spec.label()) == labels.end()) labels.push_back(r.spec.label());
  return labels;
}

}  // namespace

Aggregate aggregate(const CompareConfig& cfg, const std::vector<RunOutcome>& runs, double background_miou) {
  Aggregate a;
  a.batches = cfg.batch_sizes;
  a.labels = row_labels(runs);
  for (auto& r : runs) {
    Cell& c = a.cells[{r.spec.label(), r.spec.batch}];
    ++c.runs;
    if (r.diverged) ++c.diverged;
    else if (!std::isnan(r.final_miou)) c.miou.push_back(r.final_miou * 100);
    if (!std::isnan(r.batchstat_miou)) c.batchstat.push_back(r.batchstat_miou * 100);
    if (!std::isnan(r.precise_miou)) c.precise.push_back(r.precise_miou * 100);
    c.spikes += r.loss_spikes;
    if (!std::isnan(r.grad_norm_median)) c.grad_median.push_back(r.grad_norm_median);
  }
  // The BatchNorm family (bn, brn, frozenbn): the labels evaluated with batch statistics too.
  for (auto& l : a.labels)
    for (int64_t b : a.batches) {
      auto it = a.cells.find({l, b});
      if (it != a.cells.end() && !it->second.batchstat.empty()) {
        a.bn_labels.push_back(l);
        break;
      }
    }
  a.floor = background_miou * 100;
  return a;
}

}  // namespace sb::report
