// The charts the compare report draws: line charts with error bars, small multiples, grouped bars
// and image grids, each drawn into a rectangle of a canvas or rendered onto a new one.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "tools/viz/axes.h"
#include "tools/viz/canvas.h"

namespace sb::plot {

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

}  // namespace sb::plot
