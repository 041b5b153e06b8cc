// The .safetensors reader and writer: round trips, every dtype, a file from the Python reference
// writer, hostile or broken files (each must fail with a message naming the problem), and the
// writer's atomicity.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "core/io/safetensors.h"
#include "fixtures.h"
#include "gradcheck.h"
#include "temp_dir.h"

using namespace sb;
namespace fs = std::filesystem;

namespace {

struct TempDir : sbtest::TempDir {
  TempDir() : sbtest::TempDir("sb_safetensors") {}
  std::vector<std::string> files() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(path)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }
};

// A file image: 8-byte little-endian header length, the header text, then the data bytes.
std::vector<uint8_t> image(const std::string& header, const std::vector<uint8_t>& data = {}) {
  std::vector<uint8_t> out;
  out.reserve(8 + header.size() + data.size());
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(n >> (8 * i)));
  for (char c : header) out.push_back(static_cast<uint8_t>(c));
  for (uint8_t b : data) out.push_back(b);
  return out;
}

template <class T>
void append_le(std::vector<uint8_t>& buf, T v) {
  uint8_t b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));  // the library only supports little-endian hosts
  buf.insert(buf.end(), b, b + sizeof(T));
}

TensorFile parse(const std::vector<uint8_t>& img, const SafetensorsLimits& limits = {}) {
  return parse_safetensors(img.data(), img.size(), "bad.safetensors", limits);
}

// The message of the sb::Error that f throws, or a note saying it threw none.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const sb::Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("<not an sb::Error: ") + e.what() + ">";
  }
  return "<no exception>";
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

uint64_t header_length(const std::vector<uint8_t>& bytes) {
  uint64_t n = 0;
  if (bytes.size() >= 8) std::memcpy(&n, bytes.data(), 8);
  return n;
}

}  // namespace

// Every listed piece must appear in the message of the sb::Error that expr throws.
#define CHECK_ERROR(expr, ...)                                                        \
  do {                                                                                \
    std::string _msg = error_of([&] { (void)(expr); });                               \
    for (const char* _piece : {__VA_ARGS__})                                          \
      CHECK_MESSAGE(_msg.find(_piece) != std::string::npos, "expected '" << _piece    \
                                                                << "' in: " << _msg); \
  } while (0)

TEST_CASE("safetensors: round trip of floats, ints, metadata, empty and 0-d tensors") {
  TempDir dir;
  Generator gen(7);
  TensorFile f;
  f.floats["b.weight"] = Tensor::randn({3, 4, 5}, gen);
  f.floats["a.bias"] = Tensor::from({2}, {-0.f, std::numeric_limits<float>::infinity()});
  f.floats["empty"] = Tensor::zeros({0, 3});
  f.floats["scalar"] = Tensor::scalar(2.5f);
  f.ints["labels"] = IndexTensor::from({2, 2}, {0, -1, std::numeric_limits<int64_t>::max(),
                                                std::numeric_limits<int64_t>::min()});
  f.ints["int_scalar"] = IndexTensor::scalar(42);
  f.ints["int_empty"] = IndexTensor::zeros({0});
  f.metadata = {{"format", "pt"}, {"epoch", "3"}, {"unicode", "\xc3\xa9t\xc3\xa9"}};
  std::string path = dir / "model.safetensors";
  save_safetensors(path, f);

  TensorFile g = load_safetensors(path);
  CHECK(g.source == path);
  CHECK(g.floats.size() == 4);
  CHECK(g.ints.size() == 3);
  CHECK(g.metadata == f.metadata);
  for (const auto& [name, t] : f.floats) {
    INFO(name);
    const Tensor& u = g.get_float(name);
    CHECK(u.shape() == t.shape());
    // Bit-exact: F32 is written and read without conversion.
    CHECK(std::memcmp(u.data(), t.data(), t.numel() * sizeof(float)) == 0);
  }
  for (const auto& [name, t] : f.ints) {
    INFO(name);
    const IndexTensor& u = g.get_int(name);
    CHECK(u.shape() == t.shape());
    CHECK(std::equal(u.begin(), u.end(), t.begin(), t.end()));
  }
  CHECK(g.get_float("scalar").dim() == 0);
  CHECK(g.get_float("scalar").item() == 2.5f);
  CHECK(g.get_int("int_scalar").item() == 42);
  CHECK(std::signbit(g.get_float("a.bias")[0]));

  // The layout other readers rely on: padded header, sorted names, contiguous data.
  std::vector<uint8_t> bytes = read_bytes(path);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  CHECK(n % 8 == 0);
  std::string text(bytes.begin() + 8, bytes.begin() + 8 + n);
  auto header = nlohmann::json::parse(text);
  uint64_t expect_begin = 0;
  std::string previous;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    CHECK(it.key() > previous);
    previous = it.key();
    CHECK(it.value()["data_offsets"][0].get<uint64_t>() == expect_begin);
    expect_begin = it.value()["data_offsets"][1].get<uint64_t>();
    CHECK(it.value()["dtype"] == (f.floats.count(it.key()) ? "F32" : "I64"));
  }
  CHECK(bytes.size() == 8 + n + expect_begin);
  // Data follows the header in name order: the first bytes belong to "a.bias".
  CHECK(header["a.bias"]["data_offsets"][0] == 0);
  CHECK(dir.files() == std::vector<std::string>{"model.safetensors"});
}

TEST_CASE("safetensors: metadata is omitted when empty and overwriting replaces the file") {
  TempDir dir;
  std::string path = dir / "w.safetensors";
  TensorFile f;
  f.floats["x"] = Tensor::from({3}, {1, 2, 3});
  save_safetensors(path, f);
  std::vector<uint8_t> bytes = read_bytes(path);
  CHECK(std::string(bytes.begin(), bytes.end()).find("__metadata__") == std::string::npos);
  CHECK(header_length(bytes) % 8 == 0);

  f.floats["x"] = Tensor::from({2}, {9, 8});
  save_safetensors(path, f);
  CHECK_CLOSE(load_safetensors(path).get_float("x"), Tensor::from({2}, {9, 8}));
  CHECK(dir.files() == std::vector<std::string>{"w.safetensors"});

  TensorFile empty;
  save_safetensors(path, empty);
  // "{}" padded to 8 bytes with spaces.
  CHECK(read_bytes(path) ==
        std::vector<uint8_t>{8, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' ', ' ', ' ', ' ', ' '});
  TensorFile g = load_safetensors(path);
  CHECK(g.floats.empty());
  CHECK(g.ints.empty());
  CHECK(g.metadata.empty());
}

TEST_CASE("safetensors: reads a file written by the Python reference writer") {
  TensorFile f = sbtest::load_fixture("safetensors_reference");
  CHECK(f.metadata == std::map<std::string, std::string>{{"format", "pt"},
                                                         {"note", "reference writer"}});
  CHECK_CLOSE(f.get_float("weight"),
              Tensor::from({2, 3}, {0.5f, -1.25f, 3.f, 1e-3f, -0.f, 65504.f}), 0.0);
  const IndexTensor& labels = f.get_int("labels");
  REQUIRE(labels.shape() == Shape{4});
  CHECK(std::vector<int64_t>(labels.begin(), labels.end()) ==
        std::vector<int64_t>{0, 7, -3, int64_t(1) << 40});
  const Tensor& half = f.get_float("half");
  REQUIRE(half.shape() == Shape{6});
  CHECK(half[0] == 1.f);
  CHECK(half[1] == -2.f);
  CHECK(half[2] == 65504.f);
  CHECK(half[3] == std::ldexp(1.f, -24));
  CHECK(half[4] == 0.333251953125f);  // 1/3 rounded to F16 (0x3555)
  CHECK(std::isinf(half[5]));
  CHECK(half[5] > 0);
}

TEST_CASE("safetensors: every dtype converts to float or int64") {
  std::vector<uint8_t> d;
  std::string h = "{";
  auto add = [&](const std::string& name, const std::string& dtype, int n, auto fill) {
    size_t begin = d.size();
    fill();
    if (h.size() > 1) h += ",";
    h += "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":[" + std::to_string(n) +
         "],\"data_offsets\":[" + std::to_string(begin) + "," + std::to_string(d.size()) + "]}";
  };
  add("bool", "BOOL", 3, [&] { d.insert(d.end(), {0, 1, 2}); });
  add("u8", "U8", 2, [&] { d.insert(d.end(), {0, 255}); });
  add("i8", "I8", 2, [&] { append_le<int8_t>(d, -128), append_le<int8_t>(d, 127); });
  add("u16", "U16", 1, [&] { append_le<uint16_t>(d, 65535); });
  add("i16", "I16", 1, [&] { append_le<int16_t>(d, -32768); });
  add("u32", "U32", 1, [&] { append_le<uint32_t>(d, 4294967295u); });
  add("i32", "I32", 1, [&] { append_le<int32_t>(d, -2147483647 - 1); });
  add("u64", "U64", 1, [&] { append_le<uint64_t>(d, uint64_t(INT64_MAX)); });
  add("i64", "I64", 1, [&] { append_le<int64_t>(d, INT64_MIN); });
  // F16: 1, -0, smallest subnormal, largest subnormal, -inf, NaN, 65504.
  add("f16", "F16", 7, [&] {
    for (uint16_t b : {0x3c00, 0x8000, 0x0001, 0x03ff, 0xfc00, 0x7e00, 0x7bff}) append_le(d, b);
  });
  // BF16 is the top half of a float: 1, -2, 3.0e38-ish, NaN.
  add("bf16", "BF16", 4, [&] {
    for (uint16_t b : {0x3f80, 0xc000, 0x7f7f, 0x7fc0}) append_le(d, b);
  });
  add("f64", "F64", 2, [&] { append_le(d, 0.1), append_le(d, -1e300); });
  // An odd offset: the reader must not assume aligned data.
  add("pad", "U8", 1, [&] { d.push_back(9); });
  add("f32", "F32", 1, [&] { append_le(d, 1.5f); });
  h += "}";
  TensorFile f = parse(image(h, d));

  auto ints = [&](const char* name) {
    const IndexTensor& t = f.get_int(name);
    return std::vector<int64_t>(t.begin(), t.end());
  };
  CHECK(ints("bool") == std::vector<int64_t>{0, 1, 1});
  CHECK(ints("u8") == std::vector<int64_t>{0, 255});
  CHECK(ints("i8") == std::vector<int64_t>{-128, 127});
  CHECK(ints("u16") == std::vector<int64_t>{65535});
  CHECK(ints("i16") == std::vector<int64_t>{-32768});
  CHECK(ints("u32") == std::vector<int64_t>{4294967295});
  CHECK(ints("i32") == std::vector<int64_t>{-2147483648});
  CHECK(ints("u64") == std::vector<int64_t>{INT64_MAX});
  CHECK(ints("i64") == std::vector<int64_t>{INT64_MIN});

  const Tensor& h16 = f.get_float("f16");
  CHECK(h16[0] == 1.f);
  CHECK(h16[1] == 0.f);
  CHECK(std::signbit(h16[1]));
  CHECK(h16[2] == std::ldexp(1.f, -24));
  CHECK(h16[3] == std::ldexp(1023.f, -24));
  CHECK(std::isinf(h16[4]));
  CHECK(h16[4] < 0);
  CHECK(std::isnan(h16[5]));
  CHECK(h16[6] == 65504.f);
  const Tensor& b16 = f.get_float("bf16");
  CHECK(b16[0] == 1.f);
  CHECK(b16[1] == -2.f);
  uint32_t bits = 0x7f7f0000u;
  float big;
  std::memcpy(&big, &bits, 4);
  CHECK(b16[2] == big);
  CHECK(std::isnan(b16[3]));
  CHECK(f.get_float("f64")[0] == 0.1f);
  CHECK(std::isinf(f.get_float("f64")[1]));  // beyond float's range
  CHECK(f.get_float("f32")[0] == 1.5f);
}

TEST_CASE("safetensors: the header may be padded and empty tensors may share offsets") {
  std::vector<uint8_t> d;
  append_le(d, 2.f);
  TensorFile f = parse(image(
      "  {\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
      "\"e\":{\"dtype\":\"F32\",\"shape\":[0,5],\"data_offsets\":[0,0]},"
      "\"e2\":{\"dtype\":\"I64\",\"shape\":[3,0],\"data_offsets\":[4,4]}}      ",
      d));
  CHECK(f.get_float("a")[0] == 2.f);
  CHECK(f.get_float("e").shape() == Shape{0, 5});
  CHECK(f.get_int("e2").shape() == Shape{3, 0});
}

TEST_CASE("safetensors: get_float and get_int name the file and the missing tensor") {
  TensorFile f = sbtest::load_fixture("safetensors_reference");
  CHECK_ERROR(f.get_float("nope"), "safetensors_reference.safetensors", "no tensor named 'nope'");
  CHECK_ERROR(f.get_int("weight"), "safetensors_reference.safetensors",
              "'weight' is a float tensor");
  CHECK_ERROR(f.get_float("labels"), "'labels' is an integer tensor");
  TensorFile empty;
  CHECK_ERROR(empty.get_int("x"), "no tensor named 'x'");
}

TEST_CASE("safetensors: load names the path it cannot open") {
  TempDir dir;
  std::string path = dir / "missing.safetensors";
  CHECK_ERROR(load_safetensors(path), path.c_str(), "cannot open");
}

TEST_CASE("safetensors: truncated files and bad header lengths") {
  CHECK_ERROR(parse({}), "bad.safetensors", "0 bytes, shorter than the 8-byte header length");
  CHECK_ERROR(parse({1, 0, 0, 0, 0, 0, 0}), "7 bytes, shorter than the 8-byte header length");
  CHECK_ERROR(parse_safetensors(nullptr, 0, "null"), "null: ");

  std::vector<uint8_t> img = image("{}");
  img[0] = 200;  // claims 200 header bytes in a 10-byte file
  CHECK_ERROR(parse(img), "bad.safetensors",
              "header length 200 runs past the end of the 10-byte file");
  std::fill(img.begin(), img.begin() + 8, 0xff);  // 2^64 - 1: must not wrap around
  CHECK_ERROR(parse(img), "header length 18446744073709551615 runs past the end");

  std::string big = "{}" + std::string(62, ' ');
  CHECK_ERROR(parse(image(big), SafetensorsLimits{16}), "header length 64 exceeds the limit of 16");
  CHECK(parse(image(big), SafetensorsLimits{64}).floats.empty());
}

TEST_CASE("safetensors: header that is not JSON, or not an object") {
  CHECK_ERROR(parse(image("{\"a\": ")), "bad.safetensors", "header is not valid JSON");
  CHECK_ERROR(parse(image("")), "header is not valid JSON");
  CHECK_ERROR(parse(image("{} {}")), "header is not valid JSON");
  CHECK_ERROR(parse(image("{\"a\":\"\xff\"}")), "header is not valid JSON");  // not UTF-8
  CHECK_ERROR(parse(image("[1,2]")), "bad.safetensors",
              "header should be a JSON object but is [1,2]");
  CHECK_ERROR(parse(image("\"x\"")), "header should be a JSON object");
}

TEST_CASE("safetensors: entries must be {dtype, shape, data_offsets} of the right types") {
  auto entry = [](const std::string& body) { return image("{\"t\":" + body + "}", {0, 0, 0, 0}); };
  CHECK_ERROR(parse(entry("[]")), "bad.safetensors: tensor 't'", "expected an object");
  CHECK_ERROR(parse(entry("{\"dtype\":\"F32\",\"shape\":[1]}")), "tensor 't'",
              "missing 'data_offsets'");
  CHECK_ERROR(parse(entry("{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}")),
              "tensor 't'", "unexpected key 'x'");
  CHECK_ERROR(parse(entry("{\"dtype\":1,\"shape\":[1],\"data_offsets\":[0,4]}")),
              "dtype should be a string");
  CHECK_ERROR(parse(entry("{\"dtype\":\"F32\",\"shape\":4,\"data_offsets\":[0,4]}")),
              "shape should be an array");
  CHECK_ERROR(parse(entry("{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}")),
              "should hold non-negative integers");
  CHECK_ERROR(parse(entry("{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}")),
              "data_offsets should be two non-negative integers");
  CHECK_ERROR(parse(entry("{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}")),
              "data_offsets should be two non-negative integers");
  CHECK_ERROR(parse(entry("{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,0]}")),
              "data_offsets [4,0] have begin after end");
}

TEST_CASE("safetensors: unknown and unsupported dtypes") {
  CHECK_ERROR(parse(image("{\"t\":{\"dtype\":\"Q7\",\"shape\":[1],\"data_offsets\":[0,1]}}", {0})),
              "bad.safetensors: tensor 't'", "unknown dtype 'Q7'", "expected one of");
  CHECK_ERROR(
      parse(image("{\"t\":{\"dtype\":\"F8_E4M3\",\"shape\":[1],\"data_offsets\":[0,1]}}", {0})),
      "tensor 't'", "F8_E4M3", "not supported");
}

TEST_CASE("safetensors: negative and overflowing shapes") {
  CHECK_ERROR(parse(image("{\"t\":{\"dtype\":\"F32\",\"shape\":[2,-1],\"data_offsets\":[0,0]}}")),
              "bad.safetensors: tensor 't'", "negative dimension -1");
  // JSON's -0 is zero, not negative.
  CHECK(parse(image("{\"t\":{\"dtype\":\"F32\",\"shape\":[2,-0],\"data_offsets\":[0,0]}}"))
            .get_float("t")
            .shape() == Shape{2, 0});
  // 2^32 cubed overflows int64 (and uint64).
  CHECK_ERROR(
      parse(image("{\"t\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296,4294967296],"
                  "\"data_offsets\":[0,0]}}")),
      "tensor 't'", "more elements than int64 can count");
  // 2^62 elements of 8 bytes: the byte count overflows even though numel does not.
  CHECK_ERROR(parse(image("{\"t\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904],"
                          "\"data_offsets\":[0,8]}}",
                          std::vector<uint8_t>(8))),
              "needs more than 2^64 bytes but data_offsets span 8");
  CHECK_ERROR(parse(image("{\"t\":{\"dtype\":\"F32\",\"shape\":[18446744073709551615],"
                          "\"data_offsets\":[0,0]}}")),
              "beyond the int64 range");
  // A zero does not excuse the other dimensions: their product must still be countable.
  CHECK_ERROR(parse(image("{\"t\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,0],"
                          "\"data_offsets\":[0,0]}}")),
              "more elements than int64 can count");
  // Large dimensions around a zero describe a valid empty tensor.
  TensorFile f = parse(image(
      "{\"t\":{\"dtype\":\"F32\",\"shape\":[2147483648,0,2147483648],\"data_offsets\":[0,0]}}"));
  CHECK(f.get_float("t").numel() == 0);
  CHECK(f.get_float("t").shape() == Shape{2147483648, 0, 2147483648});
}

TEST_CASE("safetensors: shape and data_offsets must agree and stay inside the buffer") {
  std::vector<uint8_t> d(1700);
  CHECK(error_of([&] {
          parse(image("{\"e1.c1.weight\":{\"dtype\":\"F32\",\"shape\":[16,3,3,3],"
                      "\"data_offsets\":[0,1700]}}",
                      d));
        }) == "bad.safetensors: tensor 'e1.c1.weight': shape [16,3,3,3] of F32 needs 1728 bytes "
              "but data_offsets span 1700");
  CHECK_ERROR(parse(image("{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                          std::vector<uint8_t>(8))),
              "bad.safetensors: tensor 't'",
              "data_offsets [4,12] run past the end of the data buffer (8 bytes)");
  // An end offset near 2^64 must not wrap around the bounds check.
  CHECK_ERROR(parse(image("{\"t\":{\"dtype\":\"U8\",\"shape\":[4],"
                          "\"data_offsets\":[18446744073709551612,18446744073709551616]}}")),
              "tensor 't'");
  CHECK_ERROR(parse(image("{\"t\":{\"dtype\":\"U8\",\"shape\":[4],"
                          "\"data_offsets\":[18446744073709551611,18446744073709551615]}}")),
              "tensor 't'", "run past the end of the data buffer");
}

TEST_CASE("safetensors: overlapping tensors are rejected") {
  CHECK_ERROR(parse(image("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                          "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                          std::vector<uint8_t>(12))),
              "bad.safetensors", "tensors 'a' [0,8) and 'b' [4,12) overlap");
  // Same range twice, listed in the opposite order from their offsets.
  CHECK_ERROR(parse(image("{\"a\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[4,8]},"
                          "\"b\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}",
                          std::vector<uint8_t>(8))),
              "'b' [0,8) and 'a' [4,8) overlap");
  // Touching is fine.
  CHECK(parse(image("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                    "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                    std::vector<uint8_t>(8)))
            .floats.size() == 2);
}

TEST_CASE("safetensors: duplicate names are rejected, not silently resolved") {
  CHECK_ERROR(parse(image("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                          "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
                          {1, 2})),
              "bad.safetensors", "header names 'a' more than once");
  CHECK_ERROR(parse(image("{\"a\":{\"dtype\":\"U8\",\"dtype\":\"F32\",\"shape\":[1],"
                          "\"data_offsets\":[0,1]}}",
                          {1})),
              "header names 'dtype' more than once");
  CHECK_ERROR(parse(image("{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}")),
              "header names 'k' more than once");
  // The same key in different objects is not a duplicate.
  CHECK(parse(image("{\"__metadata__\":{\"dtype\":\"x\"},"
                    "\"dtype\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
                    {5}))
            .get_int("dtype")[0] == 5);
}

TEST_CASE("safetensors: __metadata__ must map strings to strings") {
  CHECK_ERROR(parse(image("{\"__metadata__\":{\"epoch\":3}}")), "bad.safetensors",
              "__metadata__ 'epoch' should be a string but is 3");
  CHECK_ERROR(parse(image("{\"__metadata__\":[\"a\"]}")), "__metadata__ should be an object");
  CHECK(parse(image("{\"__metadata__\":{\"a\":\"b\"}}")).metadata.at("a") == "b");
}

TEST_CASE("safetensors: U64 values beyond int64 are an error") {
  std::vector<uint8_t> d;
  append_le<uint64_t>(d, 1);
  append_le<uint64_t>(d, uint64_t(INT64_MAX) + 1);
  CHECK_ERROR(parse(image("{\"u\":{\"dtype\":\"U64\",\"shape\":[2],\"data_offsets\":[0,16]}}", d)),
              "bad.safetensors: tensor 'u'", "9223372036854775808", "flat index 1",
              "does not fit in int64");
}

TEST_CASE("safetensors: truncated and corrupted images throw sb::Error or load, never crash") {
  TempDir dir;
  TensorFile f;
  f.floats["w"] = Tensor::from({2, 2}, {1, 2, 3, 4});
  f.ints["i"] = IndexTensor::from({3}, {1, 2, 3});
  f.metadata["m"] = "v";
  std::string path = dir / "x.safetensors";
  save_safetensors(path, f);
  std::vector<uint8_t> good = read_bytes(path);
  // Every proper prefix is missing data or header bytes, so every one must be refused.
  for (size_t n = 0; n < good.size(); ++n) {
    std::vector<uint8_t> cut(good.begin(), good.begin() + n);
    std::string msg = error_of([&] { parse(cut); });
    INFO("prefix of " << n << " bytes: " << msg);
    CHECK(msg.rfind("bad.safetensors: ", 0) == 0);
  }
  // Random byte corruption may or may not make a valid file, but may only fail with sb::Error.
  std::mt19937 rng(123);
  int refused = 0;
  for (int trial = 0; trial < 2000; ++trial) {
    std::vector<uint8_t> bad = good;
    for (int k = 0; k < 3; ++k) bad[rng() % bad.size()] = static_cast<uint8_t>(rng());
    try {
      parse(bad);
    } catch (const sb::Error&) {
      ++refused;
    }
  }
  CHECK(refused > 0);
}

TEST_CASE("safetensors: the writer refuses inconsistent input before creating anything") {
  TempDir dir;
  std::string path = dir / "x.safetensors";
  TensorFile both;
  both.floats["a"] = Tensor::zeros({1});
  both.ints["a"] = IndexTensor::zeros({1});
  CHECK_ERROR(save_safetensors(path, both), path.c_str(), "'a' is both a float and an int tensor");
  TensorFile undefined;
  undefined.floats["u"] = Tensor();
  CHECK_ERROR(save_safetensors(path, undefined), "'u' is undefined");
  TensorFile reserved;
  reserved.floats["__metadata__"] = Tensor::zeros({1});
  CHECK_ERROR(save_safetensors(path, reserved), "'__metadata__' cannot name a tensor");
  TensorFile bad_utf8;
  bad_utf8.metadata["k"] = "\xff";
  CHECK_ERROR(save_safetensors(path, bad_utf8), "cannot write the header");
  CHECK(dir.files().empty());
}

TEST_CASE("safetensors: saving into a missing directory throws and leaves nothing") {
  TempDir dir;
  std::string path = dir / "no/such/dir/model.safetensors";
  TensorFile f;
  f.floats["x"] = Tensor::zeros({2});
  CHECK_ERROR(save_safetensors(path, f), path.c_str(), "No such file or directory");
  CHECK(dir.files().empty());
}

TEST_CASE("safetensors: a failed rename leaves the target and no temporary file") {
  // The target is a non-empty directory, so everything succeeds up to the rename.
  TempDir dir;
  std::string path = dir / "taken";
  fs::create_directory(path);
  std::ofstream(dir / "taken/keep") << "x";
  TensorFile f;
  f.floats["x"] = Tensor::zeros({2});
  CHECK_ERROR(save_safetensors(path, f), path.c_str(), "cannot rename");
  CHECK(dir.files() == std::vector<std::string>{"taken"});
  CHECK(fs::is_regular_file(dir / "taken/keep"));
}

TEST_CASE("safetensors: a write that fails midway leaves the old file intact") {
  TempDir dir;
  std::string path = dir / "model.safetensors";
  TensorFile old;
  old.floats["w"] = Tensor::from({2}, {1, 2});
  old.metadata["v"] = "old";
  save_safetensors(path, old);
  std::vector<uint8_t> before = read_bytes(path);

  // Simulate a full disk: cap the file size this process may write, so the temp file's
  // data write fails with EFBIG after the header went through.
  TensorFile big;
  big.floats["w"] = Tensor::zeros({100000});
  rlimit saved{};
  REQUIRE(getrlimit(RLIMIT_FSIZE, &saved) == 0);
  rlimit capped = saved;
  capped.rlim_cur = 4096;
  auto old_handler = signal(SIGXFSZ, SIG_IGN);  // otherwise exceeding the cap kills the process
  REQUIRE(setrlimit(RLIMIT_FSIZE, &capped) == 0);
  std::string msg = error_of([&] { save_safetensors(path, big); });
  setrlimit(RLIMIT_FSIZE, &saved);
  signal(SIGXFSZ, old_handler);

  INFO(msg);
  CHECK(msg.find(path) != std::string::npos);
  CHECK(msg.find("write to") != std::string::npos);
  CHECK(msg.find(std::strerror(EFBIG)) != std::string::npos);
  CHECK(read_bytes(path) == before);
  CHECK(load_safetensors(path).metadata.at("v") == "old");
  CHECK(dir.files() == std::vector<std::string>{"model.safetensors"});
}

TEST_CASE("safetensors: an unwritable directory leaves the old file intact") {
  if (::geteuid() == 0) return;  // root ignores directory permissions; nothing to show
  TempDir dir;
  std::string path = dir / "model.safetensors";
  TensorFile f;
  f.floats["w"] = Tensor::from({1}, {1});
  save_safetensors(path, f);
  std::vector<uint8_t> before = read_bytes(path);
  fs::permissions(dir.path, fs::perms::owner_read | fs::perms::owner_exec);
  f.floats["w"] = Tensor::from({1}, {2});
  CHECK_ERROR(save_safetensors(path, f), path.c_str(), "cannot create temporary file");
  fs::permissions(dir.path, fs::perms::owner_all);
  CHECK(read_bytes(path) == before);
  CHECK(dir.files() == std::vector<std::string>{"model.safetensors"});
}

TEST_CASE("safetensors: deeply nested headers are refused early") {
  std::string deep = "{\"t\":" + std::string(10000, '[') + std::string(10000, ']') + "}";
  CHECK_ERROR(parse(image(deep)), "bad.safetensors", "nests deeper than");
}

TEST_CASE("safetensors: load refuses a directory") {
  TempDir dir;
  std::string path = dir.path.string();
  CHECK_ERROR(load_safetensors(path), path.c_str(), "not a regular file");
}
