// The bad-input battery: the real command line fed broken images, broken or mismatched
// safetensors files, impossible model settings and bad flag values. Every case must end with a
// non-zero status below 128 (an error, not a crash) and a message on stderr naming the culprit.
// The inputs are generated here, in a temporary folder, rather than committed.
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "cli_util.h"
#include "core/io/safetensors.h"
#include "datasets/image_io.h"
#include "models/registry.h"
#include "tools/app/checkpoint.h"
#include "temp_dir.h"

namespace {

namespace fs = std::filesystem;

struct Scratch : sbtest::TempDir {
  explicit Scratch(const std::string& tag) : sbtest::TempDir("sb_bad_" + tag) {}
};

// A tiny unet-s of the shapes data (5 classes), small enough to save and load in milliseconds.
sb::ModelSpec tiny_shapes_spec() {
  sb::ModelSpec spec;
  spec.options.norm.kind = "gn";
  spec.options.norm.groups = 2;
  spec.options.classes = 5;
  spec.options.base_width = 4;
  spec.data = "shapes";
  return spec;
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& b) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

std::vector<uint8_t> rgb_png(int64_t H, int64_t W) {
  std::vector<uint8_t> px(H * W * 3);
  for (size_t i = 0; i < px.size(); ++i) px[i] = static_cast<uint8_t>(37 * i);
  return sb::encode_png(px.data(), W, H, 3);
}

std::vector<uint8_t> rgb_jpg(int64_t H, int64_t W) {
  std::vector<uint8_t> px(H * W * 3);
  for (size_t i = 0; i < px.size(); ++i) px[i] = static_cast<uint8_t>(40 + (i % 7) * 20);
  return sb::encode_jpg(px.data(), W, H, 3);
}

std::vector<uint8_t> mask_png(int64_t H, int64_t W, uint8_t bad = 0) {
  std::vector<uint8_t> px(H * W);
  for (int64_t i = 0; i < H * W; ++i) px[i] = static_cast<uint8_t>(i % 4);
  if (bad) px[H * W / 2] = bad;
  return sb::encode_png(px.data(), W, H, 1);
}

// A folder: layout with `n` good 8 x 8 samples (labels 0..3) in train/.
void make_folder(const Scratch& s, int n) {
  fs::remove_all(s.path / "data");
  for (int i = 0; i < n; ++i) {
    std::string stem = "s";  // not "s" + to_string(i): GCC 12 warns falsely (-Wrestrict)
    stem += std::to_string(i);
    write_bytes(s / ("data/train/images/" + stem + ".png"), rgb_png(8, 8));
    write_bytes(s / ("data/train/masks/" + stem + ".png"), mask_png(8, 8));
  }
}

// A safetensors image: 8-byte little-endian header length, the header, then `data`.
std::vector<uint8_t> st_image(const std::string& header, const std::vector<uint8_t>& data = {}, uint64_t claimed = 0) {
  uint64_t n = claimed ? claimed : header.size();
  std::vector<uint8_t> out(8 + header.size() + data.size());  // filled in place: GCC 12 warns
  for (int i = 0; i < 8; ++i) out[i] = static_cast<uint8_t>(n >> (8 * i));  // falsely on insert()
  if (!header.empty()) std::memcpy(out.data() + 8, header.data(), header.size());
  if (!data.empty()) std::memcpy(out.data() + 8 + header.size(), data.data(), data.size());
  return out;
}

struct Case {
  std::string name;
  std::function<void()> setup;  // writes the inputs the case needs (may be empty)
  std::string args;
  std::vector<std::string> expect;  // every piece must appear on stderr
};

void run_cases(const std::vector<Case>& cases) {
  for (const Case& c : cases) {
    SUBCASE(c.name.c_str()) {
      if (c.setup) c.setup();
      sbtest::CliResult r = sbtest::run_cli(c.args);
      INFO("smallbatch " << c.args << "\nstdout: " << r.out << "\nstderr: " << r.err);
      CHECK(r.code > 0);
      CHECK(r.code < 128);
      for (const std::string& e : c.expect) CHECK_MESSAGE(r.err.find(e) != std::string::npos, "expected on stderr: ", e);
    }
  }
}

const char* kTrainQuick = " --steps 1 --base-width 4 --groups 2 --threads 1 --workers 0";

}  // namespace

TEST_CASE("bad inputs: broken images and masks are errors naming the file") {
  Scratch s("img");
  std::string train = "train --data folder:" + (s / "data") + " --classes 4 --val-data none --batch 2" + kTrainQuick;
  auto png = rgb_png(8, 8);
  run_cases({
      {"truncated PNG",
       [&] {
         make_folder(s, 2);
         write_bytes(s / "data/train/images/s1.png", std::vector<uint8_t>(png.begin(), png.begin() + png.size() / 2));
       },
       train, {"s1.png", "corrupt or truncated"}},
      {"truncated JPEG",
       [&] {
         make_folder(s, 2);
         fs::remove(s / "data/train/images/s1.png");
         auto jpg = rgb_jpg(8, 8);
         write_bytes(s / "data/train/images/s1.jpg", std::vector<uint8_t>(jpg.begin(), jpg.end() - jpg.size() / 3));
       },
       train, {"s1.jpg", "corrupt or truncated"}},
      {"zero-byte image",
       [&] {
         make_folder(s, 2);
         write_bytes(s / "data/train/images/s0.png", {});
       },
       train, {"s0.png", "empty file (0 bytes)"}},
      {"zero-byte mask",
       [&] {
         make_folder(s, 2);
         write_bytes(s / "data/train/masks/s1.png", {});
       },
       train, {"masks/s1.png", "empty file"}},
      {"a PNG header claiming 100000 x 100000 pixels",
       [&] {
         make_folder(s, 2);
         auto huge = png;  // IHDR width and height, big-endian, at bytes 16..23
         for (int k : {16, 20}) huge[k] = 0, huge[k + 1] = 0x01, huge[k + 2] = 0x86, huge[k + 3] = 0xA0;
         write_bytes(s / "data/train/images/s1.png", huge);
       },
       train, {"s1.png", "100000 x 100000"}},
      {"image and mask of different sizes",
       [&] {
         make_folder(s, 2);
         write_bytes(s / "data/train/masks/s1.png", mask_png(8, 4));
       },
       train, {"s1.png", "8 x 8", "4 x 8"}},
      {"a label out of range",
       [&] {
         make_folder(s, 2);
         write_bytes(s / "data/train/masks/s0.png", mask_png(8, 8, 9));
       },
       train, {"s0.png", "label 9"}},
      {"a missing mask",
       [&] {
         make_folder(s, 2);
         fs::remove(s / "data/train/masks/s1.png");
       },
       train, {"s1.png", "missing mask"}},
      {"data stats on a truncated PNG",
       [&] {
         make_folder(s, 2);
         write_bytes(s / "data/train/images/s1.png", std::vector<uint8_t>(png.begin(), png.begin() + 60));
       },
       "data stats --data folder:" + (s / "data") + " --classes 4", {"s1.png"}},
  });
}

TEST_CASE("bad inputs: predict names the image it cannot read") {
  Scratch s("pred");
  // A real checkpoint of the shapes data (predict needs the data to normalize alike).
  sb::ModelSpec spec = tiny_shapes_spec();
  sb::save_model(s / "model.safetensors", *spec.build(), spec);
  std::string predict = "predict --weights " + (s / "model.safetensors") + " --threads 1 --out " + (s / "pred");
  auto png = rgb_png(8, 8);
  auto jpg = rgb_jpg(8, 8);
  run_cases({
      {"truncated PNG",
       [&] { write_bytes(s / "in/cut.png", std::vector<uint8_t>(png.begin(), png.begin() + png.size() / 2)); },
       predict + " --input " + (s / "in/cut.png"), {"cut.png", "corrupt or truncated"}},
      {"truncated JPEG",
       [&] { write_bytes(s / "in/cut.jpg", std::vector<uint8_t>(jpg.begin(), jpg.begin() + jpg.size() / 2)); },
       predict + " --input " + (s / "in/cut.jpg"), {"cut.jpg"}},
      {"zero-byte file", [&] { write_bytes(s / "in/empty.png", {}); }, predict + " --input " + (s / "in/empty.png"),
       {"empty.png", "empty file"}},
      {"100000 x 100000 header",
       [&] {
         auto huge = png;
         for (int k : {16, 20}) huge[k] = 0, huge[k + 1] = 0x01, huge[k + 2] = 0x86, huge[k + 3] = 0xA0;
         write_bytes(s / "in/huge.png", huge);
       },
       predict + " --input " + (s / "in/huge.png"), {"huge.png", "100000 x 100000"}},
      {"--out under a file",
       [&] { write_bytes(s / "in/ok.png", png); },
       "predict --weights " + (s / "model.safetensors") + " --input " + (s / "in/ok.png") + " --out " +
           (s / "model.safetensors/masks"),
       {"--out", "model.safetensors/masks", "Not a directory"}},
      {"an image size the model can't take",
       [&] { write_bytes(s / "in/odd.png", rgb_png(6, 6)); },
       predict + " --input " + (s / "in/odd.png"), {"odd.png", "(1, 3, 6, 6)", "--image-size"}},
  });
}

TEST_CASE("bad inputs: broken safetensors files are errors naming the file and the tensor") {
  Scratch s("st");
  std::string f = s / "bad.safetensors";
  std::string data = " --data shapes:train=4,val=4,size=16";
  const std::string t8 = "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
  struct Bad {
    std::string name;
    std::vector<uint8_t> bytes;
    std::vector<std::string> expect;
  };
  std::vector<Bad> bads = {
      {"header length beyond the file", st_image(t8, std::vector<uint8_t>(8), 4000), {"header length 4000 runs past the end"}},
      {"header not JSON", st_image("{\"t\": {\"dtype\"", {}), {"header is not valid JSON"}},
      {"unknown dtype", st_image("{\"t\":{\"dtype\":\"Q7\",\"shape\":[2],\"data_offsets\":[0,8]}}", std::vector<uint8_t>(8)),
       {"'t'", "Q7"}},
      {"offsets out of bounds",
       st_image("{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", std::vector<uint8_t>(8)),
       {"tensor 't'", "run past the end of the data buffer"}},
      {"overlapping tensors",
       st_image("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                std::vector<uint8_t>(12)),
       {"'a' [0,8) and 'b' [4,12) overlap"}},
      {"shape disagreeing with offsets",
       st_image("{\"e1.c1.weight\":{\"dtype\":\"F32\",\"shape\":[4,3,3,3],\"data_offsets\":[0,400]}}",
                std::vector<uint8_t>(400)),
       {"tensor 'e1.c1.weight'", "needs 432 bytes", "span 400"}},
  };
  std::vector<Case> cases;
  for (const Bad& b : bads) {
    std::vector<std::string> expect = b.expect;
    expect.insert(expect.begin(), f);
    auto setup = [f, bytes = b.bytes] { write_bytes(f, bytes); };
    cases.push_back({"eval: " + b.name, setup, "eval --threads 1 --weights " + f + data, expect});
    cases.push_back({"train --init: " + b.name, setup,
                     "train --init " + f + data + " --val-data none --batch 2" + kTrainQuick, expect});
    cases.push_back({"predict: " + b.name, setup, "predict --weights " + f + " --input " + f + " --out " + (s / "p"), expect});
    cases.push_back({"train --resume state: " + b.name,
                     [&s, bytes = b.bytes] {
                       fs::create_directories(s / "run");
                       write_bytes(s / "run/state.safetensors", bytes);
                     },
                     "train --resume --out " + (s / "run") + data + " --batch 2" + kTrainQuick,
                     {s / "run/state.safetensors", b.expect[0]}});
  }
  run_cases(cases);
}

TEST_CASE("bad inputs: checkpoints with missing, extra or mis-shaped keys name every key") {
  Scratch s("keys");
  sb::ModelSpec spec = tiny_shapes_spec();
  sb::ModulePtr model = spec.build();
  auto write_variant = [&](const std::string& path, const std::function<void(sb::TensorFile&)>& edit) {
    sb::TensorFile f = model->state_dict();
    f.metadata[sb::kModelMetadataKey] = spec.to_json().dump();
    edit(f);
    sb::save_safetensors(path, f);
  };
  std::string missing = s / "missing.safetensors", extra = s / "extra.safetensors", shaped = s / "shaped.safetensors",
              nometa = s / "nometa.safetensors", badmeta = s / "badmeta.safetensors";
  write_variant(missing, [](sb::TensorFile& f) { f.floats.erase("e1.c1.weight"); });
  write_variant(extra, [](sb::TensorFile& f) { f.floats["e1.n9.weight"] = sb::Tensor::zeros({4}); });
  write_variant(shaped, [](sb::TensorFile& f) { f.floats["head.bias"] = sb::Tensor::zeros({7}); });
  write_variant(nometa, [](sb::TensorFile& f) { f.metadata.clear(); });
  write_variant(badmeta, [](sb::TensorFile& f) { f.metadata[sb::kModelMetadataKey] = "{\"model\": \"unet-s\""; });
  std::string data = " --data shapes:train=4,val=4,size=16 --threads 1";
  std::string train_flags = " --norm gn --groups 2 --base-width 4 --val-data none --batch 2 --steps 1 --threads 1";
  run_cases({
      {"eval: a missing key", {}, "eval --weights " + missing + data, {missing, "e1.c1.weight", "missing"}},
      {"eval: an extra key", {}, "eval --weights " + extra + data, {extra, "e1.n9.weight", "unexpected"}},
      {"eval: a mis-shaped key", {}, "eval --weights " + shaped + data, {shaped, "head.bias: checkpoint (7,), model (5,)"}},
      {"predict: a missing key", {}, "predict --weights " + missing + " --input " + missing + " --out " + (s / "p"),
       {missing, "e1.c1.weight"}},
      {"train --init: a missing key", {}, "train --init " + missing + " --data shapes:train=4,val=4,size=16" + train_flags,
       {missing, "e1.c1.weight", "missing"}},
      {"train --init: an extra key", {}, "train --init " + extra + " --data shapes:train=4,val=4,size=16" + train_flags,
       {extra, "e1.n9.weight"}},
      {"train --init: a mis-shaped key", {}, "train --init " + shaped + " --data shapes:train=4,val=4,size=16" + train_flags,
       {shaped, "head.bias"}},
      {"train --init: weights of another model",
       {},
       "train --init " + shaped + " --data shapes:train=4,val=4,size=16 --norm bn --base-width 4 --val-data none --batch 2 "
       "--steps 1 --threads 1",
       {shaped, "running_mean"}},
      {"eval: no model configuration in the metadata", {}, "eval --weights " + nometa + data,
       {nometa, "no smallbatch model configuration", "--model"}},
      {"eval: the metadata's configuration is not JSON", {}, "eval --weights " + badmeta + data,
       {badmeta, "not valid JSON"}},
  });
}

TEST_CASE("bad inputs: impossible model settings are errors naming the setting") {
  std::string data = " --data shapes:train=4,val=4,size=16 --val-data none --steps 1 --threads 1 --workers 0";
  run_cases({
      {"GroupNorm groups that don't divide the channels", {}, "train --norm gn --base-width 6 --groups 4" + data,
       {"6 channels are not divisible by 4 groups"}},
      {"BatchNorm training with one value per channel (batch 1, 1 x 1 bottleneck)", {},
       "train --model unet --depth 4 --norm bn --base-width 4 --batch 1" + data,
       {"batch_norm", "more than 1 value per channel", "--batch"}},
      {"an unknown model", {}, "train --model resnet-9000" + data, {"unknown model 'resnet-9000'"}},
      {"an unknown norm", {}, "train --norm weird --base-width 4" + data, {"unknown norm 'weird'"}},
      {"an unknown norm in compare", {}, "compare --norms bn,weird --batch-sizes 2 --seeds 1 --epochs 1 --out /tmp/sb_never_made",
       {"weird"}},
      {"a depth the image size can't take", {}, "train --model unet --depth 5 --norm gn --base-width 4 --groups 2" + data,
       {"depth 5", "divisible by 2^depth = 32", "(8, 3, 16, 16)"}},
      {"more classes than the data has", {}, "train --classes 3" + data, {"5 classes", "--classes"}},
  });
}

TEST_CASE("bad inputs: bad flag values name the flag") {
  Scratch s("flags");
  std::string file = s / "a_file";
  write_bytes(file, {'x'});
  std::string data = " --data shapes:train=4,val=4,size=16 --base-width 4 --groups 2 --threads 1";
  run_cases({
      {"zero batch", {}, "train --batch 0" + data, {"--batch"}},
      {"negative batch", {}, "train --batch -3" + data, {"--batch"}},
      {"negative eval batch", {}, "eval --weights " + file + " --batch -1", {"--batch"}},
      {"zero batch size in compare", {}, "compare --batch-sizes 4,0 --out " + (s / "c"), {"--batch-sizes", "4,0"}},
      // The readable check, not CLI11's "Value 0 not in range 0.000000 to 1797...(300 digits)".
      {"zero epochs in compare", {}, "compare --epochs 0 --out " + (s / "c"), {"--epochs: must be positive, got 0"}},
      {"negative seeds in compare", {}, "compare --seeds -2 --out " + (s / "c"), {"--seeds: must be positive, got -2"}},
      {"negative learning rate in compare", {}, "compare --lr -0.1 --out " + (s / "c"),
       {"--lr: must be positive, got -0.1"}},
      {"zero steps in bench", {}, "bench --steps 0", {"--steps: must be positive, got 0"}},
      {"negative rounds in bench", {}, "bench --rounds -3", {"--rounds: must be positive, got -3"}},
      {"negative warm-up in bench", {}, "bench --warmup -1", {"--warmup: must be zero or positive, got -1"}},
      {"non-numeric batch", {}, "train --batch eight" + data, {"--batch", "eight"}},
      {"non-numeric learning rate", {}, "train --lr fast" + data, {"--lr", "fast"}},
      {"negative learning rate", {}, "train --lr -1" + data, {"--lr"}},
      {"fractional epochs", {}, "train --epochs 1.5" + data, {"--epochs", "1.5"}},
      {"zero threads", {}, "train --threads 0 --data shapes", {"--threads"}},
      {"non-numeric seed", {}, "train --seed x" + data, {"--seed"}},
      {"an unknown flag", {}, "train --bacth 2", {"--bacth"}},
      {"train --out is a file", {}, "train --steps 1 --out " + file + data, {"--out", file, "not a directory"}},
      {"train --out under a file (not writable)", {}, "train --steps 1 --out " + file + "/run" + data,
       {"--out", file + "/run"}},
      {"train --out in /proc (not writable, even for root)", {}, "train --steps 1 --out /proc/sb_run" + data,
       {"--out", "/proc/sb_run"}},
      {"train --save under a file", {}, "train --steps 1 --save " + file + "/m.safetensors" + data,
       {"--save", file + "/m.safetensors"}},
      {"compare --out is a file", {}, "compare --batch-sizes 2 --seeds 1 --epochs 1 --out " + file, {"--out", file}},
      {"compare --out under a file", {}, "compare --batch-sizes 2 --seeds 1 --epochs 1 --out " + file + "/sweep",
       {"--out", file + "/sweep"}},
      {"data shapes --out under a file", {}, "data shapes --count 2 --val-count 2 --image-size 16 --out " + file + "/d",
       {file + "/d"}},
  });
}

TEST_CASE("bad inputs: SMALLBATCH_STREAMING_MIN_BYTES is validated, and 0 streams every norm output") {
  const std::string args = "bench --op groupnorm --groups 2 --shape 2,4,8,8 --steps 1 --warmup 0 --threads 1";
  setenv("SMALLBATCH_STREAMING_MIN_BYTES", "lots", 1);
  sbtest::CliResult bad = sbtest::run_cli(args);
  setenv("SMALLBATCH_STREAMING_MIN_BYTES", "0", 1);
  sbtest::CliResult zero = sbtest::run_cli(args);
  unsetenv("SMALLBATCH_STREAMING_MIN_BYTES");
  INFO("stderr: " << bad.err);
  CHECK(bad.code > 0);
  CHECK(bad.code < 128);
  CHECK(bad.err.find("SMALLBATCH_STREAMING_MIN_BYTES") != std::string::npos);
  CHECK(bad.err.find("'lots'") != std::string::npos);
  CHECK(zero.code == 0);
}
