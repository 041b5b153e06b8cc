// Sequential: children named "0", "1", ... (PyTorch's keys), applied in order.
#pragma once

#include <initializer_list>

#include "layers/module.h"

namespace sb {

class Sequential : public Module {
 public:
  Sequential() = default;
  Sequential(std::initializer_list<ModulePtr> mods) {
    for (auto& m : mods) push_back(m);
  }
  template <class M>
  std::shared_ptr<M> push_back(std::shared_ptr<M> m) {
    auto r = register_module(std::to_string(size_), std::move(m));
    ++size_;
    return r;
  }
  Var forward(const Var& x) override {
    Var h = x;
    for (auto& [_, m] : named_children()) h = (*m)(h);
    return h;
  }
  size_t size() const { return size_; }
  std::string name() const override { return str("Sequential(", size_, " modules)"); }

 private:
  size_t size_ = 0;
};

}  // namespace sb
