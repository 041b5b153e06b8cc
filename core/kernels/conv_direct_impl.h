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
  for (int t = 0; t < T; ++t) toff[t] = T == 1 ? 0 : (t / 3) * a.in_rs + t % 3;
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

// The 3x3 weight gradient on flat planes: A (N, CA, L) is dY laid out on the padded width Wp
// (zero where ow >= Wo), B the zero-padded input (N, CB, Hp, Wp); position p of A meets B at
// p + i * Wp + j for tap (i, j). mask[p] is all ones where p is a real output position and zero
// elsewhere; it clears B there, so the positions that wrap around a row's end contribute exactly
// nothing even when B holds an inf (0 * inf would be NaN). L is a multiple of V: no tails, and no
// per-row loop overhead, which narrow planes (16 or 8 wide) would pay on every row. Otherwise as
// the forward: positions in L1-sized chunks, accumulators waiting in memory between chunks.
template <int V, int COB, int CIB>
void wgrad9_unit(const sb::kernels::WgradArgs& a, int64_t blk, int64_t b) {
  typedef typename Vec<V>::F F;
  typedef typename Vec<V>::I I;
  const int64_t a0 = blk * COB;
  const int64_t left = a.CA - a0;
  const int cvalid = left < COB ? int(left) : COB;
  const int nb = a.CB - b < CIB ? int(a.CB - b) : CIB;
  F accs[CIB * 3][COB][3];
  for (int u = 0; u < CIB * 3; ++u)
    for (int c = 0; c < COB; ++c)
      for (int j = 0; j < 3; ++j) accs[u][c][j] = F{};
  // Positions per chunk: the COB A rows of a chunk in about 16 KiB.
  int64_t chunk = (4096 / COB) / V * V;
  chunk = chunk < V ? V : chunk;
  const int64_t L = a.width, total = a.N * L;
  // Chunks of the positions of all samples one after another, g = n * L + p: small planes put
  // several samples in one chunk, so the accumulators wait in memory less often.
  for (int64_t g0 = 0; g0 < total; g0 += chunk) {
    const int64_t g1 = g0 + chunk < total ? g0 + chunk : total;
    for (int bi = 0; bi < nb; ++bi)
      for (int i = 0; i < 3; ++i) {
        F acc[COB][3];
        __builtin_memcpy(&acc, &accs[bi * 3 + i], sizeof acc);
        for (int64_t g = g0; g < g1;) {
          const int64_t n = g / L, p0 = g % L, p1 = p0 + (g1 - g) < L ? p0 + (g1 - g) : L;
          const float* ap[COB];
          for (int c = 0; c < COB; ++c) ap[c] = a.A + n * a.a_ns + (a0 + (c < cvalid ? c : cvalid - 1)) * a.a_cs;
          const float* bp = a.B + n * a.b_ns + (b + bi) * a.b_cs + i * a.b_rs;
#pragma GCC unroll 2
          for (int64_t p = p0; p < p1; p += V) {
            const I m = *reinterpret_cast<const typename Vec<V>::IU*>(a.mask + p);
            F xv[3];
            for (int j = 0; j < 3; ++j) {
              vload<V>(xv[j], bp + p + j);
              xv[j] = (F)((I)xv[j] & m);
            }
            for (int c = 0; c < COB; ++c) {
              F dy;
              vload<V>(dy, ap[c] + p);
              in_register<V>(dy);
              for (int j = 0; j < 3; ++j) acc[c][j] += dy * xv[j];
            }
          }
          g += p1 - p0;
        }
        __builtin_memcpy(&accs[bi * 3 + i], &acc, sizeof acc);
      }
  }
  for (int bi = 0; bi < nb; ++bi)
    for (int i = 0; i < 3; ++i)
      for (int c = 0; c < cvalid; ++c)
        for (int j = 0; j < 3; ++j) a.g[((a0 + c) * a.CB + b + bi) * 9 + i * 3 + j] = hsum<V>(accs[bi * 3 + i][c][j]);
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

// B channels per weight-gradient unit.
constexpr int CIB = 4;

template <int V, int COBF, int NV, int COBW>
constexpr sb::kernels::DirectKernels make_table() {
  return {V,
          COBF,
          COBW,
          CIB,
          &fwd_rows<V, COBF, NV, 9>,
          &fwd_rows<V, COBF, NV, 1>,
          &wgrad9_unit<V, COBW, CIB>,
          &wgrad1_unit<V, COBW, 3>};
}

#undef SB_AI
