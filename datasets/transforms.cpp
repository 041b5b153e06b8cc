// Resampling, joint geometric transforms, colour jitter, normalization and their composition.
#include "datasets/transforms.h"

#include <cmath>

namespace sb {

namespace {

// For each output position along one axis, the input taps and weights that produce it; an
// output with no taps lies outside the scaled image.
struct AxisTaps {
  std::vector<int32_t> start, count;  // into index/weight, per output position
  std::vector<int64_t> index;
  std::vector<float> weight;
  int64_t lo = 0, hi = -1;            // the input range touched
};

AxisTaps bilinear_taps(int64_t in, int64_t scaled, int64_t offset, int64_t out) {
  AxisTaps t;
  double s = static_cast<double>(in) / static_cast<double>(scaled);
  double support = std::max(1.0, s);  // widen the triangle when shrinking: antialiasing
  t.lo = in;
  for (int64_t o = 0; o < out; ++o) {
    int64_t y = o + offset;  // position in the scaled image
    t.start.push_back(static_cast<int32_t>(t.index.size()));
    if (y < 0 || y >= scaled) {
      t.count.push_back(0);
      continue;
    }
    double centre = (static_cast<double>(y) + 0.5) * s - 0.5;
    int64_t a = std::max<int64_t>(0, static_cast<int64_t>(std::floor(centre - support)) + 1);
    int64_t b = std::min<int64_t>(in - 1, static_cast<int64_t>(std::ceil(centre + support)) - 1);
    double sum = 0;
    size_t first = t.index.size();
    for (int64_t i = a; i <= b; ++i) {
      double w = 1.0 - std::fabs(static_cast<double>(i) - centre) / support;
      if (w <= 0) continue;
      t.index.push_back(i);
      t.weight.push_back(static_cast<float>(w));
      sum += w;
    }
    // Taps outside the input are dropped and the rest renormalized, which at the borders is
    // the same as PyTorch's clamping of the source coordinate.
    for (size_t k = first; k < t.index.size(); ++k) t.weight[k] = static_cast<float>(t.weight[k] / sum);
    t.count.push_back(static_cast<int32_t>(t.index.size() - first));
    t.lo = std::min(t.lo, t.index[first]);
    t.hi = std::max(t.hi, t.index.back());
  }
  return t;
}

// Nearest input index per output position, -1 outside the scaled image.
std::vector<int64_t> nearest_taps(int64_t in, int64_t scaled, int64_t offset, int64_t out) {
  std::vector<int64_t> idx(out);
  double s = static_cast<double>(in) / static_cast<double>(scaled);
  for (int64_t o = 0; o < out; ++o) {
    int64_t y = o + offset;
    idx[o] = (y < 0 || y >= scaled)
                 ? -1
                 : std::min<int64_t>(in - 1, static_cast<int64_t>(std::floor((static_cast<double>(y) + 0.5) * s)));
  }
  return idx;
}

void check_window(const char* what, const Shape& shape, int64_t scaled_h, int64_t scaled_w, int64_t out_h,
                  int64_t out_w) {
  SB_CHECK(scaled_h > 0 && scaled_w > 0 && out_h > 0 && out_w > 0, what, ": sizes must be positive, got scaled ",
           scaled_h, " x ", scaled_w, " and output ", out_h, " x ", out_w, " for input ", shape);
}

}  // namespace

Tensor resample_window(const Tensor& image, int64_t scaled_h, int64_t scaled_w, int64_t top, int64_t left,
                       int64_t out_h, int64_t out_w, const RGB& fill) {
  SB_CHECK(image.dim() == 3 && image.size(1) > 0 && image.size(2) > 0,
           "resample: expected a non-empty image (C, H, W) but got ", image.shape());
  check_window("resample", image.shape(), scaled_h, scaled_w, out_h, out_w);
  int64_t C = image.size(0), H = image.size(1), W = image.size(2);
  AxisTaps ty = bilinear_taps(H, scaled_h, top, out_h), tx = bilinear_taps(W, scaled_w, left, out_w);
  Tensor out = Tensor::empty({C, out_h, out_w});  // (C, out_h, out_w)
  // Horizontal pass over the input rows the vertical pass will touch: (C, rows, out_w).
  int64_t rows = std::max<int64_t>(0, ty.hi - ty.lo + 1);
  std::vector<float> tmp(C * rows * out_w);
  for (int64_t c = 0; c < C; ++c)
    for (int64_t r = 0; r < rows; ++r) {
      const float* src = image.data() + (c * H + ty.lo + r) * W;
      float* dst = tmp.data() + (c * rows + r) * out_w;
      for (int64_t x = 0; x < out_w; ++x) {
        float acc = 0;
        for (int32_t k = tx.start[x]; k < tx.start[x] + tx.count[x]; ++k) acc += tx.weight[k] * src[tx.index[k]];
        dst[x] = acc;
      }
    }
  for (int64_t c = 0; c < C; ++c) {
    float f = fill[std::min<int64_t>(c, 2)];
    for (int64_t y = 0; y < out_h; ++y) {
      float* dst = out.data() + (c * out_h + y) * out_w;
      if (ty.count[y] == 0) {
        std::fill(dst, dst + out_w, f);
        continue;
      }
      for (int64_t x = 0; x < out_w; ++x) {
        if (tx.count[x] == 0) {
          dst[x] = f;
          continue;
        }
        float acc = 0;
        for (int32_t k = ty.start[y]; k < ty.start[y] + ty.count[y]; ++k)
          acc += ty.weight[k] * tmp[(c * rows + ty.index[k] - ty.lo) * out_w + x];
        dst[x] = acc;
      }
    }
  }
  return out;
}

IndexTensor resample_window(const IndexTensor& mask, int64_t scaled_h, int64_t scaled_w, int64_t top,
                            int64_t left, int64_t out_h, int64_t out_w) {
  SB_CHECK(mask.dim() == 2 && mask.size(0) > 0 && mask.size(1) > 0,
           "resample: expected a non-empty mask (H, W) but got ", mask.shape());
  check_window("resample", mask.shape(), scaled_h, scaled_w, out_h, out_w);
  int64_t H = mask.size(0), W = mask.size(1);
  auto iy = nearest_taps(H, scaled_h, top, out_h), ix = nearest_taps(W, scaled_w, left, out_w);
  IndexTensor out = IndexTensor::empty({out_h, out_w});  // (out_h, out_w)
  for (int64_t y = 0; y < out_h; ++y)
    for (int64_t x = 0; x < out_w; ++x)
      out[y * out_w + x] = (iy[y] < 0 || ix[x] < 0) ? 255 : mask[iy[y] * W + ix[x]];
  return out;
}

Tensor resize_bilinear(const Tensor& image, int64_t out_h, int64_t out_w) {
  return resample_window(image, out_h, out_w, 0, 0, out_h, out_w, {0.f, 0.f, 0.f});
}

IndexTensor resize_nearest(const IndexTensor& mask, int64_t out_h, int64_t out_w) {
  return resample_window(mask, out_h, out_w, 0, 0, out_h, out_w);
}

static void check_sample(const char* what, const Sample& s) {
  SB_CHECK(s.image.dim() == 3 && s.mask.dim() == 2 && s.image.size(1) == s.mask.size(0) &&
               s.image.size(2) == s.mask.size(1),
           what, ": expected an image (C, H, W) and a mask (H, W) of the same size but got ", s.image.shape(),
           " and ", s.mask.shape());
}

Sample resize_center_crop(const Sample& s, int64_t size) {
  check_sample("resize_center_crop", s);
  SB_CHECK(size > 0, "resize_center_crop: size must be positive, got ", size);
  int64_t H = s.image.size(1), W = s.image.size(2);
  if (H == size && W == size) return s;
  double k = static_cast<double>(size) / static_cast<double>(std::min(H, W));
  int64_t sh = H <= W ? size : std::max<int64_t>(size, std::llround(H * k));
  int64_t sw = W <= H ? size : std::max<int64_t>(size, std::llround(W * k));
  int64_t top = (sh - size) / 2, left = (sw - size) / 2;
  return {resample_window(s.image, sh, sw, top, left, size, size, {0.f, 0.f, 0.f}),
          resample_window(s.mask, sh, sw, top, left, size, size)};
}

Sample hflip(const Sample& s) {
  check_sample("hflip", s);
  int64_t C = s.image.size(0), H = s.image.size(1), W = s.image.size(2);
  Sample out{Tensor::empty(s.image.shape()), IndexTensor::empty(s.mask.shape())};
  for (int64_t r = 0; r < C * H; ++r)
    for (int64_t x = 0; x < W; ++x) out.image[r * W + x] = s.image[r * W + W - 1 - x];
  for (int64_t r = 0; r < H; ++r)
    for (int64_t x = 0; x < W; ++x) out.mask[r * W + x] = s.mask[r * W + W - 1 - x];
  return out;
}

Sample random_scale_crop(const Sample& s, int64_t out_h, int64_t out_w, float base_scale, float scale_min,
                         float scale_max, const RGB& fill, Generator& gen) {
  check_sample("random_scale_crop", s);
  SB_CHECK(base_scale > 0 && scale_min > 0 && scale_min <= scale_max,
           "random_scale_crop: need base_scale > 0 and 0 < scale_min <= scale_max, got ", base_scale, ", ",
           scale_min, ", ", scale_max);
  int64_t H = s.image.size(1), W = s.image.size(2);
  double k = static_cast<double>(base_scale) * gen.uniform(scale_min, scale_max);
  int64_t sh = std::max<int64_t>(1, std::llround(H * k)), sw = std::max<int64_t>(1, std::llround(W * k));
  // Window inside a larger scaled image, or the scaled image placed inside a larger window.
  auto offset = [&](int64_t scaled, int64_t out) {
    return scaled >= out ? static_cast<int64_t>(gen.below(scaled - out + 1))
                         : -static_cast<int64_t>(gen.below(out - scaled + 1));
  };
  int64_t top = offset(sh, out_h);
  int64_t left = offset(sw, out_w);
  return {resample_window(s.image, sh, sw, top, left, out_h, out_w, fill),
          resample_window(s.mask, sh, sw, top, left, out_h, out_w)};
}

void color_jitter(Tensor& image, float brightness, float contrast, float saturation, Generator& gen) {
  SB_CHECK(image.dim() == 3 && image.size(0) == 3, "color_jitter: expected an RGB image (3, H, W) but got ",
           image.shape());
  // Always draw all three, so the generator advances the same way whatever the strengths.
  float fb = gen.uniform(1.f - brightness, 1.f + brightness);
  float fc = gen.uniform(1.f - contrast, 1.f + contrast);
  float fs = gen.uniform(1.f - saturation, 1.f + saturation);
  if (brightness == 0 && contrast == 0 && saturation == 0) return;
  int64_t HW = image.size(1) * image.size(2);
  float *r = image.data(), *g = r + HW, *b = g + HW;
  auto grey = [&](int64_t p) { return 0.299f * r[p] + 0.587f * g[p] + 0.114f * b[p]; };
  for (int64_t i = 0; i < 3 * HW; ++i) image[i] = std::clamp(image[i] * fb, 0.f, 1.f);
  double mean = 0;
  for (int64_t p = 0; p < HW; ++p) mean += grey(p);
  float m = static_cast<float>(mean / static_cast<double>(HW));
  for (int64_t i = 0; i < 3 * HW; ++i) image[i] = std::clamp(m + fc * (image[i] - m), 0.f, 1.f);
  for (int64_t p = 0; p < HW; ++p) {
    float y = grey(p);
    r[p] = std::clamp(y + fs * (r[p] - y), 0.f, 1.f);
    g[p] = std::clamp(y + fs * (g[p] - y), 0.f, 1.f);
    b[p] = std::clamp(y + fs * (b[p] - y), 0.f, 1.f);
  }
}

void normalize(Tensor& image, const RGB& mean, const RGB& std) {
  SB_CHECK(image.dim() == 3 && image.size(0) == 3, "normalize: expected an RGB image (3, H, W) but got ",
           image.shape());
  int64_t HW = image.size(1) * image.size(2);
  for (int64_t c = 0; c < 3; ++c) {
    SB_CHECK(std[c] > 0, "normalize: std must be positive, got ", std[c], " for channel ", c);
    float m = mean[c], inv = 1.f / std[c];
    float* p = image.data() + c * HW;
    for (int64_t i = 0; i < HW; ++i) p[i] = (p[i] - m) * inv;
  }
}

SampleTransform build_transform(const TransformOptions& opt) {
  SB_CHECK(opt.image_size >= 0, "--image-size: must be positive, got ", opt.image_size);
  if (!opt.augment && opt.image_size == 0 && !opt.normalize) return {};
  SB_CHECK(!opt.normalize || (opt.mean.is_set() && opt.std.is_set()),
           "TransformOptions: normalize is on but no mean and std were given (there is no default, as with "
           "torchvision's Normalize). Set .mean and .std: sb::kShapesMean/kShapesStd for the shapes set, "
           "sb::kImageNetMean/kImageNetStd for photographs, or take sb::transform_options(spec, split) "
           "(tools/app/data_spec.h) for what the command line uses; or set .normalize = false");
  return [opt](Sample s, Generator& gen) -> Sample {
    check_sample("transform", s);
    const int64_t S = opt.image_size;
    if (opt.augment) {
      int64_t H = s.image.size(1), W = s.image.size(2);
      float base = S > 0 ? static_cast<float>(S) / static_cast<float>(std::min(H, W)) : 1.f;
      int64_t oh = S > 0 ? S : H, ow = S > 0 ? S : W;
      s = random_scale_crop(s, oh, ow, base, opt.aug.scale_min, opt.aug.scale_max, opt.mean, gen);
      bool flip = gen.uniform() < 0.5f;
      if (opt.aug.flip && flip) s = hflip(s);
      color_jitter(s.image, opt.aug.brightness, opt.aug.contrast, opt.aug.saturation, gen);
    } else if (S > 0) {
      s = resize_center_crop(s, S);
    }
    if (opt.normalize) {
      // The dataset may hand out shared storage (tensors:, caches): never normalize it in place.
      if (!opt.augment && s.image.storage_use_count() > 1) s.image = s.image.clone();
      normalize(s.image, opt.mean, opt.std);
    }
    return s;
  };
}

}  // namespace sb
