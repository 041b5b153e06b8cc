// Parameter-free layers: ReLU, MaxPool2d, AvgPool2d, Upsample, Dropout, Identity.
#pragma once

#include "core/ops.h"
#include "layers/module.h"
#include "layers/pool/ops.h"

namespace sb {

class ReLU : public Module {
 public:
  Var forward(const Var& x) override { return relu(x); }
  std::string name() const override { return "ReLU()"; }
};

class Identity : public Module {
 public:
  Var forward(const Var& x) override { return x; }
  std::string name() const override { return "Identity()"; }
};

class MaxPool2d : public Module {
 public:
  explicit MaxPool2d(Pool2dOptions opt) : opt_(opt) {}
  explicit MaxPool2d(Pair kernel) { opt_.kernel = kernel; }
  Var forward(const Var& x) override { return max_pool2d(x, opt_); }
  std::string name() const override { return str("MaxPool2d(kernel_size=", opt_.kernel.h, ")"); }

 private:
  Pool2dOptions opt_;
};

class AvgPool2d : public Module {
 public:
  explicit AvgPool2d(Pool2dOptions opt) : opt_(opt) {}
  explicit AvgPool2d(Pair kernel) { opt_.kernel = kernel; }
  Var forward(const Var& x) override { return avg_pool2d(x, opt_); }
  std::string name() const override { return str("AvgPool2d(kernel_size=", opt_.kernel.h, ")"); }

 private:
  Pool2dOptions opt_;
};

// Scales H and W by an integer factor.
class Upsample : public Module {
 public:
  Upsample(int64_t scale_factor, UpsampleMode mode) : scale_(scale_factor), mode_(mode) {
    SB_CHECK(scale_factor > 0, "Upsample: scale_factor must be positive, got ", scale_factor);
  }
  Var forward(const Var& x) override {
    SB_CHECK(x.dim() == 4, "Upsample: expected (N, C, H, W) but got ", x.shape());
    return upsample(x, x.size(2) * scale_, x.size(3) * scale_, mode_);
  }
  std::string name() const override { return str("Upsample(scale_factor=", scale_, ")"); }

 private:
  int64_t scale_;
  UpsampleMode mode_;
};

// Draws its masks from `gen` (the default generator unless one is given).
class Dropout : public Module {
 public:
  explicit Dropout(float p = 0.5f, Generator* gen = nullptr) : p_(p), gen_(gen) {
    SB_CHECK(p >= 0.f && p <= 1.f, "Dropout: p must be in [0, 1], got ", p);
  }
  Var forward(const Var& x) override {
    return dropout(x, p_, is_training(), gen_ ? *gen_ : default_generator());
  }
  std::string name() const override { return str("Dropout(p=", p_, ")"); }

 private:
  float p_;
  Generator* gen_;
};

}  // namespace sb
