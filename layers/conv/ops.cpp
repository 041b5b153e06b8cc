// conv2d and conv_transpose2d (PyTorch semantics) on im2col/col2im + sgemm, with their backward.
// Work is split into (sample, group) units, each one or two GEMMs on contiguous slices.
#include "layers/conv/ops.h"

#include <omp.h>

#include <algorithm>
#include <string>

#include "core/kernels/gemm.h"
#include "layers/conv/kernels/conv_direct.h"
#include "layers/conv/kernels/im2col.h"

namespace sb {
namespace {

using kernels::ColGeometry;
using kernels::gemm;

// Per-unit GEMMs below this many flops gain little from OpenBLAS's own threads, so the units are
// spread over threads instead (each GEMM then runs single-threaded inside the parallel region).
constexpr int64_t kSmallGemmFlops = int64_t(1) << 23;
// Spreading units needs one column buffer per thread; above this total, units run one after
// another with the whole pool inside each GEMM, and one buffer suffices.
constexpr int64_t kMaxSpreadWorkspaceBytes = int64_t(256) << 20;
// Below this much work in total, forking a team costs more than it saves.
constexpr int64_t kMinSpreadFlops = int64_t(1) << 20;
// A column-matrix tile of at most this many floats (256 KiB) stays in L2 between im2col writing it
// and the GEMM reading it; whole column matrices of the larger layers go out to memory and back.
constexpr int64_t kTileFloats = int64_t(1) << 16;
// OpenBLAS (built with SMALL_MATRIX_OPT, as Debian's is) multiplies without packing when
// M * N * K is at most about this; see tile_rows.
constexpr int64_t kSmallGemmMNK = 1000000;
// conv_rows_shifted multiplies by one tap's (C_out, C_in) matrix at a time: with fewer input
// channels than this its GEMMs are too thin (3 input channels ran 16% slower than im2col).
constexpr int64_t kShiftedMinChannels = 16;
// Elementwise loops shorter than this run on one thread.
constexpr int64_t kParallelMin = int64_t(1) << 15;

std::string pair_str(Pair p) { return str("(", p.h, ", ", p.w, ")"); }

// How to run `units` independent pieces of work.
struct Plan {
  // Units spread over threads (GEMMs single-threaded), or run in order (GEMMs on the whole pool).
  bool spread = false;
  int slots = 1;  // workspaces (and weight-gradient partials) to allocate
  // Run in order, but worth the whole pool: the shifted-GEMM paths then split each unit's output
  // rows over the threads (single-threaded GEMMs again); the others leave it to OpenBLAS.
  bool split_rows = false;
};

Plan plan_units(int64_t units, int64_t flops_per_unit, int64_t ws_floats) {
  const int threads = omp_get_max_threads();
  if (threads <= 1 || omp_in_parallel()) return {};
  if (units * flops_per_unit < kMinSpreadFlops) return {};
  Plan in_order;
  in_order.split_rows = true;
  if (units <= 1) return in_order;
  if (threads * ws_floats * int64_t(sizeof(float)) > kMaxSpreadWorkspaceBytes) return in_order;
  // Share of thread-rounds doing work: 9 units on 8 threads take two rounds, 9/16 busy.
  const int64_t rounds = (units + threads - 1) / threads;
  const double busy = double(units) / double(rounds * threads);
  if (flops_per_unit < kSmallGemmFlops || busy >= 0.75) return {true, threads};
  return in_order;
}

// Runs body(unit, workspace, slot) for every unit in [0, units). Spread: each thread takes one
// contiguous chunk of units, so which units land in which slot depends only on the thread count
// and per-slot partial sums are reproducible. Returns the number of slots used.
template <class F>
int run_units(int64_t units, const Plan& plan, float* ws, int64_t ws_floats, const F& body) {
  if (!plan.spread) {
    for (int64_t u = 0; u < units; ++u) body(u, ws, 0);
    return 1;
  }
  int used = 1;
#pragma omp parallel num_threads(plan.slots)
  {
    const int nt = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t lo = units * t / nt, hi = units * (t + 1) / nt;
    for (int64_t u = lo; u < hi; ++u) body(u, ws + t * ws_floats, t);
    if (t == 0) used = nt;
  }
  return used;
}

// Grid rows per column-matrix tile of geometry g, when tiling; all of them otherwise. `gemm_m`,
// when given, is the row count of the GEMM that multiplies the tile from the left (W (m, K) x
// col (K, cols)): the tile is then also kept to m * K * cols <= kSmallGemmMNK, so that OpenBLAS
// takes its unpacked small-matrix kernel, which on these shapes runs 20 to 40% faster than its
// packed path (measured single-threaded, Debian's OpenBLAS 0.3.21, AVX-512: 16 x 144 x 384 at
// 116 GFLOP/s vs 16 x 144 x 448 at 77; 64 x 576 x 16 at 109 vs 64 x 576 x 256 at 95).
int64_t tile_rows(const ColGeometry& g, bool tiled, int64_t gemm_m = 0) {
  if (!tiled) return g.out_h;
  int64_t cols = kTileFloats / std::max<int64_t>(1, g.rows());
  if (gemm_m > 0) cols = std::min(cols, kSmallGemmMNK / std::max<int64_t>(1, gemm_m * g.rows()));
  return std::clamp<int64_t>(cols / std::max<int64_t>(1, g.out_w), 1, g.out_h);
}

// Tiles only pay when each GEMM runs on one thread: a threaded GEMM wants the whole matrix.
bool tiles_pay(const Plan& plan) { return plan.spread || omp_get_max_threads() == 1; }

// out (C, HW) += bias (C,) down the rows.
void add_bias(float* out, const float* bias, int64_t C, int64_t HW) {
#pragma omp parallel for if (!omp_in_parallel() && C * HW > kParallelMin)
  for (int64_t c = 0; c < C; ++c) {
    float* row = out + c * HW;
    const float b = bias[c];
    for (int64_t i = 0; i < HW; ++i) row[i] += b;
  }
}

// The bias gradient: gy (N, C, H, W) summed to (C,), in double and in a fixed order per channel:
// eight running sums (element i into sum i % 8), added pairwise at the end. One running sum was a
// chain of dependent additions, 4 cycles an element (1.4% of a 1-thread unet-s step).
Tensor bias_grad(const Tensor& gy) {
  const int64_t N = gy.size(0), C = gy.size(1), HW = gy.size(2) * gy.size(3);
  Tensor gb = Tensor::empty({C});
  const float* p = gy.data();
#pragma omp parallel for if (N * C * HW > kParallelMin)
  for (int64_t c = 0; c < C; ++c) {
    double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int64_t n = 0; n < N; ++n) {
      const float* row = p + (n * C + c) * HW;
      int64_t i = 0;
      for (; i + 8 <= HW; i += 8)
        for (int k = 0; k < 8; ++k) s[k] += row[i + k];
      for (; i < HW; ++i) s[i % 8] += row[i];
    }
    gb[c] = static_cast<float>(((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7])));
  }
  return gb;
}

// dst (count,) = the sum of partials (slots, count), added in slot order.
void sum_partials(const float* partials, int slots, int64_t count, float* dst) {
#pragma omp parallel for if (count * slots > kParallelMin)
  for (int64_t i = 0; i < count; ++i) {
    float s = 0.f;
    for (int t = 0; t < slots; ++t) s += partials[t * count + i];
    dst[i] = s;
  }
}

// The checks both ops share: 4-d input and weight, non-empty image and kernel, sane options.
void check_common(const char* op, const Shape& xs, const Shape& ws, const char* weight_layout,
                  Pair stride, Pair padding, Pair dilation, int64_t groups) {
  SB_CHECK(xs.size() == 4, op, ": expected a 4-d input (N, C_in, H, W) but got input ", xs,
           " (weight ", ws, ")");
  SB_CHECK(ws.size() == 4, op, ": expected a 4-d weight ", weight_layout, " but got weight ", ws,
           " (input ", xs, ")");
  SB_CHECK(xs[2] >= 1 && xs[3] >= 1, op, ": input ", xs, " has an empty spatial size (weight ", ws,
           ")");
  SB_CHECK(ws[2] >= 1 && ws[3] >= 1, op, ": weight ", ws, " has an empty kernel (input ", xs, ")");
  SB_CHECK(stride.h >= 1 && stride.w >= 1, op, ": stride must be >= 1 but got ", pair_str(stride),
           " (input ", xs, ", weight ", ws, ")");
  SB_CHECK(padding.h >= 0 && padding.w >= 0, op, ": padding must be >= 0 but got ",
           pair_str(padding), " (input ", xs, ", weight ", ws, ")");
  SB_CHECK(dilation.h >= 1 && dilation.w >= 1, op, ": dilation must be >= 1 but got ",
           pair_str(dilation), " (input ", xs, ", weight ", ws, ")");
  SB_CHECK(groups >= 1, op, ": groups must be >= 1 but got ", groups, " (input ", xs, ", weight ",
           ws, ")");
}

// The sizes a (sample, group) unit works with, fixed by the forward and reused by the backward.
struct ConvSizes {
  int64_t N, G;                          // samples and groups: N * G units
  int64_t C_in, C_in_g, C_out, C_out_g;  // channels, and per group
  int64_t K;                             // rows of one group's column matrix
  int64_t HW, HWo;                       // input and output plane sizes
  ColGeometry geo;                       // im2col/col2im over one group of one sample
  bool pointwise;                        // 1x1, stride 1, unpadded: no im2col/col2im needed
  int64_t ws_floats;                     // one column buffer (0 when pointwise)
  // conv2d only: with stride 1, the input gradient is itself a convolution of dY with the
  // flipped, transposed kernel, so it runs as im2col(dY) + a GEMM with a long inner dimension
  // instead of a GEMM whose inner dimension is C_out_g followed by a scatter-add col2im.
  bool adjoint_conv = false;
  ColGeometry adj_geo{};     // im2col over one group of dY (C_out_g, Ho, Wo) onto the (H, W) grid
  int64_t adj_K = 0;         // rows of that column matrix: C_out_g * kH * kW
};

// Wf (G, C_in_g, C_out_g * kH * kW) from W (C_out, C_in_g, kH, kW):
// Wf[g][ci][(co * kH + i) * kW + j] = W[g * C_out_g + co][ci][kH - 1 - i][kW - 1 - j].
Tensor flip_transpose_weight(const Tensor& w, int64_t G) {
  const int64_t C_out = w.size(0), C_in_g = w.size(1), kH = w.size(2), kW = w.size(3);
  const int64_t C_out_g = C_out / G, kk = kH * kW;
  Tensor wf = Tensor::empty({G, C_in_g, C_out_g * kk});
  const float* pw = w.data();
  float* pf = wf.data();
  for (int64_t g = 0; g < G; ++g)
    for (int64_t ci = 0; ci < C_in_g; ++ci)
      for (int64_t co = 0; co < C_out_g; ++co)
        for (int64_t t = 0; t < kk; ++t)
          pf[(g * C_in_g + ci) * C_out_g * kk + co * kk + t] = pw[((g * C_out_g + co) * C_in_g + ci) * kk + (kk - 1 - t)];
  return wf;
}

// Per-tap weight matrices for conv_rows_shifted, from W (C_out, C_in_g, kH, kW):
//   forward: taps[g][t][co][ci] = W[g * C_out_g + co][ci][t]            ((G, kk, C_out_g, C_in_g))
//   adjoint: taps[g][t][ci][co] = W[g * C_out_g + co][ci][kk - 1 - t]   ((G, kk, C_in_g, C_out_g))
Tensor tap_weights(const Tensor& w, int64_t G, bool adjoint) {
  const int64_t C_out = w.size(0), C_in_g = w.size(1), kk = w.size(2) * w.size(3), C_out_g = C_out / G;
  Tensor taps = Tensor::empty({G, kk, C_out_g * C_in_g});
  const float* pw = w.data();
  float* pt = taps.data();
  for (int64_t g = 0; g < G; ++g)
    for (int64_t t = 0; t < kk; ++t)
      for (int64_t co = 0; co < C_out_g; ++co)
        for (int64_t ci = 0; ci < C_in_g; ++ci) {
          const int64_t dst = adjoint ? ci * C_out_g + co : co * C_in_g + ci;
          pt[(g * kk + t) * C_out_g * C_in_g + dst] =
              pw[((g * C_out_g + co) * C_in_g + ci) * kk + (adjoint ? kk - 1 - t : t)];
        }
  return taps;
}

// A stride-1-along-width convolution as kh * kw GEMMs per output row, with no column matrix:
// out (M, out_h, out_w) (rows ldo apart per channel) = sum over taps t = (i, j) of
// taps[t] (M, C) x the image shifted by (i, j), where the shifted image's grid row oh is a
// contiguous run of out_w values in each channel of the zero-padded image (C, Hp, Wp), so
// each product reads the padded image in place (ldb = Hp * Wp). Each GEMM is small enough
// for OpenBLAS's unpacked kernel; this replaces an im2col that cost as much as 15% of a step.
// Deterministic: the taps add in a fixed order. With split_rows the grid rows are shared out
// over the threads; each row is still computed by the same GEMMs, so the result is the same bits.
void conv_rows_shifted(const ColGeometry& g, const float* taps, int64_t M, const float* padded, float* out,
                       int64_t ldo, bool split_rows) {
  const int64_t Hp = g.padded_height(), Wp = g.padded_width(), C = g.channels, kk = g.kernel_h * g.kernel_w;
#pragma omp parallel for schedule(static) if (split_rows)
  for (int64_t oh = 0; oh < g.out_h; ++oh)
    for (int64_t t = 0; t < kk; ++t) {
      const int64_t i = t / g.kernel_w, j = t % g.kernel_w;
      const float* b = padded + (oh * g.stride_h + i * g.dil_h) * Wp + j * g.dil_w;  // (C, out_w), ldb Hp * Wp
      gemm(false, false, M, g.out_w, C, 1.f, taps + t * M * C, C, b, Hp * Wp, t == 0 ? 0.f : 1.f,
           out + oh * g.out_w, ldo);
    }
}

// The weight gradient of a stride-1 convolution as one GEMM per tap, with no column matrix:
//   dW_t^T (C, M) = sum over grid positions (oh, ow) of padded[:, oh + i dil_h, ow + j dil_w] dY[:, oh, ow]^T
// for tap t = (i, j). In the padded image's flat layout (C, Hp * Wp) position (oh, ow) of tap t is
// at (oh * Wp + ow) + (i dil_h Wp + j dil_w), so with dY laid out on the padded width, dyp_t
// (L, M), L = (Ho - 1) * Wp + Wo, row oh * Wp + ow holding dY[:, oh, ow]^T and zero rows at
// ow >= Wo, the sum is one product of the image read in place from that offset, (C, L) with ld
// Hp * Wp, by dyp_t; the zero rows cancel the positions that wrap around a row's end. Split
// along L so each GEMM stays within OpenBLAS's unpacked kernel (see tile_rows). Writes the kk
// products to out (kk, C, M). Deterministic: every sum runs in a fixed order.
//
// With split_rows (partials: (threads, kk * C * M) floats), thread r of T sums the grid rows
// [Ho r / T, Ho (r + 1) / T) into its own partial, and the partials are added in thread order:
// reproducible for a given thread count.
void conv_weight_grad_shifted(const ColGeometry& g, const float* padded, const float* dyp, int64_t M, float* out,
                              bool split_rows, float* partials) {
  const int64_t Hp = g.padded_height(), Wp = g.padded_width(), C = g.channels, kk = g.kernel_h * g.kernel_w;
  const int64_t L = (g.out_h - 1) * Wp + g.out_w, tap_size = C * M, size = kk * tap_size;
  const int64_t chunk = std::max<int64_t>(1, kSmallGemmMNK / std::max<int64_t>(1, tap_size));
  // dst = the products over dY rows [l_begin, l_end).
  auto products = [&](int64_t l_begin, int64_t l_end, float* dst) {
    if (l_begin >= l_end) return std::fill(dst, dst + size, 0.f);  // a thread with no rows
    for (int64_t t = 0; t < kk; ++t) {
      const int64_t i = t / g.kernel_w, j = t % g.kernel_w;
      const float* a = padded + i * g.dil_h * Wp + j * g.dil_w;  // (C, L), ld Hp * Wp
      for (int64_t l0 = l_begin; l0 < l_end; l0 += chunk) {
        const int64_t len = std::min(chunk, l_end - l0);
        gemm(false, false, C, M, len, 1.f, a + l0, Hp * Wp, dyp + l0 * M, M, l0 == l_begin ? 0.f : 1.f,
             dst + t * tap_size, M);
      }
    }
  };
  if (!split_rows) return products(0, L, out);
  int used = 1;
#pragma omp parallel
  {
    const int64_t T = omp_get_num_threads(), r = omp_get_thread_num();
    const int64_t oh0 = g.out_h * r / T, oh1 = g.out_h * (r + 1) / T;
    products(oh0 * Wp, std::min(L, oh1 * Wp), partials + r * size);
    if (r == 0) used = static_cast<int>(T);
  }
  sum_partials(partials, used, size, out);
}

// dyp (L, M) for conv_weight_grad_shifted from dY (M, Ho, Wo): rows oh * Wp + ow = dY[:, oh, ow],
// zero rows where ow >= Wo.
void lay_out_on_padded_width(const ColGeometry& g, const float* dy, int64_t M, float* dyp) {
  const int64_t Wp = g.padded_width(), Wo = g.out_w, HWo = g.out_h * g.out_w;
  for (int64_t oh = 0; oh < g.out_h; ++oh) {
    kernels::transpose(dy + oh * Wo, M, Wo, HWo, dyp + oh * Wp * M);
    if (oh + 1 < g.out_h) std::fill(dyp + (oh * Wp + Wo) * M, dyp + (oh + 1) * Wp * M, 0.f);
  }
}

void check_bias(const char* op, const Var& bias, int64_t C_out, const Shape& xs, const Shape& ws) {
  if (!bias.defined()) return;
  SB_CHECK(bias.shape() == Shape{C_out}, op, ": bias ", bias.shape(), " does not match weight ", ws,
           " and input ", xs, ": expected bias (", C_out, ",)");
}

// ---- the direct microkernels (kernels/conv_direct.h) for the shapes the models run most ----

using DirectFn = void (*)(const float*, const float*, const float*, float*, int64_t, int64_t, int64_t, int64_t,
                          int64_t);
using DirectBackwardFn = void (*)(const float*, const float*, const float*, float*, float*, int64_t, int64_t,
                                  int64_t, int64_t, int64_t);

// One of the direct paths: the forward, and both gradients in one call (either may be skipped),
// on float* of the sizes given; dims = (N, C_in, C_out, H, W) of the op's input x (N, C_in, H, W).
struct DirectPath {
  DirectFn forward;
  DirectBackwardFn backward;
};
constexpr DirectPath kConv3x3{kernels::conv3x3_forward, kernels::conv3x3_backward};
constexpr DirectPath kConv1x1{kernels::conv1x1_forward, kernels::conv1x1_backward};
constexpr DirectPath kConvT2x2{kernels::convt2x2_forward, kernels::convt2x2_backward};

// out_shape: (N, C_out, Ho, Wo). Forward now; backward = bias sum, weight and input gradients.
Var run_direct(const char* op, const DirectPath& path, const Var& x, const Var& weight, const Var& bias,
               const Shape& out_shape, int64_t C_out) {
  const Shape& xs = x.shape();
  const int64_t N = xs[0], C_in = xs[1], H = xs[2], W = xs[3];
  Tensor out = Tensor::empty(out_shape);
  path.forward(x.value().data(), weight.value().data(), bias.defined() ? bias.value().data() : nullptr,
               out.data(), N, C_in, C_out, H, W);
  return make_result(out, op, {x, weight, bias}, [path, N, C_in, C_out, H, W](Node& nd) {
    const bool need_x = nd.needs(0), need_w = nd.needs(1), need_b = nd.needs(2);
    const Tensor& gy = nd.grad;  // out_shape
    if (need_b) nd.inputs[2]->accumulate(bias_grad(gy));
    if (!need_x && !need_w) return;
    const Tensor& xv = nd.inputs[0]->value;
    const Tensor& wv = nd.inputs[1]->value;
    Tensor gx = need_x ? Tensor::empty(xv.shape()) : Tensor();
    Tensor gw = need_w ? Tensor::empty(wv.shape()) : Tensor();
    path.backward(xv.data(), gy.data(), wv.data(), need_x ? gx.data() : nullptr, need_w ? gw.data() : nullptr, N,
                  C_in, C_out, H, W);
    if (need_w) nd.inputs[1]->accumulate(gw);
    if (need_x) nd.inputs[0]->accumulate(gx);
  });
}

}  // namespace

Var conv2d(const Var& x, const Var& weight, const Var& bias, Conv2dOptions opt) {
  SB_CHECK(x.defined() && weight.defined(), "conv2d: input and weight must be defined");
  const Shape& xs = x.shape();
  const Shape& ws = weight.shape();
  check_common("conv2d", xs, ws, "(C_out, C_in/groups, kH, kW)", opt.stride, opt.padding,
               opt.dilation, opt.groups);
  const int64_t N = xs[0], C_in = xs[1], H = xs[2], W = xs[3];
  const int64_t C_out = ws[0], C_in_g = ws[1], kH = ws[2], kW = ws[3], G = opt.groups;
  SB_CHECK(C_out % G == 0, "conv2d: weight ", ws, " has ", C_out,
           " output channels, which groups=", G, " does not divide (input ", xs, ")");
  SB_CHECK(C_in == C_in_g * G, "conv2d: input ", xs, " has ", C_in, " channels but weight ", ws,
           " expects ", C_in_g * G,
           G > 1 ? str(" (", C_in_g, " per group x groups=", G, ")") : std::string());
  check_bias("conv2d", bias, C_out, xs, ws);
  const Pair s = opt.stride, p = opt.padding, d = opt.dilation;
  const int64_t span_h = d.h * (kH - 1) + 1, span_w = d.w * (kW - 1) + 1;  // dilated kernel
  SB_CHECK(H + 2 * p.h >= span_h && W + 2 * p.w >= span_w, "conv2d: input ", xs, " padded by ",
           pair_str(p), " is ", H + 2 * p.h, "x", W + 2 * p.w,
           ", smaller than the kernel of weight ", ws, " dilated by ", pair_str(d), " (", span_h,
           "x", span_w, ")");
  const int64_t Ho = (H + 2 * p.h - span_h) / s.h + 1, Wo = (W + 2 * p.w - span_w) / s.w + 1;
  const bool unit_sd = s.h == 1 && s.w == 1 && d.h == 1 && d.w == 1 && G == 1;
  if (unit_sd && kH == 3 && kW == 3 && p.h == 1 && p.w == 1)
    return run_direct("conv2d", kConv3x3, x, weight, bias, {N, C_out, Ho, Wo}, C_out);
  if (unit_sd && kH == 1 && kW == 1 && p.h == 0 && p.w == 0)
    return run_direct("conv2d", kConv1x1, x, weight, bias, {N, C_out, Ho, Wo}, C_out);

  ConvSizes z;
  z.N = N, z.G = G, z.C_in = C_in, z.C_in_g = C_in_g, z.C_out = C_out, z.C_out_g = C_out / G;
  z.K = C_in_g * kH * kW;
  z.HW = H * W, z.HWo = Ho * Wo;
  // Image: one group of one sample (C_in_g, H, W); grid: the output plane (Ho, Wo).
  z.geo = {C_in_g, H, W, kH, kW, p.h, p.w, s.h, s.w, d.h, d.w, Ho, Wo};
  z.pointwise = kH == 1 && kW == 1 && s.h == 1 && s.w == 1 && p.h == 0 && p.w == 0;
  z.ws_floats = z.pointwise ? 0 : z.K * z.HWo;
  // The adjoint of a stride-1 convolution padded by p is a convolution padded by d (k - 1) - p,
  // which must not be negative.
  const int64_t aph = d.h * (kH - 1) - p.h, apw = d.w * (kW - 1) - p.w;
  z.adjoint_conv = !z.pointwise && s.h == 1 && s.w == 1 && aph >= 0 && apw >= 0;
  if (z.adjoint_conv) {
    z.adj_K = z.C_out_g * kH * kW;
    z.adj_geo = {z.C_out_g, Ho, Wo, kH, kW, aph, apw, 1, 1, d.h, d.w, H, W};
  }

  Tensor out = Tensor::empty({N, C_out, Ho, Wo});
  {
    const Plan plan = plan_units(N * G, 2 * z.C_out_g * z.K * z.HWo, z.ws_floats);
    // Shifted GEMMs (no column matrix) where each GEMM runs on one thread, the width stride is
    // 1 and there are enough input channels; otherwise im2col tiles.
    const bool shifted = !z.pointwise && (tiles_pay(plan) || plan.split_rows) && s.w == 1 &&
                         C_in_g >= kShiftedMinChannels;
    const int64_t th = tile_rows(z.geo, tiles_pay(plan), z.C_out_g);
    // Per slot: a column tile (K, th * Wo) unless shifted, then the zero-padded image.
    const int64_t col_floats = z.pointwise || shifted ? 0 : z.K * th * Wo;
    Tensor taps = shifted ? tap_weights(weight.value(), G, false) : Tensor();  // (G, kk, C_out_g * C_in_g)
    const int64_t ws_floats = z.pointwise ? 0 : col_floats + z.geo.padded_size();
    Tensor wsbuf = Tensor::empty({plan.slots * ws_floats});           // (slots, ws_floats)
    const float* px = x.value().data();                                // (N, C_in, H, W)
    const float* pw = weight.value().data();                           // (C_out, K)
    const float* pb = bias.defined() ? bias.value().data() : nullptr;  // (C_out,)
    float* po = out.data();                                            // (N, C_out, Ho, Wo)
    run_units(N * G, plan, wsbuf.data(), ws_floats, [&](int64_t u, float* ws_, int) {
      const int64_t n = u / G, g = u % G;
      const float* xg = px + (n * C_in + g * C_in_g) * z.HW;  // (C_in_g, H, W)
      const float* wg = pw + g * z.C_out_g * z.K;             // (C_out_g, K)
      float* og = po + (n * C_out + g * z.C_out_g) * z.HWo;   // (C_out_g, HWo)
      if (z.pointwise) {
        // out_g (C_out_g, HW) = W_g (C_out_g, C_in_g) x x_g (C_in_g, HW)
        gemm(false, false, z.C_out_g, z.HWo, z.K, 1.f, wg, xg, 0.f, og);
      } else {
        float* padded = ws_ + col_floats;  // (C_in_g, Hp, Wp)
        kernels::pad_image(z.geo, xg, padded);
        if (shifted) {
          const int64_t kk = kH * kW;
          conv_rows_shifted(z.geo, taps.data() + g * kk * z.C_out_g * C_in_g, z.C_out_g, padded, og, z.HWo,
                            plan.split_rows);
        }
        for (int64_t oh0 = 0; oh0 < (shifted ? 0 : Ho); oh0 += th) {
          const int64_t oh1 = std::min(Ho, oh0 + th), cols = (oh1 - oh0) * Wo;
          kernels::im2col_rows_padded(z.geo, padded, ws_, oh0, oh1);  // (K, cols)
          // out_g[:, tile] (C_out_g, cols) = W_g (C_out_g, K) x col tile (K, cols)
          gemm(false, false, z.C_out_g, cols, z.K, 1.f, wg, z.K, ws_, cols, 0.f, og + oh0 * Wo, z.HWo);
        }
      }
      if (pb) add_bias(og, pb + g * z.C_out_g, z.C_out_g, z.HWo);
    });
  }

  return make_result(out, "conv2d", {x, weight, bias}, [z](Node& nd) {
    const bool need_x = nd.needs(0), need_w = nd.needs(1), need_b = nd.needs(2);
    const Tensor& gy = nd.grad;  // (N, C_out, Ho, Wo)
    if (need_b) nd.inputs[2]->accumulate(bias_grad(gy));
    if (!need_x && !need_w) return;
    const Tensor& xv = nd.inputs[0]->value;  // (N, C_in, H, W)
    const Tensor& wv = nd.inputs[1]->value;  // (C_out, K)
    Tensor gx = need_x ? Tensor::empty(xv.shape()) : Tensor();
    Tensor gw = need_w ? Tensor::zeros(wv.shape()) : Tensor();
    const int64_t wnumel = wv.numel(), units = z.N * z.G;
    // One buffer per slot serves both column matrices, one after the other.
    const bool adjoint = need_x && z.adjoint_conv, col2im_path = need_x && !adjoint && !z.pointwise;
    const int64_t full_ws = std::max(adjoint ? z.adj_K * z.HW : 0, z.ws_floats);
    const Plan plan = plan_units(units, (need_x + need_w) * 2 * z.C_out_g * z.K * z.HWo, full_ws);
    const bool tiled = tiles_pay(plan);
    const int64_t th_w = tile_rows(z.geo, tiled, z.C_out_g);            // weight gradient tiles
    const bool rows = plan.split_rows;  // the shifted paths split each unit's rows over the threads
    const bool shifted = adjoint && (tiled || rows) && z.C_out_g >= kShiftedMinChannels;  // the adjoint has stride 1
    const int64_t th_x = adjoint && !shifted ? tile_rows(z.adj_geo, tiled, z.C_in_g) : 0;  // input gradient tiles
    const int64_t Wo = z.geo.out_w, Ho = z.geo.out_h, W = z.geo.width, H = z.geo.height;
    // The weight gradient per tap from the padded image, with no column matrix, under the same
    // conditions as the forward's shifted GEMMs, and a stride of 1 both ways.
    const bool shifted_w = need_w && !z.pointwise && (tiled || rows) && z.geo.stride_h == 1 &&
                           z.geo.stride_w == 1 && z.C_in_g >= kShiftedMinChannels;
    const int64_t L = (Ho - 1) * z.geo.padded_width() + Wo;  // rows of dY on the padded width
    // Per slot: a column tile, then the zero-padded image (x, or dY for the adjoint) it is
    // copied from; the weight gradient and the input gradient use the buffer one after the other.
    int64_t ws_floats = 0, col_w = 0, col_x = 0;
    // The weight gradient's slot also holds, after the image, a dY tile transposed, (th_w * Wo,
    // C_out_g), or with shifted_w all of dY on the padded width, (L, C_out_g).
    if (shifted_w)
      ws_floats = z.geo.padded_size() + L * z.C_out_g;
    else if (need_w && !z.pointwise)
      col_w = z.K * th_w * Wo, ws_floats = col_w + z.geo.padded_size() + th_w * Wo * z.C_out_g;
    if (adjoint) col_x = z.adj_K * th_x * W, ws_floats = std::max(ws_floats, col_x + z.adj_geo.padded_size());
    if (col2im_path) ws_floats = std::max(ws_floats, z.ws_floats);
    Tensor wsbuf = Tensor::empty({plan.slots * ws_floats});  // (slots, ws_floats)
    Tensor wflip = adjoint && !shifted ? flip_transpose_weight(wv, z.G) : Tensor();  // (G, C_in_g, adj_K)
    Tensor taps = shifted ? tap_weights(wv, z.G, true) : Tensor();  // (G, kk, C_in_g * C_out_g)
    // The weight gradient sums over samples: spread units add into per-slot partials
    // (slots, C_out, K), reduced in slot order afterwards, so no two threads race on a sum.
    Tensor partials = need_w && plan.spread ? Tensor::zeros({plan.slots, wnumel}) : Tensor();
    Tensor gwt = need_w ? Tensor::empty({plan.slots, z.K * z.C_out_g}) : Tensor();  // (slots, K, C_out_g)
    // Per-thread partial weight gradients when shifted_w splits rows: (threads, K * C_out_g).
    Tensor row_partials = shifted_w && rows ? Tensor::empty({omp_get_max_threads(), z.K * z.C_out_g}) : Tensor();
    const float* px = xv.data();
    const float* pw = wv.data();
    const float* pgy = gy.data();
    auto unit = [&](int64_t u, float* ws_, int slot) {
      const int64_t n = u / z.G, g = u % z.G;
      const int64_t x_off = (n * z.C_in + g * z.C_in_g) * z.HW;        // x[n, g] (C_in_g, H, W)
      const float* gyg = pgy + (n * z.C_out + g * z.C_out_g) * z.HWo;  // (C_out_g, HWo)
      const float* wg = pw + g * z.C_out_g * z.K;                      // (C_out_g, K)
      if (need_w) {
        float* gwg =
            (plan.spread ? partials.data() + slot * wnumel : gw.data()) + g * z.C_out_g * z.K;
        // dW_g^T (K, C_out_g) = col (K, HWo) x dY_g^T (HWo, C_out_g), summed over column tiles,
        // then added transposed into dW_g (C_out_g, K). Computing dW_g directly makes OpenBLAS
        // pack the big column matrix across its rows, which costs more than the whole product.
        // Each dY tile is transposed first (it is C_out_g / K the size of the column tile), so
        // the product is a plain NN GEMM that, with tile_rows' small tiles, OpenBLAS runs
        // unpacked: 116 GFLOP/s instead of 84 for K = 144, C_out_g = 16 (see tile_rows).
        float* t = gwt.data() + slot * z.K * z.C_out_g;  // (K, C_out_g), or (kk, C_in_g, C_out_g)
        if (z.pointwise) {
          gemm(false, true, z.K, z.C_out_g, z.HWo, 1.f, px + x_off, gyg, 0.f, t);
        } else if (shifted_w) {
          float* padded = ws_;                        // (C_in_g, Hp, Wp)
          float* dyp = padded + z.geo.padded_size();  // (L, C_out_g)
          kernels::pad_image(z.geo, px + x_off, padded);
          lay_out_on_padded_width(z.geo, gyg, z.C_out_g, dyp);
          conv_weight_grad_shifted(z.geo, padded, dyp, z.C_out_g, t, rows,
                                   rows ? row_partials.data() : nullptr);
        } else {
          float* padded = ws_ + col_w;                        // (C_in_g, Hp, Wp)
          float* gyt = padded + z.geo.padded_size();          // (th_w * Wo, C_out_g)
          kernels::pad_image(z.geo, px + x_off, padded);
          for (int64_t oh0 = 0; oh0 < Ho; oh0 += th_w) {
            const int64_t oh1 = std::min(Ho, oh0 + th_w), cols = (oh1 - oh0) * Wo;
            kernels::im2col_rows_padded(z.geo, padded, ws_, oh0, oh1);  // (K, cols)
            kernels::transpose(gyg + oh0 * Wo, z.C_out_g, cols, z.HWo, gyt);
            gemm(false, false, z.K, z.C_out_g, cols, 1.f, ws_, cols, gyt, z.C_out_g, oh0 == 0 ? 0.f : 1.f, t,
                 z.C_out_g);
          }
        }
        if (shifted_w) {
          // t (kk, C_in_g, C_out_g) into dW_g (C_out_g, C_in_g, kk).
          const int64_t kk = z.K / z.C_in_g;
          for (int64_t co = 0; co < z.C_out_g; ++co)
            for (int64_t ci = 0; ci < z.C_in_g; ++ci)
              for (int64_t tap = 0; tap < kk; ++tap)
                gwg[co * z.K + ci * kk + tap] += t[(tap * z.C_in_g + ci) * z.C_out_g + co];
        } else {
          for (int64_t co = 0; co < z.C_out_g; ++co)
            for (int64_t k = 0; k < z.K; ++k) gwg[co * z.K + k] += t[k * z.C_out_g + co];
        }
      }
      if (need_x) {
        // The column buffer is free again: the weight gradient above is done with it.
        float* gxg = gx.data() + x_off;  // (C_in_g, H, W)
        if (z.pointwise) {
          // dx_g (C_in_g, HW) = W_g^T (C_in_g, C_out_g) x dY_g (C_out_g, HW)
          gemm(true, false, z.K, z.HWo, z.C_out_g, 1.f, wg, gyg, 0.f, gxg);
        } else if (shifted) {
          // dx_g (C_in_g, H, W) = the convolution of dY_g with the flipped, transposed kernel.
          float* padded = ws_;  // (C_out_g, padded Ho, padded Wo)
          kernels::pad_image(z.adj_geo, gyg, padded);
          const int64_t kk = z.adj_K / z.C_out_g;
          conv_rows_shifted(z.adj_geo, taps.data() + g * kk * z.C_in_g * z.C_out_g, z.C_in_g, padded, gxg, z.HW,
                            rows);
        } else if (adjoint) {
          // dx_g[:, tile] (C_in_g, cols) = Wf_g (C_in_g, adj_K) x im2col(dY_g) tile (adj_K, cols)
          const float* wf = wflip.data() + g * z.C_in_g * z.adj_K;
          float* padded = ws_ + col_x;  // (C_out_g, padded Ho, padded Wo)
          kernels::pad_image(z.adj_geo, gyg, padded);
          for (int64_t h0 = 0; h0 < H; h0 += th_x) {
            const int64_t h1 = std::min(H, h0 + th_x), cols = (h1 - h0) * W;
            kernels::im2col_rows_padded(z.adj_geo, padded, ws_, h0, h1);
            gemm(false, false, z.C_in_g, cols, z.adj_K, 1.f, wf, z.adj_K, ws_, cols, 0.f, gxg + h0 * W, z.HW);
          }
        } else {
          // dcol (K, HWo) = W_g^T (K, C_out_g) x dY_g (C_out_g, HWo), folded onto the image by col2im.
          gemm(true, false, z.K, z.HWo, z.C_out_g, 1.f, wg, gyg, 0.f, ws_);
          kernels::col2im(z.geo, ws_, gxg);
        }
      }
    };
    int used = run_units(units, plan, wsbuf.data(), ws_floats, unit);
    if (need_w && plan.spread) sum_partials(partials.data(), used, wnumel, gw.data());
    if (need_x) nd.inputs[0]->accumulate(gx);
    if (need_w) nd.inputs[1]->accumulate(gw);
  });
}

Var conv_transpose2d(const Var& x, const Var& weight, const Var& bias, ConvTranspose2dOptions opt) {
  SB_CHECK(x.defined() && weight.defined(), "conv_transpose2d: input and weight must be defined");
  const Shape& xs = x.shape();
  const Shape& ws = weight.shape();
  check_common("conv_transpose2d", xs, ws, "(C_in, C_out/groups, kH, kW)", opt.stride, opt.padding,
               opt.dilation, opt.groups);
  const int64_t N = xs[0], C_in = xs[1], H = xs[2], W = xs[3];
  const int64_t C_out_g = ws[1], kH = ws[2], kW = ws[3], G = opt.groups;
  SB_CHECK(C_in == ws[0], "conv_transpose2d: input ", xs, " has ", C_in, " channels but weight ",
           ws, " expects ", ws[0]);
  SB_CHECK(C_in % G == 0, "conv_transpose2d: input ", xs, " has ", C_in,
           " channels, which groups=", G, " does not divide (weight ", ws, ")");
  const int64_t C_out = C_out_g * G;
  check_bias("conv_transpose2d", bias, C_out, xs, ws);
  const Pair s = opt.stride, p = opt.padding, d = opt.dilation, op = opt.output_padding;
  // PyTorch's rule: output_padding only fills positions a stride or dilation step skips.
  SB_CHECK(op.h >= 0 && op.w >= 0 && (op.h < s.h || op.h < d.h) && (op.w < s.w || op.w < d.w),
           "conv_transpose2d: output_padding ", pair_str(op),
           " must be >= 0 and smaller than either stride ", pair_str(s), " or dilation ",
           pair_str(d), " (input ", xs, ", weight ", ws, ")");
  const int64_t Ho = (H - 1) * s.h - 2 * p.h + d.h * (kH - 1) + op.h + 1;
  const int64_t Wo = (W - 1) * s.w - 2 * p.w + d.w * (kW - 1) + op.w + 1;
  SB_CHECK(Ho >= 1 && Wo >= 1, "conv_transpose2d: input ", xs, " with weight ", ws, ", stride ",
           pair_str(s), ", padding ", pair_str(p), ", dilation ", pair_str(d),
           " and output_padding ", pair_str(op), " gives an empty output ", Ho, "x", Wo);

  if (G == 1 && kH == 2 && kW == 2 && s.h == 2 && s.w == 2 && p.h == 0 && p.w == 0 && d.h == 1 && d.w == 1 &&
      op.h == 0 && op.w == 0)
    return run_direct("conv_transpose2d", kConvT2x2, x, weight, bias, {N, C_out, Ho, Wo}, C_out);

  ConvSizes z;
  z.N = N, z.G = G, z.C_in = C_in, z.C_in_g = C_in / G, z.C_out = C_out, z.C_out_g = C_out_g;
  z.K = C_out_g * kH * kW;
  z.HW = H * W, z.HWo = Ho * Wo;
  // The adjoint of conv2d: the image is one group of one sample's output (C_out_g, Ho, Wo), the
  // grid is the input plane (H, W).
  z.geo = {C_out_g, Ho, Wo, kH, kW, p.h, p.w, s.h, s.w, d.h, d.w, H, W};
  z.pointwise =
      kH == 1 && kW == 1 && s.h == 1 && s.w == 1 && p.h == 0 && p.w == 0 && Ho == H && Wo == W;
  z.ws_floats = z.pointwise ? 0 : z.K * z.HW;

  Tensor out = Tensor::empty({N, C_out, Ho, Wo});
  {
    const Plan plan = plan_units(N * G, 2 * z.C_in_g * z.K * z.HW, z.ws_floats);
    Tensor wsbuf = Tensor::empty({plan.slots * z.ws_floats});          // (slots, K, HW)
    const float* px = x.value().data();                                // (N, C_in, H, W)
    const float* pw = weight.value().data();                           // (C_in, K)
    const float* pb = bias.defined() ? bias.value().data() : nullptr;  // (C_out,)
    float* po = out.data();                                            // (N, C_out, Ho, Wo)
    run_units(N * G, plan, wsbuf.data(), z.ws_floats, [&](int64_t u, float* ws_, int) {
      const int64_t n = u / G, g = u % G;
      const float* xg = px + (n * C_in + g * z.C_in_g) * z.HW;  // (C_in_g, HW)
      const float* wg = pw + g * z.C_in_g * z.K;                // (C_in_g, K)
      float* og = po + (n * C_out + g * C_out_g) * z.HWo;       // (C_out_g, Ho, Wo)
      // col (K, HW) = W_g^T (K, C_in_g) x x_g (C_in_g, HW), folded onto the output by col2im.
      if (z.pointwise) {
        gemm(true, false, z.K, z.HW, z.C_in_g, 1.f, wg, xg, 0.f, og);
      } else {
        gemm(true, false, z.K, z.HW, z.C_in_g, 1.f, wg, xg, 0.f, ws_);
        kernels::col2im(z.geo, ws_, og);
      }
      if (pb) add_bias(og, pb + g * C_out_g, C_out_g, z.HWo);
    });
  }

  return make_result(out, "conv_transpose2d", {x, weight, bias}, [z](Node& nd) {
    const bool need_x = nd.needs(0), need_w = nd.needs(1), need_b = nd.needs(2);
    const Tensor& gy = nd.grad;  // (N, C_out, Ho, Wo)
    if (need_b) nd.inputs[2]->accumulate(bias_grad(gy));
    if (!need_x && !need_w) return;
    const Tensor& xv = nd.inputs[0]->value;  // (N, C_in, H, W)
    const Tensor& wv = nd.inputs[1]->value;  // (C_in, K)
    Tensor gx = need_x ? Tensor::empty(xv.shape()) : Tensor();
    Tensor gw = need_w ? Tensor::zeros(wv.shape()) : Tensor();
    const int64_t wnumel = wv.numel(), units = z.N * z.G;
    const Plan plan = plan_units(units, (need_x + need_w) * 2 * z.C_in_g * z.K * z.HW, z.ws_floats);
    Tensor wsbuf = Tensor::empty({plan.slots * z.ws_floats});  // (slots, K, HW)
    // Per-slot weight-gradient partials (slots, C_in, K), reduced in slot order: see conv2d.
    Tensor partials = need_w && plan.spread ? Tensor::zeros({plan.slots, wnumel}) : Tensor();
    const float* px = xv.data();
    const float* pw = wv.data();
    const float* pgy = gy.data();
    auto unit = [&](int64_t u, float* ws_, int slot) {
      const int64_t n = u / z.G, g = u % z.G;
      const int64_t x_off = (n * z.C_in + g * z.C_in_g) * z.HW;        // x[n, g] (C_in_g, HW)
      const float* gyg = pgy + (n * z.C_out + g * z.C_out_g) * z.HWo;  // (C_out_g, Ho, Wo)
      const float* col = gyg;                                          // (K, HW)
      if (!z.pointwise) {
        kernels::im2col(z.geo, gyg, ws_);
        col = ws_;
      }
      if (need_x) {
        // dx_g (C_in_g, HW) = W_g (C_in_g, K) x col (K, HW)
        gemm(false, false, z.C_in_g, z.HW, z.K, 1.f, pw + g * z.C_in_g * z.K, col, 0.f,
             gx.data() + x_off);
      }
      if (need_w) {
        float* gwg =
            (plan.spread ? partials.data() + slot * wnumel : gw.data()) + g * z.C_in_g * z.K;
        // dW_g (C_in_g, K) += x_g (C_in_g, HW) x col^T (HW, K)
        gemm(false, true, z.C_in_g, z.K, z.HW, 1.f, px + x_off, col, 1.f, gwg);
      }
    };
    int used = run_units(units, plan, wsbuf.data(), z.ws_floats, unit);
    if (need_w && plan.spread) sum_partials(partials.data(), used, wnumel, gw.data());
    if (need_x) nd.inputs[0]->accumulate(gx);
    if (need_w) nd.inputs[1]->accumulate(gw);
  });
}

}  // namespace sb
