// The Module base: parameters, buffers and submodules registered by name, so that dotted
// names ("e1.c1.weight", "e1.n1.running_mean") are exactly PyTorch's state_dict keys.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/autograd.h"
#include "core/ops.h"
#include "core/state_dict.h"

namespace sb {

class Module {
 public:
  virtual ~Module() = default;

  // Single-input modules override this; others (losses, multi-input blocks) define their own
  // call signature.
  virtual Var forward(const Var& x);
  // forward(), plus, inside a FiniteCheck scope, a check that names this module (by its dotted
  // path) when its output is not finite. Models call their children through it.
  Var operator()(const Var& x);

  // Gives every module its dotted path from this root ("e2.n1"); called by FiniteCheck users.
  void assign_paths(const std::string& prefix = "");
  const std::string& path() const { return path_; }

  // Registration order is kept, as in PyTorch, so optimizers see parameters in a stable order.
  std::vector<std::pair<std::string, Var>> named_parameters() const;
  std::vector<Var> parameters() const;
  std::vector<std::pair<std::string, Tensor>> named_buffers() const;  // float buffers
  std::vector<std::pair<std::string, IndexTensor>> named_int_buffers() const;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> named_children() const { return children_; }

  // Handles, not copies: writing into the returned tensors writes into the module.
  StateDict state_dict() const;
  // Copies values into the existing parameters and buffers. Every problem (missing keys when
  // strict, unexpected keys when strict, shape mismatches always) is reported in one error.
  void load_state_dict(const StateDict& sd, bool strict = true);

  void zero_grad();
  // Calls fn on this module and every descendant, parents first.
  void apply(const std::function<void(Module&)>& fn);
  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }
  int64_t num_parameters() const;

  // A short description such as "Conv2d(3, 16, kernel_size=3, padding=1, bias=false)".
  virtual std::string name() const { return "Module"; }

 protected:
  Var register_parameter(const std::string& name, Tensor value);
  Tensor register_buffer(const std::string& name, Tensor value);
  IndexTensor register_buffer(const std::string& name, IndexTensor value);
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    check_new_name(name);
    children_.emplace_back(name, m);
    return m;
  }
  // Called by train(); modules with per-mode state may override (then call the base).
  virtual void on_train(bool) {}

 private:
  void check_new_name(const std::string& name) const;
  template <class Fn>
  void visit(const std::string& prefix, Fn&& fn) const;

  std::vector<std::pair<std::string, Var>> params_;
  std::vector<std::pair<std::string, Tensor>> buffers_;
  std::vector<std::pair<std::string, IndexTensor>> int_buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
  std::string path_;

  // y, after the FiniteCheck test when one is in scope.
  Var checked(Var y) const;
};

// While alive, Module::operator() checks every module output for NaN or infinity and throws an
// sb::Error naming the first module (innermost, in execution order) that produced one.
class FiniteCheck {
 public:
  FiniteCheck();
  ~FiniteCheck();
  FiniteCheck(const FiniteCheck&) = delete;
  FiniteCheck& operator=(const FiniteCheck&) = delete;

 private:
  bool prev_;
};

using ModulePtr = std::shared_ptr<Module>;

}  // namespace sb
