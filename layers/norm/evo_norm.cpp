// FRN + TLU, EvoNorm-S0 and EvoNorm-B0: forward and closed-form backward. Every op works on
// planes of S = H x W values: statistics are summed in double per (sample, channel) or (sample,
// group); the parameter gradients are first summed per (n, c) and then over n in order, so the
// result is the same for any thread count.
#include "layers/norm/evo_norm.h"

#include <cmath>
#include <vector>

namespace sb {

namespace {

constexpr int64_t kParallelMin = 1 << 15;

// The gradient share torch.maximum(a, b) gives a: all of it when a > b, half at a tie.
// Branch-free, so the loops that use it vectorize.
inline float max_share(float a, float b) { return float(a > b) + 0.5f * float(a == b); }

inline float sigmoidf(float t) { return 1.f / (1.f + std::exp(-t)); }

void check_param(const char* op, const char* what, const Var& p, int64_t C, const Shape& xs) {
  SB_CHECK(p.defined() && p.dim() == 1 && p.size(0) == C, op, ": ", what, " must be (", C,
           ",) for input ", xs, ", got ", p.defined() ? shape_str(p.shape()) : std::string("none"));
}

void check_input(const char* op, const Var& x) {
  SB_CHECK(x.dim() == 4, op, ": expected 4-d input (N, C, H, W) but got ", x.shape());
  SB_CHECK(x.numel() > 0, op, ": empty input ", x.shape());
}

// Mean and biased variance of n values (two passes in double).
void moments(const float* p, int64_t n, double& mean, double& var) {
  double s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += p[i];
  mean = s / double(n);
  double q = 0;
#pragma omp simd reduction(+ : q)
  for (int64_t i = 0; i < n; ++i) {
    const double d = p[i] - mean;
    q += d * d;
  }
  var = q / double(n);
}

// Sums per-(n, c) partials (N, C) over n into a (C,) tensor, in order.
Tensor sum_over_n(const std::vector<double>& part, int64_t N, int64_t C) {
  Tensor out = Tensor::empty({C});
  for (int64_t c = 0; c < C; ++c) {
    double s = 0;
    for (int64_t n = 0; n < N; ++n) s += part[n * C + c];
    out[c] = float(s);
  }
  return out;
}

}  // namespace

// ---- FRN + TLU -------------------------------------------------------------------------

Var frn_tlu(const Var& x, const Var& weight, const Var& bias, const Var& tau, float eps) {
  const char* op = "frn_tlu";
  check_input(op, x);
  const int64_t N = x.size(0), C = x.size(1), S = x.size(2) * x.size(3);
  check_param(op, "weight", weight, C, x.shape());
  check_param(op, "bias", bias, C, x.shape());
  check_param(op, "tau", tau, C, x.shape());
  const float *px = x.value().data(), *pw = weight.value().data(), *pb = bias.value().data(),
              *pt = tau.value().data();
  Tensor y = Tensor::empty(x.shape());
  float* py = y.data();
  auto rstd = std::make_shared<std::vector<double>>(N * C);  // 1 / sqrt(nu2 + eps) per (n, c)
#pragma omp parallel for schedule(static) if (x.numel() > kParallelMin)
  for (int64_t nc = 0; nc < N * C; ++nc) {
    const int64_t c = nc % C;
    const float* xp = px + nc * S;
    double q = 0;
#pragma omp simd reduction(+ : q)
    for (int64_t i = 0; i < S; ++i) q += double(xp[i]) * xp[i];
    const double rd = 1.0 / std::sqrt(q / double(S) + eps);
    (*rstd)[nc] = rd;
    const float r = float(rd);
    const float w = pw[c], b = pb[c], t = pt[c];
    float* yp = py + nc * S;
#pragma omp simd
    for (int64_t i = 0; i < S; ++i) yp[i] = std::max(w * (xp[i] * r) + b, t);
  }
  return make_result(y, op, {x, weight, bias, tau}, [rstd, N, C, S](Node& n) {
    const float* px = n.inputs[0]->value.data();
    const float *pw = n.inputs[1]->value.data(), *pb = n.inputs[2]->value.data(), *pt = n.inputs[3]->value.data();
    const float* pg = n.grad.data();
    const bool need_x = n.needs(0);
    Tensor dx = need_x ? Tensor::empty(n.inputs[0]->value.shape()) : Tensor();
    float* pdx = need_x ? dx.data() : nullptr;
    std::vector<double> gw(N * C), gb(N * C), gt(N * C);
#pragma omp parallel for schedule(static) if (N * C * S > kParallelMin)
    for (int64_t nc = 0; nc < N * C; ++nc) {
      const int64_t c = nc % C;
      const double rd = (*rstd)[nc];
      const float r = float(rd), w = pw[c], b = pb[c], t = pt[c];
      const float *xp = px + nc * S, *gp = pg + nc * S;
      double sgz = 0, sgzx = 0, sgt = 0;
#pragma omp simd reduction(+ : sgz, sgzx, sgt)
      for (int64_t i = 0; i < S; ++i) {
        const float z = w * (xp[i] * r) + b;  // as the forward computed it, for max()'s choice
        const float share = max_share(z, t);
        const double gz = double(gp[i]) * share;
        sgz += gz;
        sgzx += gz * (xp[i] * rd);
        sgt += double(gp[i]) * (1.0 - share);
      }
      gw[nc] = sgzx, gb[nc] = sgz, gt[nc] = sgt;
      if (!pdx) continue;
      // xh = x r with r = (mean(x^2) + eps)^(-1/2): dx = r (dxh - xh mean(dxh xh)), dxh = w dz,
      // in double: at H x W = 1 the two terms nearly cancel (dx = r w dz eps / (x^2 + eps)).
      const double k = double(w) * sgzx / double(S);
      float* dp = pdx + nc * S;
#pragma omp simd
      for (int64_t i = 0; i < S; ++i) {
        const float z = w * (xp[i] * r) + b;
        const float share = max_share(z, t);
        const double gz = double(gp[i]) * share;
        const double out = rd * (w * gz - xp[i] * rd * k);
        dp[i] = float(out);
      }
    }
    if (need_x) n.inputs[0]->accumulate(dx);
    if (n.needs(1)) n.inputs[1]->accumulate(sum_over_n(gw, N, C));
    if (n.needs(2)) n.inputs[2]->accumulate(sum_over_n(gb, N, C));
    if (n.needs(3)) n.inputs[3]->accumulate(sum_over_n(gt, N, C));
  });
}

// ---- EvoNorm-S0 --------------------------------------------------------------------------

Var evonorm_s0(const Var& x, int64_t groups, const Var& weight, const Var& bias, const Var& v, float eps) {
  const char* op = "evonorm_s0";
  check_input(op, x);
  const int64_t N = x.size(0), C = x.size(1), S = x.size(2) * x.size(3);
  SB_CHECK(groups > 0, op, ": groups must be positive, got ", groups);
  SB_CHECK(C % groups == 0, op, ": ", C, " channels of input ", x.shape(), " are not divisible by ", groups,
           " groups");
  check_param(op, "weight", weight, C, x.shape());
  check_param(op, "bias", bias, C, x.shape());
  check_param(op, "v", v, C, x.shape());
  const int64_t G = groups, Cg = C / G, M = Cg * S;
  const float *px = x.value().data(), *pw = weight.value().data(), *pb = bias.value().data(),
              *pv = v.value().data();
  Tensor y = Tensor::empty(x.shape());
  float* py = y.data();
  // Per (n, g): the mean and sqrt(var + eps).
  auto stats = std::make_shared<std::vector<double>>(2 * N * G);
#pragma omp parallel for schedule(static) if (x.numel() > kParallelMin)
  for (int64_t ng = 0; ng < N * G; ++ng) {
    const float* xg = px + ng * M;
    double mean, var;
    moments(xg, M, mean, var);
    const double sd = std::sqrt(var + eps);
    (*stats)[2 * ng] = mean, (*stats)[2 * ng + 1] = sd;
    const float inv = float(1.0 / sd);
    for (int64_t k = 0; k < Cg; ++k) {
      const int64_t c = (ng % G) * Cg + k;
      const float w = pw[c], b = pb[c], vc = pv[c];
      const float* xp = xg + k * S;
      float* yp = py + ng * M + k * S;
      for (int64_t i = 0; i < S; ++i) yp[i] = xp[i] * sigmoidf(vc * xp[i]) * inv * w + b;
    }
  }
  return make_result(y, op, {x, weight, bias, v}, [stats, N, C, S, G, Cg, M](Node& n) {
    const float* px = n.inputs[0]->value.data();
    const float *pw = n.inputs[1]->value.data(), *pv = n.inputs[3]->value.data();
    const float* pg = n.grad.data();
    const bool need_x = n.needs(0);
    Tensor dx = need_x ? Tensor::empty(n.inputs[0]->value.shape()) : Tensor();
    float* pdx = need_x ? dx.data() : nullptr;
    std::vector<double> gw(N * C), gb(N * C), gv(N * C);
#pragma omp parallel for schedule(static) if (N * C * S > kParallelMin)
    for (int64_t ng = 0; ng < N * G; ++ng) {
      const double mean = (*stats)[2 * ng], sd = (*stats)[2 * ng + 1], inv = 1.0 / sd;
      const int64_t nidx = ng / G, c0 = (ng % G) * Cg;
      // a = x sigmoid(v x); y = a / sd * w + b. Pass 1: parameter sums and d(loss)/d(sd).
      double gsd = 0;
      std::vector<float> sgs(M);  // sigmoid(v x) of the group, from pass 1 for pass 2
      for (int64_t k = 0; k < Cg; ++k) {
        const int64_t c = c0 + k;
        const float vc = pv[c];
        const double w = pw[c];
        const float *xp = px + ng * M + k * S, *gp = pg + ng * M + k * S;
        float* sk = sgs.data() + k * S;
        for (int64_t i = 0; i < S; ++i) sk[i] = sigmoidf(vc * xp[i]);
        double sgw = 0, sgb = 0, sgv = 0;
#pragma omp simd reduction(+ : sgw, sgb, sgv)
        for (int64_t i = 0; i < S; ++i) {
          const double xi = xp[i], sg = sk[i], a = xi * sg, g = gp[i];
          sgw += g * a;
          sgb += g;
          sgv += g * xi * xi * sg * (1 - sg);
        }
        gw[nidx * C + c] = sgw * inv, gb[nidx * C + c] = sgb, gv[nidx * C + c] = sgv * w * inv;
        gsd -= w * sgw * inv * inv;  // d(a / sd)/d(sd) = -a / sd^2
      }
      if (!pdx) continue;
      // sd = sqrt(var + eps): d(sd)/dx = (x - mean) / (M sd).
      const double k_sd = gsd / (double(M) * sd);
      for (int64_t k = 0; k < Cg; ++k) {
        const int64_t c = c0 + k;
        const float vc = pv[c];
        const double wi = pw[c] * inv;
        const float *xp = px + ng * M + k * S, *gp = pg + ng * M + k * S;
        float* dp = pdx + ng * M + k * S;
        const float* sk = sgs.data() + k * S;
#pragma omp simd
        for (int64_t i = 0; i < S; ++i) {
          const double xi = xp[i], sg = sk[i];
          dp[i] = float(gp[i] * wi * (sg + xi * vc * sg * (1 - sg)) + k_sd * (xi - mean));
        }
      }
    }
    if (need_x) n.inputs[0]->accumulate(dx);
    if (n.needs(1)) n.inputs[1]->accumulate(sum_over_n(gw, N, C));
    if (n.needs(2)) n.inputs[2]->accumulate(sum_over_n(gb, N, C));
    if (n.needs(3)) n.inputs[3]->accumulate(sum_over_n(gv, N, C));
  });
}

// ---- EvoNorm-B0 --------------------------------------------------------------------------

Var evonorm_b0(const Var& x, const Var& weight, const Var& bias, const Var& v, Tensor running_var,
               bool use_batch_stats, bool update_running, float momentum, float eps) {
  const char* op = "evonorm_b0";
  check_input(op, x);
  const int64_t N = x.size(0), C = x.size(1), S = x.size(2) * x.size(3);
  check_param(op, "weight", weight, C, x.shape());
  check_param(op, "bias", bias, C, x.shape());
  check_param(op, "v", v, C, x.shape());
  const bool have_running = running_var.defined();
  SB_CHECK(!have_running || (running_var.dim() == 1 && running_var.size(0) == C), op, ": running_var must be (",
           C, ",), got ", shape_str(running_var.shape()));
  SB_CHECK(use_batch_stats || have_running, op, ": evaluation without batch statistics needs running_var");
  SB_CHECK(!update_running || (use_batch_stats && have_running), op,
           ": updating running_var needs batch statistics and running_var");
  SB_CHECK(!update_running || N * S > 1, op, ": training needs more than one value per channel (the running "
           "variance divides by n - 1), got input ", x.shape());
  const float *px = x.value().data(), *pw = weight.value().data(), *pb = bias.value().data(),
              *pv = v.value().data();
  // Per (n, c): instance mean and sqrt(ivar + eps); per c: batch mean and sqrt(var + eps).
  auto inst = std::make_shared<std::vector<double>>(2 * N * C);
  auto chan = std::make_shared<std::vector<double>>(2 * C);
#pragma omp parallel for schedule(static) if (x.numel() > kParallelMin)
  for (int64_t nc = 0; nc < N * C; ++nc) {
    double mean, var;
    moments(px + nc * S, S, mean, var);
    (*inst)[2 * nc] = mean, (*inst)[2 * nc + 1] = var;  // var for now; sqrt(var + eps) below
  }
  for (int64_t c = 0; c < C; ++c) {
    double var;
    if (use_batch_stats) {
      // Batch moments from the per-sample ones: mean of means, and the law of total variance.
      double mean = 0;
      for (int64_t n = 0; n < N; ++n) mean += (*inst)[2 * (n * C + c)];
      mean /= double(N);
      double q = 0;
      for (int64_t n = 0; n < N; ++n) {
        const double d = (*inst)[2 * (n * C + c)] - mean;
        q += (*inst)[2 * (n * C + c) + 1] + d * d;
      }
      var = q / double(N);
      (*chan)[2 * c] = mean;
    } else {
      var = running_var[c];
      (*chan)[2 * c] = 0;
    }
    (*chan)[2 * c + 1] = std::sqrt(var + eps);
    if (update_running) {
      const double cnt = double(N * S);
      running_var[c] = float((1.0 - momentum) * running_var[c] + momentum * var * cnt / (cnt - 1));
    }
  }
  for (int64_t nc = 0; nc < N * C; ++nc) (*inst)[2 * nc + 1] = std::sqrt((*inst)[2 * nc + 1] + eps);
  Tensor y = Tensor::empty(x.shape());
  float* py = y.data();
#pragma omp parallel for schedule(static) if (x.numel() > kParallelMin)
  for (int64_t nc = 0; nc < N * C; ++nc) {
    const int64_t c = nc % C;
    const float left = float((*chan)[2 * c + 1]), sd = float((*inst)[2 * nc + 1]);
    const float w = pw[c], b = pb[c], vc = pv[c];
    const float* xp = px + nc * S;
    float* yp = py + nc * S;
#pragma omp simd
    for (int64_t i = 0; i < S; ++i) yp[i] = xp[i] / std::max(left, vc * xp[i] + sd) * w + b;
  }
  return make_result(y, op, {x, weight, bias, v}, [inst, chan, use_batch_stats, N, C, S](Node& n) {
    const float* px = n.inputs[0]->value.data();
    const float *pw = n.inputs[1]->value.data(), *pv = n.inputs[3]->value.data();
    const float* pg = n.grad.data();
    const bool need_x = n.needs(0);
    // Pass 1 per (n, c): the parameter sums and the gradients reaching sqrt(ivar + eps) and
    // sqrt(var + eps) (the latter summed over n below, when it came from the batch).
    std::vector<double> gw(N * C), gb(N * C), gv(N * C), gsd(N * C), gleft(N * C);
#pragma omp parallel for schedule(static) if (N * C * S > kParallelMin)
    for (int64_t nc = 0; nc < N * C; ++nc) {
      const int64_t c = nc % C;
      const float left = float((*chan)[2 * c + 1]), sd = float((*inst)[2 * nc + 1]), vc = pv[c];
      const double w = pw[c];
      const float *xp = px + nc * S, *gp = pg + nc * S;
      double sgw = 0, sgb = 0, sgv = 0, sgsd = 0, sgl = 0;
#pragma omp simd reduction(+ : sgw, sgb, sgv, sgsd, sgl)
      for (int64_t i = 0; i < S; ++i) {
        const float right = vc * xp[i] + sd, den = std::max(left, right);
        const double g = gp[i], xi = xp[i], inv = 1.0 / den;
        sgw += g * xi * inv;
        sgb += g;
        const double gden = -g * w * xi * inv * inv;
        const double gr = gden * max_share(right, left);
        sgl += gden * max_share(left, right);
        sgv += gr * xi;
        sgsd += gr;
      }
      gw[nc] = sgw, gb[nc] = sgb, gv[nc] = sgv, gsd[nc] = sgsd, gleft[nc] = sgl;
    }
    if (need_x) {
      std::vector<double> gl(C, 0.0);
      if (use_batch_stats)
        for (int64_t c = 0; c < C; ++c)
          for (int64_t b = 0; b < N; ++b) gl[c] += gleft[b * C + c];
      Tensor dx = Tensor::empty(n.inputs[0]->value.shape());
      float* pdx = dx.data();
#pragma omp parallel for schedule(static) if (N * C * S > kParallelMin)
      for (int64_t nc = 0; nc < N * C; ++nc) {
        const int64_t c = nc % C;
        const float left = float((*chan)[2 * c + 1]), sd = float((*inst)[2 * nc + 1]), vc = pv[c];
        const double w = pw[c];
        // d sqrt(var + eps) / dx = (x - mean) / (count sqrt(var + eps)), for the instance and batch.
        const double ki = gsd[nc] / (double(S) * (*inst)[2 * nc + 1]), mi = (*inst)[2 * nc];
        const double kb = use_batch_stats ? gl[c] / (double(N * S) * (*chan)[2 * c + 1]) : 0.0, mb = (*chan)[2 * c];
        const float *xp = px + nc * S, *gp = pg + nc * S;
        float* dp = pdx + nc * S;
#pragma omp simd
        for (int64_t i = 0; i < S; ++i) {
          const float right = vc * xp[i] + sd, den = std::max(left, right);
          const double g = gp[i], xi = xp[i], inv = 1.0 / den;
          const float share = max_share(right, left);
          const double gr = -g * w * xi * inv * inv * share;
          const double out = g * w * inv + gr * vc + ki * (xi - mi) + kb * (xi - mb);
          dp[i] = float(out);
        }
      }
      n.inputs[0]->accumulate(dx);
    }
    if (n.needs(1)) n.inputs[1]->accumulate(sum_over_n(gw, N, C));
    if (n.needs(2)) n.inputs[2]->accumulate(sum_over_n(gb, N, C));
    if (n.needs(3)) n.inputs[3]->accumulate(sum_over_n(gv, N, C));
  });
}

// ---- the layers ---------------------------------------------------------------------------

FilterResponseNormTlu2d::FilterResponseNormTlu2d(int64_t num_features, float eps)
    : channels_(num_features), eps_(eps) {
  SB_CHECK(num_features > 0, "FilterResponseNormTlu2d: num_features must be positive, got ", num_features);
  weight = register_parameter("weight", Tensor::ones({num_features}));
  bias = register_parameter("bias", Tensor::zeros({num_features}));
  tau = register_parameter("tau", Tensor::zeros({num_features}));
}

Var FilterResponseNormTlu2d::forward(const Var& x) {
  SB_CHECK(x.dim() == 4 && x.size(1) == channels_, name(), ": expected input (N, ", channels_,
           ", H, W) but got ", x.shape());
  return frn_tlu(x, weight, bias, tau, eps_);
}

EvoNorm2dS0::EvoNorm2dS0(int64_t num_features, int64_t groups, float eps)
    : channels_(num_features), groups_(groups), eps_(eps) {
  SB_CHECK(num_features > 0, "EvoNorm2dS0: num_features must be positive, got ", num_features);
  SB_CHECK(groups > 0, "EvoNorm2dS0: groups must be positive, got ", groups);
  SB_CHECK(num_features % groups == 0, "EvoNorm2dS0(", num_features, ", groups=", groups, "): ", num_features,
           " channels are not divisible by ", groups, " groups");
  weight = register_parameter("weight", Tensor::ones({num_features}));
  bias = register_parameter("bias", Tensor::zeros({num_features}));
  v = register_parameter("v", Tensor::ones({num_features}));
}

Var EvoNorm2dS0::forward(const Var& x) {
  SB_CHECK(x.dim() == 4 && x.size(1) == channels_, name(), ": expected input (N, ", channels_,
           ", H, W) but got ", x.shape());
  return evonorm_s0(x, groups_, weight, bias, v, eps_);
}

EvoNorm2dB0::EvoNorm2dB0(int64_t num_features, float momentum, float eps)
    : channels_(num_features), momentum_(momentum), eps_(eps) {
  SB_CHECK(num_features > 0, "EvoNorm2dB0: num_features must be positive, got ", num_features);
  weight = register_parameter("weight", Tensor::ones({num_features}));
  bias = register_parameter("bias", Tensor::zeros({num_features}));
  v = register_parameter("v", Tensor::ones({num_features}));
  running_var = register_buffer("running_var", Tensor::ones({num_features}));
}

Var EvoNorm2dB0::forward(const Var& x) {
  SB_CHECK(x.dim() == 4 && x.size(1) == channels_, name(), ": expected input (N, ", channels_,
           ", H, W) but got ", x.shape());
  if (observer) observer->observe(*this, x.value());
  const bool batch = is_training() || batch_stats_in_eval;
  return evonorm_b0(x, weight, bias, v, running_var, batch, is_training(), momentum_, eps_);
}

}  // namespace sb
