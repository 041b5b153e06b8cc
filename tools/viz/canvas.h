// The canvas every chart draws on: an RGB image with anti-aliased shapes, markers and text, and
// its output as PNG (bytes, an atomic file, or a base64 data URI for a self-contained page).
#pragma once

#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tools/viz/font.h"

namespace sb::plot {

struct Color {
  uint8_t r = 0, g = 0, b = 0;
  bool operator==(const Color&) const = default;
};
inline constexpr Color kWhite{255, 255, 255};
inline constexpr Color kBlack{0, 0, 0};

// The i-th series color: the Okabe-Ito palette, readable by color-blind readers and in print.
Color series_color(int i);

enum class Marker { None, Circle, Square, Triangle, Diamond };
enum class HAlign { Left, Center, Right };
enum class VAlign { Top, Middle, Baseline, Bottom };  // Middle centers the capitals

struct Pen {
  Color color = kBlack;
  double width = 1;  // pixels
  double dash = 0;   // length of each dash in pixels; 0 draws a solid line
};

struct TextStyle {
  double size = 12;  // em size in pixels
  Color color = kBlack;
  HAlign halign = HAlign::Left;
  VAlign valign = VAlign::Baseline;
  bool bold = false;
  bool vertical = false;  // rotated 90 degrees counter-clockwise, reading upwards (y-axis labels)
};

struct Point {
  double x = 0, y = 0;
};

inline bool finite(Point p) { return std::isfinite(p.x) && std::isfinite(p.y); }
// The centre of the pixel a coordinate falls in: where a 1-pixel line is crisp.
inline double snap(double v) { return std::floor(v) + 0.5; }

// An RGB image to draw on. Coordinates are in pixels with y down; pixel (i, j) covers the square
// [i, i+1) x [j, j+1), so a 1-pixel line through x = i + 0.5 is crisp. Shapes are anti-aliased
// by their exact coverage of each pixel; drawing outside the canvas is clipped.
class Canvas {
 public:
  Canvas(int width, int height, Color background = kWhite);

  int width() const { return w_; }
  int height() const { return h_; }
  const uint8_t* data() const { return px_.data(); }  // (height, width, 3)
  Color pixel(int x, int y) const;
  void set_pixel(int x, int y, Color c);

  // The font for text(); Font::standard() unless changed.
  void set_font(const Font& font) { font_ = &font; }
  const Font& font() const { return *font_; }
  // Restricts drawing to [x0, x1) x [y0, y1) until reset_clip(): data stays inside its axes.
  void set_clip(int x0, int y0, int x1, int y1);
  void reset_clip();

  void fill_rect(double x0, double y0, double x1, double y1, Color c);
  // The outline of a rectangle, a `width`-pixel stroke inside its edges.
  void stroke_rect(double x0, double y0, double x1, double y1, Color c, double width = 1);
  void line(Point a, Point b, const Pen& pen);
  // Joined segments; NaN coordinates end the current run, so gaps in data stay gaps.
  void polyline(std::span<const Point> points, const Pen& pen);
  void fill_circle(Point center, double radius, Color c);
  // A filled convex polygon (vertices in order, either winding).
  void fill_polygon(std::span<const Point> vertices, Color c);
  // A data marker of the given size (its width in pixels), with a thin white rim so that
  // overlapping markers of different series stay distinct.
  void marker(Marker m, Point center, double size, Color c);
  // One line of UTF-8 text placed by its anchor; characters the font lacks are drawn as '?'.
  void text(Point anchor, std::string_view utf8, const TextStyle& style = {});
  double text_width(std::string_view utf8, double size, bool bold = false) const;
  // `src` scaled into the rectangle (x, y, w, h) by nearest neighbour, so masks keep hard edges.
  void draw_image(const Canvas& src, int x, int y, int w, int h);

 private:
  void blend(int x, int y, Color c, double alpha);
  // Blends `c` over each pixel with coverage cov(x + 0.5, y + 0.5) inside the pixel box.
  template <class Coverage>
  void paint(double x0, double y0, double x1, double y1, Color c, Coverage cov);

  int w_, h_;
  int cx0_, cy0_, cx1_, cy1_;  // the clip rectangle
  std::vector<uint8_t> px_;    // (h, w, 3)
  const Font* font_;
};

// ---- output ----

std::vector<uint8_t> encode_png(const Canvas& canvas);
// Atomic (temporary file, fsync, rename); throws sb::Error naming the path on failure.
void write_png(const Canvas& canvas, const std::string& path);
// RFC 4648 base64, with padding.
std::string base64(std::span<const uint8_t> bytes);
// "data:image/png;base64,...", for an <img src> in a self-contained HTML page.
std::string png_data_uri(const Canvas& canvas);

}  // namespace sb::plot
