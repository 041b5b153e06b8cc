// Axes for the charts: nice tick values and labels, axis descriptions (linear, log2, reversed,
// categorical), the map from data to pixels, and the plot area a chart reports back.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace sb::plot {

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

}  // namespace sb::plot
