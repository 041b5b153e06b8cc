// Dataset statistics for `smallbatch data stats`: sample count, image sizes, class pixel
// frequencies and per-channel mean/std, computed over every sample through the DataLoader.
#pragma once

#include <map>
#include <utility>
#include <vector>

#include "datasets/loader.h"

namespace sb {

struct DatasetStats {
  int64_t samples = 0;
  std::map<std::pair<int64_t, int64_t>, int64_t> sizes;  // (H, W) -> number of images
  int64_t channels = 0;
  std::vector<int64_t> class_pixels;  // per class
  int64_t ignore_pixels = 0;          // label 255
  std::vector<double> mean, std;      // per channel, over every pixel of every image
};

// Runs `transform` (may be empty) on each sample in `workers` loader threads.
DatasetStats compute_stats(DatasetPtr data, const SampleTransform& transform = {}, int workers = 2);

}  // namespace sb
