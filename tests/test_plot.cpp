// The plotting library: nice ticks, log2 mapping, pixels where lines and text must be, NaN
// gaps and degenerate data, base64 vectors, PNG output and its errors. Charts are drawn with the
// built-in font so that the pixels checked do not depend on the installed fonts.
#include <doctest/doctest.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "cli_util.h"
#include "core/errors.h"
#include "core/io/fileio.h"
#include "tools/viz/plot.h"
#include "temp_dir.h"

using namespace sb;
using namespace sb::plot;
namespace fs = std::filesystem;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

struct TempDir : sbtest::TempDir {
  TempDir() : sbtest::TempDir("sb_plot") {}
};

Canvas test_canvas(int w, int h) {
  Canvas c(w, h);
  c.set_font(Font::builtin());
  return c;
}

bool is_white(Color c) { return c == kWhite; }
// Close to `want`: anti-aliasing and the marker rims blend colors a little.
bool near(Color c, Color want, int tol = 40) {
  return std::abs(c.r - want.r) <= tol && std::abs(c.g - want.g) <= tol &&
         std::abs(c.b - want.b) <= tol;
}

// The pixels of the canvas within [x0, x1) x [y0, y1) that are not white.
int ink(const Canvas& c, int x0, int y0, int x1, int y1) {
  int n = 0;
  for (int y = std::max(0, y0); y < std::min(c.height(), y1); ++y)
    for (int x = std::max(0, x0); x < std::min(c.width(), x1); ++x) n += !is_white(c.pixel(x, y));
  return n;
}

Color at(const Canvas& c, double x, double y) { return c.pixel(int(x), int(y)); }

uint32_t be32(const std::vector<uint8_t>& b, size_t i) {
  return uint32_t(b[i]) << 24 | uint32_t(b[i + 1]) << 16 | uint32_t(b[i + 2]) << 8 | b[i + 3];
}

}  // namespace

TEST_CASE("plot: nice ticks are 1, 2 or 5 times a power of ten, inside the range") {
  CHECK(nice_ticks(0, 1) == std::vector<double>{0, 0.2, 0.4, 0.6000000000000001, 0.8, 1});
  CHECK(nice_ticks(0, 10) == std::vector<double>{0, 2, 4, 6, 8, 10});
  CHECK(nice_ticks(-3, 7) == std::vector<double>{-2, 0, 2, 4, 6});
  CHECK(nice_ticks(0.43, 0.87).size() == 4);  // 0.5 .. 0.8, step 0.1
  CHECK(nice_ticks(5, 5) == std::vector<double>{5});
  CHECK(nice_ticks(1, 0).empty());
  CHECK(nice_ticks(0, kNaN).empty());
  CHECK(nice_ticks(1e300, 1.0000000000000002e300).size() <= 100);  // returns, however crowded
  CHECK(nice_ticks(-1e308, 1e308).empty());  // the span overflows

  std::mt19937 rng(7);
  std::uniform_real_distribution<double> exp10(-6, 6), u(-1, 1);
  for (int trial = 0; trial < 500; ++trial) {
    double scale = std::pow(10.0, exp10(rng)), a = u(rng) * scale, b = u(rng) * scale;
    double lo = std::min(a, b), hi = std::max(a, b);
    if (lo == hi) continue;
    auto t = nice_ticks(lo, hi, 6);
    REQUIRE(t.size() >= 2);
    CHECK(t.size() <= 11);
    double step = t[1] - t[0];
    double mant = step / std::pow(10.0, std::floor(std::log10(step) + 1e-9));
    CHECK((std::abs(mant - 1) < 1e-6 || std::abs(mant - 2) < 1e-6 || std::abs(mant - 5) < 1e-6));
    for (double v : t) {
      CHECK(v >= lo - step * 1e-6);
      CHECK(v <= hi + step * 1e-6);
    }
  }

  CHECK(format_tick(0.5, 0.1) == "0.5");
  CHECK(format_tick(0.6000000000000001, 0.2) == "0.6");
  CHECK(format_tick(0.05, 0.05) == "0.05");
  CHECK(format_tick(10, 5) == "10");
  CHECK(format_tick(-1e-17, 0.2) == "0.0");
  CHECK(format_tick(2500000, 500000) == "2.5e+06");
}

TEST_CASE("plot: log2 axis gives each doubling the same length") {
  AxisScale x(1, 32, true, 0, 500);
  CHECK(x(1) == doctest::Approx(0));
  CHECK(x(2) == doctest::Approx(100));
  CHECK(x(4) == doctest::Approx(200));
  CHECK(x(32) == doctest::Approx(500));
  CHECK(x(std::sqrt(2.0)) == doctest::Approx(50));
  CHECK(std::isnan(x(0)));
  CHECK(std::isnan(x(-4)));
  AxisScale y(0, 10, false, 100, 0);  // pixels grow downwards
  CHECK(y(0) == doctest::Approx(100));
  CHECK(y(2.5) == doctest::Approx(75));

  // On a chart: batch sizes 1..32 land at equal steps, labelled 1, 2, 4, ..., 32.
  LineChart chart;
  chart.x.log2 = true;
  chart.series.push_back({.name = "BN", .x = {1, 2, 4, 8, 16, 32}, .y = {0.1, 0.2, 0.3, 0.4, 0.5, 0.6}});
  Canvas c = test_canvas(500, 300);
  PlotArea a = draw(c, chart, 0, 0, 500, 300);
  double step = a.x(2) - a.x(1);
  CHECK(step > 40);
  for (double b : {4.0, 8.0, 16.0, 32.0}) CHECK(a.x(b) - a.x(b / 2) == doctest::Approx(step));
  CHECK(a.x(1) > a.left);
  CHECK(a.x(32) < a.right);
}

TEST_CASE("plot: primitives cover the pixels they must and no others") {
  Canvas c = test_canvas(60, 40);
  Color red{200, 0, 0};
  c.line({5, 10.5}, {55, 10.5}, {red, 1});
  CHECK(c.pixel(30, 10) == red);
  CHECK(is_white(c.pixel(30, 9)));
  CHECK(is_white(c.pixel(30, 11)));
  CHECK(is_white(c.pixel(3, 10)));  // past the end

  c.line({10.5, 15}, {10.5, 35}, {kBlack, 2});  // 2 pixels wide: columns 9.5..11.5
  CHECK(near(c.pixel(10, 25), kBlack, 5));
  CHECK(ink(c, 13, 15, 20, 35) == 0);

  Canvas d = test_canvas(100, 10);
  d.line({0, 5}, {100, 5}, {kBlack, 2, 6});  // dashed: both ink and gaps along the line
  int on = 0;
  for (int x = 0; x < 100; ++x) on += !is_white(d.pixel(x, 4));
  CHECK(on > 30);
  CHECK(on < 80);

  Canvas m = test_canvas(40, 40);
  m.fill_circle({20, 20}, 5, red);
  CHECK(m.pixel(20, 20) == red);
  CHECK(m.pixel(23, 20) == red);
  CHECK(is_white(m.pixel(27, 20)));
  m.fill_rect(2, 2, 6, 6, kBlack);
  CHECK(m.pixel(2, 2) == kBlack);
  CHECK(m.pixel(5, 5) == kBlack);
  CHECK(is_white(m.pixel(6, 6)));
  for (Marker mk : {Marker::Square, Marker::Triangle, Marker::Diamond}) {
    Canvas k = test_canvas(20, 20);
    k.marker(mk, {10, 10}, 8, red);
    CHECK(k.pixel(10, 10) == red);
    CHECK(ink(k, 0, 0, 4, 20) == 0);
  }

  // A clip rectangle keeps drawing inside it.
  Canvas clip = test_canvas(20, 20);
  clip.set_clip(5, 5, 15, 15);
  clip.fill_rect(0, 0, 20, 20, kBlack);
  CHECK(ink(clip, 0, 0, 20, 20) == 100);
  clip.reset_clip();
  clip.fill_rect(0, 0, 1, 1, kBlack);
  CHECK(clip.pixel(0, 0) == kBlack);
}

TEST_CASE("plot: text puts ink in its box, also rotated") {
  const Font& f = Font::builtin();
  CHECK(f.is_builtin());
  // 12 px: the bitmap font at scale 1, 6 pixels per character and 7-pixel capitals.
  CHECK(f.width("Hi", 12) == 11);
  Canvas c = test_canvas(80, 60);
  c.text({10, 20}, "Hi", {12, kBlack});
  CHECK(ink(c, 10, 13, 21, 20) > 10);
  CHECK(ink(c, 0, 0, 80, 60) == ink(c, 10, 13, 21, 20));
  CHECK(c.pixel(10, 13) == kBlack);  // the top of the H's left stem

  Canvas r = test_canvas(80, 60);
  r.text({30, 30}, "Hi", {12, kBlack, HAlign::Center, VAlign::Middle});
  CHECK(ink(r, 24, 26, 36, 34) == ink(r, 0, 0, 80, 60));

  // Rotated: reads upwards, its capitals' tops facing left.
  Canvas v = test_canvas(60, 80);
  v.text({20, 50}, "Hi", {12, kBlack, HAlign::Left, VAlign::Top, false, true});
  int total = ink(v, 0, 0, 60, 80);
  CHECK(total > 10);
  CHECK(ink(v, 20, 39, 31, 51) == total);

  // Whatever font is installed: ink stays in the box from width() and the metrics.
  Canvas s(200, 60);
  const Font& sf = s.font();
  s.text({20, 40}, "batch size", {12, kBlack});
  FontMetrics m = sf.metrics(12);
  double w = sf.width("batch size", 12);
  CHECK(w > 30);
  CHECK(w < 120);
  int in_box = ink(s, 18, int(40 - m.ascent) - 1, int(20 + w) + 3, int(40 + m.descent) + 2);
  CHECK(in_box > 30);
  CHECK(in_box == ink(s, 0, 0, 200, 60));
  MESSAGE("font in use: " << sf.description());
}

TEST_CASE("plot: a line chart draws its series where the data are") {
  LineChart chart;
  chart.title = "t";
  chart.x.label = "x (units)";
  chart.y.label = "y (units)";
  Color red{220, 0, 0};
  Series s{.name = "s", .x = {0, 10}, .y = {0, 10}};
  s.color = red;
  s.marker = Marker::None;
  chart.series.push_back(s);
  Canvas c = test_canvas(400, 300);
  PlotArea a = draw(c, chart, 0, 0, 400, 300);
  CHECK(a.left > 20);  // room for the y label and tick labels
  CHECK(a.bottom < 280);
  for (double v : {1.0, 3.0, 5.0, 7.5, 9.0}) CHECK(near(at(c, a.x(v), a.y(v)), red));
  // Off the line: the background (or a light grid line).
  CHECK(!near(at(c, a.x(2), a.y(8)), red, 100));
  CHECK(!near(at(c, a.x(8), a.y(2)), red, 100));
  // Title, axis labels and tick labels put ink outside the plot area.
  CHECK(ink(c, 0, 0, 400, a.top) > 0);
  CHECK(ink(c, 0, a.bottom + 1, 400, 300) > 0);
  CHECK(ink(c, 0, a.top, a.left - 6, a.bottom) > 0);

  // Mismatched lengths are an error that names the series.
  chart.series[0].x = {0, 1, 2};
  CHECK_THROWS_WITH_AS(draw(c, chart, 0, 0, 400, 300),
                       doctest::Contains("series 's' has 3 x values but 2 y values"), sb::Error);
}

TEST_CASE("plot: NaN leaves a gap, and degenerate data still gives a chart") {
  Color red{220, 0, 0};
  LineChart chart;
  Series s{.name = "gappy", .x = {0, 1, 2, 3, 4}, .y = {0, 1, kNaN, 3, 4}};
  s.color = red;
  s.marker = Marker::None;
  chart.series.push_back(s);
  Canvas c = test_canvas(400, 300);
  PlotArea a = draw(c, chart, 0, 0, 400, 300);
  CHECK(near(at(c, a.x(0.5), a.y(0.5)), red));
  CHECK(near(at(c, a.x(3.5), a.y(3.5)), red));
  CHECK(!near(at(c, a.x(2), a.y(2)), red, 100));  // no line bridges the NaN

  // A lone point (its neighbours are NaN) is still marked, even without markers.
  chart.series[0].y = {kNaN, kNaN, 2, kNaN, kNaN};
  Canvas lone = test_canvas(400, 300);
  a = draw(lone, chart, 0, 0, 400, 300);
  CHECK(near(at(lone, a.x(2), a.y(2)), red));

  // All equal: a window around the value, not a zero-height axis.
  chart.series[0].y = {0.5, 0.5, 0.5, 0.5, 0.5};
  Canvas flat = test_canvas(400, 300);
  a = draw(flat, chart, 0, 0, 400, 300);
  CHECK(a.y(0.5) > a.top + 10);
  CHECK(a.y(0.5) < a.bottom - 10);
  CHECK(near(at(flat, a.x(2), a.y(0.5)), red));

  // Empty series, all-NaN series, no series at all: an empty frame, no exception.
  for (auto ys : {std::vector<double>{}, std::vector<double>{kNaN, kNaN}}) {
    LineChart e;
    e.title = "empty";
    e.series.push_back({.name = "none", .y = ys});
    Canvas ec = test_canvas(300, 200);
    CHECK_NOTHROW(draw(ec, e, 0, 0, 300, 200));
  }
  Canvas none = test_canvas(300, 200);
  CHECK_NOTHROW(draw(none, LineChart{}, 0, 0, 300, 200));
  LineChart huge;
  huge.series.push_back({.name = "huge", .y = {1e308, -1e308, 1e-300}});
  CHECK_NOTHROW(draw(none, huge, 0, 0, 300, 200));

  // One point on a log2 axis, and a non-positive x there, which it cannot show.
  LineChart one;
  one.x.log2 = true;
  one.series.push_back({.name = "one", .x = {8, 0}, .y = {0.7, 0.9}, .err = {0.05, 0.05}});
  Canvas oc = test_canvas(300, 200);
  a = draw(oc, one, 0, 0, 300, 200);
  CHECK(a.x(8) > a.left);
  CHECK(a.x(8) < a.right);
  CHECK(near(at(oc, a.x(8), a.y(0.7)), series_color(0)));
}

TEST_CASE("plot: error bars, categorical axes and the legend") {
  LineChart chart;
  chart.x.categories = {"a", "b", "c"};
  Series s{.name = "with err", .y = {1, 2, 3}, .err = {0.5, 0.5, 0.5}};
  s.marker = Marker::None;
  chart.series.push_back(s);
  Canvas c = test_canvas(400, 300);
  PlotArea a = draw(c, chart, 0, 0, 400, 300);
  // The bar at category 0 reaches from 0.5 to 1.5.
  CHECK(near(at(c, a.x(0), a.y(1.4)), series_color(0)));
  CHECK(near(at(c, a.x(0), a.y(0.6)), series_color(0)));
  CHECK(a.x(1) - a.x(0) == doctest::Approx(a.x(2) - a.x(1)));
  // The legend's line sample sits in a corner free of data: upper left here.
  int found = 0;
  for (int y = a.top; y < a.top + 40; ++y)
    for (int x = a.left; x < a.left + 60; ++x) found += near(c.pixel(x, y), series_color(0), 10);
  CHECK(found > 10);
}

TEST_CASE("plot: bar charts, small multiples and image grids") {
  BarChart bars;
  bars.title = "gap";
  bars.categories = {"1", "2", "4"};
  bars.y.label = "gap";
  Series g{.name = "BN", .y = {0.3, -0.2, kNaN}, .err = {0.05, 0.05, 0}};
  g.color = Color{200, 0, 0};
  bars.series.push_back(g);
  Canvas c = test_canvas(400, 300);
  PlotArea a = draw(c, bars, 0, 0, 400, 300);
  CHECK(a.y(0) > a.top);
  CHECK(a.y(0) < a.bottom);  // negative bars hang below zero
  CHECK(near(at(c, a.x(0), a.y(0.15)), Color{200, 0, 0}, 5));
  CHECK(near(at(c, a.x(1), a.y(-0.1)), Color{200, 0, 0}, 5));
  CHECK(!near(at(c, a.x(2), a.y(0.15)), Color{200, 0, 0}, 100));  // NaN: no bar

  SmallMultiples sm;
  sm.title = "curves";
  for (int b : {1, 2, 4}) {
    LineChart p;
    p.title = "batch " + std::to_string(b);
    p.x.label = "epoch";
    p.y.label = "val mIoU";
    p.series.push_back({.name = "BN", .x = {1, 2, 3}, .y = {0.1 * b, 0.2 * b, 0.3}});
    p.series.push_back({.name = "GN", .x = {1, 2, 3}, .y = {0.3, 0.4, 0.5}});
    sm.panels.push_back(p);
  }
  Canvas s = test_canvas(700, 400);
  CHECK_NOTHROW(draw(s, sm, 0, 0, 700, 400));
  CHECK(ink(s, 0, 0, 700, 400) > 1000);
  Canvas empty = test_canvas(300, 200);
  CHECK_NOTHROW(draw(empty, SmallMultiples{}, 0, 0, 300, 200));

  ImageGrid grid;
  grid.columns = 2;
  grid.column_titles = {"input", "mask"};
  grid.tiles.push_back({Canvas(8, 8, Color{10, 200, 10}), "image 0"});
  grid.tiles.push_back({Canvas(8, 8, Color{128, 0, 0}), "a caption far too long to fit under its tile"});
  grid.tiles.push_back({Canvas(8, 4, Color{0, 128, 0}), ""});
  Canvas im = render(grid);
  CHECK(im.width() >= 2 * 128);
  CHECK(im.height() >= 2 * 128);
  int green = 0, dark_red = 0;
  for (int y = 0; y < im.height(); ++y)
    for (int x = 0; x < im.width(); ++x) {
      green += im.pixel(x, y) == Color{10, 200, 10};
      dark_red += im.pixel(x, y) == Color{128, 0, 0};
    }
  CHECK(green == 128 * 128);  // 8x8 scaled to the 128-pixel cell
  CHECK(dark_red == 128 * 128);
}

TEST_CASE("plot: base64 matches the RFC 4648 test vectors") {
  auto b64 = [](std::string s) {
    return base64(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
  };
  CHECK(b64("") == "");
  CHECK(b64("f") == "Zg==");
  CHECK(b64("fo") == "Zm8=");
  CHECK(b64("foo") == "Zm9v");
  CHECK(b64("foob") == "Zm9vYg==");
  CHECK(b64("fooba") == "Zm9vYmE=");
  CHECK(b64("foobar") == "Zm9vYmFy");
  std::vector<uint8_t> all = {0x00, 0xFF, 0xFE, 0x80};
  CHECK(base64(all) == "AP/+gA==");
}

TEST_CASE("plot: PNG output has the canvas size and is written atomically") {
  Canvas c = test_canvas(123, 45);
  c.fill_rect(0, 0, 10, 10, kBlack);
  std::vector<uint8_t> png = encode_png(c);
  REQUIRE(png.size() > 33);
  const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  CHECK(std::equal(sig, sig + 8, png.begin()));
  CHECK(std::string(png.begin() + 12, png.begin() + 16) == "IHDR");
  CHECK(be32(png, 16) == 123);
  CHECK(be32(png, 20) == 45);
  CHECK(png_data_uri(c).rfind("data:image/png;base64,iVBORw0KGgo", 0) == 0);

  TempDir dir;
  std::string path = (dir.path / "chart.png").string();
  write_png(c, path);
  std::string bytes = read_file(path);
  CHECK(bytes == std::string(png.begin(), png.end()));
  int files = 0;
  for (auto& e : fs::directory_iterator(dir.path)) files += e.is_regular_file();
  CHECK(files == 1);  // no temporary left behind
}

TEST_CASE("plot: writing to a bad path is an error naming the path") {
  Canvas c = test_canvas(4, 4);
  TempDir dir;
  std::string bad = (dir.path / "no such dir" / "chart.png").string();
  CHECK_THROWS_WITH_AS(write_png(c, bad), doctest::Contains(bad.c_str()), sb::Error);
  CHECK_THROWS_WITH_AS(encode_png(Canvas(0, 0)), doctest::Contains("empty"), sb::Error);
}

// A demo figure with every feature of a line chart. Set SB_PLOT_EXAMPLE=path/example.png to write
// it and look; the numbers are made up, and the title says so.
TEST_CASE("plot: example figure (demo data)") {
  LineChart chart;
  chart.title = "Validation mIoU vs batch size \u2013 example (demo data)";
  chart.x.label = "batch size (images per step, log2 scale)";
  chart.x.log2 = true;
  chart.y.label = "val mIoU (mean \xC2\xB1 std over 3 seeds)";
  chart.dodge = 5;
  std::vector<double> b = {1, 2, 4, 8, 16, 32};
  chart.series.push_back({.name = "BatchNorm",
                          .x = b,
                          .y = {0.412, 0.503, 0.598, 0.641, 0.655, 0.659},
                          .err = {0.046, 0.031, 0.018, 0.011, 0.008, 0.007}});
  chart.series.push_back({.name = "GroupNorm (G=8)",
                          .x = b,
                          .y = {0.628, 0.634, 0.637, 0.640, 0.641, 0.643},
                          .err = {0.012, 0.010, 0.009, 0.009, 0.008, 0.008}});
  Canvas c = render(chart, 800, 500);
  CHECK(c.width() == 800);
  if (const char* out = std::getenv("SB_PLOT_EXAMPLE")) write_png(c, out);
}

TEST_CASE("plot: a SMALLBATCH_FONT that does not load is named in a warning, and the figures are still drawn") {
  sbtest::TempDir dir;
  const std::string out = (dir.path / "sweep").string();
  sbtest::CliResult r = sbtest::run_cli("compare --norms gn --batch-sizes 2 --seeds 1 --epochs 1 --groups 2 "
                                        "--data shapes:train=4,val=2,size=16 --base-width 4 --threads 1 --out " + out,
                                        "SMALLBATCH_FONT=/nonexistent/font.ttf");
  CHECK(r.code == 0);
  CHECK(r.err.find("SMALLBATCH_FONT='/nonexistent/font.ttf'") != std::string::npos);
  CHECK(std::filesystem::exists(out + "/fig1_miou_vs_batch.png"));
}
