// Charts rasterized in C++ and encoded as PNG by the library's stb_image_write (image_io): line
// charts with error bars, small multiples, grouped bars and image grids for the `compare` report.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tools/app/font.h"

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

// An RGB image to draw on. Coordinates are in pixels with y down; pixel (i, j) covers the square
// [i, i+1) x [j, j+1), so a 1-pixel line through x = i + 0.5 is crisp. Shapes are anti-aliased
// by their exact coverage of each pixel; drawing outside the canvas is clipped.
class Canvas {
 public:
  Canvas(int width, int height, Color background = kWhite);
  // Copies an (height, width, 3) RGB buffer.
  static Canvas from_rgb(int width, int height, const uint8_t* rgb);

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

// ---- axes ----

// "Nice" tick values (1, 2 or 5 times a power of ten apart) inside [lo, hi], about `target` of
// them; never fewer than two for a non-empty range.
std::vector<double> nice_ticks(double lo, double hi, int target = 6);
// A tick label with as many decimals as the step between ticks needs: 0.25 step -> "0.75".
std::string format_tick(double v, double step);

struct Axis {
  std::string label;  // with units, e.g. "val mIoU (fraction of 1)"
  bool log2 = false;  // powers of two evenly spaced; values <= 0 are not drawn
  bool reversed = false;  // larger values on the left (x) or bottom (y)
  std::optional<double> min, max;  // limits; from the data (padded) when unset
  // Non-empty: a categorical axis. Point i of a series sits at category i, labelled with
  // categories[i]; the series' x values are ignored.
  std::vector<std::string> categories;
};

// Maps data values to pixels along one axis (linear or log2).
class AxisScale {
 public:
  AxisScale(double lo, double hi, bool log2, double pixel_lo, double pixel_hi);
  double operator()(double v) const;  // NaN for values a log2 axis cannot show
 private:
  double lo_, hi_, p0_, p1_;
  bool log2_;
};

// Where a chart put its data: the plot rectangle [left, right) x [top, bottom), frame included,
// and the maps from data to pixels, for annotations drawn on top (and for tests).
struct PlotArea {
  int left, top, right, bottom;
  AxisScale x, y;
};

// ---- charts ----

// Every member has a default, so designated initializers can name only what they need:
// Series{.name = "GN", .x = batch_sizes, .y = means, .err = stds}.
struct Series {
  std::string name{};          // legend entry; unnamed series get none
  std::vector<double> x{};     // empty: 0, 1, 2, ... (and always so on a categorical axis)
  std::vector<double> y{};     // NaN: a gap in the line
  std::vector<double> err{};   // empty, or per point: a bar from y - err to y + err (the std)
  std::optional<Color> color{};    // default: series_color of the series' index
  std::optional<Marker> marker{};  // default: circle, square, triangle, diamond in turn
  bool dashed = false;
};

struct LineChart {
  std::string title;
  Axis x, y;
  std::vector<Series> series;
  bool legend = true;  // inside the plot, in the corner with the fewest data points
  // Pixels between series drawn at the same x, so that error bars do not hide each other.
  double dodge = 0;
};

// A grid of line charts with one y range (when share_y) and one legend above them; each panel's
// title is its caption. Series with the same name get the same color and marker in every panel.
struct SmallMultiples {
  std::string title;
  std::vector<LineChart> panels;
  int columns = 0;  // 0: as square a grid as fits
  bool share_y = true;
};

// Bars grouped by category, one bar per series in each group; err draws error bars. The y axis
// always includes 0, so negative values hang below it.
struct BarChart {
  std::string title;
  std::vector<std::string> categories;
  std::string x_label;
  Axis y;  // label and limits; log2 and categories are ignored
  std::vector<Series> series;  // y[i] is the bar in categories[i]; x, marker, dashed are ignored
  bool legend = true;
};

// Images in a grid, row by row, each scaled (nearest neighbour) to the same cell size, with a
// caption under each and optional titles above the columns.
struct ImageGrid {
  struct Tile {
    Canvas image;
    std::string caption;
  };
  std::string title;
  std::vector<Tile> tiles;
  int columns = 4;
  std::vector<std::string> column_titles;
  int cell = 0;  // the longer side of each cell in pixels; 0: images scaled up to at least 128
};

// Each chart drawn into the rectangle (x, y, w, h) of an existing canvas, or onto a new canvas.
PlotArea draw(Canvas& canvas, const LineChart& chart, int x, int y, int w, int h);
void draw(Canvas& canvas, const SmallMultiples& chart, int x, int y, int w, int h);
PlotArea draw(Canvas& canvas, const BarChart& chart, int x, int y, int w, int h);
Canvas render(const LineChart& chart, int width = 800, int height = 500);
Canvas render(const SmallMultiples& chart, int width = 1000, int height = 640);
Canvas render(const BarChart& chart, int width = 800, int height = 500);
Canvas render(const ImageGrid& grid);  // sized by its content

// ---- output ----

std::vector<uint8_t> encode_png(const Canvas& canvas);
// Atomic (temporary file, fsync, rename); throws sb::Error naming the path on failure.
void write_png(const Canvas& canvas, const std::string& path);
// RFC 4648 base64, with padding.
std::string base64(std::span<const uint8_t> bytes);
// "data:image/png;base64,...", for an <img src> in a self-contained HTML page.
std::string png_data_uri(const Canvas& canvas);

}  // namespace sb::plot
