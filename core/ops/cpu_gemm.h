// CBLAS GEMM on row-major operands as stored, for the float and double kernels alike: the CPU
// linear layer and attention make every product through it. Called inside an OpenMP parallel
// region, OpenBLAS's OpenMP build runs it on the calling thread alone. Internal to core/ops.
#pragma once

#include <cblas.h>

#include <cstdint>

namespace tessera::ops::cpu {

// C[m, n] = A[m, k] @ B[k, n] + beta C, with A and B optionally read transposed.
inline void gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t m, int64_t n, int64_t k,
                 const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
                 int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta, tb, static_cast<int>(m), static_cast<int>(n), static_cast<int>(k),
              1.0f, a, static_cast<int>(lda), b, static_cast<int>(ldb), beta, c,
              static_cast<int>(ldc));
}

inline void gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t m, int64_t n, int64_t k,
                 const double* a, int64_t lda, const double* b, int64_t ldb, double beta, double* c,
                 int64_t ldc) {
  cblas_dgemm(CblasRowMajor, ta, tb, static_cast<int>(m), static_cast<int>(n), static_cast<int>(k),
              1.0, a, static_cast<int>(lda), b, static_cast<int>(ldb), beta, c,
              static_cast<int>(ldc));
}

}  // namespace tessera::ops::cpu
