// Segmentation datasets stored as image files: `folder:` (our own layout), `voc:` (Pascal VOC 2012)
// and `pets:` (Oxford-IIIT Pet). They share one reader that validates every file when it opens.
#pragma once

#include <string>
#include <vector>

#include "datasets/dataset.h"
#include "datasets/transforms.h"

namespace sb {

// How a mask file's pixels become class indices.
enum class MaskEncoding {
  Indices,          // single-channel PNG: the values are the labels
  VocColors,        // VOC palette colours through the VOC colour map, (224, 224, 192) -> 255
  PetsTrimap,       // 1 pet -> 1, 2 background -> 0, 3 border -> 255 (ignore)
  PetsTrimapBorder  // the same, but border -> 2, a class of its own
};

struct FileEntry {
  std::string image, mask;  // paths
  std::string problem;      // set by an opener that already knows the entry is bad (e.g. no mask)
};

struct SkippedSample {
  std::string file;    // the file at fault
  std::string reason;  // the error it raised
};

struct FileReadOptions {
  int64_t limit = 0;              // keep at most this many good samples (0: all)
  bool skip_bad = false;          // skip bad samples instead of failing
  int64_t max_pixels = 64 << 20;  // per image, checked from the header before decoding
};

// Opening checks every entry from its file headers: both files exist, are non-empty, are
// PNG/JPEG/BMP with a parseable header, claim at most max_pixels, and have the same size. These
// checks are cheap (stbi_info reads a few bytes) and catch most bad samples before training.
//
// Without skip_bad the first bad entry is an sb::Error naming its file; a file that only fails
// when fully decoded (truncated pixel data, a label out of range) fails in get(), naming the file.
//
// With skip_bad every entry is also fully decoded and its labels checked at open time (a cost paid
// once, in parallel), and bad entries are left out of the index: size() counts good samples only,
// so get(i) stays a pure function of i, the loader's batches stay reproducible, and the skip count
// is known, and reported, before the first step. A file that goes bad after opening still fails
// in get(): skipping it then would silently change which samples a batch holds.
class FileSegDataset : public Dataset {
 public:
  FileSegDataset(std::string name, std::vector<FileEntry> entries, MaskEncoding encoding, int64_t classes,
                 const FileReadOptions& opt);
  int64_t size() const override { return static_cast<int64_t>(entries_.size()); }
  // The image (3, H, W) in [0, 1], not normalized, and the mask (H, W).
  Sample get(int64_t i) const override;
  int64_t num_classes() const override { return classes_; }
  std::string describe() const override;

  const FileEntry& entry(int64_t i) const { return entries_.at(i); }
  const std::vector<SkippedSample>& skipped() const { return skipped_; }

 private:
  std::string name_;
  std::vector<FileEntry> entries_;
  MaskEncoding encoding_;
  int64_t classes_;
  FileReadOptions opt_;
  std::vector<SkippedSample> skipped_;
};

// Decodes a mask file with an encoding, and checks each label is < classes or 255; errors name
// the file, the pixel and the label.
IndexTensor load_mask(const std::string& path, MaskEncoding encoding, int64_t classes, int64_t max_pixels);

// DIR/dataset.json, optional beside a folder: layout: {"classes": K, "class_names": [...],
// "mean": [r, g, b], "std": [r, g, b]}. Every key is optional; `smallbatch data shapes` writes it
// so that folder:DIR reads the shapes set back with its own class count and normalization.
struct FolderInfo {
  int64_t classes = 0;  // 0: not given
  std::vector<std::string> class_names;
  bool has_normalization = false;
  RGB mean{}, std{};
};
// Reads DIR/dataset.json; a missing file gives an empty FolderInfo, a malformed one an error.
FolderInfo read_folder_info(const std::string& dir);
void write_folder_info(const std::string& dir, const FolderInfo& info);

// `folder:DIR`, split "train" or "val": DIR/<split>/images/*.{png,jpg,jpeg,bmp} with
// DIR/<split>/masks/<stem>.png, in file-name order. The class count is `classes` when positive,
// else DIR/dataset.json's "classes" (written by `smallbatch data shapes`), else one more than
// the largest label found in the split's masks (which decodes them all once).
std::shared_ptr<FileSegDataset> open_folder(const std::string& dir, const std::string& split, int64_t classes,
                                            const FileReadOptions& opt);

// `voc:DIR`, split "train" or "val": DIR (VOC2012, or a VOCdevkit or parent holding it) with
// JPEGImages/<id>.jpg, SegmentationClass/<id>.png and ImageSets/Segmentation/<split>.txt. 21 classes.
std::shared_ptr<FileSegDataset> open_voc(const std::string& dir, const std::string& split, const FileReadOptions& opt);

// `pets:DIR`, split "train" (annotations/trainval.txt) or "val" (annotations/test.txt):
// images/<id>.jpg and annotations/trimaps/<id>.png. Classes: background 0, pet 1, and with
// border_as_class the border 2 (else the border is 255, ignored by the loss and the metrics).
std::shared_ptr<FileSegDataset> open_pets(const std::string& dir, const std::string& split, bool border_as_class,
                                          const FileReadOptions& opt);

}  // namespace sb
