// Matrix products on cblas_sgemm: matmul and linear (x W^T + b), with backward as GEMMs.
#include "core/kernels/gemm.h"
#include "core/ops.h"

namespace sb {

using kernels::gemm;

Var matmul(const Var& a, const Var& b) {
  SB_CHECK(a.dim() == 2 && b.dim() == 2, "matmul: expected two 2-d tensors but got ", a.shape(),
           " and ", b.shape());
  int64_t M = a.size(0), K = a.size(1), N = b.size(1);
  SB_CHECK(b.size(0) == K, "matmul: ", a.shape(), " x ", b.shape(), ": inner dimensions ", K,
           " and ", b.size(0), " differ");
  Tensor out = Tensor::empty({M, N});
  gemm(false, false, M, N, K, 1.f, a.value().data(), b.value().data(), 0.f, out.data());
  return make_result(out, "matmul", {a, b}, [M, N, K](Node& n) {
    const Tensor& va = n.inputs[0]->value;  // (M, K)
    const Tensor& vb = n.inputs[1]->value;  // (K, N)
    if (n.needs(0)) {  // dA = dC B^T  (M, K)
      Tensor g = Tensor::empty({M, K});
      gemm(false, true, M, K, N, 1.f, n.grad.data(), vb.data(), 0.f, g.data());
      n.inputs[0]->accumulate(g);
    }
    if (n.needs(1)) {  // dB = A^T dC  (K, N)
      Tensor g = Tensor::empty({K, N});
      gemm(true, false, K, N, M, 1.f, va.data(), n.grad.data(), 0.f, g.data());
      n.inputs[1]->accumulate(g);
    }
  });
}

Var linear(const Var& x, const Var& weight, const Var& bias) {
  SB_CHECK(x.dim() == 2 && weight.dim() == 2, "linear: expected x (N, in) and weight (out, in) but got ",
           x.shape(), " and ", weight.shape());
  int64_t N = x.size(0), in = x.size(1), out_f = weight.size(0);
  SB_CHECK(weight.size(1) == in, "linear: input ", x.shape(), " has ", in, " features but weight ",
           weight.shape(), " expects ", weight.size(1));
  if (bias.defined())
    SB_CHECK(bias.shape() == Shape{out_f}, "linear: bias ", bias.shape(), " should be (", out_f,
             ",) for weight ", weight.shape());
  Tensor out = Tensor::empty({N, out_f});
  if (bias.defined()) {  // start from the broadcast bias, then C += x W^T
    for (int64_t i = 0; i < N; ++i)
      std::copy(bias.value().data(), bias.value().data() + out_f, out.data() + i * out_f);
  }
  gemm(false, true, N, out_f, in, 1.f, x.value().data(), weight.value().data(),
       bias.defined() ? 1.f : 0.f, out.data());
  return make_result(out, "linear", {x, weight, bias}, [N, in, out_f](Node& n) {
    const Tensor& vx = n.inputs[0]->value;  // (N, in)
    const Tensor& vw = n.inputs[1]->value;  // (out, in)
    const float* dy = n.grad.data();        // (N, out)
    if (n.needs(0)) {  // dx = dy W  (N, in)
      Tensor g = Tensor::empty({N, in});
      gemm(false, false, N, in, out_f, 1.f, dy, vw.data(), 0.f, g.data());
      n.inputs[0]->accumulate(g);
    }
    if (n.needs(1)) {  // dW = dy^T x  (out, in)
      Tensor g = Tensor::empty({out_f, in});
      gemm(true, false, out_f, in, N, 1.f, dy, vx.data(), 0.f, g.data());
      n.inputs[1]->accumulate(g);
    }
    if (n.inputs.size() > 2 && n.needs(2)) {  // db = sum over rows of dy
      Tensor g = Tensor::zeros({out_f});
      for (int64_t i = 0; i < N; ++i)
        for (int64_t j = 0; j < out_f; ++j) g[j] += dy[i * out_f + j];
      n.inputs[2]->accumulate(g);
    }
  });
}

}  // namespace sb
