// Axes: nice tick values and their labels, data-to-pixel scales, axis ranges from data, the frame
// every chart sits in (title, grid, ticks, axis labels) and the legends (a row above the plot or
// a box in its emptiest corner).
#include "tools/viz/axes.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "core/errors.h"
#include "tools/viz/layout.h"

namespace sb::plot {

namespace {
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
}  // namespace

// ---------------------------------------------------------------------------------------------
// Ticks and scales

std::vector<double> nice_ticks(double lo, double hi, int target) {
  if (!std::isfinite(lo) || !std::isfinite(hi) || !std::isfinite(hi - lo) || hi < lo) return {};
  if (hi == lo) return {lo};
  target = std::max(target, 2);
  double raw = (hi - lo) / (target - 1);
  int e = int(std::floor(std::log10(raw)));
  double best_step = 0, best_count = 0;
  for (int k = e - 1; k <= e + 1; ++k)
    for (double m : {1.0, 2.0, 5.0}) {
      double step = m * std::pow(10.0, k);
      double count = std::floor(hi / step + 1e-9) - std::ceil(lo / step - 1e-9) + 1;
      if (!(count >= 2)) continue;
      // Closest to the target; on a tie the finer step, since two ticks rarely say enough.
      if (best_step == 0 || std::abs(count - target) < std::abs(best_count - target) ||
          (std::abs(count - target) == std::abs(best_count - target) && step < best_step)) {
        best_step = step;
        best_count = count;
      }
    }
  std::vector<double> ticks;
  // A span too small for the values' precision (or overflowing) gets no ticks, not a hang.
  if (best_step == 0 || best_count > 100) return ticks;
  double first = std::ceil(lo / best_step - 1e-9);
  for (int i = 0; i < int(best_count); ++i) {
    double v = (first + i) * best_step;
    ticks.push_back(std::abs(v) < best_step * 1e-9 ? 0.0 : v);
  }
  return ticks;
}

std::string format_tick(double v, double step) {
  char buf[64];
  step = std::abs(step);
  if (!std::isfinite(v)) return "";
  if (std::abs(v) >= 1e6 || (step > 0 && step < 1e-4)) {
    std::snprintf(buf, sizeof buf, "%g", v);
    return buf;
  }
  int decimals = 0;
  while (decimals < 8 && step > 0) {
    double scaled = step * std::pow(10.0, decimals);
    if (std::abs(scaled - std::round(scaled)) < 1e-6 * std::max(1.0, scaled)) break;
    ++decimals;
  }
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  std::string s = buf;
  if (s.find_first_not_of("-0.") == std::string::npos) s = decimals ? "0." + std::string(decimals, '0') : "0";
  return s;
}

AxisScale::AxisScale(double lo, double hi, bool log2, double pixel_lo, double pixel_hi)
    : lo_(log2 ? std::log2(lo) : lo), hi_(log2 ? std::log2(hi) : hi), p0_(pixel_lo), p1_(pixel_hi),
      log2_(log2) {}

double AxisScale::operator()(double v) const {
  if (log2_) {
    if (!(v > 0)) return kNaN;
    v = std::log2(v);
  }
  double t = hi_ != lo_ ? (v - lo_) / (hi_ - lo_) : 0.5;
  return p0_ + t * (p1_ - p0_);
}

namespace detail {

// ---------------------------------------------------------------------------------------------
// Ranges and ticks from data

Range resolve_range(const std::vector<double>& values, const Axis& axis, double pad) {
  bool lg = axis.log2;
  auto to = [&](double v) { return lg ? std::log2(v) : v; };
  auto from = [&](double v) { return lg ? std::exp2(v) : v; };
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (double v : values)
    if (std::isfinite(v) && (!lg || v > 0)) lo = std::min(lo, to(v)), hi = std::max(hi, to(v));
  if (lo > hi) {
    lo = 0;
    hi = 1;
  } else if (lo == hi) {
    // One value, or all equal: a window around it that still gives readable ticks.
    double d = lg ? 1 : lo != 0 ? std::abs(lo) * 0.1 : 1;
    lo -= d;
    hi += d;
  } else {
    double span = hi - lo;
    lo -= pad * span;
    hi += pad * span;
  }
  if (axis.min) {
    SB_CHECK(std::isfinite(*axis.min) && (!lg || *axis.min > 0), "plot: axis '", axis.label,
             "' has min ", *axis.min, lg ? ", but a log2 axis needs a positive one" : "");
    lo = to(*axis.min);
  }
  if (axis.max) {
    SB_CHECK(std::isfinite(*axis.max) && (!lg || *axis.max > 0), "plot: axis '", axis.label,
             "' has max ", *axis.max, lg ? ", but a log2 axis needs a positive one" : "");
    hi = to(*axis.max);
  }
  if (!(lo < hi)) {
    SB_CHECK(!(axis.min && axis.max), "plot: axis '", axis.label, "' has min ", *axis.min,
             " not below max ", *axis.max);
    if (axis.min) hi = lo + 1;
    else lo = hi - 1;
  }
  return {from(lo), from(hi)};
}

namespace {

struct Ticks {
  std::vector<double> at;
  std::vector<std::string> labels;
};

Ticks make_ticks(const Axis& axis, Range r, int target) {
  Ticks t;
  if (!axis.categories.empty()) {
    for (size_t i = 0; i < axis.categories.size(); ++i) {
      t.at.push_back(double(i));
      t.labels.push_back(axis.categories[i]);
    }
    return t;
  }
  if (axis.log2) {
    int k0 = int(std::ceil(std::log2(r.lo) - 1e-9)), k1 = int(std::floor(std::log2(r.hi) + 1e-9));
    int count = k1 - k0 + 1;
    if (count >= 2) {
      int stride = std::max(1, (count + target - 1) / std::max(target, 1));
      for (int k = k0; k <= k1; k += stride) {
        double v = std::exp2(k);
        char buf[32];
        std::snprintf(buf, sizeof buf, k >= 0 ? "%.0f" : "%g", v);
        t.at.push_back(v);
        t.labels.push_back(buf);
      }
      return t;
    }
    // Less than a doubling: plain nice numbers, placed on the log scale.
  }
  t.at = nice_ticks(r.lo, r.hi, target);
  double step = t.at.size() > 1 ? t.at[1] - t.at[0] : 1;
  for (double v : t.at) t.labels.push_back(format_tick(v, step));
  return t;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Legends

namespace {

constexpr double kSampleLen = 24;

double sample_width(const LegendEntry& e) { return e.swatch ? 12 : kSampleLen; }

double entry_width(const Canvas& c, const LegendEntry& e) {
  return sample_width(e) + 6 + c.text_width(e.name, kLegendSize);
}

void draw_legend_sample(Canvas& c, const LegendEntry& e, double x, double cy) {
  if (e.swatch) {
    c.fill_rect(x, std::round(cy) - 6, x + 12, std::round(cy) + 6, e.look.color);
    return;
  }
  c.line({x, snap(cy)}, {x + kSampleLen, snap(cy)},
         {e.look.color, 2, e.dashed ? 5.0 : 0.0});
  c.marker(e.look.marker, {x + kSampleLen / 2, snap(cy)}, 8, e.look.color);
}

}  // namespace

double line_height(const Canvas& c, double size) {
  FontMetrics m = c.font().metrics(size);
  return std::ceil(m.ascent + m.descent);
}

double draw_legend_row(Canvas& c, const std::vector<LegendEntry>& entries, double cx, double top,
                       double max_width, bool draw) {
  if (entries.empty()) return 0;
  double row_h = std::max(18.0, line_height(c, kLegendSize) + 4), gap = 22;
  std::vector<std::vector<size_t>> rows(1);
  double w = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    double ew = entry_width(c, entries[i]);
    if (!rows.back().empty() && w + gap + ew > max_width) {
      rows.emplace_back();
      w = 0;
    }
    w += (rows.back().empty() ? 0 : gap) + ew;
    rows.back().push_back(i);
  }
  if (draw) {
    for (size_t r = 0; r < rows.size(); ++r) {
      double rw = 0;
      for (size_t i : rows[r]) rw += entry_width(c, entries[i]) + (i == rows[r][0] ? 0 : gap);
      double x = std::round(cx - rw / 2), cy = top + r * row_h + row_h / 2;
      for (size_t i : rows[r]) {
        draw_legend_sample(c, entries[i], x, cy);
        c.text({x + sample_width(entries[i]) + 6, cy}, entries[i].name,
               {kLegendSize, kInk, HAlign::Left, VAlign::Middle});
        x += entry_width(c, entries[i]) + gap;
      }
    }
  }
  return rows.size() * row_h;
}

void draw_inner_legend(Canvas& c, const PlotArea& f, const std::vector<LegendEntry>& entries,
                       const std::vector<Point>& obstacles) {
  if (entries.empty()) return;
  double row_h = std::max(18.0, line_height(c, kLegendSize) + 3);
  double bw = 0;
  for (auto& e : entries) bw = std::max(bw, entry_width(c, e));
  bw = std::ceil(bw + 20);
  double bh = std::ceil(entries.size() * row_h + 10);
  double inset = 8;
  struct Corner {
    double x, y;
  };
  const Corner corners[] = {{f.right - inset - bw, f.top + inset},
                            {f.left + inset, f.top + inset},
                            {f.right - inset - bw, f.bottom - inset - bh},
                            {f.left + inset, f.bottom - inset - bh}};
  int best = 0;
  size_t best_hits = std::numeric_limits<size_t>::max();
  for (int k = 0; k < 4; ++k) {
    size_t hits = 0;
    for (const Point& p : obstacles)
      hits += p.x >= corners[k].x - 4 && p.x <= corners[k].x + bw + 4 && p.y >= corners[k].y - 4 &&
              p.y <= corners[k].y + bh + 4;
    if (hits < best_hits) best = k, best_hits = hits;
  }
  double x0 = std::round(corners[best].x), y0 = std::round(corners[best].y);
  c.fill_rect(x0, y0, x0 + bw, y0 + bh, kWhite);
  c.stroke_rect(x0, y0, x0 + bw, y0 + bh, kLegendBorder, 1);
  for (size_t i = 0; i < entries.size(); ++i) {
    double cy = y0 + 5 + (i + 0.5) * row_h;
    draw_legend_sample(c, entries[i], x0 + 8, cy);
    c.text({x0 + 8 + sample_width(entries[i]) + 6, cy}, entries[i].name,
           {kLegendSize, kInk, HAlign::Left, VAlign::Middle});
  }
}

// ---------------------------------------------------------------------------------------------
// The frame

PlotArea draw_frame(Canvas& c, int x, int y, int w, int h, const std::string& title, const Axis& xa,
                    Range xr, const Axis& ya, Range yr, const Style& st,
                    const std::vector<LegendEntry>* legend_row) {
  double top = y + kPad, bottom = y + h - kPad, left = x + kPad;
  FontMetrics title_m = c.font().metrics(st.title_size);
  FontMetrics label_m = c.font().metrics(kLabelSize);
  FontMetrics tick_m = c.font().metrics(kTickSize);
  double tick_h = std::ceil(tick_m.ascent + tick_m.descent);
  double label_h = std::ceil(label_m.ascent + label_m.descent);

  double title_baseline = top + std::ceil(title_m.ascent);
  if (!title.empty()) top += std::ceil(title_m.ascent + title_m.descent) + 6;
  double legend_top = top;
  if (legend_row && !legend_row->empty()) top += draw_legend_row(c, *legend_row, 0, 0, w - 2 * kPad, false) + 6;
  else top += 4;  // room for the half of a top tick label that rises above the frame

  double x_label_baseline = bottom - std::ceil(label_m.descent);
  if (!xa.label.empty()) bottom -= label_h + 4;
  bottom -= kTickLen + 3 + tick_h;
  int T = int(top), B = int(bottom);

  double y_label_left = left;
  if (!ya.label.empty()) left += label_h + 6;
  Ticks yt = make_ticks(ya, yr, std::clamp((B - T) / 45, 3, 8));
  double ytw = 0;
  for (auto& s : yt.labels) ytw = std::max(ytw, c.text_width(s, kTickSize));
  int L = int(std::ceil(left + ytw + 4 + kTickLen));

  double right_est = x + w - kPad;
  int xtarget = std::clamp(int((right_est - L) / 70), 3, 10);
  Ticks xt = make_ticks(xa, xr, xtarget);
  double last_w = xt.labels.empty() ? 0 : c.text_width(xt.labels.back(), kTickSize);
  int R = int(std::floor(right_est - std::max(0.0, last_w / 2 - kPad + 2)));
  if (R - L < 10) R = L + 10;
  if (B - T < 10) B = T + 10;

  AxisScale sx(xr.lo, xr.hi, xa.log2 && xa.categories.empty(), xa.reversed ? R - 0.5 : L + 0.5,
               xa.reversed ? L + 0.5 : R - 0.5);
  AxisScale sy(yr.lo, yr.hi, ya.log2, ya.reversed ? T + 0.5 : B - 0.5, ya.reversed ? B - 0.5 : T + 0.5);

  // Grid first, under everything.
  for (double v : yt.at) {
    double py = snap(sy(v));
    if (py > T + 2 && py < B - 2) c.line({L + 1.0, py}, {R - 1.0, py}, {kGrid, 1});
  }
  if (xa.categories.empty())
    for (double v : xt.at) {
      double px = snap(sx(v));
      if (px > L + 2 && px < R - 2) c.line({px, T + 1.0}, {px, B - 1.0}, {kGrid, 1});
    }
  c.stroke_rect(L, T, R, B, kFrame, 1);

  for (size_t i = 0; i < yt.at.size(); ++i) {
    double py = snap(sy(yt.at[i]));
    if (!(py >= T && py <= B)) continue;
    c.line({L - 0.5 - kTickLen, py}, {L - 0.5, py}, {kFrame, 1});
    c.text({L - kTickLen - 4.0, py}, yt.labels[i], {kTickSize, kInk, HAlign::Right, VAlign::Middle});
  }
  // Categorical labels that would collide are thinned to every k-th one.
  size_t every = 1;
  if (!xa.categories.empty() && xt.at.size() > 1) {
    double widest = 0;
    for (auto& s : xt.labels) widest = std::max(widest, c.text_width(s, kTickSize));
    double spacing = std::abs(sx(1) - sx(0));
    every = size_t(std::max(1.0, std::ceil((widest + 8) / std::max(spacing, 1.0))));
  }
  for (size_t i = 0; i < xt.at.size(); i += every) {
    double px = snap(sx(xt.at[i]));
    if (!(px >= L && px <= R)) continue;
    c.line({px, B - 0.5}, {px, B - 0.5 + kTickLen}, {kFrame, 1});
    c.text({px, B + kTickLen + 3.0}, xt.labels[i], {kTickSize, kInk, HAlign::Center, VAlign::Top});
  }

  if (!title.empty())
    c.text({(L + R) / 2.0, title_baseline}, title,
           {st.title_size, kInk, HAlign::Center, VAlign::Baseline, true});
  if (legend_row && !legend_row->empty())
    draw_legend_row(c, *legend_row, (L + R) / 2.0, legend_top, w - 2 * kPad, true);
  if (!xa.label.empty() && st.show_x_label)
    c.text({(L + R) / 2.0, x_label_baseline}, xa.label,
           {kLabelSize, kInk, HAlign::Center, VAlign::Baseline});
  if (!ya.label.empty() && st.show_y_label)
    c.text({y_label_left, (T + B) / 2.0}, ya.label,
           {kLabelSize, kInk, HAlign::Center, VAlign::Top, false, true});
  return {L, T, R, B, sx, sy};
}

}  // namespace detail

}  // namespace sb::plot
