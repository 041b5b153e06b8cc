// report.html: one self-contained page, the summary's Markdown tables turned into HTML tables,
// the figures inline as data URIs with their captions, the configuration and the machine.
#include <algorithm>
#include <filesystem>
#include <sstream>

#include "core/io/fileio.h"
#include "tools/app/report/report.h"

namespace sb::report {

namespace {

// Text made safe inside HTML: paths and data specs may hold <, > and &.
std::string html_escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else if (c == '&') out += "&amp;";
    else out += c;
  }
  return out;
}

// Markdown tables to HTML, line by line; other non-empty lines become paragraphs.
void markdown_to_html(std::ostringstream& html, const std::string& summary) {
  std::istringstream lines(summary);
  std::string line;
  bool in_table = false;
  while (std::getline(lines, line)) {
    if (line.rfind("|", 0) == 0) {
      if (line.rfind("|---", 0) == 0) continue;
      if (!in_table) html << "<table>";
      bool head = !in_table;
      in_table = true;
      html << "<tr>";
      std::string cell;
      std::istringstream cs(line.substr(1));
      while (std::getline(cs, cell, '|')) html << (head ? "<th>" : "<td>") << cell << (head ? "</th>" : "</td>");
      html << "</tr>";
    } else {
      if (in_table) html << "</table>";
      in_table = false;
      if (!line.empty()) html << "<p>" << line << "</p>";
    }
  }
  if (in_table) html << "</table>";
}

void figure(std::ostringstream& html, int number, const std::string& alt, const std::string& uri,
            const std::string& caption) {
  html << "<figure><img alt=\"" << alt << "\" src=\"" << uri << "\"><figcaption><b>Figure " << number << ".</b> "
       << caption << "</figcaption></figure>";
}

// Fig4's caption, with a color swatch for every class it shows.
std::string predictions_caption(int64_t smallest, int64_t classes_seen) {
  std::string legend;
  for (int64_t k = 0; k < std::max<int64_t>(2, classes_seen); ++k) {
    const plot::Color c = class_color(k);
    legend += str("<span style=\"display:inline-block;width:0.9em;height:0.9em;background:rgb(", int(c.r), ",",
                  int(c.g), ",", int(c.b), ");border:1px solid #888;margin:0 0.3em 0 0.8em\"></span>class ", k,
                  k == 0 ? " (background)" : "");
  }
  return str("Predictions of the same validation images by the first seed's models at ", smallest,
             smallest == 1 ? " image" : " images", " per batch. Classes: ", legend,
             "<span style=\"display:inline-block;width:0.9em;height:0.9em;background:#fff;border:1px solid #888;"
             "margin:0 0.3em 0 0.8em\"></span>ignored (255).");
}

bool any_precise(const Aggregate& a) {
  for (auto& [key, cell] : a.cells)
    if (!cell.precise.empty()) return true;
  return false;
}

void figures(std::ostringstream& html, const CompareConfig& cfg, const Aggregate& a, const Figures& figs) {
  html << "<h2>Figures</h2>";
  figure(html, 1, "val mIoU vs batch size", plot::png_data_uri(figs.miou_vs_batch),
         str("Validation mIoU after ", cfg.epochs, " epochs against images per batch, largest batch on the left as in "
             "the tables; points are means over ", cfg.seeds, cfg.seeds == 1 ? " seed" : " seeds",
             cfg.seeds > 1 ? ", bars one standard deviation" : "",
             std::isnan(a.floor) ? "" : "; the dashed line is what predicting background everywhere scores",
             ". A norm that does not depend on the batch draws a flat line."));
  figure(html, 2, "validation curves", plot::png_data_uri(figs.val_curves),
         "Validation mIoU after every epoch, mean over seeds, one panel per batch size: whether a run was still "
         "improving when training stopped, and whether it was unstable on the way.");
  figure(html, 3, "BN train/test gap", plot::png_data_uri(figs.bn_gap),
         "The BatchNorm family's train/test gap: validation mIoU with the statistics of each evaluation batch "
         "(of the training batch size) minus with the running statistics used at test time. A positive bar means "
         "the running averages, not the weights, cost those points."
             + std::string(any_precise(a) ? " With PreciseBN measured, each gap also shows its two parts: stale "
               "(PreciseBN's recomputed statistics minus the running ones: what the stale averages cost) and "
               "adapted (batch minus PreciseBN: what exact averages do not recover, because the weights adapted "
               "to the noise of batch statistics)." : ""));
  if (figs.predictions)
    figure(html, 4, "predictions", plot::png_data_uri(*figs.predictions),
           predictions_caption(a.batches.back(), figs.classes_seen));
  if (figs.miou_vs_norm_batch)
    figure(html, 5, "val mIoU vs normalization batch", plot::png_data_uri(*figs.miou_vs_norm_batch),
           "Runs trained over K ranks each, one row per K. Left: validation mIoU against the number of images a "
           "norm normalizes over. Each solid line joins bn (a rank's images) to syncbn (all K ranks' images) at the "
           "same optimization batch and learning rate; the dashed line of the same color is gn at that batch, which "
           "normalizes one image and needs no communication. Right: the time per training step on this machine, and "
           "the part of syncbn's step spent in its collectives (waiting for the other ranks included).");
}

}  // namespace

std::string html_page(const CompareConfig& cfg, const std::vector<RunOutcome>& runs, const Aggregate& a,
                      const std::string& summary, const Figures& figs) {
  std::ostringstream html;
  html << "<!doctype html><html><head><meta charset=\"utf-8\"><title>smallbatch compare</title><style>"
          "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
          "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:4px 8px;text-align:right}"
          "th:first-child,td:first-child{text-align:left}img{max-width:100%;border:1px solid #ddd;margin:1em 0}"
          "pre{background:#f4f4f4;padding:1em;overflow:auto}</style></head><body>";
  html << "<h1>GroupNorm vs BatchNorm at small batch sizes</h1><p>" << runs.size() << " runs of " << cfg.model
       << " on <code>" << html_escape(cfg.data) << "</code>. Every run sees the same images (" << cfg.epochs
       << " epochs), the same data order and initial weights per seed; the learning rate scales " << cfg.lr_scaling
       << " with batch size from " << cfg.base_lr << " at batch " << cfg.ref_batch << ".</p>";
  markdown_to_html(html, summary);
  figures(html, cfg, a, figs);
  html << "<h2>Configuration</h2><pre>" << html_escape(cfg.to_json().dump(2)) << "</pre>";
  if (std::filesystem::exists(cfg.out + "/platform.json"))
    html << "<h2>Machine</h2><pre>" << html_escape(read_file(cfg.out + "/platform.json")) << "</pre>";
  html << "</body></html>\n";
  return html.str();
}

}  // namespace sb::report
