// Images and masks from image files: float RGB images, class-index masks and Pascal VOC colour
// masks, decoded by core/io/image.h (included here for its header check and PNG/JPEG writers).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "core/io/image.h"
#include "core/tensor.h"

namespace sb {

// (3, H, W) RGB in [0, 1]: grey is repeated to three channels, alpha is dropped, 16-bit PNGs are
// reduced to 8 bits. The header is checked against `max_pixels` before decoding.
Tensor load_image(const std::string& path, int64_t max_pixels);

// (H, W) the values of a single-channel (grey, 8- or 16-bit) image, as class indices. Grey+alpha
// drops the alpha; a colour image whose channels are all equal is read as grey; any other colour
// image is an error naming the file and the first colour pixel.
IndexTensor load_index_mask(const std::string& path, int64_t max_pixels);

// (H, W) a Pascal VOC mask: colours mapped back through the VOC colour map (stb_image expands
// palette PNGs to RGB, so the palette indices are lost and must be recovered from the colours),
// with (224, 224, 192) -> 255. A colour outside the map is an error naming the file and colour.
// A single-channel mask (e.g. SegmentationClassAug) is read as indices directly.
IndexTensor load_voc_mask(const std::string& path, int64_t max_pixels);

// The standard VOC colour map: index -> (r, g, b), for index in [0, 256).
std::array<uint8_t, 3> voc_color(int index);
// Its inverse: the index whose colour is (r, g, b), or -1 if no index in [0, 256) has it.
int voc_index(uint8_t r, uint8_t g, uint8_t b);

// (C, H, W) float in [0, 1] -> (H, W, C) bytes, rounded and clamped.
std::vector<uint8_t> to_hwc_bytes(const Tensor& image);
// (H, W) indices -> (H, W) bytes; every value must be in [0, 255].
std::vector<uint8_t> to_mask_bytes(const IndexTensor& mask);

}  // namespace sb
