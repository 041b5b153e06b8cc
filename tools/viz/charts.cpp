// The charts: line charts with error bars, small multiples, grouped bars and image grids, each
// drawn inside the frame and legends of layout.h.
#include "tools/viz/charts.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/errors.h"
#include "tools/viz/layout.h"

namespace sb::plot {

using namespace detail;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

constexpr Marker kMarkerCycle[] = {Marker::Circle, Marker::Square, Marker::Triangle,
                                   Marker::Diamond};
// Series i's default marker. The colors repeat every 8 series and the markers every 4, so past 8
// the markers shift by one: series i and i + 8 share a color, never a marker.
Marker default_marker(size_t i) { return kMarkerCycle[(i + i / 8) % 4]; }

double x_of(const Series& s, const Axis& xa, size_t i) {
  if (!xa.categories.empty() || s.x.empty()) return double(i);
  return s.x[i];
}

void check_series(const Series& s, const Axis& xa, const char* chart) {
  SB_CHECK(s.x.empty() || !xa.categories.empty() || s.x.size() == s.y.size(), "plot: ", chart,
           " series '", s.name, "' has ", s.x.size(), " x values but ", s.y.size(), " y values");
  SB_CHECK(s.err.empty() || s.err.size() == s.y.size(), "plot: ", chart, " series '", s.name,
           "' has ", s.err.size(), " error values but ", s.y.size(), " y values");
  SB_CHECK(xa.categories.empty() || s.y.size() <= xa.categories.size(), "plot: ", chart,
           " series '", s.name, "' has ", s.y.size(), " values but the axis has ",
           xa.categories.size(), " categories");
}

double err_of(const Series& s, size_t i) {
  return i < s.err.size() && std::isfinite(s.err[i]) && s.err[i] > 0 ? s.err[i] : 0;
}

std::vector<Point> series_points(const Series& s, const Axis& xa, const PlotArea& f, double dx) {
  std::vector<Point> pts;
  for (size_t i = 0; i < s.y.size(); ++i) {
    double px = f.x(x_of(s, xa, i)), py = f.y(s.y[i]);
    if (std::isfinite(px) && std::isfinite(py)) pts.push_back({px + dx, py});
    else pts.push_back({kNaN, kNaN});
  }
  return pts;
}

// Points along the drawn lines and error bars, sampled densely enough to find a free corner.
void add_obstacles(std::vector<Point>& out, const std::vector<Point>& pts,
                   const std::vector<double>& errs_px) {
  for (size_t i = 0; i < pts.size(); ++i) {
    if (!finite(pts[i])) continue;
    out.push_back(pts[i]);
    if (i < errs_px.size() && errs_px[i] > 0)
      for (double t = -1; t <= 1; t += 0.25) out.push_back({pts[i].x, pts[i].y + t * errs_px[i]});
    if (i + 1 < pts.size() && finite(pts[i + 1])) {
      double len = std::hypot(pts[i + 1].x - pts[i].x, pts[i + 1].y - pts[i].y);
      int n = int(len / 4);
      for (int k = 1; k < n; ++k)
        out.push_back({pts[i].x + (pts[i + 1].x - pts[i].x) * k / n,
                       pts[i].y + (pts[i + 1].y - pts[i].y) * k / n});
    }
  }
}

PlotArea draw_line_chart(Canvas& c, const LineChart& chart, int x, int y, int w, int h,
                         const Style& st, const std::vector<Look>& looks, bool inner_legend) {
  std::vector<double> xs, ys;
  bool any = false;
  for (const Series& s : chart.series) {
    check_series(s, chart.x, "line chart");
    for (size_t i = 0; i < s.y.size(); ++i) {
      double xv = x_of(s, chart.x, i), yv = s.y[i];
      if (!std::isfinite(xv) || !std::isfinite(yv) || (chart.x.log2 && !(xv > 0))) continue;
      any = true;
      xs.push_back(xv);
      ys.push_back(yv - err_of(s, i));
      ys.push_back(yv + err_of(s, i));
    }
  }
  Range xr;
  if (!chart.x.categories.empty()) xr = {-0.5, chart.x.categories.size() - 0.5};
  else xr = resolve_range(xs, chart.x, chart.x.log2 ? 0.07 : 0.04);
  Range yr = resolve_range(ys, chart.y, 0.06);
  PlotArea f = draw_frame(c, x, y, w, h, chart.title, chart.x, xr, chart.y, yr, st, nullptr);
  if (!any) {
    c.text({(f.left + f.right) / 2.0, (f.top + f.bottom) / 2.0}, "no data",
           {kLabelSize, kMuted, HAlign::Center, VAlign::Middle});
    return f;
  }

  c.set_clip(f.left + 1, f.top + 1, f.right - 1, f.bottom - 1);
  size_t n = chart.series.size();
  std::vector<std::vector<Point>> pts(n);
  std::vector<std::vector<double>> errs(n);
  std::vector<Point> obstacles;
  for (size_t k = 0; k < n; ++k) {
    const Series& s = chart.series[k];
    double dx = chart.dodge * (double(k) - (n - 1) / 2.0);
    pts[k] = series_points(s, chart.x, f, dx);
    for (size_t i = 0; i < s.y.size(); ++i) {
      double e = err_of(s, i);
      errs[k].push_back(e > 0 && finite(pts[k][i]) ? std::abs(f.y(s.y[i] + e) - pts[k][i].y) : 0);
    }
    add_obstacles(obstacles, pts[k], errs[k]);
  }
  // Error bars, then lines, then markers, so no series' markers hide under another's line.
  for (size_t k = 0; k < n; ++k)
    for (size_t i = 0; i < pts[k].size(); ++i) {
      if (errs[k][i] <= 0) continue;
      const Series& s = chart.series[k];
      double px = snap(pts[k][i].x), e = err_of(s, i);
      double y0 = f.y(s.y[i] - e), y1 = f.y(s.y[i] + e);
      Pen pen{looks[k].color, 1.5};
      c.line({px, y0}, {px, y1}, pen);
      c.line({px - 4, y0}, {px + 4, y0}, pen);
      c.line({px - 4, y1}, {px + 4, y1}, pen);
    }
  for (size_t k = 0; k < n; ++k)
    c.polyline(pts[k], {looks[k].color, 2, chart.series[k].dashed ? 7.0 : 0.0});
  for (size_t k = 0; k < n; ++k) {
    // A point with no neighbour has no line through it: always mark it, or it would vanish.
    for (size_t i = 0; i < pts[k].size(); ++i) {
      bool alone = (i == 0 || !finite(pts[k][i - 1])) &&
                   (i + 1 >= pts[k].size() || !finite(pts[k][i + 1]));
      Marker m = looks[k].marker == Marker::None && alone ? Marker::Circle : looks[k].marker;
      c.marker(m, pts[k][i], 8, looks[k].color);
    }
  }
  c.reset_clip();

  if (inner_legend && chart.legend) {
    std::vector<LegendEntry> entries;
    for (size_t k = 0; k < n; ++k)
      if (!chart.series[k].name.empty())
        entries.push_back({chart.series[k].name, looks[k], chart.series[k].dashed});
    draw_inner_legend(c, f, entries, obstacles);
  }
  return f;
}

std::vector<Look> default_looks(const std::vector<Series>& series) {
  std::vector<Look> looks;
  for (size_t i = 0; i < series.size(); ++i)
    looks.push_back({series[i].color.value_or(series_color(int(i))),
                     series[i].marker.value_or(default_marker(i))});
  return looks;
}

}  // namespace

PlotArea draw(Canvas& canvas, const LineChart& chart, int x, int y, int w, int h) {
  return draw_line_chart(canvas, chart, x, y, w, h, Style{}, default_looks(chart.series), true);
}

void draw(Canvas& c, const SmallMultiples& sm, int x, int y, int w, int h) {
  // One look per series name across panels, in order of first appearance.
  std::vector<std::string> names;
  std::vector<LegendEntry> legend;
  for (const LineChart& p : sm.panels)
    for (const Series& s : p.series) {
      if (std::find(names.begin(), names.end(), s.name) != names.end()) continue;
      int i = int(names.size());
      names.push_back(s.name);
      Look look{s.color.value_or(series_color(i)), s.marker.value_or(default_marker(size_t(i)))};
      if (!s.name.empty()) legend.push_back({s.name, look, s.dashed});
    }
  auto look_of = [&](const Series& s) {
    size_t i = std::find(names.begin(), names.end(), s.name) - names.begin();
    return Look{s.color.value_or(series_color(int(i))), s.marker.value_or(default_marker(size_t(i)))};
  };

  double top = y + kPad;
  if (!sm.title.empty()) {
    FontMetrics m = c.font().metrics(kTitleSize);
    c.text({x + w / 2.0, top + std::ceil(m.ascent)}, sm.title,
           {kTitleSize, kInk, HAlign::Center, VAlign::Baseline, true});
    top += std::ceil(m.ascent + m.descent) + 4;
  }
  top += draw_legend_row(c, legend, x + w / 2.0, top, w - 2 * kPad, true);
  if (sm.panels.empty()) {
    c.text({x + w / 2.0, (top + y + h) / 2.0}, "no data",
           {kLabelSize, kMuted, HAlign::Center, VAlign::Middle});
    return;
  }

  int n = int(sm.panels.size());
  int cols = sm.columns > 0 ? std::min(sm.columns, n) : int(std::ceil(std::sqrt(double(n))));
  int rows = (n + cols - 1) / cols;
  std::optional<Range> shared;
  if (sm.share_y) {
    std::vector<double> ys;
    for (const LineChart& p : sm.panels)
      for (const Series& s : p.series)
        for (size_t i = 0; i < s.y.size(); ++i) {
          ys.push_back(s.y[i] - err_of(s, i));
          ys.push_back(s.y[i] + err_of(s, i));
        }
    shared = resolve_range(ys, sm.panels[0].y, 0.06);
  }
  double cell_w = double(w) / cols, cell_h = (y + h - top) / rows;
  for (int i = 0; i < n; ++i) {
    LineChart p = sm.panels[i];
    if (shared) {
      if (!p.y.min) p.y.min = shared->lo;
      if (!p.y.max) p.y.max = shared->hi;
    }
    int r = i / cols, col = i % cols;
    Style st;
    st.title_size = kPanelTitleSize;
    st.show_y_label = col == 0;
    st.show_x_label = i + cols >= n;  // nothing below it
    std::vector<Look> looks;
    for (const Series& s : p.series) looks.push_back(look_of(s));
    int px = int(std::round(x + col * cell_w)), py = int(std::round(top + r * cell_h));
    draw_line_chart(c, p, px, py, int(std::round(x + (col + 1) * cell_w)) - px,
                    int(std::round(top + (r + 1) * cell_h)) - py, st, looks, false);
  }
}

PlotArea draw(Canvas& c, const BarChart& chart, int x, int y, int w, int h) {
  Axis xa;
  xa.label = chart.x_label;
  xa.categories = chart.categories;
  Axis ya = chart.y;
  ya.log2 = false;
  ya.categories.clear();
  // Bars start at zero, so zero is always on the axis; padding only on the sides with bars.
  double lo = 0, hi = 0;
  for (const Series& s : chart.series) {
    check_series(s, xa, "bar chart");
    for (size_t i = 0; i < s.y.size(); ++i) {
      if (!std::isfinite(s.y[i])) continue;
      lo = std::min(lo, s.y[i] - err_of(s, i));
      hi = std::max(hi, s.y[i] + err_of(s, i));
    }
  }
  double span = hi - lo;
  if (span == 0) hi = 1;
  else {
    if (lo < 0) lo -= 0.06 * span;
    if (hi > 0) hi += 0.06 * span;
  }
  if (!ya.min) ya.min = lo;
  if (!ya.max) ya.max = hi;
  Range yr = resolve_range({}, ya, 0);
  Range xr{-0.5, std::max<double>(chart.categories.size(), 1) - 0.5};

  std::vector<Look> looks = default_looks(chart.series);
  std::vector<LegendEntry> legend;
  if (chart.legend)
    for (size_t k = 0; k < chart.series.size(); ++k)
      if (!chart.series[k].name.empty()) legend.push_back({chart.series[k].name, looks[k], false, true});
  PlotArea f = draw_frame(c, x, y, w, h, chart.title, xa, xr, ya, yr, Style{}, &legend);

  c.set_clip(f.left + 1, f.top + 1, f.right - 1, f.bottom - 1);
  double zero = std::round(f.y(0));
  size_t m = std::max<size_t>(chart.series.size(), 1);
  double group = 0.8 * (f.x(1) - f.x(0)), bar = group / m;
  for (size_t k = 0; k < chart.series.size(); ++k) {
    const Series& s = chart.series[k];
    for (size_t i = 0; i < s.y.size(); ++i) {
      if (!std::isfinite(s.y[i])) continue;
      double left = std::round(f.x(double(i)) - group / 2 + k * bar);
      double right = std::round(f.x(double(i)) - group / 2 + (k + 1) * bar) - (bar >= 6 ? 1 : 0);
      c.fill_rect(left, zero, right, std::round(f.y(s.y[i])), looks[k].color);
      double e = err_of(s, i);
      if (e > 0) {
        double px = snap((left + right) / 2), y0 = f.y(s.y[i] - e), y1 = f.y(s.y[i] + e);
        double cap = std::min(5.0, (right - left) / 3);
        Pen pen{kErrorBarOnBars, 1.5};
        c.line({px, y0}, {px, y1}, pen);
        c.line({px - cap, y0}, {px + cap, y0}, pen);
        c.line({px - cap, y1}, {px + cap, y1}, pen);
      }
    }
  }
  if (yr.lo < 0 && yr.hi > 0) c.line({f.left + 1.0, zero - 0.5}, {f.right - 1.0, zero - 0.5}, {kFrame, 1});
  c.reset_clip();
  return f;
}

Canvas render(const LineChart& chart, int width, int height) {
  Canvas c(width, height);
  draw(c, chart, 0, 0, width, height);
  return c;
}

Canvas render(const SmallMultiples& chart, int width, int height) {
  Canvas c(width, height);
  draw(c, chart, 0, 0, width, height);
  return c;
}

Canvas render(const BarChart& chart, int width, int height) {
  Canvas c(width, height);
  draw(c, chart, 0, 0, width, height);
  return c;
}

Canvas render(const ImageGrid& g) {
  SB_CHECK(g.columns > 0, "plot: an image grid needs at least one column, got ", g.columns);
  int n = int(g.tiles.size()), cols = std::max(1, std::min(g.columns, std::max(n, 1)));
  int rows = (n + cols - 1) / cols;
  // Cell size: the requested one, or the largest image scaled up by a whole factor to >= 128
  // pixels, since a 64x64 mask is too small to judge by eye.
  int longest = 1;
  for (auto& t : g.tiles) longest = std::max({longest, t.image.width(), t.image.height()});
  int cell = g.cell > 0 ? g.cell : longest * std::max(1, (128 + longest - 1) / longest);
  int box_w = 1, box_h = 1;
  auto fit = [&](const Canvas& im) {
    double s = double(cell) / std::max({im.width(), im.height(), 1});
    return std::pair<int, int>{std::max(1, int(std::lround(im.width() * s))),
                               std::max(1, int(std::lround(im.height() * s)))};
  };
  for (auto& t : g.tiles) {
    auto [tw, th] = fit(t.image);
    box_w = std::max(box_w, tw), box_h = std::max(box_h, th);
  }

  Canvas probe(1, 1);
  double title_h = g.title.empty() ? 0 : line_height(probe, kTitleSize) + 8;
  double head_h = g.column_titles.empty() ? 0 : line_height(probe, kLabelSize) + 4;
  bool captions = std::any_of(g.tiles.begin(), g.tiles.end(), [](auto& t) { return !t.caption.empty(); });
  double cap_h = captions ? line_height(probe, kTickSize) + 4 : 0;
  int gap = 10;
  int width = 2 * kPad + cols * box_w + (cols - 1) * gap;
  if (!g.title.empty())
    width = std::max(width, int(std::ceil(probe.text_width(g.title, kTitleSize, true))) + 2 * kPad);
  int row_h = box_h + int(cap_h);
  int height = int(2 * kPad + title_h + head_h + rows * row_h + std::max(0, rows - 1) * gap);
  Canvas c(width, height);
  int grid_w = cols * box_w + (cols - 1) * gap, x0 = (width - grid_w) / 2;

  // Text wider than its cell is cut short with "...", not left to run into the next one.
  auto fitted = [&](std::string s, double size, bool bold) {
    if (c.text_width(s, size, bold) <= box_w) return s;
    while (!s.empty() && c.text_width(s + "...", size, bold) > box_w) {
      s.pop_back();
      while (!s.empty() && (static_cast<unsigned char>(s.back()) & 0xC0) == 0x80) s.pop_back();
    }
    return s + "...";
  };
  double top = kPad;
  if (!g.title.empty()) {
    c.text({width / 2.0, top + std::ceil(c.font().metrics(kTitleSize).ascent)}, g.title,
           {kTitleSize, kInk, HAlign::Center, VAlign::Baseline, true});
    top += title_h;
  }
  for (int col = 0; col < cols && col < int(g.column_titles.size()); ++col)
    c.text({x0 + col * (box_w + gap) + box_w / 2.0, top}, fitted(g.column_titles[col], kLabelSize, true),
           {kLabelSize, kInk, HAlign::Center, VAlign::Top, true});
  top += head_h;
  for (int i = 0; i < n; ++i) {
    int r = i / cols, col = i % cols;
    int bx = x0 + col * (box_w + gap), by = int(top) + r * (row_h + gap);
    const Canvas& im = g.tiles[i].image;
    auto [tw, th] = fit(im);
    int ix = bx + (box_w - tw) / 2, iy = by + (box_h - th) / 2;
    c.draw_image(im, ix, iy, tw, th);
    c.stroke_rect(ix - 1, iy - 1, ix + tw + 1, iy + th + 1, kLegendBorder, 1);
    if (!g.tiles[i].caption.empty())
      c.text({bx + box_w / 2.0, by + box_h + 3.0}, fitted(g.tiles[i].caption, kTickSize, false),
             {kTickSize, kInk, HAlign::Center, VAlign::Top});
  }
  return c;
}

}  // namespace sb::plot
