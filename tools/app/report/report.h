// Internal to the compare report (tools/app/report/): the numbers aggregated once from the runs,
// and the steps that turn them into tables, figures and the HTML page. write_report (report.cpp,
// declared in tools/app/compare.h) runs them in that order.
#pragma once

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "tools/app/compare.h"
#include "tools/viz/plot.h"

namespace sb::report {

// One cell of the tables, (norm label, batch size): its runs' results over seeds.
struct Cell {
  std::vector<double> miou, batchstat;  // val mIoU (%) of the runs that did not diverge; with batch statistics
  std::vector<double> precise;          // with PreciseBN's recomputed running statistics (BN family)
  int64_t runs = 0, diverged = 0, spikes = 0;
  std::vector<double> grad_median;
  double mean() const { return mean_of(miou); }
  double std() const { return std_of(miou); }
  static double mean_of(const std::vector<double>& v) {
    if (v.empty()) return NAN;
    double s = 0;
    for (double x : v) s += x;
    return s / v.size();
  }
  // Sample standard deviation over seeds (0 for a single seed).
  static double std_of(const std::vector<double>& v) {
    if (v.size() < 2) return v.empty() ? NAN : 0.0;
    double m = mean_of(v), s = 0;
    for (double x : v) s += (x - m) * (x - m);
    return std::sqrt(s / (v.size() - 1));
  }
  // The middle value (the mean of the two middle ones for an even count); NaN for none.
  static double median_of(std::vector<double> v) {
    if (v.empty()) return NAN;
    std::sort(v.begin(), v.end());
    const size_t h = v.size() / 2;
    return v.size() % 2 ? v[h] : 0.5 * (v[h - 1] + v[h]);
  }
};

using Cells = std::map<std::pair<std::string, int64_t>, Cell>;

// What the tables and figures read, computed once from the runs (aggregate.cpp).
struct Aggregate {
  std::vector<std::string> labels;     // row labels in the configuration's order
  std::vector<int64_t> batches;        // columns: the configured batch sizes, largest first
  Cells cells;                         // only the cells that have runs
  std::vector<std::string> bn_labels;  // the labels also evaluated with batch statistics (BN family)
  double floor = NAN;                  // val mIoU (%) of predicting background everywhere; NaN: unknown
};

Aggregate aggregate(const CompareConfig& cfg, const std::vector<RunOutcome>& runs, double background_miou);

// tables.cpp: runs.csv (one row per run per epoch), summary.csv (one row per cell) and the
// Markdown of summary.md (the tables, the BN gaps, a conclusion, the machine).
std::string runs_csv(const std::vector<RunOutcome>& runs);
std::string summary_csv(const Aggregate& a);
std::string summary_markdown(const CompareConfig& cfg, const std::vector<RunOutcome>& runs, const Aggregate& a,
                             double seconds);

// figures.cpp: the figures (four, and fig5 for runs over several ranks), each also written as a PNG into cfg.out.
struct Figures {
  plot::Canvas miou_vs_batch;                // fig1
  plot::Canvas val_curves;                   // fig2
  plot::Canvas bn_gap;                       // fig3
  std::optional<plot::Canvas> predictions;   // fig4, when a BN or GN run saved its predictions
  int64_t classes_seen = 0;                  // the class indices fig4 shows, for its legend
  std::optional<plot::Canvas> miou_vs_norm_batch;  // fig5, when runs trained over several ranks
};
Figures draw_figures(const CompareConfig& cfg, const std::vector<RunOutcome>& runs, const Aggregate& a);
// The color of class index k in the mask pictures (0 = background stays dark, 255 = ignored).
plot::Color class_color(int64_t k);

// html.cpp: report.html, one self-contained page (the summary's tables and the figures inline).
std::string html_page(const CompareConfig& cfg, const std::vector<RunOutcome>& runs, const Aggregate& a,
                      const std::string& summary, const Figures& figs);

}  // namespace sb::report
