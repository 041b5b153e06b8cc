// The direct-convolution microkernels as templates on the vector width, included inside an
// anonymous namespace by conv_direct_{avx512,avx2,base}.cpp, each compiled for its own ISA.
// No std headers here (ODR: nothing with external linkage may be instantiated per ISA, or the
// linker could keep an AVX-512 copy for the whole program); the includer exports the tables.
#ifndef SB_CONV_DIRECT_IMPL_INCLUDED_IN_ANON_NAMESPACE
#error "include conv_direct_impl.h only inside an anonymous namespace after defining the guard"
#endif

#define SB_AI inline __attribute__((always_inline))

template <int V>
struct Vec {
  typedef float F __attribute__((vector_size(V * 4)));
  typedef int32_t I __attribute__((vector_size(V * 4)));
  // The same vector for unaligned loads and stores of float data.
  typedef float U __attribute__((vector_size(V * 4), aligned(4), may_alias));
  typedef int32_t IU __attribute__((vector_size(V * 4), aligned(4), may_alias));
};

template <int V>
SB_AI void vload(typename Vec<V>::F& v, const float* p) {
  v = *reinterpret_cast<const typename Vec<V>::U*>(p);
}
// All lanes s (s - 0 is s for every float, so this folds to one broadcast, unlike 0 + s).
template <int V>
SB_AI typename Vec<V>::F bcast(float s) {
  return s - typename Vec<V>::F{};
}
// The first n lanes from p, zero in the others; reads nothing past p + n.
template <int V>
SB_AI void vload_n(typename Vec<V>::F& v, const float* p, int n) {
  float tmp[V];
  for (int i = 0; i < V; ++i) tmp[i] = i < n ? p[i] : 0.f;
  __builtin_memcpy(&v, tmp, sizeof v);
}
// Keeps v in a register: without this GCC folds one load into each of the TW multiply-adds
// that use it, tripling the loads of the weight gradient's inner loop.
template <int V>
SB_AI void in_register(typename Vec<V>::F& v) {
#if defined(__x86_64__) && defined(__AVX512F__)
  __asm__("" : "+v"(v));
#elif defined(__x86_64__)
  __asm__("" : "+x"(v));
#else
  (void)v;
#endif
}
template <int V>
SB_AI void vstore(float* p, const typename Vec<V>::F& v) {
  *reinterpret_cast<typename Vec<V>::U*>(p) = v;
}
template <int V>
SB_AI void vstore_n(float* p, const typename Vec<V>::F& v, int n) {
  float tmp[V];
  __builtin_memcpy(tmp, &v, sizeof v);
  for (int i = 0; i < n; ++i) p[i] = tmp[i];
}

// The sum of v's lanes by pairwise halving (lane l += lane l + V/2, then V/4, ...): a fixed
// order, done on half-width vectors down to 4 lanes.
template <int V>
SB_AI float hsum(const typename Vec<V>::F& v) {
  if constexpr (V == 4) {
    return (v[0] + v[2]) + (v[1] + v[3]);
  } else {
    typename Vec<V / 2>::F lo, hi;
    __builtin_memcpy(&lo, &v, sizeof lo);
    __builtin_memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof lo, sizeof hi);
    return hsum<V / 2>(lo + hi);
  }
}

// One register tile of the forward: COB output channels x NV vectors; vector v reads the input
// planes at ioff[v] (+ tap offsets) and writes lanes[v] pixels at ooff[v]. FULL: every lanes[v]
// is V (full loads); otherwise partial vectors load only their lanes (no read past a row's end).
template <int V, int COB, int NV, int T, bool FULL>
SB_AI void fwd_tile(const sb::kernels::FwdArgs& a, const float* in, const float* wblk, const float* bias,
                    float* out, int cvalid, const int64_t* ioff, const int64_t* ooff, const int* lanes,
                    const int64_t* toff) {
  typedef typename Vec<V>::F F;
  F acc[COB][NV];
  for (int c = 0; c < COB; ++c) {
    const float b = bias && c < cvalid ? bias[c] : 0.f;
    for (int v = 0; v < NV; ++v) acc[c][v] = bcast<V>(b);
  }
  // acc += the weights of (ci, t) x the input vectors at q.
  auto step = [&](const float* q, const float* w) __attribute__((always_inline)) {
    F x[NV];
    for (int v = 0; v < NV; ++v) {
      if (FULL || lanes[v] == V)
        vload<V>(x[v], q + ioff[v]);
      else
        vload_n<V>(x[v], q + ioff[v], lanes[v]);
    }
    for (int c = 0; c < COB; ++c) {
      const F wc = bcast<V>(w[c]);
      for (int v = 0; v < NV; ++v) acc[c][v] += wc * x[v];
    }
  };
  if constexpr (T == 1) {
#pragma GCC unroll 4
    for (int64_t ci = 0; ci < a.C_in; ++ci) step(in + ci * a.in_cs, wblk + ci * COB);
  } else {
    for (int64_t ci = 0; ci < a.C_in; ++ci) {
      const float* ip = in + ci * a.in_cs;
      const float* wp = wblk + ci * T * COB;
#pragma GCC unroll 9
      for (int t = 0; t < T; ++t) step(ip + toff[t], wp + t * COB);
    }
  }
  for (int c = 0; c < cvalid; ++c) {
    float* op = out + c * a.out_cs;
    for (int v = 0; v < NV; ++v) {
      if (lanes[v] == V)
        vstore<V>(op + ooff[v], acc[c][v]);
      else if (lanes[v] > 0)
        vstore_n<V>(op + ooff[v], acc[c][v], lanes[v]);
    }
  }
}

// Output-channel block blk of sample n over rows [r0, r1): the rows' vectors are taken NV at a
// time (a tile may span rows when rows are narrow); a short last tile repeats a slot with 0 lanes.
template <int V, int COB, int NV, int T>
void fwd_rows(const sb::kernels::FwdArgs& a, int64_t n, int64_t blk, int64_t r0, int64_t r1) {
  int64_t toff[T];
  for (int t = 0; t < T; ++t) toff[t] = T == 1 ? 0 : T == 3 ? t * a.tap_rs : (t / 3) * a.in_rs + t % 3;
  const float* in = a.in + n * a.in_ns;
  const float* wblk = a.wpack + blk * a.C_in * T * COB;
  const int64_t co0 = blk * COB;
  const float* bias = a.bias ? a.bias + co0 : nullptr;
  float* out = a.out + n * a.out_ns + co0 * a.out_cs;
  const int64_t left = a.C_out - co0;
  const int cvalid = left < COB ? int(left) : COB;
  const int64_t per_row = (a.width + V - 1) / V;
  const int64_t total = (r1 - r0) * per_row;
  for (int64_t s0 = 0; s0 < total; s0 += NV) {
    int64_t ioff[NV], ooff[NV];
    int lanes[NV];
    bool full = true;
    for (int v = 0; v < NV; ++v) {
      // A short last tile repeats its first slot, computed again but not stored.
      const int64_t s = s0 + v < total ? s0 + v : s0;
      const int64_t r = r0 + s / per_row, c = (s % per_row) * V;
      ioff[v] = r * a.in_rs + c;
      ooff[v] = r * a.out_rs + c;
      const int64_t rem = a.width - c;
      const int n = rem < V ? int(rem) : V;
      if (n != V) full = false;
      lanes[v] = s0 + v < total ? n : 0;
    }
    if (full)
      fwd_tile<V, COB, NV, T, true>(a, in, wblk, bias, out, cvalid, ioff, ooff, lanes, toff);
    else
      fwd_tile<V, COB, NV, T, false>(a, in, wblk, bias, out, cvalid, ioff, ooff, lanes, toff);
  }
}

// The 3x3 weight gradient as a GEMM over positions: for tap row i,
//   g[co][ci][i][j] = sum_n sum_(h,w) dyt[n][h W + w][co] xp[n][ci][h + i][w + j]
// over the real output positions only (so nothing outside the reference's sum is ever read into
// it: no masks, no wasted padded-width positions). dyt holds dY transposed, C_out padded with
// zeros to a multiple of V, so one aligned load gives V output channels of one position; x
// values are broadcast. Register tile: COV vectors of output channels x CIB input channels x the
// 3 taps of row i, all held for the whole sweep; per position COV vector loads and 3 CIB
// broadcasts feed 3 CIB COV multiply-adds. Every lane sums its positions in order (n, h, w):
// the result does not depend on how units are shared out.
template <int V, int COV, int CIB>
void wgrad9_unit(const sb::kernels::Wgrad9Args& a, int64_t cb, int64_t ib, int i) {  // vb = cb, ob = ib
  typedef typename Vec<V>::F F;
  const int64_t co0 = cb * COV * V, ci0 = ib * CIB;
  const int nb = a.C_in - ci0 < CIB ? int(a.C_in - ci0) : CIB;
  const int64_t W = a.W, H = a.H, Wp = W + 2, plane = (H + 2) * Wp, CoP = a.CoP;
  F acc[CIB][3][COV];
  for (int b = 0; b < CIB; ++b)
    for (int j = 0; j < 3; ++j)
      for (int v = 0; v < COV; ++v) acc[b][j][v] = F{};
  for (int64_t n = 0; n < a.N; ++n)
    for (int64_t h = 0; h < H; ++h) {
      const float* xr[CIB];
      for (int b = 0; b < CIB; ++b) xr[b] = a.xp + (n * a.C_in + ci0 + (b < nb ? b : nb - 1)) * plane + (h + i) * Wp;
      const float* d = a.dyt + (n * H + h) * W * CoP + co0;
      for (int64_t w = 0; w < W; ++w) {
        F dv[COV];
        for (int v = 0; v < COV; ++v) {
          dv[v] = *reinterpret_cast<const F*>(d + w * CoP + v * V);
          in_register<V>(dv[v]);
        }
        for (int b = 0; b < CIB; ++b)
          for (int j = 0; j < 3; ++j) {
            const F xb = bcast<V>(xr[b][w + j]);
            for (int v = 0; v < COV; ++v) acc[b][j][v] += dv[v] * xb;
          }
      }
    }
  for (int v = 0; v < COV; ++v) {
    float lanes[CIB][3][V];
    for (int b = 0; b < CIB; ++b)
      for (int j = 0; j < 3; ++j) __builtin_memcpy(lanes[b][j], &acc[b][j][v], sizeof(F));
    for (int l = 0; l < V; ++l) {
      const int64_t co = co0 + v * V + l;
      if (co >= a.C_out) break;
      for (int b = 0; b < nb; ++b)
        for (int j = 0; j < 3; ++j) a.g[(co * a.C_in + ci0 + b) * 9 + i * 3 + j] = lanes[b][j][l];
    }
  }
}

// The other form, for few output channels: input channels in the lanes,
//   g[co][ci][i][j] = sum_n sum_(h,w) gy[n][co][h W + w] xt[n][(h + i) Wp + w + j][ci],
// a tile of CIV vectors of input channels x COB output channels x the 3 taps of row i; per
// position 3 CIV aligned vector loads and COB broadcasts feed 3 CIV COB multiply-adds. Lanes
// sum positions in order (n, h, w), as above.
template <int V, int CIV, int COB>
void wgrad9t_unit(const sb::kernels::Wgrad9Args& a, int64_t ib, int64_t cb, int i) {
  typedef typename Vec<V>::F F;
  const int64_t ci0 = ib * CIV * V, co0 = cb * COB;
  const int nc = a.C_out - co0 < COB ? int(a.C_out - co0) : COB;
  const int64_t W = a.W, H = a.H, Wp = W + 2, HW = H * W, CiP = a.CiP;
  F acc[COB][3][CIV];
  for (int c = 0; c < COB; ++c)
    for (int j = 0; j < 3; ++j)
      for (int v = 0; v < CIV; ++v) acc[c][j][v] = F{};
  for (int64_t n = 0; n < a.N; ++n)
    for (int64_t h = 0; h < H; ++h) {
      const float* d[COB];
      for (int c = 0; c < COB; ++c) d[c] = a.gy + (n * a.C_out + co0 + (c < nc ? c : nc - 1)) * HW + h * W;
      const float* xr = a.xt + (n * (H + 2) * Wp + (h + i) * Wp) * CiP + ci0;
      for (int64_t w = 0; w < W; ++w) {
        F xv[3][CIV];
        for (int j = 0; j < 3; ++j)
          for (int v = 0; v < CIV; ++v) {
            xv[j][v] = *reinterpret_cast<const F*>(xr + (w + j) * CiP + v * V);
            in_register<V>(xv[j][v]);
          }
        for (int c = 0; c < COB; ++c) {
          const F db = bcast<V>(d[c][w]);
          for (int j = 0; j < 3; ++j)
            for (int v = 0; v < CIV; ++v) acc[c][j][v] += xv[j][v] * db;
        }
      }
    }
  for (int v = 0; v < CIV; ++v) {
    float lanes[COB][3][V];
    for (int c = 0; c < COB; ++c)
      for (int j = 0; j < 3; ++j) __builtin_memcpy(lanes[c][j], &acc[c][j][v], sizeof(F));
    for (int c = 0; c < nc; ++c)
      for (int l = 0; l < V; ++l) {
        const int64_t ci = ci0 + v * V + l;
        if (ci >= a.C_in) break;
        for (int j = 0; j < 3; ++j) a.g[((co0 + c) * a.C_in + ci) * 9 + i * 3 + j] = lanes[c][j][l];
      }
  }
}

// The 1x1 weight gradient: g[a][b] = sum_n sum_p A[n][a][p] B[n][b][p] over p < width (rows = 1),
// for A-channel block blk against B channels [b, b + NB) (fewer at the end): COB x NB
// accumulators, so each loaded vector feeds several multiply-adds. The tail of each plane loads
// only its lanes of both operands.
template <int V, int COB, int NB>
void wgrad1_unit(const sb::kernels::WgradArgs& a, int64_t blk, int64_t b) {
  typedef typename Vec<V>::F F;
  const int64_t a0 = blk * COB;
  const int cvalid = a.CA - a0 < COB ? int(a.CA - a0) : COB;
  const int nb = a.CB - b < NB ? int(a.CB - b) : NB;
  F acc[COB][NB];
  for (int c = 0; c < COB; ++c)
    for (int j = 0; j < NB; ++j) acc[c][j] = F{};
  const int64_t full_vecs = a.width / V;
  const int tail = int(a.width - full_vecs * V);
  for (int64_t n = 0; n < a.N; ++n) {
    const float* ap[COB];
    const float* bp[NB];
    for (int c = 0; c < COB; ++c) ap[c] = a.A + n * a.a_ns + (a0 + (c < cvalid ? c : cvalid - 1)) * a.a_cs;
    for (int j = 0; j < NB; ++j) bp[j] = a.B + n * a.b_ns + (b + (j < nb ? j : nb - 1)) * a.b_cs;
    for (int64_t k = 0; k < full_vecs; ++k) {
      F xv[NB];
      for (int j = 0; j < NB; ++j) vload<V>(xv[j], bp[j] + k * V);
      for (int c = 0; c < COB; ++c) {
        F dy;
        vload<V>(dy, ap[c] + k * V);
        in_register<V>(dy);
        for (int j = 0; j < NB; ++j) acc[c][j] += dy * xv[j];
      }
    }
    if (tail) {
      const int64_t o = full_vecs * V;
      F xv[NB];
      for (int j = 0; j < NB; ++j) vload_n<V>(xv[j], bp[j] + o, tail);
      for (int c = 0; c < COB; ++c) {
        F dy;
        vload_n<V>(dy, ap[c] + o, tail);
        for (int j = 0; j < NB; ++j) acc[c][j] += dy * xv[j];
      }
    }
  }
  for (int c = 0; c < cvalid; ++c)
    for (int j = 0; j < nb; ++j) a.g[(a0 + c) * a.CB + b + j] = hsum<V>(acc[c][j]);
}

// Elements of a and b picked by idx (idx[e] < V: a[idx[e]], else b[idx[e] - V]). GCC has
// __builtin_shuffle; clang (the fuzz build) does not, and gets the same picks element by element.
template <int V>
SB_AI typename Vec<V>::F pick2(const typename Vec<V>::F& a, const typename Vec<V>::F& b, const typename Vec<V>::I& idx) {
#if defined(__clang__)
  typename Vec<V>::F r;
  for (int e = 0; e < V; ++e) r[e] = idx[e] < V ? a[idx[e]] : b[idx[e] - V];
  return r;
#else
  return __builtin_shuffle(a, b, idx);
#endif
}

// rows (V vectors) transposed in place: log2 V rounds of interleaving row i with row i + V/2
// (each round rotates the bits of the element index; after log2 V rounds row and column swap).
template <int V>
SB_AI void transpose_vv(typename Vec<V>::F* rows) {
  typedef typename Vec<V>::F F;
  typedef typename Vec<V>::I I;
  I lo, hi;
  for (int k = 0; k < V / 2; ++k) lo[2 * k] = k, lo[2 * k + 1] = V + k, hi[2 * k] = V / 2 + k, hi[2 * k + 1] = V + V / 2 + k;
  for (int round = 1; round < V; round *= 2) {
    F out[V];
    for (int i = 0; i < V / 2; ++i) {
      out[2 * i] = pick2<V>(rows[i], rows[i + V / 2], lo);
      out[2 * i + 1] = pick2<V>(rows[i], rows[i + V / 2], hi);
    }
    for (int i = 0; i < V; ++i) rows[i] = out[i];
  }
}

// dst[k][c] (len, CP) = src[c][k] (C rows ls apart) for k < len, zero for c in [C, CP); CP a
// multiple of V and dst aligned to V floats. V x V blocks through registers.
template <int V>
void transpose_to(const float* src, int64_t C, int64_t ls, int64_t len, float* dst, int64_t CP) {
  typedef typename Vec<V>::F F;
  for (int64_t k0 = 0; k0 < len; k0 += V) {
    const int n = len - k0 < V ? int(len - k0) : V;
    for (int64_t c0 = 0; c0 < CP; c0 += V) {
      F rows[V];
      for (int r = 0; r < V; ++r) {
        if (c0 + r >= C)
          rows[r] = F{};
        else if (n == V)
          vload<V>(rows[r], src + (c0 + r) * ls + k0);
        else
          vload_n<V>(rows[r], src + (c0 + r) * ls + k0, n);
      }
      transpose_vv<V>(rows);
      for (int k = 0; k < n; ++k) *reinterpret_cast<F*>(dst + (k0 + k) * CP + c0) = rows[k];
    }
  }
}

// ---- Winograd F(4, 3) along rows: the transforms (see winograd3x3 in conv_direct.cpp) ----

// Lanes l of the pair (a, b) at 2 l + odd (even or odd elements of a then b), and the halves of
// their interleaving a0 b0 a1 b1 ... (hi: from lane V / 2 on).
template <int V>
SB_AI typename Vec<V>::F unzip(const typename Vec<V>::F& a, const typename Vec<V>::F& b, int odd) {
  typename Vec<V>::I idx;
  for (int l = 0; l < V; ++l) idx[l] = 2 * l + odd;
  return pick2<V>(a, b, idx);
}
template <int V>
SB_AI typename Vec<V>::F zip(const typename Vec<V>::F& a, const typename Vec<V>::F& b, int hi) {
  typename Vec<V>::I idx;
  for (int l = 0; l < V; ++l) idx[l] = (l % 2) * V + hi * V / 2 + l / 2;
  return pick2<V>(a, b, idx);
}
// Lanes 1 .. V - 1 of a, then lane 0 of b; and lane V - 1 of b, then lanes 0 .. V - 2 of a.
template <int V>
SB_AI typename Vec<V>::F shift_down(const typename Vec<V>::F& a, const typename Vec<V>::F& b) {
  typename Vec<V>::I idx;
  for (int l = 0; l < V; ++l) idx[l] = l + 1;
  return pick2<V>(a, b, idx);
}
template <int V>
SB_AI typename Vec<V>::F shift_up(const typename Vec<V>::F& a, const typename Vec<V>::F& b) {
  typename Vec<V>::I idx;
  for (int l = 0; l < V; ++l) idx[l] = l == 0 ? 2 * V - 1 : l - 1;
  return pick2<V>(a, b, idx);
}

// The columns of V tiles from column c4 of a run of len floats: e[k][l] = x[c4 + 4 l + k], zero
// past len (nothing read there; full: all 4 V columns lie inside), by two rounds of unzips.
template <int V>
SB_AI void tile_columns(const float* x, int64_t c4, int64_t len, bool full, typename Vec<V>::F e[4]) {
  typedef typename Vec<V>::F F;
  F a[4];
  for (int i = 0; i < 4; ++i) {
    const int64_t c0 = c4 + i * V;
    if (full)
      vload<V>(a[i], x + c0);
    else if (c0 >= len)
      a[i] = F{};
    else
      vload_n<V>(a[i], x + c0, len - c0 < V ? int(len - c0) : V);
  }
  const F p0 = unzip<V>(a[0], a[1], 0), p1 = unzip<V>(a[0], a[1], 1);
  const F q0 = unzip<V>(a[2], a[3], 0), q1 = unzip<V>(a[2], a[3], 1);
  e[0] = unzip<V>(p0, q0, 0), e[2] = unzip<V>(p0, q0, 1), e[1] = unzip<V>(p1, q1, 0), e[3] = unzip<V>(p1, q1, 1);
}

// The first n lanes of the 6 values of a transform, to v, v + fs, ..., v + 5 fs.
template <int V>
SB_AI void store_planes(float* v, int64_t fs, const typename Vec<V>::F (&val)[6], int64_t n) {
  for (int f = 0; f < 6; ++f) {
    if (n == V)
      vstore<V>(v + f * fs, val[f]);
    else
      vstore_n<V>(v + f * fs, val[f], int(n));
  }
}

// The input transform of one sample: for channel c and padded row rp (image row rp - 1, zero
// outside), V[f fs + c cs + rp TW + t] = (B^T d)_f with d_k = x[4 t - 1 + k] (zero outside the
// row). Reads nothing outside the rows. Returns 0 times the sum of every value written: NaN when
// any is inf or NaN.
template <int V>
float wino_in(const float* in, int64_t C, int64_t H, int64_t W, int64_t TW, float* Vp, int64_t fs, int64_t cs) {
  typedef typename Vec<V>::F F;
  typedef typename Vec<V>::I I;
  // Rows of whole tiles (W a multiple of 4) run as one row of H W columns and H TW tiles, so narrow
  // rows still fill the vectors; then d_0 of a tile that starts an image row and d_5 of one that
  // ends it are the padding's zero, whatever the neighbouring row holds.
  const bool flat = W % 4 == 0;
  const int64_t Wr = flat ? H * W : W, Tr = flat ? H * TW : TW;
  const int32_t step = int32_t(V % TW), last = int32_t(TW - 1);
  I col0;  // the tile column of each lane at t0 = 0
  for (int l = 0; l < V; ++l) col0[l] = int32_t(l % TW);
  F acc{};
  // Tiles t0 .. t0 + V - 1 of the run x: e_k[l] = x[4 (t0 + l) + k] from 4 V columns (zero past Wr).
  auto tiles = [&](const float* x, int64_t t0, float* v, bool full, const I& col) __attribute__((always_inline)) {
    const int64_t c4 = 4 * t0;
    F e[4];
    tile_columns<V>(x, c4, Wr, full, e);
    const F &e0 = e[0], &e1 = e[1], &e2 = e[2], &e3 = e[3];
    const F before = bcast<V>(c4 > 0 ? x[c4 - 1] : 0.f), after = bcast<V>(c4 + 4 * V < Wr ? x[c4 + 4 * V] : 0.f);
    F d0 = shift_up<V>(e3, before), d5 = shift_down<V>(e0, after);
    if (flat) {
      I b0, b5;
      __builtin_memcpy(&b0, &d0, sizeof b0);
      __builtin_memcpy(&b5, &d5, sizeof b5);
      b0 &= ~(col == 0);  // the comparisons are -1 where true
      b5 &= ~(col == last);
      __builtin_memcpy(&d0, &b0, sizeof b0);
      __builtin_memcpy(&d5, &b5, sizeof b5);
    }
    const F d1 = e0, d2 = e1, d3 = e2, d4 = e3;
    const F v0 = (4.f * d0 - 5.f * d2) + d4;
    const F v1 = (d3 + d4) - 4.f * (d1 + d2);
    const F v2 = (d4 - d3) + 4.f * (d1 - d2);
    const F v3 = (d4 - d2) + 2.f * (d3 - d1);
    const F v4 = (d4 - d2) - 2.f * (d3 - d1);
    const F v5 = (4.f * d1 - 5.f * d3) + d5;
    acc += ((v0 + v1) + (v2 + v3)) + (v4 + v5);
    store_planes<V>(v, fs, {v0, v1, v2, v3, v4, v5}, Tr - t0 < V ? Tr - t0 : V);
  };
  auto run = [&](const float* x, float* v) __attribute__((always_inline)) {
    I col = col0;
    for (int64_t t0 = 0; t0 < Tr; t0 += V) {
      if (4 * (t0 + V) <= Wr)
        tiles(x, t0, v + t0, true, col);
      else
        tiles(x, t0, v + t0, false, col);
      col += step;  // (col + V) mod TW: col < TW and step < TW
      col -= (col > last) & int32_t(TW);
    }
  };
  for (int64_t c = 0; c < C; ++c) {
    float* v = Vp + c * cs;
    for (int f = 0; f < 6; ++f)  // the padding rows, above and below
      for (int64_t t = 0; t < TW; ++t) v[f * fs + t] = v[f * fs + (H + 1) * TW + t] = 0.f;
    if (flat) {
      run(in + c * H * W, v + TW);
    } else {
      for (int64_t r = 0; r < H; ++r) run(in + (c * H + r) * W, v + (r + 1) * TW);
    }
  }
  return hsum<V>(acc) * 0.f;
}

// The output transform of one sample: columns 4 t .. 4 t + 3 of row r of channel c are
// A^T (M_0 .. M_5) + bias[c], M_f = M[f fs + c cs + r TW + t]; columns past W are dropped.
// Returns 0 times the sum of every output (lanes past W included): NaN when any is inf or NaN.
template <int V>
float wino_out(const float* M, int64_t fs, int64_t cs, const float* bias, float* out, int64_t C, int64_t H, int64_t W,
               int64_t TW) {
  typedef typename Vec<V>::F F;
  F acc{};
  auto tiles = [&](const float* m, float* o, int64_t t0, const F& bv, bool full) __attribute__((always_inline)) {
    const int n = TW - t0 < V ? int(TW - t0) : V;
    F m0, m1, m2, m3, m4, m5;
    if (full) {
      vload<V>(m0, m), vload<V>(m1, m + fs), vload<V>(m2, m + 2 * fs);
      vload<V>(m3, m + 3 * fs), vload<V>(m4, m + 4 * fs), vload<V>(m5, m + 5 * fs);
    } else {
      vload_n<V>(m0, m, n), vload_n<V>(m1, m + fs, n), vload_n<V>(m2, m + 2 * fs, n);
      vload_n<V>(m3, m + 3 * fs, n), vload_n<V>(m4, m + 4 * fs, n), vload_n<V>(m5, m + 5 * fs, n);
    }
    const F s12 = m1 + m2, d12 = m1 - m2, s34 = m3 + m4, d34 = m3 - m4;
    const F o0 = ((m0 + s12) + s34) + bv;
    const F o1 = (d12 + 2.f * d34) + bv;
    const F o2 = (s12 + 4.f * s34) + bv;
    const F o3 = ((d12 + 8.f * d34) + m5) + bv;
    acc += (o0 + o1) + (o2 + o3);
    const F x0 = zip<V>(o0, o2, 0), x1 = zip<V>(o0, o2, 1), y0 = zip<V>(o1, o3, 0), y1 = zip<V>(o1, o3, 1);
    const F w0 = zip<V>(x0, y0, 0), w1 = zip<V>(x0, y0, 1), w2 = zip<V>(x1, y1, 0), w3 = zip<V>(x1, y1, 1);
    const int64_t col = 4 * t0;
    if (full) {
      vstore<V>(o + col, w0), vstore<V>(o + col + V, w1), vstore<V>(o + col + 2 * V, w2), vstore<V>(o + col + 3 * V, w3);
    } else {
      const F w[4] = {w0, w1, w2, w3};
      for (int i = 0; i < 4; ++i) {
        const int64_t c0 = col + i * V;
        if (c0 < W) vstore_n<V>(o + c0, w[i], W - c0 < V ? int(W - c0) : V);
      }
    }
  };
  for (int64_t c = 0; c < C; ++c) {
    const F bv = bcast<V>(bias ? bias[c] : 0.f);
    for (int64_t r = 0; r < H; ++r) {
      const float* m = M + c * cs + r * TW;
      float* o = out + (c * H + r) * W;
      for (int64_t t0 = 0; t0 < TW; t0 += V) {
        if (t0 + V <= TW && 4 * (t0 + V) <= W)
          tiles(m + t0, o, t0, bv, true);
        else
          tiles(m + t0, o, t0, bv, false);
      }
    }
  }
  return hsum<V>(acc) * 0.f;
}
// Rows of whole tiles (W a multiple of 4) as one row of H W columns: narrow rows fill the vectors.
template <int V>
float wino_out_rows(const float* M, int64_t fs, int64_t cs, const float* bias, float* out, int64_t C, int64_t H,
                    int64_t W, int64_t TW) {
  if (W % 4 == 0) return wino_out<V>(M, fs, cs, bias, out, C, 1, H * W, H * TW);
  return wino_out<V>(M, fs, cs, bias, out, C, H, W, TW);
}

// The weight gradient's transform of one sample's dY: Y[f fs + c cs + r TW + t] = (A dy)_f of the
// tile's 4 values dy_j = gy[c][r][4 t + j] (zero past W), A = (A^T)^T of the output transform.
// Returns 0 times the sum of every value written: NaN when any is inf or NaN.
template <int V>
float wino_dy_rows(const float* gy, int64_t C, int64_t H, int64_t W, int64_t TW, float* Y, int64_t fs, int64_t cs) {
  typedef typename Vec<V>::F F;
  F acc{};
  for (int64_t c = 0; c < C; ++c)
    for (int64_t r = 0; r < H; ++r) {
      const float* g = gy + (c * H + r) * W;
      float* y = Y + c * cs + r * TW;
      for (int64_t t0 = 0; t0 < TW; t0 += V) {
        F e[4];
        tile_columns<V>(g, 4 * t0, W, 4 * (t0 + V) <= W, e);
        const F &e0 = e[0], &e1 = e[1], &e2 = e[2], &e3 = e[3];
        const F s02 = e0 + e2, s13 = e1 + e3, q02 = e0 + 4.f * e2, q13 = 2.f * e1 + 8.f * e3;
        const F y0 = e0, y1 = s02 + s13, y2 = s02 - s13, y3 = q02 + q13, y4 = q02 - q13, y5 = e3;
        acc += ((y0 + y1) + (y2 + y3)) + (y4 + y5);
        store_planes<V>(y + t0, fs, {y0, y1, y2, y3, y4, y5}, TW - t0 < V ? TW - t0 : V);
      }
    }
  return hsum<V>(acc) * 0.f;
}

// Rows of whole tiles as one (no tile reads past its own 4 columns).
template <int V>
float wino_dy(const float* gy, int64_t C, int64_t H, int64_t W, int64_t TW, float* Y, int64_t fs, int64_t cs) {
  if (W % 4 == 0) return wino_dy_rows<V>(gy, C, 1, H * W, H * TW, Y, fs, cs);
  return wino_dy_rows<V>(gy, C, H, W, TW, Y, fs, cs);
}

// The weight gradient's products for one f in the Winograd domain: out[(kr COB + c) CIB + i] =
//   sum over samples n < N and positions p < L of Y[n ys + (co0 + c) L + p] Vt[n vs + (ci0 + i) vcs + kr TW + p]
// (L = H TW positions of a plane; tap row kr is TW positions on). Positions in the vector lanes,
// each lane summed in order, then the lanes in a fixed order: one unit sums everything itself.
// Channels past Co or Ci read the last one and are not written.
template <int V, int COB, int CIB>
void wino_wgrad_unit(const sb::kernels::WinoWgradArgs& a, int64_t co0, int64_t ci0, float* out) {
  typedef typename Vec<V>::F F;
  F acc[3][COB][CIB];
  for (int k = 0; k < 3; ++k)
    for (int c = 0; c < COB; ++c)
      for (int i = 0; i < CIB; ++i) acc[k][c][i] = F{};
  for (int64_t n = 0; n < a.N; ++n) {
    const float* yp[COB];
    const float* vp[CIB];
    for (int c = 0; c < COB; ++c) yp[c] = a.Y + n * a.ys + (co0 + c < a.Co ? co0 + c : a.Co - 1) * a.L;
    for (int i = 0; i < CIB; ++i) vp[i] = a.Vt + n * a.vs + (ci0 + i < a.Ci ? ci0 + i : a.Ci - 1) * a.vcs;
    auto step = [&](int64_t p, int len) __attribute__((always_inline)) {
      F y[COB];
      for (int c = 0; c < COB; ++c) {
        if (len == V)
          vload<V>(y[c], yp[c] + p);
        else
          vload_n<V>(y[c], yp[c] + p, len);
      }
      for (int k = 0; k < 3; ++k)
        for (int i = 0; i < CIB; ++i) {
          F v;
          if (len == V)
            vload<V>(v, vp[i] + k * a.TW + p);
          else
            vload_n<V>(v, vp[i] + k * a.TW + p, len);
          for (int c = 0; c < COB; ++c) acc[k][c][i] += y[c] * v;
        }
    };
    int64_t p = 0;
    for (; p + V <= a.L; p += V) step(p, V);
    if (p < a.L) step(p, int(a.L - p));
  }
  for (int k = 0; k < 3; ++k)
    for (int c = 0; c < COB; ++c)
      for (int i = 0; i < CIB; ++i) out[(k * COB + c) * CIB + i] = hsum<V>(acc[k][c][i]);
}

// COBF x NV: the forward's tile; COBW: the 1x1 weight gradient's A channels per unit; B2, B1:
// the 3x3 weight gradient's other channels per unit with 2 and 1 vectors of lane channels (both
// forms), and BS the same with 1 vector for few channels.
template <int V, int COBF, int NV, int COBW, int B2, int B1, int BS>
constexpr sb::kernels::DirectKernels make_table() {
  return {V,
          COBF,
          COBW,
          &fwd_rows<V, COBF, NV, 9>,
          &fwd_rows<V, COBF, NV, 1>,
          &fwd_rows<V, COBF, NV, 3>,
          &fwd_rows<V, COBF, 2, 3>,
          &wino_in<V>,
          &wino_out_rows<V>,
          &wino_dy<V>,
          &wino_wgrad_unit<V, V == 16 ? 4 : 2, 2>,
          V == 16 ? 4 : 2,
          2,
          {{&wgrad9t_unit<V, 2, B2>, true, 2, B2},  // first: ties go to the form with fewer copies
           {&wgrad9t_unit<V, 1, B1>, true, 1, B1},
           {&wgrad9_unit<V, 2, B2>, false, 2, B2},
           {&wgrad9_unit<V, 1, B1>, false, 1, B1},
           {&wgrad9_unit<V, 1, BS>, false, 1, BS}},
          &wgrad1_unit<V, COBW, 3>,
          &transpose_to<V>};
}

#undef SB_AI
