// write_report: the compare report's files from the runs' outcomes, in order: the CSV tables,
// summary.md, the four figures, report.html.
#include "core/io/fileio.h"
#include "tools/app/compare.h"
#include "tools/app/report/report.h"

namespace sb {

std::string write_report(const CompareConfig& cfg, const std::vector<RunOutcome>& runs, double seconds,
                         double background_miou) {
  const std::string& out = cfg.out;
  const report::Aggregate a = report::aggregate(cfg, runs, background_miou);
  write_file_atomic(out + "/runs.csv", report::runs_csv(runs));
  write_file_atomic(out + "/summary.csv", report::summary_csv(a));
  std::string summary = report::summary_markdown(cfg, runs, a, seconds);
  write_file_atomic(out + "/summary.md", summary);
  const report::Figures figs = report::draw_figures(cfg, runs, a);
  write_file_atomic(out + "/report.html", report::html_page(cfg, runs, a, summary, figs));
  return summary;
}

}  // namespace sb
