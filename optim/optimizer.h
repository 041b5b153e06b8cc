// Optimizers with PyTorch's update rules (SGD, Adam, AdamW), parameter groups, learning-rate
// schedules stepped per iteration, and gradient clipping by global norm.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/state_dict.h"

namespace sb {

// Parameters that share hyper-parameters. lr is the current rate (schedules set it from
// base_lr); weight_decay is per group so norm weights and biases can be kept out of it.
struct ParamGroup {
  std::vector<Var> params;
  float lr = 0.01f;
  float weight_decay = 0.f;
  float base_lr = -1;  // the lr schedules scale; set from lr when the optimizer is built
};

// Two groups: weights of convolutions and linear layers (decay), and 1-d parameters, i.e.
// biases and norm weights (no decay), the common setting for normalization layers.
std::vector<ParamGroup> decay_groups(const std::vector<std::pair<std::string, Var>>& named,
                                     float lr, float weight_decay, bool decay_norm_and_bias = false);

class Optimizer {
 public:
  explicit Optimizer(std::vector<ParamGroup> groups);
  virtual ~Optimizer() = default;
  virtual void step() = 0;
  void zero_grad();
  std::vector<ParamGroup>& groups() { return groups_; }
  // Sets every group's lr to base_lr * factor (what schedules do each iteration).
  void set_lr_factor(float factor);
  // Internal buffers by parameter index ("0.momentum_buffer", "3.exp_avg", ...) plus the step
  // counter, for saving and resuming training. load_state checks names and shapes.
  virtual StateDict state() const = 0;
  virtual void load_state(const StateDict& st) = 0;

 protected:
  std::vector<ParamGroup> groups_;
  std::vector<Var> all_params() const;
};

struct SGDOptions {
  float lr = 0.01f, momentum = 0.f, dampening = 0.f, weight_decay = 0.f;
  bool nesterov = false;
};

// PyTorch's SGD: d = g + wd p; buf = d on the first step, then momentum buf + (1 - dampening) d;
// d = nesterov ? d + momentum buf : buf; p -= lr d.
class SGD : public Optimizer {
 public:
  SGD(std::vector<Var> params, SGDOptions opt);
  SGD(std::vector<ParamGroup> groups, SGDOptions opt);
  void step() override;
  StateDict state() const override;
  void load_state(const StateDict& st) override;

 private:
  SGDOptions opt_;
  std::vector<Tensor> momentum_;  // per parameter; undefined until its first step
};

struct AdamOptions {
  float lr = 1e-3f, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, weight_decay = 0.f;
  bool decoupled = false;  // true: AdamW (decay the weights directly), false: Adam (L2 in grad)
};

// PyTorch's Adam / AdamW (no amsgrad): m and v with bias correction; AdamW first scales
// p by (1 - lr wd).
class Adam : public Optimizer {
 public:
  Adam(std::vector<Var> params, AdamOptions opt);
  Adam(std::vector<ParamGroup> groups, AdamOptions opt);
  void step() override;
  StateDict state() const override;
  void load_state(const StateDict& st) override;

 private:
  AdamOptions opt_;
  std::vector<Tensor> m_, v_;
  std::vector<int64_t> steps_;
};

// Adam with decoupled weight decay (default 1e-2, as torch.optim.AdamW).
inline AdamOptions adamw_options(float lr = 1e-3f, float weight_decay = 1e-2f) {
  AdamOptions o;
  o.lr = lr;
  o.weight_decay = weight_decay;
  o.decoupled = true;
  return o;
}

// Scales all gradients so their global L2 norm is at most max_norm (PyTorch's
// clip_grad_norm_, with its 1e-6); returns the norm before clipping.
float clip_grad_norm(const std::vector<Var>& params, float max_norm);
// The global L2 norm of the gradients (0 for parameters without one).
float grad_norm(const std::vector<Var>& params);

}  // namespace sb
