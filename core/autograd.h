// Reverse-mode automatic differentiation over a dynamic graph recorded as ops run.
// A Var is a cheap handle to a Node {value, grad, inputs, backward}. Each op (see ops.h)
// computes its value and, when some input needs a gradient and grad mode is on, records a
// node whose backward function turns the node's grad into its inputs' grads.
// backward() sorts the graph iteratively, sweeps it once in reverse, and frees it.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace sb {

struct Node;
using NodePtr = std::shared_ptr<Node>;

struct Node {
  Tensor value;
  Tensor grad;                 // same shape as value once backward has reached this node
  bool requires_grad = false;
  bool is_leaf = true;         // created by the user (parameters, inputs), not by an op
  bool freed = false;          // an op node whose graph a backward() has already released
  const char* op = "leaf";
  std::vector<NodePtr> inputs;             // owned: the graph is a DAG freed with its root
  std::function<void(Node& self)> backward;  // reads self.grad, accumulates into inputs
  // Leaves: called by backward() once this leaf's gradient is final, i.e. every op that feeds it
  // has run, while the rest of the graph is still being swept. Data-parallel training starts a
  // bucket's all-reduce from here, overlapping communication with the rest of backward.
  std::function<void(Node& self)> on_grad_ready;

  Node() = default;
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;
  ~Node();  // iterative, so dropping a very deep graph cannot overflow the stack

  // Adds g into grad (g must have value's shape). Takes g's storage when grad is empty.
  void accumulate(const Tensor& g);
  // True when backward should produce a gradient for inputs[i].
  bool needs(size_t i) const { return inputs[i] && inputs[i]->requires_grad; }
};

class Var {
 public:
  Var() = default;
  // A leaf. Parameters are leaves with requires_grad = true.
  explicit Var(Tensor value, bool requires_grad = false);

  bool defined() const { return node_ != nullptr; }
  const Tensor& value() const { return node_->value; }
  const Shape& shape() const { return node_->value.shape(); }
  int64_t dim() const { return node_->value.dim(); }
  int64_t size(int64_t d) const { return node_->value.size(d); }
  int64_t numel() const { return node_->value.numel(); }
  float item() const { return node_->value.item(); }
  bool requires_grad() const { return node_->requires_grad; }
  void set_requires_grad(bool on);
  // The accumulated gradient; undefined until a backward() reaches this Var.
  const Tensor& grad() const { return node_->grad; }
  void zero_grad() { node_->grad = Tensor(); }
  // Replaces the gradient (gradient clipping writes a scaled copy; the old one may be shared).
  void set_grad(Tensor g) { node_->grad = std::move(g); }
  // Same value, cut from the graph.
  Var detach() const { return Var(node_->value, false); }
  const NodePtr& node() const { return node_; }
  const char* op() const { return node_->op; }

  // Backpropagates from this scalar (or from `grad_output` of this Var's shape), accumulating
  // into every leaf that requires grad, then frees the graph.
  void backward(const Tensor& grad_output = Tensor()) const;

  // For ops: wraps an existing node.
  static Var from_node(NodePtr n) {
    Var v;
    v.node_ = std::move(n);
    return v;
  }

 private:
  NodePtr node_;
};

// Grad mode: on by default, per thread. Inside a NoGrad scope ops record nothing.
bool grad_enabled();
class NoGrad {
 public:
  NoGrad();
  ~NoGrad();
  NoGrad(const NoGrad&) = delete;
  NoGrad& operator=(const NoGrad&) = delete;

 private:
  bool prev_;
};

// For ops: the result of an op. Records a node with `backward` when grad mode is on and any
// input requires grad; otherwise returns a plain leaf, so inference builds no graph.
Var make_result(Tensor value, const char* op, std::vector<Var> inputs,
                std::function<void(Node& self)> backward);

}  // namespace sb
