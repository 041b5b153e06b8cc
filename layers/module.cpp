// Module registration, dotted-name traversal, state_dict loading and train/eval.
#include "layers/module.h"

#include <cmath>
#include <map>
#include <set>

namespace sb {

static thread_local bool g_check_finite = false;

FiniteCheck::FiniteCheck() : prev_(g_check_finite) { g_check_finite = true; }
FiniteCheck::~FiniteCheck() { g_check_finite = prev_; }

Var Module::operator()(const Var& x) { return checked(forward(x)); }


Var Module::checked(Var y) const {
  if (g_check_finite) {
    const Tensor& v = y.value();
    for (int64_t i = 0; i < v.numel(); ++i)
      if (!std::isfinite(v[i]))
        fail("the output of layer '", path_.empty() ? std::string("(model)") : path_, "' (", name(),
             ") is not finite (", v[i], " at flat index ", i, " of ", v.shape(), ")");
  }
  return y;
}

void Module::assign_paths(const std::string& prefix) {
  path_ = prefix;
  for (auto& [n, child] : children_)
    if (child) child->assign_paths(prefix.empty() ? n : prefix + "." + n);
}

Var Module::forward(const Var&) {
  fail(name(), ": this module does not take a single input; call it with its own signature");
}

void Module::check_new_name(const std::string& name) const {
  SB_CHECK(!name.empty() && name.find('.') == std::string::npos,
           "Module: invalid name '", name, "' (must be non-empty and contain no '.')");
  auto taken = [&](const auto& list) {
    for (const auto& [n, _] : list)
      if (n == name) return true;
    return false;
  };
  SB_CHECK(!taken(params_) && !taken(buffers_) && !taken(int_buffers_) && !taken(children_),
           "Module: the name '", name, "' is already registered in ", this->name());
}

Var Module::register_parameter(const std::string& name, Tensor value) {
  check_new_name(name);
  Var v(std::move(value), true);
  params_.emplace_back(name, v);
  return v;
}

Tensor Module::register_buffer(const std::string& name, Tensor value) {
  check_new_name(name);
  buffers_.emplace_back(name, value);
  return value;
}

IndexTensor Module::register_buffer(const std::string& name, IndexTensor value) {
  check_new_name(name);
  int_buffers_.emplace_back(name, value);
  return value;
}

// Calls fn(prefix, module) for this module and every descendant, depth first in registration
// order, which is the order of PyTorch's state_dict.
template <class Fn>
void Module::visit(const std::string& prefix, Fn&& fn) const {
  fn(prefix, *this);
  for (const auto& [n, child] : children_)
    if (child) child->visit(prefix + n + ".", fn);
}

std::vector<std::pair<std::string, Var>> Module::named_parameters() const {
  std::vector<std::pair<std::string, Var>> out;
  visit("", [&](const std::string& p, const Module& m) {
    for (const auto& [n, v] : m.params_) out.emplace_back(p + n, v);
  });
  return out;
}

std::vector<Var> Module::parameters() const {
  std::vector<Var> out;
  for (auto& [_, v] : named_parameters()) out.push_back(v);
  return out;
}

std::vector<std::pair<std::string, Tensor>> Module::named_buffers() const {
  std::vector<std::pair<std::string, Tensor>> out;
  visit("", [&](const std::string& p, const Module& m) {
    for (const auto& [n, t] : m.buffers_) out.emplace_back(p + n, t);
  });
  return out;
}

std::vector<std::pair<std::string, IndexTensor>> Module::named_int_buffers() const {
  std::vector<std::pair<std::string, IndexTensor>> out;
  visit("", [&](const std::string& p, const Module& m) {
    for (const auto& [n, t] : m.int_buffers_) out.emplace_back(p + n, t);
  });
  return out;
}

StateDict Module::state_dict() const {
  StateDict sd;
  for (auto& [n, v] : named_parameters()) sd.floats[n] = v.value();
  for (auto& [n, t] : named_buffers()) sd.floats[n] = t;
  for (auto& [n, t] : named_int_buffers()) sd.ints[n] = t;
  return sd;
}

void Module::load_state_dict(const StateDict& sd, bool strict) {
  std::vector<std::string> missing, mismatched, unexpected, wrong_kind;
  std::set<std::string> known;
  auto take_float = [&](const std::string& n, const Tensor& dst) {
    known.insert(n);
    auto it = sd.floats.find(n);
    if (it == sd.floats.end()) {
      (sd.ints.count(n) ? wrong_kind : missing).push_back(n);
      return;
    }
    if (it->second.shape() != dst.shape())
      mismatched.push_back(str(n, ": checkpoint ", it->second.shape(), ", model ", dst.shape()));
  };
  auto take_int = [&](const std::string& n, const IndexTensor& dst) {
    known.insert(n);
    auto it = sd.ints.find(n);
    if (it == sd.ints.end()) {
      (sd.floats.count(n) ? wrong_kind : missing).push_back(n);
      return;
    }
    if (it->second.numel() != dst.numel())
      mismatched.push_back(str(n, ": checkpoint ", it->second.shape(), ", model ", dst.shape()));
  };
  auto params = named_parameters();
  auto bufs = named_buffers();
  auto ibufs = named_int_buffers();
  for (auto& [n, v] : params) take_float(n, v.value());
  for (auto& [n, t] : bufs) take_float(n, t);
  for (auto& [n, t] : ibufs) take_int(n, t);
  for (auto& [n, _] : sd.floats)
    if (!known.count(n)) unexpected.push_back(n);
  for (auto& [n, _] : sd.ints)
    if (!known.count(n)) unexpected.push_back(n);

  std::string where = sd.source.empty() ? "load_state_dict" : "load_state_dict(" + sd.source + ")";
  std::string msg;
  auto list = [&](const char* what, const std::vector<std::string>& keys) {
    if (keys.empty()) return;
    msg += str("\n  ", what, " (", keys.size(), "):");
    for (const auto& k : keys) msg += "\n    " + k;
  };
  list("shape mismatch", mismatched);
  list("float/int kind mismatch", wrong_kind);
  if (strict) {
    list("missing keys", missing);
    list("unexpected keys", unexpected);
  }
  SB_CHECK(msg.empty(), where, ": the checkpoint does not fit this ", name(), ":", msg);

  // Nothing is written until everything has been checked, so a failed load changes nothing.
  for (auto& [n, v] : params)
    if (auto it = sd.floats.find(n); it != sd.floats.end()) v.value().copy_from(it->second);
  for (auto& [n, t] : bufs)
    if (auto it = sd.floats.find(n); it != sd.floats.end()) t.copy_from(it->second);
  for (auto& [n, t] : ibufs)
    if (auto it = sd.ints.find(n); it != sd.ints.end()) t.copy_from(it->second);
}

void Module::zero_grad() {
  for (auto& [_, v] : named_parameters()) v.zero_grad();
}

void Module::apply(const std::function<void(Module&)>& fn) {
  fn(*this);
  for (auto& [_, child] : children_)
    if (child) child->apply(fn);
}

void Module::train(bool on) {
  visit("", [&](const std::string&, const Module& m) {
    auto& mm = const_cast<Module&>(m);
    mm.training_ = on;
    mm.on_train(on);
  });
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (auto& [_, v] : named_parameters()) n += v.numel();
  return n;
}

}  // namespace sb
