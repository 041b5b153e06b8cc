// Direct-convolution microkernels (no OpenBLAS) for the hot convolution shapes: 3x3 stride-1
// pad-1 and 1x1 conv2d, 2x2 stride-2 conv_transpose2d, forward and both gradients.
// Plain float* in and out; threads (OpenMP) split work so every value is computed by one thread in
// a fixed order: the results are the same bits for any thread count at a given SIMD level.
#pragma once

#include <cstdint>

namespace sb::kernels {

// ---- the whole-op entry points (threaded; dispatch on simd_level() at every call) ----

// 3x3, stride 1, padding 1, dilation 1, one group.
// out (N, C_out, H, W) = conv(x (N, C_in, H, W), w (C_out, C_in, 3, 3)) + bias (C_out,) or none.
void conv3x3_forward(const float* x, const float* w, const float* bias, float* out, int64_t N, int64_t C_in,
                     int64_t C_out, int64_t H, int64_t W);

// Both gradients at once, sharing the padded gy; gx or gw may be null (not wanted).
void conv3x3_backward(const float* x, const float* gy, const float* w, float* gx, float* gw, int64_t N,
                      int64_t C_in, int64_t C_out, int64_t H, int64_t W);

// 1x1, stride 1, padding 0: out (N, C_out, H, W) = w (C_out, C_in) x (N, C_in, H, W) + bias.
void conv1x1_forward(const float* x, const float* w, const float* bias, float* out, int64_t N, int64_t C_in,
                     int64_t C_out, int64_t H, int64_t W);
void conv1x1_backward(const float* x, const float* gy, const float* w, float* gx, float* gw, int64_t N,
                      int64_t C_in, int64_t C_out, int64_t H, int64_t W);

// conv_transpose2d with a 2x2 kernel, stride 2, padding 0, one group, no output padding:
// out (N, C_out, 2H, 2W), out[n][co][2h + i][2w + j] = bias[co] + sum_ci x[n][ci][h][w] w[ci][co][i][j]
// for x (N, C_in, H, W), w (C_in, C_out, 2, 2).
void convt2x2_forward(const float* x, const float* w, const float* bias, float* out, int64_t N, int64_t C_in,
                      int64_t C_out, int64_t H, int64_t W);
// Both gradients from one deinterleaved gy; gx or gw may be null.
void convt2x2_backward(const float* x, const float* gy, const float* w, float* gx, float* gw, int64_t N,
                       int64_t C_in, int64_t C_out, int64_t H, int64_t W);

// ---- the per-ISA microkernels the entry points run (internal) ----

// out[n][co][r][c] = bias[co] + sum_ci sum_t w[co][ci][t] in[n][ci][r * in_rs + c + off_t] over
// output rows of `width` pixels; off_t = (t / 3) * in_rs + t % 3 for 9 taps, t * tap_rs for 3
// (a column of taps: the Winograd products), 0 for 1 tap.
struct FwdArgs {
  const float* in;                 // (N, C_in, ...) planes, in_ns / in_cs / in_rs apart
  int64_t in_ns, in_cs, in_rs;
  const float* wpack;              // (C_out blocks, C_in, taps, cob): see pack in conv_direct.cpp
  const float* bias;               // (C_out,) or null
  float* out;                      // (N, C_out, rows, width), out_ns / out_cs / out_rs apart
  int64_t out_ns, out_cs, out_rs;
  int64_t C_in, C_out, width;
  int64_t tap_rs = 0;              // 3 taps: floats between them
};
// g[a][b] = sum_n sum_p A[n][a][p * ...] B[n][b][p], the 1x1 weight gradient over whole planes.
struct WgradArgs {
  const float* A;                  // (N, A, rows, width)
  int64_t a_ns, a_cs, a_rs;
  const float* B;                  // (N, B, ...)
  int64_t b_ns, b_cs, b_rs;
  int64_t N, rows, width, CA, CB;
  float* g;                        // (CA, CB)
};
// The 3x3 weight gradient g (C_out, C_in, 3, 3), in one of two forms (see wgrad9_unit and
// wgrad9t_unit in conv_direct_impl.h): output channels in vector lanes, from dY transposed and x
// padded (dyt, xp); or input channels in vector lanes, from x padded and transposed and dY as is
// (xt, gy). Transposed operands are aligned to the vector and zero in their padding channels.
struct Wgrad9Args {
  const float* dyt;  // (N, H * W, CoP), CoP a multiple of lanes, zero in channels >= C_out
  int64_t CoP;
  const float* xp;   // (N, C_in, H + 2, W + 2)
  const float* xt;   // (N, (H + 2) * (W + 2), CiP), CiP a multiple of lanes, zero in the border and channels >= C_in
  int64_t CiP;
  const float* gy;   // (N, C_out, H, W)
  int64_t N, C_in, C_out, H, W;
  float* g;          // (C_out, C_in, 9)
};
// One 3x3 weight-gradient kernel: `vecs` vectors of the lane channels (output channels when
// !ci_lanes, else input channels) x `blk` of the other channels x the 3 taps of row i.
struct Wgrad9Kernel {
  void (*fn)(const Wgrad9Args&, int64_t vb, int64_t ob, int i);  // lane block vb, other block ob
  bool ci_lanes;
  int vecs, blk;
};
// The Winograd weight gradient's planes (see wino_wgrad_unit in conv_direct_impl.h).
struct WinoWgradArgs {
  const float* Y;   // (N, Co, L) of one f: samples ys apart
  int64_t ys;
  const float* Vt;  // (N, Ci, (H + 2) TW) of one f: samples vs apart, channels vcs apart
  int64_t vs, vcs;
  int64_t L, TW, N, Co, Ci;
};
struct DirectKernels {
  int lanes;      // V: floats per vector
  int cob_fwd;    // output channels per forward block (the weight packing)
  int cob_wgrad;  // A channels per 1x1 weight-gradient block
  // Output-channel block `blk` of sample n, rows [r0, r1).
  void (*fwd9)(const FwdArgs&, int64_t n, int64_t blk, int64_t r0, int64_t r1);
  void (*fwd1)(const FwdArgs&, int64_t n, int64_t blk, int64_t r0, int64_t r1);
  void (*fwd3)(const FwdArgs&, int64_t n, int64_t blk, int64_t r0, int64_t r1);
  void (*fwd3_2)(const FwdArgs&, int64_t n, int64_t blk, int64_t r0, int64_t r1);  // tiles of 2 vectors
  // Winograd F(4, 3) along rows, one sample: the input and output transforms (each returns NaN
  // when a value it wrote is not finite); see winograd3x3 in conv_direct.cpp.
  float (*wino_in)(const float* in, int64_t C, int64_t H, int64_t W, int64_t TW, float* V, int64_t fs, int64_t cs);
  float (*wino_out)(const float* M, int64_t fs, int64_t cs, const float* bias, float* out, int64_t C, int64_t H,
                    int64_t W, int64_t TW);
  // The weight gradient's: dY's transform, and the products of wino_cob output x wino_cib input
  // channels (x 3 tap rows) for one f, written (3, wino_cob, wino_cib) to out.
  float (*wino_dy)(const float* gy, int64_t C, int64_t H, int64_t W, int64_t TW, float* Y, int64_t fs, int64_t cs);
  void (*wino_wgrad)(const WinoWgradArgs& a, int64_t co0, int64_t ci0, float* out);
  int wino_cob, wino_cib;
  // The 3x3 weight-gradient kernels to choose from (conv3x3_backward picks one per shape).
  Wgrad9Kernel wgrad9[5];
  // 1x1 on whole planes (rows = 1): A-channel block `blk` against B channels [b, b + 3).
  void (*wgrad1)(const WgradArgs&, int64_t blk, int64_t b);
  // dst[k][c] (len, CP) = src[c][k] (C rows ls apart), zero for c in [C, CP): CP a multiple of
  // lanes, dst aligned to lanes; the weight gradient's transposed operands.
  void (*transpose)(const float* src, int64_t C, int64_t ls, int64_t len, float* dst, int64_t CP);
};
const DirectKernels& direct_kernels_avx512_v16();
const DirectKernels& direct_kernels_avx2_v8();
const DirectKernels& direct_kernels_avx2_v4();
const DirectKernels& direct_kernels_base_v4();

}  // namespace sb::kernels
