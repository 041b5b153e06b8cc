// Loss modules for segmentation: cross-entropy and soft multi-class Dice, both ignoring the
// pixels whose label is ignore_index (255 by default).
#pragma once

#include "core/ops.h"
#include "layers/loss/ops.h"
#include "layers/module.h"

namespace sb {

class CrossEntropyLoss : public Module {
 public:
  explicit CrossEntropyLoss(CrossEntropyOptions opt = {}) : opt_(std::move(opt)) {}
  // logits (N, K, H, W) or (N, K); target (N, H, W) or (N)
  Var operator()(const Var& logits, const IndexTensor& target) const {
    return cross_entropy(logits, target, opt_);
  }
  std::string name() const override { return "CrossEntropyLoss()"; }

 private:
  CrossEntropyOptions opt_;
};

// 1 - mean over classes of (2 sum(p t) + smooth) / (sum(p) + sum(t) + smooth), with p the
// softmax probabilities and t the one-hot target, summed over the batch and all pixels that
// are not ignored. Classes absent from both prediction and target score 1 thanks to `smooth`.
class DiceLoss : public Module {
 public:
  explicit DiceLoss(int64_t ignore_index = 255, float smooth = 1.0f)
      : ignore_(ignore_index), smooth_(smooth) {}
  Var operator()(const Var& logits, const IndexTensor& target) const;
  std::string name() const override { return "DiceLoss()"; }

 private:
  int64_t ignore_;
  float smooth_;
};

}  // namespace sb
