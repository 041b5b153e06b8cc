// The Dataset interface: size() samples, get(i) -> an image (C, H, W) float and a mask (H, W)
// of class indices (255 = ignore). Sources (tensors:, shapes, folder:, voc:, pets:) implement it.
#pragma once

#include <memory>
#include <string>

#include "core/tensor.h"

namespace sb {

struct Sample {
  Tensor image;       // (C, H, W)
  IndexTensor mask;   // (H, W)
};

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual int64_t size() const = 0;
  // Thread-safe: loader threads call get() concurrently.
  virtual Sample get(int64_t i) const = 0;
  virtual int64_t num_classes() const = 0;
  virtual std::string describe() const = 0;
};

using DatasetPtr = std::shared_ptr<const Dataset>;

// `tensors:FILE`: a .safetensors file with images (N, C, H, W) F32 and masks (N, H, W) I64,
// used as is (no normalization, no augmentation): the exact-input path for tests and for
// comparing with other frameworks. `classes` bounds the labels (255 is always allowed);
// every mask value is checked when the file is opened. classes = 0 takes the largest label + 1.
class TensorsDataset : public Dataset {
 public:
  TensorsDataset(const std::string& path, int64_t classes);
  int64_t size() const override { return images_.size(0); }
  Sample get(int64_t i) const override;
  int64_t num_classes() const override { return classes_; }
  std::string describe() const override;
  const Tensor& images() const { return images_; }
  const IndexTensor& masks() const { return masks_; }

 private:
  std::string path_;
  Tensor images_;       // (N, C, H, W)
  IndexTensor masks_;   // (N, H, W)
  int64_t classes_;
};

}  // namespace sb
