// The loss ops: softmax and log-softmax along an axis, and cross-entropy fused with its
// log-softmax, used by the loss layers (layers/losses.h: CrossEntropyLoss, DiceLoss).
#pragma once

#include <cstdint>

#include "core/autograd.h"

namespace sb {

Var softmax(const Var& x, int64_t axis);
Var log_softmax(const Var& x, int64_t axis);
struct CrossEntropyOptions {
  int64_t ignore_index = 255;  // the segmentation convention
  Tensor weight;               // optional per-class weights (K,)
};
// logits (N, K) or (N, K, H, W); target (N) or (N, H, W) with values in [0, K) or ignore_index.
// Mean over non-ignored elements (weighted mean with class weights), as PyTorch's
// reduction='mean'. All elements ignored gives NaN, as in PyTorch.
Var cross_entropy(const Var& logits, const IndexTensor& target, const CrossEntropyOptions& opt = {});

}  // namespace sb
