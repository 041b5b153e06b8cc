// The direct-convolution entry points: pick the microkernels for simd_level(), pack the weights,
// pad or (de)interleave the planes, and share the work out over the OpenMP threads.
#include "layers/conv/kernels/conv_direct.h"

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/kernels/simd.h"

namespace sb::kernels {
namespace {

// Loops over fewer floats than this run on one thread.
constexpr int64_t kParallelMin = int64_t(1) << 15;
// Below this many multiply-adds (about 25 us of one thread's work) a kernel call runs on one
// thread: on 2 threads, layers of base width 8 at 16x16 ran up to 1.6x slower with 1 << 16.
constexpr int64_t kParallelMinMacs = int64_t(1) << 21;
// Weight packings of fewer floats than this run on one thread.
constexpr int64_t kPackParallelMin = int64_t(1) << 13;

// The kernels for this level and a row `width` pixels wide: the widest vector that a row fills
// at least half of.
const DirectKernels& pick(int64_t width) {
  switch (simd_level()) {
#if defined(__x86_64__) || defined(__i386__)
    case Simd::avx512:
      if (width > 8) return direct_kernels_avx512_v16();
      [[fallthrough]];
    case Simd::avx2:
      return width > 4 ? direct_kernels_avx2_v8() : direct_kernels_avx2_v4();
#endif
    default:
      return direct_kernels_base_v4();
  }
}

// wpack (ceil(C_out / cob), C_in, T, cob) = get(co, ci, t), zero for co >= C_out: the cob
// weights one (ci, tap) multiplies are contiguous, broadcast one by one.
template <class Get>
std::vector<float> pack(int cob, int64_t C_out, int64_t C_in, int T, const Get& get) {
  const int64_t blocks = (C_out + cob - 1) / cob;
  std::vector<float> p(blocks * C_in * T * cob, 0.f);
  // On the threads when large (a 64 x 64 3x3 weight, 37K floats of strided reads, took the main
  // thread about 20 us alone, three times per layer and step).
#pragma omp parallel for schedule(static) if (!omp_in_parallel() && blocks > 1 && int64_t(p.size()) >= kPackParallelMin)
  for (int64_t bc = 0; bc < blocks * C_in; ++bc) {
    const int64_t b = bc / C_in, ci = bc % C_in;
    const int cvalid = int(std::min<int64_t>(cob, C_out - b * cob));
    float* dst = p.data() + (b * C_in + ci) * T * cob;
    // Taps innermost: the 3x3 weights' 9 taps of one (co, ci) are contiguous (reversed for the
    // input gradient); with channels innermost every read was a stride of C_in * 9 floats.
    for (int c = 0; c < cvalid; ++c)
      for (int t = 0; t < T; ++t) dst[t * cob + c] = get(b * cob + c, ci, t);
  }
  return p;
}

// Scratch buffers kept between calls (per calling thread; one per slot, as a call may use several
// at once): fresh allocations of a few MB each call cost page faults worth a quarter of a small
// layer's time. Aligned to 64 bytes (the widest vector). Contents are not initialized: callers
// write every float they read.
float* scratch(int slot, size_t n) {
  thread_local std::vector<float> bufs[2];
  std::vector<float>& b = bufs[slot];
  if (b.size() < n + 16) b.resize(n + 16);
  const uintptr_t p = reinterpret_cast<uintptr_t>(b.data());
  return b.data() + ((64 - p % 64) % 64) / sizeof(float);
}

// dst (planes, H + 2, W + 2) = src (planes, H, W) with a border of one zero.
void pad1(const float* src, float* dst, int64_t planes, int64_t H, int64_t W) {
  const int64_t Wp = W + 2, Hp = H + 2;
#pragma omp parallel for schedule(static) if (!omp_in_parallel() && planes * Hp * Wp > kParallelMin)
  for (int64_t p = 0; p < planes; ++p) {
    float* d = dst + p * Hp * Wp;
    const float* s = src + p * H * W;
    std::fill(d, d + Wp, 0.f);
    for (int64_t h = 0; h < H; ++h) {
      float* row = d + (h + 1) * Wp;
      row[0] = 0.f;
      std::copy(s + h * W, s + (h + 1) * W, row + 1);
      row[W + 1] = 0.f;
    }
    std::fill(d + (H + 1) * Wp, d + Hp * Wp, 0.f);
  }
}

// dyt (N, H W, CoP) = gy (N, C, H W) transposed, zero in channels [C, CoP): the 3x3 weight
// gradient's operand (see wgrad9_unit). Row bands of 256 positions share the threads.
void transpose_dy(const DirectKernels& k, const float* gy, float* dyt, int64_t N, int64_t C, int64_t CoP, int64_t HW) {
  const int64_t band = 256, bands = (HW + band - 1) / band;
#pragma omp parallel for schedule(static) if (!omp_in_parallel() && N * CoP * HW > kParallelMin)
  for (int64_t nb = 0; nb < N * bands; ++nb) {
    const int64_t n = nb / bands, p0 = (nb % bands) * band, len = std::min(HW - p0, band);
    k.transpose(gy + n * C * HW + p0, C, HW, len, dyt + (n * HW + p0) * CoP, CoP);
  }
}

// xt (N, (H + 2) (W + 2), CiP) = x (N, C, H, W) padded by one and transposed, zero in the border
// and in channels [C, CiP): the narrow-output 3x3 weight gradient's operand (see wgrad9t_unit).
void transpose_x_padded(const DirectKernels& k, const float* x, float* xt, int64_t N, int64_t C, int64_t CiP,
                        int64_t H, int64_t W) {
  const int64_t Hp = H + 2, Wp = W + 2;
#pragma omp parallel for schedule(static) if (!omp_in_parallel() && N * CiP * Hp * Wp > kParallelMin)
  for (int64_t nr = 0; nr < N * Hp; ++nr) {
    const int64_t n = nr / Hp, r = nr % Hp;
    float* d = xt + nr * Wp * CiP;  // padded row r of sample n, (Wp, CiP)
    if (r == 0 || r == Hp - 1) {
      std::fill(d, d + Wp * CiP, 0.f);
      continue;
    }
    std::fill(d, d + CiP, 0.f);
    std::fill(d + (Wp - 1) * CiP, d + Wp * CiP, 0.f);
    k.transpose(x + n * C * H * W + (r - 1) * W, C, H * W, W, d + CiP, CiP);
  }
}

// The 3x3 weight-gradient kernel of table k for this shape on `threads` threads: the least
// estimated time, counting multiply-adds and (at 1.5x) loads per position, padded channels,
// threads left idle by the last round of units, and (1.5x) a lane operand (dyt or xt) larger
// than 2 MiB, which the units then read from beyond L2 (64 -> 32 channels at 32 x 32, batch 8:
// 96 GFLOP/s with input channels in the lanes, 148 with output channels); ties go to the first
// in the table, input channels in the lanes (x transposed, against x padded and dY transposed;
// 32 -> 32 at 32 x 32, batch 8: 155 GFLOP/s against 142). Every kernel adds the
// same products in the same order, so the choice (which depends on the thread count) does not
// change a bit of the result.
const Wgrad9Kernel& pick_wgrad9(const DirectKernels& k, int64_t N, int64_t C_in, int64_t C_out, int64_t H, int64_t W,
                                int threads) {
  const Wgrad9Kernel* best = nullptr;
  double best_cost = 0;
  for (const Wgrad9Kernel& c : k.wgrad9) {
    const int64_t lane_ch = c.ci_lanes ? C_in : C_out, other = c.ci_lanes ? C_out : C_in;
    const int64_t per = int64_t(c.vecs) * k.lanes, lane_pad = (lane_ch + per - 1) / per * per;
    const int64_t units = lane_pad / per * ((other + c.blk - 1) / c.blk) * 3;
    const double fmas = 3.0 * c.vecs * c.blk;
    const double loads = c.ci_lanes ? 3.0 * c.vecs + c.blk : c.vecs + 3.0 * c.blk;
    const int64_t rounds = (units + threads - 1) / threads;
    const int64_t lane_bytes = N * (c.ci_lanes ? (H + 2) * (W + 2) : H * W) * lane_pad * int64_t(sizeof(float));
    const double cost = double(rounds) * std::max(fmas, 1.5 * loads) * (lane_bytes > (int64_t(2) << 20) ? 1.5 : 1.0);
    if (!best || cost < best_cost) best = &c, best_cost = cost;
  }
  return *best;
}

// 1x1 products read and write whole planes, whose image rows are contiguous: k image rows make
// one kernel row of k W pixels. k is the largest divisor of H with k W <= 256, so narrow planes
// fill wide vectors and the rows still split over threads.
int64_t fold(int64_t H, int64_t W) {
  int64_t k = 1;
  for (int64_t d = 1; d <= H; ++d)
    if (H % d == 0 && d * W <= 256) k = d;
  return k;
}

// Runs the forward kernel over every (sample, output-channel block, row band) unit. Each output
// value is computed by one unit in a fixed order whatever the thread count or banding. Static
// schedule: each thread takes a contiguous range of units, so mostly its own samples, which stay
// in its own L2 (6% faster unet-s steps at batch 8 on 2 threads than dynamic, 1).
void run_fwd(const DirectKernels& k, bool nine, const FwdArgs& a, int64_t N, int64_t rows) {
  const int64_t blocks = (a.C_out + k.cob_fwd - 1) / k.cob_fwd;
  const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  const int64_t macs = N * a.C_out * a.C_in * rows * a.width * (nine ? 9 : 1);
  const bool par = threads > 1 && macs >= kParallelMinMacs;
  // Enough units for the threads to share evenly (4 each), bands of at least a tile's vectors.
  int64_t bands = par ? std::max<int64_t>(1, (4 * threads + N * blocks - 1) / (N * blocks)) : 1;
  const int64_t per_row = (a.width + k.lanes - 1) / k.lanes;
  const int64_t min_rows = std::max<int64_t>(1, (3 + per_row - 1) / per_row);
  bands = std::clamp<int64_t>(bands, 1, std::max<int64_t>(1, rows / min_rows));
  const int64_t units = N * blocks * bands;
  auto fn = nine ? k.fwd9 : k.fwd1;
#pragma omp parallel for schedule(static) if (par && units > 1)
  for (int64_t u = 0; u < units; ++u) {
    const int64_t band = u % bands, nb = u / bands, blk = nb % blocks, n = nb / blocks;
    fn(a, n, blk, rows * band / bands, rows * (band + 1) / bands);
  }
}

// Runs the 1x1 weight-gradient kernel over every (A-channel block, 3 B channels) unit; each sums over
// all samples and positions itself, so no partial sums depend on the thread count.
void run_wgrad1(const DirectKernels& k, const WgradArgs& a) {
  const int64_t blocks = (a.CA + k.cob_wgrad - 1) / k.cob_wgrad;
  const int cib = 3;
  const int64_t bblocks = (a.CB + cib - 1) / cib;
  const int64_t units = blocks * bblocks;
  const int64_t macs = a.N * a.CA * a.CB * a.rows * a.width;
  const bool par = !omp_in_parallel() && omp_get_max_threads() > 1 && macs >= kParallelMinMacs;
#pragma omp parallel for schedule(static) if (par && units > 1)
  for (int64_t u = 0; u < units; ++u) k.wgrad1(a, u / bblocks, (u % bblocks) * cib);
}


// out (N, Co, H, W) = bias + sum_ci weight(co, ci) in (N, Ci, H, W): every 1x1 product below (the
// 1x1 conv's forward and input gradient, the transposed 2x2's forward and input gradient).
template <class Get>
void pointwise(const float* in, int64_t Ci, const Get& weight, const float* bias, float* out, int64_t Co,
               int64_t N, int64_t H, int64_t W) {
  const int64_t R = fold(H, W) * W, HW = H * W;  // R: pixels per kernel row
  const DirectKernels& k = pick(R);
  std::vector<float> wp = pack(k.cob_fwd, Co, Ci, 1, [&](int64_t co, int64_t ci, int) { return weight(co, ci); });
  FwdArgs a{in, Ci * HW, HW, R, wp.data(), bias, out, Co * HW, HW, R, Ci, Co, R};
  run_fwd(k, false, a, N, HW / R);
}

// g (CA, CB) = sum_n sum_p A[n][a][p] B[n][b][p] for A (N, CA, HW), B (N, CB, HW): the 1x1 weight
// gradients of both ops.
void pointwise_wgrad(const float* A, int64_t CA, const float* B, int64_t CB, float* g, int64_t N, int64_t HW) {
  const DirectKernels& k = pick(HW);
  WgradArgs a{A, CA * HW, HW, HW, B, CB * HW, HW, HW, N, 1, HW, CA, CB, g};
  run_wgrad1(k, a);
}


// ---- Winograd F(4, 3) along the rows, for 3x3 layers with enough channels ----
// A 3x3 correlation is 3 tap rows of 1-D correlations along W. Each is done by Winograd's minimal
// filtering F(4, 3) (Lavin & Gray 2016, interpolation points 0, 1, -1, 2, -2 and infinity): a tile
// of 4 output columns reads 6 input columns d0..d5, transformed into 6 values V_f = (B^T d)_f;
// the weights' rows g0..g2 into U_f = (G g)_f. For each f the products are then a 3-tap vertical
// correlation over the channels, M_f = sum_ci sum_kr U_f[kr] V_f[row + kr], run by the direct
// forward kernel (fwd3); the output transform combines M_0..M_5 into the 4 columns, A^T M. That is
// 6 x 3 = 18 multiply-adds per 4 outputs and input channel, against 36: half the arithmetic of the
// direct kernel, at about twice its rounding error (sums of 6 instead of 3 terms per tap row,
// with coefficients up to 8). An inf or NaN would spread over whole tiles (4 columns) instead of
// the 3x3 windows that hold it, so a call whose input or weights hold one (or overflow in a
// transform) is left to the direct kernel, whose pattern of non-finite outputs is PyTorch's.

constexpr int kTile = 4;  // output columns per tile
constexpr int kFreq = 6;  // transformed values per tile
// Floats added between two of the 6 planes of a transform: planes of 16-tile rows are often a
// multiple of 4 KiB long, and then the 6 stores of a tile (and the loads after them) all fell into
// one L1 set and aliased; 16 floats (a cache line) apart they do not.
constexpr int64_t kSkew = 16;

// Rows per band so that bands of rows + 4 rows of row_bytes each stay within budget (at least 1),
// spread evenly over the H rows. (A band's V holds its rows, the row above and below that it
// reads, and the zero row that wino_in writes on either side of those: band + 4 rows.)
int64_t band_rows_within(int64_t H, int64_t row_bytes, int64_t budget) {
  const int64_t fit = std::max<int64_t>(1, budget / std::max<int64_t>(1, row_bytes) - 4);
  const int64_t bands = (H + fit - 1) / fit;
  return (H + bands - 1) / bands;
}

// Output rows [r0, r1) of a band read image rows [a, b]: one above and one below where the image
// has them. wino_in writes them to V's rows 1 .. b - a + 1 (row 0 and the row after them zero), so
// image row r0 - 1 is V's row `first` (0 at the image's top edge, where it is the zero row).
struct Band {
  int64_t r0, r1, a, b, first;
};
Band band_at(int64_t r0, int64_t band_rows, int64_t H) {
  const int64_t r1 = std::min(H, r0 + band_rows), a = std::max<int64_t>(r0 - 1, 0);
  return {r0, r1, a, std::min(r1, H - 1), r0 - a};
}

// Samples per chunk of a weight gradient summed in chunks: enough for `at_least` positions
// (`per_sample` a sample), at least 1 and at most N. Set by the shape alone, never the threads.
int64_t chunk_samples(int64_t per_sample, int64_t at_least, int64_t N) {
  return std::clamp<int64_t>((at_least + per_sample - 1) / per_sample, 1, N);
}

// The layers Winograd pays on: 3x3 stride 1 with at least 8 channels in and out (fewer leave the
// transforms a large share of the time; the first layer has 3) and rows of at least 8 columns.
// SMALLBATCH_WINOGRAD=off keeps every layer on the direct kernel (core/kernels/simd.h).
bool winograd_pays(int64_t C_in, int64_t C_out, int64_t W) {
  return C_in >= 8 && C_out >= 8 && W >= 8 && winograd_enabled();
}

// out (N, Co, H, W) = bias + the 3x3 pad-1 correlation of in (N, Ci, H, W) with weights
// weight(o, i, kr, kc), by F(4, 3) along rows. Returns false when the direct kernel must run
// instead (a non-finite value in the weights, the input, or an output that overflowed where the
// direct sums need not); out may then hold partial results.
template <class Get>
bool winograd3x3(const float* in, int64_t Ci, const Get& weight, const float* bias, float* out, int64_t Co,
                 int64_t N, int64_t H, int64_t W) {
  const int64_t TW = (W + kTile - 1) / kTile;
  // The products run over a whole plane as one row (V has no padding columns, so the taps are
  // whole rows of tiles apart), in tiles of 3 vectors, or of 2 when that wastes fewer (a 16 x 16
  // plane is 4 vectors of 16 tiles: 2 + 2, where 3 + 3 would compute 2 for nothing).
  const int64_t width = H * TW;
  const DirectKernels& k = pick(width);
  const int64_t vecs = (width + k.lanes - 1) / k.lanes;
  const auto fwd3 = (vecs + 1) / 2 * 2 < (vecs + 2) / 3 * 3 ? k.fwd3_2 : k.fwd3;
  const int cob = k.cob_fwd;
  const int64_t blocks = (Co + cob - 1) / cob;
  // U_f = G g of each weight row g = weight(o, i, kr, 0..2), in double, rounded, packed for fwd3
  // as pack() does: wp + f ws holds (blocks, Ci, 3 taps, cob), zero for o >= Co.
  const int64_t ws = blocks * Ci * 3 * cob;
  const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  const bool par = threads > 1 && N * Co * Ci * H * W * 9 >= kParallelMinMacs;
  // With at least 2 samples a thread (and as many for each), each thread takes its own samples;
  // otherwise the threads share each sample's transforms by channels and its products by units
  // (keeping one sample's planes, not one per thread: at batch 2 a thread each needed 0.5 MB more
  // at the peak than the direct kernel's padded copy).
  const bool per_sample = par && N % threads == 0;
  // Planes go in bands of rows (each read with a row above and below) when their transformed
  // values would pass a budget: per sample, 512 KiB of V a thread (32 -> 16 at 64 x 64: 2 bands),
  // so a thread's share stays near its L2 and the peak below the direct kernel's padded copy;
  // otherwise 4 MiB of V and M (a 1024 x 1024 plane of 64 -> 64 channels: bands of 5 rows, not
  // 800 MB at once).
  const int64_t band_rows =
      per_sample ? band_rows_within(H, kFreq * Ci * TW * 4, 512 << 10) : band_rows_within(H, kFreq * (Ci + Co) * TW * 4, 4 << 20);
  const int64_t vplane = (band_rows + 4) * TW, mplane = band_rows * TW;  // V: see band_rows_within
  const int64_t chunk = per_sample ? threads : 1;
  // Floats between two f planes of V and M (per sample, M holds one block of output channels).
  // (Each plus a skew: see kSkew.)
  const int64_t vfs = chunk * Ci * vplane + kSkew, mfs = (per_sample ? chunk * cob * mplane : chunk * Co * mplane) + kSkew;
  // V, then M and the packed weights after it (one buffer less to keep at its peak size).
  float* V = scratch(0, kFreq * vfs);
  float* M = scratch(1, kFreq * mfs + kFreq * ws + 16);
  float* wp = M + (kFreq * mfs + 15) / 16 * 16;
  float wbad = 0.f;
#pragma omp parallel for schedule(static) reduction(+ : wbad) if (!omp_in_parallel() && kFreq * ws >= kPackParallelMin)
  for (int64_t bi = 0; bi < blocks * Ci; ++bi) {
    const int64_t b = bi / Ci, i = bi % Ci;
    for (int kr = 0; kr < 3; ++kr)
      for (int c = 0; c < cob; ++c) {
        const int64_t o = b * cob + c, at = (bi * 3 + kr) * cob + c;
        if (o >= Co) {
          for (int f = 0; f < kFreq; ++f) wp[f * ws + at] = 0.f;
          continue;
        }
        // In double, by reciprocals: the same floats as dividing but for double rounding's rare
        // ties, and 5 divisions a row were 7% of a batch-2 step, all on the calling thread.
        const double g0 = weight(o, i, kr, 0), g1 = weight(o, i, kr, 1), g2 = weight(o, i, kr, 2);
        const double u[kFreq] = {g0 * 0.25, -(g0 + g1 + g2) * (1.0 / 6), -(g0 - g1 + g2) * (1.0 / 6),
                                 (g0 + 2 * g1 + 4 * g2) * (1.0 / 24), (g0 - 2 * g1 + 4 * g2) * (1.0 / 24), g2};
        for (int f = 0; f < kFreq; ++f) {
          wp[f * ws + at] = static_cast<float>(u[f]);
          wbad += wp[f * ws + at] * 0.f;
        }
      }
  }
  if (wbad != wbad) return false;

  // The transforms' vectors: tiles of a row, or of the whole plane when rows hold whole tiles.
  const DirectKernels& kt = pick(W % kTile == 0 ? H * TW : TW);
  if (per_sample) {
    // As many samples for each thread: each takes its own through the three stages in its own
    // part of the calling thread's scratch (the same values as below, so the same bits), with no
    // barrier between the stages, one block of output channels at a time. (Scratch of the
    // workers' own would add theirs to the peak.)
    float bad = 0.f;
#pragma omp parallel for schedule(static) reduction(+ : bad) num_threads(threads)
    for (int64_t n = 0; n < N; ++n) {
      const int64_t t = omp_get_thread_num();
      float* Vt = V + t * Ci * vplane;  // this thread's sample, f planes vfs apart as below
      float* Mt = M + t * cob * mplane;
      for (int64_t r0 = 0; r0 < H; r0 += band_rows) {
        const Band bd = band_at(r0, band_rows, H);
        const int64_t bw = (bd.r1 - r0) * TW;
        float probe = 0.f;
        for (int64_t c = 0; c < Ci; ++c)
          probe += kt.wino_in(in + ((n * Ci + c) * H + bd.a) * W, 1, bd.b - bd.a + 1, W, TW, Vt + c * vplane, vfs, vplane);
        bad += probe;
        if (probe != probe) break;
        for (int64_t blk = 0; blk < blocks; ++blk) {
          const int64_t co0 = blk * cob, cn = std::min<int64_t>(cob, Co - co0);
          for (int f = 0; f < kFreq; ++f) {
            FwdArgs args{Vt + f * vfs + bd.first * TW, 0, vplane, bw, wp + f * ws + blk * Ci * 3 * cob, nullptr,
                         Mt + f * mfs, 0, mplane, bw, Ci, cn, bw, TW};
            fwd3(args, 0, 0, 0, 1);
          }
          for (int64_t c = 0; c < cn; ++c)
            bad += kt.wino_out(Mt + c * mplane, mfs, mplane, bias ? bias + co0 + c : nullptr,
                               out + ((n * Co + co0 + c) * H + r0) * W, 1, bd.r1 - r0, W, TW);
        }
      }
    }
    return bad == bad;
  }
  // One sample at a time, the threads sharing its transforms by channels and its products by
  // units of (f, output-channel block).
  for (int64_t n = 0; n < N; ++n)
    for (int64_t r0 = 0; r0 < H; r0 += band_rows) {
      const Band bd = band_at(r0, band_rows, H);
      const int64_t bw = (bd.r1 - r0) * TW;
      float bad = 0.f;
#pragma omp parallel for schedule(static) reduction(+ : bad) if (par)
      for (int64_t c = 0; c < Ci; ++c)
        bad += kt.wino_in(in + ((n * Ci + c) * H + bd.a) * W, 1, bd.b - bd.a + 1, W, TW, V + c * vplane, vfs, vplane);
      if (bad != bad) return false;
      const int64_t units = kFreq * blocks;
#pragma omp parallel for schedule(static) if (par && units > 1)
      for (int64_t u = 0; u < units; ++u) {
        const int64_t blk = u % blocks, f = u / blocks;
        FwdArgs args{V + f * vfs + bd.first * TW, 0, vplane, bw, wp + f * ws, nullptr, M + f * mfs, 0, mplane, bw, Ci,
                     Co, bw, TW};
        fwd3(args, 0, blk, 0, 1);
      }
#pragma omp parallel for schedule(static) reduction(+ : bad) if (par)
      for (int64_t c = 0; c < Co; ++c)
        bad += kt.wino_out(M + c * mplane, mfs, mplane, bias ? bias + c : nullptr, out + ((n * Co + c) * H + r0) * W,
                           1, bd.r1 - r0, W, TW);
      if (bad != bad) return false;
    }
  return true;
}

// The 3x3 weight gradient by F(4, 3) along rows, the transpose of the forward: with Y_f = (A dy)_f
// of dY's tiles (4 columns each) and V_f the input transform of x's (as the forward's),
//   S_f[co][ci][kr] = sum over samples, rows and tiles of Y_f[co] V_f[ci] at tap row kr,
//   gw[co][ci][kr][k] = sum_f G[f][k] S_f[co][ci][kr],
// 18 multiply-adds per 4 columns (against 36). Samples go in chunks whose size depends on the
// shape, not the thread count: a chunk's partial sums P (each unit of (f, channel blocks) summing
// every position of a band itself, the bands added in order) are added to S chunk by chunk in
// order, so the bits do not depend on the threads or on which path runs. Returns false (gw then
// partly written or not at all) when a transformed value or a gradient is not finite: the direct
// kernel then writes gw with the reference's pattern of non-finite values.
bool winograd_wgrad(const float* x, const float* gy, float* gw, int64_t N, int64_t Ci, int64_t Co, int64_t H,
                    int64_t W) {
  const int64_t TW = (W + kTile - 1) / kTile;
  // Chunks of at least 512 positions (1 sample at 64 x 64, 2 at 32 x 32), so a unit's lane sums
  // and its share of the accumulation are spread over enough products while the chunk's planes
  // stay small (2 threads' chunks of 2 take the scratch one chunk of 4 took: peak RSS +0.4 MB at
  // batch 8, where 4 a thread cost 3 MB); a sample's plane in bands of rows past 4 MiB of V and Y.
  // Set by the shape alone.
  const int64_t chunk = chunk_samples(H * TW, 512, N);
  const int64_t chunks = (N + chunk - 1) / chunk;
  const int64_t band_rows = chunk > 1 ? H : band_rows_within(H, kFreq * (Ci + Co) * TW * 4, 4 << 20);
  const int64_t L = band_rows * TW, vplane = (band_rows + 4) * TW;  // V: see band_rows_within
  const DirectKernels& kt = pick(W % kTile == 0 ? H * TW : TW);
  const DirectKernels& kd = pick(L);
  const int64_t vfs = chunk * Ci * vplane + kSkew, yfs = chunk * Co * L + kSkew;  // see kSkew
  const int64_t cob = kd.wino_cob, cib = kd.wino_cib;
  const int64_t coblocks = (Co + cob - 1) / cob, ciblocks = (Ci + cib - 1) / cib;
  const int64_t units = kFreq * coblocks * ciblocks;
  const int64_t sums = kFreq * 3 * Co * Ci;  // S and each P: [f][kr][co][ci]
  const bool par = !omp_in_parallel() && omp_get_max_threads() > 1 && N * Co * Ci * H * W * 9 >= kParallelMinMacs;
  const int threads = par ? omp_get_max_threads() : 1;
  // With a chunk for every thread, each thread takes whole chunks (transforms and products) in its
  // own part of the calling thread's scratch, with no barrier between them, and keeps each chunk's
  // P until all are done (up to 4 MiB of them); otherwise the threads share each band's transforms
  // by planes and its products by units (two barriers a band: 16 a layer at 64 x 64, batch 8).
  // Only while the other threads' scratch is under half of x and dY: at batch 2 it raised the
  // step's peak RSS by 1 MB (at batch 8, by 0.4 MB).
  const int64_t chunk_bytes = (kFreq * (vfs + yfs)) * 4, io_bytes = N * (Ci + Co) * H * W * 4;
  const bool own_chunks = threads > 1 && chunks >= threads && chunks * sums * 4 <= (int64_t(4) << 20) &&
                          (threads - 1) * chunk_bytes <= io_bytes / 2;
  const int64_t slices = own_chunks ? threads : 1;
  float* V = scratch(0, slices * kFreq * vfs);
  float* Y = scratch(1, slices * kFreq * yfs);
  std::vector<float> P((own_chunks ? chunks : 1) * sums);

  // Rows [r0, r1) of chunk c's samples: dY's as they are, x's with a row above and below. Item sc
  // of nc (Ci + Co) transforms one plane of one sample into the slice Vt, Yt.
  auto transform = [&](int64_t c, const Band& bd, int64_t sc, float* Vt, float* Yt) {
    const int64_t n0 = c * chunk, s = sc / (Ci + Co), ch = sc % (Ci + Co), bl = (bd.r1 - bd.r0) * TW;
    if (ch < Ci)
      return kt.wino_in(x + (((n0 + s) * Ci + ch) * H + bd.a) * W, 1, bd.b - bd.a + 1, W, TW,
                        Vt + (s * Ci + ch) * vplane, vfs, vplane);
    return kt.wino_dy(gy + (((n0 + s) * Co + ch - Ci) * H + bd.r0) * W, 1, bd.r1 - bd.r0, W, TW,
                      Yt + (s * Co + ch - Ci) * bl, yfs, bl);
  };
  // Unit u's sums over the band's positions, added to the chunk's partial sums Pc.
  auto product = [&](int64_t nc, const Band& bd, int64_t u, const float* Vt, const float* Yt, float* Pc) {
    const int64_t f = u / (coblocks * ciblocks), cb = (u / ciblocks) % coblocks, ib = u % ciblocks;
    const int64_t bl = (bd.r1 - bd.r0) * TW;
    float part[3 * 4 * 4];  // (3, cob, cib): cob, cib <= 4
    WinoWgradArgs args{Yt + f * yfs, Co * bl, Vt + f * vfs + bd.first * TW, Ci * vplane, vplane, bl, TW, nc, Co, Ci};
    kd.wino_wgrad(args, cb * cob, ib * cib, part);
    for (int64_t kr = 0; kr < 3; ++kr)
      for (int64_t c = 0; c < cob && cb * cob + c < Co; ++c)
        for (int64_t i = 0; i < cib && ib * cib + i < Ci; ++i)
          Pc[((f * 3 + kr) * Co + cb * cob + c) * Ci + ib * cib + i] += part[(kr * cob + c) * cib + i];
  };

  std::vector<float> S(sums, 0.f);
  if (own_chunks) {
    float bad = 0.f;
#pragma omp parallel for schedule(static) reduction(+ : bad) num_threads(threads)
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t t = omp_get_thread_num(), nc = std::min(chunk, N - c * chunk);
      float* Vt = V + t * kFreq * vfs;
      float* Yt = Y + t * kFreq * yfs;
      for (int64_t r0 = 0; r0 < H; r0 += band_rows) {
        const Band bd = band_at(r0, band_rows, H);
        float probe = 0.f;
        for (int64_t sc = 0; sc < nc * (Ci + Co); ++sc) probe += transform(c, bd, sc, Vt, Yt);
        bad += probe;
        if (probe != probe) break;
        for (int64_t u = 0; u < units; ++u) product(nc, bd, u, Vt, Yt, P.data() + c * sums);
      }
    }
    if (bad != bad) return false;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t i = 0; i < sums; ++i)
      for (int64_t c = 0; c < chunks; ++c) S[i] += P[c * sums + i];
  } else {
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t nc = std::min(chunk, N - c * chunk);
      std::fill(P.begin(), P.end(), 0.f);
      for (int64_t r0 = 0; r0 < H; r0 += band_rows) {
        const Band bd = band_at(r0, band_rows, H);
        float bad = 0.f;
#pragma omp parallel for schedule(static) reduction(+ : bad) if (par)
        for (int64_t sc = 0; sc < nc * (Ci + Co); ++sc) bad += transform(c, bd, sc, V, Y);
        if (bad != bad) return false;
#pragma omp parallel for schedule(static) if (par && units > 1)
        for (int64_t u = 0; u < units; ++u) product(nc, bd, u, V, Y, P.data());
      }
      for (int64_t i = 0; i < sums; ++i) S[i] += P[i];
    }
  }
  // A non-finite sum reaches the gradients (g_0 reads S_0 .. S_4, g_2 S_1 .. S_5), so their check
  // below covers it.
  auto at = [&](int f, int64_t kr, int64_t co, int64_t ci) -> double { return S[((f * 3 + kr) * Co + co) * Ci + ci]; };
  float gbad = 0.f;
#pragma omp parallel for schedule(static) reduction(+ : gbad) if (par)
  for (int64_t co = 0; co < Co; ++co)
    for (int64_t ci = 0; ci < Ci; ++ci)
      for (int64_t kr = 0; kr < 3; ++kr) {
        const double s0 = at(0, kr, co, ci), s1 = at(1, kr, co, ci), s2 = at(2, kr, co, ci), s3 = at(3, kr, co, ci),
                     s4 = at(4, kr, co, ci), s5 = at(5, kr, co, ci);
        float* g = gw + ((co * Ci + ci) * 3 + kr) * 3;
        // By reciprocals, as the forward's weight transform.
        g[0] = static_cast<float>(s0 * 0.25 - (s1 + s2) * (1.0 / 6) + (s3 + s4) * (1.0 / 24));
        g[1] = static_cast<float>((s2 - s1) * (1.0 / 6) + (s3 - s4) * (1.0 / 12));
        g[2] = static_cast<float>(((s3 + s4) - (s1 + s2)) * (1.0 / 6) + s5);
        gbad += (g[0] + g[1] + g[2]) * 0.f;
      }
  return gbad == gbad;  // else gw is all written again by the direct kernel
}

}  // namespace

void conv3x3_forward(const float* x, const float* w, const float* bias, float* out, int64_t N, int64_t C_in,
                     int64_t C_out, int64_t H, int64_t W) {
  if (winograd_pays(C_in, C_out, W) &&
      winograd3x3(x, C_in, [&](int64_t co, int64_t ci, int i, int j) { return w[((co * C_in + ci) * 3 + i) * 3 + j]; },
                  bias, out, C_out, N, H, W))
    return;
  const DirectKernels& k = pick(W);
  const int64_t Hp = H + 2, Wp = W + 2;
  float* padded = scratch(0, N * C_in * Hp * Wp);  // (N, C_in, H + 2, W + 2)
  pad1(x, padded, N * C_in, H, W);
  // wpack[co][ci][t] = w[co][ci][t]
  std::vector<float> wp = pack(k.cob_fwd, C_out, C_in, 9, [&](int64_t co, int64_t ci, int t) {
    return w[(co * C_in + ci) * 9 + t];
  });
  FwdArgs a{padded, C_in * Hp * Wp, Hp * Wp, Wp, wp.data(), bias, out, C_out * H * W, H * W, W,
            C_in, C_out, W};
  run_fwd(k, true, a, N, H);
}

void conv3x3_backward(const float* x, const float* gy, const float* w, float* gx, float* gw, int64_t N,
                      int64_t C_in, int64_t C_out, int64_t H, int64_t W) {
  const int64_t Hp = H + 2, Wp = W + 2;
  // gx[n][ci] = the 3x3 pad-1 correlation of gy[n] with w[.][ci] turned by 180 degrees.
  if (gx && winograd_pays(C_out, C_in, W) &&
      winograd3x3(gy, C_out, [&](int64_t ci, int64_t co, int i, int j) { return w[((co * C_in + ci) * 3 + 2 - i) * 3 + 2 - j]; },
                  nullptr, gx, C_in, N, H, W))
    gx = nullptr;  // done
  if (gx) {
    // gy padded by one, (N, C_out, H + 2, W + 2).
    float* pdy = scratch(1, N * C_out * Hp * Wp);
    pad1(gy, pdy, N * C_out, H, W);
    // gx[n][ci][h][w] = sum_co sum_(i,j) gy[n][co][h + 1 - i][w + 1 - j] w[co][ci][i][j]
    //                 = sum_co sum_t gy_padded[n][co][h + t / 3][w + t % 3] w[co][ci][8 - t]
    const DirectKernels& k = pick(W);
    std::vector<float> wp = pack(k.cob_fwd, C_in, C_out, 9, [&](int64_t ci, int64_t co, int t) {
      return w[(co * C_in + ci) * 9 + (8 - t)];
    });
    FwdArgs a{pdy, C_out * Hp * Wp, Hp * Wp, Wp, wp.data(), nullptr, gx, C_in * H * W, H * W, W,
              C_out, C_in, W};
    run_fwd(k, true, a, N, H);
  }
  // The weight gradient's Winograd pays on planes of 32 x 32 and more; at 16 x 16 (64 tiles a
  // plane) its transforms and lane sums cost more than the products it saves (1.14 to 1.5x slower).
  if (gw && winograd_pays(C_in, C_out, W) && H * ((W + kTile - 1) / kTile) >= 256 &&
      winograd_wgrad(x, gy, gw, N, C_in, C_out, H, W))
    return;
  if (!gw) return;
  // gw[co][ci][i][j] = sum_n sum_(h,w) gy[n][co][h][w] x_padded[n][ci][h + i][w + j]: a GEMM over
  // positions, with output or input channels in the vector lanes (see wgrad9_unit, wgrad9t_unit).
  const DirectKernels& kw = pick(INT64_MAX);
  const int64_t HW = H * W;
  const bool par = !omp_in_parallel() && omp_get_max_threads() > 1 && N * C_out * C_in * HW * 9 >= kParallelMinMacs;
  const Wgrad9Kernel& kern = pick_wgrad9(kw, N, C_in, C_out, H, W, par ? omp_get_max_threads() : 1);
  const int64_t per = int64_t(kern.vecs) * kw.lanes;  // lane channels per unit
  Wgrad9Args a{nullptr, 0, nullptr, nullptr, 0, gy, N, C_in, C_out, H, W, gw};
  int64_t vblocks, oblocks;
  if (!kern.ci_lanes) {
    a.CoP = (C_out + per - 1) / per * per;
    float* padded = scratch(0, N * C_in * Hp * Wp);  // (N, C_in, H + 2, W + 2)
    pad1(x, padded, N * C_in, H, W);
    float* dyt = scratch(1, N * HW * a.CoP);  // (N, H W, CoP), where the input gradient's padded gy was
    transpose_dy(kw, gy, dyt, N, C_out, a.CoP, HW);
    a.xp = padded, a.dyt = dyt;
    vblocks = a.CoP / per, oblocks = (C_in + kern.blk - 1) / kern.blk;
  } else {
    a.CiP = (C_in + per - 1) / per * per;
    // (N, (H + 2) (W + 2), CiP), in the forward's buffer for the padded x (the same size when C_in
    // is a multiple of the lanes, so a step's scratch does not grow)
    float* xt = scratch(0, N * Hp * Wp * a.CiP);
    transpose_x_padded(kw, x, xt, N, C_in, a.CiP, H, W);
    a.xt = xt;
    vblocks = a.CiP / per, oblocks = (C_out + kern.blk - 1) / kern.blk;
  }
  const int64_t units = vblocks * oblocks * 3;
  // Few channels (the first layer's 3 inputs: 3 units, 2 rounds on 2 threads where 1 thread
  // takes 3) sum chunks of samples apart (at least 1024 positions each) into partial gradients,
  // added in chunk order. Set by the shape alone, so the bits are the same for any thread count
  // (the units are not: the kernel picked depends on the threads). SMALLBATCH_WINOGRAD=off keeps
  // the one sum of before, so that runs trained before Winograd are reproduced bit for bit.
  const int64_t per_chunk = chunk_samples(HW, 1024, N), chunks = (N + per_chunk - 1) / per_chunk;
  const int64_t split = C_in * C_out <= 256 && winograd_enabled() ? chunks : 1;
  const int64_t G = C_out * C_in * 9;
  std::vector<float> partial(split > 1 ? split * G : 0);
  auto unit = [&](int64_t u) {
    Wgrad9Args b = a;
    if (split > 1) {
      const int64_t n0 = u / units * per_chunk;
      b.N = std::min(per_chunk, N - n0);
      b.g = partial.data() + u / units * G;
      if (b.dyt) b.dyt += n0 * HW * a.CoP;
      if (b.xp) b.xp += n0 * C_in * Hp * Wp;
      if (b.xt) b.xt += n0 * Hp * Wp * a.CiP;
      b.gy += n0 * C_out * HW;
      u %= units;
    }
    kern.fn(b, u / (oblocks * 3), (u / 3) % oblocks, int(u % 3));
  };
#pragma omp parallel for schedule(static) if (par && units * split > 1)
  for (int64_t u = 0; u < units * split; ++u) unit(u);
  if (split > 1) {
    std::copy(partial.begin(), partial.begin() + G, gw);
    for (int64_t c = 1; c < split; ++c)
      for (int64_t i = 0; i < G; ++i) gw[i] += partial[c * G + i];
  }
}

void conv1x1_forward(const float* x, const float* w, const float* bias, float* out, int64_t N, int64_t C_in,
                     int64_t C_out, int64_t H, int64_t W) {
  pointwise(x, C_in, [&](int64_t co, int64_t ci) { return w[co * C_in + ci]; }, bias, out, C_out, N, H, W);
}

void conv1x1_backward(const float* x, const float* gy, const float* w, float* gx, float* gw, int64_t N,
                      int64_t C_in, int64_t C_out, int64_t H, int64_t W) {
  // gw[co][ci] = sum_n sum_p gy[n][co][p] x[n][ci][p]
  if (gw) pointwise_wgrad(gy, C_out, x, C_in, gw, N, H * W);
  // gx[n][ci] = sum_co w[co][ci] gy[n][co]
  if (gx) pointwise(gy, C_out, [&](int64_t ci, int64_t co) { return w[co * C_in + ci]; }, nullptr, gx, C_in, N, H, W);
}

// With C4 = 4 C_out and channel co' = co * 4 + (i * 2 + j), the transposed convolution's planes
// are 1x1 products on the input grid: s[n][co'][h][w] = out[n][co][2h + i][2w + j], which is
// exactly the weight's own layout w (C_in, C4).

void convt2x2_forward(const float* x, const float* w, const float* bias, float* out, int64_t N, int64_t C_in,
                      int64_t C_out, int64_t H, int64_t W) {
  const int64_t C4 = 4 * C_out, HW = H * W;
  std::vector<float> b4;
  if (bias) {
    b4.resize(C4);
    for (int64_t c = 0; c < C4; ++c) b4[c] = bias[c / 4];
  }
  float* s = scratch(0, N * C4 * HW);  // (N, C4, H, W)
  pointwise(x, C_in, [&](int64_t c4, int64_t ci) { return w[ci * C4 + c4]; }, bias ? b4.data() : nullptr, s, C4, N,
            H, W);
  // out[n][co][2h + i][2w + j] = s[n][co * 4 + i * 2 + j][h][w]
  const int64_t planes = N * C_out, Wo = 2 * W;
#pragma omp parallel for schedule(static) if (!omp_in_parallel() && planes * 4 * HW > kParallelMin)
  for (int64_t p = 0; p < planes; ++p) {
    const float* sp = s + p * 4 * HW;
    float* op = out + p * 4 * HW;
    for (int64_t h = 0; h < H; ++h)
      for (int i = 0; i < 2; ++i) {
        float* row = op + (2 * h + i) * Wo;
        const float* s0 = sp + (i * 2) * HW + h * W;
        const float* s1 = sp + (i * 2 + 1) * HW + h * W;
        for (int64_t ww = 0; ww < W; ++ww) {
          row[2 * ww] = s0[ww];
          row[2 * ww + 1] = s1[ww];
        }
      }
  }
}

namespace {
// d (N, C4, H, W) (scratch slot 0) from gy (N, C_out, 2H, 2W): d[n][co * 4 + i * 2 + j][h][w] = gy[n][co][2h + i][2w + j].
float* deinterleave(const float* gy, int64_t N, int64_t C_out, int64_t H, int64_t W) {
  const int64_t HW = H * W, planes = N * C_out, Wo = 2 * W;
  float* d = scratch(0, planes * 4 * HW);
#pragma omp parallel for schedule(static) if (!omp_in_parallel() && planes * 4 * HW > kParallelMin)
  for (int64_t p = 0; p < planes; ++p) {
    const float* gp = gy + p * 4 * HW;
    float* dp = d + p * 4 * HW;
    for (int64_t h = 0; h < H; ++h)
      for (int i = 0; i < 2; ++i) {
        const float* row = gp + (2 * h + i) * Wo;
        float* d0 = dp + (i * 2) * HW + h * W;
        float* d1 = dp + (i * 2 + 1) * HW + h * W;
        for (int64_t ww = 0; ww < W; ++ww) {
          d0[ww] = row[2 * ww];
          d1[ww] = row[2 * ww + 1];
        }
      }
  }
  return d;
}
}  // namespace

void convt2x2_backward(const float* x, const float* gy, const float* w, float* gx, float* gw, int64_t N,
                       int64_t C_in, int64_t C_out, int64_t H, int64_t W) {
  if (!gx && !gw) return;
  const float* d = deinterleave(gy, N, C_out, H, W);  // once for both gradients
  const int64_t C4 = 4 * C_out;
  // gw[ci][c4] = sum_n sum_p x[n][ci][p] d[n][c4][p]
  if (gw) pointwise_wgrad(x, C_in, d, C4, gw, N, H * W);
  // gx[n][ci] = sum_c4 w[ci][c4] d[n][c4]
  if (gx) pointwise(d, C4, [&](int64_t ci, int64_t c4) { return w[ci * C4 + c4]; }, nullptr, gx, C_in, N, H, W);
}

}  // namespace sb::kernels
