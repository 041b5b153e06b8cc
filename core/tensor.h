// Dense, contiguous, row-major N-d arrays with shared storage, and the seeded random generator.
// Tensor (float32) holds activations and weights; IndexTensor (int64) holds class labels such
// as (N, H, W) segmentation masks. Copying either is a cheap handle copy; clone() copies data.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <type_traits>
#include <vector>

#include "core/errors.h"

namespace sb {

using Shape = std::vector<int64_t>;

int64_t shape_numel(const Shape& shape);

// Bytes of tensor storage alive right now, across all tensors (tests use it to show that
// a freed graph gives its memory back).
int64_t live_tensor_bytes();

namespace detail {
std::shared_ptr<void> allocate_bytes(size_t bytes);  // 64-byte aligned
}

// Reproducible random numbers: xoshiro256** seeded through splitmix64, with normals by
// Box-Muller. Every factory that draws random values takes one explicitly, so a run is a
// function of its seeds. The state is plain data, so training can save and restore it.
class Generator {
 public:
  explicit Generator(uint64_t seed = 0);
  uint64_t next_u64();
  float uniform();                       // [0, 1)
  float uniform(float lo, float hi);     // [lo, hi)
  float normal();                        // mean 0, std 1
  uint64_t below(uint64_t n);            // [0, n), unbiased

  struct State {
    uint64_t s[4];
    float spare;
    bool has_spare;
  };
  State state() const { return {{s_[0], s_[1], s_[2], s_[3]}, spare_, has_spare_}; }
  void set_state(const State& st);

 private:
  uint64_t s_[4];
  float spare_ = 0.f;
  bool has_spare_ = false;
};

// The process-wide generator that layer initialization and dropout draw from by default, as
// torch.manual_seed seeds PyTorch's. Not thread-safe: seed and build models on one thread.
Generator& default_generator();
void manual_seed(uint64_t seed);

template <class T>
class BasicTensor {
 public:
  using value_type = T;

  BasicTensor() = default;  // undefined: holds no storage
  explicit BasicTensor(Shape shape) : shape_(std::move(shape)) {
    for (int64_t d : shape_) SB_CHECK(d >= 0, "tensor: negative dimension in shape ", shape_);
    numel_ = shape_numel(shape_);
    // A size class rounds up by at most an eighth: stay far below where size_t arithmetic wraps.
    SB_CHECK(numel_ <= (int64_t{1} << 58) / static_cast<int64_t>(sizeof(T)), "tensor: shape ", shape_, " has ", numel_,
             " elements, ", sizeof(T), " bytes each: more memory than any machine has");
    storage_ = detail::allocate_bytes(static_cast<size_t>(numel_) * sizeof(T));
    data_ = static_cast<T*>(storage_.get());
  }

  // Uninitialized memory; use when every element is about to be written.
  static BasicTensor empty(Shape shape) { return BasicTensor(std::move(shape)); }
  static BasicTensor full(Shape shape, T value) {
    BasicTensor t(std::move(shape));
    std::fill(t.data_, t.data_ + t.numel_, value);
    return t;
  }
  static BasicTensor zeros(Shape shape) { return full(std::move(shape), T(0)); }
  static BasicTensor ones(Shape shape) { return full(std::move(shape), T(1)); }
  static BasicTensor from(Shape shape, const std::vector<T>& values) {
    BasicTensor t(std::move(shape));
    SB_CHECK(static_cast<int64_t>(values.size()) == t.numel_, "tensor: shape ", t.shape_, " holds ",
             t.numel_, " values but ", values.size(), " were given");
    if (t.numel_) std::memcpy(t.data_, values.data(), values.size() * sizeof(T));
    return t;
  }
  static BasicTensor scalar(T value) { return full({}, value); }
  // 0, 1, ..., n-1 (as PyTorch's arange(n)); arange(start, stop, step) likewise.
  static BasicTensor arange(int64_t n) { return arange(0, static_cast<double>(n), 1); }
  static BasicTensor arange(double start, double stop, double step = 1);
  // Uniform in [lo, hi) and standard normal draws, from an explicit generator.
  static BasicTensor rand(Shape shape, Generator& gen, float lo = 0.f, float hi = 1.f);
  static BasicTensor randn(Shape shape, Generator& gen, float mean = 0.f, float std = 1.f);

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int64_t dim() const { return static_cast<int64_t>(shape_.size()); }
  int64_t size(int64_t d) const {
    int64_t nd = dim();
    SB_CHECK(d >= -nd && d < nd, "tensor: dimension ", d, " out of range for shape ", shape_);
    return shape_[d < 0 ? d + nd : d];
  }
  int64_t numel() const { return numel_; }
  // Handle semantics: a const handle still points at mutable shared storage, as in LibTorch.
  T* data() const { return data_; }
  T* begin() const { return data_; }
  T* end() const { return data_ + numel_; }
  T& operator[](int64_t i) const { return data_[i]; }
  // Element by index, bounds-checked: t.at({n, c, h, w}).
  T& at(std::initializer_list<int64_t> idx) const {
    SB_CHECK(static_cast<int64_t>(idx.size()) == dim(), "tensor: ", idx.size(),
             " indices for a tensor of shape ", shape_);
    int64_t off = 0, d = 0;
    for (int64_t i : idx) {
      SB_CHECK(i >= 0 && i < shape_[d], "tensor: index ", i, " out of range for dimension ", d,
               " of shape ", shape_);
      off = off * shape_[d++] + i;
    }
    return data_[off];
  }
  T item() const {
    SB_CHECK(numel_ == 1, "item: expected a tensor with one element but got shape ", shape_);
    return data_[0];
  }

  BasicTensor clone() const {
    if (!defined()) return {};
    BasicTensor t(shape_);
    if (numel_) std::memcpy(t.data_, data_, numel_ * sizeof(T));
    return t;
  }
  // Same storage, new shape; one dimension may be -1.
  BasicTensor reshape(Shape shape) const;
  // Fills in place.
  void fill_(T value) const { std::fill(data_, data_ + numel_, value); }
  void copy_from(const BasicTensor& src) const {
    SB_CHECK(src.numel_ == numel_, "copy_from: shapes ", src.shape_, " and ", shape_, " differ");
    if (numel_) std::memmove(data_, src.data_, numel_ * sizeof(T));
  }
  bool same_storage(const BasicTensor& o) const { return storage_ == o.storage_; }
  long storage_use_count() const { return storage_.use_count(); }

 private:
  std::shared_ptr<void> storage_;
  T* data_ = nullptr;
  Shape shape_;
  int64_t numel_ = 0;
};

using Tensor = BasicTensor<float>;
using IndexTensor = BasicTensor<int64_t>;

// Resolves a single -1 and checks that numel is kept.
Shape infer_reshape(const Shape& from, Shape to, const char* op);

template <class T>
BasicTensor<T> BasicTensor<T>::reshape(Shape shape) const {
  BasicTensor t = *this;
  t.shape_ = infer_reshape(shape_, std::move(shape), "reshape");
  return t;
}

template <class T>
BasicTensor<T> BasicTensor<T>::arange(double start, double stop, double step) {
  SB_CHECK(step != 0, "arange: step must be non-zero");
  double span = (stop - start) / step;
  int64_t n = span <= 0 ? 0 : static_cast<int64_t>(std::ceil(span));
  BasicTensor t({n});
  for (int64_t i = 0; i < n; ++i) t.data_[i] = static_cast<T>(start + i * step);
  return t;
}

template <class T>
BasicTensor<T> BasicTensor<T>::rand(Shape shape, Generator& gen, float lo, float hi) {
  static_assert(std::is_same_v<T, float>, "rand is for float tensors");
  BasicTensor t(std::move(shape));
  for (int64_t i = 0; i < t.numel_; ++i) t.data_[i] = gen.uniform(lo, hi);
  return t;
}

template <class T>
BasicTensor<T> BasicTensor<T>::randn(Shape shape, Generator& gen, float mean, float std) {
  static_assert(std::is_same_v<T, float>, "randn is for float tensors");
  BasicTensor t(std::move(shape));
  for (int64_t i = 0; i < t.numel_; ++i) t.data_[i] = mean + std * gen.normal();
  return t;
}

}  // namespace sb
