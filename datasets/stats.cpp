// Accumulates dataset statistics over one unshuffled pass of the DataLoader.
#include "datasets/stats.h"

#include <cmath>

namespace sb {

DatasetStats compute_stats(DatasetPtr data, const SampleTransform& transform, int workers) {
  DatasetStats st;
  const int64_t K = data->num_classes();
  st.class_pixels.assign(K, 0);
  LoaderOptions lo;
  lo.batch_size = 1;  // images may differ in size
  lo.shuffle = false;
  lo.workers = workers;
  lo.transform = transform;
  DataLoader loader(data, lo);
  loader.start_epoch(0);
  std::vector<double> sum, sum2;  // in double: a few billion pixels stay exact enough
  Batch b;
  while (loader.next(b)) {
    const Tensor& img = b.images;  // (1, C, H, W)
    int64_t C = img.size(1), H = img.size(2), W = img.size(3);
    if (st.samples == 0) {
      st.channels = C;
      sum.assign(C, 0.0), sum2.assign(C, 0.0);
    }
    SB_CHECK(C == st.channels, "stats: sample ", b.indices[0], " has ", C, " channels but the first has ", st.channels);
    ++st.sizes[{H, W}];
    ++st.samples;
    for (int64_t c = 0; c < C; ++c) {
      const float* p = img.data() + c * H * W;
      double s = 0, s2 = 0;
      for (int64_t i = 0; i < H * W; ++i) s += p[i], s2 += static_cast<double>(p[i]) * p[i];
      sum[c] += s, sum2[c] += s2;
    }
    for (int64_t v : b.masks) {
      if (v == 255) ++st.ignore_pixels;
      else if (v >= 0 && v < K) ++st.class_pixels[v];
      else fail("stats: sample ", b.indices[0], " has label ", v, " outside [0, ", K, ") and not 255");
    }
  }
  double n = 0;
  for (auto& [hw, count] : st.sizes) n += static_cast<double>(hw.first * hw.second * count);
  for (int64_t c = 0; c < st.channels; ++c) {
    double m = sum[c] / n;
    st.mean.push_back(m);
    st.std.push_back(std::sqrt(std::max(0.0, sum2[c] / n - m * m)));
  }
  return st;
}

}  // namespace sb
