// --data SPEC parsing: the prefix picks the source; the data flags pick limits and transforms.
#include "tools/app/data_spec.h"

#include "core/errors.h"
#include "datasets/shapes.h"

namespace sb {

namespace {

struct ParsedSpec {
  std::string kind, arg;
};

ParsedSpec parse_spec(const std::string& spec) {
  auto colon = spec.find(':');
  ParsedSpec p{spec.substr(0, colon), colon == std::string::npos ? "" : spec.substr(colon + 1)};
  static const char* known = "known: shapes[:train=N,val=M,size=S,difficulty=D,seed=X], tensors:FILE, "
                             "folder:DIR, voc:DIR, pets:DIR";
  if (p.kind == "shapes") return p;
  SB_CHECK(p.kind == "tensors" || p.kind == "folder" || p.kind == "voc" || p.kind == "pets", "--data: unknown source '",
           spec, "' (", known, ")");
  SB_CHECK(!p.arg.empty(), "--data ", p.kind, ": needs a ", p.kind == "tensors" ? "file" : "directory", ", as ",
           p.kind, p.kind == "tensors" ? ":FILE.safetensors" : ":DIR");
  return p;
}

void check_options(const DataOptions& opt) {
  SB_CHECK(opt.image_size >= 0, "--image-size: must be positive, got ", opt.image_size);
  SB_CHECK(opt.limit >= 0, "--limit: must be non-negative, got ", opt.limit);
  SB_CHECK(opt.max_pixels > 0, "--max-pixels: must be positive, got ", opt.max_pixels);
  // S x S pixels are allocated per image: the same bound as a decoded image's, checked before
  // S * S can overflow.
  SB_CHECK(opt.image_size <= (int64_t{1} << 31) && opt.image_size * opt.image_size <= opt.max_pixels, "--image-size: ",
           opt.image_size, " x ", opt.image_size, " pixels is more than --max-pixels (", opt.max_pixels, ")");
  SB_CHECK(opt.pets_border == "ignore" || opt.pets_border == "class",
           "--pets-border: expected 'ignore' or 'class', got '", opt.pets_border, "'");
}

void check_fixed_classes(const std::string& spec, int64_t have, int64_t asked) {
  SB_CHECK(asked <= 0 || asked == have, "--data ", spec, " has ", have, " classes, but ", asked,
           " were asked for (--classes)");
}

// The first `count` samples of another dataset (--limit on sources that don't cap themselves).
class HeadDataset : public Dataset {
 public:
  HeadDataset(DatasetPtr base, int64_t count) : base_(std::move(base)), count_(std::min(count, base_->size())) {}
  int64_t size() const override { return count_; }
  Sample get(int64_t i) const override {
    SB_CHECK(i >= 0 && i < count_, "sample ", i, " out of range [0, ", count_, ")");
    return base_->get(i);
  }
  int64_t num_classes() const override { return base_->num_classes(); }
  std::string describe() const override { return str(base_->describe(), ", first ", count_); }

 private:
  DatasetPtr base_;
  int64_t count_;
};

}  // namespace

DatasetPtr open_dataset(const std::string& spec, Split split, int64_t classes, const DataOptions& opt) {
  check_options(opt);
  ParsedSpec p = parse_spec(spec);
  const std::string split_name = split == Split::Train ? "train" : "val";
  FileReadOptions fo;
  fo.limit = opt.limit, fo.skip_bad = opt.skip_bad, fo.max_pixels = opt.max_pixels;
  if (p.kind == "shapes") {
    check_fixed_classes(spec, static_cast<int64_t>(kShapesClasses.size()), classes);
    ShapesOptions defaults;
    defaults.seed = opt.seed;
    ShapesOptions so = parse_shapes_params(p.arg, defaults);
    if (opt.image_size > 0) so.size = opt.image_size;
    SB_CHECK(so.size >= 16, "--image-size: the shapes set needs at least 16 pixels, got ", so.size);
    return std::make_shared<ShapesDataset>(so, split == Split::Train, opt.limit);
  }
  if (p.kind == "tensors") {
    DatasetPtr d = std::make_shared<TensorsDataset>(p.arg, classes);
    if (opt.limit > 0 && opt.limit < d->size()) d = std::make_shared<HeadDataset>(d, opt.limit);
    return d;
  }
  if (p.kind == "folder") return open_folder(p.arg, split_name, classes, fo);
  if (p.kind == "voc") {
    check_fixed_classes(spec, 21, classes);
    return open_voc(p.arg, split_name, fo);
  }
  bool border = opt.pets_border == "class";
  check_fixed_classes(spec + (border ? " with --pets-border class" : ""), border ? 3 : 2, classes);
  return open_pets(p.arg, split_name, border, fo);
}

TransformOptions transform_options(const std::string& spec, Split split, const DataOptions& opt) {
  check_options(opt);
  ParsedSpec p = parse_spec(spec);
  TransformOptions t;
  t.mean = kImageNetMean, t.std = kImageNetStd;  // voc:, pets:, and folder: without its own statistics
  t.image_size = opt.image_size;
  t.augment = opt.augment && split == Split::Train;
  if (p.kind == "tensors") {
    SB_CHECK(opt.image_size == 0, "--image-size: tensors: data is used as is; resize it when exporting instead");
    SB_CHECK(!t.augment, "--augment: tensors: data is used as is (already normalized), so it cannot be augmented");
    t.normalize = false;
  } else if (p.kind == "shapes") {
    t.mean = kShapesMean, t.std = kShapesStd;
  } else if (p.kind == "folder") {
    FolderInfo info = read_folder_info(p.arg);
    if (info.has_normalization) t.mean = info.mean, t.std = info.std;
  }
  return t;
}

SampleTransform make_transform(const std::string& spec, Split split, const DataOptions& opt) {
  return build_transform(transform_options(spec, split, opt));
}

std::vector<SkippedSample> skipped_samples(const Dataset& data) {
  if (auto* f = dynamic_cast<const FileSegDataset*>(&data)) return f->skipped();
  return {};
}

std::string skip_report(const Dataset& data, size_t max_listed) {
  auto skipped = skipped_samples(data);
  if (skipped.empty()) return "";
  std::string s = str("skipped ", skipped.size(), " bad sample", skipped.size() == 1 ? "" : "s", " (--skip-bad) in ",
                      data.describe(), ":");
  for (size_t i = 0; i < skipped.size() && i < max_listed; ++i) s += "\n  " + skipped[i].reason;
  if (skipped.size() > max_listed) s += str("\n  ... and ", skipped.size() - max_listed, " more");
  return s;
}

std::string sample_name(const Dataset& data, int64_t i) {
  if (auto* f = dynamic_cast<const FileSegDataset*>(&data))
    if (i >= 0 && i < f->size()) return str("sample ", i, " (", f->entry(i).image, ")");
  return str("sample ", i);
}

}  // namespace sb

namespace sb {

std::vector<std::string> class_names(const std::string& spec, int64_t classes) {
  std::vector<std::string> names;
  static const std::vector<std::string> voc = {
      "background", "aeroplane", "bicycle", "bird",  "boat",        "bottle", "bus",   "car",  "cat",   "chair", "cow",
      "diningtable", "dog",     "horse",   "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"};
  try {
    ParsedSpec p = parse_spec(spec);
    if (p.kind == "shapes") names.assign(kShapesClasses.begin(), kShapesClasses.end());
    else if (p.kind == "voc") names = voc;
    else if (p.kind == "pets") names = {"background", "pet", "border"};
    else if (p.kind == "folder") names = read_folder_info(p.arg).class_names;
  } catch (const std::exception&) {  // names are a courtesy: a source that cannot say has none
  }
  names.resize(static_cast<size_t>(std::max<int64_t>(0, classes)));
  for (size_t k = 0; k < names.size(); ++k)
    if (names[k].empty()) names[k] = "class " + std::to_string(k);
  return names;
}

}  // namespace sb
