// libFuzzer target: the text the user or a file hands to the parsers.
//   byte 0 = 's': a --data SPEC through open_dataset (shapes parameters, the source prefixes);
//                 file sources are pointed at small fixture datasets made at start-up, so
//                 nothing outside the scratch directory is read;
//            'v': a VOC split list (ImageSets/Segmentation/train.txt) through open_voc;
//            'p': an Oxford-IIIT Pet split list (annotations/trainval.txt) through open_pets;
//            'j': a folder: DIR/dataset.json through open_folder and transform_options;
//            'm': the model configuration a checkpoint carries (metadata "smallbatch.model",
//                 JSON) through read_model_spec and make_model, as eval and predict do.
//   byte 1: options (split, classes, limit, skip_bad, image size); the rest is the text.
// Each input stays cheap: shapes samples are generated only at small sizes.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <string>

#include "core/io/safetensors.h"
#include "datasets/image_io.h"
#include "datasets/shapes.h"
#include "fuzz_common.h"
#include "tools/app/checkpoint.h"
#include "tools/app/data_spec.h"

namespace fs = std::filesystem;

namespace {

struct Fixtures {
  std::string voc, pets, folder, tensors;
};

void write_image_pair(const fs::path& image, const fs::path& mask, bool jpeg, uint8_t label_a, uint8_t label_b,
                      bool voc_colours) {
  uint8_t rgb[4 * 4 * 3];
  for (int i = 0; i < 48; ++i) rgb[i] = static_cast<uint8_t>(i * 5);
  if (jpeg) sb::write_jpg(image.string(), rgb, 4, 4, 3);
  else sb::write_png(image.string(), rgb, 4, 4, 3);
  if (voc_colours) {
    uint8_t m[16 * 3];
    for (int i = 0; i < 16; ++i) {
      auto c = sb::voc_color(i < 8 ? label_a : label_b);
      m[3 * i] = c[0], m[3 * i + 1] = c[1], m[3 * i + 2] = c[2];
    }
    sb::write_png(mask.string(), m, 4, 4, 3);
  } else {
    uint8_t m[16];
    for (int i = 0; i < 16; ++i) m[i] = i < 8 ? label_a : label_b;
    sb::write_png(mask.string(), m, 4, 4, 1);
  }
}

// Tiny datasets of each layout: ids "a" and "b" are good, "c" has a bad label, "d" has no mask.
const Fixtures& fixtures() {
  static const Fixtures fx = [] {
    Fixtures f;
    fs::path root = sbfuzz::scratch_dir();
    fs::path voc = root / "voc";
    fs::create_directories(voc / "JPEGImages");
    fs::create_directories(voc / "SegmentationClass");
    fs::create_directories(voc / "ImageSets" / "Segmentation");
    write_image_pair(voc / "JPEGImages/a.jpg", voc / "SegmentationClass/a.png", true, 0, 1, true);
    write_image_pair(voc / "JPEGImages/b.jpg", voc / "SegmentationClass/b.png", true, 20, 255, true);
    write_image_pair(voc / "JPEGImages/c.jpg", voc / "SegmentationClass/c.png", true, 0, 40, true);
    write_image_pair(voc / "JPEGImages/d.jpg", voc / "d-unused.png", true, 0, 0, true);
    sbfuzz::write_text((voc / "ImageSets/Segmentation/train.txt").string(), "a\nb\n");
    sbfuzz::write_text((voc / "ImageSets/Segmentation/val.txt").string(), "a\nb\n");
    f.voc = voc.string();

    fs::path pets = root / "pets";
    fs::create_directories(pets / "images");
    fs::create_directories(pets / "annotations" / "trimaps");
    write_image_pair(pets / "images/a.jpg", pets / "annotations/trimaps/a.png", true, 1, 2, false);
    write_image_pair(pets / "images/b.jpg", pets / "annotations/trimaps/b.png", true, 3, 1, false);
    write_image_pair(pets / "images/c.jpg", pets / "annotations/trimaps/c.png", true, 0, 1, false);
    write_image_pair(pets / "images/d.jpg", pets / "d-unused.png", true, 1, 1, false);
    sbfuzz::write_text((pets / "annotations/trainval.txt").string(), "a 1 1 1\nb 2 2 1\n");
    sbfuzz::write_text((pets / "annotations/test.txt").string(), "a 1 1 1\nb 2 2 1\n");
    f.pets = pets.string();

    fs::path folder = root / "folder";
    for (const char* split : {"train", "val"}) {
      fs::create_directories(folder / split / "images");
      fs::create_directories(folder / split / "masks");
      write_image_pair(folder / split / "images/a.png", folder / split / "masks/a.png", false, 0, 4, false);
      write_image_pair(folder / split / "images/b.jpg", folder / split / "masks/b.png", true, 1, 255, false);
    }
    f.folder = folder.string();

    sb::TensorFile t;
    t.floats["images"] = sb::Tensor::zeros({2, 3, 4, 4});
    t.ints["masks"] = sb::IndexTensor::zeros({2, 4, 4});
    t.ints["masks"][5] = 3;
    f.tensors = (root / "tensors.safetensors").string();
    sb::save_safetensors(f.tensors, t);
    return f;
  }();
  return fx;
}

// Reads a sample and runs the loader's transform on it, as training and evaluation do.
void touch(const sb::DatasetPtr& d, const std::string& spec, sb::Split split, const sb::DataOptions& o) {
  if (!d || d->size() <= 0) return;
  (void)d->describe();
  (void)sb::skip_report(*d);
  if (auto* shapes = dynamic_cast<const sb::ShapesDataset*>(d.get()))
    if (shapes->options().size > 64) return;  // generation cost grows with the area
  sb::Sample s = d->get(d->size() - 1);
  sb::SampleTransform tf = sb::make_transform(spec, split, o);
  sb::Generator gen(7);
  if (tf) s = tf(s, gen);
}

sb::DataOptions options_from(uint8_t b) {
  sb::DataOptions o;
  o.limit = (b >> 1) & 1;                         // 0 (all) or 1
  o.skip_bad = (b >> 2) & 1;
  o.image_size = (b >> 3) & 1 ? 16 : 0;
  o.pets_border = (b >> 4) & 1 ? "class" : "ignore";
  o.max_pixels = (b >> 5) & 1 ? 4096 : 8;          // 8 refuses the 4 x 4 fixtures
  return o;
}

// Puts a fixture file back to its default content when the input that replaced it is done, so
// every input sees the same fixtures whatever ran before it.
struct Restore {
  std::string path, text;
  ~Restore() {
    std::error_code ec;
    if (text.empty()) fs::remove(path, ec);
    else sbfuzz::write_text(path, text);
  }
};

void run(char mode, uint8_t b, const std::string& text) {
  const Fixtures& fx = fixtures();
  const sb::Split split = b & 1 ? sb::Split::Val : sb::Split::Train;
  const int64_t classes = (b >> 6) == 0 ? 0 : (b >> 6) == 1 ? 5 : (b >> 6) == 2 ? 21 : 2;
  sb::DataOptions o = options_from(b);
  switch (mode) {
    case 's': {
      std::string spec = text;
      // Point the file sources at the fixtures; the rest of the spec is parsed as given.
      auto colon = spec.find(':');
      std::string kind = spec.substr(0, colon);
      if (colon != std::string::npos && colon + 1 < spec.size()) {
        if (kind == "voc") spec = "voc:" + fx.voc;
        else if (kind == "pets") spec = "pets:" + fx.pets;
        else if (kind == "folder") spec = "folder:" + fx.folder;
        else if (kind == "tensors") spec = "tensors:" + fx.tensors;
      }
      if (kind == "shapes" && colon != std::string::npos) (void)sb::parse_shapes_params(spec.substr(colon + 1));
      sb::DatasetPtr d = sb::open_dataset(spec, split, classes, o);
      touch(d, spec, split, o);
      break;
    }
    case 'v': {
      Restore r{fx.voc + "/ImageSets/Segmentation/" + (split == sb::Split::Train ? "train" : "val") + ".txt",
                "a\nb\n"};
      sbfuzz::write_text(r.path, text);
      touch(sb::open_dataset("voc:" + fx.voc, split, classes == 21 ? 21 : 0, o), "voc:" + fx.voc, split, o);
      break;
    }
    case 'p': {
      Restore r{fx.pets + "/annotations/" + (split == sb::Split::Train ? "trainval" : "test") + ".txt",
                "a 1 1 1\nb 2 2 1\n"};
      sbfuzz::write_text(r.path, text);
      touch(sb::open_dataset("pets:" + fx.pets, split, 0, o), "pets:" + fx.pets, split, o);
      break;
    }
    case 'j': {
      Restore r{fx.folder + "/dataset.json", ""};
      sbfuzz::write_text(r.path, text);
      (void)sb::read_folder_info(fx.folder);
      touch(sb::open_dataset("folder:" + fx.folder, split, classes == 5 ? 5 : 0, o), "folder:" + fx.folder, split, o);
      break;
    }
    case 'm': {
      sb::TensorFile f;
      f.source = "fuzz.safetensors";
      f.metadata[sb::kModelMetadataKey] = text;
      sb::ModelSpec spec = sb::read_model_spec(f);
      (void)spec.to_json().dump();
      // Build small models (cheap) and hostile ones (make_model must refuse them before it
      // allocates: an OOM or an overflow there is a bug); skip the legitimately large ones in
      // between, which would only be slow. The estimate is the harness's own, with a margin.
      const sb::ModelOptions& mo = spec.options;
      double widest = static_cast<double>(mo.base_width) * (1 << std::clamp<int64_t>(mo.depth, 2, 8));
      double params = 36 * widest * widest + 9.0 * mo.in_channels * mo.base_width + double(mo.classes) * widest;
      bool small = mo.base_width <= 8 && mo.depth <= 4 && mo.classes <= 64 && mo.in_channels <= 16;
      if (!small && params < 0x1p32) break;
      sb::ModulePtr m = spec.build();
      (void)m->num_parameters();
      break;
    }
    default: break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  try {
    run(static_cast<char>(data[0]), data[1], std::string(reinterpret_cast<const char*>(data + 2), size - 2));
  } catch (const std::exception&) {
  }
  return 0;
}
