// FRN + TLU, EvoNorm-S0 and EvoNorm-B0: forward and closed-form backward. Every op works on
// planes of S = H x W values: statistics are summed in double per (sample, channel) or (sample,
// group); the parameter gradients are first summed per (n, c) and then over n in order, so the
// result is the same for any thread count.
#include "layers/norm/evo_norm.h"

#include <bit>
#include <cmath>
#include <cstdint>
#include <vector>

#include "core/kernels/simd.h"

namespace sb {

namespace {

constexpr int64_t kParallelMin = 1 << 15;

// The gradient share torch.maximum(a, b) gives a: all of it when a > b, half at a tie.
// Branch-free, so the loops that use it vectorize.
inline float max_share(float a, float b) { return float(a > b) + 0.5f * float(a == b); }

// e^t as 2^k e^r, k = round(t / ln 2), |r| <= ln(2) / 2, e^r by its Taylor series to r^6 (the
// first term left out, r^7 / 7!, is below 1.2e-7 of e^r there). In float, within 2.5e-7 of exp
// (about 2 ulps) over [-87, 88], checked at 100,001 points against double. Unlike libm's expf it
// vectorizes, which EvoNorm-S0 needs: one exp per element in each direction.
// t is clamped to [-87, 88], where 2^k stays a normal float; sigmoid is then within a float
// ulp of 0 or 1 anyway.
__attribute__((always_inline)) inline float exp_vectorizable(float t) {
  t = std::min(std::max(t, -87.f), 88.f);
  const float round_bias = 12582912.f;  // 1.5 * 2^23: adding it rounds to the nearest integer
  const float k = (t * 1.44269504f + round_bias) - round_bias;
  const float r = (t - k * 0.693115234375f) - k * 3.19461849e-5f;  // ln 2 = 2839 / 4096 + lo: k * 2839 / 4096 is exact
  float p = 1.f / 720;
  p = p * r + 1.f / 120;
  p = p * r + 1.f / 24;
  p = p * r + 1.f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  return p * std::bit_cast<float>((static_cast<int32_t>(k) + 127) << 23);
}

inline float sigmoidf(float t) { return 1.f / (1.f + exp_vectorizable(-t)); }

void check_param(const char* op, const char* what, const Var& p, int64_t C, const Shape& xs) {
  SB_CHECK(p.defined() && p.dim() == 1 && p.size(0) == C, op, ": ", what, " must be (", C,
           ",) for input ", xs, ", got ", p.defined() ? shape_str(p.shape()) : std::string("none"));
}

void check_input(const char* op, const Var& x) {
  SB_CHECK(x.dim() == 4, op, ": expected 4-d input (N, C, H, W) but got ", x.shape());
  SB_CHECK(x.numel() > 0, op, ": empty input ", x.shape());
}

// The per-plane loops below are always-inline bodies that SB_SIMD_VARIANTS compiles for AVX-512,
// AVX2 and the baseline (core/kernels/simd.h); each op reads kernels::simd_level() once, outside
// its parallel loops, and passes it down. The arithmetic is the same at every level; the double
// reductions are split over as many lanes as the level has, so the last bits differ by level.
#define SB_INLINE __attribute__((always_inline)) inline
using kernels::Simd;

// Mean and biased variance of n values (two passes in double): mv = {mean, var}.
SB_INLINE void moments_body(const float* p, int64_t n, double* mv) {
  double s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += p[i];
  const double mean = s / double(n);
  double q = 0;
#pragma omp simd reduction(+ : q)
  for (int64_t i = 0; i < n; ++i) {
    const double d = p[i] - mean;
    q += d * d;
  }
  mv[0] = mean, mv[1] = q / double(n);
}
SB_SIMD_VARIANTS(, void, moments, (p, n, mv), const float* p, int64_t n, double* mv)

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

namespace {

// sum of x^2 over a plane, in double.
SB_INLINE double sum_squares_body(const float* x, int64_t n) {
  double q = 0;
#pragma omp simd reduction(+ : q)
  for (int64_t i = 0; i < n; ++i) q += double(x[i]) * x[i];
  return q;
}
SB_SIMD_VARIANTS(, double, sum_squares, (x, n), const float* x, int64_t n)

SB_INLINE void frn_forward_body(const float* x, float* y, int64_t n, float r, float w, float b, float t) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = std::max(w * (x[i] * r) + b, t);
}
SB_SIMD_VARIANTS(, void, frn_forward, (x, y, n, r, w, b, t), const float* x, float* y, int64_t n, float r,
                 float w, float b, float t)

// sums = {sum dz, sum dz x rd, sum dtau} over a plane, dz = dy where z = w x r + b won max().
SB_INLINE void frn_grad_sums_body(const float* x, const float* g, int64_t n, float r, double rd, float w, float b,
                                  float t, double* sums) {
  double sgz = 0, sgzx = 0, sgt = 0;
#pragma omp simd reduction(+ : sgz, sgzx, sgt)
  for (int64_t i = 0; i < n; ++i) {
    const float z = w * (x[i] * r) + b;  // as the forward computed it, for max()'s choice
    const float share = max_share(z, t);
    const double gz = double(g[i]) * share;
    sgz += gz;
    sgzx += gz * (x[i] * rd);
    sgt += double(g[i]) * (1.0 - share);
  }
  sums[0] = sgz, sums[1] = sgzx, sums[2] = sgt;
}
SB_SIMD_VARIANTS(, void, frn_grad_sums, (x, g, n, r, rd, w, b, t, sums), const float* x, const float* g, int64_t n,
                 float r, double rd, float w, float b, float t, double* sums)

// xh = x r with r = (mean(x^2) + eps)^(-1/2): dx = r (dxh - xh mean(dxh xh)), dxh = w dz, in
// double: at H x W = 1 the two terms nearly cancel (dx = r w dz eps / (x^2 + eps)).
SB_INLINE void frn_dx_body(const float* x, const float* g, float* dx, int64_t n, float r, double rd, float w,
                           float b, float t, double k) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float z = w * (x[i] * r) + b;
    const double gz = double(g[i]) * max_share(z, t);
    dx[i] = float(rd * (w * gz - x[i] * rd * k));
  }
}
SB_SIMD_VARIANTS(, void, frn_dx, (x, g, dx, n, r, rd, w, b, t, k), const float* x, const float* g, float* dx,
                 int64_t n, float r, double rd, float w, float b, float t, double k)

}  // namespace

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
  const Simd level = kernels::simd_level();
#pragma omp parallel for schedule(static) if (x.numel() > kParallelMin)
  for (int64_t nc = 0; nc < N * C; ++nc) {
    const int64_t c = nc % C;
    const double rd = 1.0 / std::sqrt(sum_squares(level, px + nc * S, S) / double(S) + eps);
    (*rstd)[nc] = rd;
    frn_forward(level, px + nc * S, py + nc * S, S, float(rd), pw[c], pb[c], pt[c]);
  }
  return make_result(y, op, {x, weight, bias, tau}, [rstd, N, C, S](Node& n) {
    const float* px = n.inputs[0]->value.data();
    const float *pw = n.inputs[1]->value.data(), *pb = n.inputs[2]->value.data(), *pt = n.inputs[3]->value.data();
    const float* pg = n.grad.data();
    const bool need_x = n.needs(0);
    Tensor dx = need_x ? Tensor::empty(n.inputs[0]->value.shape()) : Tensor();
    float* pdx = need_x ? dx.data() : nullptr;
    std::vector<double> gw(N * C), gb(N * C), gt(N * C);
    const Simd level = kernels::simd_level();
#pragma omp parallel for schedule(static) if (N * C * S > kParallelMin)
    for (int64_t nc = 0; nc < N * C; ++nc) {
      const int64_t c = nc % C;
      const double rd = (*rstd)[nc];
      const float r = float(rd), w = pw[c], b = pb[c], t = pt[c];
      double sums[3];
      frn_grad_sums(level, px + nc * S, pg + nc * S, S, r, rd, w, b, t, sums);
      gb[nc] = sums[0], gw[nc] = sums[1], gt[nc] = sums[2];
      if (pdx) frn_dx(level, px + nc * S, pg + nc * S, pdx + nc * S, S, r, rd, w, b, t, double(w) * sums[1] / double(S));
    }
    if (need_x) n.inputs[0]->accumulate(dx);
    if (n.needs(1)) n.inputs[1]->accumulate(sum_over_n(gw, N, C));
    if (n.needs(2)) n.inputs[2]->accumulate(sum_over_n(gb, N, C));
    if (n.needs(3)) n.inputs[3]->accumulate(sum_over_n(gt, N, C));
  });
}

// ---- EvoNorm-S0 --------------------------------------------------------------------------

namespace {

// sg = sigmoid(v x) over a plane.
SB_INLINE void sigmoid_of_scaled_body(const float* x, float* sg, int64_t n, float v) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) sg[i] = sigmoidf(v * x[i]);
}
SB_SIMD_VARIANTS(, void, sigmoid_of_scaled, (x, sg, n, v), const float* x, float* sg, int64_t n, float v)

// y = x sg / sd * w + b, from the plane's sigmoid(v x).
SB_INLINE void s0_forward_body(const float* x, const float* sg, float* y, int64_t n, float inv, float w, float b) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * sg[i] * inv * w + b;
}
SB_SIMD_VARIANTS(, void, s0_forward, (x, sg, y, n, inv, w, b), const float* x, const float* sg, float* y, int64_t n,
                 float inv, float w, float b)

// sums = {sum dy a, sum dy, sum dy x^2 sg (1 - sg)} over a plane, a = x sg.
SB_INLINE void s0_grad_sums_body(const float* x, const float* sg, const float* g, int64_t n, double* sums) {
  double sgw = 0, sgb = 0, sgv = 0;
#pragma omp simd reduction(+ : sgw, sgb, sgv)
  for (int64_t i = 0; i < n; ++i) {
    const double xi = x[i], s = sg[i], gi = g[i];
    sgw += gi * xi * s;
    sgb += gi;
    sgv += gi * xi * xi * s * (1 - s);
  }
  sums[0] = sgw, sums[1] = sgb, sums[2] = sgv;
}
SB_SIMD_VARIANTS(, void, s0_grad_sums, (x, sg, g, n, sums), const float* x, const float* sg, const float* g, int64_t n,
                 double* sums)

SB_INLINE void s0_dx_body(const float* x, const float* sg, const float* g, float* dx, int64_t n, float v, double wi,
                          double k_sd, double mean) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const double xi = x[i], s = sg[i];
    dx[i] = float(g[i] * wi * (s + xi * v * s * (1 - s)) + k_sd * (xi - mean));
  }
}
SB_SIMD_VARIANTS(, void, s0_dx, (x, sg, g, dx, n, v, wi, k_sd, mean), const float* x, const float* sg, const float* g,
                 float* dx, int64_t n, float v, double wi, double k_sd, double mean)

}  // namespace

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
  const Simd level = kernels::simd_level();
#pragma omp parallel for schedule(static) if (x.numel() > kParallelMin)
  for (int64_t ng = 0; ng < N * G; ++ng) {
    const float* xg = px + ng * M;
    double mv[2];
    moments(level, xg, M, mv);
    const double sd = std::sqrt(mv[1] + eps);
    (*stats)[2 * ng] = mv[0], (*stats)[2 * ng + 1] = sd;
    const float inv = float(1.0 / sd);
    std::vector<float> sg(S);
    for (int64_t k = 0; k < Cg; ++k) {
      const int64_t c = (ng % G) * Cg + k;
      sigmoid_of_scaled(level, xg + k * S, sg.data(), S, pv[c]);
      s0_forward(level, xg + k * S, sg.data(), py + ng * M + k * S, S, inv, pw[c], pb[c]);
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
    const Simd level = kernels::simd_level();
#pragma omp parallel for schedule(static) if (N * C * S > kParallelMin)
    for (int64_t ng = 0; ng < N * G; ++ng) {
      const double mean = (*stats)[2 * ng], sd = (*stats)[2 * ng + 1], inv = 1.0 / sd;
      const int64_t nidx = ng / G, c0 = (ng % G) * Cg;
      // a = x sigmoid(v x); y = a / sd * w + b. Pass 1: parameter sums and d(loss)/d(sd).
      double gsd = 0;
      std::vector<float> sgs(M);  // sigmoid(v x) of the group, from pass 1 for pass 2
      for (int64_t k = 0; k < Cg; ++k) {
        const int64_t c = c0 + k;
        const double w = pw[c];
        const float *xp = px + ng * M + k * S, *gp = pg + ng * M + k * S;
        float* sk = sgs.data() + k * S;
        sigmoid_of_scaled(level, xp, sk, S, pv[c]);
        double sums[3];
        s0_grad_sums(level, xp, sk, gp, S, sums);
        gw[nidx * C + c] = sums[0] * inv, gb[nidx * C + c] = sums[1], gv[nidx * C + c] = sums[2] * w * inv;
        gsd -= w * sums[0] * inv * inv;  // d(a / sd)/d(sd) = -a / sd^2
      }
      if (!pdx) continue;
      // sd = sqrt(var + eps): d(sd)/dx = (x - mean) / (M sd).
      const double k_sd = gsd / (double(M) * sd);
      for (int64_t k = 0; k < Cg; ++k) {
        const int64_t c = c0 + k;
        const int64_t off = ng * M + k * S;
        s0_dx(level, px + off, sgs.data() + k * S, pg + off, pdx + off, S, pv[c], pw[c] * inv, k_sd, mean);
      }
    }
    if (need_x) n.inputs[0]->accumulate(dx);
    if (n.needs(1)) n.inputs[1]->accumulate(sum_over_n(gw, N, C));
    if (n.needs(2)) n.inputs[2]->accumulate(sum_over_n(gb, N, C));
    if (n.needs(3)) n.inputs[3]->accumulate(sum_over_n(gv, N, C));
  });
}

// ---- EvoNorm-B0 --------------------------------------------------------------------------

namespace {

// y = x / max(left, v x + sd) * w + b; left = sqrt(var + eps) of the batch (or running_var),
// sd = sqrt(ivar + eps) of the instance.
SB_INLINE void b0_forward_body(const float* x, float* y, int64_t n, float left, float sd, float w, float b,
                               float v) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] / std::max(left, v * x[i] + sd) * w + b;
}
SB_SIMD_VARIANTS(, void, b0_forward, (x, y, n, left, sd, w, b, v), const float* x, float* y, int64_t n, float left,
                 float sd, float w, float b, float v)

// sums = {d weight, d bias, d v, d sd, d left} of a plane: the parameter sums and the gradients
// reaching sqrt(ivar + eps) and sqrt(var + eps).
SB_INLINE void b0_grad_sums_body(const float* x, const float* g, int64_t n, float left, float sd, float v, double w,
                                 double* sums) {
  double sgw = 0, sgb = 0, sgv = 0, sgsd = 0, sgl = 0;
#pragma omp simd reduction(+ : sgw, sgb, sgv, sgsd, sgl)
  for (int64_t i = 0; i < n; ++i) {
    const float right = v * x[i] + sd, den = std::max(left, right);
    const double gi = g[i], xi = x[i], inv = 1.f / den;  // a float division: 16 lanes, not 8
    sgw += gi * xi * inv;
    sgb += gi;
    const double gden = -gi * w * xi * inv * inv;
    const double gr = gden * max_share(right, left);
    sgl += gden * max_share(left, right);
    sgv += gr * xi;
    sgsd += gr;
  }
  sums[0] = sgw, sums[1] = sgb, sums[2] = sgv, sums[3] = sgsd, sums[4] = sgl;
}
SB_SIMD_VARIANTS(, void, b0_grad_sums, (x, g, n, left, sd, v, w, sums), const float* x, const float* g, int64_t n,
                 float left, float sd, float v, double w, double* sums)

// ki, mi: the instance's d(loss)/d(sd) / (S sd) and mean; kb, mb the same for the batch.
SB_INLINE void b0_dx_body(const float* x, const float* g, float* dx, int64_t n, float left, float sd, float v,
                          double w, double ki, double mi, double kb, double mb) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float right = v * x[i] + sd, den = std::max(left, right);
    const double gi = g[i], xi = x[i], inv = 1.f / den;  // a float division: 16 lanes, not 8
    const double gr = -gi * w * xi * inv * inv * max_share(right, left);
    dx[i] = float(gi * w * inv + gr * v + ki * (xi - mi) + kb * (xi - mb));
  }
}
SB_SIMD_VARIANTS(, void, b0_dx, (x, g, dx, n, left, sd, v, w, ki, mi, kb, mb), const float* x, const float* g,
                 float* dx, int64_t n, float left, float sd, float v, double w, double ki, double mi, double kb,
                 double mb)

}  // namespace

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
  const Simd level = kernels::simd_level();
#pragma omp parallel for schedule(static) if (x.numel() > kParallelMin)
  for (int64_t nc = 0; nc < N * C; ++nc) moments(level, px + nc * S, S, inst->data() + 2 * nc);  // var for now
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
    b0_forward(level, px + nc * S, py + nc * S, S, float((*chan)[2 * c + 1]), float((*inst)[2 * nc + 1]), pw[c],
               pb[c], pv[c]);
  }
  return make_result(y, op, {x, weight, bias, v}, [inst, chan, use_batch_stats, N, C, S](Node& n) {
    const float* px = n.inputs[0]->value.data();
    const float *pw = n.inputs[1]->value.data(), *pv = n.inputs[3]->value.data();
    const float* pg = n.grad.data();
    const bool need_x = n.needs(0);
    const Simd level = kernels::simd_level();
    // Pass 1 per (n, c): the parameter sums and the gradients reaching sqrt(ivar + eps) and
    // sqrt(var + eps) (the latter summed over n below, when it came from the batch).
    std::vector<double> gw(N * C), gb(N * C), gv(N * C), gsd(N * C), gleft(N * C);
#pragma omp parallel for schedule(static) if (N * C * S > kParallelMin)
    for (int64_t nc = 0; nc < N * C; ++nc) {
      const int64_t c = nc % C;
      double sums[5];
      b0_grad_sums(level, px + nc * S, pg + nc * S, S, float((*chan)[2 * c + 1]), float((*inst)[2 * nc + 1]), pv[c],
                   pw[c], sums);
      gw[nc] = sums[0], gb[nc] = sums[1], gv[nc] = sums[2], gsd[nc] = sums[3], gleft[nc] = sums[4];
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
        // d sqrt(var + eps) / dx = (x - mean) / (count sqrt(var + eps)), for the instance and batch.
        const double ki = gsd[nc] / (double(S) * (*inst)[2 * nc + 1]), mi = (*inst)[2 * nc];
        const double kb = use_batch_stats ? gl[c] / (double(N * S) * (*chan)[2 * c + 1]) : 0.0, mb = (*chan)[2 * c];
        b0_dx(level, px + nc * S, pg + nc * S, pdx + nc * S, S, float((*chan)[2 * c + 1]), float((*inst)[2 * nc + 1]),
              pv[c], pw[c], ki, mi, kb, mb);
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
