// Text rasterization: stb_truetype over DejaVu Sans (anti-aliased, proportional, kerned: what a
// reader expects of a figure) with a hand-made 5x7 bitmap font as the fallback when no font
// file can be loaded, because a plot without tick labels is worse than a plot in a plain font.
#include "tools/viz/font.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>

// Static, so this translation unit's copy can never clash with another stb_truetype user.
#define STBTT_STATIC
#define STB_TRUETYPE_IMPLEMENTATION
#include <stb_truetype.h>

namespace sb::plot {

namespace {

// ---- the built-in font ----
// ASCII 32..126, 7 rows of 5 pixels each, top row first, bit 4 = leftmost column. Glyphs with a
// descender (g p q y , ;) are drawn 2 rows lower, so their 7 rows cover x-height + tail.
constexpr uint8_t kGlyphs[95][7] = {
    {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00},  // ' '
    {0x04, 0x04, 0x04, 0x04, 0x04, 0x00, 0x04},  // !
    {0x0A, 0x0A, 0x00, 0x00, 0x00, 0x00, 0x00},  // "
    {0x0A, 0x0A, 0x1F, 0x0A, 0x1F, 0x0A, 0x0A},  // #
    {0x04, 0x0F, 0x14, 0x0E, 0x05, 0x1E, 0x04},  // $
    {0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03},  // %
    {0x0C, 0x12, 0x14, 0x08, 0x15, 0x12, 0x0D},  // &
    {0x04, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00},  // '
    {0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02},  // (
    {0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08},  // )
    {0x00, 0x04, 0x15, 0x0E, 0x15, 0x04, 0x00},  // *
    {0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00},  // +
    {0x00, 0x00, 0x00, 0x0C, 0x0C, 0x04, 0x08},  // , (descender)
    {0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00},  // -
    {0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C},  // .
    {0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00},  // /
    {0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E},  // 0
    {0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E},  // 1
    {0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F},  // 2
    {0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E},  // 3
    {0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02},  // 4
    {0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E},  // 5
    {0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E},  // 6
    {0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08},  // 7
    {0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E},  // 8
    {0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C},  // 9
    {0x00, 0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C},  // :
    {0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x04, 0x08},  // ; (descender)
    {0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02},  // <
    {0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00},  // =
    {0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08},  // >
    {0x0E, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04},  // ?
    {0x0E, 0x11, 0x01, 0x0D, 0x15, 0x15, 0x0E},  // @
    {0x0E, 0x11, 0x11, 0x11, 0x1F, 0x11, 0x11},  // A
    {0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E},  // B
    {0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E},  // C
    {0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C},  // D
    {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F},  // E
    {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10},  // F
    {0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F},  // G
    {0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11},  // H
    {0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E},  // I
    {0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C},  // J
    {0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11},  // K
    {0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F},  // L
    {0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11},  // M
    {0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11},  // N
    {0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E},  // O
    {0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10},  // P
    {0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D},  // Q
    {0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11},  // R
    {0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E},  // S
    {0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04},  // T
    {0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E},  // U
    {0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04},  // V
    {0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A},  // W
    {0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11},  // X
    {0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04},  // Y
    {0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F},  // Z
    {0x0E, 0x08, 0x08, 0x08, 0x08, 0x08, 0x0E},  // [
    {0x00, 0x10, 0x08, 0x04, 0x02, 0x01, 0x00},  // backslash
    {0x0E, 0x02, 0x02, 0x02, 0x02, 0x02, 0x0E},  // ]
    {0x04, 0x0A, 0x11, 0x00, 0x00, 0x00, 0x00},  // ^
    {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F},  // _
    {0x08, 0x04, 0x02, 0x00, 0x00, 0x00, 0x00},  // `
    {0x00, 0x00, 0x0E, 0x01, 0x0F, 0x11, 0x0F},  // a
    {0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x1E},  // b
    {0x00, 0x00, 0x0E, 0x10, 0x10, 0x11, 0x0E},  // c
    {0x01, 0x01, 0x0D, 0x13, 0x11, 0x11, 0x0F},  // d
    {0x00, 0x00, 0x0E, 0x11, 0x1F, 0x10, 0x0E},  // e
    {0x06, 0x09, 0x08, 0x1C, 0x08, 0x08, 0x08},  // f
    {0x0F, 0x11, 0x11, 0x11, 0x0F, 0x01, 0x0E},  // g (descender)
    {0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x11},  // h
    {0x04, 0x00, 0x0C, 0x04, 0x04, 0x04, 0x0E},  // i
    {0x02, 0x00, 0x06, 0x02, 0x02, 0x12, 0x0C},  // j
    {0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12},  // k
    {0x0C, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E},  // l
    {0x00, 0x00, 0x1A, 0x15, 0x15, 0x11, 0x11},  // m
    {0x00, 0x00, 0x16, 0x19, 0x11, 0x11, 0x11},  // n
    {0x00, 0x00, 0x0E, 0x11, 0x11, 0x11, 0x0E},  // o
    {0x1E, 0x11, 0x11, 0x11, 0x1E, 0x10, 0x10},  // p (descender)
    {0x0F, 0x11, 0x11, 0x11, 0x0F, 0x01, 0x01},  // q (descender)
    {0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10},  // r
    {0x00, 0x00, 0x0E, 0x10, 0x0E, 0x01, 0x1E},  // s
    {0x08, 0x08, 0x1C, 0x08, 0x08, 0x09, 0x06},  // t
    {0x00, 0x00, 0x11, 0x11, 0x11, 0x13, 0x0D},  // u
    {0x00, 0x00, 0x11, 0x11, 0x11, 0x0A, 0x04},  // v
    {0x00, 0x00, 0x11, 0x11, 0x15, 0x15, 0x0A},  // w
    {0x00, 0x00, 0x11, 0x0A, 0x04, 0x0A, 0x11},  // x
    {0x11, 0x11, 0x11, 0x11, 0x0F, 0x01, 0x0E},  // y (descender)
    {0x00, 0x00, 0x1F, 0x02, 0x04, 0x08, 0x1F},  // z
    {0x02, 0x04, 0x04, 0x08, 0x04, 0x04, 0x02},  // {
    {0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04},  // |
    {0x08, 0x04, 0x04, 0x02, 0x04, 0x04, 0x08},  // }
    {0x00, 0x00, 0x08, 0x15, 0x02, 0x00, 0x00},  // ~
};
// The few non-ASCII signs a results figure uses.
constexpr uint8_t kPlusMinus[7] = {0x04, 0x04, 0x1F, 0x04, 0x04, 0x00, 0x1F};
constexpr uint8_t kTimes[7] = {0x00, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x00};
constexpr uint8_t kDegree[7] = {0x0C, 0x12, 0x12, 0x0C, 0x00, 0x00, 0x00};

bool has_descender(char32_t c) {
  return c == 'g' || c == 'p' || c == 'q' || c == 'y' || c == ',' || c == ';';
}

const uint8_t* builtin_glyph(char32_t c) {
  if (c >= 32 && c <= 126) return kGlyphs[c - 32];
  switch (c) {
    case 0xB1: return kPlusMinus;
    case 0xD7: return kTimes;
    case 0xB0: return kDegree;
    case 0x2212: case 0x2013: case 0x2014: return kGlyphs['-' - 32];  // minus, dashes
    default: return kGlyphs['?' - 32];
  }
}

// Whole-pixel scale of the bitmap font for an em size: 12 px text gets 7-pixel capitals,
// 16 px titles get 14, keeping the proportions close to DejaVu Sans at the same size.
int builtin_scale(double size) { return std::max(1, int(std::floor(size * 0.73 / 7 + 0.4))); }

std::u32string decode_utf8(std::string_view s) {
  std::u32string out;
  for (size_t i = 0; i < s.size();) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    char32_t cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
    bool ok = len > 0 && i + len <= s.size();
    for (int k = 1; ok && k < len; ++k) {
      unsigned char cc = static_cast<unsigned char>(s[i + k]);
      if ((cc >> 6) != 2) ok = false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if (!ok) {
      out.push_back(0xFFFD);
      ++i;
      continue;
    }
    out.push_back(cp);
    i += len;
  }
  return out;
}

// A bold face stands in for a missing one by smearing each row one pixel to the right.
void embolden(TextMask& m) {
  for (int y = 0; y < m.height; ++y)
    for (int x = m.width - 1; x > 0; --x) {
      uint8_t& a = m.alpha[size_t(y) * m.width + x];
      a = std::max(a, m.alpha[size_t(y) * m.width + x - 1]);
    }
}

// ---- TrueType ----
struct Face {
  std::vector<unsigned char> data;  // stbtt_fontinfo points into it: never resized after load
  stbtt_fontinfo info{};
};

std::unique_ptr<Face> load_face(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return nullptr;
  auto face = std::make_unique<Face>();
  face->data.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  if (face->data.size() < 12) return nullptr;
  int offset = stbtt_GetFontOffsetForIndex(face->data.data(), 0);
  if (offset < 0 || !stbtt_InitFont(&face->info, face->data.data(), offset)) return nullptr;
  // A font that cannot draw digits is no use for axes.
  if (stbtt_FindGlyphIndex(&face->info, '0') == 0) return nullptr;
  return face;
}

}  // namespace

struct Font::Impl {
  std::string path = "builtin";
  std::unique_ptr<Face> regular, bold;  // both null for the built-in font

  const Face* face(bool want_bold) const { return want_bold && bold ? bold.get() : regular.get(); }

  // Glyph indices, with '?' for anything the font lacks.
  std::vector<int> glyphs(const Face& f, std::string_view utf8) const {
    std::vector<int> out;
    int fallback = stbtt_FindGlyphIndex(&f.info, '?');
    for (char32_t c : decode_utf8(utf8)) {
      int g = stbtt_FindGlyphIndex(&f.info, int(c));
      out.push_back(g ? g : fallback);
    }
    return out;
  }

  double tt_advance(const Face& f, const std::vector<int>& gs, double scale) const {
    double pen = 0;
    for (size_t i = 0; i < gs.size(); ++i) {
      int adv = 0, lsb = 0;
      stbtt_GetGlyphHMetrics(&f.info, gs[i], &adv, &lsb);
      pen += adv * scale;
      if (i + 1 < gs.size()) pen += stbtt_GetGlyphKernAdvance(&f.info, gs[i], gs[i + 1]) * scale;
    }
    return pen;
  }
};

Font::Font(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Font::~Font() = default;

const Font& Font::builtin() {
  static const Font font(std::make_unique<Impl>());
  return font;
}

const Font& Font::standard() {
  static const Font* font = [] {
    const char* env = std::getenv("SMALLBATCH_FONT");
    std::string choice = env ? env : "";
    if (choice == "builtin") return &builtin();
    auto impl = std::make_unique<Impl>();
    if (!choice.empty()) {
      impl->regular = load_face(choice);
      impl->path = choice;
      // A font asked for by name that does not load is said, once; the figures still get drawn.
      if (!impl->regular)
        std::fprintf(stderr, "smallbatch: warning: SMALLBATCH_FONT='%s' is not a TrueType font that loads "
                     "(expected a .ttf file or 'builtin'); using the default font\n", choice.c_str());
    }
    // Debian/Ubuntu (fonts-dejavu-core), Fedora, Arch.
    static const char* const kDirs[] = {"/usr/share/fonts/truetype/dejavu/",
                                        "/usr/share/fonts/dejavu-sans-fonts/",
                                        "/usr/share/fonts/dejavu/", "/usr/share/fonts/TTF/"};
    for (const char* dir : kDirs) {
      if (impl->regular) break;
      impl->regular = load_face(std::string(dir) + "DejaVuSans.ttf");
      if (impl->regular) {
        impl->path = std::string(dir) + "DejaVuSans.ttf";
        impl->bold = load_face(std::string(dir) + "DejaVuSans-Bold.ttf");
      }
    }
    if (!impl->regular) return &builtin();
    return static_cast<const Font*>(new Font(std::move(impl)));  // lives as long as the process
  }();
  return *font;
}

bool Font::is_builtin() const { return !impl_->regular; }
std::string Font::description() const { return impl_->path; }

FontMetrics Font::metrics(double size) const {
  FontMetrics m;
  if (is_builtin()) {
    int s = builtin_scale(size);
    m.ascent = 8 * s;
    m.descent = 3 * s;
    m.cap_height = 7 * s;
    return m;
  }
  const stbtt_fontinfo& info = impl_->regular->info;
  double scale = stbtt_ScaleForMappingEmToPixels(&info, float(size));
  int asc = 0, desc = 0, gap = 0;
  stbtt_GetFontVMetrics(&info, &asc, &desc, &gap);
  m.ascent = asc * scale;
  m.descent = -desc * scale;
  int x0 = 0, y0 = 0, x1 = 0, y1 = 0;
  m.cap_height = stbtt_GetCodepointBox(&info, 'H', &x0, &y0, &x1, &y1) ? y1 * scale : m.ascent * 0.7;
  return m;
}

double Font::width(std::string_view utf8, double size, bool bold) const {
  if (is_builtin()) {
    size_t n = decode_utf8(utf8).size();
    int s = builtin_scale(size);
    return n == 0 ? 0.0 : double(n * (6 * s + (bold ? 1 : 0)) - s);
  }
  const Face& f = *impl_->face(bold);
  double scale = stbtt_ScaleForMappingEmToPixels(&f.info, float(size));
  return impl_->tt_advance(f, impl_->glyphs(f, utf8), scale);
}

TextMask Font::render(std::string_view utf8, double size, bool bold) const {
  TextMask m;
  FontMetrics fm = metrics(size);
  if (is_builtin()) {
    std::u32string text = decode_utf8(utf8);
    int s = builtin_scale(size);
    int advance = 6 * s + (bold ? 1 : 0);
    m.advance = width(utf8, size, bold);
    m.origin_x = 0;
    m.baseline = 8 * s;
    m.width = int(m.advance) + 2;
    m.height = 11 * s;
    m.alpha.assign(size_t(m.width) * m.height, 0);
    for (size_t i = 0; i < text.size(); ++i) {
      const uint8_t* rows = builtin_glyph(text[i]);
      int top = s + (has_descender(text[i]) ? 2 * s : 0);
      for (int r = 0; r < 7; ++r)
        for (int c = 0; c < 5; ++c) {
          if (!(rows[r] & (0x10 >> c))) continue;
          for (int dy = 0; dy < s; ++dy)
            for (int dx = 0; dx < s; ++dx)
              m.alpha[size_t(top + r * s + dy) * m.width + int(i) * advance + c * s + dx] = 255;
        }
    }
    if (bold) embolden(m);
    return m;
  }

  const Face& f = *impl_->face(bold);
  double scale = stbtt_ScaleForMappingEmToPixels(&f.info, float(size));
  std::vector<int> gs = impl_->glyphs(f, utf8);
  m.advance = impl_->tt_advance(f, gs, scale);
  // Room for glyphs that overhang their advance box (j, f, italics of some fonts).
  int pad = int(std::ceil(size * 0.25)) + 1;
  m.origin_x = pad;
  m.baseline = int(std::ceil(fm.ascent));
  m.width = int(std::ceil(m.advance)) + 2 * pad;
  m.height = m.baseline + int(std::ceil(fm.descent)) + 1;
  m.alpha.assign(size_t(m.width) * m.height, 0);
  std::vector<unsigned char> buf;
  double pen = m.origin_x;
  for (size_t i = 0; i < gs.size(); ++i) {
    int ix = int(std::floor(pen));
    float frac = float(pen - ix);  // sub-pixel positioning keeps the spacing even
    int x0 = 0, y0 = 0, x1 = 0, y1 = 0;
    stbtt_GetGlyphBitmapBoxSubpixel(&f.info, gs[i], float(scale), float(scale), frac, 0, &x0, &y0,
                                    &x1, &y1);
    int w = x1 - x0, h = y1 - y0;
    if (w > 0 && h > 0) {
      buf.assign(size_t(w) * h, 0);
      stbtt_MakeGlyphBitmapSubpixel(&f.info, buf.data(), w, h, w, float(scale), float(scale), frac,
                                    0, gs[i]);
      for (int y = 0; y < h; ++y) {
        int my = m.baseline + y0 + y;
        if (my < 0 || my >= m.height) continue;
        for (int x = 0; x < w; ++x) {
          int mx = ix + x0 + x;
          if (mx < 0 || mx >= m.width) continue;
          uint8_t& a = m.alpha[size_t(my) * m.width + mx];
          a = uint8_t(std::min(255, a + buf[size_t(y) * w + x]));
        }
      }
    }
    int adv = 0, lsb = 0;
    stbtt_GetGlyphHMetrics(&f.info, gs[i], &adv, &lsb);
    pen += adv * scale;
    if (i + 1 < gs.size()) pen += stbtt_GetGlyphKernAdvance(&f.info, gs[i], gs[i + 1]) * scale;
  }
  // Blending coverage in sRGB draws unhinted small text thin and grey; a gamma below one
  // restores the weight a reader expects of 11-pixel labels.
  static const std::array<uint8_t, 256> kGamma = [] {
    std::array<uint8_t, 256> t{};
    for (int i = 0; i < 256; ++i) t[i] = uint8_t(std::lround(255 * std::pow(i / 255.0, 0.8)));
    return t;
  }();
  for (uint8_t& a : m.alpha) a = kGamma[a];
  if (bold && !impl_->bold) embolden(m);
  return m;
}

}  // namespace sb::plot
