// Text rasterization for the plots: DejaVu Sans through stb_truetype when the font file is
// installed, otherwise a built-in 5x7 bitmap font, so a chart always gets readable labels.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sb::plot {

// A string rendered as coverage, ready to be blended in any color.
struct TextMask {
  int width = 0, height = 0;   // the mask covers the whole line box (ascent + descent)
  int origin_x = 0;            // column where the pen starts (glyphs may overhang to the left)
  int baseline = 0;            // row of the baseline
  double advance = 0;          // pen travel in pixels: the width used for alignment
  std::vector<uint8_t> alpha;  // (height, width), 0 = no ink, 255 = full ink
};

// Vertical metrics of a font at one pixel size, all positive, in pixels.
struct FontMetrics {
  double ascent = 0;      // baseline to the top of the line box
  double descent = 0;     // baseline to the bottom of the line box
  double cap_height = 0;  // baseline to the top of "H": what looks centered on a tick
};

class Font {
 public:
  // DejaVu Sans (regular and bold) from the first of the usual system paths that loads, else
  // the built-in font. SMALLBATCH_FONT=/path/to/font.ttf picks another TrueType font, and
  // SMALLBATCH_FONT=builtin forces the bitmap font (byte-identical plots on every machine).
  static const Font& standard();
  // The built-in 5x7 bitmap font, scaled by whole pixels: needs no file, and is what the tests
  // draw with so that their pixels do not depend on the installed fonts.
  static const Font& builtin();

  ~Font();
  Font(const Font&) = delete;
  Font& operator=(const Font&) = delete;

  // `size` is the em size in pixels, as in CSS: 12 gives about 9-pixel capitals.
  TextMask render(std::string_view utf8, double size, bool bold = false) const;
  double width(std::string_view utf8, double size, bool bold = false) const;
  FontMetrics metrics(double size) const;
  // True when this is the bitmap font (because it was asked for or no font file was found).
  bool is_builtin() const;
  // The font file in use, or "builtin".
  std::string description() const;

 private:
  struct Impl;
  explicit Font(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sb::plot
