// GroupNorm and BatchNorm, fused (optionally with the activation after them): two-pass statistics in
// float blocks added in double (double throughout for small sets), the forward saves only mean
// and rstd (in double), and the backward is the closed form over each set, on OpenMP.
#include "layers/norm/ops.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/kernels/simd.h"
#include "core/kernels/stream.h"

namespace sb {

// Problems smaller than this run on one thread: forking costs more than it saves.
static constexpr int64_t kParallelMin = 1 << 15;

// ---- row kernels: one contiguous run of a normalized set ---------------------------------
// A normalized set (a GroupNorm group, a BatchNorm channel) is a few contiguous rows of the
// input; these loops are the whole of the arithmetic, shared by both ops.
//
// Two versions. Sets of at least kFloatMin values take the float kernels: each sums blocks of
// kBlock values in float, in 32 interleaved partial sums, and adds the block sums in double, so
// a sum of a million values carries the error of 32-value float sums, not of a million-value
// one. (Each float kernel is an always-inline body that SB_SIMD_VARIANTS compiles for AVX-512,
// AVX2 and the baseline; the ops read kernels::simd_level() once and pass it down.) The mean
// is taken of x minus a pilot value (the set's first element) and the variance of x minus the
// mean, both in float and both exact-ish for inputs like 100 + 0.01 * randn. Smaller sets keep
// the double kernels: with 2 values per set dx is a tiny difference of large terms (see row_dx)
// and needs the statistics and the arithmetic in double.
static constexpr int64_t kFloatMin = 64;
static constexpr int64_t kBlock = 1024;
#define SB_INLINE __attribute__((always_inline)) inline
using kernels::Simd;

// 16 floats as one value (GCC's vector extension): one AVX-512 register in that variant, two AVX2
// or four SSE ones in the others. The reductions keep their partial sums in two of these by
// hand: under `omp simd reduction` GCC 12 kept them on the stack, a store-to-load dependency
// per vector that made the sums 2 to 3 times slower than the loads feeding them. The helpers
// take them by reference: passed or returned by value, a 64-byte vector has a different ABI with
// and without AVX-512, which clang refuses in the baseline variant (and GCC warns about).
typedef float Vec16 __attribute__((vector_size(64)));
static constexpr int64_t kLanes = 32;  // two Vec16 accumulators

// v = the 16 floats at p, whatever its alignment.
SB_INLINE void load16(Vec16& v, const float* p) { __builtin_memcpy(&v, p, sizeof v); }

// The 32 partial sums in a and b added up, in a fixed order.
SB_INLINE float lane_sum(const Vec16& a, const Vec16& b) {
  float s = 0.f;
  for (int i = 0; i < 16; ++i) s += a[i] + b[i];
  return s;
}

// sum (x - shift) over len values, float blocks added in double.
SB_INLINE double row_sum_shifted_body(const float* x, int64_t len, float shift) {
  double total = 0;
  for (int64_t b = 0; b < len; b += kBlock) {
    const int64_t e = std::min(len, b + kBlock);
    Vec16 s0 = {}, s1 = {};
    int64_t i = b;
    for (; i + kLanes <= e; i += kLanes) {
      Vec16 v0, v1;
      load16(v0, x + i);
      load16(v1, x + i + 16);
      s0 += v0 - shift;
      s1 += v1 - shift;
    }
    float s = lane_sum(s0, s1);
    for (; i < e; ++i) s += x[i] - shift;
    total += s;
  }
  return total;
}
SB_SIMD_VARIANTS(, double, row_sum_shifted, (x, len, shift), const float* x, int64_t len, float shift)

// sum ((x - mu_hi) - mu_lo)^2: the squared deviations from the double mean mu_hi + mu_lo.
SB_INLINE double row_sq_dev_f_body(const float* x, int64_t len, float mu_hi, float mu_lo) {
  double total = 0;
  for (int64_t b = 0; b < len; b += kBlock) {
    const int64_t e = std::min(len, b + kBlock);
    Vec16 s0 = {}, s1 = {};
    int64_t i = b;
    for (; i + kLanes <= e; i += kLanes) {
      Vec16 d0, d1;
      load16(d0, x + i);
      load16(d1, x + i + 16);
      d0 = (d0 - mu_hi) - mu_lo;
      d1 = (d1 - mu_hi) - mu_lo;
      s0 += d0 * d0;
      s1 += d1 * d1;
    }
    float s = lane_sum(s0, s1);
    for (; i < e; ++i) {
      const float d = (x[i] - mu_hi) - mu_lo;
      s += d * d;
    }
    total += s;
  }
  return total;
}
SB_SIMD_VARIANTS(, double, row_sq_dev_f, (x, len, mu_hi, mu_lo), const float* x, int64_t len, float mu_hi,
                 float mu_lo)

// One block of row_grad_sums_f, with or without the ReLU mask.
template <bool kMasked>
SB_INLINE void grad_sums_block(const float* x, const float* dy, const float* y, int64_t b, int64_t e,
                               float mu_hi, float mu_lo, float& sa, float& sd) {
  const Vec16 zero = {};
  Vec16 a0 = {}, a1 = {}, d0 = {}, d1 = {};
  int64_t i = b;
  for (; i + kLanes <= e; i += kLanes) {
    Vec16 g0, g1, x0, x1;
    load16(g0, dy + i);
    load16(g1, dy + i + 16);
    if (kMasked) {
      Vec16 y0, y1;
      load16(y0, y + i);
      load16(y1, y + i + 16);
      g0 = y0 <= 0.f ? zero : g0;
      g1 = y1 <= 0.f ? zero : g1;
    }
    load16(x0, x + i);
    load16(x1, x + i + 16);
    a0 += g0;
    a1 += g1;
    d0 += g0 * ((x0 - mu_hi) - mu_lo);
    d1 += g1 * ((x1 - mu_hi) - mu_lo);
  }
  sa = lane_sum(a0, a1);
  sd = lane_sum(d0, d1);
  for (; i < e; ++i) {
    const float g = kMasked && y[i] <= 0.f ? 0.f : dy[i];
    sa += g;
    sd += g * ((x[i] - mu_hi) - mu_lo);
  }
}

// The backward's reduction over one row in float blocks: a += sum g, b += sum g * (x - mean),
// where g = dy, or with a fused ReLU (y given: the op's output) g = y <= 0 ? 0 : dy, as relu()'s backward.
SB_INLINE void row_grad_sums_f_body(const float* x, const float* dy, const float* y, int64_t len, float mu_hi,
                                    float mu_lo, double& a, double& b) {
  double ta = 0, tb = 0;
  for (int64_t blk = 0; blk < len; blk += kBlock) {
    const int64_t e = std::min(len, blk + kBlock);
    float sa, sd;
    if (y) grad_sums_block<true>(x, dy, y, blk, e, mu_hi, mu_lo, sa, sd);
    else grad_sums_block<false>(x, dy, y, blk, e, mu_hi, mu_lo, sa, sd);
    ta += sa;
    tb += sd;
  }
  a += ta;
  b += tb;
}
SB_SIMD_VARIANTS(, void, row_grad_sums_f, (x, dy, y, len, mu_hi, mu_lo, a, b), const float* x, const float* dy,
                 const float* y, int64_t len, float mu_hi, float mu_lo, double& a, double& b)

// dx = k_dy * g - k_const - (x - mean) * k_xhat in float (see row_dx), g as in row_grad_sums_f.
// Inlined into row_dx_f's variants, which run it on the whole row or block by block into a staging
// buffer for streaming stores: the same loop in the same variant, so both give the same bits.
SB_INLINE void dx_run_f(const float* x, const float* dy, const float* y, float* dx,
                        int64_t len, float mu_hi, float mu_lo, float k_dy,
                        float k_const, float k_xhat) {
  if (y) {
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) {
      const float g = y[i] <= 0.f ? 0.f : dy[i];
      dx[i] = k_dy * g - k_const - ((x[i] - mu_hi) - mu_lo) * k_xhat;
    }
  } else {
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) dx[i] = k_dy * dy[i] - k_const - ((x[i] - mu_hi) - mu_lo) * k_xhat;
  }
}

// dx_run_f over one row; stream: write dx with streaming stores (see core/kernels/stream.h).
SB_INLINE void row_dx_f_body(const float* x, const float* dy, const float* y, float* dx, int64_t len,
                             float mu_hi, float mu_lo, float k_dy, float k_const, float k_xhat, bool stream) {
  if (!stream) return dx_run_f(x, dy, y, dx, len, mu_hi, mu_lo, k_dy, k_const, k_xhat);
  alignas(64) float stage[kBlock];
  for (int64_t b = 0; b < len; b += kBlock) {
    const int64_t n = std::min(kBlock, len - b);
    dx_run_f(x + b, dy + b, y ? y + b : nullptr, stage, n, mu_hi, mu_lo, k_dy, k_const, k_xhat);
    kernels::stream_store(dx + b, stage, n);
  }
  kernels::stream_fence();
}
SB_SIMD_VARIANTS(, void, row_dx_f, (x, dy, y, dx, len, mu_hi, mu_lo, k_dy, k_const, k_xhat, stream),
                 const float* x, const float* dy, const float* y, float* dx, int64_t len, float mu_hi, float mu_lo,
                 float k_dy, float k_const, float k_xhat, bool stream)

// y = (x - mean) * scale + shift, with the double mean split as mu_hi + mu_lo (two floats).
// x - mu_hi is exact when x is near the mean (Sterbenz), so the float loop keeps the precision
// of the double mean; folding the mean into the shift (x * scale + shift') would not.
// With relu, y = max(0, that), written exactly as relu() writes it, so the fused op's output is
// bitwise relu(norm(x)). Inlined into row_normalize's variants, as dx_run_f.
SB_INLINE void normalize_run(const float* x, float* y, int64_t len, float mu_hi,
                             float mu_lo, float scale, float shift, bool relu) {
  if (relu) {
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) {
      const float v = ((x[i] - mu_hi) - mu_lo) * scale + shift;
      y[i] = v < 0.f ? 0.f : v;
    }
  } else {
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) y[i] = ((x[i] - mu_hi) - mu_lo) * scale + shift;
  }
}

// normalize_run over one row; stream as in row_dx_f. (The staging loop is written out in both
// rather than shared through a helper taking a lambda: the lambda would be a function of its own,
// compiled for the baseline rather than for the variant, and the two paths could differ in bits.)
SB_INLINE void row_normalize_body(const float* x, float* y, int64_t len, float mu_hi, float mu_lo, float scale,
                                  float shift, bool relu, bool stream) {
  if (!stream) return normalize_run(x, y, len, mu_hi, mu_lo, scale, shift, relu);
  alignas(64) float stage[kBlock];
  for (int64_t b = 0; b < len; b += kBlock) {
    const int64_t n = std::min(kBlock, len - b);
    normalize_run(x + b, stage, n, mu_hi, mu_lo, scale, shift, relu);
    kernels::stream_store(y + b, stage, n);
  }
  kernels::stream_fence();
}
SB_SIMD_VARIANTS(, void, row_normalize, (x, y, len, mu_hi, mu_lo, scale, shift, relu, stream), const float* x,
                 float* y, int64_t len, float mu_hi, float mu_lo, float scale, float shift, bool relu, bool stream)

// g = y <= 0 ? 0 : dy into out: the ReLU's backward, for the double kernels of small sets.
static void row_relu_mask(const float* dy, const float* y, float* out, int64_t len) {
  for (int64_t i = 0; i < len; ++i) out[i] = y[i] <= 0.f ? 0.f : dy[i];
}

// The double kernels, for sets of fewer than kFloatMin values.
static double row_sum(const float* x, int64_t len) {
  double s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < len; ++i) s += x[i];
  return s;
}

// Sum of squared deviations from `mu`: the second of the two passes. Computing the variance as
// E[x^2] - E[x]^2 instead would cancel catastrophically for inputs like 100 + 0.01 * randn.
static double row_sq_dev(const float* x, int64_t len, double mu) {
  double s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < len; ++i) {
    double d = x[i] - mu;
    s += d * d;
  }
  return s;
}

// The backward's reduction pass over one row, in double: a += sum dy, b += sum dy * (x - mu).
static void row_grad_sums(const float* x, const float* dy, int64_t len, double mu, double& a, double& b) {
  double sa = 0, sd = 0;
#pragma omp simd reduction(+ : sa, sd)
  for (int64_t i = 0; i < len; ++i) {
    sa += dy[i];
    sd += dy[i] * (static_cast<double>(x[i]) - mu);
  }
  a += sa;
  b += sd;
}

// dx = k_dy * dy - k_const - (x - mean) * k_xhat, the closed form below with its per-set
// constants folded in. In double: the three terms can cancel to a tiny fraction of their size
// (with 2 values per set dx is ~eps-small while each term is ~rstd * dy), and float32 would
// keep only rounding noise of the difference.
static void row_dx(const float* x, const float* dy, float* dx, int64_t len, double mu, double k_dy,
                   double k_const, double k_xhat) {
#pragma omp simd
  for (int64_t i = 0; i < len; ++i)
    dx[i] = static_cast<float>(k_dy * dy[i] - k_const - (static_cast<double>(x[i]) - mu) * k_xhat);
}

// The backward of y = xhat * w + b over one normalized set of M values, with
// xhat_i = (x_i - mean) * rstd, rstd = (var + eps)^(-1/2), var = mean_j (x_j - mean)^2:
//   g_i = dL/dxhat_i = dy_i * w_c(i)
//   dxhat_i/dx_j = rstd * (delta_ij - 1/M)                             (through x_i and mean)
//                + (x_i - mean) * d rstd/dx_j                          (through var)
//   d var/dx_j   = 2 (x_j - mean) / M     (the mean's own term is 2 mean_k(x_k - mean) = 0)
//   d rstd/dx_j  = -1/2 rstd^3 * d var/dx_j = -rstd^3 (x_j - mean) / M
//   so dxhat_i/dx_j = rstd * (delta_ij - 1/M - xhat_i xhat_j / M), and
//   dx_j = sum_i g_i dxhat_i/dx_j = rstd * (g_j - mean(g) - xhat_j * mean(g * xhat)).
// With S1 = sum g and S2 = sum g * xhat over the set:
//   dx_j = (rstd * w) * dy_j - rstd * S1 / M - (x_j - mean) * rstd^2 * S2 / M,
// which is row_dx with k_dy = rstd * w, k_const = rstd * S1 / M, k_xhat = rstd^2 * S2 / M.
// The affine parameters: dweight_c = sum dy * xhat and dbias_c = sum dy over channel c.

static void check_affine(const char* op, const char* name, const Var& p, int64_t C,
                         const Shape& xs) {
  if (!p.defined()) return;
  SB_CHECK(p.dim() == 1 && p.size(0) == C, op, ": ", name, " of shape ", p.shape(),
           " does not match the ", C, " channels of input of shape ", xs, "; expected (", C, ",)");
}

// Product of the dimensions after (N, C): 1 for a 2-d input.
static int64_t spatial_size(const Shape& xs) {
  int64_t s = 1;
  for (size_t d = 2; d < xs.size(); ++d) s *= xs[d];
  return s;
}

// Whether an op that reads and writes `tensors` tensors of `numel` floats writes its output with
// streaming stores: when those bytes reach kernels::streaming_min_bytes().
static bool streams_output(int64_t tensors, int64_t numel) {
  return tensors * numel * static_cast<int64_t>(sizeof(float)) >= kernels::streaming_min_bytes();
}

// ---- GroupNorm --------------------------------------------------------------------------

// With act = ReLU, max(0, .) is applied to the output, and the incoming gradient is masked where
// the output is <= 0 inside the backward's own loops.
Var group_norm(const Var& x, int64_t num_groups, const Var& weight, const Var& bias, float eps, Activation act) {
  const bool relu = act == Activation::ReLU;
  const char* op = relu ? "group_norm_relu" : "group_norm";
  const Shape& xs = x.shape();
  SB_CHECK(x.dim() >= 2, op, ": expected an input of shape (N, C) or (N, C, *) but got ", xs);
  const int64_t N = xs[0], C = xs[1], G = num_groups;
  SB_CHECK(G > 0, op, ": num_groups must be positive but got ", G, " (input of shape ", xs, ")");
  SB_CHECK(C % G == 0, op, ": ", C, " channels are not divisible by ", G, " groups (input of shape ", xs, ")");
  check_affine(op, "weight", weight, C, xs);
  check_affine(op, "bias", bias, C, xs);
  const int64_t S = spatial_size(xs), Cg = C / G, M = Cg * S;  // M: values per group
  SB_CHECK(M != 1, op, ": each of the ", G, " groups of input of shape ", xs, " holds a single value (",
           Cg, " channel x ", S, " spatial position), so its output would be all zeros; use fewer groups or a "
           "larger input");
  const bool fast = M >= kFloatMin;  // float kernels (see the row kernels above)
  const Simd level = kernels::simd_level();  // here, not in the loop: a bad SMALLBATCH_SIMD throws

  Tensor y = Tensor::empty(xs);  // (N, C, *)
  // Saved in double: rounding rstd to float would cost the backward its precision when dx is a
  // small difference of large terms (a group of two values gives dx ~ eps / var of its terms).
  std::vector<double> mean(N * G), rstd(N * G);  // (N, G)
  const float* px = x.value().data();
  const float* pw = weight.defined() ? weight.value().data() : nullptr;
  const float* pb = bias.defined() ? bias.value().data() : nullptr;
  float* py = y.data();
  const bool stream = streams_output(2, x.numel());  // reads x, writes y

  // A group of sample n is the contiguous block of Cg channels x S positions at (n * G + g) * M.
#pragma omp parallel for schedule(static) if (x.numel() > kParallelMin)
  for (int64_t ng = 0; ng < N * G; ++ng) {
    const int64_t g = ng % G;
    const float* xg = px + ng * M;  // (Cg, S)
    float* yg = py + ng * M;        // (Cg, S)
    double mu, var;
    if (fast) {
      mu = xg[0] + row_sum_shifted(level, xg, M, xg[0]) / static_cast<double>(M);
      const float hi = static_cast<float>(mu);
      var = row_sq_dev_f(level, xg, M, hi, static_cast<float>(mu - hi)) / static_cast<double>(M);  // biased
    } else {
      mu = row_sum(xg, M) / static_cast<double>(M);
      var = row_sq_dev(xg, M, mu) / static_cast<double>(M);  // biased
    }
    const double rs = 1.0 / std::sqrt(var + static_cast<double>(eps));
    const float mu_hi = static_cast<float>(mu), mu_lo = static_cast<float>(mu - mu_hi);
    mean[ng] = mu;
    rstd[ng] = rs;
    for (int64_t k = 0; k < Cg; ++k) {
      const int64_t c = g * Cg + k;
      const float scale = static_cast<float>(rs * (pw ? pw[c] : 1.f));
      row_normalize(level, xg + k * S, yg + k * S, S, mu_hi, mu_lo, scale, pb ? pb[c] : 0.f, relu, stream);
    }
  }

  // With relu the backward reads the output (a handle on y, not a copy) for the mask.
  Tensor saved_y = relu ? y : Tensor();
  return make_result(y, op, {x, weight, bias},
                     [mean = std::move(mean), rstd = std::move(rstd), saved_y, N, C, G, S, fast](Node& n) {
    const int64_t Cg = C / G, M = Cg * S;
    const Simd level = kernels::simd_level();
    const bool need_x = n.needs(0), need_w = n.needs(1), need_b = n.needs(2);
    const Tensor& xv = n.inputs[0]->value;  // (N, C, *)
    const float* px = xv.data();
    const float* pdy = n.grad.data();                                   // (N, C, *)
    const float* pys = saved_y.defined() ? saved_y.data() : nullptr;    // (N, C, *) or none
    const float* pw = n.inputs[1] ? n.inputs[1]->value.data() : nullptr;  // (C,) or none
    Tensor dx = need_x ? Tensor::empty(xv.shape()) : Tensor();
    float* pdx = need_x ? dx.data() : nullptr;
    // The double kernels take the ReLU-masked gradient as a tensor of its own.
    Tensor masked;
    if (pys && !fast) {
      masked = Tensor::empty(xv.shape());
      row_relu_mask(pdy, pys, masked.data(), xv.numel());
      pdy = masked.data();
      pys = nullptr;
    }
    // Per-(n, c) partial sums for dbias (sum dy) and dweight (sum dy * xhat); summed over n
    // serially below, so the parameter gradients don't depend on the thread count.
    std::vector<double> sum_dy(N * C), sum_dy_xhat(N * C);  // (N, C)
    const bool stream = streams_output(pys ? 4 : 3, xv.numel());  // reads x, dy (and y), writes dx

#pragma omp parallel for schedule(static) if (xv.numel() > kParallelMin)
    for (int64_t ng = 0; ng < N * G; ++ng) {
      const int64_t g = ng % G, nc0 = ng * Cg;  // (n, g * Cg) as a flat (N, C) index
      const float* xg = px + ng * M;    // (Cg, S)
      const float* dyg = pdy + ng * M;  // (Cg, S)
      const float* yg = pys ? pys + ng * M : nullptr;
      const double mu = mean[ng], rs = rstd[ng];
      const float mu_hi = static_cast<float>(mu), mu_lo = static_cast<float>(mu - mu_hi);
      double s1 = 0, s2 = 0;  // S1 = sum dy * w, S2 = sum dy * w * xhat over the group
      for (int64_t k = 0; k < Cg; ++k) {
        double a = 0, b = 0;
        if (fast) row_grad_sums_f(level, xg + k * S, dyg + k * S, yg ? yg + k * S : nullptr, S, mu_hi, mu_lo, a, b);
        else row_grad_sums(xg + k * S, dyg + k * S, S, mu, a, b);
        const double w = pw ? pw[g * Cg + k] : 1.0;
        sum_dy[nc0 + k] = a;
        sum_dy_xhat[nc0 + k] = b * rs;
        s1 += w * a;
        s2 += w * b * rs;
      }
      if (!need_x) continue;
      const double k_const = rs * s1 / static_cast<double>(M);
      const double k_xhat = rs * rs * s2 / static_cast<double>(M);
      for (int64_t k = 0; k < Cg; ++k) {
        const double k_dy = rs * (pw ? pw[g * Cg + k] : 1.0);
        const int64_t off = ng * M + k * S;
        if (fast)
          row_dx_f(level, px + off, pdy + off, yg ? yg + k * S : nullptr, pdx + off, S, mu_hi, mu_lo,
                   static_cast<float>(k_dy), static_cast<float>(k_const), static_cast<float>(k_xhat), stream);
        else
          row_dx(px + off, pdy + off, pdx + off, S, mu, k_dy, k_const, k_xhat);
      }
    }

    if (need_x) n.inputs[0]->accumulate(dx);
    if (need_w || need_b) {
      Tensor dw = Tensor::empty({C}), db = Tensor::empty({C});  // (C,)
      for (int64_t c = 0; c < C; ++c) {
        double sw = 0, sbias = 0;
        for (int64_t i = 0; i < N; ++i) {
          sw += sum_dy_xhat[i * C + c];
          sbias += sum_dy[i * C + c];
        }
        dw[c] = static_cast<float>(sw);
        db[c] = static_cast<float>(sbias);
      }
      if (need_w) n.inputs[1]->accumulate(dw);
      if (need_b) n.inputs[2]->accumulate(db);
    }
  });
}

// ---- BatchNorm --------------------------------------------------------------------------

// Channel c's sum of (x - mean) ^ 2 and mean, as batch_norm's training forward takes them.
// Channel c is N rows of S values, at (i * C + c) * S for sample i.
static void channel_stats(Simd level, const float* px, int64_t N, int64_t C, int64_t S, int64_t c, double& mu,
                          double& q) {
  const int64_t count = N * S;
  double s = 0;
  q = 0;
  if (count >= kFloatMin) {
    const float pilot = px[c * S];  // sample 0's first value
    for (int64_t i = 0; i < N; ++i) s += row_sum_shifted(level, px + (i * C + c) * S, S, pilot);
    mu = pilot + s / static_cast<double>(count);
    const float hi = static_cast<float>(mu), lo = static_cast<float>(mu - hi);
    for (int64_t i = 0; i < N; ++i) q += row_sq_dev_f(level, px + (i * C + c) * S, S, hi, lo);
  } else {
    for (int64_t i = 0; i < N; ++i) s += row_sum(px + (i * C + c) * S, S);
    mu = s / static_cast<double>(count);
    for (int64_t i = 0; i < N; ++i) q += row_sq_dev(px + (i * C + c) * S, S, mu);
  }
}

ChannelMoments channel_moments(const Tensor& x) {
  const Shape& xs = x.shape();
  SB_CHECK(x.dim() >= 2, "channel_moments: expected an input of shape (N, C) or (N, C, *) but got ", xs);
  const int64_t N = xs[0], C = xs[1], S = spatial_size(xs);
  SB_CHECK(N * S > 0, "channel_moments: input of shape ", xs, " has no values per channel");
  const Simd level = kernels::simd_level();
  ChannelMoments m{std::vector<double>(C), std::vector<double>(C)};
#pragma omp parallel for schedule(static) if (x.numel() > kParallelMin)
  for (int64_t c = 0; c < C; ++c) {
    double q;
    channel_stats(level, x.data(), N, C, S, c, m.mean[c], q);
    m.var[c] = q / static_cast<double>(N * S);
  }
  return m;
}

// With act = ReLU, as in group_norm.
Var batch_norm(const Var& x, const RunningStats* running, const Var& weight, const Var& bias, bool training,
               float eps, Activation act) {
  const bool relu = act == Activation::ReLU;
  const char* op = relu ? "batch_norm_relu" : "batch_norm";
  const Shape& xs = x.shape();
  SB_CHECK(x.dim() >= 2, op, ": expected an input of shape (N, C) or (N, C, *) but got ", xs);
  const int64_t N = xs[0], C = xs[1], S = spatial_size(xs), count = N * S;  // values per channel
  check_affine(op, "weight", weight, C, xs);
  check_affine(op, "bias", bias, C, xs);
  const bool tracking = running != nullptr;
  if (tracking) {
    SB_CHECK(running->mean.defined() && running->var.defined(), op, ": running_mean and running_var must both be "
             "given or both be undefined (track_running_stats=false), but only ",
             running->mean.defined() ? "running_mean" : "running_var", " was given");
    SB_CHECK(running->mean.shape() == Shape{C} && running->var.shape() == Shape{C},
             op, ": running_mean of shape ", running->mean.shape(), " and running_var of shape ",
             running->var.shape(), " do not match the ", C, " channels of input of shape ", xs,
             "; expected (", C, ",)");
  }
  // As PyTorch: without running stats there is nothing else to normalize with, even in eval.
  const bool batch_stats = training || !tracking;
  SB_CHECK(!batch_stats || count != 1, op, ": expected more than 1 value per channel when training, "
           "got input of shape ", xs);
  // Before the counter below is touched: a bad SMALLBATCH_SIMD fails the call changing nothing.
  const Simd level = kernels::simd_level();
  const bool update = training && tracking;
  double m = tracking ? running->momentum : 0.0;  // the running-average factor of this step
  if (update) {
    const bool counted = running->num_batches_tracked.defined();
    SB_CHECK(!running->cumulative || counted, op, ": cumulative averaging (PyTorch's momentum=None) "
             "needs num_batches_tracked");
    if (counted) ++*running->num_batches_tracked.data();
    if (running->cumulative) m = 1.0 / static_cast<double>(*running->num_batches_tracked.data());
  }
  const bool fast = count >= kFloatMin;  // float kernels (see the row kernels above)

  Tensor y = Tensor::empty(xs);  // (N, C, *)
  // The batch statistics, or in eval the running ones as they are now (a later training call
  // may update the buffers before this backward runs). Double, as in group_norm.
  std::vector<double> mean(C), rstd(C);  // (C,)
  const float* px = x.value().data();
  const float* pw = weight.defined() ? weight.value().data() : nullptr;
  const float* pb = bias.defined() ? bias.value().data() : nullptr;
  float* py = y.data();
  float* prm = tracking ? running->mean.data() : nullptr;
  float* prv = tracking ? running->var.data() : nullptr;
  const bool stream = streams_output(2, x.numel());  // reads x, writes y

  // Channel c is N rows of S values, at (i * C + c) * S for sample i.
#pragma omp parallel for schedule(static) if (x.numel() > kParallelMin)
  for (int64_t c = 0; c < C; ++c) {
    double mu, rs;
    if (batch_stats) {
      double q;
      channel_stats(level, px, N, C, S, c, mu, q);
      rs = 1.0 / std::sqrt(q / static_cast<double>(count) + static_cast<double>(eps));  // biased
      // An empty batch has no statistics to fold in (and PyTorch leaves the buffers alone).
      if (update && count > 0) {
        const double unbiased = q / static_cast<double>(count - 1);
        prm[c] = static_cast<float>((1.0 - m) * prm[c] + m * mu);
        prv[c] = static_cast<float>((1.0 - m) * prv[c] + m * unbiased);
      }
    } else {
      mu = prm[c];
      rs = 1.0 / std::sqrt(static_cast<double>(prv[c]) + static_cast<double>(eps));
    }
    const float mu_hi = static_cast<float>(mu), mu_lo = static_cast<float>(mu - mu_hi);
    mean[c] = mu;
    rstd[c] = rs;
    const float scale = static_cast<float>(rs * (pw ? pw[c] : 1.f));
    const float shift = pb ? pb[c] : 0.f;
    for (int64_t i = 0; i < N; ++i)
      row_normalize(level, px + (i * C + c) * S, py + (i * C + c) * S, S, mu_hi, mu_lo, scale, shift, relu, stream);
  }

  Tensor saved_y = relu ? y : Tensor();  // the ReLU mask's source, a handle on the output
  return make_result(y, op, {x, weight, bias},
                     [mean = std::move(mean), rstd = std::move(rstd), saved_y, batch_stats, N, C, S, fast](Node& n) {
    const int64_t count = N * S;
    const Simd level = kernels::simd_level();
    const bool need_x = n.needs(0), need_w = n.needs(1), need_b = n.needs(2);
    const Tensor& xv = n.inputs[0]->value;  // (N, C, *)
    const float* px = xv.data();
    const float* pdy = n.grad.data();                                   // (N, C, *)
    const float* pys = saved_y.defined() ? saved_y.data() : nullptr;    // (N, C, *) or none
    const float* pw = n.inputs[1] ? n.inputs[1]->value.data() : nullptr;  // (C,) or none
    Tensor dx = need_x ? Tensor::empty(xv.shape()) : Tensor();
    Tensor dw = Tensor::empty({C}), db = Tensor::empty({C});  // (C,)
    float *pdx = need_x ? dx.data() : nullptr, *pdw = dw.data(), *pdb = db.data();
    // The double kernels and the eval path take the ReLU-masked gradient as a tensor of its own.
    Tensor masked;
    if (pys && (!fast || !batch_stats)) {
      masked = Tensor::empty(xv.shape());
      row_relu_mask(pdy, pys, masked.data(), xv.numel());
      pdy = masked.data();
      pys = nullptr;
    }
    // Eval normalizes with constants: y = (x - running_mean) * rstd * w + b is affine in x, so
    // dx = rstd * w * dy needs no reduction; the reduction pass runs only when batch statistics
    // were used or the parameters want gradients.
    const bool reduce = batch_stats || need_w || need_b;
    const bool stream = streams_output(pys ? 4 : 3, xv.numel());  // reads x, dy (and y), writes dx

    // One channel per iteration, samples in order: deterministic for any thread count.
#pragma omp parallel for schedule(static) if (xv.numel() > kParallelMin)
    for (int64_t c = 0; c < C; ++c) {
      const double mu = mean[c], rs = rstd[c], w = pw ? pw[c] : 1.0;
      const float mu_hi = static_cast<float>(mu), mu_lo = static_cast<float>(mu - mu_hi);
      double a = 0, b = 0;  // sum dy, sum dy * (x - mean) over the channel
      if (reduce)
        for (int64_t i = 0; i < N; ++i) {
          const int64_t off = (i * C + c) * S;
          if (fast) row_grad_sums_f(level, px + off, pdy + off, pys ? pys + off : nullptr, S, mu_hi, mu_lo, a, b);
          else row_grad_sums(px + off, pdy + off, S, mu, a, b);
        }
      const double sum_dy_xhat = b * rs;
      pdw[c] = static_cast<float>(sum_dy_xhat);
      pdb[c] = static_cast<float>(a);
      if (!need_x) continue;
      if (batch_stats) {
        // The closed form with one channel per set: S1 = w * sum dy, S2 = w * sum dy * xhat.
        const double k_const = rs * w * a / static_cast<double>(count);
        const double k_xhat = rs * rs * w * sum_dy_xhat / static_cast<double>(count);
        for (int64_t i = 0; i < N; ++i) {
          const int64_t off = (i * C + c) * S;
          if (fast)
            row_dx_f(level, px + off, pdy + off, pys ? pys + off : nullptr, pdx + off, S, mu_hi, mu_lo,
                     static_cast<float>(rs * w), static_cast<float>(k_const), static_cast<float>(k_xhat), stream);
          else
            row_dx(px + off, pdy + off, pdx + off, S, mu, rs * w, k_const, k_xhat);
        }
      } else {
        const float k_dy = static_cast<float>(rs * w);
        for (int64_t i = 0; i < N; ++i) {
          const float* dy = pdy + (i * C + c) * S;
          float* d = pdx + (i * C + c) * S;
#pragma omp simd
          for (int64_t s = 0; s < S; ++s) d[s] = k_dy * dy[s];
        }
      }
    }

    if (need_x) n.inputs[0]->accumulate(dx);
    if (need_w) n.inputs[1]->accumulate(dw);
    if (need_b) n.inputs[2]->accumulate(db);
  });
}

}  // namespace sb
