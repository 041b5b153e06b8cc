// `shapes`: the built-in synthetic segmentation set. Each sample is a textured, noisy, unevenly lit
// RGB scene holding a few circles, rectangles, triangles and thin rings (plus background clutter
// of thin lines), generated in memory from (seed, split, index) alone.
#pragma once

#include <array>
#include <string>

#include "datasets/dataset.h"
#include "datasets/transforms.h"

namespace sb {

struct ShapesOptions {
  int64_t train = 2000;     // samples in the train split
  int64_t val = 200;        // samples in the val split
  int64_t size = 64;        // images are size x size
  float difficulty = 1.f;   // 0 (flat background, big contrast) .. 3 (heavy texture, noise, clutter)
  uint64_t seed = 0;
};

// Parses "train=512,val=128,size=64,difficulty=1,seed=3" (any subset, any order) over `defaults`.
// Throws an sb::Error naming the offending parameter and the accepted values.
ShapesOptions parse_shapes_params(const std::string& params, ShapesOptions defaults = {});

// The classes, in label order.
inline constexpr std::array<const char*, 5> kShapesClasses = {"background", "circle", "rectangle", "triangle",
                                                              "ring"};
// Per-channel mean and std of the generated images, which the shapes set is normalized with.
// Measured with `smallbatch data stats --data shapes` (train, 2000 images): mean 0.494 0.502 0.498,
// std 0.267 0.267 0.272 at difficulty 1; std 0.261 at difficulty 0 and 0.296 at 3. The generator
// treats the channels alike, so one value serves all three.
inline constexpr RGB kShapesMean = {0.497f, 0.497f, 0.497f};
inline constexpr RGB kShapesStd = {0.268f, 0.268f, 0.268f};

// One scene: image (3, size, size) in [0, 1] and mask (size, size) with labels in [0, 5).
// `train` picks the stream: train and val samples come from disjoint generator streams.
Sample generate_shapes(const ShapesOptions& opt, bool train, int64_t index);

class ShapesDataset : public Dataset {
 public:
  // `limit` > 0 caps the number of samples.
  ShapesDataset(const ShapesOptions& opt, bool train, int64_t limit = 0);
  int64_t size() const override { return count_; }
  Sample get(int64_t i) const override;
  int64_t num_classes() const override { return static_cast<int64_t>(kShapesClasses.size()); }
  std::string describe() const override;
  const ShapesOptions& options() const { return opt_; }

 private:
  ShapesOptions opt_;
  bool train_;
  int64_t count_;
};

}  // namespace sb
