// Writes the committed seed corpora (fuzz/corpus/<target>/) and is kept so they can be remade:
//   build-fuzz/fuzz_make_seeds fuzz/corpus
// and, with --registry-tokens, prints fuzz_spec's dictionary entries for models, options and norms.
// Small valid files of every kind each target reads, plus the edge cases worth starting from.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/io/safetensors.h"
#include "datasets/image_io.h"
#include "models/registry.h"

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;

namespace {

fs::path g_root;

void put(const std::string& target, const std::string& name, const Bytes& b) {
  fs::create_directories(g_root / target);
  std::ofstream(g_root / target / name, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), b.size());
}
Bytes text(const std::string& s) { return Bytes(s.begin(), s.end()); }
Bytes read(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(f), {});
}

// ---- PNG by hand, for what stb_image_write cannot write: palette and 16-bit images ----
uint32_t crc32(const uint8_t* p, size_t n, uint32_t c = 0xffffffffu) {
  for (size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
  }
  return c;
}
void be32(Bytes& o, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) o.push_back(static_cast<uint8_t>(v >> s));
}
void chunk(Bytes& o, const char* type, const Bytes& data) {
  be32(o, static_cast<uint32_t>(data.size()));
  size_t start = o.size();
  o.insert(o.end(), type, type + 4);
  o.insert(o.end(), data.begin(), data.end());
  be32(o, crc32(&o[start], o.size() - start) ^ 0xffffffffu);
}
// Rows already filtered (a 0 filter byte before each); zlib with stored blocks.
Bytes png(uint32_t w, uint32_t h, uint8_t depth, uint8_t colour, const Bytes& raw, const Bytes& plte = {}) {
  Bytes o = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a};
  Bytes ihdr;
  be32(ihdr, w), be32(ihdr, h);
  ihdr.insert(ihdr.end(), {depth, colour, 0, 0, 0});
  chunk(o, "IHDR", ihdr);
  if (!plte.empty()) chunk(o, "PLTE", plte);
  Bytes z = {0x78, 0x01, 0x01, static_cast<uint8_t>(raw.size()), static_cast<uint8_t>(raw.size() >> 8),
             static_cast<uint8_t>(~raw.size()), static_cast<uint8_t>(~raw.size() >> 8)};
  z.insert(z.end(), raw.begin(), raw.end());
  uint32_t a = 1, b = 0;
  for (uint8_t c : raw) a = (a + c) % 65521, b = (b + a) % 65521;
  be32(z, (b << 16) | a);
  chunk(o, "IDAT", z);
  chunk(o, "IEND", {});
  return o;
}

// ---- BMP, 24-bit, bottom-up ----
Bytes bmp(int w, int h, uint8_t base) {
  int row = (w * 3 + 3) / 4 * 4;
  uint32_t size = 54 + row * h;
  Bytes o(size, 0);
  auto le32 = [&](size_t at, uint32_t v) {
    for (int k = 0; k < 4; ++k) o[at + k] = static_cast<uint8_t>(v >> (8 * k));
  };
  o[0] = 'B', o[1] = 'M';
  le32(2, size), le32(10, 54), le32(14, 40), le32(18, w), le32(22, h);
  o[26] = 1, o[28] = 24;
  le32(34, row * h);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w * 3; ++x) o[54 + y * row + x] = static_cast<uint8_t>(base + 7 * x + 13 * y);
  return o;
}

// ---- an image-target input: options byte, image length (LE16), image, mask ----
Bytes sample(uint8_t opts, const Bytes& image, const Bytes& mask) {
  Bytes o = {opts, static_cast<uint8_t>(image.size()), static_cast<uint8_t>(image.size() >> 8)};
  o.insert(o.end(), image.begin(), image.end());
  o.insert(o.end(), mask.begin(), mask.end());
  return o;
}

// ---- safetensors by hand, for dtypes save_safetensors does not write ----
Bytes safetensors(const nlohmann::json& header, const Bytes& data) {
  std::string h = header.dump();
  Bytes o(8);
  uint64_t n = h.size();
  std::memcpy(o.data(), &n, 8);
  o.insert(o.end(), h.begin(), h.end());
  o.insert(o.end(), data.begin(), data.end());
  return o;
}

void seeds_safetensors() {
  const std::string t = "fuzz_safetensors";
  fs::path tmp = fs::temp_directory_path() / "sb-make-seeds.safetensors";
  auto saved = [&](const sb::TensorFile& f) {
    sb::save_safetensors(tmp.string(), f);
    Bytes b = read(tmp);
    fs::remove(tmp);
    return b;
  };
  // The tiny module the target loads into, exactly (a strict load that succeeds)...
  sb::TensorFile tiny;
  tiny.floats["w"] = sb::Tensor::ones({2, 1, 3, 3});
  tiny.floats["b"] = sb::Tensor::zeros({2});
  tiny.floats["n.weight"] = sb::Tensor::ones({2});
  tiny.floats["n.running_mean"] = sb::Tensor::zeros({2});
  tiny.floats["n.running_var"] = sb::Tensor::ones({2});
  tiny.ints["n.num_batches_tracked"] = sb::IndexTensor::zeros({});
  tiny.metadata["format"] = "pt";
  put(t, "tiny_module.safetensors", saved(tiny));
  // ...and near misses: a mis-shaped, a missing, an extra and a wrong-kind key.
  sb::TensorFile bad = tiny;
  bad.floats["b"] = sb::Tensor::zeros({3});
  bad.floats.erase("n.weight");
  bad.floats["extra"] = sb::Tensor::zeros({1});
  bad.ints.erase("n.num_batches_tracked");
  bad.floats["n.num_batches_tracked"] = sb::Tensor::zeros({});
  put(t, "tiny_module_mismatch.safetensors", saved(bad));
  // A real checkpoint of a very small unet-s, with its model configuration in the metadata.
  sb::ModelOptions mo;
  mo.base_width = 2, mo.norm.groups = 1, mo.classes = 2, mo.in_channels = 1;
  sb::TensorFile ck = sb::make_model("unet-s", mo)->state_dict();
  ck.metadata["smallbatch.model"] =
      R"({"model":"unet-s","norm":"gn","groups":1,"classes":2,"in_channels":1,"base_width":2,"depth":0})";
  put(t, "unet_s_tiny.safetensors", saved(ck));
  // A tensors: dataset.
  sb::TensorFile ds;
  ds.floats["images"] = sb::Tensor::full({2, 3, 2, 2}, 0.5f);
  ds.ints["masks"] = sb::IndexTensor::zeros({2, 2, 2});
  put(t, "tensors_dataset.safetensors", saved(ds));
  // Every dtype, scalar and empty shapes.
  Bytes data;
  nlohmann::json h = nlohmann::json::object();
  uint64_t off = 0;
  auto add = [&](const char* name, const char* dtype, std::vector<uint64_t> shape, size_t bytes) {
    h[name] = {{"dtype", dtype}, {"shape", shape}, {"data_offsets", {off, off + bytes}}};
    for (size_t i = 0; i < bytes; ++i) data.push_back(static_cast<uint8_t>(0x3c + 17 * i));
    off += bytes;
  };
  add("f16", "F16", {2}, 4);
  add("bf16", "BF16", {2}, 4);
  add("f64", "F64", {1}, 8);
  add("f32_scalar", "F32", {}, 4);
  add("empty", "F32", {0, 3}, 0);
  add("i32", "I32", {1}, 4);
  add("u8", "U8", {3}, 3);
  add("i8", "I8", {1}, 1);
  add("u16", "U16", {1}, 2);
  add("i16", "I16", {1}, 2);
  add("u32", "U32", {1}, 4);
  add("u64", "U64", {1}, 8);
  add("bool", "BOOL", {2}, 2);
  h["__metadata__"] = {{"k", "v"}};
  put(t, "all_dtypes.safetensors", safetensors(h, data));
  put(t, "empty_header.safetensors", safetensors(nlohmann::json::object(), {}));
  put(t, "reference.safetensors", read(fs::path(SB_SOURCE_DIR) / "tests/fixtures/safetensors_reference.safetensors"));
}

void seeds_image() {
  const std::string t = "fuzz_image";
  uint8_t rgb[4 * 4 * 4];
  for (int i = 0; i < 64; ++i) rgb[i] = static_cast<uint8_t>(i * 4);
  uint8_t idx[16], tri[16], voc[16 * 3];
  for (int i = 0; i < 16; ++i) {
    idx[i] = static_cast<uint8_t>(i % 5);
    tri[i] = static_cast<uint8_t>(1 + i % 3);
    auto c = sb::voc_color(i % 4 == 3 ? 255 : i % 4);
    std::memcpy(voc + 3 * i, c.data(), 3);
  }
  Bytes png_rgb = sb::encode_png(rgb, 4, 4, 3), png_rgba = sb::encode_png(rgb, 4, 4, 4);
  Bytes png_grey = sb::encode_png(rgb, 4, 4, 1), png_ga = sb::encode_png(rgb, 4, 4, 2);
  Bytes jpg = sb::encode_jpg(rgb, 4, 4, 3, 90), jpg_grey = sb::encode_jpg(rgb, 4, 4, 1, 50);
  Bytes mask_idx = sb::encode_png(idx, 4, 4, 1), mask_tri = sb::encode_png(tri, 4, 4, 1);
  Bytes mask_voc = sb::encode_png(voc, 4, 4, 3);
  // Options byte: bits 0-1 encoding (indices, voc, trimap, trimap+border), bit 2 skip_bad,
  // bits 3-4 max_pixels, bit 5 resize, bit 6 resize size, bit 7 augment.
  put(t, "png_indices", sample(0x00, png_rgb, mask_idx));
  put(t, "png_indices_resize_augment", sample(0xe0, png_rgba, mask_idx));
  put(t, "jpg_voc", sample(0x01, jpg, mask_voc));
  put(t, "jpg_voc_skipbad", sample(0x25, jpg_grey, mask_voc));
  put(t, "png_trimap", sample(0x02, png_grey, mask_tri));
  put(t, "png_trimap_border", sample(0x83, png_ga, mask_tri));
  put(t, "bmp_indices", sample(0x20, bmp(4, 4, 9), mask_idx));
  put(t, "bmp_odd_width", sample(0x00, bmp(3, 5, 1), sb::encode_png(idx, 3, 5, 1)));
  // A palette PNG mask, as VOC ships them (the committed test fixture, 6 x 4).
  Bytes voc_fixture = read(fs::path(SB_SOURCE_DIR) / "tests/fixtures/voc_mask.png");
  uint8_t rgb64[6 * 4 * 3] = {};
  put(t, "png_voc_palette", sample(0x01, sb::encode_png(rgb64, 6, 4, 3), voc_fixture));
  put(t, "png_pets_fixture", sample(0x02, sb::encode_png(rgb64, 6, 4, 3),
                                    read(fs::path(SB_SOURCE_DIR) / "tests/fixtures/pets_trimap.png")));
  // A 16-bit grey mask, a 16-bit RGB image, and a palette image.
  Bytes raw16;
  for (int y = 0; y < 4; ++y) {
    raw16.push_back(0);
    for (int x = 0; x < 4; ++x) raw16.insert(raw16.end(), {0, static_cast<uint8_t>((x + y) % 5)});
  }
  Bytes raw48;
  for (int y = 0; y < 4; ++y) {
    raw48.push_back(0);
    for (int x = 0; x < 12; ++x) raw48.insert(raw48.end(), {static_cast<uint8_t>(x * 20), 0});
  }
  Bytes rawp;
  for (int y = 0; y < 4; ++y) rawp.insert(rawp.end(), {0, 0, 1, 2, 1});
  Bytes plte = {0, 0, 0, 128, 0, 0, 0, 128, 0};
  put(t, "png16_mask", sample(0x00, png(4, 4, 16, 2, raw48), png(4, 4, 16, 0, raw16)));
  put(t, "png_palette_both", sample(0x01, png(4, 4, 8, 3, rawp, plte), png(4, 4, 8, 3, rawp, plte)));
  // Edge cases: a size mismatch, a label out of range, a truncated JPEG, an empty mask, a PNG
  // header claiming 100000 x 100000 pixels, a colour mask where indices are expected.
  put(t, "size_mismatch", sample(0x00, png_rgb, sb::encode_png(idx, 2, 8, 1)));
  uint8_t big[16];
  std::memset(big, 200, 16);
  put(t, "label_out_of_range", sample(0x00, png_rgb, sb::encode_png(big, 4, 4, 1)));
  put(t, "truncated_jpg", sample(0x00, Bytes(jpg.begin(), jpg.begin() + jpg.size() / 2), mask_idx));
  put(t, "empty_mask", sample(0x00, png_rgb, {}));
  Bytes huge = png_rgb;
  huge[16] = 0, huge[17] = 1, huge[18] = 0x86, huge[19] = 0xa0;  // width 100000
  huge[20] = 0, huge[21] = 1, huge[22] = 0x86, huge[23] = 0xa0;  // height 100000
  put(t, "png_claims_100000x100000", sample(0x00, huge, mask_idx));
  put(t, "colour_mask_for_indices", sample(0x00, png_rgb, mask_voc));
}

void seeds_spec() {
  const std::string t = "fuzz_spec";
  auto s = [&](const std::string& name, char mode, uint8_t opts, const std::string& body) {
    Bytes b = {static_cast<uint8_t>(mode), opts};
    b.insert(b.end(), body.begin(), body.end());
    put(t, name, b);
  };
  // Options byte: bit 0 val split, bit 1 limit 1, bit 2 skip_bad, bit 3 image size 16,
  // bit 4 pets border as class, bit 5 max_pixels 4096 (else 8), bits 6-7 classes 0/5/21/2.
  s("shapes_default", 's', 0x20, "shapes");
  s("shapes_params", 's', 0x21, "shapes:train=4,val=2,size=16,difficulty=0.5,seed=3");
  s("shapes_size64", 's', 0x28, "shapes:size=64,difficulty=3");
  s("shapes_bad_key", 's', 0x20, "shapes:train=1,colour=2");
  s("tensors", 's', 0x20, "tensors:x");
  s("folder", 's', 0x20, "folder:x");
  s("folder_val_resize", 's', 0x29, "folder:x");
  s("voc", 's', 0xa0, "voc:x");
  s("pets", 's', 0x30, "pets:x");
  s("unknown", 's', 0x20, "imagenet:x");
  s("voc_list", 'v', 0x20, "a\nb\n");
  s("voc_list_comments", 'v', 0x24, "# comment\n\n  a  extra\r\nc\nd\nmissing\n");
  s("pets_list", 'p', 0x20, "a 1 1 1\nb 2 2 1\n");
  s("pets_list_bad", 'p', 0x34, "c 1 1 1\n#x\nd\n");
  s("folder_json", 'j', 0x20, R"({"classes": 5, "class_names": ["a","b","c","d","e"], "mean": [0.5,0.5,0.5], "std": [0.25,0.25,0.25]})");
  s("folder_json_partial", 'j', 0x28, R"({"mean": [0.5, 0.5, 0.5]})");
  s("model_unet_s", 'm', 0, R"({"model":"unet-s","norm":"gn","groups":1,"classes":2,"in_channels":1,"base_width":2,"depth":0})");
  s("model_unet", 'm', 0, R"({"model":"unet","norm":"bn","groups":2,"classes":3,"in_channels":3,"base_width":2,"depth":3})");
  s("model_fcn", 'm', 0, R"({"model":"fcn","norm":"in","groups":1,"classes":21,"in_channels":3,"base_width":2,"depth":2,"data":"voc:x"})");
  s("model_bad_groups", 'm', 0, R"({"model":"unet-s","norm":"gn","groups":3,"classes":2,"in_channels":1,"base_width":4})");
}

}  // namespace

// The model-configuration tokens of fuzz_spec's dictionary, from the registries themselves (model
// names, option keys, norm names), so a new model, option or norm reaches the fuzzer unasked.
// tools/fuzz appends them to fuzz/fuzz_spec.dict's hand-kept data-spec tokens.
void registry_tokens() {
  std::vector<std::string> words = {"model", "data"};
  for (const auto& m : sb::registered_models()) words.push_back(m.name);
  for (const auto& f : sb::model_option_fields()) words.push_back(f.key);
  for (const auto& n : sb::norm_kinds()) words.push_back(n);
  for (const auto& w : words) std::printf("\"\\\"%s\\\"\"\n", w.c_str());
}

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "--registry-tokens") == 0) {
    registry_tokens();
    return 0;
  }
  g_root = argc > 1 ? argv[1] : "fuzz/corpus";
  seeds_safetensors();
  seeds_image();
  seeds_spec();
  std::printf("seeds written under %s\n", g_root.string().c_str());
  return 0;
}
