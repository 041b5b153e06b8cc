// Image files in and out: PNG/JPEG/BMP headers checked before any pixel is decoded, decoding to
// interleaved bytes (through stb_image), PNG and JPEG writing. What the pixels mean (RGB images,
// class-index or VOC-colour masks) is datasets/image_io.h's business.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace sb {

// What a file's header says, read without decoding pixels.
struct ImageHeader {
  int64_t width = 0, height = 0;
  int channels = 0;      // as stored: 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA (a palette counts as 3 or 4)
  bool is_16bit = false;
};

// Parses the header only. Throws sb::Error naming the file when it is missing, empty, not a
// PNG/JPEG/BMP, or claims more than `max_pixels` pixels (0: no limit).
ImageHeader read_image_header(const std::string& path, int64_t max_pixels);

// A whole image file in memory, its header checked as read_image_header does, plus the checks
// that keep a corrupt JPEG Huffman table away from stb_image. decode_image() takes it from here.
struct ImageFile {
  std::string path;  // for error messages
  std::vector<uint8_t> bytes;
  ImageHeader header;
};
ImageFile read_image_file(const std::string& path, int64_t max_pixels);

// Frees pixels with the decoder's allocator.
struct DecodedFree {
  void operator()(void* p) const;
};
// (H, W, channels) interleaved samples of `want` channels (0: as stored), and the channel count
// the file stores (the decoder converts grey/RGBA/palette to `want`).
template <class T>
struct DecodedImage {
  std::unique_ptr<T, DecodedFree> pixels;
  int channels_in_file = 0;
};
// 8 bits per sample (16-bit files are reduced); throws naming the file when the data is corrupt
// or decodes to another size than its header claims.
DecodedImage<uint8_t> decode_image(const ImageFile& file, int want_channels);
// 16 bits per sample, values kept as stored (for 16-bit masks, which must not be rescaled).
DecodedImage<uint16_t> decode_image16(const ImageFile& file, int want_channels);

// Writers take interleaved (H, W, channels) bytes, channels 1..4, encode in memory, then write
// path + ".tmp-*" and rename it over `path`, so a reader never sees a half-written file.
void write_png(const std::string& path, const uint8_t* hwc, int64_t width, int64_t height, int channels);
void write_jpg(const std::string& path, const uint8_t* hwc, int64_t width, int64_t height, int channels,
               int quality = 95);
// The same encodings into memory, for tests that need to corrupt or truncate the bytes.
std::vector<uint8_t> encode_png(const uint8_t* hwc, int64_t width, int64_t height, int channels);
std::vector<uint8_t> encode_jpg(const uint8_t* hwc, int64_t width, int64_t height, int channels, int quality = 95);

}  // namespace sb
