// Opens a dataset from a --data SPEC (shapes, tensors:FILE, folder:DIR, voc:DIR, pets:DIR) with
// the data flags applied, and builds the per-sample transform the DataLoader runs.
#pragma once

#include <string>
#include <vector>

#include "datasets/dataset.h"
#include "datasets/folder.h"
#include "datasets/loader.h"
#include "datasets/transforms.h"

namespace sb {

enum class Split { Train, Val };

struct DataOptions {
  int64_t image_size = 0;        // --image-size S: resize/crop to S x S (0: keep)
  bool augment = false;          // --augment: random scale+crop, flip, colour jitter (train only)
  int64_t limit = 0;             // --limit / --val-limit: use at most this many samples (0: all)
  bool skip_bad = false;         // --skip-bad: skip unreadable samples, counted and reported
  int64_t max_pixels = 64 << 20; // images whose header claims more pixels are refused
  std::string pets_border = "ignore";  // pets: the trimap border as "ignore" (255) or "class"
  uint64_t seed = 0;             // shapes: the data seed (keep it apart from the training seed, so
                                 // runs with different training seeds see the same data)
};

// `classes` bounds the labels of sources that don't define their own class count (0: infer,
// for tensors: and folder:). Sources with a fixed count (shapes 5, voc 21, pets 2 or 3) refuse a
// different positive `classes`. Throws sb::Error naming the spec or file on any problem.
//
// Specs:
//   shapes[:train=N,val=M,size=S,difficulty=D,seed=X]  the synthetic set (opt.image_size, when
//                                  given, overrides size; seed= overrides opt.seed)
//   tensors:FILE                   images (N, C, H, W) F32 and masks (N, H, W) I64, used as is
//   folder:DIR                     DIR/{train,val}/images/*.{png,jpg} + DIR/{train,val}/masks/*.png
//   voc:DIR                        Pascal VOC 2012 (val = ImageSets/Segmentation/val.txt)
//   pets:DIR                       Oxford-IIIT Pet (train = trainval.txt, val = test.txt)
// Image sources return images in [0, 1]; make_transform() normalizes them.
DatasetPtr open_dataset(const std::string& spec, Split split, int64_t classes, const DataOptions& opt = {});

// The transform the loader applies to each sample: augmentation when opt.augment and
// split == Train, then normalization where the source asks for it. May be empty.
// Evaluation must use it too (with Split::Val): it resizes (--image-size) and normalizes.
//   normalization: shapes its own mean/std (kShapesMean/kShapesStd), folder: DIR/dataset.json's
//   when present, else ImageNet's like voc: and pets:; tensors: none (used as is, so --augment and
//   --image-size are errors there).
SampleTransform make_transform(const std::string& spec, Split split, const DataOptions& opt);

// What make_transform builds, as options (e.g. to preview samples without normalization).
TransformOptions transform_options(const std::string& spec, Split split, const DataOptions& opt);

// The samples left out by opt.skip_bad (empty for sources that never skip), and a report to print
// at the end of a run: "" when nothing was skipped.
std::vector<SkippedSample> skipped_samples(const Dataset& data);
std::string skip_report(const Dataset& data, size_t max_listed = 10);

// The names of the `classes` classes of a --data SPEC, for tables: the shapes set's, Pascal VOC's,
// Oxford-IIIT Pet's, a folder's dataset.json "class_names"; "class K" where the source has none.
std::vector<std::string> class_names(const std::string& spec, int64_t classes);

// "sample 12 (path/to/image.jpg)" for file sources, "sample 12" otherwise: for messages.
std::string sample_name(const Dataset& data, int64_t i);

}  // namespace sb
