// Decoding and encoding image files with stb_image / stb_image_write, with the checks that turn
// every bad file into an sb::Error naming it. datasets/image_io.cpp turns the pixels into images
// and masks.
//
// stb's implementation is compiled here, in this one translation unit, rather than linked from
// Debian's libstb.so: STB_IMAGE_STATIC / STB_IMAGE_WRITE_STATIC keep every stb symbol private to
// this file (no clash with another copy of stb linked into the same program), we choose the
// configuration (only PNG, JPEG and BMP are compiled in, which keeps the decoder surface small;
// the failure reason is thread-local because STBI_THREAD_LOCAL is defined for C++11), and the
// binary needs no libstb0 at run time. The rest of the library uses the functions in core/io/image.h.
// Debian 12 ships stb_image 2.27, whose JPEG Huffman-table parser overflows on corrupt tables
// (fixed upstream in 2.28); jpeg_tables_ok() refuses such files before stb parses them.
#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_STATIC
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_ONLY_BMP
// Zeroed allocations: stb_image 2.27 does not clear its JPEG decoder state (2.28 does), so a scan
// using a Huffman table no DHT defined read uninitialized memory, as an index into a 257-entry
// table (found by fuzzing, and not even reproducible from run to run). With calloc such a table
// is all zeros and decodes deterministically within bounds. STBI_MALLOC, STBI_REALLOC and
// STBI_FREE must be defined together.
#define STBI_MALLOC(size) calloc(1, size)
#define STBI_REALLOC(p, size) realloc(p, size)
#define STBI_FREE(p) free(p)
#include <stb_image.h>
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#include <stb_image_write.h>

#include "core/io/image.h"

#include "core/errors.h"
#include "core/io/fileio.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>

namespace sb {

namespace {

std::string stb_reason() {
  const char* r = stbi_failure_reason();
  return r && *r ? r : "no reason given";
}

struct FileCloser {
  void operator()(FILE* f) const { std::fclose(f); }
};
using FilePtr = std::unique_ptr<FILE, FileCloser>;

FilePtr open_for_reading(const std::string& path) {
  std::error_code ec;
  SB_CHECK(!std::filesystem::is_directory(path, ec), path, ": expected an image file but found a directory");
  int fd = open_regular_file(path);  // a FIFO must not block the open
  FILE* f = ::fdopen(fd, "rb");
  if (!f) {
    int err = errno;
    ::close(fd);
    fail(path, ": cannot open (", std::strerror(err), ")");
  }
  return FilePtr(f);
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  FilePtr f = open_for_reading(path);
  std::vector<uint8_t> bytes;
  uint8_t buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f.get())) > 0) {
    bytes.insert(bytes.end(), buf, buf + n);
    SB_CHECK(bytes.size() <= static_cast<size_t>(INT_MAX), path, ": file larger than 2 GiB; not an image we can decode");
  }
  SB_CHECK(!std::ferror(f.get()), path, ": read error (", std::strerror(errno), ")");
  SB_CHECK(!bytes.empty(), path, ": empty file (0 bytes), expected a PNG, JPEG or BMP image");
  return bytes;
}

// Reads n bytes at an offset; false past the end.
using ByteReader = std::function<bool(uint64_t offset, size_t n, uint8_t* out)>;

uint32_t be16(const uint8_t* p) { return (uint32_t(p[0]) << 8) | p[1]; }
uint32_t be32(const uint8_t* p) { return (be16(p) << 16) | be16(p + 2); }
int32_t le32(const uint8_t* p) {
  return static_cast<int32_t>(uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24));
}

// True when every Huffman table in a JPEG DHT segment body holds at most 256 codes and fits in
// the segment. stb_image 2.27 (Debian 12's libstb-dev) writes past its code arrays when a table
// claims more (upstream added the check in 2.28), so such files are refused before stb sees them.
bool dht_ok(const uint8_t* seg, size_t len) {
  size_t q = 0;
  while (q < len) {
    if (q + 17 > len) return false;
    size_t count = 0;
    for (size_t k = 1; k <= 16; ++k) count += seg[q + k];
    if (count > 256 || q + 17 + count > len) return false;
    q += 17 + count;
  }
  return true;
}

// stb_image reads a JPEG's start-of-image marker like any marker: 0xFF, any number of 0xFF fill
// bytes, then 0xD8. So must we, or a file starting FF FF D8 would reach stb unchecked (found by
// fuzzing). Returns the offset just past the marker, or 0 when the bytes do not start a JPEG.
uint64_t jpeg_soi_end(const ByteReader& read) {
  uint8_t chunk[512];
  uint64_t off = 0;
  for (;;) {
    size_t got = 512;
    while (got > 0 && !read(off, got, chunk)) got /= 2;  // shorter reads near the end of the file
    if (got == 0) return 0;
    for (size_t i = 0; i < got; ++i, ++off)
      if (chunk[i] != 0xFF) return off >= 1 && chunk[i] == 0xD8 ? off + 1 : 0;
  }
}
bool is_sof(uint8_t m) { return m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC; }

struct ClaimedHeader {
  int64_t width = 0, height = 0;  // 0: not recognized
  bool bad_huffman = false;       // a JPEG DHT before the frame header is corrupt
};

// The width and height a PNG, JPEG or BMP header claims, read by us rather than by stb_image:
// stb refuses very large images inside stbi_info with a generic "unknown image type", and the
// claimed size is what a user needs to see.
ClaimedHeader claimed_header(const ByteReader& read) {
  ClaimedHeader h;
  uint8_t b[26];
  if (!read(0, 2, b)) return h;
  if (b[0] == 0x89 && read(0, 24, b) && std::memcmp(b + 12, "IHDR", 4) == 0) {
    h.width = be32(b + 16), h.height = be32(b + 20);
    return h;
  }
  if (b[0] == 'B' && b[1] == 'M' && read(0, 26, b)) {
    h.width = std::abs(int64_t(le32(b + 18))), h.height = std::abs(int64_t(le32(b + 22)));
    return h;
  }
  // JPEG: walk the marker segments up to the frame header (SOFn), which holds the size, checking
  // the Huffman tables on the way (stbi_info parses those too).
  uint64_t off = jpeg_soi_end(read);
  if (off == 0) return h;
  std::vector<uint8_t> seg;
  for (int guard = 0; guard < 4096 && read(off, 4, b); ++guard) {
    if (b[0] != 0xFF) {  // garbage between segments: stb_image skips to the next 0xFF, so follow it
      uint8_t chunk[512];
      size_t got = 0;
      for (;;) {
        got = 512;
        while (got > 0 && !read(off, got, chunk)) got /= 2;  // shorter reads near the end of the file
        if (got == 0) return h;
        auto* ff = static_cast<uint8_t*>(std::memchr(chunk, 0xFF, got));
        if (ff) {
          off += static_cast<uint64_t>(ff - chunk);
          break;
        }
        off += got;
      }
      continue;
    }
    uint8_t m = b[1];
    if (m == 0xFF) {  // fill byte
      off += 1;
      continue;
    }
    if (m == 0x01 || (m >= 0xD0 && m <= 0xD8)) {  // markers without a length
      off += 2;
      continue;
    }
    size_t len = be16(b + 2);
    if (m == 0xC4) {
      seg.resize(len >= 2 ? len - 2 : 0);
      // An empty segment (len 2) has nothing to read, and seg.data() may then be null.
      if (len < 2 || (!seg.empty() && !read(off + 4, seg.size(), seg.data())) || !dht_ok(seg.data(), seg.size())) {
        h.bad_huffman = true;
        return h;
      }
    }
    if (is_sof(m)) {
      if (read(off + 4, 5, b)) h.width = be16(b + 3), h.height = be16(b + 1);
      return h;
    }
    if (m == 0xDA || m == 0xD9) return h;  // scan or end before any frame header
    off += 2 + len;
  }
  return h;
}

// Every DHT segment of a whole JPEG file in memory, including those between the scans of a
// progressive JPEG (found by skipping the entropy-coded data up to the next marker).
// `off` is where the segments start, just past the start-of-image marker.
bool jpeg_tables_ok(const std::vector<uint8_t>& p, size_t off) {
  const size_t n = p.size();
  while (off + 4 <= n) {
    if (p[off] != 0xFF) {  // garbage between segments: stb_image skips to the next 0xFF
      ++off;
      continue;
    }
    uint8_t m = p[off + 1];
    if (m == 0xFF) {
      off += 1;
      continue;
    }
    if (m == 0x01 || (m >= 0xD0 && m <= 0xD8)) {
      off += 2;
      continue;
    }
    if (m == 0xD9) return true;
    size_t len = be16(&p[off + 2]);
    // stb_image parses a DHT even when the file ends inside it, so a cut-off one is refused too.
    if (m == 0xC4 && (len < 2 || off + 2 + len > n || !dht_ok(&p[off + 4], len - 2))) return false;
    if (len < 2 || off + 2 + len > n) return true;  // truncated elsewhere: stb reports it
    off += 2 + len;
    if (m == 0xDA) {
      // From the first scan on, where stb_image looks for the next marker depends on how much
      // entropy-coded data its decoder consumed, which in a corrupt file no walk of ours can
      // predict (it even varied from run to run: found by fuzzing). In a valid file FF C4 appears
      // there only as a real marker (the data stuffs FF as FF 00), so every FF C4 from here on
      // must start a sound table.
      for (size_t q = off; q + 1 < n; ++q) {
        if (p[q] != 0xFF || p[q + 1] != 0xC4) continue;
        size_t dlen = q + 4 <= n ? be16(&p[q + 2]) : 0;
        if (dlen < 2 || q + 2 + dlen > n || !dht_ok(&p[q + 4], dlen - 2)) return false;
      }
      return true;
    }
  }
  return true;
}

void check_pixels(const std::string& path, int64_t w, int64_t h, int64_t max_pixels) {
  SB_CHECK(w > 0 && h > 0, path, ": the header claims a ", w, " x ", h, " image");
  // A PNG header may claim up to 2^32 - 1 on each side, so w * h can overflow int64 (found by
  // fuzzing): divide instead, and print the product as unsigned (both sides are below 2^32).
  SB_CHECK(max_pixels <= 0 || w <= max_pixels / h, path, ": the header claims ", w, " x ", h, " = ",
           static_cast<uint64_t>(w) * static_cast<uint64_t>(h), " pixels, more than the limit of ", max_pixels,
           " (--max-pixels); refusing to decode it");
}

const char* kBadHuffman =
    ": corrupt or truncated JPEG: a Huffman table (DHT) is cut off, holds more than 256 codes or overruns its segment";

// Refuses a header claiming more than max_pixels, or a corrupt JPEG table, before stb_image
// sees the file.
void check_claimed_header(const std::string& path, const ByteReader& read, int64_t max_pixels) {
  ClaimedHeader h = claimed_header(read);
  SB_CHECK(!h.bad_huffman, path, kBadHuffman);
  if (h.width > 0 && h.height > 0) check_pixels(path, h.width, h.height, max_pixels);
}

ImageHeader header_from_memory(const std::string& path, const std::vector<uint8_t>& bytes, int64_t max_pixels) {
  ByteReader read = [&](uint64_t off, size_t n, uint8_t* out) {
    if (off + n > bytes.size()) return false;
    if (n) std::memcpy(out, bytes.data() + off, n);  // memcpy(NULL, p, 0) is undefined (found by fuzzing)
    return true;
  };
  check_claimed_header(path, read, max_pixels);
  uint64_t soi_end = jpeg_soi_end(read);
  SB_CHECK(soi_end == 0 || jpeg_tables_ok(bytes, soi_end), path, kBadHuffman);
  int w = 0, h = 0, c = 0;
  int len = static_cast<int>(bytes.size());
  SB_CHECK(stbi_info_from_memory(bytes.data(), len, &w, &h, &c), path,
           ": not a PNG, JPEG or BMP image, or its header is corrupt (stb_image: ", stb_reason(), ")");
  check_pixels(path, w, h, max_pixels);
  return {w, h, c, stbi_is_16_bit_from_memory(bytes.data(), len) != 0};
}

// Decodes to `want` channels (0: as stored); returns the pixels and the stored channel count.
// A PNG as stb_image 2.27 may see it, checked first (each found by fuzzing):
// - an IDAT chunk claiming more bytes than the file holds is refused: stb allocates what the
//   chunk claims (up to 1 GiB) before it notices the file is short;
// - the IDAT data together may hold at most twice the raw image size plus 1 KiB (no encoder writes
//   more: deflate's stored blocks add 5 bytes per 64 KiB), so a decompression bomb, which stb
//   inflates into a buffer that grows to 4 GiB, cannot exceed about 1032 times that;
// - empty IDAT chunks are dropped: stb copies an empty first one with memcpy(NULL, ..., 0), which
//   is undefined behaviour; they add nothing to the compressed stream.
// Other files, and PNGs that need no change, are returned as they are.
const std::vector<uint8_t>& png_for_stb(const std::string& path, const std::vector<uint8_t>& b,
                                        std::vector<uint8_t>& storage) {
  static const uint8_t kSig[8] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a};
  if (b.size() < 8 || std::memcmp(b.data(), kSig, 8) != 0) return b;
  auto is_idat = [&](size_t off) { return std::memcmp(&b[off + 4], "IDAT", 4) == 0; };
  uint64_t idat_bytes = 0;
  bool has_empty = false;
  // A chunk counts once its 8-byte header is there: stb reads an IDAT whose CRC is cut off too.
  for (size_t off = 8; off + 8 <= b.size(); off += 12 + size_t(be32(&b[off]))) {
    if (!is_idat(off)) continue;
    uint64_t len = be32(&b[off]), left = b.size() - off - 8;
    SB_CHECK(len <= left, path, ": corrupt or truncated PNG: an IDAT chunk claims ", len, " bytes but the file has ",
             left, " left");
    idat_bytes += len;
    has_empty = has_empty || len == 0;
  }
  if (b.size() >= 29 && std::memcmp(&b[12], "IHDR", 4) == 0) {
    static const int kChannels[7] = {1, 0, 3, 1, 2, 0, 4};  // by colour type
    const double w = be32(&b[16]), h = be32(&b[20]);
    const int depth = b[24], type = b[25];
    const int channels = type <= 6 && kChannels[type] ? kChannels[type] : 4;
    // Row bytes with the filter byte, and Adam7's extra rows and filter bytes when interlaced.
    const double raw = h * (1 + std::ceil(w * channels * std::max(depth, 1) / 8.0)) + 8 * h + 64;
    SB_CHECK(idat_bytes <= 2 * raw + 1024, path, ": corrupt PNG: ", idat_bytes, " bytes of compressed data for a ",
             be32(&b[16]), " x ", be32(&b[20]), " image, more than any encoder writes for it");
  }
  if (!has_empty) return b;
  storage.assign(b.begin(), b.begin() + 8);
  size_t off = 8;
  for (; off + 8 <= b.size(); off += 12 + size_t(be32(&b[off]))) {
    size_t end = std::min(b.size(), off + 12 + size_t(be32(&b[off])));
    if (!(is_idat(off) && be32(&b[off]) == 0)) storage.insert(storage.end(), b.begin() + off, b.begin() + end);
  }
  if (off < b.size()) storage.insert(storage.end(), b.begin() + off, b.end());  // a cut-off tail, as it was
  return storage;
}

template <class T>
DecodedImage<T> decode(const ImageFile& file, int want) {
  std::vector<uint8_t> storage;
  const std::vector<uint8_t>& bytes = png_for_stb(file.path, file.bytes, storage);
  const ImageHeader& hd = file.header;
  int w = 0, h = 0;
  int len = static_cast<int>(bytes.size());
  DecodedImage<T> out;
  T* px;
  if constexpr (sizeof(T) == 2) px = stbi_load_16_from_memory(bytes.data(), len, &w, &h, &out.channels_in_file, want);
  else px = stbi_load_from_memory(bytes.data(), len, &w, &h, &out.channels_in_file, want);
  SB_CHECK(px, file.path, ": cannot decode the image data (stb_image: ", stb_reason(),
           "); the file is corrupt or truncated");
  out.pixels.reset(px);
  SB_CHECK(w == hd.width && h == hd.height, file.path, ": decoded ", w, " x ", h, " but the header says ", hd.width,
           " x ", hd.height);
  return out;
}

void png_sink(void* ctx, void* data, int size) {
  auto* v = static_cast<std::vector<uint8_t>*>(ctx);
  auto* p = static_cast<uint8_t*>(data);
  v->insert(v->end(), p, p + size);
}

void check_write_args(const char* what, int64_t w, int64_t h, int channels) {
  SB_CHECK(w > 0 && h > 0 && w <= INT_MAX / 4 && h <= INT_MAX / 4, what, ": bad image size ", w, " x ", h);
  SB_CHECK(channels >= 1 && channels <= 4, what, ": channels must be 1..4, got ", channels);
}

}  // namespace

ImageHeader read_image_header(const std::string& path, int64_t max_pixels) {
  FilePtr f = open_for_reading(path);
  std::fseek(f.get(), 0, SEEK_END);
  long size = std::ftell(f.get());
  std::fseek(f.get(), 0, SEEK_SET);
  SB_CHECK(size != 0, path, ": empty file (0 bytes), expected a PNG, JPEG or BMP image");
  check_claimed_header(path, [&](uint64_t off, size_t n, uint8_t* out) {
    return off + n <= static_cast<uint64_t>(size) && std::fseek(f.get(), static_cast<long>(off), SEEK_SET) == 0 &&
           std::fread(out, 1, n, f.get()) == n;
  }, max_pixels);
  std::fseek(f.get(), 0, SEEK_SET);
  int w = 0, h = 0, c = 0;
  SB_CHECK(stbi_info_from_file(f.get(), &w, &h, &c), path,
           ": not a PNG, JPEG or BMP image, or its header is corrupt (stb_image: ", stb_reason(), ")");
  check_pixels(path, w, h, max_pixels);
  return {w, h, c, stbi_is_16_bit_from_file(f.get()) != 0};
}

void DecodedFree::operator()(void* p) const { stbi_image_free(p); }

ImageFile read_image_file(const std::string& path, int64_t max_pixels) {
  ImageFile f;
  f.path = path;
  f.bytes = read_bytes(path);
  f.header = header_from_memory(path, f.bytes, max_pixels);
  return f;
}

DecodedImage<uint8_t> decode_image(const ImageFile& file, int want_channels) {
  return decode<uint8_t>(file, want_channels);
}

DecodedImage<uint16_t> decode_image16(const ImageFile& file, int want_channels) {
  return decode<uint16_t>(file, want_channels);
}

std::vector<uint8_t> encode_png(const uint8_t* hwc, int64_t width, int64_t height, int channels) {
  check_write_args("encode_png", width, height, channels);
  std::vector<uint8_t> out;
  SB_CHECK(stbi_write_png_to_func(png_sink, &out, static_cast<int>(width), static_cast<int>(height), channels,
                                  hwc, static_cast<int>(width) * channels),
           "encode_png: stb_image_write failed for a ", width, " x ", height, " x ", channels, " image");
  return out;
}

std::vector<uint8_t> encode_jpg(const uint8_t* hwc, int64_t width, int64_t height, int channels, int quality) {
  check_write_args("encode_jpg", width, height, channels);
  std::vector<uint8_t> out;
  SB_CHECK(stbi_write_jpg_to_func(png_sink, &out, static_cast<int>(width), static_cast<int>(height), channels,
                                  hwc, quality),
           "encode_jpg: stb_image_write failed for a ", width, " x ", height, " x ", channels, " image");
  return out;
}

void write_png(const std::string& path, const uint8_t* hwc, int64_t width, int64_t height, int channels) {
  write_file_atomic(path, encode_png(hwc, width, height, channels));
}

void write_jpg(const std::string& path, const uint8_t* hwc, int64_t width, int64_t height, int channels,
               int quality) {
  write_file_atomic(path, encode_jpg(hwc, width, height, channels, quality));
}

}  // namespace sb
