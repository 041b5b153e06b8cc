// The optimized kernels against their slow, simple definitions: im2col (row-wise copies, and
// copies from the zero-padded image) against a per-element loop, the blocked transpose against
// its definition, relu's select loops against the definition, and the storage cache's
// accounting (live_tensor_bytes counts live tensors only, cached blocks are not live).
#include <doctest/doctest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "core/kernels/gemm.h"
#include "layers/conv/kernels/im2col.h"
#include "core/ops.h"
#include "simd_levels.h"

using namespace sb;

namespace {

// The definition in im2col.h, one element at a time.
std::vector<float> im2col_reference(const kernels::ColGeometry& g, const std::vector<float>& im) {
  std::vector<float> col(g.rows() * g.cols());
  for (int64_t c = 0; c < g.channels; ++c)
    for (int64_t i = 0; i < g.kernel_h; ++i)
      for (int64_t j = 0; j < g.kernel_w; ++j)
        for (int64_t oh = 0; oh < g.out_h; ++oh)
          for (int64_t ow = 0; ow < g.out_w; ++ow) {
            const int64_t r = (c * g.kernel_h + i) * g.kernel_w + j;
            const int64_t ih = oh * g.stride_h - g.pad_h + i * g.dil_h;
            const int64_t iw = ow * g.stride_w - g.pad_w + j * g.dil_w;
            const bool inside = ih >= 0 && ih < g.height && iw >= 0 && iw < g.width;
            col[r * g.cols() + oh * g.out_w + ow] = inside ? im[(c * g.height + ih) * g.width + iw] : 0.f;
          }
  return col;
}

}  // namespace

TEST_CASE("kernels: im2col, and im2col through the padded image, equal the per-element definition") {
  sbtest::for_each_simd_level([&] {
    Generator gen(11);
    int tested = 0;
    for (int trial = 0; trial < 200; ++trial) {
      kernels::ColGeometry g{};
      g.channels = 1 + gen.below(3);
      g.height = 1 + gen.below(9), g.width = 1 + gen.below(9);
      g.kernel_h = 1 + gen.below(4), g.kernel_w = 1 + gen.below(4);
      g.pad_h = gen.below(4), g.pad_w = gen.below(4);
      g.stride_h = 1 + gen.below(3), g.stride_w = 1 + gen.below(3);
      g.dil_h = 1 + gen.below(3), g.dil_w = 1 + gen.below(3);
      const int64_t span_h = g.dil_h * (g.kernel_h - 1) + 1, span_w = g.dil_w * (g.kernel_w - 1) + 1;
      if (g.height + 2 * g.pad_h < span_h || g.width + 2 * g.pad_w < span_w) continue;
      g.out_h = (g.height + 2 * g.pad_h - span_h) / g.stride_h + 1;
      g.out_w = (g.width + 2 * g.pad_w - span_w) / g.stride_w + 1;
      std::vector<float> im(g.channels * g.height * g.width);
      for (float& v : im) v = gen.uniform(-1.f, 1.f);
      std::vector<float> got(g.rows() * g.cols(), 123.f);  // garbage: every element must be written
      kernels::im2col(g, im.data(), got.data());
      CAPTURE(trial);
      const std::vector<float> want = im2col_reference(g, im);
      CHECK(got == want);  // pure copies: bit-exact
      // Through the padded image, for all grid rows and for a band of them.
      std::vector<float> padded(g.padded_size(), 77.f), via_pad(g.rows() * g.cols(), 123.f);
      kernels::pad_image(g, im.data(), padded.data());
      kernels::im2col_rows_padded(g, padded.data(), via_pad.data(), 0, g.out_h);
      CHECK(via_pad == want);
      const int64_t oh0 = gen.below(static_cast<uint64_t>(g.out_h)), oh1 = oh0 + 1 + gen.below(static_cast<uint64_t>(g.out_h - oh0));
      std::vector<float> band(g.rows() * (oh1 - oh0) * g.out_w, 123.f), band_ref(band.size());
      kernels::im2col_rows_padded(g, padded.data(), band.data(), oh0, oh1);
      for (int64_t r = 0; r < g.rows(); ++r)
        for (int64_t k = 0; k < (oh1 - oh0) * g.out_w; ++k)
          band_ref[r * (oh1 - oh0) * g.out_w + k] = want[r * g.cols() + oh0 * g.out_w + k];
      CHECK(band == band_ref);
      ++tested;
    }
    CHECK(tested >= 100);
  });
}

TEST_CASE("kernels: transpose equals its definition, blocks and ragged edges") {
  sbtest::for_each_simd_level([] {  // AVX2 8 x 8 blocks, and element by element below avx2
    Generator gen(13);
    for (int trial = 0; trial < 60; ++trial) {
      const int64_t rows = 1 + gen.below(40), cols = 1 + gen.below(40), ld = cols + gen.below(5);
      std::vector<float> src(rows * ld);
      for (float& v : src) v = gen.uniform(-1.f, 1.f);
      std::vector<float> got(rows * cols, 123.f), want(rows * cols);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) want[c * rows + r] = src[r * ld + c];
      kernels::transpose(src.data(), rows, cols, ld, got.data());
      CAPTURE(rows);
      CAPTURE(cols);
      CAPTURE(ld);
      CHECK(got == want);
    }
  });
}

TEST_CASE("kernels: relu and its gradient equal the definition, at sizes that run in parallel") {
  Generator gen(12);
  for (int64_t n : {7, 100000}) {
    CAPTURE(n);
    Tensor x = Tensor::randn({n}, gen);
    Tensor gy = Tensor::randn({n}, gen);
    Var xv(x, true);
    Var y = relu(xv);
    y.backward(gy);
    bool ok = true;
    for (int64_t i = 0; i < n; ++i) {
      ok = ok && y.value()[i] == (x[i] < 0.f ? 0.f : x[i]);
      ok = ok && xv.grad()[i] == (x[i] <= 0.f ? 0.f : gy[i]);
    }
    CHECK(ok);
  }
}

TEST_CASE("kernels: cached storage is reused and not counted as live") {
  const int64_t before = live_tensor_bytes();
  const float* first = nullptr;
  {
    Tensor a = Tensor::empty({1000, 100});
    first = a.data();
    CHECK(live_tensor_bytes() >= before + 400000);
  }
  CHECK(live_tensor_bytes() == before);  // back in the cache, no longer live
  Tensor b = Tensor::zeros({1000, 100});  // the same size class gets the same block back
  const char* env = std::getenv("SMALLBATCH_CACHE_MB");
  const bool cache_on = !(env && std::string(env) == "0");
#if !defined(__SANITIZE_ADDRESS__)  // AddressSanitizer builds turn the cache off
  if (cache_on) CHECK(b.data() == first);
#endif
  (void)cache_on, (void)first;
  CHECK(b[0] == 0.f);
  CHECK(b[99999] == 0.f);
  CHECK(live_tensor_bytes() >= before + 400000);
}
