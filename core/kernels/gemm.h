// Row-major single-precision GEMM on OpenBLAS: C = alpha * op(A) * op(B) + beta * C.
// The one place that talks to cblas, so kernels stay free of BLAS details; and the transpose
// that lays out an operand for it.
#pragma once

#include <cstdint>

namespace sb::kernels {

// op(A) is (M, K), op(B) is (K, N), C is (M, N); lda/ldb/ldc are row strides of the stored
// (untransposed) matrices.
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// Contiguous shorthand: lda/ldb/ldc follow from the shapes.
inline void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                 const float* A, const float* B, float beta, float* C) {
  gemm(trans_a, trans_b, M, N, K, alpha, A, trans_a ? M : K, B, trans_b ? K : N, beta, C, N);
}

// dst (cols, rows) = the transpose of src (rows, cols), whose rows are ld floats apart.
void transpose(const float* src, int64_t rows, int64_t cols, int64_t ld, float* dst);

}  // namespace sb::kernels
