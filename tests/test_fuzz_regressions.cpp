// Regression tests for the bugs the fuzzers in fuzz/ found: each input that crashed a target (or
// tripped a sanitizer) is rebuilt here and must now fail cleanly, or decode correctly. The raw
// crashing inputs are kept in fuzz/corpus/<target>/regress_*.
#include <doctest/doctest.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/io/safetensors.h"
#include "datasets/folder.h"
#include "datasets/image_io.h"
#include "models/registry.h"
#include "tools/app/checkpoint.h"
#include "tools/app/data_spec.h"
#include "temp_dir.h"

using namespace sb;
namespace fs = std::filesystem;

namespace {

struct TempDir : sbtest::TempDir {
  TempDir() : sbtest::TempDir("sb_fuzzreg") {}
  std::string file(const std::string& name, const std::vector<uint8_t>& bytes) const {
    std::string p = (path / name).string();
    std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    return p;
  }
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

uint32_t be32(const uint8_t* p) { return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3]; }

}  // namespace

TEST_CASE("fuzz regression: a JPEG with fill bytes before SOI still gets its Huffman tables checked") {
  // stb_image skips 0xFF fill bytes before the start-of-image marker, so FF FF D8 is a JPEG to it;
  // our table check wanted exactly FF D8 and let this DHT (300 codes, past stb 2.27's arrays) through.
  std::vector<uint8_t> jpg = {0xFF, 0xFF, 0xD8};
  std::vector<uint8_t> dht = {0xFF, 0xC4};
  std::vector<uint8_t> body = {0x00};                   // class 0, table 0
  for (int i = 0; i < 16; ++i) body.push_back(i < 2 ? 150 : 0);  // 300 codes
  body.resize(body.size() + 300, 0x01);
  dht.push_back(static_cast<uint8_t>((body.size() + 2) >> 8));
  dht.push_back(static_cast<uint8_t>(body.size() + 2));
  jpg.insert(jpg.end(), dht.begin(), dht.end());
  jpg.insert(jpg.end(), body.begin(), body.end());
  jpg.insert(jpg.end(), {0xFF, 0xD9});
  TempDir t;
  std::string p = t.file("fill.jpg", jpg);
  CHECK(error_of([&] { read_image_header(p, 1 << 20); }).find("Huffman") != std::string::npos);
  CHECK(error_of([&] { load_image(p, 1 << 20); }).find("Huffman") != std::string::npos);
  // A good JPEG with a fill byte before SOI still decodes.
  uint8_t rgb[8 * 8 * 3];
  for (int i = 0; i < 8 * 8 * 3; ++i) rgb[i] = static_cast<uint8_t>(i * 3);
  std::vector<uint8_t> good = encode_jpg(rgb, 8, 8, 3);
  good.insert(good.begin(), 0xFF);
  Tensor img = load_image(t.file("good.jpg", good), 1 << 20);
  CHECK(img.shape() == Shape{3, 8, 8});
}

TEST_CASE("fuzz regression: a PNG whose first IDAT chunk is empty decodes like the same PNG without it") {
  // stb_image 2.27 memcpy'd the empty chunk into a null buffer (undefined behaviour).
  uint8_t rgb[5 * 3 * 3];
  for (int i = 0; i < 5 * 3 * 3; ++i) rgb[i] = static_cast<uint8_t>(17 * i);
  std::vector<uint8_t> png = encode_png(rgb, 5, 3, 3);
  size_t off = 8;
  while (std::memcmp(&png[off + 4], "IDAT", 4) != 0) off += 12 + be32(&png[off]);
  // An empty IDAT chunk: length 0, type, and the CRC of "IDAT".
  std::vector<uint8_t> empty = {0, 0, 0, 0, 'I', 'D', 'A', 'T', 0x35, 0xAF, 0x06, 0x1E};
  std::vector<uint8_t> with_empty = png;
  with_empty.insert(with_empty.begin() + off, empty.begin(), empty.end());
  TempDir t;
  Tensor a = load_image(t.file("plain.png", png), 1 << 20);
  Tensor b = load_image(t.file("empty_idat.png", with_empty), 1 << 20);
  REQUIRE(b.shape() == a.shape());
  CHECK(std::memcmp(a.data(), b.data(), a.numel() * sizeof(float)) == 0);
  // The mask readers take the same path.
  uint8_t idx[15] = {0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1, 2, 3, 4};
  std::vector<uint8_t> mask = encode_png(idx, 5, 3, 1);
  off = 8;
  while (std::memcmp(&mask[off + 4], "IDAT", 4) != 0) off += 12 + be32(&mask[off]);
  mask.insert(mask.begin() + off, empty.begin(), empty.end());
  IndexTensor m = load_mask(t.file("mask.png", mask), MaskEncoding::Indices, 5, 1 << 20);
  for (int i = 0; i < 15; ++i) CHECK(m[i] == idx[i]);
}

TEST_CASE("fuzz regression: a PNG header claiming 3537031890 x 3537031890 is refused without overflow") {
  // w * h overflowed int64 in the max-pixels check.
  uint8_t px[4] = {1, 2, 3, 4};
  std::vector<uint8_t> png = encode_png(px, 2, 2, 1);
  for (int k = 16; k < 24; ++k) png[k] = 0xD2;  // IHDR width and height
  TempDir t;
  std::string p = t.file("huge.png", png);
  std::string product = std::to_string(uint64_t(3537031890u) * uint64_t(3537031890u));
  std::string err = error_of([&] { read_image_header(p, 64 << 20); });
  CHECK(err.find("3537031890 x 3537031890 = " + product) != std::string::npos);
  CHECK(err.find("more than the limit") != std::string::npos);
  CHECK(error_of([&] { load_image(p, 64 << 20); }).find("more than the limit") != std::string::npos);
}

TEST_CASE("fuzz regression: model sizes from a checkpoint's metadata cannot exhaust memory or overflow") {
  // base_width 1e9 asked for a 36 GB tensor; 2^62 overflowed the int64 shape product.
  ModelOptions o;
  o.base_width = 1000000000, o.norm.groups = 1, o.classes = 2, o.in_channels = 1;
  CHECK(error_of([&] { make_model("unet-s", o); }).find("more than the limit") != std::string::npos);
  o.base_width = int64_t(1) << 62, o.depth = 8, o.norm.kind = "none";
  CHECK(error_of([&] { make_model("unet", o); }).find("more than the limit") != std::string::npos);
  o.base_width = 2, o.classes = int64_t(1) << 62, o.depth = 2;
  CHECK(error_of([&] { make_model("fcn", o); }).find("more than the limit") != std::string::npos);
  // Reasonable sizes still build, and bad depths keep their own message.
  o.classes = 3;
  CHECK(make_model("fcn", o)->num_parameters() > 0);
  o.depth = 9;
  CHECK(error_of([&] { make_model("unet", o); }).find("depth must be in") != std::string::npos);
}

TEST_CASE("fuzz regression: float values where the model configuration wants integers are refused") {
  // nlohmann cast 1e300 to int64 with undefined behaviour.
  nlohmann::json j = {{"model", "unet-s"}, {"norm", "gn"}, {"groups", 1e300}, {"classes", 2}, {"in_channels", 1}};
  std::string err = error_of([&] { ModelSpec::from_json(j, "ck.safetensors"); });
  CHECK(err.find("ck.safetensors") != std::string::npos);
  CHECK(err.find("\"groups\" must be an integer") != std::string::npos);
  j["groups"] = 1;
  j["base_width"] = 2.5;
  CHECK(error_of([&] { ModelSpec::from_json(j, "ck"); }).find("\"base_width\" must be an integer") != std::string::npos);
  j["base_width"] = 2;
  CHECK(ModelSpec::from_json(j, "ck").options.base_width == 2);
}

TEST_CASE("fuzz regression: a float class count in a folder's dataset.json is refused") {
  TempDir t;
  std::ofstream(t.path / "dataset.json") << R"({"classes": 1e300})";
  std::string err = error_of([&] { read_folder_info(t.path.string()); });
  CHECK(err.find("dataset.json") != std::string::npos);
  CHECK(err.find("\"classes\" must be an integer") != std::string::npos);
  std::ofstream(t.path / "dataset.json") << R"({"classes": 7})";
  CHECK(read_folder_info(t.path.string()).classes == 7);
}

TEST_CASE("fuzz regression: PNG IDAT sizes are checked before stb_image allocates for them") {
  // A 172-byte PNG whose IDAT claimed about 1 GiB made stb allocate that much before it found
  // the file short; compressed data far beyond the image's raw size is a decompression bomb.
  uint8_t px[16] = {};
  std::vector<uint8_t> png = encode_png(px, 4, 4, 1);
  size_t off = 8;
  while (std::memcmp(&png[off + 4], "IDAT", 4) != 0) off += 12 + be32(&png[off]);
  TempDir t;
  std::vector<uint8_t> claims = png;
  claims[off] = 0x3f, claims[off + 1] = 0xff, claims[off + 2] = 0xff, claims[off + 3] = 0xff;
  std::string err = error_of([&] { load_image(t.file("claims.png", claims), 1 << 20); });
  CHECK(err.find("an IDAT chunk claims 1073741823 bytes") != std::string::npos);
  // 64 KiB of compressed data for a 4 x 4 grey image: an extra IDAT chunk of zeros.
  std::vector<uint8_t> bomb = png;
  std::vector<uint8_t> chunk = {0x00, 0x01, 0x00, 0x00, 'I', 'D', 'A', 'T'};
  chunk.resize(chunk.size() + 65536 + 4, 0);
  bomb.insert(bomb.begin() + off, chunk.begin(), chunk.end());
  err = error_of([&] { load_index_mask(t.file("bomb.png", bomb), 1 << 20); });
  CHECK(err.find("bytes of compressed data for a 4 x 4 image") != std::string::npos);
  // The untouched file still loads.
  CHECK(load_index_mask(t.file("ok.png", png), 1 << 20).shape() == Shape{4, 4});
}

TEST_CASE("fuzz regression: a JPEG with an empty Huffman table segment decodes as without it") {
  // An empty DHT segment (length 2) made the table check memcpy into a null pointer.
  uint8_t rgb[8 * 8 * 3];
  for (int i = 0; i < 8 * 8 * 3; ++i) rgb[i] = static_cast<uint8_t>(i * 5);
  std::vector<uint8_t> jpg = encode_jpg(rgb, 8, 8, 3);
  std::vector<uint8_t> with_empty = jpg;
  const uint8_t empty_dht[4] = {0xFF, 0xC4, 0x00, 0x02};
  with_empty.insert(with_empty.begin() + 2, empty_dht, empty_dht + 4);  // right after SOI
  TempDir t;
  std::string p = t.file("empty_dht.jpg", with_empty);
  CHECK(read_image_header(p, 1 << 20).width == 8);
  Tensor a = load_image(t.file("plain.jpg", jpg), 1 << 20);
  Tensor b = load_image(p, 1 << 20);
  REQUIRE(b.shape() == a.shape());
  CHECK(std::memcmp(a.data(), b.data(), a.numel() * sizeof(float)) == 0);
}

TEST_CASE("fuzz regression: a bad Huffman table after the first scan is refused wherever it sits") {
  // After the entropy-coded data, where stb_image looks for the next marker depends on how much
  // of it the decoder consumed; the table check gave up at a segment running past the end of the
  // file, while stb could still reach a later table of 300 codes (which it then overflowed).
  uint8_t rgb[8 * 8 * 3];
  for (int i = 0; i < 8 * 8 * 3; ++i) rgb[i] = static_cast<uint8_t>(i * 7);
  std::vector<uint8_t> jpg = encode_jpg(rgb, 8, 8, 3);
  jpg.resize(jpg.size() - 2);                              // drop EOI
  jpg.insert(jpg.end(), {0xFF, 0xFE, 0x0F, 0xFF, 'x'});    // a comment claiming 4095 bytes
  jpg.insert(jpg.end(), {0xFF, 0xC4, 0x01, 0x3F, 0x00});   // DHT, length 319, table 0
  for (int i = 0; i < 16; ++i) jpg.push_back(i < 2 ? 150 : 0);
  jpg.resize(jpg.size() + 300, 0x01);
  TempDir t;
  std::string err = error_of([&] { load_image(t.file("late_dht.jpg", jpg), 1 << 20); });
  CHECK(err.find("Huffman") != std::string::npos);
  // A valid JPEG, baseline with its tables before the scan, is untouched by the check.
  CHECK(load_image(t.file("ok.jpg", encode_jpg(rgb, 8, 8, 3)), 1 << 20).shape() == Shape{3, 8, 8});
}

TEST_CASE("fuzz regression: a PNG ending in an empty IDAT chunk header is handled") {
  // The chunk walk needed 12 bytes per chunk, so an empty IDAT whose CRC was cut off escaped it,
  // and stb_image memcpy'd it into a null buffer.
  uint8_t px[16] = {1, 2, 3, 4};
  std::vector<uint8_t> png = encode_png(px, 4, 4, 1);
  png.resize(png.size() - 12);  // drop IEND
  png.insert(png.end(), {0, 0, 0, 0, 'I', 'D', 'A', 'T', 0x35, 0xAF});
  TempDir t;
  std::string p = t.file("cut.png", png);
  std::string err = error_of([&] { load_image(p, 1 << 20); });
  CHECK((err.empty() || err.find(p) != std::string::npos));
}

TEST_CASE("fuzz regression: a JPEG scan using a Huffman table no DHT defined decodes the same every time") {
  // stb_image 2.27 left its decoder state uninitialized, so such a table was whatever the heap
  // held: an out-of-bounds index one run, nothing the next. Its allocations are now zeroed.
  uint8_t rgb[16 * 16 * 3];
  for (int i = 0; i < 16 * 16 * 3; ++i) rgb[i] = static_cast<uint8_t>(i * 11);
  std::vector<uint8_t> jpg = encode_jpg(rgb, 16, 16, 3);
  size_t sos = 2;
  while (!(jpg[sos] == 0xFF && jpg[sos + 1] == 0xDA)) sos += 2 + ((jpg[sos + 2] << 8) | jpg[sos + 3]);
  jpg[sos + 6] = 0x33;  // the first component's DC and AC tables: 3, never defined
  TempDir t;
  std::string p = t.file("undefined_table.jpg", jpg);
  std::vector<std::string> outcomes;
  for (int run = 0; run < 3; ++run) {
    std::string out;
    try {
      Tensor img = load_image(p, 1 << 20);
      out.assign(reinterpret_cast<const char*>(img.data()), img.numel() * sizeof(float));
    } catch (const Error& e) {
      out = e.what();
    }
    // Churn the heap so that uninitialized memory would differ between runs.
    std::vector<std::vector<uint8_t>> noise;
    for (int k = 0; k < 64; ++k) noise.emplace_back(size_t(4096 + 997 * k), static_cast<uint8_t>(run * 37 + k));
    outcomes.push_back(out);
  }
  CHECK(outcomes[0] == outcomes[1]);
  CHECK(outcomes[1] == outcomes[2]);
}

TEST_CASE("fuzz regression: a tensors: mask label of INT64_MAX is refused without overflow") {
  // fuzz_safetensors (CI, 6 December 2026): inferring classes as the largest label + 1 overflowed.
  // The raw input is fuzz/corpus/fuzz_safetensors/regress_label_int64_max.safetensors.
  TempDir t;
  const std::string file = (t.path / "x.safetensors").string();
  auto write = [&](int64_t label) {
    TensorFile f;
    f.floats["images"] = Tensor::zeros({1, 1, 1, 2});
    IndexTensor m = IndexTensor::empty({1, 1, 2});
    m[0] = 0;
    m[1] = label;
    f.ints["masks"] = m;
    save_safetensors(file, f);
  };
  auto error_opening = [&](int64_t classes) {
    return error_of([&] { open_dataset("tensors:" + file, Split::Train, classes); });
  };
  write(std::numeric_limits<int64_t>::max());
  std::string e = error_opening(0);
  CHECK(e.find("x.safetensors") != std::string::npos);
  CHECK(e.find("too large") != std::string::npos);
  CHECK(e.find("--classes") != std::string::npos);
  CHECK(error_opening(3).find("labels must be in [0, 3)") != std::string::npos);
  write(std::numeric_limits<int64_t>::min());
  CHECK(error_opening(0).find("labels must be in [0, 1)") != std::string::npos);
  write(6);
  CHECK(error_opening(0).empty());
  CHECK(open_dataset("tensors:" + file, Split::Train, 0)->num_classes() == 7);
}
