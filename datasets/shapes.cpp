// The synthetic shapes set: scene generation and the `shapes:` parameter syntax.
//
// What makes it a test of segmentation rather than of colour: shape colours and background
// colours are drawn from the same distribution, the background is textured and cluttered with
// thin lines (labelled background), lighting varies across the image and every pixel is noisy.
// A pixel's colour therefore says little about its class; telling a thin ring from a filled
// circle, or a line from a rectangle, takes the shape.
#include "datasets/shapes.h"

#include <cmath>
#include <cstdlib>
#include <set>

namespace sb {

namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// The generator seed of sample `index` of a stream (1: train, 2: val).
uint64_t sample_seed(uint64_t seed, uint64_t stream, int64_t index) {
  return splitmix64(splitmix64(seed ^ (stream << 56)) ^ static_cast<uint64_t>(index));
}

RGB random_colour(Generator& g) { return {g.uniform(0.05f, 0.95f), g.uniform(0.05f, 0.95f), g.uniform(0.05f, 0.95f)}; }

float colour_distance(const RGB& a, const RGB& b) {
  float s = 0;
  for (int c = 0; c < 3; ++c) s += (a[c] - b[c]) * (a[c] - b[c]);
  return std::sqrt(s);
}

// Bilinear lookup positions of a coarse n-point grid spread over S pixels, per pixel.
struct GridAxis {
  std::vector<int> i0;
  std::vector<float> t;
  GridAxis(int64_t S, int n) : i0(S), t(S) {
    for (int64_t p = 0; p < S; ++p) {
      float u = (static_cast<float>(p) + 0.5f) / static_cast<float>(S) * static_cast<float>(n - 1);
      i0[p] = std::min(n - 2, static_cast<int>(u));
      t[p] = u - static_cast<float>(i0[p]);
    }
  }
};

struct Figure {
  int cls = 0;
  float cx = 0, cy = 0, r = 0;
  float cs = 1, sn = 0;          // rectangle rotation
  float a = 0, b = 0;            // rectangle half sizes
  float inner2 = 0;              // ring: squared inner radius
  float tx[3] = {}, ty[3] = {};  // triangle vertices
  RGB colour{};
  float shade = 0, shx = 0, shy = 0;  // linear shading across the shape

  bool inside(float x, float y) const {
    float dx = x - cx, dy = y - cy;
    switch (cls) {
      case 1: return dx * dx + dy * dy <= r * r;
      case 2: return std::fabs(dx * cs + dy * sn) <= a && std::fabs(-dx * sn + dy * cs) <= b;
      case 3: {
        bool neg = false, pos = false;
        for (int k = 0; k < 3; ++k) {
          int j = (k + 1) % 3;
          float e = (tx[j] - tx[k]) * (y - ty[k]) - (ty[j] - ty[k]) * (x - tx[k]);
          neg |= e < 0, pos |= e > 0;
        }
        return !(neg && pos);
      }
      default: {
        float d2 = dx * dx + dy * dy;
        return d2 <= r * r && d2 >= inner2;
      }
    }
  }
};

Figure random_shape(Generator& g, float S, float difficulty, const RGB& bg) {
  Figure s;
  s.cls = 1 + static_cast<int>(g.below(4));
  s.cx = g.uniform(0.1f, 0.9f) * S;
  s.cy = g.uniform(0.1f, 0.9f) * S;
  // Per-class radius factors even out the areas (a triangle covers 1.3 r^2, a quarter-thick ring about 1.4 r^2,
  // a disk 3.1 r^2), so no shape class is rare in pixels.
  static constexpr float kRadius[5] = {0.f, 0.8f, 0.95f, 1.25f, 1.15f};
  s.r = g.uniform(0.1f, 0.25f) * S * kRadius[s.cls];
  float angle = g.uniform(0.f, 6.2831853f);
  s.cs = std::cos(angle), s.sn = std::sin(angle);
  s.a = s.r * g.uniform(0.55f, 1.0f);
  s.b = s.r * g.uniform(0.3f, 1.0f);
  for (int k = 0; k < 3; ++k) {
    float t = angle + 2.0943951f * static_cast<float>(k) + g.uniform(-0.3f, 0.3f);
    float rr = s.r * g.uniform(0.85f, 1.15f);
    s.tx[k] = s.cx + rr * std::cos(t);
    s.ty[k] = s.cy + rr * std::sin(t);
  }
  // A thin ring: thickness 18-32% of the radius, and at least 1.2 px (1.2 px per 64 at larger
  // sizes) so that sampling at pixel centres never breaks it up.
  float thick = std::max(std::max(1.2f, 1.2f * S / 64.f), s.r * g.uniform(0.18f, 0.32f));
  s.inner2 = std::max(0.f, s.r - thick) * std::max(0.f, s.r - thick);
  // The colour needs some contrast with the background, less at higher difficulty.
  float min_dist = std::max(0.2f, 0.5f - 0.15f * difficulty);
  for (int t = 0; t < 32; ++t) {
    s.colour = random_colour(g);
    if (colour_distance(s.colour, bg) >= min_dist) break;
  }
  s.shade = g.uniform(0.f, std::min(0.4f, 0.15f * difficulty)) / s.r;
  float phi = g.uniform(0.f, 6.2831853f);
  s.shx = std::cos(phi), s.shy = std::sin(phi);
  return s;
}

}  // namespace

Sample generate_shapes(const ShapesOptions& o, bool train, int64_t index) {
  const int64_t S = o.size, HW = S * S;
  const float fS = static_cast<float>(S), d = o.difficulty;
  Generator g(sample_seed(o.seed, train ? 1 : 2, index));
  Sample out{Tensor::empty({3, S, S}), IndexTensor::zeros({S, S})};  // (3, S, S), (S, S)
  float* px[3] = {out.image.data(), out.image.data() + HW, out.image.data() + 2 * HW};
  int64_t* mask = out.mask.data();

  // Background: a base colour, coarse colour blotches and a finer luminance texture.
  RGB bg = random_colour(g);
  constexpr int kCoarse = 5, kFine = 13;
  float coarse[3][kCoarse * kCoarse], fine[kFine * kFine];
  for (auto& ch : coarse)
    for (float& v : ch) v = g.uniform(-1.f, 1.f) * 0.12f * d;
  for (float& v : fine) v = g.uniform(-1.f, 1.f) * 0.06f * d;
  GridAxis cax(S, kCoarse), fax(S, kFine);
  auto lerp2 = [](const float* grid, int n, int x0, float tx, int y0, float ty) {
    const float* row0 = grid + y0 * n + x0;
    const float* row1 = row0 + n;
    return (1 - ty) * ((1 - tx) * row0[0] + tx * row0[1]) + ty * ((1 - tx) * row1[0] + tx * row1[1]);
  };
  for (int64_t y = 0; y < S; ++y)
    for (int64_t x = 0; x < S; ++x) {
      float f = lerp2(fine, kFine, fax.i0[x], fax.t[x], fax.i0[y], fax.t[y]);
      for (int c = 0; c < 3; ++c)
        px[c][y * S + x] = bg[c] + f + lerp2(coarse[c], kCoarse, cax.i0[x], cax.t[x], cax.i0[y], cax.t[y]);
    }

  // Clutter: thin straight lines in random colours, labelled background.
  int64_t lines = static_cast<int64_t>(g.below(1 + static_cast<uint64_t>(std::lround(2 * d))));
  for (int64_t l = 0; l < lines; ++l) {
    float x0 = g.uniform(0.f, fS), y0 = g.uniform(0.f, fS), x1 = g.uniform(0.f, fS), y1 = g.uniform(0.f, fS);
    float half = std::max(0.5f, g.uniform(0.5f, 0.8f) * fS / 64.f);  // half-width; >= 0.5 px keeps lines unbroken
    RGB col = random_colour(g);
    float vx = x1 - x0, vy = y1 - y0, len2 = std::max(1e-6f, vx * vx + vy * vy);
    int64_t xa = std::max<int64_t>(0, static_cast<int64_t>(std::min(x0, x1) - half - 1));
    int64_t xb = std::min<int64_t>(S - 1, static_cast<int64_t>(std::max(x0, x1) + half + 1));
    int64_t ya = std::max<int64_t>(0, static_cast<int64_t>(std::min(y0, y1) - half - 1));
    int64_t yb = std::min<int64_t>(S - 1, static_cast<int64_t>(std::max(y0, y1) + half + 1));
    for (int64_t y = ya; y <= yb; ++y)
      for (int64_t x = xa; x <= xb; ++x) {
        float qx = static_cast<float>(x) + 0.5f - x0, qy = static_cast<float>(y) + 0.5f - y0;
        float t = std::clamp((qx * vx + qy * vy) / len2, 0.f, 1.f);
        float ex = qx - t * vx, ey = qy - t * vy;
        if (ex * ex + ey * ey <= half * half)
          for (int c = 0; c < 3; ++c) px[c][y * S + x] = col[c];
      }
  }

  // Shapes, painted in order: later ones occlude earlier ones, in the image and in the mask.
  int64_t count = 2 + static_cast<int64_t>(g.below(2 + static_cast<uint64_t>(std::lround(d))));
  for (int64_t k = 0; k < count; ++k) {
    Figure s = random_shape(g, fS, d, bg);
    float reach = s.r * 1.2f + 1;
    int64_t xa = std::max<int64_t>(0, static_cast<int64_t>(s.cx - reach));
    int64_t xb = std::min<int64_t>(S - 1, static_cast<int64_t>(s.cx + reach));
    int64_t ya = std::max<int64_t>(0, static_cast<int64_t>(s.cy - reach));
    int64_t yb = std::min<int64_t>(S - 1, static_cast<int64_t>(s.cy + reach));
    for (int64_t y = ya; y <= yb; ++y)
      for (int64_t x = xa; x <= xb; ++x) {
        float fx = static_cast<float>(x) + 0.5f, fy = static_cast<float>(y) + 0.5f;
        if (!s.inside(fx, fy)) continue;
        float light = 1 + s.shade * ((fx - s.cx) * s.shx + (fy - s.cy) * s.shy);
        for (int c = 0; c < 3; ++c) px[c][y * S + x] = s.colour[c] * light;
        mask[y * S + x] = s.cls;
      }
  }

  // A lighting gradient over the whole scene, then per-pixel noise, then clamping to [0, 1].
  float theta = g.uniform(0.f, 6.2831853f);
  float strength = std::min(0.8f, 0.3f * d * g.uniform(0.5f, 1.f));
  float lx = std::cos(theta) * strength / fS, ly = std::sin(theta) * strength / fS;
  float amp = 0.05f * d;
  uint64_t bits = 0;
  int left = 0;
  for (int64_t y = 0; y < S; ++y)
    for (int64_t x = 0; x < S; ++x) {
      float light = 1 + (static_cast<float>(x) + 0.5f - fS / 2) * lx + (static_cast<float>(y) + 0.5f - fS / 2) * ly;
      for (int c = 0; c < 3; ++c) {
        if (left == 0) bits = g.next_u64(), left = 4;  // four 16-bit uniforms per draw: noise is cheap
        float u = static_cast<float>(bits & 0xFFFF) * (2.f / 65535.f) - 1.f;
        bits >>= 16, --left;
        float& v = px[c][y * S + x];
        v = std::clamp(v * light + amp * u, 0.f, 1.f);
      }
    }
  return out;
}

ShapesOptions parse_shapes_params(const std::string& params, ShapesOptions o) {
  const std::string where = "--data shapes:" + params;
  std::set<std::string> seen;
  size_t pos = 0;
  while (pos <= params.size() && !params.empty()) {
    size_t comma = params.find(',', pos);
    std::string item = params.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    pos = comma == std::string::npos ? params.size() + 1 : comma + 1;
    size_t eq = item.find('=');
    SB_CHECK(eq != std::string::npos && eq > 0 && eq + 1 < item.size(), where, ": expected key=value but got '",
             item, "' (keys: train, val, size, difficulty, seed; e.g. shapes:train=512,val=128,size=64)");
    std::string key = item.substr(0, eq), value = item.substr(eq + 1);
    SB_CHECK(seen.insert(key).second, where, ": '", key, "' is given twice");
    errno = 0;
    char* end = nullptr;
    if (key == "difficulty") {
      float v = std::strtof(value.c_str(), &end);
      SB_CHECK(*end == 0 && errno == 0 && v >= 0 && v <= 3, where,
               ": difficulty must be a number in [0, 3], got '", value, "'");
      o.difficulty = v;
      continue;
    }
    SB_CHECK(value.find_first_not_of("0123456789") == std::string::npos, where, ": ", key,
             " must be a non-negative integer, got '", value, "'");
    unsigned long long v = std::strtoull(value.c_str(), &end, 10);
    SB_CHECK(errno == 0, where, ": ", key, " is out of range: '", value, "'");
    if (key == "seed") {
      o.seed = v;
    } else if (key == "train" || key == "val") {
      SB_CHECK(v >= 1 && v <= (1ull << 40), where, ": ", key, " (the number of samples) must be in [1, 2^40], got ",
               value);
      (key == "train" ? o.train : o.val) = static_cast<int64_t>(v);
    } else if (key == "size") {
      SB_CHECK(v >= 16 && v <= 2048, where, ": size must be in [16, 2048] pixels, got ", value);
      o.size = static_cast<int64_t>(v);
    } else {
      fail(where, ": unknown parameter '", key, "' (known: train, val, size, difficulty, seed)");
    }
  }
  return o;
}

ShapesDataset::ShapesDataset(const ShapesOptions& opt, bool train, int64_t limit) : opt_(opt), train_(train) {
  SB_CHECK(opt.size >= 16 && opt.train >= 1 && opt.val >= 1 && opt.difficulty >= 0 && opt.difficulty <= 3,
           "shapes: bad options: size ", opt.size, " (>= 16), train ", opt.train, ", val ", opt.val,
           " (>= 1), difficulty ", opt.difficulty, " (in [0, 3])");
  SB_CHECK(limit >= 0, "shapes: limit must be non-negative, got ", limit);
  count_ = train ? opt.train : opt.val;
  if (limit > 0) count_ = std::min(count_, limit);
}

Sample ShapesDataset::get(int64_t i) const {
  SB_CHECK(i >= 0 && i < count_, "shapes: sample ", i, " out of range [0, ", count_, ")");
  return generate_shapes(opt_, train_, i);
}

std::string ShapesDataset::describe() const {
  return str("shapes (", train_ ? "train" : "val", ": ", count_, " images ", opt_.size, "x", opt_.size,
             ", difficulty ", opt_.difficulty, ", seed ", opt_.seed, ")");
}

}  // namespace sb
