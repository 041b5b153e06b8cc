// Pooling and resampling on (N, C, H, W): max_pool2d, avg_pool2d and upsample, each with its
// backward beside its forward. Every kernel works one (H, W) plane at a time, planes in parallel;
// max_pool2d has a fast path for the 2x2, stride-2 windows of UNet's down-sampling.
#include "layers/pool/ops.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

namespace sb {

// Loops with less work than this run on one thread: forking costs more than it saves.
static constexpr int64_t kParallelMin = 1 << 15;

namespace {

// Rounds towards negative infinity (PyTorch's div_rtn), so an input smaller than the kernel
// gives a non-positive output size instead of rounding up to 1.
int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

// PyTorch's pooling_output_shape (dilation 1).
int64_t pool_out_size(int64_t in, int64_t k, int64_t s, int64_t p, bool ceil_mode) {
  int64_t out = floor_div(in + 2 * p - k + (ceil_mode ? s - 1 : 0), s) + 1;
  // ceil_mode may add a window that starts in the right padding and would pool padding only;
  // PyTorch drops it, so the last window starts inside the input or its left padding.
  if (ceil_mode && (out - 1) * s >= in + p) --out;
  return out;
}

struct PoolGeometry {
  int64_t planes, H, W;   // input (N, C, H, W) seen as N*C planes of (H, W)
  int64_t OH, OW;         // output plane
  int64_t kh, kw, sh, sw, ph, pw;
};

PoolGeometry pool_geometry(const Shape& xs, const Pool2dOptions& opt, const char* op) {
  SB_CHECK(xs.size() == 4, op, ": expected a 4-d input (N, C, H, W) but got ", xs);
  Pair k = opt.kernel, s = opt.stride.value_or(opt.kernel), p = opt.padding;
  Shape ks{k.h, k.w}, ss{s.h, s.w}, ps{p.h, p.w};
  SB_CHECK(k.h > 0 && k.w > 0, op, ": kernel must be positive but got ", ks, " for input ", xs);
  SB_CHECK(s.h > 0 && s.w > 0, op, ": stride must be positive but got ", ss, " for input ", xs);
  SB_CHECK(p.h >= 0 && p.w >= 0, op, ": padding must be non-negative but got ", ps, " for input ", xs);
  SB_CHECK(p.h <= k.h / 2 && p.w <= k.w / 2, op, ": padding ", ps,
           " must be at most half the kernel ", ks, " (as in PyTorch), for input ", xs);
  PoolGeometry g;
  g.planes = xs[0] * xs[1];
  g.H = xs[2];
  g.W = xs[3];
  g.kh = k.h, g.kw = k.w, g.sh = s.h, g.sw = s.w, g.ph = p.h, g.pw = p.w;
  g.OH = pool_out_size(g.H, k.h, s.h, p.h, opt.ceil_mode);
  g.OW = pool_out_size(g.W, k.w, s.w, p.w, opt.ceil_mode);
  SB_CHECK(g.OH > 0 && g.OW > 0, op, ": output size ", Shape{g.OH, g.OW},
           " is too small (input ", xs, ", kernel ", ks, ", stride ", ss, ", padding ", ps,
           ", ceil_mode ", opt.ceil_mode ? "true" : "false", ")");
  return g;
}

}  // namespace

// max_pool2d's fast path: 2x2 windows, stride 2, no padding, every window inside the input (as
// in every UNet down-sampling step). Two input rows at a time, branch-free, and the winner kept
// as its position in the window (0 to 3, one byte) instead of a flat int64 index; the backward
// then writes each input element once (g where it won, else 0) with no zero-fill and scatter.
// The window order and PyTorch's rule ("v > best || isnan(v)", so ties go to the first and a NaN
// to the last NaN) are those of the general loop below, which tests/test_pool.cpp checks it against.
static Var max_pool2d_2x2(const Var& x, const PoolGeometry& g) {
  const Shape xs = x.shape();
  Tensor out = Tensor::empty({xs[0], xs[1], g.OH, g.OW});  // (N, C, OH, OW)
  const int64_t out_plane = g.OH * g.OW, in_plane = g.H * g.W, n_out = g.planes * out_plane;
  std::shared_ptr<void> arg_storage = detail::allocate_bytes(static_cast<size_t>(std::max<int64_t>(n_out, 1)));
  int8_t* pa = static_cast<int8_t*>(arg_storage.get());  // (N, C, OH, OW): 0..3, row-major in the window
  const float* px = x.value().data();
  float* py = out.data();
#pragma omp parallel for schedule(static) if (n_out * 4 > kParallelMin)
  for (int64_t pl = 0; pl < g.planes; ++pl)
    for (int64_t oh = 0; oh < g.OH; ++oh) {
      const float* r0 = px + pl * in_plane + 2 * oh * g.W;
      const float* r1 = r0 + g.W;
      float* yr = py + pl * out_plane + oh * g.OW;
      int8_t* ar = pa + pl * out_plane + oh * g.OW;
#pragma omp simd
      for (int64_t ow = 0; ow < g.OW; ++ow) {
        const float v0 = r0[2 * ow], v1 = r0[2 * ow + 1], v2 = r1[2 * ow], v3 = r1[2 * ow + 1];
        float best = v0;
        int8_t k = 0;
        bool t = v1 > best || v1 != v1;
        best = t ? v1 : best, k = t ? int8_t(1) : k;
        t = v2 > best || v2 != v2;
        best = t ? v2 : best, k = t ? int8_t(2) : k;
        t = v3 > best || v3 != v3;
        best = t ? v3 : best, k = t ? int8_t(3) : k;
        yr[ow] = best;
        ar[ow] = k;
      }
    }
  return make_result(out, "max_pool2d", {x}, [arg_storage, g, xs](Node& n) {
    Tensor gx = Tensor::empty(xs);  // (N, C, H, W)
    const float* pg = n.grad.data();
    const int8_t* pa = static_cast<const int8_t*>(arg_storage.get());
    float* po = gx.data();
    const int64_t in_plane = g.H * g.W, out_plane = g.OH * g.OW;
#pragma omp parallel for schedule(static) if (g.planes * in_plane > kParallelMin)
    for (int64_t pl = 0; pl < g.planes; ++pl) {
      float* op = po + pl * in_plane;
      // Rows and columns past the last window (odd H or W) get no gradient.
      for (int64_t h = 2 * g.OH; h < g.H; ++h) std::fill(op + h * g.W, op + (h + 1) * g.W, 0.f);
      for (int64_t oh = 0; oh < g.OH; ++oh) {
        float* r0 = op + 2 * oh * g.W;
        float* r1 = r0 + g.W;
        const float* gr = pg + pl * out_plane + oh * g.OW;
        const int8_t* ar = pa + pl * out_plane + oh * g.OW;
#pragma omp simd
        for (int64_t ow = 0; ow < g.OW; ++ow) {
          const float v = gr[ow];
          const int8_t k = ar[ow];
          r0[2 * ow] = k == 0 ? v : 0.f;
          r0[2 * ow + 1] = k == 1 ? v : 0.f;
          r1[2 * ow] = k == 2 ? v : 0.f;
          r1[2 * ow + 1] = k == 3 ? v : 0.f;
        }
        for (int64_t w = 2 * g.OW; w < g.W; ++w) r0[w] = r1[w] = 0.f;
      }
    }
    n.inputs[0]->accumulate(gx);
  });
}

Var max_pool2d(const Var& x, Pool2dOptions opt) {
  const Shape xs = x.shape();
  const PoolGeometry g = pool_geometry(xs, opt, "max_pool2d");
  if (g.kh == 2 && g.kw == 2 && g.sh == 2 && g.sw == 2 && g.ph == 0 && g.pw == 0 && 2 * g.OH <= g.H &&
      2 * g.OW <= g.W)
    return max_pool2d_2x2(x, g);
  Tensor out = Tensor::empty({xs[0], xs[1], g.OH, g.OW});         // (N, C, OH, OW)
  IndexTensor argmax = IndexTensor::empty({xs[0], xs[1], g.OH, g.OW});  // flat index in its plane
  const float* px = x.value().data();
  float* py = out.data();
  int64_t* pi = argmax.data();
  const int64_t in_plane = g.H * g.W, out_plane = g.OH * g.OW;
#pragma omp parallel for schedule(static) if (g.planes * out_plane * g.kh * g.kw > kParallelMin)
  for (int64_t pl = 0; pl < g.planes; ++pl) {
    const float* xp = px + pl * in_plane;
    float* yp = py + pl * out_plane;
    int64_t* ip = pi + pl * out_plane;
    for (int64_t oh = 0; oh < g.OH; ++oh) {
      // Padding is -inf, so the window is just clipped to the input.
      int64_t h0 = oh * g.sh - g.ph, h1 = std::min(h0 + g.kh, g.H);
      h0 = std::max<int64_t>(h0, 0);
      for (int64_t ow = 0; ow < g.OW; ++ow) {
        int64_t w0 = ow * g.sw - g.pw, w1 = std::min(w0 + g.kw, g.W);
        w0 = std::max<int64_t>(w0, 0);
        // Two branch-free passes instead of one "if (v > best) take it" loop: on real
        // activations that branch is a coin flip, and its mispredictions cost several times
        // the pooling itself. Pass 1 takes the max with a select (maxss); pass 2 walks the
        // window backwards and blends in the index of every element equal to it, with integer
        // masks, so the first occurrence wins (ties go to the first element, as in PyTorch).
        float best = -std::numeric_limits<float>::infinity();
        bool nan = false;
        for (int64_t h = h0; h < h1; ++h)
          for (int64_t w = w0; w < w1; ++w) {
            const float v = xp[h * g.W + w];
            best = v > best ? v : best;
            nan |= v != v;
          }
        int64_t arg = h0 * g.W + w0;
        if (nan) {
          // PyTorch's rule, "v > best || isnan(v)": the output is NaN at the last NaN.
          best = std::numeric_limits<float>::quiet_NaN();
          for (int64_t h = h0; h < h1; ++h)
            for (int64_t w = w0; w < w1; ++w)
              if (std::isnan(xp[h * g.W + w])) arg = h * g.W + w;
        } else {
          for (int64_t h = h1 - 1; h >= h0; --h)
            for (int64_t w = w1 - 1; w >= w0; --w) {
              const int64_t hit = -static_cast<int64_t>(xp[h * g.W + w] == best);  // all ones or 0
              arg ^= (arg ^ (h * g.W + w)) & hit;
            }
        }
        yp[oh * g.OW + ow] = best;
        ip[oh * g.OW + ow] = arg;
      }
    }
  }
  return make_result(out, "max_pool2d", {x}, [argmax, g, xs](Node& n) {
    Tensor gx = Tensor::empty(xs);  // (N, C, H, W)
    const float* pg = n.grad.data();
    const int64_t* pi = argmax.data();
    float* po = gx.data();
    const int64_t in_plane = g.H * g.W, out_plane = g.OH * g.OW;
    // One thread per plane: overlapping windows add into the same input element in a fixed order.
#pragma omp parallel for schedule(static) if (g.planes * (in_plane + out_plane) > kParallelMin)
    for (int64_t pl = 0; pl < g.planes; ++pl) {
      float* op = po + pl * in_plane;
      const float* gp = pg + pl * out_plane;
      const int64_t* ip = pi + pl * out_plane;
      std::fill(op, op + in_plane, 0.f);
      for (int64_t i = 0; i < out_plane; ++i) op[ip[i]] += gp[i];
    }
    n.inputs[0]->accumulate(gx);
  });
}

Var avg_pool2d(const Var& x, Pool2dOptions opt) {
  const Shape xs = x.shape();
  const PoolGeometry g = pool_geometry(xs, opt, "avg_pool2d");
  const bool include_pad = opt.count_include_pad;
  // PyTorch's divisor rule: the window clipped to the padded input counts when padding is
  // included (so a ceil_mode overhang past the right padding never counts); otherwise the
  // window clipped to the input.
  auto window = [g, include_pad](int64_t oh, int64_t ow, int64_t& h0, int64_t& h1, int64_t& w0,
                                 int64_t& w1) {
    h0 = oh * g.sh - g.ph, w0 = ow * g.sw - g.pw;
    h1 = std::min(h0 + g.kh, g.H + g.ph), w1 = std::min(w0 + g.kw, g.W + g.pw);
    int64_t padded = (h1 - h0) * (w1 - w0);
    h0 = std::max<int64_t>(h0, 0), w0 = std::max<int64_t>(w0, 0);
    h1 = std::min(h1, g.H), w1 = std::min(w1, g.W);
    return include_pad ? padded : (h1 - h0) * (w1 - w0);
  };
  Tensor out = Tensor::empty({xs[0], xs[1], g.OH, g.OW});  // (N, C, OH, OW)
  const float* px = x.value().data();
  float* py = out.data();
  const int64_t in_plane = g.H * g.W, out_plane = g.OH * g.OW;
#pragma omp parallel for schedule(static) if (g.planes * out_plane * g.kh * g.kw > kParallelMin)
  for (int64_t pl = 0; pl < g.planes; ++pl) {
    const float* xp = px + pl * in_plane;
    float* yp = py + pl * out_plane;
    for (int64_t oh = 0; oh < g.OH; ++oh)
      for (int64_t ow = 0; ow < g.OW; ++ow) {
        int64_t h0, h1, w0, w1;
        int64_t divisor = window(oh, ow, h0, h1, w0, w1);
        float s = 0.f;
        for (int64_t h = h0; h < h1; ++h)
          for (int64_t w = w0; w < w1; ++w) s += xp[h * g.W + w];
        // A window entirely in padding (possible only with count_include_pad) averages zeros.
        yp[oh * g.OW + ow] = h0 < h1 && w0 < w1 ? s / static_cast<float>(divisor) : 0.f;
      }
  }
  return make_result(out, "avg_pool2d", {x}, [window, g, xs](Node& n) {
    Tensor gx = Tensor::empty(xs);  // (N, C, H, W)
    const float* pg = n.grad.data();
    float* po = gx.data();
    const int64_t in_plane = g.H * g.W, out_plane = g.OH * g.OW;
#pragma omp parallel for schedule(static) if (g.planes * out_plane * g.kh * g.kw > kParallelMin)
    for (int64_t pl = 0; pl < g.planes; ++pl) {
      float* op = po + pl * in_plane;
      const float* gp = pg + pl * out_plane;
      std::fill(op, op + in_plane, 0.f);
      for (int64_t oh = 0; oh < g.OH; ++oh)
        for (int64_t ow = 0; ow < g.OW; ++ow) {
          int64_t h0, h1, w0, w1;
          int64_t divisor = window(oh, ow, h0, h1, w0, w1);
          if (h0 >= h1 || w0 >= w1) continue;
          // d out / d x = 1 / divisor for every x in the clipped window.
          float v = gp[oh * g.OW + ow] / static_cast<float>(divisor);
          for (int64_t h = h0; h < h1; ++h)
            for (int64_t w = w0; w < w1; ++w) op[h * g.W + w] += v;
        }
    }
    n.inputs[0]->accumulate(gx);
  });
}

namespace {

// PyTorch's nearest_idx for 'nearest' with an explicit size: the scale is in/out in float and
// the product is floored in float, so indices agree with PyTorch even where float rounding
// differs from exact rational arithmetic.
std::vector<int64_t> nearest_indices(int64_t in, int64_t out) {
  std::vector<int64_t> idx(out);
  const float scale = static_cast<float>(in) / static_cast<float>(out);
  for (int64_t i = 0; i < out; ++i) {
    if (out == in) idx[i] = i;
    else if (out == 2 * in) idx[i] = i >> 1;
    else idx[i] = std::min(static_cast<int64_t>(std::floor(static_cast<float>(i) * scale)), in - 1);
  }
  return idx;
}

// Linear interpolation taps along one axis: out[i] = l0[i] * in[i0[i]] + l1[i] * in[i1[i]].
struct LinearTaps {
  std::vector<int64_t> i0, i1;
  std::vector<float> l0, l1;
};

// PyTorch's compute_source_index_and_lambda with align_corners=False, in float as PyTorch:
// src = (dst + 0.5) * in / out - 0.5, clamped below at 0.
LinearTaps linear_taps(int64_t in, int64_t out) {
  LinearTaps t{std::vector<int64_t>(out), std::vector<int64_t>(out), std::vector<float>(out),
               std::vector<float>(out)};
  const float scale = static_cast<float>(in) / static_cast<float>(out);
  for (int64_t i = 0; i < out; ++i) {
    if (in == out) {
      t.i0[i] = t.i1[i] = i;
      t.l0[i] = 1.f, t.l1[i] = 0.f;
      continue;
    }
    float src = scale * (static_cast<float>(i) + 0.5f) - 0.5f;
    if (src < 0.f) src = 0.f;
    int64_t i0 = static_cast<int64_t>(src);
    t.i0[i] = i0;
    t.i1[i] = i0 + (i0 < in - 1 ? 1 : 0);
    float l1 = std::min(std::max(src - static_cast<float>(i0), 0.f), 1.f);
    t.l1[i] = l1;
    t.l0[i] = 1.f - l1;
  }
  return t;
}

}  // namespace

Var upsample(const Var& x, int64_t out_h, int64_t out_w, UpsampleMode mode) {
  const Shape xs = x.shape();
  SB_CHECK(xs.size() == 4, "upsample: expected a 4-d input (N, C, H, W) but got ", xs);
  SB_CHECK(out_h > 0 && out_w > 0, "upsample: output size ", Shape{out_h, out_w},
           " must be positive (input ", xs, ")");
  const int64_t planes = xs[0] * xs[1], H = xs[2], W = xs[3];
  SB_CHECK(H > 0 && W > 0, "upsample: input ", xs, " has an empty plane (output size ",
           Shape{out_h, out_w}, ")");
  const int64_t in_plane = H * W, out_plane = out_h * out_w;
  const bool parallel = planes * out_plane > kParallelMin;
  Tensor out = Tensor::empty({xs[0], xs[1], out_h, out_w});  // (N, C, out_h, out_w)
  const float* px = x.value().data();
  float* py = out.data();

  if (mode == UpsampleMode::Nearest) {
    auto ih = nearest_indices(H, out_h), iw = nearest_indices(W, out_w);
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t pl = 0; pl < planes; ++pl)
      for (int64_t oh = 0; oh < out_h; ++oh) {
        const float* row = px + pl * in_plane + ih[oh] * W;
        float* yr = py + pl * out_plane + oh * out_w;
        for (int64_t ow = 0; ow < out_w; ++ow) yr[ow] = row[iw[ow]];
      }
    return make_result(out, "upsample_nearest", {x}, [ih, iw, xs, out_w, out_h](Node& n) {
      const int64_t planes = xs[0] * xs[1], W = xs[3], in_plane = xs[2] * W, out_plane = out_h * out_w;
      Tensor gx = Tensor::empty(xs);  // (N, C, H, W)
      const float* pg = n.grad.data();
      float* po = gx.data();
      // One thread per plane: several outputs read the same input, so their grads add in order.
#pragma omp parallel for schedule(static) if (planes * out_plane > kParallelMin)
      for (int64_t pl = 0; pl < planes; ++pl) {
        float* op = po + pl * in_plane;
        std::fill(op, op + in_plane, 0.f);
        for (int64_t oh = 0; oh < out_h; ++oh) {
          float* row = op + ih[oh] * W;
          const float* gr = pg + pl * out_plane + oh * out_w;
          for (int64_t ow = 0; ow < out_w; ++ow) row[iw[ow]] += gr[ow];
        }
      }
      n.inputs[0]->accumulate(gx);
    });
  }

  LinearTaps th = linear_taps(H, out_h), tw = linear_taps(W, out_w);
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t pl = 0; pl < planes; ++pl)
    for (int64_t oh = 0; oh < out_h; ++oh) {
      const float* r0 = px + pl * in_plane + th.i0[oh] * W;
      const float* r1 = px + pl * in_plane + th.i1[oh] * W;
      const float lh0 = th.l0[oh], lh1 = th.l1[oh];
      float* yr = py + pl * out_plane + oh * out_w;
      // Width first, then height, in PyTorch's order.
      for (int64_t ow = 0; ow < out_w; ++ow) {
        int64_t a = tw.i0[ow], b = tw.i1[ow];
        float lw0 = tw.l0[ow], lw1 = tw.l1[ow];
        yr[ow] = (r0[a] * lw0 + r0[b] * lw1) * lh0 + (r1[a] * lw0 + r1[b] * lw1) * lh1;
      }
    }
  return make_result(out, "upsample_bilinear", {x}, [th, tw, xs, out_h, out_w](Node& n) {
    const int64_t planes = xs[0] * xs[1], W = xs[3], in_plane = xs[2] * W, out_plane = out_h * out_w;
    Tensor gx = Tensor::empty(xs);  // (N, C, H, W)
    const float* pg = n.grad.data();
    float* po = gx.data();
#pragma omp parallel for schedule(static) if (planes * out_plane > kParallelMin)
    for (int64_t pl = 0; pl < planes; ++pl) {
      float* op = po + pl * in_plane;
      std::fill(op, op + in_plane, 0.f);
      for (int64_t oh = 0; oh < out_h; ++oh) {
        float* r0 = op + th.i0[oh] * W;
        float* r1 = op + th.i1[oh] * W;
        const float lh0 = th.l0[oh], lh1 = th.l1[oh];
        const float* gr = pg + pl * out_plane + oh * out_w;
        // Each output spreads its grad over the four taps with the forward's weights.
        for (int64_t ow = 0; ow < out_w; ++ow) {
          int64_t a = tw.i0[ow], b = tw.i1[ow];
          float g0 = gr[ow] * lh0, g1 = gr[ow] * lh1;
          r0[a] += g0 * tw.l0[ow];
          r0[b] += g0 * tw.l1[ow];
          r1[a] += g1 * tw.l0[ow];
          r1[b] += g1 * tw.l1[ow];
        }
      }
    }
    n.inputs[0]->accumulate(gx);
  });
}

}  // namespace sb
