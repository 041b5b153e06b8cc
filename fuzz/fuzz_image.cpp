// libFuzzer target: one image + mask sample through the project's own file reader, exactly as
// folder:, voc: and pets: read it: FileSegDataset opens it (header checks: both files, size
// limit, equal sizes; with skip_bad also the full decode and label checks), get(0) decodes it
// (load_image, load_mask with the encoding and the class count), and the evaluation or
// augmentation transform runs on the result.
//
// Input: byte 0 picks the options, bytes 1-2 (little-endian) the image's length n; the image
// file is the next n bytes (or all that remain), the mask file whatever follows.
#include <cstddef>
#include <cstdint>
#include <exception>

#include "datasets/folder.h"
#include "datasets/image_io.h"
#include "datasets/transforms.h"
#include "fuzz_common.h"

namespace {

constexpr sb::MaskEncoding kEncodings[] = {sb::MaskEncoding::Indices, sb::MaskEncoding::VocColors,
                                           sb::MaskEncoding::PetsTrimap, sb::MaskEncoding::PetsTrimapBorder};
// The class counts the sources use (folder: any; voc: 21; pets: 2 or 3).
constexpr int64_t kClasses[] = {5, 21, 2, 3};
// Smaller than the default 64 Mi pixels so that each input stays cheap; the checks are the same.
constexpr int64_t kMaxPixels[] = {1 << 16, 1 << 12, 1 << 18, 64};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 3) return 0;
  const uint8_t opts = data[0];
  size_t n = data[1] | (size_t(data[2]) << 8);
  data += 3, size -= 3;
  if (n > size) n = size;
  static const std::string image = sbfuzz::scratch_dir() + "/image.png";
  static const std::string mask = sbfuzz::scratch_dir() + "/mask.png";
  sbfuzz::write_bytes(image, data, n);
  sbfuzz::write_bytes(mask, data + n, size - n);

  const int enc = opts & 3;
  sb::FileReadOptions ro;
  ro.skip_bad = (opts >> 2) & 1;
  ro.max_pixels = kMaxPixels[(opts >> 3) & 3];
  sb::Sample s;
  try {
    sb::FileSegDataset ds("fuzz", {{image, mask, ""}}, kEncodings[enc], kClasses[enc], ro);
    s = ds.get(0);
  } catch (const std::exception&) {
    return 0;
  }
  // The loader's per-sample transform: evaluation resize+crop, or augmentation.
  try {
    sb::TransformOptions t;
    t.mean = sb::kImageNetMean, t.std = sb::kImageNetStd;
    t.image_size = (opts >> 5) & 1 ? 16 + ((opts >> 6) & 1) * 17 : 0;  // 0, 16 or 33
    t.augment = (opts >> 7) & 1;
    sb::SampleTransform tf = sb::build_transform(t);
    sb::Generator gen(opts);
    if (tf) s = tf(s, gen);
  } catch (const std::exception&) {
  }
  return 0;
}
