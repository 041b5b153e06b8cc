// Sample transforms: geometric ones that move image and mask together (resize, random scale and
// crop/pad, horizontal flip), image-only ones (colour jitter, mean/std normalization), and the
// composed per-sample transform the DataLoader runs.
#pragma once

#include <array>
#include <cstddef>

#include "datasets/loader.h"

namespace sb {

using RGB = std::array<float, 3>;

// ImageNet's statistics, the usual normalization for photographs.
inline constexpr RGB kImageNetMean = {0.485f, 0.456f, 0.406f};
inline constexpr RGB kImageNetStd = {0.229f, 0.224f, 0.225f};

// The window [top, top + out_h) x [left, left + out_w) of the image scaled to (scaled_h, scaled_w),
// computed without materializing the scaled image. Pixels outside the scaled image take `fill`
// (one value per channel). Image: bilinear with half-pixel centres (PyTorch's align_corners=False);
// when shrinking, the triangle filter is widened by the scale factor so every input pixel counts
// (antialiasing, as PIL and torchvision's antialias=True). (C, H, W) -> (C, out_h, out_w)
Tensor resample_window(const Tensor& image, int64_t scaled_h, int64_t scaled_w, int64_t top, int64_t left,
                       int64_t out_h, int64_t out_w, const RGB& fill);
// The same window of a mask, by nearest neighbour (the input pixel containing the output pixel's
// centre), outside = 255 (ignore). (H, W) -> (out_h, out_w)
IndexTensor resample_window(const IndexTensor& mask, int64_t scaled_h, int64_t scaled_w, int64_t top,
                            int64_t left, int64_t out_h, int64_t out_w);

Tensor resize_bilinear(const Tensor& image, int64_t out_h, int64_t out_w);       // (C, H, W)
IndexTensor resize_nearest(const IndexTensor& mask, int64_t out_h, int64_t out_w);  // (H, W)

// Deterministic evaluation resize: the shorter side to `size` (aspect kept, the longer side
// rounded), then the centred size x size crop. An image already size x size is returned as is.
Sample resize_center_crop(const Sample& s, int64_t size);
Sample hflip(const Sample& s);

// Random scale then crop (or pad) to out_h x out_w. The scale is base_scale * U(scale_min,
// scale_max); the crop window is uniform over the positions that keep it inside the scaled image,
// or, when the scaled image is smaller, places the image uniformly inside the window. Image
// padding takes `fill`, mask padding 255.
Sample random_scale_crop(const Sample& s, int64_t out_h, int64_t out_w, float base_scale, float scale_min,
                         float scale_max, const RGB& fill, Generator& gen);

// Brightness, contrast and saturation factors drawn from [1 - x, 1 + x] and applied in that order,
// then clamped to [0, 1]; the image is (3, H, W) in [0, 1]. Zero strengths leave it unchanged.
void color_jitter(Tensor& image, float brightness, float contrast, float saturation, Generator& gen);
// In place: (x - mean[c]) / std[c].
void normalize(Tensor& image, const RGB& mean, const RGB& std);

struct AugmentOptions {
  float scale_min = 0.5f, scale_max = 2.0f;  // the DeepLab / mmsegmentation range
  bool flip = true;                          // horizontal, with probability 1/2
  float brightness = 0.25f, contrast = 0.25f, saturation = 0.25f;
};

// A per-channel statistic that remembers whether it was set: assigning an RGB sets it; unset, it
// reads as the value it was made with (TransformOptions::mean reads as ImageNet's, which is also
// the padding of an augmentation without normalization).
class ChannelStat {
 public:
  constexpr ChannelStat(const RGB& v) : v_(v), set_(true) {}  // implicit: opt.mean = kShapesMean
  static constexpr ChannelStat unset(const RGB& shown) {
    ChannelStat c(shown);
    c.set_ = false;
    return c;
  }
  constexpr bool is_set() const { return set_; }
  constexpr const RGB& value() const { return v_; }
  constexpr operator const RGB&() const { return v_; }
  constexpr float operator[](size_t i) const { return v_[i]; }
  constexpr bool operator==(const RGB& o) const { return v_ == o; }

 private:
  RGB v_;
  bool set_;
};

struct TransformOptions {
  int64_t image_size = 0;  // S > 0: output S x S (see build_transform); 0: keep the size
  bool augment = false;
  AugmentOptions aug;
  // Normalization, last: (x - mean) / std. As with torchvision's Normalize(mean, std), there is
  // no default: with normalize on (the default), build_transform refuses options whose mean and
  // std were not set, rather than pick ImageNet's for data that may not be photographs. Say which:
  // kShapesMean/kShapesStd (datasets/shapes.h) for the shapes set, kImageNetMean/kImageNetStd for
  // photographs, the dataset's own, or transform_options(spec, split) (tools/app/data_spec.h,
  // smallbatch::tools) for exactly what the command line uses. normalize = false: none.
  bool normalize = true;
  ChannelStat mean = ChannelStat::unset(kImageNetMean), std = ChannelStat::unset(kImageNetStd);
};

// The per-sample transform, in this order:
//   augment:      random scale (base: the shorter side to S, or 1 when S = 0) in [scale_min,
//                 scale_max], crop/pad to S x S (or to the sample's own size when S = 0),
//                 flip, colour jitter;
//   no augment:   resize_center_crop(S) when S > 0;
//   normalize:    (x - mean) / std; the padding of random_scale_crop is the mean, so it becomes 0.
// Returns an empty function when there is nothing to do.
SampleTransform build_transform(const TransformOptions& opt);

}  // namespace sb
