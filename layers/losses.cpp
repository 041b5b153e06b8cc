// DiceLoss, composed from differentiable ops (softmax, mul, sum), so it needs no backward of
// its own.
#include "layers/losses.h"

namespace sb {

Var DiceLoss::operator()(const Var& logits, const IndexTensor& target) const {
  SB_CHECK(logits.dim() == 4 && target.dim() == 3 && target.size(0) == logits.size(0) &&
               target.size(1) == logits.size(2) && target.size(2) == logits.size(3),
           "DiceLoss: expected logits (N, K, H, W) and target (N, H, W) but got ", logits.shape(),
           " and ", target.shape());
  int64_t N = logits.size(0), K = logits.size(1), HW = logits.size(2) * logits.size(3);
  Tensor onehot = Tensor::zeros(logits.shape());  // (N, K, H, W)
  Tensor valid = Tensor::zeros({N, 1, logits.size(2), logits.size(3)});
  for (int64_t n = 0; n < N; ++n)
    for (int64_t i = 0; i < HW; ++i) {
      int64_t t = target[n * HW + i];
      if (t == ignore_) continue;
      SB_CHECK(t >= 0 && t < K, "DiceLoss: target value ", t, " at sample ", n, ", pixel ", i,
               " is neither in [0, ", K, ") nor ignore_index ", ignore_);
      onehot[(n * K + t) * HW + i] = 1.f;
      valid[n * HW + i] = 1.f;
    }
  Var p = softmax(logits, 1) * Var(valid);                 // (N, K, H, W), ignored pixels zeroed
  Var inter = sum(p * Var(onehot), {0, 2, 3});             // (K,)
  Var denom = sum(p, {0, 2, 3}) + Var(sum(Var(onehot), {0, 2, 3}).value());  // (K,)
  Var dice = (inter * 2.0f + smooth_) / (denom + smooth_);
  return 1.0f - mean(dice);
}

}  // namespace sb
