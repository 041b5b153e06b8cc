// SyncBatchNorm: statistics combined over ranks in the forward pass, the two per-channel gradient
// sums combined in the backward pass. Plain loops in double: the communication, not these, is
// what a synchronized norm adds to a step.
#include "layers/norm/sync_batch_norm.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>

namespace sb {

static constexpr int64_t kParallelMin = 1 << 15;  // values: below this, one thread

static std::atomic<int64_t> comm_nanoseconds{0};

double sync_batch_norm_comm_seconds() { return 1e-9 * static_cast<double>(comm_nanoseconds.load()); }

// Runs one collective and adds its wall time to comm_nanoseconds.
template <typename F>
static auto timed_collective(F&& collective) {
  const auto t0 = std::chrono::steady_clock::now();
  struct AddOnExit {
    std::chrono::steady_clock::time_point t0;
    ~AddOnExit() {
      comm_nanoseconds += std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count();
    }
  } add{t0};
  return collective();
}

Var sync_batch_norm(const Var& x, Communicator& comm, int group, const RunningStats* running, const Var& weight,
                    const Var& bias, float eps, Activation act) {
  const bool relu = act == Activation::ReLU;
  const char* op = relu ? "sync_batch_norm_relu" : "sync_batch_norm";
  const Shape& xs = x.shape();
  SB_CHECK(x.dim() >= 2, op, ": expected an input of shape (N, C) or (N, C, *) but got ", xs);
  const int64_t N = xs[0], C = xs[1];
  int64_t S = 1;
  for (int64_t d = 2; d < x.dim(); ++d) S *= xs[d];
  for (const Var* p : {&weight, &bias})
    SB_CHECK(!p->defined() || p->shape() == Shape{C}, op, ": weight and bias must be (", C, ",) for input ", xs,
             " but got ", p->shape());
  SB_CHECK(N * S > 0, op, ": input of shape ", xs, " has no values per channel");

  // This rank's count, per-channel mean and sum of squared deviations (M2), gathered from every
  // rank of the group: (ranks, 1 + 2C).
  const ChannelMoments local = channel_moments(x.value());
  std::vector<double> mine(static_cast<size_t>(1 + 2 * C));  // (1 + 2C,): count, mean (C,), M2 (C,)
  mine[0] = static_cast<double>(N * S);
  for (int64_t c = 0; c < C; ++c) {
    mine[1 + c] = local.mean[c];
    mine[1 + C + c] = local.var[c] * static_cast<double>(N * S);
  }
  // Ranks run the same model (the trainer checks their configuration), so C and the gathered
  // widths agree; a rank that disagreed would make MPI fail the gather, ending the job.
  const int ranks = comm.group_size(group);
  const int64_t width = 1 + 2 * C;
  const std::vector<double> all = timed_collective([&] { return comm.gather_all(mine.data(), width, group); });

  // Rank by rank (Chan, Golub & LeVeque): n = na + nb, mean = ma + d nb / n, M2 = M2a + M2b + d^2 na nb / n.
  std::vector<double> mean(C, 0.0), m2(C, 0.0), rstd(C);  // (C,) each
  double n = 0;
  for (int r = 0; r < ranks; ++r) {
    const double* row = all.data() + r * width;
    const double nb = row[0], nt = n + nb;
    for (int64_t c = 0; c < C; ++c) {
      const double d = row[1 + c] - mean[c];
      mean[c] += d * nb / nt;
      m2[c] += row[1 + C + c] + d * d * n * nb / nt;
    }
    n = nt;
  }
  SB_CHECK(n > 1, op, ": expected more than 1 value per channel when training, got ", n, " over the group's ranks");
  for (int64_t c = 0; c < C; ++c) rstd[c] = 1.0 / std::sqrt(m2[c] / n + static_cast<double>(eps));  // biased

  if (running) {
    SB_CHECK(running->mean.defined() && running->var.defined() && running->mean.shape() == Shape{C} &&
             running->var.shape() == Shape{C}, op, ": running_mean and running_var must be (", C, ",)");
    double m = running->momentum;
    if (running->num_batches_tracked.defined()) ++*running->num_batches_tracked.data();
    if (running->cumulative) {
      SB_CHECK(running->num_batches_tracked.defined(), op, ": cumulative averaging needs num_batches_tracked");
      m = 1.0 / static_cast<double>(*running->num_batches_tracked.data());
    }
    float* rm = running->mean.data();
    float* rv = running->var.data();
    for (int64_t c = 0; c < C; ++c) {
      rm[c] = static_cast<float>((1.0 - m) * rm[c] + m * mean[c]);
      rv[c] = static_cast<float>((1.0 - m) * rv[c] + m * m2[c] / (n - 1));  // the group's unbiased variance
    }
  }

  Tensor y = Tensor::empty(xs);  // (N, C, *)
  const float* px = x.value().data();
  const float* pw = weight.defined() ? weight.value().data() : nullptr;
  const float* pb = bias.defined() ? bias.value().data() : nullptr;
  float* py = y.data();
#pragma omp parallel for schedule(static) if (x.numel() > kParallelMin)
  for (int64_t c = 0; c < C; ++c) {
    // In float, so the loop vectorizes; the mean as a float pair keeps x - mean exact enough.
    const float mu_hi = static_cast<float>(mean[c]), mu_lo = static_cast<float>(mean[c] - mu_hi);
    const float scale = static_cast<float>(rstd[c] * (pw ? pw[c] : 1.0)), shift = pb ? pb[c] : 0.f;
    const float floor = relu ? 0.f : -INFINITY;
    for (int64_t i = 0; i < N; ++i) {
      const float* xr = px + (i * C + c) * S;
      float* yr = py + (i * C + c) * S;
#pragma omp simd
      for (int64_t s = 0; s < S; ++s) yr[s] = std::max(((xr[s] - mu_hi) - mu_lo) * scale + shift, floor);
    }
  }

  Tensor saved_y = relu ? y : Tensor();  // the ReLU mask's source
  return make_result(y, op, {x, weight, bias},
                     [&comm, group, mean, rstd, n, saved_y, N, C, S](Node& node) {
    const bool need_x = node.needs(0), need_w = node.needs(1), need_b = node.needs(2);
    const float* px = node.inputs[0]->value.data();                             // (N, C, *)
    const float* pdy = node.grad.data();                                        // (N, C, *)
    const float* pys = saved_y.defined() ? saved_y.data() : nullptr;           // (N, C, *) or none
    const float* pw = node.inputs[1] ? node.inputs[1]->value.data() : nullptr;  // (C,) or none
    // This rank's sum dy and sum dy * (x - mean) per channel, then the group's: (2C,).
    std::vector<double> sums(static_cast<size_t>(2 * C));
#pragma omp parallel for schedule(static) if (N * C * S > kParallelMin)
    for (int64_t c = 0; c < C; ++c) {
      double a = 0, b = 0;
      const double mu = mean[c];
      for (int64_t i = 0; i < N; ++i) {
        const int64_t off = (i * C + c) * S;
        // A fixed vector width per build: the same bits on every run and rank.
#pragma omp simd reduction(+ : a, b)
        for (int64_t s = 0; s < S; ++s) {
          const double dy = pys && !(pys[off + s] > 0.f) ? 0.0 : pdy[off + s];
          a += dy;
          b += dy * (px[off + s] - mu);
        }
      }
      sums[c] = a;
      sums[C + c] = b;
    }
    if (need_w || need_b) {
      Tensor dw = Tensor::empty({C}), db = Tensor::empty({C});  // (C,): this rank's
      for (int64_t c = 0; c < C; ++c) {
        dw[c] = static_cast<float>(sums[C + c] * rstd[c]);
        db[c] = static_cast<float>(sums[c]);
      }
      if (need_w) node.inputs[1]->accumulate(dw);
      if (need_b) node.inputs[2]->accumulate(db);
    }
    if (!need_x) return;  // the same on every rank: the graphs are the same
    timed_collective([&] { comm.sum(sums.data(), 2 * C, group); });
    Tensor dx = Tensor::empty(node.inputs[0]->value.shape());
    float* pdx = dx.data();
#pragma omp parallel for schedule(static) if (N * C * S > kParallelMin)
    for (int64_t c = 0; c < C; ++c) {
      // dx = k_dy * dy + k_const - (x - mean) * k_xmu, the constants in double, the loop in float.
      const double rs = rstd[c], k_dy = rs * (pw ? pw[c] : 1.0);
      const float kd = static_cast<float>(k_dy), kc = static_cast<float>(-k_dy * sums[c] / n);
      const float kx = static_cast<float>(k_dy * rs * rs * sums[C + c] / n);
      const float mu_hi = static_cast<float>(mean[c]), mu_lo = static_cast<float>(mean[c] - mu_hi);
      for (int64_t i = 0; i < N; ++i) {
        const int64_t off = (i * C + c) * S;
#pragma omp simd
        for (int64_t s = 0; s < S; ++s) {
          const float dy = pys && !(pys[off + s] > 0.f) ? 0.f : pdy[off + s];
          pdx[off + s] = kd * dy + kc - ((px[off + s] - mu_hi) - mu_lo) * kx;
        }
      }
    }
    node.inputs[0]->accumulate(dx);
  });
}

SyncBatchNorm::SyncBatchNorm(int64_t num_features, int group, BatchNormConfig cfg)
    : BatchNorm2d(num_features, cfg), group_(group) {
  SB_CHECK(group >= 0, "SyncBatchNorm: group must be 0 (all ranks) or positive, got ", group);
}

Var SyncBatchNorm::normalize(const Var& x) {
  Communicator& comm = world();
  if (!is_training() || comm.group_size(group_) <= 1) return BatchNorm2d::normalize(x);
  SB_CHECK(comm.size() % comm.group_size(group_) == 0, name(), ": groups of ", group_, " ranks do not divide the ",
           comm.size(), " ranks of the run");
  return sync_batch_norm(x, comm, group_, running_stats(), weight, bias, config().eps, config().activation);
}

}  // namespace sb
