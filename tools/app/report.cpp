// The comparison report: runs.csv, summary.csv, summary.md, four PNG figures and a
// self-contained report.html, all computed from the runs' outcomes.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <sstream>

#include "core/io/fileio.h"
#include "core/io/safetensors.h"
#include "tools/app/compare.h"
#include "tools/app/plot.h"

namespace sb {

namespace {

struct Cell {
  std::vector<double> miou, batchstat;
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
};

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

// Row labels in the configuration's order.
std::vector<std::string> row_labels(const std::vector<RunOutcome>& runs) {
  std::vector<std::string> labels;
  for (auto& r : runs)
    if (std::find(labels.begin(), labels.end(), r.spec.label()) == labels.end()) labels.push_back(r.spec.label());
  return labels;
}

// Distinct colors for class indices in mask pictures (0 = background stays dark).
plot::Color class_color(int64_t k) {
  static const plot::Color pal[] = {{30, 30, 30},    {230, 159, 0},  {86, 180, 233}, {0, 158, 115},
                                    {240, 228, 66},  {0, 114, 178},  {213, 94, 0},   {204, 121, 167},
                                    {150, 150, 150}, {120, 60, 20},  {40, 200, 200}, {255, 255, 255}};
  if (k == 255) return {255, 255, 255};
  return pal[k % 12];
}

plot::Canvas mask_canvas(const int64_t* m, int64_t H, int64_t W) {
  plot::Canvas c(static_cast<int>(W), static_cast<int>(H));
  for (int64_t y = 0; y < H; ++y)
    for (int64_t x = 0; x < W; ++x) c.set_pixel(static_cast<int>(x), static_cast<int>(y), class_color(m[y * W + x]));
  return c;
}

// An image (C, H, W) of normalized values shown with its own min..max stretched to 0..255.
plot::Canvas image_canvas(const Tensor& img) {
  int64_t C = img.size(0), H = img.size(1), W = img.size(2);
  float lo = INFINITY, hi = -INFINITY;
  for (float v : img) lo = std::min(lo, v), hi = std::max(hi, v);
  float scale = hi > lo ? 255.f / (hi - lo) : 0.f;
  plot::Canvas c(static_cast<int>(W), static_cast<int>(H));
  for (int64_t y = 0; y < H; ++y)
    for (int64_t x = 0; x < W; ++x) {
      auto ch = [&](int64_t k) {
        return static_cast<uint8_t>(std::lround((img[(std::min(k, C - 1) * H + y) * W + x] - lo) * scale));
      };
      c.set_pixel(static_cast<int>(x), static_cast<int>(y), {ch(0), ch(1), ch(2)});
    }
  return c;
}

}  // namespace

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

// "CPU ... (avx512); BLAS core ... (...); smallbatch kernels ...; N threads; load ..." from the
// sweep's platform.json (written by the session that made this report), or "" without one.
std::string machine_line(const std::string& out) {
  const std::string path = out + "/platform.json";
  if (!std::filesystem::exists(path)) return "";
  try {
    const nlohmann::json j = nlohmann::json::parse(read_file(path));
    std::string line = str(j.at("cpu").get<std::string>(), " (", j.at("cpu_simd").get<std::string>(), "); BLAS ",
                           j.at("blas_core").get<std::string>(), " kernels (", j.at("blas_core_origin").get<std::string>(),
                           "); smallbatch kernels ", j.at("kernels").get<std::string>(), "; ", j.at("threads").get<int>(),
                           " threads");
    if (j.contains("load_average")) line += str("; load average ", fmt(j["load_average"][0].get<double>(), 2), " at the start");
    return line;
  } catch (const std::exception& e) {
    return str("unknown (", path, " unreadable: ", e.what(), ")");
  }
}

// A few sentences read off the mIoU table: the norms at the smallest batch size, ranked, and
// whether the gap between the first and the last exceeds the spread over seeds; then how each
// norm moved from the largest batch to the smallest.
std::string conclusion(const std::vector<std::string>& labels, const std::vector<int64_t>& batches,
                       const std::map<std::pair<std::string, int64_t>, Cell>& cells, int64_t seeds) {
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

std::string write_report(const CompareConfig& cfg, const std::vector<RunOutcome>& runs, double seconds,
                         double background_miou) {
  namespace fs = std::filesystem;
  const std::string& out = cfg.out;
  std::vector<int64_t> batches = cfg.batch_sizes;
  std::vector<std::string> labels = row_labels(runs);
  std::map<std::pair<std::string, int64_t>, Cell> cells;
  for (auto& r : runs) {
    Cell& c = cells[{r.spec.label(), r.spec.batch}];
    ++c.runs;
    if (r.diverged) ++c.diverged;
    else if (!std::isnan(r.final_miou)) c.miou.push_back(r.final_miou * 100);
    if (!std::isnan(r.batchstat_miou)) c.batchstat.push_back(r.batchstat_miou * 100);
    c.spikes += r.loss_spikes;
    if (!std::isnan(r.grad_norm_median)) c.grad_median.push_back(r.grad_norm_median);
  }

  // runs.csv: one row per run per epoch.
  std::string runs_csv = "norm,groups,batch,seed,lr,epoch,step,train_loss,val_loss,val_pixel_acc,val_miou,seconds,diverged\n";
  for (auto& r : runs)
    for (auto& e : r.epochs)
      runs_csv += str(r.spec.label(), ",", r.spec.groups, ",", r.spec.batch, ",", r.spec.seed, ",", csv_num(r.spec.lr), ",",
                      e.epoch, ",", e.step, ",", csv_num(e.train_loss), ",", csv_num(e.val_loss), ",",
                      csv_num(e.val_pixel_acc), ",", csv_num(e.val_miou), ",", csv_num(e.seconds), ",",
                      r.diverged ? 1 : 0, "\n");
  write_file_atomic(out + "/runs.csv", runs_csv);

  std::string sum_csv = "norm,batch,runs,diverged,miou_mean,miou_std,error_mean,error_std,batchstat_miou_mean,loss_spikes,grad_norm_median\n";
  for (auto& l : labels)
    for (int64_t b : batches) {
      auto it = cells.find({l, b});
      if (it == cells.end()) continue;
      const Cell& c = it->second;
      sum_csv += str(l, ",", b, ",", c.runs, ",", c.diverged, ",", csv_num(c.mean()), ",", csv_num(c.std()), ",",
                     csv_num(100 - c.mean()), ",", csv_num(c.std()), ",", csv_num(Cell::mean_of(c.batchstat)), ",",
                     c.spikes, ",", csv_num(Cell::mean_of(c.grad_median)), "\n");
    }
  write_file_atomic(out + "/summary.csv", sum_csv);

  // summary.md: the paper's Table 2 layout, rows = normalizations, columns = batch sizes.
  std::ostringstream md;
  auto header = [&](const char* first) {
    md << "| " << first << " |";
    for (int64_t b : batches) md << " " << b << " |";
    md << "\n|---|";
    for (size_t i = 0; i < batches.size(); ++i) md << "---|";
    md << "\n";
  };
  auto cell_text = [&](const Cell& c, bool error) {
    if (c.miou.empty()) return str("diverged (", c.diverged, "/", c.runs, ")");
    // One value has no spread: "± 0.0" would claim a precision nobody measured.
    std::string t = fmt(error ? 100 - c.mean() : c.mean()) + (c.miou.size() > 1 ? " ± " + fmt(c.std()) : "");
    if (c.diverged) t += str(" (", c.diverged, "/", c.runs, " diverged)");
    return t;
  };
  md << "Validation mIoU (%) after " << cfg.epochs << " epochs, mean ± std over " << cfg.seeds
     << (cfg.seeds == 1 ? " seed" : " seeds") << "; columns are images per batch.\n\n";
  header("norm \\ batch");
  for (auto& l : labels) {
    md << "| " << l << " |";
    for (int64_t b : batches) {
      auto it = cells.find({l, b});
      md << " " << (it == cells.end() ? "" : cell_text(it->second, false)) << " |";
    }
    md << "\n";
  }
  md << "\nValidation error (100 - mIoU, %), as the paper's Table 2 reports error.\n\n";
  header("norm \\ batch");
  for (auto& l : labels) {
    md << "| " << l << " |";
    for (int64_t b : batches) {
      auto it = cells.find({l, b});
      md << " " << (it == cells.end() ? "" : cell_text(it->second, true)) << " |";
    }
    md << "\n";
  }
  md << "\nStability: diverged runs / runs, loss spikes (32-image stretches of training whose mean loss is above 1.5x "
        "the median of the 10 stretches before), "
        "median gradient norm.\n\n";
  header("norm \\ batch");
  for (auto& l : labels) {
    md << "| " << l << " |";
    for (int64_t b : batches) {
      auto it = cells.find({l, b});
      if (it == cells.end()) {
        md << " |";
        continue;
      }
      const Cell& c = it->second;
      md << " " << c.diverged << "/" << c.runs << ", " << c.spikes << " spikes, grad " << fmt(Cell::mean_of(c.grad_median), 2)
         << " |";
    }
    md << "\n";
  }
  // The BatchNorm family (bn, brn, frozenbn): the labels evaluated with batch statistics too.
  std::vector<std::string> bn_labels;
  for (auto& l : labels)
    for (int64_t b : batches) {
      auto it = cells.find({l, b});
      if (it != cells.end() && !it->second.batchstat.empty()) {
        bn_labels.push_back(l);
        break;
      }
    }
  if (!bn_labels.empty()) {
    md << "\nBatchNorm's train/test gap: val mIoU (%) with running statistics (eval mode) vs with the "
          "statistics of each evaluation batch of the training batch size.\n\n";
    header("eval \\ batch");
    for (auto& l : bn_labels)
      for (const char* mode : {"running", "batch", "gap"}) {
        md << "| " << l << " " << mode << " |";
        for (int64_t b : batches) {
          auto it = cells.find({l, b});
          if (it == cells.end()) {
            md << " |";
            continue;
          }
          double run = it->second.mean(), bat = Cell::mean_of(it->second.batchstat);
          double v = std::string(mode) == "running" ? run : std::string(mode) == "batch" ? bat : bat - run;
          md << " " << fmt(v) << " |";
        }
        md << "\n";
      }
    // Per layer: how far the statistics of validation batches (of the training batch size) are
    // from the running ones, averaged over seeds.
    for (auto& l : bn_labels) {
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
      header("layer \\ batch");
      for (auto& layer : layers) {
        md << "| " << layer << " |";
        for (int64_t b : batches) {
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
  const double floor = background_miou * 100;
  if (!std::isnan(floor)) {
    md << "\nPredicting background everywhere scores " << fmt(floor) << " val mIoU on this validation set.";
    bool any_above = false;
    for (auto& [key, c] : cells) any_above = any_above || (!c.miou.empty() && c.mean() > floor + 0.05);
    if (!any_above)
      md << " **No cell beats it: the models did not learn. Train longer (--epochs) or raise the learning rate "
            "(--lr).**";
    md << "\n";
  }
  md << "\n" << conclusion(labels, batches, cells, cfg.seeds) << "\n";
  md << "\n" << runs.size() << " runs in " << fmt(seconds / 60, 1) << " min (this session; finished runs "
     << "loaded from disk take no time).\n";
  const std::string machine = machine_line(out);
  if (!machine.empty()) md << "\nMeasured on: " << machine << "\n";
  std::string summary = md.str();
  write_file_atomic(out + "/summary.md", summary);

  // ---- figures ----
  std::vector<double> bx(batches.begin(), batches.end());
  plot::LineChart fig1;
  fig1.title = str("Val mIoU vs batch size (", cfg.model, ", ", cfg.epochs, " epochs, ", cfg.seeds, cfg.seeds == 1 ? " seed)" : " seeds)");
  fig1.x.label = "images per batch (log2 scale)";
  fig1.x.log2 = true;
  fig1.x.reversed = true;  // large batches first, as in the tables and Figure 3
  fig1.y.label = "val mIoU (%), mean ± std";
  fig1.dodge = 6;
  for (auto& l : labels) {
    plot::Series s{.name = l, .x = bx};
    for (int64_t b : batches) {
      auto it = cells.find({l, b});
      s.y.push_back(it == cells.end() ? NAN : it->second.mean());
      s.err.push_back(it == cells.end() ? NAN : it->second.std());
    }
    fig1.series.push_back(s);
  }
  if (!std::isnan(floor) && !bx.empty())
    fig1.series.push_back(plot::Series{.name = "background everywhere", .x = {bx.front(), bx.back()},
                                       .y = {floor, floor}, .color = plot::Color{120, 120, 120},
                                       .marker = plot::Marker::None, .dashed = true});
  plot::Canvas c1 = plot::render(fig1);
  plot::write_png(c1, out + "/fig1_miou_vs_batch.png");

  plot::SmallMultiples fig2;
  fig2.title = "Validation mIoU per epoch (mean over seeds), one panel per batch size";
  for (int64_t b : batches) {
    plot::LineChart p;
    p.title = str("batch ", b);
    p.x.label = "epoch";
    p.y.label = "val mIoU (%)";
    for (auto& l : labels) {
      std::vector<double> sum(cfg.epochs, 0.0);
      std::vector<int> cnt(cfg.epochs, 0);
      for (auto& r : runs)
        if (r.spec.label() == l && r.spec.batch == b)
          for (auto& e : r.epochs)
            if (e.epoch >= 1 && e.epoch <= cfg.epochs && !std::isnan(e.val_miou))
              sum[e.epoch - 1] += e.val_miou * 100, ++cnt[e.epoch - 1];
      plot::Series s{.name = l};
      for (int64_t e = 0; e < cfg.epochs; ++e) {
        s.x.push_back(static_cast<double>(e + 1));
        s.y.push_back(cnt[e] ? sum[e] / cnt[e] : NAN);
      }
      p.series.push_back(s);
    }
    fig2.panels.push_back(p);
  }
  plot::Canvas c2 = plot::render(fig2);
  plot::write_png(c2, out + "/fig2_val_curves.png");

  plot::BarChart fig3;
  fig3.title = "BatchNorm train/test gap: mIoU with batch statistics minus with running statistics";
  fig3.x_label = "images per batch";
  fig3.y.label = "mIoU difference (percentage points)";
  for (int64_t b : batches) fig3.categories.push_back(std::to_string(b));
  for (auto& l : bn_labels) {
    plot::Series gap{.name = l};
    for (int64_t b : batches) {
      auto it = cells.find({l, b});
      gap.y.push_back(it == cells.end() ? NAN : Cell::mean_of(it->second.batchstat) - it->second.mean());
      std::vector<double> d;
      for (auto& r : runs)
        if (r.spec.label() == l && r.spec.batch == b && !r.diverged)
          d.push_back((r.batchstat_miou - r.final_miou) * 100);
      gap.err.push_back(Cell::std_of(d));
    }
    fig3.series.push_back(gap);
  }
  if (bn_labels.empty())
    fig3.series.push_back(plot::Series{.name = "no BatchNorm runs", .y = std::vector<double>(batches.size(), NAN)});
  plot::Canvas c3 = plot::render(fig3);
  plot::write_png(c3, out + "/fig3_bn_gap.png");

  // Predictions of BN and GN at the smallest batch size, seed 0, on the same validation images.
  int64_t smallest = batches.back();
  std::vector<std::string> shown;
  for (const char* want : {"bn", "gn"})
    for (auto& r : runs)
      if (r.spec.norm == want && r.spec.batch == smallest && r.spec.seed == 0 &&
          fs::exists(out + "/runs/" + r.spec.dir_name() + "/pred.safetensors") &&
          std::find(shown.begin(), shown.end(), r.spec.label()) == shown.end()) {
        shown.push_back(r.spec.label());
        break;
      }
  std::string fig4_uri;
  int64_t classes_seen = 0;  // the class indices fig 4 shows, for its legend
  if (!shown.empty()) {
    DataOptions vopt;
    vopt.limit = cfg.val_limit;
    vopt.image_size = cfg.image_size;
    DatasetPtr val = open_dataset(cfg.data, Split::Val, 0, vopt);
    SampleTransform tf = make_transform(cfg.data, Split::Val, vopt);
    plot::ImageGrid grid;
    grid.title = str("Validation predictions at batch size ", smallest, " (seed 0)");
    grid.columns = static_cast<int>(2 + shown.size());
    grid.column_titles = {"image", "ground truth"};
    for (auto& l : shown) grid.column_titles.push_back(l + " prediction");
    std::vector<IndexTensor> preds;
    for (auto& l : shown)
      for (auto& r : runs)
        if (r.spec.label() == l && r.spec.batch == smallest && r.spec.seed == 0) {
          preds.push_back(load_safetensors(out + "/runs/" + r.spec.dir_name() + "/pred.safetensors").get_int("pred"));
          break;
        }
    int64_t n = preds[0].size(0);
    for (auto& p : preds)
      for (int64_t k : p) classes_seen = std::max(classes_seen, k + 1);
    for (int64_t i = 0; i < n; ++i) {
      Generator g(0);
      Sample s = val->get(i);
      if (tf) s = tf(std::move(s), g);
      int64_t H = s.mask.size(0), W = s.mask.size(1);
      grid.tiles.push_back({image_canvas(s.image), str("val ", i)});
      grid.tiles.push_back({mask_canvas(s.mask.data(), H, W), "truth"});
      for (int64_t k : s.mask)
        if (k != 255) classes_seen = std::max(classes_seen, k + 1);
      for (size_t k = 0; k < preds.size(); ++k)
        grid.tiles.push_back({mask_canvas(preds[k].data() + i * H * W, H, W), shown[k]});
    }
    plot::Canvas c4 = plot::render(grid);
    plot::write_png(c4, out + "/fig4_predictions.png");
    fig4_uri = plot::png_data_uri(c4);
  }

  // ---- report.html: one self-contained page ----
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
  // Markdown tables to HTML, line by line.
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
  html << "<h2>Figures</h2>";
  auto figure = [&](int number, const std::string& alt, const std::string& uri, const std::string& caption) {
    html << "<figure><img alt=\"" << alt << "\" src=\"" << uri << "\"><figcaption><b>Figure " << number << ".</b> "
         << caption << "</figcaption></figure>";
  };
  figure(1, "val mIoU vs batch size", plot::png_data_uri(c1),
         str("Validation mIoU after ", cfg.epochs, " epochs against images per batch, largest batch on the left as in "
             "the tables; points are means over ", cfg.seeds, cfg.seeds == 1 ? " seed" : " seeds",
             cfg.seeds > 1 ? ", bars one standard deviation" : "",
             std::isnan(floor) ? "" : "; the dashed line is what predicting background everywhere scores",
             ". A norm that does not depend on the batch draws a flat line."));
  figure(2, "validation curves", plot::png_data_uri(c2),
         "Validation mIoU after every epoch, mean over seeds, one panel per batch size: whether a run was still "
         "improving when training stopped, and whether it was unstable on the way.");
  figure(3, "BN train/test gap", plot::png_data_uri(c3),
         "The BatchNorm family's train/test gap: validation mIoU with the statistics of each evaluation batch "
         "(of the training batch size) minus with the running statistics used at test time. A positive bar means "
         "the running averages, not the weights, cost those points.");
  if (!fig4_uri.empty()) {
    std::string legend;
    for (int64_t k = 0; k < std::max<int64_t>(2, classes_seen); ++k) {
      const plot::Color c = class_color(k);
      legend += str("<span style=\"display:inline-block;width:0.9em;height:0.9em;background:rgb(", int(c.r), ",",
                    int(c.g), ",", int(c.b), ");border:1px solid #888;margin:0 0.3em 0 0.8em\"></span>class ", k,
                    k == 0 ? " (background)" : "");
    }
    figure(4, "predictions", fig4_uri,
           str("Predictions of the same validation images by the first seed's models at ", smallest,
               smallest == 1 ? " image" : " images", " per batch. Classes: ", legend,
               "<span style=\"display:inline-block;width:0.9em;height:0.9em;background:#fff;border:1px solid #888;"
               "margin:0 0.3em 0 0.8em\"></span>ignored (255)."));
  }
  html << "<h2>Configuration</h2><pre>" << html_escape(cfg.to_json().dump(2)) << "</pre>";
  if (fs::exists(out + "/platform.json"))
    html << "<h2>Machine</h2><pre>" << html_escape(read_file(out + "/platform.json")) << "</pre>";
  html << "</body></html>\n";
  std::string page = html.str();
  write_file_atomic(out + "/report.html", page);
  return summary;
}

}  // namespace sb
