// conv2d and conv_transpose2d: PyTorch reference values, a direct-loop reference over many random
// configurations, finite-difference gradients, shape errors, and batch/thread independence.
#include <doctest/doctest.h>

#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "core/kernels/simd.h"
#include "core/ops.h"
#include "core/threads.h"
#include "fixtures.h"
#include "gradcheck.h"
#include "layers/conv/ops.h"

using namespace sb;

namespace {

// Fixture config layout (tools/scripts/fixtures/fx_conv.py): stride h, w, padding h, w, dilation h, w,
// output_padding h, w, groups.
Conv2dOptions conv_options(const IndexTensor& c) {
  Conv2dOptions o;
  o.stride = {c[0], c[1]};
  o.padding = {c[2], c[3]};
  o.dilation = {c[4], c[5]};
  o.groups = c[8];
  return o;
}

ConvTranspose2dOptions convt_options(const IndexTensor& c) {
  ConvTranspose2dOptions o;
  o.stride = {c[0], c[1]};
  o.padding = {c[2], c[3]};
  o.dilation = {c[4], c[5]};
  o.output_padding = {c[6], c[7]};
  o.groups = c[8];
  return o;
}

// Runs `op` on a fixture's x, weight and optional bias and compares the value and all gradients
// for the stored upstream gradient.
template <class Op>
void check_fixture(const std::string& name, const Op& op) {
  INFO("fixture " << name);
  TensorFile f = sbtest::load_fixture(name);
  const bool has_bias = f.has_float("bias");
  Var x(f.get_float("x").clone(), true);
  Var w(f.get_float("weight").clone(), true);
  Var b = has_bias ? Var(f.get_float("bias").clone(), true) : Var();
  Var y = op(x, w, b, f.get_int("config"));
  CHECK_CLOSE(y.value(), f.get_float("out"));
  y.backward(f.get_float("grad_out"));
  CHECK_CLOSE(x.grad(), f.get_float("grad_x"));
  CHECK_CLOSE(w.grad(), f.get_float("grad_weight"));
  if (has_bias) CHECK_CLOSE(b.grad(), f.get_float("grad_bias"));
}

Var conv_from_config(const Var& x, const Var& w, const Var& b, const IndexTensor& c) {
  return conv2d(x, w, b, conv_options(c));
}

Var convt_from_config(const Var& x, const Var& w, const Var& b, const IndexTensor& c) {
  return conv_transpose2d(x, w, b, convt_options(c));
}

// Output and gradients of a convolution computed straight from its definition, in double.
struct Direct {
  Tensor out, grad_out, gx, gw, gb;
};

Tensor to_float(const std::vector<double>& v, const Shape& shape) {
  Tensor t = Tensor::empty(shape);
  for (int64_t i = 0; i < t.numel(); ++i) t[i] = static_cast<float>(v[i]);
  return t;
}

// y[n, co, oh, ow] = b[co] + sum over ci in co's group, i, j of
//   x[n, ci, oh * s - p + i * d, ow * s - p + j * d] * w[co, ci - group start, i, j]
// and, for a random upstream gradient gy, the adjoint sums for gx, gw, gb.
// With the upstream gradient given:
Direct direct_conv2d_with_grad(const Tensor& x, const Tensor& w, const Tensor& b, Conv2dOptions o,
                               const Tensor& grad_out) {
  const int64_t N = x.size(0), C_in = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t C_out = w.size(0), Cig = w.size(1), kH = w.size(2), kW = w.size(3);
  const int64_t Cog = C_out / o.groups;
  const int64_t Ho = (H + 2 * o.padding.h - o.dilation.h * (kH - 1) - 1) / o.stride.h + 1;
  const int64_t Wo = (W + 2 * o.padding.w - o.dilation.w * (kW - 1) - 1) / o.stride.w + 1;
  Direct r;
  Shape ys{N, C_out, Ho, Wo};
  r.grad_out = grad_out;
  std::vector<double> y(shape_numel(ys)), gx(x.numel()), gw(w.numel()), gb(C_out);
  auto xi = [&](int64_t n, int64_t c, int64_t h, int64_t ww) {
    return ((n * C_in + c) * H + h) * W + ww;
  };
  auto wi = [&](int64_t co, int64_t c, int64_t i, int64_t j) {
    return ((co * Cig + c) * kH + i) * kW + j;
  };
  for (int64_t n = 0; n < N; ++n)
    for (int64_t co = 0; co < C_out; ++co)
      for (int64_t oh = 0; oh < Ho; ++oh)
        for (int64_t ow = 0; ow < Wo; ++ow) {
          const int64_t yi = ((n * C_out + co) * Ho + oh) * Wo + ow;
          const double g = r.grad_out[yi];
          double acc = b.defined() ? b[co] : 0.0;
          gb[co] += g;
          for (int64_t c = 0; c < Cig; ++c)
            for (int64_t i = 0; i < kH; ++i)
              for (int64_t j = 0; j < kW; ++j) {
                const int64_t ih = oh * o.stride.h - o.padding.h + i * o.dilation.h;
                const int64_t iw = ow * o.stride.w - o.padding.w + j * o.dilation.w;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                const int64_t a = xi(n, (co / Cog) * Cig + c, ih, iw), k = wi(co, c, i, j);
                acc += double(x[a]) * w[k];
                gx[a] += g * w[k];
                gw[k] += g * x[a];
              }
          y[yi] = acc;
        }
  r.out = to_float(y, ys);
  r.gx = to_float(gx, x.shape());
  r.gw = to_float(gw, w.shape());
  r.gb = to_float(gb, {C_out});
  return r;
}
// With a random upstream gradient:
Direct direct_conv2d(const Tensor& x, const Tensor& w, const Tensor& b, Conv2dOptions o, Generator& gen) {
  const int64_t Ho = (x.size(2) + 2 * o.padding.h - o.dilation.h * (w.size(2) - 1) - 1) / o.stride.h + 1;
  const int64_t Wo = (x.size(3) + 2 * o.padding.w - o.dilation.w * (w.size(3) - 1) - 1) / o.stride.w + 1;
  return direct_conv2d_with_grad(x, w, b, o, Tensor::randn({x.size(0), w.size(0), Ho, Wo}, gen));
}

// The transposed convolution as a scatter: x[n, ci, ih, iw] * w[ci, co - group start, i, j] is
// added to y[n, co, ih * s - p + i * d, iw * s - p + j * d] when that lies inside the output.
Direct direct_conv_transpose2d(const Tensor& x, const Tensor& w, const Tensor& b,
                               ConvTranspose2dOptions o, Generator& gen) {
  const int64_t N = x.size(0), C_in = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t Cog = w.size(1), kH = w.size(2), kW = w.size(3);
  const int64_t C_out = Cog * o.groups, Cig = C_in / o.groups;
  const int64_t Ho =
      (H - 1) * o.stride.h - 2 * o.padding.h + o.dilation.h * (kH - 1) + o.output_padding.h + 1;
  const int64_t Wo =
      (W - 1) * o.stride.w - 2 * o.padding.w + o.dilation.w * (kW - 1) + o.output_padding.w + 1;
  Direct r;
  Shape ys{N, C_out, Ho, Wo};
  r.grad_out = Tensor::randn(ys, gen);
  std::vector<double> y(shape_numel(ys)), gx(x.numel()), gw(w.numel()), gb(C_out);
  auto yi = [&](int64_t n, int64_t c, int64_t h, int64_t ww) {
    return ((n * C_out + c) * Ho + h) * Wo + ww;
  };
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C_out; ++c)
      for (int64_t h = 0; h < Ho; ++h)
        for (int64_t ww = 0; ww < Wo; ++ww) {
          if (b.defined()) y[yi(n, c, h, ww)] = b[c];
          gb[c] += r.grad_out[yi(n, c, h, ww)];
        }
  for (int64_t n = 0; n < N; ++n)
    for (int64_t ci = 0; ci < C_in; ++ci)
      for (int64_t ih = 0; ih < H; ++ih)
        for (int64_t iw = 0; iw < W; ++iw) {
          const int64_t a = ((n * C_in + ci) * H + ih) * W + iw;
          for (int64_t c = 0; c < Cog; ++c)
            for (int64_t i = 0; i < kH; ++i)
              for (int64_t j = 0; j < kW; ++j) {
                const int64_t oh = ih * o.stride.h - o.padding.h + i * o.dilation.h;
                const int64_t ow = iw * o.stride.w - o.padding.w + j * o.dilation.w;
                if (oh < 0 || oh >= Ho || ow < 0 || ow >= Wo) continue;
                const int64_t k = ((ci * Cog + c) * kH + i) * kW + j;
                const int64_t e = yi(n, (ci / Cig) * Cog + c, oh, ow);
                y[e] += double(x[a]) * w[k];
                gx[a] += double(r.grad_out[e]) * w[k];
                gw[k] += double(r.grad_out[e]) * x[a];
              }
        }
  r.out = to_float(y, ys);
  r.gx = to_float(gx, x.shape());
  r.gw = to_float(gw, w.shape());
  r.gb = to_float(gb, {C_out});
  return r;
}

// Compares an op against its direct reference, value and every gradient.
template <class Op>
void check_direct(const Tensor& x, const Tensor& w, const Tensor& b, const Direct& ref,
                  const Op& op) {
  Var vx(x.clone(), true), vw(w.clone(), true);
  Var vb = b.defined() ? Var(b.clone(), true) : Var();
  Var y = op(vx, vw, vb);
  REQUIRE(y.shape() == ref.out.shape());
  CHECK_CLOSE(y.value(), ref.out);
  y.backward(ref.grad_out);
  CHECK_CLOSE(vx.grad(), ref.gx);
  CHECK_CLOSE(vw.grad(), ref.gw);
  if (b.defined()) CHECK_CLOSE(vb.grad(), ref.gb);
}

// One trial of the random-configuration tests: draws x, w and an optional bias of the given
// sizes and checks conv2d against the direct definition. False when the kernel does not fit.
bool check_random_conv2d(Generator& gen, int trial, const Conv2dOptions& o, int64_t N, int64_t Cig, int64_t Cog,
                         int64_t kH, int64_t kW, int64_t H, int64_t W) {
  if (H + 2 * o.padding.h < o.dilation.h * (kH - 1) + 1) return false;
  if (W + 2 * o.padding.w < o.dilation.w * (kW - 1) + 1) return false;
  Tensor x = Tensor::randn({N, Cig * o.groups, H, W}, gen);
  Tensor w = Tensor::randn({Cog * o.groups, Cig, kH, kW}, gen);
  Tensor b = gen.below(2) ? Tensor::randn({Cog * o.groups}, gen) : Tensor();
  INFO("trial " << trial << ": x " << shape_str(x.shape()) << " w " << shape_str(w.shape())
                << " stride " << o.stride.h << "," << o.stride.w << " padding " << o.padding.h
                << "," << o.padding.w << " dilation " << o.dilation.h << "," << o.dilation.w
                << " groups " << o.groups << (b.defined() ? " bias" : ""));
  Direct ref = direct_conv2d(x, w, b, o, gen);
  check_direct(x, w, b, ref, [&](const Var& vx, const Var& vw, const Var& vb) {
    return conv2d(vx, vw, vb, o);
  });
  return true;
}


// Sets the thread count for one test and restores it after.
struct ThreadCount {
  int prev = num_threads();
  explicit ThreadCount(int n) { set_num_threads(n); }
  ~ThreadCount() { set_num_threads(prev); }
};

// SMALLBATCH_WINOGRAD's setting for a scope: Winograd F(4, 3) for 3x3 layers with >= 8 channels,
// or the direct kernel for all.
struct WinogradSetting {
  bool prev = kernels::winograd_enabled();
  explicit WinogradSetting(bool on) { kernels::set_winograd_enabled(on); }
  ~WinogradSetting() { kernels::set_winograd_enabled(prev); }
};

// Sample n of a (N, ...) tensor as a (1, ...) tensor.
Tensor sample(const Tensor& t, int64_t n) {
  Shape s = t.shape();
  s[0] = 1;
  Tensor out = Tensor::empty(s);
  std::memcpy(out.data(), t.data() + n * out.numel(), sizeof(float) * out.numel());
  return out;
}

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), sizeof(float) * a.numel()) == 0;
}

}  // namespace

// ---- reference values from PyTorch ---------------------------------------------------------

TEST_CASE("conv2d: matches PyTorch in value and gradients") {
  for (const char* name :
       {"conv2d_basic", "conv2d_stride2", "conv2d_dilation2", "conv2d_groups2", "conv2d_depthwise",
        "conv2d_depthwise_x2", "conv2d_1x1", "conv2d_1x1_groups2", "conv2d_1x1_stride2",
        "conv2d_nonsquare", "conv2d_wide_padding"})
    check_fixture(name, conv_from_config);
}

TEST_CASE("conv_transpose2d: matches PyTorch in value and gradients") {
  for (const char* name :
       {"conv_transpose2d_k2s2", "conv_transpose2d_k3s2p1op1", "conv_transpose2d_groups2",
        "conv_transpose2d_depthwise", "conv_transpose2d_nonsquare",
        "conv_transpose2d_outpad_dilation", "conv_transpose2d_1x1"})
    check_fixture(name, convt_from_config);
}

TEST_CASE("conv2d: computes only the gradients that are needed") {
  TensorFile f = sbtest::load_fixture("conv2d_groups2");
  Conv2dOptions o = conv_options(f.get_int("config"));
  {  // a first layer: the image needs no gradient
    Var x(f.get_float("x"));
    Var w(f.get_float("weight").clone(), true), b(f.get_float("bias").clone(), true);
    conv2d(x, w, b, o).backward(f.get_float("grad_out"));
    CHECK_FALSE(x.grad().defined());
    CHECK_CLOSE(w.grad(), f.get_float("grad_weight"));
    CHECK_CLOSE(b.grad(), f.get_float("grad_bias"));
  }
  {  // frozen weights: only the input's gradient
    Var x(f.get_float("x").clone(), true);
    Var w(f.get_float("weight")), b(f.get_float("bias"));
    conv2d(x, w, b, o).backward(f.get_float("grad_out"));
    CHECK_CLOSE(x.grad(), f.get_float("grad_x"));
    CHECK_FALSE(w.grad().defined());
    CHECK_FALSE(b.grad().defined());
  }
  {  // inference records no graph
    NoGrad ng;
    Var y = conv2d(Var(f.get_float("x"), true), Var(f.get_float("weight"), true), Var(), o);
    CHECK_FALSE(y.requires_grad());
  }
}

TEST_CASE("conv_transpose2d: computes only the gradients that are needed") {
  TensorFile f = sbtest::load_fixture("conv_transpose2d_k3s2p1op1");
  ConvTranspose2dOptions o = convt_options(f.get_int("config"));
  {
    Var x(f.get_float("x"));
    Var w(f.get_float("weight").clone(), true), b(f.get_float("bias"));
    conv_transpose2d(x, w, b, o).backward(f.get_float("grad_out"));
    CHECK_FALSE(x.grad().defined());
    CHECK_CLOSE(w.grad(), f.get_float("grad_weight"));
    CHECK_FALSE(b.grad().defined());
  }
  {
    Var x(f.get_float("x").clone(), true);
    Var w(f.get_float("weight")), b(f.get_float("bias").clone(), true);
    conv_transpose2d(x, w, b, o).backward(f.get_float("grad_out"));
    CHECK_CLOSE(x.grad(), f.get_float("grad_x"));
    CHECK_FALSE(w.grad().defined());
    CHECK_CLOSE(b.grad(), f.get_float("grad_bias"));
  }
}

// ---- a direct-loop reference over many configurations -------------------------------------

TEST_CASE("conv2d: agrees with the direct definition over random configurations") {
  // On 1 thread every GEMM runs single-threaded: stride-1 convolutions take the shifted GEMMs
  // (forward and input gradient) and the rest im2col tiles; on 4 threads these small problems
  // run whole GEMMs on the pool, with untiled im2col.
  for (int threads : {1, 4}) {
  ThreadCount tc(threads);
  INFO(threads << " threads");
  Generator gen(7);
  int tested = 0;
  for (int trial = 0; trial < 60; ++trial) {
    Conv2dOptions o;
    o.groups = 1 + gen.below(3);
    const int64_t N = 1 + gen.below(3), Cig = 1 + gen.below(3), Cog = 1 + gen.below(3);
    const int64_t kH = 1 + gen.below(4), kW = 1 + gen.below(4);
    const int64_t H = 1 + gen.below(9), W = 1 + gen.below(9);
    o.stride = {1 + int64_t(gen.below(3)), 1 + int64_t(gen.below(3))};
    o.padding = {int64_t(gen.below(4)), int64_t(gen.below(4))};
    o.dilation = {1 + int64_t(gen.below(3)), 1 + int64_t(gen.below(3))};
    if (check_random_conv2d(gen, trial, o, N, Cig, Cog, kH, kW, H, W)) ++tested;
  }
  CHECK(tested >= 30);
  }
}

TEST_CASE("conv2d: the shifted-GEMM path (16+ channels, stride 1 along width) agrees with the direct definition") {
  // 1 thread, so every GEMM is single-threaded and conv_rows_shifted runs for the forward and,
  // with stride 1, the input gradient, and conv_weight_grad_shifted for the weight gradient
  // (im2col tiles with stride 2 along height); padding, dilation, groups and non-square kernels
  // vary.
  ThreadCount tc(1);
  Generator gen(17);
  int tested = 0;
  for (int trial = 0; trial < 24; ++trial) {
    Conv2dOptions o;
    o.groups = 1 + gen.below(2);
    const int64_t N = 1 + gen.below(2), Cig = 16 + gen.below(5), Cog = 16 + gen.below(5);
    const int64_t kH = 1 + gen.below(3), kW = 1 + gen.below(3);
    const int64_t H = 2 + gen.below(8), W = 2 + gen.below(8);
    o.stride = {1 + int64_t(gen.below(2)), 1};
    o.padding = {int64_t(gen.below(3)), int64_t(gen.below(3))};
    o.dilation = {1 + int64_t(gen.below(2)), 1 + int64_t(gen.below(2))};
    if (check_random_conv2d(gen, trial, o, N, Cig, Cog, kH, kW, H, W)) ++tested;
  }
  CHECK(tested >= 12);
}

TEST_CASE("conv_transpose2d: agrees with the direct definition over random configurations") {
  Generator gen(8);
  int tested = 0;
  for (int trial = 0; trial < 60; ++trial) {
    ConvTranspose2dOptions o;
    o.groups = 1 + gen.below(3);
    const int64_t N = 1 + gen.below(3), Cig = 1 + gen.below(3), Cog = 1 + gen.below(3);
    const int64_t kH = 1 + gen.below(4), kW = 1 + gen.below(4);
    const int64_t H = 1 + gen.below(7), W = 1 + gen.below(7);
    o.stride = {1 + int64_t(gen.below(3)), 1 + int64_t(gen.below(3))};
    o.padding = {int64_t(gen.below(3)), int64_t(gen.below(3))};
    o.dilation = {1 + int64_t(gen.below(3)), 1 + int64_t(gen.below(3))};
    o.output_padding = {int64_t(gen.below(std::max(o.stride.h, o.dilation.h))),
                        int64_t(gen.below(std::max(o.stride.w, o.dilation.w)))};
    const int64_t Ho =
        (H - 1) * o.stride.h - 2 * o.padding.h + o.dilation.h * (kH - 1) + o.output_padding.h + 1;
    const int64_t Wo =
        (W - 1) * o.stride.w - 2 * o.padding.w + o.dilation.w * (kW - 1) + o.output_padding.w + 1;
    if (Ho < 1 || Wo < 1) continue;
    Tensor x = Tensor::randn({N, Cig * o.groups, H, W}, gen);
    Tensor w = Tensor::randn({Cig * o.groups, Cog, kH, kW}, gen);
    Tensor b = gen.below(2) ? Tensor::randn({Cog * o.groups}, gen) : Tensor();
    INFO("trial " << trial << ": x " << shape_str(x.shape()) << " w " << shape_str(w.shape())
                  << " stride " << o.stride.h << "," << o.stride.w << " padding " << o.padding.h
                  << "," << o.padding.w << " dilation " << o.dilation.h << "," << o.dilation.w
                  << " output_padding " << o.output_padding.h << "," << o.output_padding.w
                  << " groups " << o.groups << (b.defined() ? " bias" : ""));
    Direct ref = direct_conv_transpose2d(x, w, b, o, gen);
    check_direct(x, w, b, ref, [&](const Var& vx, const Var& vw, const Var& vb) {
      return conv_transpose2d(vx, vw, vb, o);
    });
    ++tested;
  }
  CHECK(tested >= 30);
}

TEST_CASE("conv2d: agrees with the direct definition at sizes that run the kernels in parallel") {
  // Column matrices of (144, 1440): above the kernels' threshold for forking threads. One sample
  // runs GEMMs on the whole pool; three samples spread over threads.
  ThreadCount threads(4);
  Generator gen(9);
  for (int64_t N : {1, 3}) {
    INFO("N = " << N);
    Tensor x = Tensor::randn({N, 16, 40, 36}, gen);
    Tensor w = Tensor::randn({32, 16, 3, 3}, gen);
    Tensor b = Tensor::randn({32}, gen);
    Conv2dOptions o;
    o.padding = 1;
    Direct ref = direct_conv2d(x, w, b, o, gen);
    check_direct(x, w, b, ref, [&](const Var& vx, const Var& vw, const Var& vb) {
      return conv2d(vx, vw, vb, o);
    });
  }
}

TEST_CASE(
    "conv_transpose2d: agrees with the direct definition at sizes that run the kernels in "
    "parallel") {
  ThreadCount threads(4);
  Generator gen(10);
  for (int64_t N : {1, 3}) {
    INFO("N = " << N);
    Tensor x = Tensor::randn({N, 32, 20, 18}, gen);
    Tensor w = Tensor::randn({32, 16, 3, 3}, gen);
    Tensor b = Tensor::randn({16}, gen);
    ConvTranspose2dOptions o;
    o.stride = 2;
    o.padding = 1;
    o.output_padding = 1;
    Direct ref = direct_conv_transpose2d(x, w, b, o, gen);
    check_direct(x, w, b, ref, [&](const Var& vx, const Var& vw, const Var& vb) {
      return conv_transpose2d(vx, vw, vb, o);
    });
  }
}

// ---- finite-difference gradients ----------------------------------------------------------

TEST_CASE("conv2d: gradients match finite differences") {
  Generator gen(11);
  SUBCASE("3x3, padding 1, bias") {
    Conv2dOptions o;
    o.padding = 1;
    CHECK_GRADCHECK([&](const std::vector<Var>& v) { return conv2d(v[0], v[1], v[2], o); },
                    {Tensor::randn({2, 3, 5, 6}, gen), Tensor::randn({4, 3, 3, 3}, gen),
                     Tensor::randn({4}, gen)});
  }
  SUBCASE("stride 2, dilation 2, groups 2, non-square") {
    Conv2dOptions o;
    o.stride = {2, 1};
    o.padding = {2, 1};
    o.dilation = 2;
    o.groups = 2;
    CHECK_GRADCHECK([&](const std::vector<Var>& v) { return conv2d(v[0], v[1], Var(), o); },
                    {Tensor::randn({2, 4, 7, 6}, gen), Tensor::randn({6, 2, 3, 2}, gen)});
  }
  SUBCASE("depthwise, stride 2") {
    Conv2dOptions o;
    o.stride = 2;
    o.padding = 1;
    o.groups = 3;
    CHECK_GRADCHECK([&](const std::vector<Var>& v) { return conv2d(v[0], v[1], v[2], o); },
                    {Tensor::randn({2, 3, 6, 7}, gen), Tensor::randn({3, 1, 3, 3}, gen),
                     Tensor::randn({3}, gen)});
  }
  SUBCASE("1x1 (plain GEMM)") {
    CHECK_GRADCHECK([&](const std::vector<Var>& v) { return conv2d(v[0], v[1], v[2]); },
                    {Tensor::randn({2, 5, 3, 4}, gen), Tensor::randn({3, 5, 1, 1}, gen),
                     Tensor::randn({3}, gen)});
  }
  SUBCASE("1x1, stride 2") {
    Conv2dOptions o;
    o.stride = 2;
    CHECK_GRADCHECK([&](const std::vector<Var>& v) { return conv2d(v[0], v[1], Var(), o); },
                    {Tensor::randn({2, 3, 5, 5}, gen), Tensor::randn({4, 3, 1, 1}, gen)});
  }
}

TEST_CASE("conv_transpose2d: gradients match finite differences") {
  Generator gen(12);
  SUBCASE("kernel 2, stride 2, bias (UNet upsampling)") {
    ConvTranspose2dOptions o;
    o.stride = 2;
    CHECK_GRADCHECK(
        [&](const std::vector<Var>& v) { return conv_transpose2d(v[0], v[1], v[2], o); },
        {Tensor::randn({2, 4, 3, 4}, gen), Tensor::randn({4, 3, 2, 2}, gen),
         Tensor::randn({3}, gen)});
  }
  SUBCASE("kernel 3, stride 2, padding 1, output_padding 1, groups 2") {
    ConvTranspose2dOptions o;
    o.stride = 2;
    o.padding = 1;
    o.output_padding = 1;
    o.groups = 2;
    CHECK_GRADCHECK(
        [&](const std::vector<Var>& v) { return conv_transpose2d(v[0], v[1], v[2], o); },
        {Tensor::randn({2, 4, 3, 3}, gen), Tensor::randn({4, 2, 3, 3}, gen),
         Tensor::randn({4}, gen)});
  }
  SUBCASE("non-square, dilation 2, output_padding below the dilation") {
    ConvTranspose2dOptions o;
    o.stride = {1, 2};
    o.padding = {1, 0};
    o.dilation = {2, 1};
    o.output_padding = {1, 1};
    CHECK_GRADCHECK(
        [&](const std::vector<Var>& v) { return conv_transpose2d(v[0], v[1], Var(), o); },
        {Tensor::randn({1, 3, 4, 3}, gen), Tensor::randn({3, 2, 3, 2}, gen)});
  }
  SUBCASE("1x1 (plain GEMM)") {
    CHECK_GRADCHECK([&](const std::vector<Var>& v) { return conv_transpose2d(v[0], v[1], v[2]); },
                    {Tensor::randn({2, 4, 3, 3}, gen), Tensor::randn({4, 3, 1, 1}, gen),
                     Tensor::randn({3}, gen)});
  }
}

TEST_CASE("conv2d: the gradient check notices a missing gradient") {
  // The weight enters the forward but is cut from the graph, so its analytic gradient is zero.
  Generator gen(13);
  auto r = sbtest::gradcheck([](const std::vector<Var>& v) { return conv2d(v[0], v[1].detach()); },
                             {Tensor::randn({1, 2, 4, 4}, gen), Tensor::randn({3, 2, 3, 3}, gen)});
  CHECK_FALSE(r.ok);
}

TEST_CASE("conv_transpose2d: the gradient check notices a missing gradient") {
  Generator gen(14);
  auto r = sbtest::gradcheck(
      [](const std::vector<Var>& v) { return conv_transpose2d(v[0].detach(), v[1]); },
      {Tensor::randn({1, 2, 3, 3}, gen), Tensor::randn({2, 3, 2, 2}, gen)});
  CHECK_FALSE(r.ok);
}

// ---- batch and thread independence ---------------------------------------------------------

// Runs `op` on a batch and on each of its samples alone: outputs and input gradients must agree
// per sample, and the batch's weight and bias gradients must be the sum of the samples'. The
// batch spreads samples over threads with per-thread partial sums; single samples run in order
// with threaded GEMMs, so this compares the two ways of running.
template <class Op>
void check_batch_independence(const Tensor& x, const Tensor& w, const Tensor& b, Generator& gen,
                              const Op& op) {
  Var vx(x.clone(), true), vw(w.clone(), true), vb(b.clone(), true);
  Var y = op(vx, vw, vb);
  Tensor gy = Tensor::randn(y.shape(), gen);
  y.backward(gy);
  Tensor gw_sum = Tensor::zeros(w.shape()), gb_sum = Tensor::zeros(b.shape());
  for (int64_t n = 0; n < x.size(0); ++n) {
    INFO("sample " << n);
    Var sx(sample(x, n), true), sw(w.clone(), true), sbias(b.clone(), true);
    Var sy = op(sx, sw, sbias);
    CHECK_CLOSE(sy.value(), sample(y.value(), n));
    sy.backward(sample(gy, n));
    CHECK_CLOSE(sx.grad(), sample(vx.grad(), n));
    for (int64_t i = 0; i < gw_sum.numel(); ++i) gw_sum[i] += sw.grad()[i];
    for (int64_t i = 0; i < gb_sum.numel(); ++i) gb_sum[i] += sbias.grad()[i];
  }
  CHECK_CLOSE(vw.grad(), gw_sum);
  CHECK_CLOSE(vb.grad(), gb_sum);
}

TEST_CASE("conv2d: a sample's result does not depend on the batch around it") {
  ThreadCount threads(4);
  Generator gen(15);
  Conv2dOptions o;
  o.padding = 1;
  check_batch_independence(
      Tensor::randn({8, 8, 24, 24}, gen), Tensor::randn({16, 8, 3, 3}, gen),
      Tensor::randn({16}, gen), gen,
      [&](const Var& x, const Var& w, const Var& b) { return conv2d(x, w, b, o); });
}

TEST_CASE("conv_transpose2d: a sample's result does not depend on the batch around it") {
  ThreadCount threads(4);
  Generator gen(16);
  ConvTranspose2dOptions o;
  o.stride = 2;
  check_batch_independence(
      Tensor::randn({8, 16, 16, 16}, gen), Tensor::randn({16, 8, 2, 2}, gen),
      Tensor::randn({8}, gen), gen,
      [&](const Var& x, const Var& w, const Var& b) { return conv_transpose2d(x, w, b, o); });
}

TEST_CASE("conv2d: results are bitwise reproducible for a fixed thread count") {
  ThreadCount threads(4);
  Generator gen(17);
  for (int64_t N : {8, 1}) {
    Tensor x = Tensor::randn({N, 8, 24, 24}, gen), w = Tensor::randn({16, 8, 3, 3}, gen);
    Tensor gy = Tensor::randn({N, 16, 12, 12}, gen);
    Conv2dOptions o;
    o.stride = 2;
    o.padding = 1;
    Tensor first[3];
    for (int run = 0; run < 2; ++run) {
      Var vx(x.clone(), true), vw(w.clone(), true);
      Var y = conv2d(vx, vw, Var(), o);
      y.backward(gy);
      if (run == 0) {
        first[0] = y.value(), first[1] = vx.grad(), first[2] = vw.grad();
      } else {
        INFO("N = " << N);
        CHECK(bitwise_equal(y.value(), first[0]));
        CHECK(bitwise_equal(vx.grad(), first[1]));
        CHECK(bitwise_equal(vw.grad(), first[2]));
      }
    }
  }
}

TEST_CASE("conv2d: batch 1 split over threads by rows gives the 1-thread forward and input gradient") {
  // One sample cannot be spread over the threads, so the shifted GEMMs share out its rows; each
  // row is computed by the same GEMMs as on 1 thread. The weight gradient adds per-thread
  // partials, so it only agrees to rounding.
  Generator gen(19);
  Tensor x = Tensor::randn({1, 16, 32, 32}, gen), w = Tensor::randn({16, 16, 3, 3}, gen);
  Tensor gy = Tensor::randn({1, 16, 32, 32}, gen);
  Conv2dOptions o;
  o.padding = 1;
  auto run = [&](int threads, Tensor out[3]) {
    ThreadCount tc(threads);
    Var vx(x.clone(), true), vw(w.clone(), true);
    Var y = conv2d(vx, vw, Var(), o);
    y.backward(gy);
    out[0] = y.value(), out[1] = vx.grad(), out[2] = vw.grad();
  };
  Tensor one[3], many[3];
  run(1, one);
  for (int threads : {2, 4}) {
    INFO(threads << " threads");
    run(threads, many);
    CHECK(bitwise_equal(many[0], one[0]));
    CHECK(bitwise_equal(many[1], one[1]));
    CHECK_CLOSE(many[2], one[2]);
  }
}

TEST_CASE("conv_transpose2d: results are bitwise reproducible for a fixed thread count") {
  ThreadCount threads(4);
  Generator gen(18);
  for (int64_t N : {8, 1}) {
    Tensor x = Tensor::randn({N, 16, 12, 12}, gen), w = Tensor::randn({16, 8, 3, 3}, gen);
    ConvTranspose2dOptions o;
    o.stride = 2;
    o.padding = 1;
    o.output_padding = 1;
    Tensor gy = Tensor::randn({N, 8, 24, 24}, gen);
    Tensor first[3];
    for (int run = 0; run < 2; ++run) {
      Var vx(x.clone(), true), vw(w.clone(), true);
      Var y = conv_transpose2d(vx, vw, Var(), o);
      y.backward(gy);
      if (run == 0) {
        first[0] = y.value(), first[1] = vx.grad(), first[2] = vw.grad();
      } else {
        INFO("N = " << N);
        CHECK(bitwise_equal(y.value(), first[0]));
        CHECK(bitwise_equal(vx.grad(), first[1]));
        CHECK(bitwise_equal(vw.grad(), first[2]));
      }
    }
  }
}

// ---- shape errors --------------------------------------------------------------------------

TEST_CASE("conv2d: bad shapes and options are errors that name every shape") {
  Var x(Tensor::zeros({2, 3, 32, 32}));
  Var w(Tensor::zeros({16, 3, 3, 3}));
  CHECK_THROWS_WITH_AS(
      conv2d(Var(Tensor::zeros({3, 32, 32})), w),
      doctest::Contains("conv2d: expected a 4-d input (N, C_in, H, W) but got input (3, 32, 32) "
                        "(weight (16, 3, 3, 3))"),
      Error);
  CHECK_THROWS_WITH_AS(
      conv2d(x, Var(Tensor::zeros({16, 3, 3}))),
      doctest::Contains("conv2d: expected a 4-d weight (C_out, C_in/groups, kH, kW) but got "
                        "weight (16, 3, 3) (input (2, 3, 32, 32))"),
      Error);
  CHECK_THROWS_WITH_AS(
      conv2d(x, Var(Tensor::zeros({16, 4, 3, 3}))),
      doctest::Contains("conv2d: input (2, 3, 32, 32) has 3 channels but weight (16, 4, 3, 3) "
                        "expects 4"),
      Error);
  Conv2dOptions g2;
  g2.groups = 2;
  CHECK_THROWS_WITH_AS(
      conv2d(x, Var(Tensor::zeros({16, 2, 3, 3})), Var(), g2),
      doctest::Contains("conv2d: input (2, 3, 32, 32) has 3 channels but weight (16, 2, 3, 3) "
                        "expects 4 (2 per group x groups=2)"),
      Error);
  CHECK_THROWS_WITH_AS(
      conv2d(Var(Tensor::zeros({2, 4, 8, 8})), Var(Tensor::zeros({5, 2, 3, 3})), Var(), g2),
      doctest::Contains("conv2d: weight (5, 2, 3, 3) has 5 output channels, which groups=2 "
                        "does not divide (input (2, 4, 8, 8))"),
      Error);
  CHECK_THROWS_WITH_AS(
      conv2d(x, w, Var(Tensor::zeros({8}))),
      doctest::Contains("conv2d: bias (8,) does not match weight (16, 3, 3, 3) and input "
                        "(2, 3, 32, 32): expected bias (16,)"),
      Error);
  CHECK_THROWS_WITH_AS(
      conv2d(Var(Tensor::zeros({1, 3, 2, 5})), w),
      doctest::Contains("conv2d: input (1, 3, 2, 5) padded by (0, 0) is 2x5, smaller than the "
                        "kernel of weight (16, 3, 3, 3) dilated by (1, 1) (3x3)"),
      Error);
  Conv2dOptions dil;
  dil.dilation = {1, 20};
  dil.padding = 1;
  CHECK_THROWS_WITH_AS(
      conv2d(x, w, Var(), dil),
      doctest::Contains("conv2d: input (2, 3, 32, 32) padded by (1, 1) is 34x34, smaller than "
                        "the kernel of weight (16, 3, 3, 3) dilated by (1, 20) (3x41)"),
      Error);
  Conv2dOptions bad;
  bad.stride = {1, 0};
  CHECK_THROWS_WITH_AS(
      conv2d(x, w, Var(), bad),
      doctest::Contains("conv2d: stride must be >= 1 but got (1, 0) (input (2, 3, 32, 32), "
                        "weight (16, 3, 3, 3))"),
      Error);
  bad = {};
  bad.padding = -1;
  CHECK_THROWS_WITH_AS(conv2d(x, w, Var(), bad),
                       doctest::Contains("conv2d: padding must be >= 0 but got (-1, -1)"), Error);
  bad = {};
  bad.dilation = 0;
  CHECK_THROWS_WITH_AS(conv2d(x, w, Var(), bad),
                       doctest::Contains("conv2d: dilation must be >= 1 but got (0, 0)"), Error);
  bad = {};
  bad.groups = 0;
  CHECK_THROWS_WITH_AS(conv2d(x, w, Var(), bad),
                       doctest::Contains("conv2d: groups must be >= 1 but got 0"), Error);
  CHECK_THROWS_WITH_AS(conv2d(Var(Tensor::zeros({2, 3, 0, 8})), w),
                       doctest::Contains("conv2d: input (2, 3, 0, 8) has an empty spatial size"),
                       Error);
}

TEST_CASE("conv_transpose2d: bad shapes and options are errors that name every shape") {
  Var x(Tensor::zeros({2, 4, 8, 8}));
  Var w(Tensor::zeros({4, 3, 2, 2}));
  CHECK_THROWS_WITH_AS(
      conv_transpose2d(Var(Tensor::zeros({4, 8, 8})), w),
      doctest::Contains("conv_transpose2d: expected a 4-d input (N, C_in, H, W) but got input "
                        "(4, 8, 8) (weight (4, 3, 2, 2))"),
      Error);
  CHECK_THROWS_WITH_AS(
      conv_transpose2d(x, Var(Tensor::zeros({4, 3}))),
      doctest::Contains("conv_transpose2d: expected a 4-d weight (C_in, C_out/groups, kH, kW) "
                        "but got weight (4, 3) (input (2, 4, 8, 8))"),
      Error);
  CHECK_THROWS_WITH_AS(
      conv_transpose2d(Var(Tensor::zeros({2, 3, 8, 8})), w),
      doctest::Contains("conv_transpose2d: input (2, 3, 8, 8) has 3 channels but weight "
                        "(4, 3, 2, 2) expects 4"),
      Error);
  ConvTranspose2dOptions g2;
  g2.groups = 2;
  CHECK_THROWS_WITH_AS(
      conv_transpose2d(Var(Tensor::zeros({2, 3, 8, 8})), Var(Tensor::zeros({3, 3, 2, 2})), Var(),
                       g2),
      doctest::Contains("conv_transpose2d: input (2, 3, 8, 8) has 3 channels, which groups=2 "
                        "does not divide (weight (3, 3, 2, 2))"),
      Error);
  // With groups the output has weight.size(1) * groups channels.
  CHECK_THROWS_WITH_AS(
      conv_transpose2d(x, w, Var(Tensor::zeros({3})), g2),
      doctest::Contains("conv_transpose2d: bias (3,) does not match weight (4, 3, 2, 2) and "
                        "input (2, 4, 8, 8): expected bias (6,)"),
      Error);
  ConvTranspose2dOptions op;
  op.stride = 2;
  op.output_padding = {1, 2};
  CHECK_THROWS_WITH_AS(
      conv_transpose2d(x, w, Var(), op),
      doctest::Contains("conv_transpose2d: output_padding (1, 2) must be >= 0 and smaller than "
                        "either stride (2, 2) or dilation (1, 1) (input (2, 4, 8, 8), weight "
                        "(4, 3, 2, 2))"),
      Error);
  op = {};
  op.output_padding = 1;
  CHECK_THROWS_WITH_AS(
      conv_transpose2d(x, w, Var(), op),
      doctest::Contains("conv_transpose2d: output_padding (1, 1) must be >= 0 and smaller than "
                        "either stride (1, 1) or dilation (1, 1)"),
      Error);
  op.dilation = 2;  // PyTorch allows output_padding below the dilation even at stride 1
  CHECK(conv_transpose2d(x, w, Var(), op).shape() == Shape{2, 3, 11, 11});
  ConvTranspose2dOptions pad;
  pad.padding = 1;
  CHECK_THROWS_WITH_AS(
      conv_transpose2d(Var(Tensor::zeros({1, 4, 1, 1})), Var(Tensor::zeros({4, 3, 1, 1})), Var(),
                       pad),
      doctest::Contains("conv_transpose2d: input (1, 4, 1, 1) with weight (4, 3, 1, 1), stride "
                        "(1, 1), padding (1, 1), dilation (1, 1) and output_padding (0, 0) gives "
                        "an empty output -1x-1"),
      Error);
  ConvTranspose2dOptions bad;
  bad.stride = 0;
  CHECK_THROWS_WITH_AS(conv_transpose2d(x, w, Var(), bad),
                       doctest::Contains("conv_transpose2d: stride must be >= 1 but got (0, 0)"),
                       Error);
  bad = {};
  bad.groups = -1;
  CHECK_THROWS_WITH_AS(conv_transpose2d(x, w, Var(), bad),
                       doctest::Contains("conv_transpose2d: groups must be >= 1 but got -1"),
                       Error);
}

// ---- the direct microkernels (layers/conv/kernels/conv_direct.*) at every SIMD level -------
// 3x3 stride-1 pad-1 and 1x1 conv2d, 2x2 stride-2 conv_transpose2d run smallbatch's own kernels,
// one build per instruction set, chosen by kernels::simd_level(). Each level the CPU has is
// checked against the direct definition, for thread-count independence and for non-finite
// values reaching only the outputs they should.

namespace {

using kernels::Simd;

// Runs body(level) at every level this CPU supports, restoring the level in force after.
template <class F>
void at_every_simd_level(const F& body) {
  const Simd prev = kernels::simd_level();
  for (Simd l : {Simd::baseline, Simd::avx2, Simd::avx512}) {
    if (l > kernels::simd_cpu_level()) continue;
    kernels::set_simd_level(l);
    INFO("simd " << std::string(kernels::simd_name(l)));
    body(l);
  }
  kernels::set_simd_level(prev);
}

// Runs body(winograd) with each of SMALLBATCH_WINOGRAD's two settings.
template <class F>
void with_and_without_winograd(const F& body) {
  for (bool on : {true, false}) {
    WinogradSetting setting(on);
    INFO((on ? "winograd" : "direct 3x3"));
    body(on);
  }
}

// Channel counts that are not multiples of any block (1, 3, 5, 17, 33) and some that are.
int64_t odd_channels(Generator& gen) {
  static const int64_t counts[] = {1, 3, 5, 17, 33, 2, 8, 16};
  return counts[gen.below(8)];
}

ConvTranspose2dOptions up2() {
  ConvTranspose2dOptions o;
  o.stride = 2;
  return o;
}

// Output, input gradient and weight gradient of op for a fixed upstream gradient gy.
template <class Op>
void run_op(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& gy, const Op& op, Tensor out[3]) {
  Var vx(x.clone(), true), vw(w.clone(), true);
  Var vb = b.defined() ? Var(b.clone(), true) : Var();
  Var y = op(vx, vw, vb);
  y.backward(gy);
  out[0] = y.value(), out[1] = vx.grad(), out[2] = vw.grad();
}

}  // namespace

TEST_CASE("conv2d: the direct 3x3 and 1x1 kernels agree with the direct definition at every SIMD level") {
  // Widths 1..70 (tails of every vector width), heights 1..9, odd channel counts, batch 1..3,
  // with and without bias; 1 and 2 threads; 3x3 by Winograd (>= 8 channels) and direct.
  at_every_simd_level([](Simd) {
    with_and_without_winograd([](bool) {
    for (int threads : {1, 2}) {
      ThreadCount tc(threads);
      INFO(threads << " threads");
      Generator gen(31 + threads);
      for (int trial = 0; trial < 40; ++trial) {
        Conv2dOptions o;
        const bool k3 = trial % 3 != 2;
        o.padding = k3 ? 1 : 0;
        const int64_t k = k3 ? 3 : 1;
        const int64_t N = 1 + gen.below(3), Ci = odd_channels(gen), Co = odd_channels(gen);
        const int64_t H = 1 + gen.below(9), W = trial < 4 ? 1 + trial : 1 + gen.below(70);
        check_random_conv2d(gen, trial, o, N, Ci, Co, k, k, H, W);
      }
    }
    });
  });
}

TEST_CASE("conv_transpose2d: the direct 2x2 stride-2 kernels agree with the direct definition at every SIMD level") {
  at_every_simd_level([](Simd) {
    for (int threads : {1, 2}) {
      ThreadCount tc(threads);
      INFO(threads << " threads");
      Generator gen(41 + threads);
      for (int trial = 0; trial < 30; ++trial) {
        const int64_t N = 1 + gen.below(3), Ci = odd_channels(gen), Co = odd_channels(gen);
        const int64_t H = 1 + gen.below(9), W = trial < 4 ? 1 + trial : 1 + gen.below(40);
        Tensor x = Tensor::randn({N, Ci, H, W}, gen);
        Tensor w = Tensor::randn({Ci, Co, 2, 2}, gen);
        Tensor b = gen.below(2) ? Tensor::randn({Co}, gen) : Tensor();
        INFO("trial " << trial << ": x " << shape_str(x.shape()) << " w " << shape_str(w.shape())
                      << (b.defined() ? " bias" : ""));
        Direct ref = direct_conv_transpose2d(x, w, b, up2(), gen);
        check_direct(x, w, b, ref, [&](const Var& vx, const Var& vw, const Var& vb) {
          return conv_transpose2d(vx, vw, vb, up2());
        });
      }
    }
  });
}

TEST_CASE("conv2d: the direct kernels agree with the direct definition at sizes that run in parallel") {
  ThreadCount threads(3);
  at_every_simd_level([](Simd) {
    Generator gen(51);
    for (int64_t k : {3, 1}) {
      INFO("kernel " << k);
      Tensor x = Tensor::randn({2, 17, 40, 37}, gen);
      Tensor w = Tensor::randn({33, 17, k, k}, gen);
      Tensor b = Tensor::randn({33}, gen);
      Conv2dOptions o;
      o.padding = k / 2;
      Direct ref = direct_conv2d(x, w, b, o, gen);
      check_direct(x, w, b, ref, [&](const Var& vx, const Var& vw, const Var& vb) { return conv2d(vx, vw, vb, o); });
    }
    Tensor x = Tensor::randn({2, 33, 20, 19}, gen);
    Tensor w = Tensor::randn({33, 17, 2, 2}, gen);
    Tensor b = Tensor::randn({17}, gen);
    Direct ref = direct_conv_transpose2d(x, w, b, up2(), gen);
    check_direct(x, w, b, ref,
                 [&](const Var& vx, const Var& vw, const Var& vb) { return conv_transpose2d(vx, vw, vb, up2()); });
  });
}

TEST_CASE("conv2d: the weight gradient of few channels, summed in chunks of samples, agrees with the direct definition") {
  // C_in C_out <= 256 sums chunks of at least 1024 positions apart (with Winograd on): 5 chunks of
  // 1 sample at 24 x 50, and 3 chunks of 3, 3 and 1 samples at 20 x 20.
  at_every_simd_level([](Simd) {
    with_and_without_winograd([](bool) {
      Generator gen(71);
      struct Shape { int64_t N, Ci, Co, H, W; };
      for (Shape s : {Shape{5, 3, 16, 24, 50}, Shape{7, 9, 16, 20, 20}})
        for (int threads : {1, 2}) {
          INFO(s.N << " x " << s.Ci << " -> " << s.Co << " at " << s.H << " x " << s.W << ", " << threads << " threads");
          ThreadCount tc(threads);
          Tensor x = Tensor::randn({s.N, s.Ci, s.H, s.W}, gen);
          Tensor w = Tensor::randn({s.Co, s.Ci, 3, 3}, gen);
          Tensor b = Tensor::randn({s.Co}, gen);
          Conv2dOptions o;
          o.padding = 1;
          Direct ref = direct_conv2d(x, w, b, o, gen);
          check_direct(x, w, b, ref, [&](const Var& vx, const Var& vw, const Var& vb) { return conv2d(vx, vw, vb, o); });
        }
    });
  });
}

TEST_CASE("conv2d and conv_transpose2d: the direct kernels give the same bits on 1, 2, 3 and 4 threads") {
  at_every_simd_level([](Simd) {
    with_and_without_winograd([](bool) {
    Generator gen(61);
    // 17 -> 33 at 23 x 45: 12 x 23 tiles, so Winograd's weight gradient too. The others take the
    // direct 3x3 weight gradient with few channels, in chunks of samples, whose kernel (and so its
    // count of units) depends on the thread count: 3 -> 33 split its samples on 2 threads only,
    // 3 -> 64 on all but 4, when the split followed the units (found by a review).
    struct Shape { int64_t Ci, Co, H, W; };
    for (Shape s : {Shape{17, 33, 23, 45}, Shape{3, 33, 30, 30}, Shape{3, 64, 20, 20}, Shape{9, 16, 30, 30}})
    for (int64_t N : {1, 3}) {
      for (int kind = 0; kind < 3; ++kind) {
        if (s.Ci != 17 && kind != 0) continue;
        INFO("N " << N << (kind == 0 ? " 3x3" : kind == 1 ? " 1x1" : " transposed 2x2") << " " << s.Ci << " -> " << s.Co);
        const int64_t Ci = s.Ci, Co = s.Co, H = s.H, W = s.W;
        Tensor x = Tensor::randn({N, Ci, H, W}, gen);
        Tensor w = kind == 2 ? Tensor::randn({Ci, Co, 2, 2}, gen) : Tensor::randn({Co, Ci, kind == 0 ? 3 : 1, kind == 0 ? 3 : 1}, gen);
        Tensor b = Tensor::randn({Co}, gen);
        Tensor gy = kind == 2 ? Tensor::randn({N, Co, 2 * H, 2 * W}, gen) : Tensor::randn({N, Co, H, W}, gen);
        auto op = [&](const Var& vx, const Var& vw, const Var& vb) {
          if (kind == 2) return conv_transpose2d(vx, vw, vb, up2());
          Conv2dOptions o;
          o.padding = kind == 0 ? 1 : 0;
          return conv2d(vx, vw, vb, o);
        };
        Tensor one[3], many[3];
        {
          ThreadCount tc(1);
          run_op(x, w, b, gy, op, one);
        }
        for (int threads : {2, 3, 4}) {
          INFO(threads << " threads");
          ThreadCount tc(threads);
          run_op(x, w, b, gy, op, many);
          CHECK(bitwise_equal(many[0], one[0]));
          CHECK(bitwise_equal(many[1], one[1]));
          CHECK(bitwise_equal(many[2], one[2]));
        }
      }
    }
    });
  });
}

TEST_CASE("conv2d: Winograd F(4, 3) at its edges: widths around its tiles, one row, leftover samples, overflow") {
  // Winograd runs 3x3 layers with >= 8 channels in and out and rows of >= 8 columns: W = 8, rows
  // that end inside a tile (9, 10, 11), one tile past a vector of tiles at each level (17, 33,
  // 65), and whole vectors (64); 1 to 5 rows; 3 samples, so chunks of 2 leave one.
  at_every_simd_level([](Simd) {
    for (int threads : {1, 2, 3}) {
      ThreadCount tc(threads);
      INFO(threads << " threads");
      Generator gen(81 + threads);
      // The weight gradient's Winograd runs from 256 tiles a plane, in chunks of at least 1024
      // tiles: 16 x 61 (a short last tile), 16 x 64 (chunks of 3 samples: all), 32 x 64 (2, then
      // 1), 32 x 128 (1 each).
      const std::vector<std::pair<int64_t, int64_t>> shapes = {
          {1, 8}, {2, 9}, {5, 10}, {1, 11}, {2, 17}, {5, 33}, {2, 65}, {1, 64}, {16, 61}, {16, 64}, {32, 64}, {32, 128},
          // rows of 3, 5 and 9 tiles, run as one row per plane: vectors span rows at every offset
          {2, 12}, {5, 20}, {3, 36}};
      for (auto [H, W] : shapes) {
          Tensor x = Tensor::randn({3, 8, H, W}, gen);
          Tensor w = Tensor::randn({9, 8, 3, 3}, gen);
          Tensor b = Tensor::randn({9}, gen);
          INFO("x " << shape_str(x.shape()));
          Conv2dOptions o;
          o.padding = 1;
          Direct ref = direct_conv2d(x, w, b, o, gen);
          check_direct(x, w, b, ref, [&](const Var& vx, const Var& vw, const Var& vb) { return conv2d(vx, vw, vb, o); });
      }
    }
  });
  // A sample per thread, in bands of rows when its transformed planes pass 512 KiB (40 channels
  // of 48 x 64: 2 bands): the same bits as one thread's whole planes, and the definition's values.
  at_every_simd_level([](Simd) {
    Generator gen(95);
    Tensor x = Tensor::randn({2, 40, 48, 64}, gen);
    Tensor w = Tensor::randn({16, 40, 3, 3}, gen);
    Tensor b = Tensor::randn({16}, gen);
    Conv2dOptions o;
    o.padding = 1;
    Direct ref = direct_conv2d(x, w, b, o, gen);
    auto op = [&](const Var& vx, const Var& vw, const Var& vb) { return conv2d(vx, vw, vb, o); };
    Tensor one[3], two[3];
    {
      ThreadCount tc(1);
      run_op(x, w, b, ref.grad_out, op, one);
    }
    ThreadCount tc(2);
    run_op(x, w, b, ref.grad_out, op, two);
    for (int i = 0; i < 3; ++i) CHECK(bitwise_equal(two[i], one[i]));
    check_direct(x, w, b, ref, op);
  });
  // Large planes: with one sample the threads share it, in bands of rows past 4 MiB of
  // transformed planes, forward and weight gradient alike (16 -> 16 at 100 x 256: 2 bands;
  // 16 -> 8 at 120 x 512: 3, so a middle band too); with a sample per thread, bands past 512 KiB
  // (4 samples of 16 -> 8 at 64 x 256 on 2 threads: 4 bands, 2 samples a thread). The same bits on
  // 1 and 2 threads, and the definition's values.
  for (const Shape& xs : {Shape{1, 16, 100, 256}, Shape{1, 16, 120, 512}, Shape{4, 16, 64, 256}}) {
    INFO("x " << shape_str(xs));
    Generator gen(97);
    const int64_t Co = xs[2] == 100 ? 16 : 8;
    Tensor x = Tensor::randn(xs, gen);
    Tensor w = Tensor::randn({Co, 16, 3, 3}, gen);
    Tensor b = Tensor::randn({Co}, gen);
    Conv2dOptions o;
    o.padding = 1;
    Direct ref = direct_conv2d(x, w, b, o, gen);
    auto op = [&](const Var& vx, const Var& vw, const Var& vb) { return conv2d(vx, vw, vb, o); };
    Tensor bits[2][3];
    for (int threads : {1, 2}) {
      ThreadCount tc(threads);
      INFO(threads << " threads");
      check_direct(x, w, b, ref, op);
      run_op(x, w, b, ref.grad_out, op, bits[threads - 1]);
    }
    for (int i = 0; i < 3; ++i) CHECK(bitwise_equal(bits[1][i], bits[0][i]));
  }
  // Finite values whose transformed sums overflow in the output transform (+-3e36 in every other
  // column, products that cancel in the direct sums): the call must go to the direct kernel.
  at_every_simd_level([](Simd) {
    const int64_t Ci = 128, Co = 8, H = 4, W = 16;
    Tensor x = Tensor::zeros({1, Ci, H, W}), w = Tensor::zeros({Co, Ci, 3, 3});
    auto pattern = [](int64_t i) { return i < 0 ? 0.f : i % 4 == 3 ? 3e36f : i % 4 == 1 ? -3e36f : 0.f; };
    for (int64_t c = 0; c < Ci; ++c)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t i = 0; i < W; ++i)
          x[(c * H + h) * W + i] = (h % 2 ? -1.f : 1.f) * (c % 2 == 0 ? pattern(i) : pattern(i - 1));
    for (int64_t co = 0; co < Co; ++co)
      for (int64_t c = 0; c < Ci; ++c) w[(co * Ci + c) * 9 + 3 + c % 2] = c % 2 == 0 ? 1.f : -1.f;
    Conv2dOptions o;
    o.padding = 1;
    Tensor wino = conv2d(Var(x), Var(w), Var(), o).value();
    WinogradSetting direct_kernel(false);
    CHECK(bitwise_equal(wino, conv2d(Var(x), Var(w), Var(), o).value()));
  });
  // Finite values that overflow a transform (4 x 1e38 in the input's) but not the direct sums
  // (weights of 1e-3): the call must go to the direct kernel; Winograd's outputs would be inf.
  at_every_simd_level([](Simd) {
    Generator gen(91);
    Tensor x = Tensor::randn({2, 8, 6, 16}, gen);
    Tensor w = Tensor::randn({8, 8, 3, 3}, gen);
    for (int64_t i = 0; i < w.numel(); ++i) w[i] *= 1e-3f;
    x[(1 * 8 + 2) * 6 * 16 + 3 * 16 + 6] = 1e38f;
    x[(0 * 8 + 5) * 6 * 16 + 0 * 16 + 0] = -1e38f;
    Tensor b = Tensor::randn({8}, gen);
    Conv2dOptions o;
    o.padding = 1;
    Direct ref = direct_conv2d(x, w, b, o, gen);
    check_direct(x, w, b, ref, [&](const Var& vx, const Var& vw, const Var& vb) { return conv2d(vx, vw, vb, o); });
  });
}

TEST_CASE("conv2d and conv_transpose2d: an inf or NaN in x reaches only the outputs it should, with the direct kernels") {
  // Positions past a row's end in a vector (tail lanes) must contribute nothing: 0 * inf is NaN.
  // The double-precision direct definition skips out-of-range terms, as PyTorch does, so its
  // pattern of non-finite values is the one to match, output and weight gradient.
  auto finite_pattern_matches = [](const Tensor& got, const Tensor& want) {
    REQUIRE(got.shape() == want.shape());
    int64_t mismatches = 0;
    for (int64_t i = 0; i < got.numel(); ++i) mismatches += std::isfinite(got[i]) != std::isfinite(want[i]);
    return mismatches;
  };
  // With 9 -> 10 channels the 3x3 runs Winograd, whose tiles would spread a non-finite value over
  // 4 columns: it must hand such calls to the direct kernel, for a value in x (the forward), in the
  // upstream gradient (the input gradient's input) or in the weights (both).
  at_every_simd_level([&](Simd) {
    ThreadCount tc(2);
    Generator gen(71);
    for (int kind = 0; kind < 4; ++kind)
      for (float bad : {INFINITY, NAN})
        for (int where = 0; where < (kind == 3 ? 6 : 4); ++where) {
          const bool wide = kind == 3;  // the 3x3 with enough channels for Winograd
          // 16 x 64 planes: 256 tiles, enough for Winograd's weight gradient as well
          const int64_t N = 2, Ci = wide ? 9 : 3, Co = wide ? 10 : 5, H = wide ? 16 : 6, W = wide ? 64 : 21;
          INFO(std::string(kind == 0 ? "3x3" : kind == 1 ? "1x1" : kind == 2 ? "transposed 2x2" : "3x3, 9 -> 10 channels")
               << " value " << bad << " where " << where);
          Tensor x = Tensor::randn({N, Ci, H, W}, gen);
          // The corners and the last column: the ends of rows, where the tail vectors are.
          const int64_t h = where % 2 ? H - 1 : 0, w = where % 4 < 2 ? W - 1 : 0;
          if (where < 4) x[((1 * Ci + 1) * H + h) * W + w] = bad;
          Tensor wt = kind == 2 ? Tensor::randn({Ci, Co, 2, 2}, gen)
                                : Tensor::randn({Co, Ci, kind == 1 ? 1 : 3, kind == 1 ? 1 : 3}, gen);
          if (where == 4) wt[((2 * Ci + 3) * 3 + 0) * 3 + 2] = bad;  // a corner tap: skipped at borders
          Tensor b = Tensor::randn({Co}, gen);
          Direct ref;
          Conv2dOptions o;
          o.padding = kind == 1 ? 0 : 1;
          if (kind == 2)
            ref = direct_conv_transpose2d(x, wt, b, up2(), gen);
          else
            ref = direct_conv2d(x, wt, b, o, gen);
          if (where == 5) {  // in the upstream gradient: the reference's sums again, by hand
            ref.grad_out[((1 * Co + 4) * H + 2) * W + 5] = bad;  // inside: every tap's term is summed
            Direct again = direct_conv2d_with_grad(x, wt, b, o, ref.grad_out);
            ref.gx = again.gx, ref.gw = again.gw;
          }
          Tensor got[3];
          run_op(x, wt, b, ref.grad_out, [&](const Var& vx, const Var& vw, const Var& vb) {
            return kind == 2 ? conv_transpose2d(vx, vw, vb, up2()) : conv2d(vx, vw, vb, o);
          }, got);
          if (where == 4) {
            // A non-finite weight: the direct kernel multiplies the zero padding by it where the
            // definition skips the term, so the pattern to match is the direct kernel's.
            WinogradSetting direct_kernel(false);
            Tensor direct[3];
            run_op(x, wt, b, ref.grad_out, [&](const Var& vx, const Var& vw, const Var& vb) { return conv2d(vx, vw, vb, o); },
                   direct);
            ref.out = direct[0], ref.gx = direct[1], ref.gw = direct[2];
          }
          CHECK(finite_pattern_matches(got[0], ref.out) == 0);
          CHECK(finite_pattern_matches(got[1], ref.gx) == 0);
          CHECK(finite_pattern_matches(got[2], ref.gw) == 0);
        }
  });
}
