// The report's figures, each written as a PNG: val mIoU against batch size (fig1), validation
// curves per batch size (fig2), BatchNorm's train/test gap (fig3) and predictions of BN and GN
// at the smallest batch size on the same validation images (fig4); for runs over several ranks,
// val mIoU against the normalization batch with the time per step (fig5).
#include <algorithm>
#include <cmath>
#include <filesystem>

#include "core/io/safetensors.h"
#include "tools/app/report/report.h"

namespace sb::report {

namespace {

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

plot::Canvas miou_vs_batch(const CompareConfig& cfg, const Aggregate& a) {
  std::vector<double> bx(a.batches.begin(), a.batches.end());
  plot::LineChart fig;
  fig.title = str("Val mIoU vs batch size (", cfg.model, ", ", cfg.epochs, " epochs, ", cfg.seeds, cfg.seeds == 1 ? " seed)" : " seeds)");
  fig.x.label = "images per batch (log2 scale)";
  fig.x.log2 = true;
  fig.x.reversed = true;  // large batches first, as in the tables and Figure 3
  fig.y.label = "val mIoU (%), mean ± std";
  fig.dodge = 6;
  for (auto& l : a.labels) {
    plot::Series s{.name = l, .x = bx};
    for (int64_t b : a.batches) {
      auto it = a.cells.find({l, b});
      s.y.push_back(it == a.cells.end() ? NAN : it->second.mean());
      s.err.push_back(it == a.cells.end() ? NAN : it->second.std());
    }
    fig.series.push_back(s);
  }
  if (!std::isnan(a.floor) && !bx.empty())
    fig.series.push_back(plot::Series{.name = "background everywhere", .x = {bx.front(), bx.back()},
                                      .y = {a.floor, a.floor}, .color = plot::Color{120, 120, 120},
                                      .marker = plot::Marker::None, .dashed = true});
  // Many norms (the full preset's 11): the legend goes above the plot, where it hides no point.
  plot::Canvas c = [&] {
    if (fig.series.size() <= 6) return plot::render(fig);
    plot::SmallMultiples above;
    above.title = fig.title;
    above.columns = 1;
    fig.title.clear();
    above.panels.push_back(fig);
    return plot::render(above);
  }();
  plot::write_png(c, cfg.out + "/fig1_miou_vs_batch.png");
  return c;
}

plot::Canvas val_curves(const CompareConfig& cfg, const std::vector<RunOutcome>& runs, const Aggregate& a) {
  plot::SmallMultiples fig;
  fig.title = "Validation mIoU per epoch (mean over seeds), one panel per batch size";
  for (int64_t b : a.batches) {
    plot::LineChart p;
    p.title = str("batch ", b);
    p.x.label = "epoch";
    p.y.label = "val mIoU (%)";
    for (auto& l : a.labels) {
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
    fig.panels.push_back(p);
  }
  plot::Canvas c = plot::render(fig);
  plot::write_png(c, cfg.out + "/fig2_val_curves.png");
  return c;
}

plot::Canvas bn_gap(const CompareConfig& cfg, const std::vector<RunOutcome>& runs, const Aggregate& a) {
  plot::BarChart fig;
  fig.title = "BatchNorm train/test gap: mIoU with batch statistics minus with running statistics";
  fig.x_label = "images per batch";
  fig.y.label = "mIoU difference (percentage points)";
  for (int64_t b : a.batches) fig.categories.push_back(std::to_string(b));
  // Per label the whole gap (batch - running); with PreciseBN measured, also its two parts:
  // stale (precise - running) and adapted (batch - precise).
  struct Part {
    const char* suffix;
    double (*of)(double run, double pre, double bat);
  };
  const Part whole{"", [](double run, double, double bat) { return bat - run; }};
  const Part stale{" stale (precise - running)", [](double run, double pre, double) { return pre - run; }};
  const Part adapted{" adapted (batch - precise)", [](double, double pre, double bat) { return bat - pre; }};
  for (auto& l : a.bn_labels) {
    bool precise = false;
    for (auto& r : runs) precise = precise || (r.spec.label() == l && !std::isnan(r.precise_miou));
    const Part labelled_whole{" whole (batch - running)", whole.of};
    std::vector<Part> parts = {whole};
    if (precise) parts = {labelled_whole, stale, adapted};
    for (const Part& p : parts) {
      plot::Series gap{.name = l + p.suffix};
      for (int64_t b : a.batches) {
        auto it = a.cells.find({l, b});
        gap.y.push_back(it == a.cells.end() ? NAN
                                            : p.of(it->second.mean(), Cell::mean_of(it->second.precise),
                                                   Cell::mean_of(it->second.batchstat)));
        std::vector<double> d;
        for (auto& r : runs)
          if (r.spec.label() == l && r.spec.batch == b && !r.diverged)
            d.push_back(p.of(r.final_miou, r.precise_miou, r.batchstat_miou) * 100);
        gap.err.push_back(Cell::std_of(d));
      }
      fig.series.push_back(gap);
    }
  }
  if (a.bn_labels.empty())
    fig.series.push_back(plot::Series{.name = "no BatchNorm runs", .y = std::vector<double>(a.batches.size(), NAN)});
  plot::Canvas c = plot::render(fig);
  plot::write_png(c, cfg.out + "/fig3_bn_gap.png");
  return c;
}

// The labels fig4 shows: a BN and a GN run at the smallest batch size, seed 0, that saved their
// predictions.
std::vector<std::string> shown_labels(const CompareConfig& cfg, const std::vector<RunOutcome>& runs, int64_t smallest) {
  std::vector<std::string> shown;
  for (const char* want : {"bn", "gn"})
    for (auto& r : runs)
      if (r.spec.norm.kind == want && r.spec.batch == smallest && r.spec.seed == 0 &&
          std::filesystem::exists(cfg.out + "/runs/" + r.spec.dir_name() + "/pred.safetensors") &&
          std::find(shown.begin(), shown.end(), r.spec.label()) == shown.end()) {
        shown.push_back(r.spec.label());
        break;
      }
  return shown;
}

// Image, ground truth and each shown run's prediction for every validation image the runs
// predicted; nothing when no run is shown.
std::optional<plot::Canvas> predictions(const CompareConfig& cfg, const std::vector<RunOutcome>& runs,
                                        int64_t smallest, int64_t& classes_seen) {
  std::vector<std::string> shown = shown_labels(cfg, runs, smallest);
  if (shown.empty()) return std::nullopt;
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
        preds.push_back(load_safetensors(cfg.out + "/runs/" + r.spec.dir_name() + "/pred.safetensors").get_int("pred"));
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
  plot::Canvas c = plot::render(grid);
  plot::write_png(c, cfg.out + "/fig4_predictions.png");
  return c;
}

// Runs over K ranks each (--ranks-per-run): per K, val mIoU against the batch each norm
// normalizes over (bn over a rank's B images and syncbn over K x B, joined, since they share the
// optimization batch K x B; gn, which normalizes one image, as a flat dashed reference at that
// batch), and beside it the time per step with syncbn's collectives in it. Nothing without such runs.
std::optional<plot::Canvas> miou_vs_norm_batch(const CompareConfig& cfg, const std::vector<RunOutcome>& runs) {
  std::vector<int64_t> ks;
  for (const RunOutcome& r : runs)
    if (r.spec.ranks > 1 && std::find(ks.begin(), ks.end(), r.spec.ranks) == ks.end()) ks.push_back(r.spec.ranks);
  if (ks.empty()) return std::nullopt;
  std::sort(ks.begin(), ks.end(), std::greater<>());
  // Over seeds, the runs of (kind, K, B), of what `of` reads: mean and std (mIoU), median (time).
  // gn is the first --groups value's. A diverged run's mIoU is left out, as in the tables; its
  // time per step is not.
  const int64_t gn_groups = cfg.groups.empty() ? 8 : cfg.groups.front();
  auto runs_of = [&](const std::string& kind, int64_t k, int64_t b, double (*of)(const RunOutcome&)) {
    std::vector<double> v;
    for (const RunOutcome& r : runs)
      if (r.spec.norm.kind == kind && r.spec.ranks == k && r.spec.batch == b && !std::isnan(of(r)) &&
          (kind != "gn" || r.spec.norm.groups == gn_groups))
        v.push_back(of(r));
    return v;
  };
  auto mean_of = [&](const std::string& kind, int64_t k, int64_t b, double (*of)(const RunOutcome&)) {
    const std::vector<double> v = runs_of(kind, k, b, of);
    return std::pair{Cell::mean_of(v), Cell::std_of(v)};
  };
  auto median_of = [&](const std::string& kind, int64_t k, int64_t b, double (*of)(const RunOutcome&)) {
    return Cell::median_of(runs_of(kind, k, b, of));
  };
  auto miou = [](const RunOutcome& r) { return r.diverged ? NAN : 100 * r.final_miou; };
  plot::SmallMultiples fig;
  fig.title = "BatchNorm over a rank's images, SyncBatchNorm over all K ranks' images, GroupNorm for reference";
  fig.columns = 2;
  fig.share_y = false;
  for (int64_t k : ks) {
    plot::LineChart m;
    m.title = str("K = ", k, " ranks per run: val mIoU (%)");
    m.x.label = "images normalized over (log2 scale)";
    m.x.log2 = true;
    plot::LineChart t;
    t.title = str("K = ", k, ": ms per training step (median)");
    t.x.label = "images per rank (log2 scale)";
    t.x.log2 = true;
    plot::Series bn_step{.name = "bn step"}, sync_step{.name = "syncbn step"}, gn_step{.name = "gn step"},
        sync_comm{.name = "syncbn collectives", .dashed = true};
    int color = 0;
    for (int64_t b : cfg.batch_sizes) {
      const plot::Color c = plot::series_color(color++);
      const auto [bn, bn_sd] = mean_of("bn", k, b, miou);
      const auto [sync, sync_sd] = mean_of("syncbn", k, b, miou);
      const auto [gn, gn_sd] = mean_of("gn", k, b, miou);
      const double lo = static_cast<double>(b), hi = static_cast<double>(k * b);
      m.series.push_back(plot::Series{.name = str("bn to syncbn, ", b, b == 1 ? " image" : " images", " per rank"),
                                      .x = {lo, hi}, .y = {bn, sync}, .err = {bn_sd, sync_sd}, .color = c});
      m.series.push_back(plot::Series{.name = str("gn, ", b, b == 1 ? " image" : " images", " per rank"), .x = {lo, hi}, .y = {gn, gn},
                                      .color = c, .marker = plot::Marker::None, .dashed = true});
      for (auto [series, kind] : {std::pair{&bn_step, "bn"}, std::pair{&sync_step, "syncbn"}, std::pair{&gn_step, "gn"}}) {
        series->x.push_back(lo);
        series->y.push_back(median_of(kind, k, b, [](const RunOutcome& r) { return r.step_ms; }));
      }
      sync_comm.x.push_back(lo);
      sync_comm.y.push_back(median_of("syncbn", k, b, [](const RunOutcome& r) { return r.syncbn_comm_ms; }));
    }
    t.series = {bn_step, sync_step, gn_step, sync_comm};
    fig.panels.push_back(m);
    fig.panels.push_back(t);
  }
  plot::Canvas c = plot::render(fig);
  plot::write_png(c, cfg.out + "/fig5_miou_vs_norm_batch.png");
  return c;
}

}  // namespace

plot::Color class_color(int64_t k) {
  static const plot::Color pal[] = {{30, 30, 30},    {230, 159, 0},  {86, 180, 233}, {0, 158, 115},
                                    {240, 228, 66},  {0, 114, 178},  {213, 94, 0},   {204, 121, 167},
                                    {150, 150, 150}, {120, 60, 20},  {40, 200, 200}, {255, 255, 255}};
  if (k == 255) return {255, 255, 255};
  return pal[k % 12];
}

Figures draw_figures(const CompareConfig& cfg, const std::vector<RunOutcome>& runs, const Aggregate& a) {
  int64_t classes_seen = 0;
  // Braced initialization runs left to right: the PNGs are written in the figures' order.
  Figures f{miou_vs_batch(cfg, a), val_curves(cfg, runs, a), bn_gap(cfg, runs, a),
            predictions(cfg, runs, a.batches.back(), classes_seen), 0, miou_vs_norm_batch(cfg, runs)};
  f.classes_seen = classes_seen;
  return f;
}

}  // namespace sb::report
