// PyTorch's default initializations, drawn from a seeded generator.
#pragma once

#include <cmath>

#include "core/tensor.h"

namespace sb::init {

inline void uniform_(const Tensor& t, float lo, float hi, Generator& gen) {
  for (float& v : t) v = gen.uniform(lo, hi);
}

// kaiming_uniform_(a = sqrt(5)), PyTorch's default for Linear and Conv weights:
// gain = sqrt(2 / (1 + a^2)) = sqrt(1/3), bound = gain * sqrt(3 / fan_in) = 1 / sqrt(fan_in).
inline void default_weight_(const Tensor& t, int64_t fan_in, Generator& gen) {
  float bound = fan_in > 0 ? 1.0f / std::sqrt(static_cast<float>(fan_in)) : 0.f;
  uniform_(t, -bound, bound, gen);
}

// The matching bias: uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)).
inline void default_bias_(const Tensor& t, int64_t fan_in, Generator& gen) {
  default_weight_(t, fan_in, gen);
}

}  // namespace sb::init
