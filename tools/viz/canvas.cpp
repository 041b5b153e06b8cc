// The canvas: anti-aliased rectangles, lines, dashes, circles, polygons, markers and text, each
// blended by its exact coverage of every pixel; and the canvas out as PNG bytes, a file or base64.
#include "tools/viz/canvas.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/errors.h"
#include "core/io/fileio.h"
// PNG encoding goes through the library's one private copy of stb_image_write (compiled with
// STB_IMAGE_WRITE_STATIC in core/io/image.cpp), so there is no second copy to clash with.
#include "core/io/image.h"

namespace sb::plot {

namespace {

double clamp01(double v) { return v < 0 ? 0 : v > 1 ? 1 : v; }

// Distance from p to the segment ab.
double segment_distance(Point p, Point a, Point b) {
  double dx = b.x - a.x, dy = b.y - a.y;
  double len2 = dx * dx + dy * dy;
  double t = len2 > 0 ? clamp01(((p.x - a.x) * dx + (p.y - a.y) * dy) / len2) : 0;
  double ex = a.x + t * dx - p.x, ey = a.y + t * dy - p.y;
  return std::sqrt(ex * ex + ey * ey);
}

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
