// Chart rasterization: anti-aliased primitives by exact pixel coverage, axis layout with nice
// ticks, the four chart types the compare report needs, and PNG/base64 output.
#include "tools/app/plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "core/errors.h"
#include "core/io/fileio.h"
// PNG encoding goes through the library's one private copy of stb_image_write (compiled with
// STB_IMAGE_WRITE_STATIC in core/io/image.cpp), so there is no second copy to clash with.
#include "core/io/image.h"

namespace sb::plot {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Type sizes (em pixels) and colors shared by every chart, so the figures of a report match.
constexpr double kTitleSize = 16;
constexpr double kPanelTitleSize = 13;
constexpr double kLabelSize = 12;
constexpr double kTickSize = 11;
constexpr double kLegendSize = 12;
constexpr int kTickLen = 4;
constexpr int kPad = 10;
constexpr Color kInk{34, 34, 34};
constexpr Color kFrame{90, 90, 90};
constexpr Color kGrid{230, 230, 230};
constexpr Color kMuted{130, 130, 130};
constexpr Color kLegendBorder{200, 200, 200};
constexpr Color kErrorBarOnBars{40, 40, 40};

constexpr Marker kMarkerCycle[] = {Marker::Circle, Marker::Square, Marker::Triangle,
                                   Marker::Diamond};

double clamp01(double v) { return v < 0 ? 0 : v > 1 ? 1 : v; }

// Distance from p to the segment ab.
double segment_distance(Point p, Point a, Point b) {
  double dx = b.x - a.x, dy = b.y - a.y;
  double len2 = dx * dx + dy * dy;
  double t = len2 > 0 ? clamp01(((p.x - a.x) * dx + (p.y - a.y) * dy) / len2) : 0;
  double ex = a.x + t * dx - p.x, ey = a.y + t * dy - p.y;
  return std::sqrt(ex * ex + ey * ey);
}

bool finite(Point p) { return std::isfinite(p.x) && std::isfinite(p.y); }

// The centre of the pixel a coordinate falls in: where a 1-pixel line is crisp.
double snap(double v) { return std::floor(v) + 0.5; }

}  // namespace

// ---------------------------------------------------------------------------------------------
// Colors

Color series_color(int i) {
  static constexpr Color kOkabeIto[] = {{0, 114, 178},   {213, 94, 0},   {0, 158, 115},
                                        {230, 159, 0},   {204, 121, 167}, {86, 180, 233},
                                        {0, 0, 0},       {240, 228, 66}};
  constexpr int n = int(std::size(kOkabeIto));
  return kOkabeIto[((i % n) + n) % n];
}

// ---------------------------------------------------------------------------------------------
// Canvas

Canvas::Canvas(int width, int height, Color background)
    : w_(width), h_(height), cx0_(0), cy0_(0), cx1_(width), cy1_(height), font_(&Font::standard()) {
  SB_CHECK(width >= 0 && height >= 0 && width <= 32768 && height <= 32768,
           "plot::Canvas: size ", width, "x", height, " is out of range (0..32768 per side)");
  px_.resize(size_t(width) * height * 3);
  for (size_t i = 0; i < px_.size(); i += 3) {
    px_[i] = background.r;
    px_[i + 1] = background.g;
    px_[i + 2] = background.b;
  }
}

Canvas Canvas::from_rgb(int width, int height, const uint8_t* rgb) {
  Canvas c(width, height);
  std::copy(rgb, rgb + c.px_.size(), c.px_.begin());
  return c;
}

Color Canvas::pixel(int x, int y) const {
  SB_CHECK(x >= 0 && y >= 0 && x < w_ && y < h_, "plot::Canvas::pixel: (", x, ", ", y,
           ") is outside the ", w_, "x", h_, " canvas");
  const uint8_t* p = &px_[(size_t(y) * w_ + x) * 3];
  return {p[0], p[1], p[2]};
}

void Canvas::set_pixel(int x, int y, Color c) {
  if (x < 0 || y < 0 || x >= w_ || y >= h_) return;
  uint8_t* p = &px_[(size_t(y) * w_ + x) * 3];
  p[0] = c.r;
  p[1] = c.g;
  p[2] = c.b;
}

void Canvas::set_clip(int x0, int y0, int x1, int y1) {
  cx0_ = std::clamp(x0, 0, w_);
  cy0_ = std::clamp(y0, 0, h_);
  cx1_ = std::clamp(x1, cx0_, w_);
  cy1_ = std::clamp(y1, cy0_, h_);
}

void Canvas::reset_clip() { set_clip(0, 0, w_, h_); }

void Canvas::blend(int x, int y, Color c, double alpha) {
  if (x < cx0_ || y < cy0_ || x >= cx1_ || y >= cy1_ || !(alpha > 0)) return;
  alpha = std::min(alpha, 1.0);
  uint8_t* p = &px_[(size_t(y) * w_ + x) * 3];
  const uint8_t src[3] = {c.r, c.g, c.b};
  for (int k = 0; k < 3; ++k) p[k] = uint8_t(std::lround(p[k] + (src[k] - p[k]) * alpha));
}

template <class Coverage>
void Canvas::paint(double x0, double y0, double x1, double y1, Color c, Coverage cov) {
  if (!(std::isfinite(x0) && std::isfinite(y0) && std::isfinite(x1) && std::isfinite(y1))) return;
  int ix0 = std::max(cx0_, int(std::floor(std::max(x0, -1.0))));
  int iy0 = std::max(cy0_, int(std::floor(std::max(y0, -1.0))));
  int ix1 = std::min(cx1_, int(std::ceil(std::min(x1, double(w_) + 1))));
  int iy1 = std::min(cy1_, int(std::ceil(std::min(y1, double(h_) + 1))));
  for (int y = iy0; y < iy1; ++y)
    for (int x = ix0; x < ix1; ++x) blend(x, y, c, cov(x + 0.5, y + 0.5));
}

void Canvas::fill_rect(double x0, double y0, double x1, double y1, Color c) {
  if (x1 < x0) std::swap(x0, x1);
  if (y1 < y0) std::swap(y0, y1);
  // The exact area of the pixel inside the rectangle.
  paint(x0, y0, x1, y1, c, [&](double px, double py) {
    double ox = std::min(x1, px + 0.5) - std::max(x0, px - 0.5);
    double oy = std::min(y1, py + 0.5) - std::max(y0, py - 0.5);
    return clamp01(ox) * clamp01(oy);
  });
}

void Canvas::stroke_rect(double x0, double y0, double x1, double y1, Color c, double width) {
  if (x1 < x0) std::swap(x0, x1);
  if (y1 < y0) std::swap(y0, y1);
  fill_rect(x0, y0, x1, y0 + width, c);
  fill_rect(x0, y1 - width, x1, y1, c);
  fill_rect(x0, y0 + width, x0 + width, y1 - width, c);
  fill_rect(x1 - width, y0 + width, x1, y1 - width, c);
}

void Canvas::line(Point a, Point b, const Pen& pen) {
  Point pts[2] = {a, b};
  polyline(pts, pen);
}

void Canvas::polyline(std::span<const Point> points, const Pen& pen) {
  if (!(pen.width > 0)) return;
  // Segments to stroke, after splitting at NaN and cutting into dashes.
  std::vector<std::pair<Point, Point>> segs;
  // Round caps lengthen each dash by the pen width, so the gaps are widened to match.
  double on = pen.dash, off = pen.dash * 0.6 + pen.width;
  double phase = 0;  // distance into the current on+off period
  for (size_t i = 0; i + 1 < points.size(); ++i) {
    Point a = points[i], b = points[i + 1];
    if (!finite(a) || !finite(b)) {
      phase = 0;
      continue;
    }
    if (!(pen.dash > 0)) {
      segs.push_back({a, b});
      continue;
    }
    double len = std::hypot(b.x - a.x, b.y - a.y), t = 0;
    while (t < len) {
      bool drawing = phase < on;
      double step = std::min(len - t, drawing ? on - phase : on + off - phase);
      if (drawing) {
        double t0 = t / len, t1 = (t + step) / len;
        segs.push_back({{a.x + (b.x - a.x) * t0, a.y + (b.y - a.y) * t0},
                        {a.x + (b.x - a.x) * t1, a.y + (b.y - a.y) * t1}});
      }
      t += step;
      phase += step;
      if (phase >= on + off - 1e-9) phase = 0;
    }
  }
  if (segs.empty()) return;

  // Coverage is the maximum over segments, not a sum, so joints are not darker than the line.
  double hw = pen.width / 2, reach = hw + 1;
  double bx0 = segs[0].first.x, by0 = segs[0].first.y, bx1 = bx0, by1 = by0;
  for (auto& [a, b] : segs) {
    bx0 = std::min({bx0, a.x, b.x});
    by0 = std::min({by0, a.y, b.y});
    bx1 = std::max({bx1, a.x, b.x});
    by1 = std::max({by1, a.y, b.y});
  }
  int ox = std::max(cx0_, int(std::floor(bx0 - reach))), oy = std::max(cy0_, int(std::floor(by0 - reach)));
  int ex = std::min(cx1_, int(std::ceil(bx1 + reach))), ey = std::min(cy1_, int(std::ceil(by1 + reach)));
  if (ex <= ox || ey <= oy) return;
  int bw = ex - ox, bh = ey - oy;
  std::vector<float> cov(size_t(bw) * bh, 0.f);
  for (auto& [a, b] : segs) {
    int sx0 = std::max(ox, int(std::floor(std::min(a.x, b.x) - reach)));
    int sy0 = std::max(oy, int(std::floor(std::min(a.y, b.y) - reach)));
    int sx1 = std::min(ex, int(std::ceil(std::max(a.x, b.x) + reach)));
    int sy1 = std::min(ey, int(std::ceil(std::max(a.y, b.y) + reach)));
    for (int y = sy0; y < sy1; ++y)
      for (int x = sx0; x < sx1; ++x) {
        double d = segment_distance({x + 0.5, y + 0.5}, a, b);
        // A pen thinner than a pixel fades instead of thinning below one pixel.
        double c = pen.width >= 1 ? clamp01(hw + 0.5 - d) : pen.width * clamp01(1 - d);
        float& slot = cov[size_t(y - oy) * bw + (x - ox)];
        slot = std::max(slot, float(c));
      }
  }
  for (int y = 0; y < bh; ++y)
    for (int x = 0; x < bw; ++x) blend(ox + x, oy + y, pen.color, cov[size_t(y) * bw + x]);
}

void Canvas::fill_circle(Point c, double r, Color color) {
  if (!finite(c) || !(r > 0)) return;
  paint(c.x - r - 1, c.y - r - 1, c.x + r + 1, c.y + r + 1, color, [&](double px, double py) {
    return clamp01(r + 0.5 - std::hypot(px - c.x, py - c.y));
  });
}

void Canvas::fill_polygon(std::span<const Point> v, Color color) {
  if (v.size() < 3) return;
  for (const Point& p : v)
    if (!finite(p)) return;
  double area = 0, x0 = v[0].x, y0 = v[0].y, x1 = x0, y1 = y0;
  for (size_t i = 0; i < v.size(); ++i) {
    const Point &a = v[i], &b = v[(i + 1) % v.size()];
    area += a.x * b.y - b.x * a.y;
    x0 = std::min(x0, a.x), y0 = std::min(y0, a.y), x1 = std::max(x1, a.x), y1 = std::max(y1, a.y);
  }
  double sign = area > 0 ? 1 : -1;
  // Signed distance to a convex polygon, approximated by the largest distance to an edge line.
  paint(x0 - 1, y0 - 1, x1 + 1, y1 + 1, color, [&](double px, double py) {
    double d = -std::numeric_limits<double>::infinity();
    for (size_t i = 0; i < v.size(); ++i) {
      const Point &a = v[i], &b = v[(i + 1) % v.size()];
      double ex = b.x - a.x, ey = b.y - a.y, len = std::hypot(ex, ey);
      if (len == 0) continue;
      d = std::max(d, -sign * (ex * (py - a.y) - ey * (px - a.x)) / len);
    }
    return clamp01(0.5 - d);
  });
}

void Canvas::marker(Marker m, Point c, double size, Color color) {
  if (m == Marker::None || !finite(c) || !(size > 0)) return;
  auto shape = [&](double s, Color col) {
    switch (m) {
      case Marker::Circle: fill_circle(c, s / 2, col); break;
      case Marker::Square: {
        double h = s * 0.44;  // a square looks larger than a circle of the same width
        fill_rect(c.x - h, c.y - h, c.x + h, c.y + h, col);
        break;
      }
      case Marker::Triangle: {
        double r = s * 0.62;  // circumradius; the centroid sits on the data point
        Point t[3] = {{c.x, c.y - r}, {c.x + r * 0.866, c.y + r * 0.5}, {c.x - r * 0.866, c.y + r * 0.5}};
        fill_polygon(t, col);
        break;
      }
      case Marker::Diamond: {
        double r = s * 0.6;
        Point d[4] = {{c.x, c.y - r}, {c.x + r, c.y}, {c.x, c.y + r}, {c.x - r, c.y}};
        fill_polygon(d, col);
        break;
      }
      case Marker::None: break;
    }
  };
  shape(size + 2.5, kWhite);
  shape(size, color);
}

double Canvas::text_width(std::string_view utf8, double size, bool bold) const {
  return font_->width(utf8, size, bold);
}

void Canvas::text(Point anchor, std::string_view utf8, const TextStyle& st) {
  if (utf8.empty() || !finite(anchor)) return;
  TextMask m = font_->render(utf8, st.size, st.bold);
  FontMetrics fm = font_->metrics(st.size);
  // The anchor in the mask's own (unrotated) frame.
  double ax = m.origin_x + (st.halign == HAlign::Left     ? 0
                            : st.halign == HAlign::Center ? m.advance / 2
                                                          : m.advance);
  double ay = m.baseline - (st.valign == VAlign::Top      ? fm.ascent
                            : st.valign == VAlign::Middle ? fm.cap_height / 2
                            : st.valign == VAlign::Bottom ? -fm.descent
                                                          : 0);
  if (!st.vertical) {
    int left = int(std::lround(anchor.x - ax)), top = int(std::lround(anchor.y - ay));
    for (int y = 0; y < m.height; ++y)
      for (int x = 0; x < m.width; ++x)
        blend(left + x, top + y, st.color, m.alpha[size_t(y) * m.width + x] / 255.0);
    return;
  }
  // Rotated a quarter turn counter-clockwise: mask point (u, v) lands at (v, width - u).
  int left = int(std::lround(anchor.x - ay)), top = int(std::lround(anchor.y - (m.width - ax)));
  for (int v = 0; v < m.height; ++v)
    for (int u = 0; u < m.width; ++u)
      blend(left + v, top + m.width - 1 - u, st.color, m.alpha[size_t(v) * m.width + u] / 255.0);
}

void Canvas::draw_image(const Canvas& src, int x, int y, int w, int h) {
  if (w <= 0 || h <= 0 || src.w_ == 0 || src.h_ == 0) return;
  for (int j = std::max(y, cy0_); j < std::min(y + h, cy1_); ++j) {
    int sy = std::min(src.h_ - 1, int((j - y + 0.5) * src.h_ / h));
    for (int i = std::max(x, cx0_); i < std::min(x + w, cx1_); ++i) {
      int sx = std::min(src.w_ - 1, int((i - x + 0.5) * src.w_ / w));
      const uint8_t* p = &src.px_[(size_t(sy) * src.w_ + sx) * 3];
      set_pixel(i, j, {p[0], p[1], p[2]});
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Axes

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

namespace {

struct Range {
  double lo, hi;
};

// Axis limits from data: the finite values (positive on log2), padded by `pad` of the span on
// each side, with the axis' own min/max taking precedence. Never an empty range.
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

// Everything needed to draw one series: its points (categorical and default x resolved).
struct Look {
  Color color;
  Marker marker;
};

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

struct LegendEntry {
  std::string name;
  Look look;
  bool dashed = false;
  bool swatch = false;  // a filled square (bars) rather than a line sample
};

constexpr double kSampleLen = 24;

double line_height(const Canvas& c, double size) {
  FontMetrics m = c.font().metrics(size);
  return std::ceil(m.ascent + m.descent);
}

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

// A row (wrapping to more rows when needed) of legend entries centred on cx; returns its height.
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

// How the shared parts of a chart are laid out; small multiples shrink titles and hide
// repeated axis labels (keeping their space, so that the panels line up).
struct Style {
  double title_size = kTitleSize;
  bool show_x_label = true;
  bool show_y_label = true;
};

// Title, optional legend row, axes, grid, ticks, tick labels and axis labels. Returns the plot
// area and the scales that map data into it.
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

std::vector<Point> series_points(const Series& s, const Axis& xa, const PlotArea& f, double dx) {
  std::vector<Point> pts;
  for (size_t i = 0; i < s.y.size(); ++i) {
    double px = f.x(x_of(s, xa, i)), py = f.y(s.y[i]);
    if (std::isfinite(px) && std::isfinite(py)) pts.push_back({px + dx, py});
    else pts.push_back({kNaN, kNaN});
  }
  return pts;
}

// The legend box inside the plot, in whichever corner covers the fewest drawn points.
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
                     series[i].marker.value_or(kMarkerCycle[i % 4])});
  return looks;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Charts

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
      Look look{s.color.value_or(series_color(i)), s.marker.value_or(kMarkerCycle[i % 4])};
      if (!s.name.empty()) legend.push_back({s.name, look, s.dashed});
    }
  auto look_of = [&](const Series& s) {
    size_t i = std::find(names.begin(), names.end(), s.name) - names.begin();
    return Look{s.color.value_or(series_color(int(i))), s.marker.value_or(kMarkerCycle[i % 4])};
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

// ---------------------------------------------------------------------------------------------
// Output

std::vector<uint8_t> encode_png(const Canvas& canvas) {
  SB_CHECK(canvas.width() > 0 && canvas.height() > 0, "plot::encode_png: the canvas is empty (",
           canvas.width(), "x", canvas.height(), ")");
  return sb::encode_png(canvas.data(), canvas.width(), canvas.height(), 3);
}

void write_png(const Canvas& canvas, const std::string& path) {
  std::vector<uint8_t> png = encode_png(canvas);
  try {
    write_file_atomic(path, png.data(), png.size());
  } catch (const Error& e) {
    throw Error(str("plot::write_png: ", e.what()));
  }
}

std::string base64(std::span<const uint8_t> bytes) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    uint32_t v = uint32_t(bytes[i]) << 16 | uint32_t(bytes[i + 1]) << 8 | bytes[i + 2];
    for (int k = 3; k >= 0; --k) out.push_back(kAlphabet[(v >> (6 * k)) & 63]);
  }
  size_t rest = bytes.size() - i;
  if (rest) {
    uint32_t v = uint32_t(bytes[i]) << 16 | (rest == 2 ? uint32_t(bytes[i + 1]) << 8 : 0);
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(rest == 2 ? kAlphabet[(v >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

std::string png_data_uri(const Canvas& canvas) {
  std::vector<uint8_t> png = encode_png(canvas);
  return "data:image/png;base64," + base64(png);
}

}  // namespace sb::plot
