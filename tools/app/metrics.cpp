// Confusion-matrix accumulation and the metrics derived from it.
#include "tools/app/metrics.h"

#include <cmath>

#include "core/errors.h"

namespace sb {

ConfusionMatrix::ConfusionMatrix(int64_t classes, int64_t ignore_index)
    : k_(classes), ignore_(ignore_index), counts_(classes * classes, 0) {
  SB_CHECK(classes > 0, "ConfusionMatrix: classes must be positive, got ", classes);
}

void ConfusionMatrix::add(const Tensor& logits, const IndexTensor& target) {
  SB_CHECK(logits.dim() == 4 && logits.size(1) == k_ && target.dim() == 3 && target.size(0) == logits.size(0) &&
               target.size(1) == logits.size(2) && target.size(2) == logits.size(3),
           "metrics: logits ", logits.shape(), " (", k_, " classes) do not fit target ", target.shape());
  int64_t N = logits.size(0), HW = logits.size(2) * logits.size(3);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t i = 0; i < HW; ++i) {
      int64_t t = target[n * HW + i];
      if (t == ignore_) continue;
      SB_CHECK(t >= 0 && t < k_, "metrics: target label ", t, " outside [0, ", k_, ")");
      const float* col = logits.data() + n * k_ * HW + i;
      int64_t best = 0;
      for (int64_t k = 1; k < k_; ++k)
        if (col[k * HW] > col[best * HW]) best = k;
      ++counts_[t * k_ + best];
    }
}

int64_t ConfusionMatrix::total() const {
  int64_t s = 0;
  for (int64_t c : counts_) s += c;
  return s;
}

double ConfusionMatrix::pixel_accuracy() const {
  int64_t correct = 0;
  for (int64_t k = 0; k < k_; ++k) correct += counts_[k * k_ + k];
  int64_t t = total();
  return t ? static_cast<double>(correct) / t : NAN;
}

std::vector<double> ConfusionMatrix::iou() const {
  std::vector<double> out(k_);
  for (int64_t c = 0; c < k_; ++c) {
    int64_t tp = counts_[c * k_ + c], row = 0, col = 0;
    for (int64_t j = 0; j < k_; ++j) row += counts_[c * k_ + j], col += counts_[j * k_ + c];
    int64_t uni = row + col - tp;
    out[c] = uni ? static_cast<double>(tp) / uni : NAN;
  }
  return out;
}

double ConfusionMatrix::mean_iou() const {
  double s = 0;
  int n = 0;
  for (double v : iou())
    if (!std::isnan(v)) s += v, ++n;
  return n ? s / n : NAN;
}

}  // namespace sb
