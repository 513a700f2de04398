// CBLAS GEMM on row-major operands as stored, for the float and double kernels alike: the CPU
// linear layer and attention make every product through it. Called inside an OpenMP parallel
// region, OpenBLAS's OpenMP build runs it on the calling thread alone. Internal to core/ops.
#pragma once

#include <cblas.h>

#include <cstdint>
#include <type_traits>

namespace tessera::ops::cpu {

// C[m, n] = A[m, k] @ B[k, n] + beta C, with A and B optionally read transposed; T is float or
// double.
template <typename T>
void gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t m, int64_t n, int64_t k, const T* a,
          int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  const auto i = [](int64_t x) { return static_cast<int>(x); };
  if constexpr (std::is_same_v<T, float>)
    cblas_sgemm(CblasRowMajor, ta, tb, i(m), i(n), i(k), 1.0f, a, i(lda), b, i(ldb), beta, c,
                i(ldc));
  else
    cblas_dgemm(CblasRowMajor, ta, tb, i(m), i(n), i(k), 1.0, a, i(lda), b, i(ldb), beta, c,
                i(ldc));
}

}  // namespace tessera::ops::cpu
