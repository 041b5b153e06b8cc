// The tensors: source: a safetensors file of images and masks, validated on open.
#include <cstring>
#include <limits>

#include "core/io/safetensors.h"
#include "datasets/dataset.h"

namespace sb {

TensorsDataset::TensorsDataset(const std::string& path, int64_t classes) : path_(path), classes_(classes) {
  TensorFile f = load_safetensors(path);
  images_ = f.get_float("images");
  masks_ = f.get_int("masks");
  SB_CHECK(images_.dim() == 4, path, ": 'images' must be (N, C, H, W) but is ", images_.shape());
  SB_CHECK(masks_.dim() == 3 && masks_.size(0) == images_.size(0) && masks_.size(1) == images_.size(2) &&
               masks_.size(2) == images_.size(3),
           path, ": 'masks' must be (N, H, W) = (", images_.size(0), ", ", images_.size(2), ", ",
           images_.size(3), ") to match images ", images_.shape(), " but is ", masks_.shape());
  SB_CHECK(images_.size(0) > 0, path, ": the dataset is empty (0 images)");
  SB_CHECK(classes >= 0, path, ": the number of classes must be positive, got ", classes);
  if (classes == 0) {  // not given: one more than the largest label
    int64_t mx = -1;
    for (int64_t v : masks_)
      if (v != 255) mx = std::max(mx, v);
    SB_CHECK(mx >= 0, path, ": every mask pixel is 255 (ignore); give --classes");
    // The largest int64 label would overflow; no model has that many classes anyway.
    SB_CHECK(mx < std::numeric_limits<int64_t>::max(), path, ": the largest mask label is ", mx,
             ", too large to infer the number of classes from; give --classes");
    classes = classes_ = mx + 1;
  }
  for (int64_t i = 0; i < masks_.numel(); ++i) {
    int64_t v = masks_[i];
    if (v == 255 || (v >= 0 && v < classes)) continue;
    int64_t hw = masks_.size(1) * masks_.size(2);
    fail(path, ": mask ", i / hw, " has label ", v, " at pixel (", (i % hw) / masks_.size(2), ", ",
         i % masks_.size(2), "), but labels must be in [0, ", classes, ") or 255 (ignore)");
  }
  for (int64_t i = 0; i < images_.numel(); ++i)
    SB_CHECK(std::isfinite(images_[i]), path, ": 'images' holds a non-finite value at flat index ", i);
}

Sample TensorsDataset::get(int64_t i) const {
  SB_CHECK(i >= 0 && i < size(), path_, ": sample ", i, " out of range [0, ", size(), ")");
  int64_t C = images_.size(1), H = images_.size(2), W = images_.size(3);
  Sample s{Tensor::empty({C, H, W}), IndexTensor::empty({H, W})};
  std::memcpy(s.image.data(), images_.data() + i * C * H * W, C * H * W * sizeof(float));
  std::memcpy(s.mask.data(), masks_.data() + i * H * W, H * W * sizeof(int64_t));
  return s;
}

std::string TensorsDataset::describe() const {
  return str("tensors:", path_, " (", size(), " images ", images_.shape(), ")");
}

}  // namespace sb
