// Softmax and log-softmax along an axis, and cross-entropy fused with its log-softmax, each with
// its backward beside its forward.
#include "layers/loss/ops.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace sb {

// Loops with less work than this (elements, each an exp and a few passes) run on one thread:
// forking costs more than it saves. (1 << 15 kept batch 2's 64 x 64 x 4 logits on one thread: 2%
// of its step, the other thread waiting.)
static constexpr int64_t kParallelMin = 1 << 13;
// When the reduced axis is strided (axis 1 of (N, K, H, W)), this many neighbouring positions
// are handled together: the (K, kBlock) tile stays in L1 across the max, exp-sum and output
// sweeps, and every inner loop runs over contiguous positions, so it vectorizes.
static constexpr int64_t kBlock = 64;

namespace {

// A tensor seen as (outer, D, inner) around the reduced axis.
struct AxisView {
  int64_t outer = 1, D = 1, inner = 1;
};

AxisView axis_view(const Shape& s, int64_t axis, const char* op) {
  const int64_t nd = static_cast<int64_t>(s.size());
  SB_CHECK(axis >= -nd && axis < nd, op, ": axis ", axis, " out of range for input of shape ", s);
  if (axis < 0) axis += nd;
  AxisView v;
  for (int64_t d = 0; d < axis; ++d) v.outer *= s[d];
  v.D = s[axis];
  for (int64_t d = axis + 1; d < nd; ++d) v.inner *= s[d];
  return v;
}

// Runs fn(base, len) over every run of positions that share one reduction: for inner == 1 a
// contiguous row (len 1, the D values adjacent), otherwise a block of up to kBlock neighbouring
// positions whose D values sit `inner` apart. `base` is the offset of the run's first value.
template <class Fn>
void for_each_run(const AxisView& v, Fn fn) {
  const int64_t nb = (v.inner + kBlock - 1) / kBlock;
  const int64_t runs = v.outer * nb;
#pragma omp parallel for schedule(static) if (v.outer * v.D * v.inner > kParallelMin)
  for (int64_t r = 0; r < runs; ++r) {
    int64_t o = r / nb, j0 = (r % nb) * kBlock;
    fn(o * v.D * v.inner + j0, std::min(kBlock, v.inner - j0));
  }
}

// p[i] = exp(p[i]) for i < n, in place, on explicit vectors: exp dominates softmax and
// cross-entropy, std::exp is a libm call GCC vectorizes only under -ffast-math, and a scalar exp
// written out is not vectorized either (its clamps become branches GCC may not speculate under
// the default -ftrapping-math). Within 1.2 ulp of exp for x in [-87.3, 88]; 0 below (no
// subnormals), -inf gives 0, NaN stays NaN. Softmax only asks for exp(x - max) <= 1.
//   exp(x) = 2^n exp(r), n = round(x / ln 2), r = x - n ln 2 in [-ln2/2, ln2/2]
//   n ln 2 is subtracted in two parts (Cody-Waite): n * kLn2Hi is exact for |n| <= 128.
//   exp(r) by its Taylor series to r^7: the first term left out, r^8/8!, is below 6e-9.
//   2^n is built from its exponent bits.
#if defined(__AVX__)
constexpr int64_t kVec = 8;
#else
constexpr int64_t kVec = 4;  // SSE2: wider GCC vectors would be split up slowly
#endif
using f32v = float __attribute__((vector_size(kVec * sizeof(float))));
using i32v = int32_t __attribute__((vector_size(kVec * sizeof(int32_t))));

void exp_inplace(float* p, int64_t n) {
  constexpr float kLog2e = 1.44269504088896341f, kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
  constexpr float kRound = 12582912.f;  // 1.5 * 2^23: adding it rounds to an integer
  const f32v zero = {};
  for (int64_t i = 0; i < n; i += kVec) {
    const int64_t w = std::min(kVec, n - i);  // lanes past n compute exp(0) and are dropped
    f32v x = zero;
    if (w == kVec) std::memcpy(&x, p + i, sizeof x);
    else std::memcpy(&x, p + i, w * sizeof(float));
    f32v xc = x < -87.5f ? zero - 87.5f : x;  // NaN compares false and passes through
    xc = xc > 88.f ? zero + 88.f : xc;
    const f32v nf = (xc * kLog2e + kRound) - kRound;
    const f32v r = (xc - nf * kLn2Hi) - nf * kLn2Lo;
    f32v q = zero + 1.f / 5040;
    q = q * r + 1.f / 720;
    q = q * r + 1.f / 120;
    q = q * r + 1.f / 24;
    q = q * r + 1.f / 6;
    q = q * r + 0.5f;
    q = q * r + 1.f;
    q = q * r + 1.f;
    const i32v bits = (__builtin_convertvector(nf, i32v) + 127) << 23;
    f32v two_n;
    std::memcpy(&two_n, &bits, sizeof two_n);
    two_n = x < -87.33654f ? zero : two_n;  // below log(FLT_MIN) the result would be subnormal
    const f32v y = q * two_n;
    if (w == kVec) std::memcpy(p + i, &y, sizeof y);
    else std::memcpy(p + i, &y, w * sizeof(float));
  }
}

// Reductions along a contiguous row keep kLanes partial results: one float accumulator is a
// serial chain GCC may not reorder (so would not vectorize), and a fixed lane split keeps the
// result independent of the thread count.
constexpr int64_t kLanes = 16;

// sum_{d < D} x[d]
inline float row_sum(const float* x, int64_t D) {
  float lane[kLanes] = {};
  int64_t d = 0;
  for (; d + kLanes <= D; d += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) lane[l] += x[d + l];
  float s = 0.f;
  for (; d < D; ++d) s += x[d];
  for (int64_t l = 0; l < kLanes; ++l) s += lane[l];
  return s;
}

// sum_{d < D} x[d] * y[d]
inline float row_dot(const float* x, const float* y, int64_t D) {
  float lane[kLanes] = {};
  int64_t d = 0;
  for (; d + kLanes <= D; d += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) lane[l] += x[d + l] * y[d + l];
  float s = 0.f;
  for (; d < D; ++d) s += x[d] * y[d];
  for (int64_t l = 0; l < kLanes; ++l) s += lane[l];
  return s;
}

inline float row_max(const float* x, int64_t D) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  float lane[kLanes];
  for (int64_t l = 0; l < kLanes; ++l) lane[l] = kNegInf;
  int64_t d = 0;
  for (; d + kLanes <= D; d += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) lane[l] = x[d + l] > lane[l] ? x[d + l] : lane[l];
  float m = kNegInf;
  for (; d < D; ++d) m = x[d] > m ? x[d] : m;
  for (int64_t l = 0; l < kLanes; ++l) m = lane[l] > m ? lane[l] : m;
  return m;
}

// sum_d exp(x[d] - m) over a contiguous row, through an L1 buffer of kBlock values.
inline float row_sum_exp(const float* x, int64_t D, float m) {
  float buf[kBlock];
  float s = 0.f;
  for (int64_t d0 = 0; d0 < D; d0 += kBlock) {
    const int64_t len = std::min(kBlock, D - d0);
    for (int64_t j = 0; j < len; ++j) buf[j] = x[d0 + j] - m;
    exp_inplace(buf, len);
    s += row_sum(buf, len);
  }
  return s;
}

// m[j] = max_d x[d * stride + j], for j < len: the strided case, vectorized across j.
inline void max_over(const float* x, int64_t D, int64_t stride, int64_t len, float* m) {
  for (int64_t j = 0; j < len; ++j) m[j] = D > 0 ? x[j] : -std::numeric_limits<float>::infinity();
  for (int64_t d = 1; d < D; ++d) {
    const float* xr = x + d * stride;
    for (int64_t j = 0; j < len; ++j) m[j] = xr[j] > m[j] ? xr[j] : m[j];
  }
}

// The max m[j] and ls[j] = log sum_d exp(x[d * stride + j] - m[j]), for j < len (len <= kBlock).
// Keeping the two apart lets callers form (x - m) - ls without the rounding of m + ls when the
// logits are large.
inline void max_logsum(const float* x, int64_t D, int64_t stride, int64_t len, float* m, float* ls) {
  if (stride == 1 && len == 1) {  // one contiguous row
    m[0] = row_max(x, D);
    ls[0] = std::log(row_sum_exp(x, D, m[0]));
    return;
  }
  max_over(x, D, stride, len, m);
  float buf[kBlock];
  for (int64_t j = 0; j < len; ++j) ls[j] = 0.f;
  for (int64_t d = 0; d < D; ++d) {
    const float* xr = x + d * stride;
    for (int64_t j = 0; j < len; ++j) buf[j] = xr[j] - m[j];
    exp_inplace(buf, len);
    for (int64_t j = 0; j < len; ++j) ls[j] += buf[j];
  }
  for (int64_t j = 0; j < len; ++j) ls[j] = std::log(ls[j]);
}

template <bool Log>
Var softmax_impl(const Var& x, int64_t axis, const char* op) {
  const Shape xs = x.shape();
  // A 0-d tensor is a single row of length 1, as in PyTorch (dim 0 or -1).
  const AxisView v = xs.empty() ? axis_view(Shape{1}, axis, op) : axis_view(xs, axis, op);
  Tensor out = Tensor::empty(xs);
  const float* px = x.value().data();
  float* py = out.data();
  for_each_run(v, [&](int64_t base, int64_t len) {
    float m[kBlock], s[kBlock];
    const float* xb = px + base;
    float* yb = py + base;
    if constexpr (Log) {
      max_logsum(xb, v.D, v.inner, len, m, s);
      for (int64_t d = 0; d < v.D; ++d) {
        const float* xr = xb + d * v.inner;
        float* yr = yb + d * v.inner;
        for (int64_t j = 0; j < len; ++j) yr[j] = (xr[j] - m[j]) - s[j];
      }
    } else if (v.inner == 1) {
      // One exp per element: exp(x - m) goes straight into y, then y is scaled by 1 / sum.
      const float mx = row_max(xb, v.D);
      for (int64_t d = 0; d < v.D; ++d) yb[d] = xb[d] - mx;
      exp_inplace(yb, v.D);
      const float inv = 1.f / row_sum(yb, v.D);
      for (int64_t d = 0; d < v.D; ++d) yb[d] *= inv;
    } else {
      max_over(xb, v.D, v.inner, len, m);
      for (int64_t j = 0; j < len; ++j) s[j] = 0.f;
      for (int64_t d = 0; d < v.D; ++d) {
        const float* xr = xb + d * v.inner;
        float* yr = yb + d * v.inner;
        for (int64_t j = 0; j < len; ++j) yr[j] = xr[j] - m[j];
        exp_inplace(yr, len);
        for (int64_t j = 0; j < len; ++j) s[j] += yr[j];
      }
      for (int64_t j = 0; j < len; ++j) s[j] = 1.f / s[j];
      for (int64_t d = 0; d < v.D; ++d) {
        float* yr = yb + d * v.inner;
        for (int64_t j = 0; j < len; ++j) yr[j] *= s[j];
      }
    }
  });
  return make_result(out, op, {x}, [out, v, xs](Node& n) {
    Tensor gx = Tensor::empty(xs);
    const float* py = out.data();
    const float* pg = n.grad.data();
    float* po = gx.data();
    for_each_run(v, [&](int64_t base, int64_t len) {
      // softmax:     dx = y * (g - sum_d g y)
      // log_softmax: dx = g - exp(y) * sum_d g   (exp(y) is the softmax)
      // A contiguous row is handled as one segment of D values, a strided block as D segments
      // of len values with one accumulator per position.
      float acc[kBlock];
      const float *yb = py + base, *gb = pg + base;
      float* ob = po + base;
      const int64_t segs = v.inner == 1 ? 1 : v.D, seg_len = v.inner == 1 ? v.D : len;
      const int64_t acc_len = v.inner == 1 ? 1 : len;
      if (v.inner == 1) {
        acc[0] = Log ? row_sum(gb, v.D) : row_dot(gb, yb, v.D);
      } else {
        for (int64_t j = 0; j < len; ++j) acc[j] = 0.f;
        for (int64_t d = 0; d < v.D; ++d) {
          const float *yr = yb + d * v.inner, *gr = gb + d * v.inner;
          for (int64_t j = 0; j < len; ++j) acc[j] += Log ? gr[j] : gr[j] * yr[j];
        }
      }
      for (int64_t sg = 0; sg < segs; ++sg) {
        const float *yr = yb + sg * v.inner, *gr = gb + sg * v.inner;
        float* orow = ob + sg * v.inner;
        // In a row every position shares acc[0]; in a block position j has its own acc[j].
        auto a = [&](int64_t j) { return acc_len == 1 ? acc[0] : acc[j]; };
        if constexpr (Log) {
          for (int64_t j = 0; j < seg_len; ++j) orow[j] = yr[j];
          exp_inplace(orow, seg_len);
          for (int64_t j = 0; j < seg_len; ++j) orow[j] = gr[j] - orow[j] * a(j);
        } else {
          for (int64_t j = 0; j < seg_len; ++j) orow[j] = yr[j] * (gr[j] - a(j));
        }
      }
    });
    n.inputs[0]->accumulate(gx);
  });
}

}  // namespace

Var softmax(const Var& x, int64_t axis) { return softmax_impl<false>(x, axis, "softmax"); }
Var log_softmax(const Var& x, int64_t axis) { return softmax_impl<true>(x, axis, "log_softmax"); }

Var cross_entropy(const Var& logits, const IndexTensor& target, const CrossEntropyOptions& opt) {
  const Shape xs = logits.shape(), ts = target.shape();
  SB_CHECK(xs.size() >= 2, "cross_entropy: expected logits (N, K) or (N, K, H, W) but got ", xs,
           " (target ", ts, ")");
  // Logits (N, K, *spatial) against target (N, *spatial): the class axis removed.
  Shape want_ts{xs[0]};
  want_ts.insert(want_ts.end(), xs.begin() + 2, xs.end());
  SB_CHECK(ts == want_ts, "cross_entropy: target of shape ", ts, " does not match logits ", xs,
           " (expected target ", want_ts, ")");
  const int64_t N = xs[0], K = xs[1];
  int64_t S = 1;  // elements per image: H * W, or 1 for (N, K) logits
  for (size_t d = 2; d < xs.size(); ++d) S *= xs[d];
  const bool weighted = opt.weight.defined();
  if (weighted)
    SB_CHECK(opt.weight.shape() == Shape{K}, "cross_entropy: expected class weights of shape ",
             Shape{K}, " but got ", opt.weight.shape(), " (logits ", xs, ", target ", ts, ")");
  const int64_t ignore = opt.ignore_index;

  // Per element of the target: the max logit and the log of sum exp(x - max), which backward
  // turns into the softmax without storing (N, K, H, W) probabilities.
  Tensor stats = Tensor::empty({2, N * S});  // (2, N*S): max, log-sum
  float* pm = stats.data();
  float* pls = pm + N * S;
  const float* px = logits.value().data();
  const int64_t* pt = target.data();
  const float* pw = weighted ? opt.weight.data() : nullptr;

  // Runs of up to kBlock target elements; with S == 1 a run is kBlock rows of (K,) logits, else
  // kBlock neighbouring pixels of one image. Partial sums are kept per run and added in run
  // order, so the loss does not depend on the thread count.
  const int64_t runs_per_n = S == 1 ? 0 : (S + kBlock - 1) / kBlock;
  const int64_t runs = S == 1 ? (N + kBlock - 1) / kBlock : N * runs_per_n;
  std::vector<double> run_loss(runs), run_weight(runs);
  std::vector<int64_t> run_bad(runs, -1);  // first out-of-range target element of the run
#pragma omp parallel for schedule(static) if (N * K * S > kParallelMin)
  for (int64_t r = 0; r < runs; ++r) {
    int64_t e0, len;  // first target element (flat index into (N, S)) and count
    if (S == 1) {
      e0 = r * kBlock, len = std::min(kBlock, N - e0);
      for (int64_t i = 0; i < len; ++i)
        max_logsum(px + (e0 + i) * K, K, 1, 1, pm + e0 + i, pls + e0 + i);
    } else {
      int64_t n = r / runs_per_n, j0 = (r % runs_per_n) * kBlock;
      e0 = n * S + j0, len = std::min(kBlock, S - j0);
      max_logsum(px + n * K * S + j0, K, S, len, pm + e0, pls + e0);
    }
    double loss = 0, wsum = 0;
    for (int64_t i = 0; i < len; ++i) {
      const int64_t e = e0 + i, t = pt[e];
      if (t == ignore) continue;
      if (t < 0 || t >= K) {
        if (run_bad[r] < 0) run_bad[r] = e;
        continue;
      }
      const int64_t n = e / S, j = e % S;
      // -log softmax(x)[t] = log-sum + max - x[t]
      const float nll = pls[e] + (pm[e] - px[(n * K + t) * S + j]);
      const double w = weighted ? pw[t] : 1.0;
      loss += w * nll;
      wsum += w;
    }
    run_loss[r] = loss, run_weight[r] = wsum;
  }
  for (int64_t r = 0; r < runs; ++r) {
    if (run_bad[r] < 0) continue;
    const int64_t e = run_bad[r];
    Shape pos;  // e unravelled over the target's shape
    for (int64_t d = static_cast<int64_t>(ts.size()) - 1, rem = e; d >= 0; --d) {
      pos.insert(pos.begin(), rem % ts[d]);
      rem /= ts[d];
    }
    fail("cross_entropy: target value ", pt[e], " at position ", pos, " is not a class in [0, ",
         K, ") nor ignore_index ", ignore, " (logits ", xs, ", target ", ts, ")");
  }
  double loss_sum = 0, weight_sum = 0;
  for (int64_t r = 0; r < runs; ++r) loss_sum += run_loss[r], weight_sum += run_weight[r];
  // reduction='mean': with every element ignored this is 0/0 = NaN, as in PyTorch.
  Tensor out = Tensor::scalar(static_cast<float>(loss_sum / weight_sum));

  // Backward reads the target and weights later; copies keep it right if the caller reuses
  // those buffers (a data loader refilling its label tensor) before backward runs.
  const bool will_backward = grad_enabled() && logits.requires_grad();
  IndexTensor target_saved = will_backward ? target.clone() : IndexTensor();
  Tensor weight = will_backward && weighted ? opt.weight.clone() : Tensor();

  return make_result(out, "cross_entropy", {logits},
                     [stats, target_saved, weight, weight_sum, ignore, xs, N, K, S](Node& n) {
    // d loss / d x[k] = w[t] / sum(w) * (softmax(x)[k] - [k == t]) for non-ignored elements.
    Tensor gx = Tensor::empty(xs);
    const float coef = n.grad.item() / static_cast<float>(weight_sum);
    const float* px = n.inputs[0]->value.data();
    const float* pm = stats.data();
    const float* pls = pm + N * S;
    const int64_t* pt = target_saved.data();
    const float* pw = weight.defined() ? weight.data() : nullptr;
    float* po = gx.data();
    auto scale_of = [&](int64_t e) {
      const int64_t t = pt[e];
      return t == ignore ? 0.f : (pw ? pw[t] * coef : coef);
    };
    if (S == 1) {
#pragma omp parallel for schedule(static) if (N * K > kParallelMin)
      for (int64_t i = 0; i < N; ++i) {
        const float* xr = px + i * K;
        float* orow = po + i * K;
        const float sc = scale_of(i), m = pm[i], ls = pls[i];
        const int64_t t = pt[i];
        for (int64_t k = 0; k < K; ++k) orow[k] = (xr[k] - m) - ls;
        exp_inplace(orow, K);
        for (int64_t k = 0; k < K; ++k) orow[k] = sc * orow[k];
        if (t >= 0 && t < K) orow[t] -= sc;  // the one-hot; an ignored row has sc == 0 anyway
      }
    } else {
      const int64_t runs_per_n = (S + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (N * K * S > kParallelMin)
      for (int64_t r = 0; r < N * runs_per_n; ++r) {
        const int64_t nn = r / runs_per_n, j0 = (r % runs_per_n) * kBlock;
        const int64_t e0 = nn * S + j0, len = std::min(kBlock, S - j0);
        float sc[kBlock];
        int32_t t[kBlock];  // int32: SSE2 has no 64-bit compare, and the one-hot loop should vectorize
        for (int64_t j = 0; j < len; ++j) {
          sc[j] = scale_of(e0 + j);
          t[j] = sc[j] == 0.f ? -1 : static_cast<int32_t>(pt[e0 + j]);  // ignored: no one-hot
        }
        const float* m = pm + e0;
        const float* ls = pls + e0;
        for (int64_t k = 0; k < K; ++k) {
          const float* xr = px + (nn * K + k) * S + j0;
          float* orow = po + (nn * K + k) * S + j0;
          for (int64_t j = 0; j < len; ++j) orow[j] = (xr[j] - m[j]) - ls[j];
          exp_inplace(orow, len);
          // sc * (p - onehot) as sc * p - (hit ? sc : 0): a select between two loaded values
          // vectorizes, while GCC turns p - (hit ? 1 : 0) into a conditional subtraction it won't.
          const int32_t k32 = static_cast<int32_t>(k);  // an int64 k would widen the compare again
          for (int64_t j = 0; j < len; ++j) {
            const float hot = t[j] == k32 ? sc[j] : 0.f;
            orow[j] = sc[j] * orow[j] - hot;
          }
        }
      }
    }
    n.inputs[0]->accumulate(gx);
  });
}

}  // namespace sb
