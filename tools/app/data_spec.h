// Opens a dataset from a --data SPEC (shapes, tensors:FILE, folder:DIR, voc:DIR, pets:DIR) with
// the data flags applied, and builds the per-sample transform the DataLoader runs.
#pragma once

#include <string>

#include "datasets/dataset.h"
#include "datasets/loader.h"

namespace sb {

enum class Split { Train, Val };

struct DataOptions {
  int64_t image_size = 0;
  bool augment = false;
  int64_t limit = 0;
  bool skip_bad = false;
  int64_t max_pixels = 64 << 20;
  std::string pets_border = "ignore";
  uint64_t seed = 0;
};

DatasetPtr open_dataset(const std::string& spec, Split split, int64_t classes, const DataOptions& opt = {});
SampleTransform make_transform(const std::string& spec, Split split, const DataOptions& opt);

}  // namespace sb
