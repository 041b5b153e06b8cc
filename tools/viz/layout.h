// Internal to tools/viz (implemented in axes.cpp, used by charts.cpp): the look every chart
// shares, axis ranges from data, legends, and the frame (title, grid, ticks, axis labels) a chart
// draws its data into.
#pragma once

#include <string>
#include <vector>

#include "tools/viz/axes.h"
#include "tools/viz/canvas.h"

namespace sb::plot::detail {

// Type sizes (em pixels) and colors shared by every chart, so the figures of a report match.
inline constexpr double kTitleSize = 16;
inline constexpr double kPanelTitleSize = 13;
inline constexpr double kLabelSize = 12;
inline constexpr double kTickSize = 11;
inline constexpr double kLegendSize = 12;
inline constexpr int kTickLen = 4;
inline constexpr int kPad = 10;
inline constexpr Color kInk{34, 34, 34};
inline constexpr Color kFrame{90, 90, 90};
inline constexpr Color kGrid{230, 230, 230};
inline constexpr Color kMuted{130, 130, 130};
inline constexpr Color kLegendBorder{200, 200, 200};
inline constexpr Color kErrorBarOnBars{40, 40, 40};

struct Range {
  double lo, hi;
};

// Axis limits from data: the finite values (positive on log2), padded by `pad` of the span on
// each side, with the axis' own min/max taking precedence. Never an empty range.
Range resolve_range(const std::vector<double>& values, const Axis& axis, double pad);

// How one series is drawn, in its lines and in the legend.
struct Look {
  Color color;
  Marker marker;
};

struct LegendEntry {
  std::string name;
  Look look;
  bool dashed = false;
  bool swatch = false;  // a filled square (bars) rather than a line sample
};

// The height of one line of text of em size `size` in the canvas' font, whole pixels.
double line_height(const Canvas& c, double size);
// A row (wrapping to more rows when needed) of legend entries centred on cx; returns its height.
// With draw = false only measures.
double draw_legend_row(Canvas& c, const std::vector<LegendEntry>& entries, double cx, double top,
                       double max_width, bool draw);
// The legend box inside the plot, in whichever corner covers the fewest of `obstacles` (points
// along the drawn data).
void draw_inner_legend(Canvas& c, const PlotArea& f, const std::vector<LegendEntry>& entries,
                       const std::vector<Point>& obstacles);

// How the shared parts of a chart are laid out; small multiples shrink titles and hide
// repeated axis labels (keeping their space, so that the panels line up).
struct Style {
  double title_size = kTitleSize;
  bool show_x_label = true;
  bool show_y_label = true;
};

// Title, optional legend row, axes, grid, ticks, tick labels and axis labels inside the
// rectangle (x, y, w, h). Returns the plot area and the scales that map data into it.
PlotArea draw_frame(Canvas& c, int x, int y, int w, int h, const std::string& title, const Axis& xa,
                    Range xr, const Axis& ya, Range yr, const Style& st,
                    const std::vector<LegendEntry>* legend_row);

}  // namespace sb::plot::detail
