// Datasets: decoding to exact indices (index PNGs, the VOC palette and Pets trimap fixtures), the
// folder:/voc:/pets: readers on layouts the tests write themselves, every bad input, transforms
// that keep image and mask aligned, loader reproducibility, the shapes set, and `smallbatch data`.
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>

#include "cli_util.h"
#include "core/io/safetensors.h"
#include "datasets/folder.h"
#include "datasets/image_io.h"
#include "datasets/shapes.h"
#include "datasets/transforms.h"
#include "tools/app/data_spec.h"
#include "temp_dir.h"

using namespace sb;
namespace fs = std::filesystem;

namespace {

struct TempDir : sbtest::TempDir {
  TempDir() : sbtest::TempDir("sb_datasets") {}
};

// Runs f and returns its sb::Error message ("" if it did not throw one).
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

#define CHECK_ERROR_HAS(expr, ...)                                        \
  do {                                                                    \
    std::string _msg = error_of([&] { (void)(expr); });                   \
    INFO("error message: " << _msg);                                      \
    CHECK(!_msg.empty());                                                 \
    for (const char* _part : {__VA_ARGS__}) CHECK(_msg.find(_part) != std::string::npos); \
  } while (0)

void write_bytes(const std::string& path, const std::vector<uint8_t>& b) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

// An RGB image whose pixel (y, x) is f(y, x, c), as bytes (H, W, 3).
std::vector<uint8_t> rgb_bytes(int64_t H, int64_t W, const std::function<uint8_t(int64_t, int64_t, int)>& f) {
  std::vector<uint8_t> px(H * W * 3);
  for (int64_t y = 0; y < H; ++y)
    for (int64_t x = 0; x < W; ++x)
      for (int c = 0; c < 3; ++c) px[(y * W + x) * 3 + c] = f(y, x, c);
  return px;
}

void write_rgb_png(const std::string& path, int64_t H, int64_t W, const std::function<uint8_t(int64_t, int64_t, int)>& f) {
  fs::create_directories(fs::path(path).parent_path());
  auto px = rgb_bytes(H, W, f);
  write_png(path, px.data(), W, H, 3);
}

void write_rgb_jpg(const std::string& path, int64_t H, int64_t W) {
  fs::create_directories(fs::path(path).parent_path());
  auto px = rgb_bytes(H, W, [](int64_t y, int64_t x, int c) { return uint8_t(40 + 20 * c + 3 * y + 2 * x); });
  write_jpg(path, px.data(), W, H, 3);
}

void write_mask_png(const std::string& path, int64_t H, int64_t W, const std::function<uint8_t(int64_t, int64_t)>& f) {
  fs::create_directories(fs::path(path).parent_path());
  std::vector<uint8_t> px(H * W);
  for (int64_t y = 0; y < H; ++y)
    for (int64_t x = 0; x < W; ++x) px[y * W + x] = f(y, x);
  write_png(path, px.data(), W, H, 1);
}

uint8_t label_at(int64_t y, int64_t x) { return static_cast<uint8_t>((y + 2 * x) % 4); }

// A folder: layout with `n` good samples per split: image pixel = 10 * label + 20 * channel.
void make_folder(const fs::path& root, int n, int64_t H = 6, int64_t W = 5, const std::string& split = "train") {
  for (int i = 0; i < n; ++i) {
    std::string stem = str("s", i);  // not "s" + to_string(i): GCC 12 warns falsely (-Wrestrict)
    write_rgb_png((root / split / "images" / (stem + ".png")).string(), H, W,
                  [&](int64_t y, int64_t x, int c) { return uint8_t(10 * label_at(y, x) + 20 * c + i); });
    write_mask_png((root / split / "masks" / (stem + ".png")).string(), H, W, label_at);
  }
}

bool same(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), a.numel() * sizeof(float)) == 0;
}
bool same(const IndexTensor& a, const IndexTensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), a.numel() * sizeof(int64_t)) == 0;
}

std::vector<int64_t> values(const IndexTensor& t) { return std::vector<int64_t>(t.begin(), t.end()); }

std::string fixture(const std::string& name) { return std::string(SB_FIXTURES_DIR) + "/" + name; }

using sbtest::CliResult;
using sbtest::run_cli;

const std::vector<int64_t> kVocIndices = {0, 0, 1, 1, 15, 15, 0, 255, 1, 20, 15, 15,
                                          2, 2, 255, 20, 20, 0, 3, 4, 5, 6, 7, 8};

}  // namespace

TEST_CASE("datasets: the VOC colour map and its inverse") {
  CHECK(voc_color(0) == std::array<uint8_t, 3>{0, 0, 0});
  CHECK(voc_color(1) == std::array<uint8_t, 3>{128, 0, 0});
  CHECK(voc_color(15) == std::array<uint8_t, 3>{192, 128, 128});
  CHECK(voc_color(20) == std::array<uint8_t, 3>{0, 64, 128});
  CHECK(voc_color(255) == std::array<uint8_t, 3>{224, 224, 192});
  for (int i = 0; i < 256; ++i) {
    auto c = voc_color(i);
    CHECK(voc_index(c[0], c[1], c[2]) == i);
  }
  CHECK(voc_index(1, 2, 3) == -1);
  CHECK(voc_index(255, 255, 255) == -1);
}

TEST_CASE("datasets: images decode to RGB floats in [0, 1] from grey, RGB, RGBA PNG and JPEG") {
  TempDir t;
  // RGB: exact.
  write_rgb_png(t / "rgb.png", 3, 4, [](int64_t y, int64_t x, int c) { return uint8_t(y * 50 + x * 10 + c); });
  Tensor rgb = load_image(t / "rgb.png", 0);
  REQUIRE(rgb.shape() == Shape{3, 3, 4});
  CHECK(rgb.at({2, 1, 3}) == doctest::Approx((50 + 30 + 2) / 255.0).epsilon(1e-6));
  CHECK(rgb.at({0, 2, 0}) == doctest::Approx(100 / 255.0).epsilon(1e-6));
  // Grey: repeated to three channels.
  std::vector<uint8_t> grey = {0, 255, 128, 7};
  write_png(t / "grey.png", grey.data(), 2, 2, 1);
  Tensor g = load_image(t / "grey.png", 0);
  REQUIRE(g.shape() == Shape{3, 2, 2});
  for (int c = 0; c < 3; ++c) {
    CHECK(g.at({c, 0, 1}) == 1.f);
    CHECK(g.at({c, 1, 1}) == doctest::Approx(7 / 255.0));
  }
  // RGBA: alpha dropped, colour kept as is.
  std::vector<uint8_t> rgba = {10, 20, 30, 0, 40, 50, 60, 255};
  write_png(t / "rgba.png", rgba.data(), 2, 1, 4);
  Tensor a = load_image(t / "rgba.png", 0);
  REQUIRE(a.shape() == Shape{3, 1, 2});
  CHECK(std::lround(a.at({2, 0, 0}) * 255) == 30);
  CHECK(std::lround(a.at({0, 0, 1}) * 255) == 40);
  // JPEG: lossy, so close.
  write_rgb_jpg(t / "img.jpg", 16, 16);
  Tensor j = load_image(t / "img.jpg", 0);
  REQUIRE(j.shape() == Shape{3, 16, 16});
  CHECK(std::fabs(j.at({1, 5, 7}) * 255 - (40 + 20 + 15 + 14)) < 6);
  // The header is read without decoding.
  ImageHeader h = read_image_header(t / "rgba.png", 0);
  CHECK(h.width == 2);
  CHECK(h.height == 1);
  CHECK(h.channels == 4);
}

TEST_CASE("datasets: single-channel masks decode to the exact indices") {
  TempDir t;
  write_mask_png(t / "m.png", 3, 5, [](int64_t y, int64_t x) { return uint8_t(y == 2 && x == 4 ? 255 : y * 5 + x); });
  IndexTensor m = load_index_mask(t / "m.png", 0);
  REQUIRE(m.shape() == Shape{3, 5});
  for (int64_t p = 0; p < 14; ++p) CHECK(m[p] == p);
  CHECK(m[14] == 255);
  // An RGB mask whose channels agree is read as grey; a colour one is refused, naming the pixel.
  write_rgb_png(t / "greyish.png", 2, 2, [](int64_t y, int64_t x, int) { return uint8_t(y * 2 + x); });
  CHECK(values(load_index_mask(t / "greyish.png", 0)) == std::vector<int64_t>{0, 1, 2, 3});
  write_rgb_png(t / "colour.png", 2, 2, [](int64_t y, int64_t x, int c) { return uint8_t(y == 1 && x == 0 && c == 1 ? 9 : 1); });
  CHECK_ERROR_HAS(load_index_mask(t / "colour.png", 0), "colour.png", "single-channel", "(1, 0)", "(1, 9, 1)");
}

TEST_CASE("datasets: the VOC palette fixture decodes to its indices, 255 for the boundary") {
  IndexTensor m = load_voc_mask(fixture("voc_mask.png"), 0);
  REQUIRE(m.shape() == Shape{4, 6});
  CHECK(values(m) == kVocIndices);
  IndexTensor checked = load_mask(fixture("voc_mask.png"), MaskEncoding::VocColors, 21, 0);
  CHECK(values(checked) == kVocIndices);
  // A palette colour outside the VOC map is an error naming the file, the pixel and the colour.
  CHECK_ERROR_HAS(load_voc_mask(fixture("voc_mask_bad_colour.png"), 0), "voc_mask_bad_colour.png", "(3, 2)",
                  "(1, 2, 3)", "not in the VOC colour map");
  // A VOC colour that is not one of the 21 classes (index 30) names the colour and the index.
  TempDir t;
  auto c30 = voc_color(30);
  write_rgb_png(t / "m30.png", 1, 2, [&](int64_t, int64_t x, int c) { return x ? c30[c] : uint8_t(0); });
  CHECK_ERROR_HAS(load_mask(t / "m30.png", MaskEncoding::VocColors, 21, 0), "m30.png", "VOC index 30", "(0, 1)");
}

TEST_CASE("datasets: the Pets trimap fixture: border ignored or a class of its own") {
  std::vector<int64_t> ignore = {0, 0, 0, 0, 0, 0, 255, 255, 255, 0, 0, 255, 1, 255, 0, 0, 255, 1, 1, 255};
  CHECK(values(load_mask(fixture("pets_trimap.png"), MaskEncoding::PetsTrimap, 2, 0)) == ignore);
  std::vector<int64_t> border = ignore;
  for (auto& v : border) v = v == 255 ? 2 : v;
  CHECK(values(load_mask(fixture("pets_trimap.png"), MaskEncoding::PetsTrimapBorder, 3, 0)) == border);
  // Values other than 1, 2, 3 are not a trimap.
  TempDir t;
  write_mask_png(t / "tri.png", 1, 3, [](int64_t, int64_t x) { return uint8_t(x == 2 ? 0 : 1); });
  CHECK_ERROR_HAS(load_mask(t / "tri.png", MaskEncoding::PetsTrimap, 2, 0), "tri.png", "trimap value 0", "(0, 2)");
}

TEST_CASE("datasets: folder: reads images and masks matched by stem, in name order") {
  TempDir t;
  make_folder(t.path, 3);
  // A JPEG image with its PNG mask joins them; hidden files are ignored.
  write_rgb_jpg(t / "train/images/a_jpeg.jpg", 6, 5);
  write_mask_png(t / "train/masks/a_jpeg.png", 6, 5, label_at);
  write_bytes(t / "train/images/.hidden.png", {1, 2, 3});
  DatasetPtr d = open_dataset("folder:" + t.path.string(), Split::Train, 4);
  REQUIRE(d->size() == 4);
  CHECK(d->num_classes() == 4);
  CHECK(sample_name(*d, 0).find("a_jpeg.jpg") != std::string::npos);
  Sample s = d->get(2);  // s1
  REQUIRE(s.image.shape() == Shape{3, 6, 5});
  REQUIRE(s.mask.shape() == Shape{6, 5});
  for (int64_t y = 0; y < 6; ++y)
    for (int64_t x = 0; x < 5; ++x) {
      CHECK(s.mask.at({y, x}) == label_at(y, x));
      CHECK(s.image.at({2, y, x}) == doctest::Approx((10 * label_at(y, x) + 40 + 1) / 255.0).epsilon(1e-6));
    }
  // Classes: from dataset.json when not given, else the largest label + 1.
  CHECK(open_dataset("folder:" + t.path.string(), Split::Train, 0)->num_classes() == 4);
  FolderInfo info;
  info.classes = 6;
  write_folder_info(t.path.string(), info);
  CHECK(open_dataset("folder:" + t.path.string(), Split::Train, 0)->num_classes() == 6);
  // --limit keeps the first samples.
  DataOptions opt;
  opt.limit = 2;
  CHECK(open_dataset("folder:" + t.path.string(), Split::Train, 4, opt)->size() == 2);
}

TEST_CASE("datasets: voc: reads a VOC2012 layout (also inside VOCdevkit) with the palette fixture") {
  TempDir t;
  fs::path root = t.path / "VOCdevkit" / "VOC2012";
  write_rgb_jpg((root / "JPEGImages" / "2007_000001.jpg").string(), 4, 6);
  fs::create_directories(root / "SegmentationClass");
  fs::copy_file(fixture("voc_mask.png"), root / "SegmentationClass" / "2007_000001.png");
  fs::create_directories(root / "ImageSets" / "Segmentation");
  std::ofstream(root / "ImageSets" / "Segmentation" / "train.txt") << "2007_000001\n\n";
  std::ofstream(root / "ImageSets" / "Segmentation" / "val.txt") << "2007_000001\n2007_000002\n";
  for (fs::path dir : {root, t.path}) {
    DatasetPtr d = open_dataset("voc:" + dir.string(), Split::Train, 0);
    CHECK(d->num_classes() == 21);
    REQUIRE(d->size() == 1);
    Sample s = d->get(0);
    CHECK(s.image.shape() == Shape{3, 4, 6});
    CHECK(values(s.mask) == kVocIndices);
  }
  // The val list names a file that does not exist: the error names it and the list line.
  CHECK_ERROR_HAS(open_dataset("voc:" + root.string(), Split::Val, 0), "2007_000002.jpg", "does not exist",
                  "line 2", "val.txt");
  // ... and --skip-bad leaves it out, counted.
  DataOptions skip;
  skip.skip_bad = true;
  DatasetPtr v = open_dataset("voc:" + root.string(), Split::Val, 0, skip);
  CHECK(v->size() == 1);
  CHECK(skipped_samples(*v).size() == 1);
  CHECK_ERROR_HAS(open_dataset("voc:" + root.string(), Split::Train, 5), "21 classes");
  CHECK_ERROR_HAS(open_dataset("voc:" + (t / "nothing"), Split::Train, 0), "nothing", "not a directory");
}

TEST_CASE("datasets: pets: trainval for train, test for val, border as ignore or class") {
  TempDir t;
  write_rgb_jpg(t / "images/Abyssinian_1.jpg", 4, 5);
  fs::create_directories(t.path / "annotations" / "trimaps");
  fs::copy_file(fixture("pets_trimap.png"), t.path / "annotations" / "trimaps" / "Abyssinian_1.png");
  std::ofstream(t.path / "annotations" / "trainval.txt") << "Abyssinian_1 1 1 1\n";
  std::ofstream(t.path / "annotations" / "test.txt") << "#Image CLASS-ID SPECIES BREED ID\n";
  DatasetPtr d = open_dataset("pets:" + t.path.string(), Split::Train, 0);
  CHECK(d->num_classes() == 2);
  REQUIRE(d->size() == 1);
  Sample s = d->get(0);
  CHECK(s.mask.at({2, 2}) == 1);
  CHECK(s.mask.at({1, 1}) == 255);
  CHECK(s.mask.at({0, 0}) == 0);
  DataOptions border;
  border.pets_border = "class";
  DatasetPtr b = open_dataset("pets:" + t.path.string(), Split::Train, 0, border);
  CHECK(b->num_classes() == 3);
  CHECK(b->get(0).mask.at({1, 1}) == 2);
  // test.txt holds only a comment: the val split is empty, which is an error.
  CHECK_ERROR_HAS(open_dataset("pets:" + t.path.string(), Split::Val, 0), "empty", "test.txt");
  border.pets_border = "maybe";
  CHECK_ERROR_HAS(open_dataset("pets:" + t.path.string(), Split::Train, 0, border), "--pets-border", "maybe");
}

TEST_CASE("datasets: every bad input is a clear error naming the file") {
  TempDir t;
  const std::string spec = "folder:" + t.path.string();
  auto reset = [&] {
    fs::remove_all(t.path / "train");
    make_folder(t.path, 2);
  };
  auto img = [&](const std::string& stem) { return t / ("train/images/" + stem + ".png"); };
  auto mask = [&](const std::string& stem) { return t / ("train/masks/" + stem + ".png"); };
  auto good_png = encode_png(rgb_bytes(6, 5, [](int64_t, int64_t, int) { return uint8_t(9); }).data(), 5, 6, 3);

  SUBCASE("truncated PNG: the header is fine, decoding fails in get()") {
    reset();
    std::vector<uint8_t> cut(good_png.begin(), good_png.begin() + good_png.size() / 2);
    write_bytes(img("s1"), cut);
    DatasetPtr d = open_dataset(spec, Split::Train, 4);
    CHECK_ERROR_HAS(d->get(1), "s1.png", "corrupt or truncated");
  }
  SUBCASE("truncated JPEG") {
    reset();
    fs::remove(img("s1"));
    write_rgb_jpg(t / "train/images/s1.jpg", 6, 5);
    auto full = encode_jpg(rgb_bytes(6, 5, [](int64_t y, int64_t, int) { return uint8_t(30 * y); }).data(), 5, 6, 3);
    write_bytes(t / "train/images/s1.jpg", std::vector<uint8_t>(full.begin(), full.end() - full.size() / 3));
    DatasetPtr d = open_dataset(spec, Split::Train, 4);
    CHECK_ERROR_HAS(d->get(1), "s1.jpg", "corrupt or truncated");
  }
  SUBCASE("garbage bytes") {
    reset();
    write_bytes(img("s0"), std::vector<uint8_t>(100, 0x42));
    CHECK_ERROR_HAS(open_dataset(spec, Split::Train, 4), "s0.png", "not a PNG, JPEG or BMP");
  }
  SUBCASE("zero-byte file") {
    reset();
    write_bytes(mask("s1"), {});
    CHECK_ERROR_HAS(open_dataset(spec, Split::Train, 4), "s1.png", "empty file (0 bytes)");
  }
  SUBCASE("a PNG header claiming 100000 x 100000 is refused before decoding") {
    reset();
    std::vector<uint8_t> huge = good_png;  // IHDR width and height are big-endian at bytes 16..23
    for (int k : {16, 20}) huge[k] = 0, huge[k + 1] = 0x01, huge[k + 2] = 0x86, huge[k + 3] = 0xA0;
    write_bytes(img("s0"), huge);
    CHECK_ERROR_HAS(open_dataset(spec, Split::Train, 4), "s0.png", "100000 x 100000", "limit");
    CHECK_ERROR_HAS(load_image(img("s0"), 64 << 20), "s0.png", "10000000000 pixels");
  }
  SUBCASE("image and mask of different sizes") {
    reset();
    write_mask_png(mask("s1"), 5, 5, label_at);
    CHECK_ERROR_HAS(open_dataset(spec, Split::Train, 4), "s1.png", "5 x 6", "5 x 5");
  }
  SUBCASE("a label that is neither below the class count nor 255") {
    reset();
    write_mask_png(mask("s1"), 6, 5, [](int64_t y, int64_t x) { return uint8_t(y == 3 && x == 1 ? 7 : 0); });
    DatasetPtr d = open_dataset(spec, Split::Train, 4);
    CHECK_ERROR_HAS(d->get(1), "s1.png", "label 7", "(3, 1)", "[0, 4)");
  }
  SUBCASE("a missing mask") {
    reset();
    fs::remove(mask("s0"));
    CHECK_ERROR_HAS(open_dataset(spec, Split::Train, 4), "s0.png", "missing mask");
  }
  SUBCASE("an empty dataset") {
    fs::create_directories(t.path / "train" / "images");
    fs::create_directories(t.path / "train" / "masks");
    CHECK_ERROR_HAS(open_dataset(spec, Split::Train, 4), "no images", "images");
  }
  SUBCASE("a missing layout") {
    CHECK_ERROR_HAS(open_dataset(spec, Split::Val, 4), "val", "not a directory", "matched by file stem");
  }
  SUBCASE("--skip-bad leaves bad samples out, counts and reports them") {
    make_folder(t.path, 6);
    std::vector<uint8_t> cut(good_png.begin(), good_png.begin() + good_png.size() / 2);
    write_bytes(img("s1"), cut);                                                    // truncated
    write_bytes(mask("s2"), {});                                                    // empty
    write_mask_png(mask("s3"), 6, 5, [](int64_t, int64_t) { return uint8_t(9); });  // label 9 >= 4
    fs::remove(mask("s4"));                                                         // missing
    DataOptions opt;
    opt.skip_bad = true;
    DatasetPtr d = open_dataset(spec, Split::Train, 4, opt);
    REQUIRE(d->size() == 2);
    CHECK(sample_name(*d, 0).find("s0.png") != std::string::npos);
    CHECK(sample_name(*d, 1).find("s5.png") != std::string::npos);
    auto skipped = skipped_samples(*d);
    REQUIRE(skipped.size() == 4);
    CHECK(skipped[0].reason.find("corrupt or truncated") != std::string::npos);
    CHECK(skipped[2].reason.find("label 9") != std::string::npos);
    std::string report = skip_report(*d);
    CHECK(report.find("skipped 4 bad samples") != std::string::npos);
    CHECK(report.find("s4.png") != std::string::npos);
    // --limit counts good samples; when every sample is bad, it is an error.
    opt.limit = 1;
    CHECK(open_dataset(spec, Split::Train, 4, opt)->size() == 1);
    for (int i : {0, 5}) fs::remove(mask(str("s", i)));
    opt.limit = 0;
    CHECK_ERROR_HAS(open_dataset(spec, Split::Train, 4, opt), "all 6 samples are bad");
  }
}

TEST_CASE("datasets: a JPEG Huffman table with more than 256 codes is refused before stb_image parses it") {
  // stb_image 2.27 (Debian 12) writes past its arrays on such a table (found by fuzzing under
  // UBSan); upstream fixed it in 2.28. The table must be refused by our own check, naming the file.
  TempDir t;
  auto px = rgb_bytes(8, 8, [](int64_t y, int64_t x, int c) { return uint8_t(y * 20 + x * 3 + c); });
  auto jpg = encode_jpg(px.data(), 8, 8, 3);
  size_t dht = 0;
  for (size_t i = 0; i + 1 < jpg.size(); ++i)
    if (jpg[i] == 0xFF && jpg[i + 1] == 0xC4) {
      dht = i;
      break;
    }
  REQUIRE(dht > 0);
  auto bad = jpg;
  bad[dht + 5 + 11] = 0xEF;  // the first table's count of 12-bit codes: now far over 256 in total
  write_bytes(t / "bad.jpg", bad);
  // stb_image_write puts the tables after the frame header, which is all stbi_info reads: the
  // header is fine, decoding is refused.
  CHECK(read_image_header(t / "bad.jpg", 0).width == 8);
  CHECK_ERROR_HAS(load_image(t / "bad.jpg", 0), "bad.jpg", "Huffman table");
  // Moved before the frame header (as many encoders write it), the header check refuses it too.
  size_t sof = 0;
  for (size_t i = 0; i + 1 < bad.size(); ++i)
    if (bad[i] == 0xFF && bad[i + 1] == 0xC0) {
      sof = i;
      break;
    }
  REQUIRE((sof > 0 && sof < dht));
  size_t dht_len = 2 + (size_t(bad[dht + 2]) << 8 | bad[dht + 3]);
  std::vector<uint8_t> moved(bad.begin(), bad.begin() + sof);
  moved.insert(moved.end(), bad.begin() + dht, bad.begin() + dht + dht_len);
  moved.insert(moved.end(), bad.begin() + sof, bad.begin() + dht);
  moved.insert(moved.end(), bad.begin() + dht + dht_len, bad.end());
  write_bytes(t / "early.jpg", moved);
  CHECK_ERROR_HAS(read_image_header(t / "early.jpg", 0), "early.jpg", "Huffman table");
  // Cut off inside the table: also refused (stb would parse it reading zeros).
  write_bytes(t / "cut.jpg", std::vector<uint8_t>(jpg.begin(), jpg.begin() + dht + 30));
  CHECK_ERROR_HAS(load_image(t / "cut.jpg", 0), "cut.jpg", "Huffman table");
  write_bytes(t / "good.jpg", jpg);
  CHECK(load_image(t / "good.jpg", 0).shape() == Shape{3, 8, 8});
}

TEST_CASE("datasets: resizing: identity, bilinear with half-pixel centres, antialiased shrink, nearest masks") {
  Tensor img = Tensor::from({1, 2, 2}, {0.f, 1.f, 2.f, 3.f});
  CHECK(same(resize_bilinear(img, 2, 2), img));
  // Upsampling 2x2 -> 4x4 as PyTorch's bilinear with align_corners=False: rows of the first
  // column are 0, 0.5, 1.5, 2 (edges clamp), columns of the first row 0, 0.25, 0.75, 1.
  Tensor up = resize_bilinear(img, 4, 4);
  std::vector<float> want = {0, .25f, .75f, 1, .5f, .75f, 1.25f, 1.5f, 1.5f, 1.75f, 2.25f, 2.5f, 2, 2.25f, 2.75f, 3};
  for (int i = 0; i < 16; ++i) CHECK(up[i] == doctest::Approx(want[i]));
  // Shrinking 4x: every input pixel counts. Columns 0 and 4 of 8 are 1, the rest 0; plain
  // bilinear would sample between columns 1-2 and 5-6 and see only zeros, the widened triangle
  // sees the ones (weights 0.625 + 0.375 of 3.5, and 0.625 of 3.5 at the clipped border).
  Tensor stripes = Tensor::empty({1, 8, 8});
  for (int64_t i = 0; i < 64; ++i) stripes[i] = static_cast<float>(i % 4 == 0);
  Tensor small = resize_bilinear(stripes, 2, 2);
  CHECK(small[0] == doctest::Approx(1.0 / 3.5));
  CHECK(small[1] == doctest::Approx(0.625 / 3.5));
  CHECK(small[2] == doctest::Approx(1.0 / 3.5));
  // Nearest: the input pixel containing the output pixel's centre.
  IndexTensor m = IndexTensor::from({1, 4}, {0, 1, 2, 3});
  CHECK(values(resize_nearest(m, 1, 2)) == std::vector<int64_t>{1, 3});
  CHECK(values(resize_nearest(m, 1, 8)) == std::vector<int64_t>{0, 0, 1, 1, 2, 2, 3, 3});
  // Evaluation resize: the shorter side to S, then the centred crop.
  Sample s{Tensor::zeros({3, 10, 20}), IndexTensor::zeros({10, 20})};
  for (int64_t x = 0; x < 20; ++x) s.mask[5 * 20 + x] = x;
  Sample r = resize_center_crop(s, 5);
  CHECK(r.image.shape() == Shape{3, 5, 5});
  CHECK(values(r.mask).size() == 25);
  CHECK(r.mask.at({2, 0}) == 5);  // the centre columns 5..14 of the 20 survive, at half resolution
  CHECK(r.mask.at({2, 4}) == 13);
}

TEST_CASE("datasets: augmentation keeps image and mask aligned") {
  // Each 8x8 block has a random label; the image encodes the label as a point on a circle in
  // channels 0 and 1. A blend of different labels falls inside the circle, so every output pixel
  // still on the circle is unblended and must decode to its mask label.
  const int64_t H = 40, W = 56, K = 8;  // K x K blocks
  Generator g(7);
  Sample s{Tensor::empty({3, H, W}), IndexTensor::empty({H, W})};
  std::vector<int64_t> block((H / K) * (W / K));
  for (auto& b : block) b = static_cast<int64_t>(g.below(5));
  const float kTwoPi = 6.2831853f;
  for (int64_t y = 0; y < H; ++y)
    for (int64_t x = 0; x < W; ++x) {
      int64_t l = block[(y / K) * (W / K) + x / K];
      s.mask[y * W + x] = l;
      s.image[y * W + x] = 0.5f + 0.4f * std::cos(kTwoPi * l / 5);
      s.image[H * W + y * W + x] = 0.5f + 0.4f * std::sin(kTwoPi * l / 5);
      s.image[2 * H * W + y * W + x] = 0.5f;
    }
  TransformOptions o;
  o.image_size = 32;
  o.augment = true;
  o.aug.brightness = o.aug.contrast = o.aug.saturation = 0;  // colour jitter would move the circle
  o.normalize = false;
  SampleTransform tf = build_transform(o);
  // Returns the fraction of labelled pixels that are unblended and agree with the mask, and
  // counts disagreements.
  auto check = [&](const Sample& out, int64_t& wrong, int64_t& pad_wrong) {
    const int64_t n = out.mask.numel();
    int64_t pure = 0, labelled = 0;
    for (int64_t p = 0; p < n; ++p) {
      float a = out.image[p] - 0.5f, b = out.image[n + p] - 0.5f;
      if (out.mask[p] == 255) {
        pad_wrong += out.image[p] != o.mean[0] || out.image[n + p] != o.mean[1];
        continue;
      }
      ++labelled;
      if (std::fabs(std::sqrt(a * a + b * b) - 0.4f) > 1e-4f) continue;
      ++pure;
      float ang = std::atan2(b, a);
      int64_t l = (std::lround(ang / (kTwoPi / 5)) + 5) % 5;
      wrong += l != out.mask[p];
    }
    return labelled ? static_cast<double>(pure) / static_cast<double>(labelled) : 1.0;
  };
  int64_t wrong = 0, pad_wrong = 0, padded = 0, differs = 0;
  double min_pure = 1, sum_pure = 0;
  for (uint64_t seed = 0; seed < 40; ++seed) {
    Generator gen(seed);
    Sample out = tf(s, gen);
    REQUIRE(out.image.shape() == Shape{3, 32, 32});
    REQUIRE(out.mask.shape() == Shape{32, 32});
    for (int64_t v : out.mask) padded += v == 255;
    double pure = check(out, wrong, pad_wrong);
    min_pure = std::min(min_pure, pure), sum_pure += pure;
    Generator other(seed + 1000);
    differs += !same(out.mask, tf(s, other).mask);
  }
  CHECK(wrong == 0);
  CHECK(pad_wrong == 0);
  CHECK(padded > 0);        // some draws shrink below 32 and pad
  CHECK(min_pure > 0.1);       // the check sees part of every image (less when shrunk: more blending)
  CHECK(sum_pure / 40 > 0.3);  // and a good part on average
  CHECK(differs > 30);  // the draws vary
  // The check does catch a misalignment: flip the image but not the mask.
  Generator gen(3);
  Sample out = tf(s, gen);
  Sample bad{hflip(out).image, out.mask};
  int64_t bad_wrong = 0, ignore = 0;
  check(bad, bad_wrong, ignore);
  CHECK(bad_wrong > 20);
}

TEST_CASE("datasets: colour jitter and normalization touch the image only, deterministically") {
  Sample s = generate_shapes(ShapesOptions{}, true, 0);
  Tensor a = s.image.clone(), b = s.image.clone();
  Generator g1(5), g2(5);
  color_jitter(a, 0.3f, 0.3f, 0.3f, g1);
  color_jitter(b, 0.3f, 0.3f, 0.3f, g2);
  CHECK(same(a, b));
  CHECK(!same(a, s.image));
  CHECK(std::all_of(a.begin(), a.end(), [](float v) { return v >= 0.f && v <= 1.f; }));
  Tensor n = s.image.clone();
  normalize(n, {0.5f, 0.25f, 0.f}, {0.5f, 0.25f, 2.f});
  CHECK(n[0] == doctest::Approx((s.image[0] - 0.5f) / 0.5f));
  int64_t HW = 64 * 64;
  CHECK(n[2 * HW + 9] == doctest::Approx(s.image[2 * HW + 9] / 2.f));
  // The loader transform normalizes the shapes set to roughly zero mean and unit variance.
  SampleTransform tf = make_transform("shapes", Split::Val, {});
  Generator g(0);
  double sum = 0, sum2 = 0;
  int64_t count = 0;
  for (int i = 0; i < 20; ++i) {
    Sample t = tf(generate_shapes(ShapesOptions{}, false, i), g);
    for (float v : t.image) sum += v, sum2 += v * v, ++count;
  }
  double mean = sum / count, var = sum2 / count - mean * mean;
  CHECK(std::fabs(mean) < 0.15);
  CHECK(std::fabs(var - 1) < 0.2);
}

TEST_CASE("datasets: shuffling is reproducible from the seed") {
  CHECK(epoch_order(50, true, 3, 0) == epoch_order(50, true, 3, 0));
  CHECK(epoch_order(50, true, 3, 0) != epoch_order(50, true, 4, 0));
  CHECK(epoch_order(50, true, 3, 0) != epoch_order(50, true, 3, 1));
  auto o = epoch_order(50, true, 3, 2);
  std::sort(o.begin(), o.end());
  CHECK(o == epoch_order(50, false, 3, 2));  // a permutation
  auto indices = [](uint64_t seed) {
    LoaderOptions lo;
    lo.batch_size = 4, lo.seed = seed, lo.workers = 1;
    DataLoader l(open_dataset("shapes:train=10,size=16", Split::Train, 0), lo);
    std::vector<int64_t> all;
    for (int64_t e = 0; e < 2; ++e) {
      l.start_epoch(e);
      Batch b;
      while (l.next(b)) all.insert(all.end(), b.indices.begin(), b.indices.end());
    }
    return all;
  };
  CHECK(indices(11) == indices(11));
  CHECK(indices(11) != indices(12));
}

TEST_CASE("datasets: loader batches, with augmentation, do not depend on the number of workers") {
  DataOptions opt;
  opt.augment = true;
  const std::string spec = "shapes:train=22,size=32";
  auto run = [&](int workers) {
    LoaderOptions lo;
    lo.batch_size = 4, lo.seed = 9, lo.workers = workers, lo.prefetch = 2;
    lo.transform = make_transform(spec, Split::Train, opt);
    DataLoader l(open_dataset(spec, Split::Train, 0, opt), lo);
    std::vector<Batch> out;
    Batch b;
    for (int64_t e = 0; e < 2; ++e) {
      l.start_epoch(e);
      while (l.next(b)) out.push_back(b);
    }
    l.start_steps(2, 4);  // a --steps stream (steps 2..5) that wraps past the end of epoch 0
    while (l.next(b)) out.push_back(b);
    return out;
  };
  auto ref = run(0);
  REQUIRE(ref.size() == 6 + 6 + 4);
  CHECK(!same(ref[0].images, ref[1].images));
  for (int w : {1, 3}) {
    CAPTURE(w);
    auto other = run(w);
    REQUIRE(other.size() == ref.size());
    for (size_t i = 0; i < ref.size(); ++i) {
      CHECK(other[i].indices == ref[i].indices);
      CHECK(same(other[i].images, ref[i].images));
      CHECK(same(other[i].masks, ref[i].masks));
    }
  }
  // The --steps stream is the epochs' batches end to end, augmentation included: step 5 (stream
  // positions 20..23 of 22 per epoch) is the last two samples of epoch 0, then the first two of
  // epoch 1, each augmented with its own epoch's draws.
  const Batch &last0 = ref[5], &first1 = ref[6], &straddle = ref[15];
  REQUIRE(last0.indices.size() == 2);
  int64_t n1 = last0.images.numel() / 2, m1 = last0.masks.numel() / 2;
  CHECK(std::vector<int64_t>(straddle.indices.begin(), straddle.indices.begin() + 2) == last0.indices);
  CHECK(std::vector<int64_t>(straddle.indices.begin() + 2, straddle.indices.end()) ==
        std::vector<int64_t>(first1.indices.begin(), first1.indices.begin() + 2));
  CHECK(std::memcmp(straddle.images.data(), last0.images.data(), 2 * n1 * sizeof(float)) == 0);
  CHECK(std::memcmp(straddle.images.data() + 2 * n1, first1.images.data(), 2 * n1 * sizeof(float)) == 0);
  CHECK(std::memcmp(straddle.masks.data(), last0.masks.data(), 2 * m1 * sizeof(int64_t)) == 0);
  // The same sample in two epochs is augmented differently.
  const Batch& e0 = ref[0];
  int64_t idx = e0.indices[0];
  for (size_t i = 6; i < 12; ++i)
    for (size_t k = 0; k < ref[i].indices.size(); ++k)
      if (ref[i].indices[k] == idx) {
        int64_t n = e0.images.numel() / e0.images.size(0);
        CHECK(std::memcmp(e0.images.data(), ref[i].images.data() + k * n, n * sizeof(float)) != 0);
      }
}

TEST_CASE("datasets: shapes samples are deterministic, train and val disjoint, every class present") {
  ShapesOptions o;
  o.size = 48;
  ShapesDataset train(o, true), train2(o, true), val(o, false);
  CHECK(train.size() == 2000);
  CHECK(val.size() == 200);
  CHECK(train.num_classes() == 5);
  std::set<std::vector<int64_t>> train_masks;
  std::vector<int64_t> freq(5, 0);
  for (int64_t i = 0; i < 40; ++i) {
    Sample a = train.get(i), b = train2.get(i);
    REQUIRE(a.image.shape() == Shape{3, 48, 48});
    CHECK(same(a.image, b.image));
    CHECK(same(a.mask, b.mask));
    train_masks.insert(values(a.mask));
    REQUIRE(std::all_of(a.mask.begin(), a.mask.end(), [](int64_t v) { return v >= 0 && v < 5; }));
    for (int64_t v : a.mask) ++freq[v];
    REQUIRE(std::all_of(a.image.begin(), a.image.end(), [](float v) { return v >= 0.f && v <= 1.f; }));
  }
  CHECK(train_masks.size() == 40);
  for (int64_t i = 0; i < 40; ++i) CHECK(train_masks.count(values(val.get(i).mask)) == 0);
  for (int k = 1; k < 5; ++k) CHECK(freq[k] > 0);
  // The seed and difficulty change the scenes; the limit caps them.
  ShapesOptions o2 = o;
  o2.seed = 1;
  CHECK(!same(generate_shapes(o, true, 3).image, generate_shapes(o2, true, 3).image));
  ShapesOptions easy = o;
  easy.difficulty = 0;
  CHECK(!same(generate_shapes(o, true, 3).image, generate_shapes(easy, true, 3).image));
  CHECK(ShapesDataset(o, true, 7).size() == 7);
  // --image-size overrides size.
  DataOptions opt;
  opt.image_size = 40;
  CHECK(open_dataset("shapes:size=32", Split::Val, 0, opt)->get(0).image.shape() == Shape{3, 40, 40});
}

TEST_CASE("datasets: shapes parameters are parsed and validated") {
  ShapesOptions o = parse_shapes_params("train=512,val=128,size=32,difficulty=1.5,seed=3");
  CHECK(o.train == 512);
  CHECK(o.val == 128);
  CHECK(o.size == 32);
  CHECK(o.difficulty == 1.5f);
  CHECK(o.seed == 3);
  CHECK(parse_shapes_params("").train == 2000);
  CHECK_ERROR_HAS(parse_shapes_params("trian=5"), "unknown parameter 'trian'", "known: train");
  CHECK_ERROR_HAS(parse_shapes_params("train=abc"), "train", "'abc'");
  CHECK_ERROR_HAS(parse_shapes_params("train=0"), "train", "[1,");
  CHECK_ERROR_HAS(parse_shapes_params("size=8"), "size", "[16, 2048]");
  CHECK_ERROR_HAS(parse_shapes_params("difficulty=4"), "difficulty", "[0, 3]");
  CHECK_ERROR_HAS(parse_shapes_params("train=5,train=6"), "given twice");
  CHECK_ERROR_HAS(parse_shapes_params("train=5,"), "key=value");
  CHECK_ERROR_HAS(parse_shapes_params("size"), "key=value");
  CHECK_ERROR_HAS(open_dataset("shapes:val=-1", Split::Val, 0), "val", "'-1'");
  CHECK_ERROR_HAS(open_dataset("shapes", Split::Val, 3), "5 classes", "3");
}

TEST_CASE("datasets: shapes needs shape, not colour: trivial predictors score a low mIoU") {
  // The best colour-only predictor: each quantized RGB colour gets its most frequent training
  // label. On the shapes set it does no better than predicting background everywhere.
  ShapesOptions o;
  o.size = 32;
  const int Q = 12;
  std::vector<std::array<int64_t, 5>> hist(Q * Q * Q, std::array<int64_t, 5>{});
  auto bin = [&](const Sample& s, int64_t p) {
    int64_t n = s.mask.numel();
    int r = std::min(Q - 1, int(s.image[p] * Q)), g = std::min(Q - 1, int(s.image[n + p] * Q)),
        b = std::min(Q - 1, int(s.image[2 * n + p] * Q));
    return (r * Q + g) * Q + b;
  };
  std::vector<int64_t> freq(5, 0);
  for (int64_t i = 0; i < 300; ++i) {
    Sample s = generate_shapes(o, true, i);
    for (int64_t p = 0; p < s.mask.numel(); ++p) ++hist[bin(s, p)][s.mask[p]], ++freq[s.mask[p]];
  }
  int64_t conf_colour[5][5] = {}, conf_bg[5][5] = {};
  for (int64_t i = 0; i < 100; ++i) {
    Sample s = generate_shapes(o, false, i);
    for (int64_t p = 0; p < s.mask.numel(); ++p) {
      auto& h = hist[bin(s, p)];
      int best = int(std::max_element(h.begin(), h.end()) - h.begin());
      ++conf_colour[s.mask[p]][best];
      ++conf_bg[s.mask[p]][0];
    }
  }
  auto miou = [](int64_t (&c)[5][5]) {
    double sum = 0;
    for (int k = 0; k < 5; ++k) {
      int64_t tp = c[k][k], fp = 0, fn = 0;
      for (int j = 0; j < 5; ++j)
        if (j != k) fp += c[j][k], fn += c[k][j];
      sum += tp + fp + fn ? double(tp) / double(tp + fp + fn) : 0;
    }
    return sum / 5;
  };
  double total = 0;
  for (auto f : freq) total += double(f);
  CAPTURE(freq[0] / total);
  CHECK(freq[0] / total > 0.7);   // background dominates, but
  CHECK(freq[0] / total < 0.9);   // the shapes are not rare,
  for (int k = 1; k < 5; ++k) CHECK(freq[k] / total > 0.02);  // and no class is
  CHECK(miou(conf_bg) < 0.2);
  CHECK(miou(conf_colour) < 0.25);
}

TEST_CASE("datasets: open_dataset and make_transform reject bad specs and options") {
  CHECK_ERROR_HAS(open_dataset("nope:x", Split::Train, 0), "unknown source 'nope:x'", "shapes", "voc:DIR");
  CHECK_ERROR_HAS(open_dataset("folder:", Split::Train, 0), "folder", "DIR");
  CHECK_ERROR_HAS(open_dataset("tensors:", Split::Train, 0), "tensors", "FILE");
  DataOptions opt;
  opt.image_size = 32;
  CHECK_ERROR_HAS(make_transform("tensors:x.safetensors", Split::Val, opt), "--image-size", "tensors:");
  opt.image_size = 0;
  opt.augment = true;
  CHECK_ERROR_HAS(make_transform("tensors:x.safetensors", Split::Train, opt), "--augment");
  CHECK(!make_transform("tensors:x.safetensors", Split::Val, opt));  // eval never augments
  CHECK(transform_options("voc:/x", Split::Val, opt).mean == kImageNetMean);
  CHECK(!transform_options("voc:/x", Split::Val, opt).augment);
  CHECK(transform_options("shapes", Split::Train, opt).augment);
  opt.limit = -1;
  CHECK_ERROR_HAS(open_dataset("shapes", Split::Train, 0, opt), "--limit");
}

TEST_CASE("datasets: image writers replace files atomically and leave no temporaries") {
  TempDir t;
  std::vector<uint8_t> px(4 * 4 * 3, 7);
  write_png(t / "a.png", px.data(), 4, 4, 3);
  write_png(t / "a.png", px.data(), 4, 4, 3);
  write_jpg(t / "b.jpg", px.data(), 4, 4, 3);
  int files = 0;
  for (const auto& e : fs::directory_iterator(t.path)) {
    ++files;
    CHECK(e.path().string().find(".tmp") == std::string::npos);
  }
  CHECK(files == 2);
  CHECK_ERROR_HAS(write_png(t / "missing_dir/x.png", px.data(), 4, 4, 3), "missing_dir/x.png", "cannot write");
}

TEST_CASE("datasets: smallbatch data shapes, stats and export, end to end") {
  TempDir t;
  const std::string dir = t / "set";
  CliResult r = run_cli("data shapes --out " + dir + " --count 6 --val-count 3 --image-size 32 --seed 5");
  INFO(r.err);
  REQUIRE(r.code == 0);
  CHECK(fs::exists(dir + "/train/images/000005.png"));
  CHECK(fs::exists(dir + "/val/masks/000002.png"));
  CHECK(fs::exists(dir + "/dataset.json"));
  // Written again into the same place: refused, nothing touched.
  CliResult again = run_cli("data shapes --out " + dir + " --count 2");
  CHECK(again.code != 0);
  CHECK(again.err.find("already exists") != std::string::npos);

  // The masks on disk are the generator's, exactly; the images within PNG rounding.
  ShapesOptions so;
  so.size = 32, so.seed = 5, so.train = 6, so.val = 3;
  DatasetPtr folder = open_dataset("folder:" + dir, Split::Val, 0);
  CHECK(folder->num_classes() == 5);
  REQUIRE(folder->size() == 3);
  for (int64_t i = 0; i < 3; ++i) {
    Sample a = folder->get(i), b = generate_shapes(so, false, i);
    CHECK(same(a.mask, b.mask));
    float worst = 0;
    for (int64_t p = 0; p < a.image.numel(); ++p) worst = std::max(worst, std::fabs(a.image[p] - b.image[p]));
    CHECK(worst <= 0.5f / 255 + 1e-6f);
  }

  CliResult st = run_cli("data stats --data folder:" + dir + " --json");
  INFO(st.err);
  REQUIRE(st.code == 0);
  auto j = nlohmann::json::parse(st.out);
  CHECK(j["samples"] == 6);
  CHECK(j["classes"] == 5);
  CHECK(j["sizes"][0]["height"] == 32);
  int64_t pixels = 0;
  for (auto& c : j["class_pixels"]) pixels += c.get<int64_t>();
  CHECK(pixels == 6 * 32 * 32);
  CliResult text = run_cli("data stats --data shapes:train=5,size=16");
  CHECK(text.code == 0);
  CHECK(text.out.find("class pixel frequencies") != std::string::npos);
  CHECK(text.out.find("samples   5") != std::string::npos);

  // export: the loader's output, normalized with the set's own statistics from dataset.json.
  const std::string file = t / "val.safetensors";
  CliResult ex = run_cli("data export --data folder:" + dir + " --split val --out " + file);
  INFO(ex.err);
  REQUIRE(ex.code == 0);
  TensorFile tf = load_safetensors(file);
  const Tensor& images = tf.get_float("images");
  const IndexTensor& masks = tf.get_int("masks");
  CHECK(images.shape() == Shape{3, 3, 32, 32});
  CHECK(masks.shape() == Shape{3, 32, 32});
  Sample s0 = generate_shapes(so, false, 0);
  CHECK(std::memcmp(masks.data(), s0.mask.data(), 32 * 32 * sizeof(int64_t)) == 0);
  CHECK(images[100] == doctest::Approx((s0.image[100] - kShapesMean[0]) / kShapesStd[0]).epsilon(0.01));
  // ... the same through the tensors: source, and with --image-size.
  CHECK(open_dataset("tensors:" + file, Split::Val, 0)->num_classes() == 5);
  CliResult ex2 = run_cli("data export --data shapes:val=2 --split val --image-size 24 --out " + file);
  INFO(ex2.err);
  REQUIRE(ex2.code == 0);
  CHECK(load_safetensors(file).get_float("images").shape() == Shape{2, 3, 24, 24});
}

TEST_CASE("datasets: smallbatch data commands fail clearly on bad flags and data") {
  TempDir t;
  // Images of different sizes without --image-size.
  make_folder(t.path, 1, 6, 5);
  write_rgb_png(t / "train/images/z.png", 4, 4, [](int64_t, int64_t, int) { return uint8_t(0); });
  write_mask_png(t / "train/masks/z.png", 4, 4, [](int64_t, int64_t) { return uint8_t(1); });
  CliResult r = run_cli("data export --data folder:" + t.path.string() + " --classes 4 --out " + (t / "x.safetensors"));
  CHECK(r.code == 1);
  CHECK(r.err.find("--image-size") != std::string::npos);
  CHECK(r.err.find("z.png") != std::string::npos);
  CHECK(!fs::exists(t / "x.safetensors"));
  r = run_cli("data export --data folder:" + t.path.string() + " --classes 4 --image-size 4 --out " + (t / "x.safetensors"));
  CHECK(r.code == 0);

  r = run_cli("data export --data shapes");  // --out is required
  CHECK(r.code != 0);
  CHECK(r.err.find("--out") != std::string::npos);
  r = run_cli("data stats --data nope:x");
  CHECK(r.code == 1);
  CHECK(r.err.find("unknown source") != std::string::npos);
  r = run_cli("data stats --split test");
  CHECK(r.code != 0);
  CHECK(r.err.find("--split") != std::string::npos);
  r = run_cli("data shapes --out " + (t / "s") + " --image-size 4");
  CHECK(r.code != 0);
  CHECK(r.err.find("--image-size") != std::string::npos);
  r = run_cli("data stats --data shapes:size=abc");
  CHECK(r.code == 1);
  CHECK(r.err.find("'abc'") != std::string::npos);
  r = run_cli("data");
  CHECK(r.code != 0);
  r = run_cli("data export --help");
  CHECK(r.code == 0);
  CHECK(r.out.find("--image-size") != std::string::npos);
  // --skip-bad is reported at the end.
  write_bytes(t / "train/masks/z.png", {});
  r = run_cli("data stats --data folder:" + t.path.string() + " --classes 4 --skip-bad");
  CHECK(r.code == 0);
  CHECK(r.err.find("skipped 1 bad sample") != std::string::npos);
}
