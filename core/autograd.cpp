// The graph engine: node recording, gradient accumulation, and the backward sweep.
#include "core/autograd.h"

#include <unordered_set>

namespace sb {

static thread_local bool g_grad_enabled = true;

bool grad_enabled() { return g_grad_enabled; }
NoGrad::NoGrad() : prev_(g_grad_enabled) { g_grad_enabled = false; }
NoGrad::~NoGrad() { g_grad_enabled = prev_; }

Var::Var(Tensor value, bool requires_grad) {
  SB_CHECK(value.defined(), "Var: cannot wrap an undefined tensor");
  node_ = std::make_shared<Node>();
  node_->value = std::move(value);
  node_->requires_grad = requires_grad;
}

void Var::set_requires_grad(bool on) {
  SB_CHECK(node_->is_leaf, "set_requires_grad: only leaves can change requires_grad (this Var is the "
                           "output of ", node_->op, "); use detach()");
  node_->requires_grad = on;
}

Node::~Node() {
  // Take over the inputs that would die with this node, and theirs, so destruction is a loop.
  std::vector<NodePtr> doomed = std::move(inputs);
  while (!doomed.empty()) {
    NodePtr n = std::move(doomed.back());
    doomed.pop_back();
    if (n && n.use_count() == 1) {
      for (auto& in : n->inputs) doomed.push_back(std::move(in));
      n->inputs.clear();
      n->backward = nullptr;  // closures may hold tensors only, never nodes
    }
  }
}

void Node::accumulate(const Tensor& g) {
  SB_CHECK(g.shape() == value.shape(), "backward of ", op, ": gradient of shape ", g.shape(),
           " for a value of shape ", value.shape());
  if (!grad.defined()) {
    grad = g;  // shares storage; safe because it is only ever added to out of place below
    return;
  }
  // In place only when nobody else holds this storage (a gradient can be handed to several
  // inputs at once, e.g. by add).
  if (grad.storage_use_count() == 1) {
    float* a = grad.data();
    const float* b = g.data();
    int64_t n = g.numel();
#pragma omp parallel for simd if (n > 32768)
    for (int64_t i = 0; i < n; ++i) a[i] += b[i];
  } else {
    Tensor sum = Tensor::empty(value.shape());
    const float* a = grad.data();
    const float* b = g.data();
    float* o = sum.data();
    int64_t n = g.numel();
#pragma omp parallel for simd if (n > 32768)
    for (int64_t i = 0; i < n; ++i) o[i] = a[i] + b[i];
    grad = sum;
  }
}

Var make_result(Tensor value, const char* op, std::vector<Var> inputs,
                std::function<void(Node& self)> backward) {
  auto node = std::make_shared<Node>();
  node->value = std::move(value);
  node->op = op;
  bool needs = false;
  if (g_grad_enabled)
    for (const Var& v : inputs) needs = needs || (v.defined() && v.requires_grad());
  if (needs) {
    node->requires_grad = true;
    node->is_leaf = false;
    node->inputs.reserve(inputs.size());
    for (const Var& v : inputs) node->inputs.push_back(v.defined() ? v.node() : nullptr);
    node->backward = std::move(backward);
  }
  return Var::from_node(std::move(node));
}

void Var::backward(const Tensor& grad_output) const {
  SB_CHECK(defined(), "backward: called on an undefined Var");
  Node* root = node_.get();
  SB_CHECK(!root->freed, "backward: the graph behind this ", root->op,
           " result was already freed by an earlier backward(); run the forward pass again");
  SB_CHECK(root->requires_grad, "backward: this Var does not require grad (no input of its graph "
                                "requires grad, or it was computed under NoGrad)");
  if (grad_output.defined()) {
    SB_CHECK(grad_output.shape() == root->value.shape(), "backward: grad_output of shape ",
             grad_output.shape(), " for a value of shape ", root->value.shape());
  } else {
    SB_CHECK(root->value.numel() == 1, "backward: implicit gradient needs a scalar, but the value "
                                       "has shape ", root->value.shape(), "; pass grad_output");
  }

  // Iterative post-order DFS: a node comes after all nodes that consume it in reverse order.
  // `order` owns the nodes during the sweep, so clearing a node's inputs frees nothing that is
  // still to be visited; each entry is released right after its node runs.
  std::vector<NodePtr> order;
  std::unordered_set<Node*> seen;
  std::vector<std::pair<NodePtr, size_t>> stack{{node_, 0}};
  seen.insert(root);
  while (!stack.empty()) {
    auto& [n, next] = stack.back();
    if (next < n->inputs.size()) {
      NodePtr in = n->inputs[next++];
      if (in && in->requires_grad && !seen.count(in.get())) {
        SB_CHECK(!in->freed, "backward: part of this graph (a ", in->op,
                 " result) was already freed by an earlier backward(); run the forward pass again");
        seen.insert(in.get());
        stack.push_back({std::move(in), 0});
      }
    } else {
      order.push_back(n);
      stack.pop_back();
    }
  }

  root->accumulate(grad_output.defined() ? grad_output : Tensor::ones(root->value.shape()));
  // Reverse post-order is a topological order from the root towards the leaves.
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    NodePtr n = std::move(*it);
    if (n->is_leaf) {
      if (n->on_grad_ready) n->on_grad_ready(*n);
      continue;
    }
    if (n->grad.defined() && n->backward) n->backward(*n);
    // Free the graph as we go: saved tensors live in the closure, inputs keep nodes alive.
    n->backward = nullptr;
    n->inputs.clear();
    n->inputs.shrink_to_fit();
    n->grad = Tensor();
    n->freed = true;
  }
}

}  // namespace sb
