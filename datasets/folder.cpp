// The file-based segmentation reader and its three layouts: folder:, voc: and pets:.
#include "datasets/folder.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/io/fileio.h"
#include "datasets/image_io.h"

namespace sb {

namespace fs = std::filesystem;

namespace {

// Runs f and returns its sb::Error message, or "" when it succeeds.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

void check_labels(const IndexTensor& m, int64_t classes, const std::string& path, bool voc) {
  int64_t W = m.size(1);
  for (int64_t p = 0; p < m.numel(); ++p) {
    int64_t v = m[p];
    if (v == 255 || (v >= 0 && v < classes)) continue;
    if (voc && v >= 0 && v < 256) {
      auto c = voc_color(static_cast<int>(v));
      fail(path, ": pixel (", p / W, ", ", p % W, ") has colour (", +c[0], ", ", +c[1], ", ", +c[2],
           "), VOC index ", v, ", which is not a class in [0, ", classes, ") nor the boundary (224, 224, 192)");
    }
    fail(path, ": label ", v, " at pixel (", p / W, ", ", p % W, "), but labels must be in [0, ", classes,
         ") or 255 (ignore)");
  }
}

// The lines' first tokens, skipping blank lines and '#' comments.
std::vector<std::pair<std::string, int>> read_id_list(const fs::path& list) {
  std::istringstream f(read_file(list.string()));  // a regular file: a FIFO must not block
  std::vector<std::pair<std::string, int>> ids;
  std::string line;
  for (int n = 1; std::getline(f, line); ++n) {
    std::istringstream ss(line);
    std::string id;
    if (!(ss >> id) || id[0] == '#') continue;
    ids.push_back({id, n});
  }
  return ids;
}

// The entries of a split list: <images>/<id><image_ext> and <masks>/<id>.png, with a problem
// noted for every file the list names that does not exist.
std::vector<FileEntry> entries_from_list(const fs::path& list, const fs::path& images, const std::string& image_ext,
                                         const fs::path& masks) {
  std::vector<FileEntry> entries;
  for (auto& [id, line] : read_id_list(list)) {
    FileEntry e{(images / (id + image_ext)).string(), (masks / (id + ".png")).string(), ""};
    std::error_code ec;
    for (const std::string* p : {&e.image, &e.mask})
      if (e.problem.empty() && !fs::is_regular_file(*p, ec))
        e.problem = str(*p, ": does not exist, but line ", line, " of ", list.string(), " names '", id, "'");
    entries.push_back(std::move(e));
  }
  return entries;
}

void require_dir(const fs::path& p, const std::string& who, const std::string& layout) {
  std::error_code ec;
  SB_CHECK(fs::is_directory(p, ec), who, ": ", p.string(), " is not a directory; expected ", layout);
}

}  // namespace

IndexTensor load_mask(const std::string& path, MaskEncoding encoding, int64_t classes, int64_t max_pixels) {
  IndexTensor m = encoding == MaskEncoding::VocColors ? load_voc_mask(path, max_pixels)
                                                      : load_index_mask(path, max_pixels);
  if (encoding == MaskEncoding::PetsTrimap || encoding == MaskEncoding::PetsTrimapBorder) {
    int64_t border = encoding == MaskEncoding::PetsTrimap ? 255 : 2;
    for (int64_t p = 0; p < m.numel(); ++p) {
      int64_t v = m[p];
      SB_CHECK(v >= 1 && v <= 3, path, ": trimap value ", v, " at pixel (", p / m.size(1), ", ", p % m.size(1),
               "); expected 1 (pet), 2 (background) or 3 (border)");
      m[p] = v == 1 ? 1 : v == 2 ? 0 : border;
    }
  }
  check_labels(m, classes, path, encoding == MaskEncoding::VocColors);
  return m;
}

FileSegDataset::FileSegDataset(std::string name, std::vector<FileEntry> entries, MaskEncoding encoding,
                               int64_t classes, const FileReadOptions& opt)
    : name_(std::move(name)), encoding_(encoding), classes_(classes), opt_(opt) {
  SB_CHECK(classes > 0, name_, ": the number of classes must be positive, got ", classes);
  SB_CHECK(opt.limit >= 0, name_, ": limit must be non-negative, got ", opt.limit);
  SB_CHECK(!entries.empty(), name_, ": the dataset is empty (no samples)");
  const bool full = opt.skip_bad;
  auto validate = [&](const FileEntry& e) {
    SB_CHECK(e.problem.empty(), e.problem);
    ImageHeader hi = read_image_header(e.image, opt.max_pixels);
    ImageHeader hm = read_image_header(e.mask, opt.max_pixels);
    SB_CHECK(hi.width == hm.width && hi.height == hm.height, e.image, " is ", hi.width, " x ", hi.height,
             " but its mask ", e.mask, " is ", hm.width, " x ", hm.height);
    if (full) {
      load_image(e.image, opt.max_pixels);
      load_mask(e.mask, encoding_, classes_, opt.max_pixels);
    }
  };
  // Chunks, validated in parallel (decoding dominates with skip_bad), then taken in order so
  // the first error and the kept samples do not depend on the thread count.
  const int64_t n = static_cast<int64_t>(entries.size()), chunk = 64;
  for (int64_t lo = 0; lo < n; lo += chunk) {
    int64_t hi = std::min(n, lo + chunk);
    std::vector<std::string> errors(hi - lo);
#pragma omp parallel for schedule(dynamic)
    for (int64_t i = lo; i < hi; ++i) errors[i - lo] = error_of([&] { validate(entries[i]); });
    for (int64_t i = lo; i < hi; ++i) {
      if (opt.limit > 0 && static_cast<int64_t>(entries_.size()) >= opt.limit) break;
      const std::string& err = errors[i - lo];
      if (err.empty()) {
        entries_.push_back(std::move(entries[i]));
      } else {
        SB_CHECK(opt.skip_bad, name_, ": ", err, " (--skip-bad skips bad samples)");
        skipped_.push_back({entries[i].image, err});
      }
    }
    if (opt.limit > 0 && static_cast<int64_t>(entries_.size()) >= opt.limit) break;
  }
  SB_CHECK(!entries_.empty(), name_, ": all ", skipped_.size(), " samples are bad; the first: ",
           skipped_.empty() ? "" : skipped_[0].reason);
}

Sample FileSegDataset::get(int64_t i) const {
  SB_CHECK(i >= 0 && i < size(), name_, ": sample ", i, " out of range [0, ", size(), ")");
  const FileEntry& e = entries_[i];
  try {
    Sample s{load_image(e.image, opt_.max_pixels), load_mask(e.mask, encoding_, classes_, opt_.max_pixels)};
    SB_CHECK(s.image.size(1) == s.mask.size(0) && s.image.size(2) == s.mask.size(1), e.image, " is ",
             s.image.size(2), " x ", s.image.size(1), " but its mask ", e.mask, " is ", s.mask.size(1), " x ",
             s.mask.size(0));
    return s;
  } catch (const Error& err) {
    fail(name_, ": ", err.what());
  }
}

std::string FileSegDataset::describe() const {
  std::string s = str(name_, " (", size(), " images, ", classes_, " classes");
  if (!skipped_.empty()) s += str(", ", skipped_.size(), " bad samples skipped");
  return s + ")";
}

FolderInfo read_folder_info(const std::string& dir) {
  FolderInfo info;
  fs::path p = fs::path(dir) / "dataset.json";
  std::error_code ec;
  if (!fs::exists(p, ec)) return info;
  std::string text = read_file(p.string());  // a regular file: a FIFO must not block
  try {
    nlohmann::json j = nlohmann::json::parse(text);
    SB_CHECK(j.is_object(), p.string(), ": expected a JSON object");
    if (j.contains("classes")) {
      // get<int64_t>() would cast a float such as 1e300 with undefined behaviour (found by fuzzing).
      SB_CHECK(!j["classes"].is_number_float(), p.string(), ": \"classes\" must be an integer, got ",
               j["classes"].dump());
      info.classes = j["classes"].get<int64_t>();
      SB_CHECK(info.classes > 0, p.string(), ": \"classes\" must be positive, got ", info.classes);
    }
    if (j.contains("class_names")) info.class_names = j["class_names"].get<std::vector<std::string>>();
    if (j.contains("mean") || j.contains("std")) {
      auto m = j.at("mean").get<std::vector<float>>(), s = j.at("std").get<std::vector<float>>();
      SB_CHECK(m.size() == 3 && s.size() == 3, p.string(), ": \"mean\" and \"std\" must hold 3 numbers each");
      for (int c = 0; c < 3; ++c) {
        SB_CHECK(s[c] > 0, p.string(), ": \"std\" must be positive");
        info.mean[c] = m[c], info.std[c] = s[c];
      }
      info.has_normalization = true;
    }
  } catch (const nlohmann::json::exception& e) {
    fail(p.string(), ": malformed (", e.what(), ")");
  }
  return info;
}

void write_folder_info(const std::string& dir, const FolderInfo& info) {
  nlohmann::json j = nlohmann::json::object();
  if (info.classes > 0) j["classes"] = info.classes;
  if (!info.class_names.empty()) j["class_names"] = info.class_names;
  if (info.has_normalization) {
    // Rounded to 6 decimals in double, so 0.497f is written as 0.497, not 0.4970000088214874.
    auto tidy = [](const RGB& v) {
      std::vector<double> out;
      for (float x : v) out.push_back(std::round(static_cast<double>(x) * 1e6) / 1e6);
      return out;
    };
    j["mean"] = tidy(info.mean);
    j["std"] = tidy(info.std);
  }
  std::string text = j.dump(2) + "\n";
  write_file_atomic((fs::path(dir) / "dataset.json").string(), text);
}

std::shared_ptr<FileSegDataset> open_folder(const std::string& dir, const std::string& split, int64_t classes,
                                            const FileReadOptions& opt) {
  const std::string who = "folder:" + dir;
  const std::string layout = "DIR/" + split + "/images/*.{png,jpg,jpeg,bmp} and DIR/" + split +
                             "/masks/*.png, matched by file stem";
  require_dir(dir, who, layout);
  fs::path images = fs::path(dir) / split / "images", masks = fs::path(dir) / split / "masks";
  require_dir(images, who, layout);
  require_dir(masks, who, layout);
  auto scan = [&](const fs::path& d, const std::vector<std::string>& exts) {
    std::map<std::string, std::string> by_stem;
    for (const auto& de : fs::directory_iterator(d)) {
      std::string fname = de.path().filename().string();
      if (fname.empty() || fname[0] == '.' || !de.is_regular_file()) continue;  // hidden, ._ resource forks
      std::string ext = lower(de.path().extension().string());
      if (std::find(exts.begin(), exts.end(), ext) == exts.end()) continue;
      std::string stem = de.path().stem().string();
      auto [it, fresh] = by_stem.emplace(stem, de.path().string());
      SB_CHECK(fresh, who, ": two files with the stem '", stem, "': ", it->second, " and ", de.path().string());
    }
    return by_stem;
  };
  auto image_files = scan(images, {".png", ".jpg", ".jpeg", ".bmp"});
  auto mask_files = scan(masks, {".png"});
  SB_CHECK(!image_files.empty(), who, ": no images in ", images.string(), " (expected *.png, *.jpg, *.jpeg or *.bmp)");
  std::vector<FileEntry> entries;
  for (auto& [stem, path] : image_files) {
    auto m = mask_files.find(stem);
    FileEntry e{path, m == mask_files.end() ? (masks / (stem + ".png")).string() : m->second, ""};
    if (m == mask_files.end()) e.problem = str(path, ": missing mask (expected ", e.mask, ")");
    entries.push_back(std::move(e));
  }
  for (auto& [stem, path] : mask_files)
    SB_CHECK(image_files.count(stem), who, ": mask ", path, " has no image (expected ", (images / stem).string(),
             ".png or .jpg)");
  if (classes <= 0) classes = read_folder_info(dir).classes;
  if (classes <= 0) {
    // Not given anywhere: one more than the largest label of the split (255 excluded).
    int64_t mx = -1;
    for (const auto& e : entries) {
      if (!e.problem.empty()) continue;
      std::string err = error_of([&] {
        for (int64_t v : load_index_mask(e.mask, opt.max_pixels))
          if (v != 255) mx = std::max(mx, v);
      });
      SB_CHECK(err.empty() || opt.skip_bad, who, ": ", err);
    }
    SB_CHECK(mx >= 0, who, ": cannot infer the number of classes (no labels other than 255); give --classes");
    classes = mx + 1;
  }
  return std::make_shared<FileSegDataset>(who + " " + split, std::move(entries), MaskEncoding::Indices, classes, opt);
}

std::shared_ptr<FileSegDataset> open_voc(const std::string& dir, const std::string& split, const FileReadOptions& opt) {
  const std::string who = "voc:" + dir;
  const std::string layout =
      "Pascal VOC 2012: JPEGImages/, SegmentationClass/ and ImageSets/Segmentation/{train,val}.txt";
  require_dir(dir, who, layout);
  fs::path root = dir;
  std::error_code ec;
  for (fs::path c : {fs::path(dir), fs::path(dir) / "VOC2012", fs::path(dir) / "VOCdevkit" / "VOC2012"})
    if (fs::is_directory(c / "JPEGImages", ec)) {
      root = c;
      break;
    }
  require_dir(root / "JPEGImages", who, layout);
  require_dir(root / "SegmentationClass", who, layout);
  fs::path list = root / "ImageSets" / "Segmentation" / (split + ".txt");
  SB_CHECK(fs::is_regular_file(list, ec), who, ": no split list ", list.string(), "; expected ", layout);
  auto entries = entries_from_list(list, root / "JPEGImages", ".jpg", root / "SegmentationClass");
  SB_CHECK(!entries.empty(), who, ": the dataset is empty: ", list.string(), " lists no images");
  return std::make_shared<FileSegDataset>(who + " " + split, std::move(entries), MaskEncoding::VocColors, 21, opt);
}

std::shared_ptr<FileSegDataset> open_pets(const std::string& dir, const std::string& split, bool border_as_class,
                                          const FileReadOptions& opt) {
  const std::string who = "pets:" + dir;
  const std::string layout =
      "Oxford-IIIT Pet: images/*.jpg, annotations/trimaps/*.png and annotations/{trainval,test}.txt";
  require_dir(dir, who, layout);
  fs::path root = dir;
  require_dir(root / "images", who, layout);
  require_dir(root / "annotations" / "trimaps", who, layout);
  fs::path list = root / "annotations" / (split == "train" ? "trainval.txt" : "test.txt");
  std::error_code ec;
  SB_CHECK(fs::is_regular_file(list, ec), who, ": no split list ", list.string(), "; expected ", layout);
  auto entries = entries_from_list(list, root / "images", ".jpg", root / "annotations" / "trimaps");
  SB_CHECK(!entries.empty(), who, ": the dataset is empty: ", list.string(), " lists no images");
  return std::make_shared<FileSegDataset>(who + " " + split, std::move(entries),
                                          border_as_class ? MaskEncoding::PetsTrimapBorder : MaskEncoding::PetsTrimap,
                                          border_as_class ? 3 : 2, opt);
}

}  // namespace sb
