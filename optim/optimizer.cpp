// SGD, Adam/AdamW, parameter groups, and gradient clipping.
#include "optim/optimizer.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace sb {

std::vector<ParamGroup> decay_groups(const std::vector<std::pair<std::string, Var>>& named, float lr,
                                     float weight_decay, bool decay_norm_and_bias) {
  ParamGroup decay, no_decay;
  decay.lr = no_decay.lr = lr;
  decay.weight_decay = weight_decay;
  no_decay.weight_decay = decay_norm_and_bias ? weight_decay : 0.f;
  for (const auto& [name, p] : named) (p.dim() <= 1 ? no_decay : decay).params.push_back(p);
  std::vector<ParamGroup> out;
  if (!decay.params.empty()) out.push_back(decay);
  if (!no_decay.params.empty()) out.push_back(no_decay);
  return out;
}

// SGD and AdamW multiply each weight by (1 - lr * weight_decay) per step (SGD through the
// gradient): at lr * weight_decay >= 1 that zeroes or flips every weight, whatever the data.
static void check_decay_factor(const char* who, const std::vector<ParamGroup>& groups) {
  for (const auto& g : groups)
    SB_CHECK(static_cast<double>(g.lr) * g.weight_decay < 1, who, ": learning rate x weight decay must be below 1 (each step ",
             "scales the weights by 1 - lr x wd), got lr ", g.lr, " x weight decay ", g.weight_decay, " = ",
             static_cast<double>(g.lr) * g.weight_decay);
}

Optimizer::Optimizer(std::vector<ParamGroup> groups) : groups_(std::move(groups)) {
  for (auto& g : groups_) {
    SB_CHECK(g.lr >= 0 && std::isfinite(g.lr), "optimizer: learning rate must be >= 0, got ", g.lr);
    SB_CHECK(g.weight_decay >= 0 && std::isfinite(g.weight_decay), "optimizer: weight decay must be >= 0 and finite, got ",
             g.weight_decay);
    if (g.base_lr < 0) g.base_lr = g.lr;
    for (auto& p : g.params) SB_CHECK(p.requires_grad(), "optimizer: a parameter does not require grad");
  }
}

std::vector<Var> Optimizer::all_params() const {
  std::vector<Var> out;
  for (auto& g : groups_) out.insert(out.end(), g.params.begin(), g.params.end());
  return out;
}

void Optimizer::zero_grad() {
  for (auto& g : groups_)
    for (auto& p : g.params) p.zero_grad();
}

void Optimizer::set_lr_factor(float factor) {
  for (auto& g : groups_) g.lr = g.base_lr * factor;
}

static std::vector<ParamGroup> one_group(std::vector<Var> params, float lr, float wd) {
  ParamGroup g;
  g.params = std::move(params);
  g.lr = lr;
  g.weight_decay = wd;
  return {g};
}

// Checks a state tensor from a file against the parameter it belongs to.
static Tensor state_tensor(const StateDict& st, const std::string& key, const Var& p) {
  const Tensor& t = st.get_float(key);
  SB_CHECK(t.shape() == p.shape(), "optimizer state: '", key, "' has shape ", t.shape(),
           " but its parameter has shape ", p.shape());
  return t.clone();
}

SGD::SGD(std::vector<Var> params, SGDOptions opt)
    : SGD(one_group(std::move(params), opt.lr, opt.weight_decay), opt) {}

SGD::SGD(std::vector<ParamGroup> groups, SGDOptions opt) : Optimizer(std::move(groups)), opt_(opt) {
  // momentum 1 or more never forgets a gradient: the update grows without bound.
  SB_CHECK(opt.momentum >= 0 && opt.momentum < 1, "SGD: momentum must be in [0, 1), got ", opt.momentum);
  SB_CHECK(opt.dampening >= 0 && opt.dampening <= 1, "SGD: dampening must be in [0, 1], got ", opt.dampening);
  check_decay_factor("SGD", this->groups());
  SB_CHECK(!opt.nesterov || (opt.momentum > 0 && opt.dampening == 0),
           "SGD: nesterov needs momentum > 0 and dampening 0");
  momentum_.resize(all_params().size());
}

void SGD::step() {
  // Every update is elementwise, so the parameters are cut into pieces of at most kPiece floats
  // and the pieces shared out over the threads in one parallel region: the same bits as one loop.
  struct Piece {
    float* w;
    const float* gr;
    float* buf;  // null without momentum
    int64_t n;
    float wd, lr;
    bool first;
  };
  constexpr int64_t kPiece = 8192;
  std::vector<Piece> pieces;
  int64_t total = 0;
  size_t idx = 0;
  const float mom = opt_.momentum, damp = opt_.dampening;
  const bool nesterov = opt_.nesterov;
  for (auto& g : groups_) {
    for (auto& p : g.params) {
      size_t i = idx++;
      const Tensor& grad = p.grad();
      if (!grad.defined()) continue;  // as PyTorch: parameters without a gradient are skipped
      float* w = p.value().data();
      const float* gr = grad.data();
      int64_t n = p.numel();
      float* buf = nullptr;
      bool first = false;
      if (mom != 0.f) {
        first = !momentum_[i].defined();
        if (first) momentum_[i] = Tensor::empty(p.shape());
        buf = momentum_[i].data();
      }
      for (int64_t k = 0; k < n; k += kPiece)
        pieces.push_back({w + k, gr + k, buf ? buf + k : nullptr, std::min(kPiece, n - k), g.weight_decay, g.lr, first});
      total += n;
    }
  }
  const int64_t count = int64_t(pieces.size());
#pragma omp parallel for schedule(static) if (!omp_in_parallel() && total >= (int64_t(1) << 15) && count > 1)
  for (int64_t q = 0; q < count; ++q) {
    const Piece& pc = pieces[q];
    float* w = pc.w;
    const float* gr = pc.gr;
    const float wd = pc.wd, lr = pc.lr;
    const int64_t n = pc.n;
    if (!pc.buf) {
      for (int64_t k = 0; k < n; ++k) w[k] -= lr * (gr[k] + wd * w[k]);
      continue;
    }
    float* buf = pc.buf;
    const bool first = pc.first;
    for (int64_t k = 0; k < n; ++k) {
      float d = gr[k] + wd * w[k];
      buf[k] = first ? d : mom * buf[k] + (1.f - damp) * d;
      float upd = nesterov ? d + mom * buf[k] : buf[k];
      w[k] -= lr * upd;
    }
  }
}

StateDict SGD::state() const {
  StateDict st;
  for (size_t i = 0; i < momentum_.size(); ++i)
    if (momentum_[i].defined()) st.floats[std::to_string(i) + ".momentum_buffer"] = momentum_[i];
  return st;
}

void SGD::load_state(const StateDict& st) {
  auto params = all_params();
  for (size_t i = 0; i < params.size(); ++i) {
    std::string key = std::to_string(i) + ".momentum_buffer";
    momentum_[i] = st.has_float(key) ? state_tensor(st, key, params[i]) : Tensor();
  }
}

Adam::Adam(std::vector<Var> params, AdamOptions opt)
    : Adam(one_group(std::move(params), opt.lr, opt.weight_decay), opt) {}

Adam::Adam(std::vector<ParamGroup> groups, AdamOptions opt) : Optimizer(std::move(groups)), opt_(opt) {
  SB_CHECK(opt.beta1 >= 0 && opt.beta1 < 1 && opt.beta2 >= 0 && opt.beta2 < 1,
           "Adam: betas must be in [0, 1), got (", opt.beta1, ", ", opt.beta2, ")");
  SB_CHECK(opt.eps >= 0 && std::isfinite(opt.eps), "Adam: eps must be >= 0 and finite, got ", opt.eps);
  if (opt.decoupled) check_decay_factor("AdamW", this->groups());
  size_t n = all_params().size();
  m_.resize(n);
  v_.resize(n);
  steps_.assign(n, 0);
}

void Adam::step() {
  size_t idx = 0;
  for (auto& g : groups_) {
    for (auto& p : g.params) {
      size_t i = idx++;
      const Tensor& grad = p.grad();
      if (!grad.defined()) continue;
      if (!m_[i].defined()) {
        m_[i] = Tensor::zeros(p.shape());
        v_[i] = Tensor::zeros(p.shape());
      }
      int64_t t = ++steps_[i];
      float lr = g.lr, wd = g.weight_decay, b1 = opt_.beta1, b2 = opt_.beta2;
      // Bias corrections in double, then the same float arithmetic order as torch's
      // single-tensor path: p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps).
      float bc1 = static_cast<float>(1.0 - std::pow(static_cast<double>(b1), t));
      float bc2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(static_cast<double>(b2), t)));
      float step_size = lr / bc1;
      float* w = p.value().data();
      const float* gr = grad.data();
      float *m = m_[i].data(), *v = v_[i].data();
      int64_t n = p.numel();
      for (int64_t k = 0; k < n; ++k) {
        float gk = gr[k];
        if (opt_.decoupled) w[k] *= 1.f - lr * wd;
        else gk += wd * w[k];
        m[k] = b1 * m[k] + (1.f - b1) * gk;
        v[k] = b2 * v[k] + (1.f - b2) * gk * gk;
        w[k] -= step_size * m[k] / (std::sqrt(v[k]) / bc2_sqrt + opt_.eps);
      }
    }
  }
}

StateDict Adam::state() const {
  StateDict st;
  for (size_t i = 0; i < m_.size(); ++i) {
    if (!m_[i].defined()) continue;
    st.floats[std::to_string(i) + ".exp_avg"] = m_[i];
    st.floats[std::to_string(i) + ".exp_avg_sq"] = v_[i];
    st.ints[std::to_string(i) + ".step"] = IndexTensor::full({}, steps_[i]);
  }
  return st;
}

void Adam::load_state(const StateDict& st) {
  auto params = all_params();
  for (size_t i = 0; i < params.size(); ++i) {
    std::string k = std::to_string(i);
    if (!st.has_float(k + ".exp_avg")) {
      m_[i] = v_[i] = Tensor();
      steps_[i] = 0;
      continue;
    }
    m_[i] = state_tensor(st, k + ".exp_avg", params[i]);
    v_[i] = state_tensor(st, k + ".exp_avg_sq", params[i]);
    steps_[i] = st.get_int(k + ".step")[0];
  }
}

float grad_norm(const std::vector<Var>& params) {
  double total = 0;
  for (const auto& p : params) {
    const Tensor& g = p.grad();
    if (!g.defined()) continue;
    for (float v : g) total += static_cast<double>(v) * v;
  }
  return static_cast<float>(std::sqrt(total));
}

float clip_grad_norm(const std::vector<Var>& params, float max_norm) {
  SB_CHECK(max_norm > 0, "clip_grad_norm: max_norm must be positive, got ", max_norm);
  float norm = grad_norm(params);
  float coef = max_norm / (norm + 1e-6f);
  if (coef < 1.f) {
    for (auto p : params) {
      if (!p.grad().defined()) continue;
      Tensor scaled = p.grad().clone();  // the old gradient may be shared; never scale in place
      for (float& v : scaled) v *= coef;
      p.set_grad(scaled);
    }
  }
  return norm;
}

}  // namespace sb
