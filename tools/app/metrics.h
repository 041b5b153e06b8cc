// Segmentation metrics from a confusion matrix: pixel accuracy, per-class IoU and mean IoU.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace sb {

class ConfusionMatrix {
 public:
  explicit ConfusionMatrix(int64_t classes, int64_t ignore_index = 255);
  // logits (N, K, H, W) -> argmax over K, compared with target (N, H, W); ignored pixels skipped.
  void add(const Tensor& logits, const IndexTensor& target);
  // counts[t * K + p]: pixels of true class t predicted as p.
  const std::vector<int64_t>& counts() const { return counts_; }
  int64_t classes() const { return k_; }
  int64_t total() const;
  double pixel_accuracy() const;
  // IoU per class; NaN for a class absent from both targets and predictions.
  std::vector<double> iou() const;
  // Mean over the classes with a defined IoU (as the VOC benchmark does).
  double mean_iou() const;

 private:
  int64_t k_, ignore_;
  std::vector<int64_t> counts_;
};

}  // namespace sb
