// The dataset side of image files: pixels decoded by core/io/image.h become (3, H, W) float
// images, (H, W) class-index masks, or VOC masks mapped back through the VOC colour map; and
// back to bytes for writing.
#include "datasets/image_io.h"

#include <algorithm>
#include <cmath>

namespace sb {

Tensor load_image(const std::string& path, int64_t max_pixels) {
  ImageFile file = read_image_file(path, max_pixels);
  const ImageHeader& hd = file.header;
  auto px = decode_image(file, 3).pixels;  // grey/RGBA/palette converted to RGB
  int64_t H = hd.height, W = hd.width;
  Tensor img = Tensor::empty({3, H, W});  // (C, H, W)
  float* out = img.data();
  const uint8_t* in = px.get();
  const float k = 1.f / 255.f;
  for (int64_t p = 0; p < H * W; ++p) {
    out[p] = in[3 * p] * k;
    out[H * W + p] = in[3 * p + 1] * k;
    out[2 * H * W + p] = in[3 * p + 2] * k;
  }
  return img;
}

IndexTensor load_index_mask(const std::string& path, int64_t max_pixels) {
  ImageFile file = read_image_file(path, max_pixels);
  const ImageHeader& hd = file.header;
  int64_t H = hd.height, W = hd.width;
  IndexTensor mask = IndexTensor::empty({H, W});  // (H, W)
  int64_t* out = mask.data();
  int c = 0;
  // 16-bit masks are read at 16 bits: stb would otherwise rescale the values, not keep them.
  auto convert = [&](const auto* in) {
    for (int64_t p = 0; p < H * W; ++p) {
      const auto* px = in + p * c;
      if (c >= 3 && (px[1] != px[0] || px[2] != px[0]))
        fail(path, ": a mask must be a single-channel image of class indices, but this is a colour image and pixel (",
             p / W, ", ", p % W, ") is (", +px[0], ", ", +px[1], ", ", +px[2],
             "); save the mask as 8-bit grey (palette PNGs: use voc: for VOC colours)");
      out[p] = px[0];
    }
  };
  if (hd.is_16bit) {
    auto px = decode_image16(file, 0);
    c = px.channels_in_file;
    convert(px.pixels.get());
  } else {
    auto px = decode_image(file, 0);
    c = px.channels_in_file;
    convert(px.pixels.get());
  }
  return mask;
}

std::array<uint8_t, 3> voc_color(int index) {
  SB_CHECK(index >= 0 && index < 256, "voc_color: index must be in [0, 256), got ", index);
  // The VOC devkit's bitget construction: bits 0, 1, 2 of the index go to the top bit of r, g, b,
  // bits 3, 4, 5 to the next bit down, and so on.
  uint8_t rgb[3] = {0, 0, 0};
  for (int j = 0, c = index; j < 8; ++j, c >>= 3)
    for (int k = 0; k < 3; ++k) rgb[k] |= static_cast<uint8_t>(((c >> k) & 1) << (7 - j));
  return {rgb[0], rgb[1], rgb[2]};
}

int voc_index(uint8_t r, uint8_t g, uint8_t b) {
  // The construction above is a bijection between 24-bit indices and colours; undo it and keep
  // only the indices the map defines.
  const uint8_t rgb[3] = {r, g, b};
  int index = 0;
  for (int j = 0; j < 8; ++j)
    for (int k = 0; k < 3; ++k) index |= ((rgb[k] >> (7 - j)) & 1) << (3 * j + k);
  return index < 256 ? index : -1;
}

IndexTensor load_voc_mask(const std::string& path, int64_t max_pixels) {
  ImageFile file = read_image_file(path, max_pixels);
  const ImageHeader& hd = file.header;
  if (hd.channels <= 2) return load_index_mask(path, max_pixels);
  SB_CHECK(!hd.is_16bit, path, ": a 16-bit colour image is not a VOC mask");
  auto px = decode_image(file, 3).pixels;
  int64_t H = hd.height, W = hd.width;
  IndexTensor mask = IndexTensor::empty({H, W});  // (H, W)
  const uint8_t* in = px.get();
  for (int64_t p = 0; p < H * W; ++p) {
    uint8_t r = in[3 * p], g = in[3 * p + 1], b = in[3 * p + 2];
    int idx = voc_index(r, g, b);
    SB_CHECK(idx >= 0, path, ": pixel (", p / W, ", ", p % W, ") has colour (", +r, ", ", +g, ", ", +b,
             "), which is not in the VOC colour map");
    mask[p] = idx;
  }
  return mask;
}

std::vector<uint8_t> to_hwc_bytes(const Tensor& image) {
  SB_CHECK(image.dim() == 3, "to_hwc_bytes: expected an image (C, H, W) but got ", image.shape());
  int64_t C = image.size(0), HW = image.size(1) * image.size(2);
  std::vector<uint8_t> out(C * HW);
  for (int64_t c = 0; c < C; ++c)
    for (int64_t p = 0; p < HW; ++p) {
      float v = image[c * HW + p];
      v = std::isfinite(v) ? std::clamp(v, 0.f, 1.f) : 0.f;
      out[p * C + c] = static_cast<uint8_t>(std::lround(v * 255.f));
    }
  return out;
}

std::vector<uint8_t> to_mask_bytes(const IndexTensor& mask) {
  SB_CHECK(mask.dim() == 2, "to_mask_bytes: expected a mask (H, W) but got ", mask.shape());
  std::vector<uint8_t> out(mask.numel());
  for (int64_t p = 0; p < mask.numel(); ++p) {
    SB_CHECK(mask[p] >= 0 && mask[p] <= 255, "to_mask_bytes: label ", mask[p], " at flat index ", p,
             " does not fit in a byte");
    out[p] = static_cast<uint8_t>(mask[p]);
  }
  return out;
}

}  // namespace sb
