// CPU linear layer: every product is one CBLAS GEMM on the operands as stored (row-major, the
// weight read transposed by BLAS, never copied), so the speed is OpenBLAS's. Copying the bias
// into the output and its gradient are the only loops here; the bias gradient is split over column
// blocks, so each column is summed over rows in order by one thread whatever the thread count.
#include <algorithm>

#include "core/ops/cpu_gemm.h"
#include "core/ops/cpu_kernels.h"

namespace tessera::ops::cpu {

template <typename T>
void matmul_forward(T* out, const T* inp, const T* weight, const T* bias, int64_t M, int64_t K,
                    int64_t N) {
  if (M == 0 || N == 0) return;
  // The bias goes in first and the product onto it (beta 1): one pass over `out` where
  // clearing it (BLAS's beta 0) and adding the bias after took two.
  if (bias != nullptr) {
#pragma omp parallel for schedule(static)
    for (int64_t m = 0; m < M; ++m) std::copy(bias, bias + N, out + m * N);
  } else if (K == 0) {
    std::fill(out, out + M * N, T(0));
  }
  if (K > 0) gemm(CblasNoTrans, CblasTrans, M, N, K, inp, K, weight, K, T(bias != nullptr), out, N);
}

template <typename T>
void matmul_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight,
                     int64_t M, int64_t K, int64_t N) {
  if (M == 0) return;
  if (N == 0) {  // the product over an empty inner dimension
    if (dinp != nullptr) std::fill(dinp, dinp + M * K, T(0));
    return;
  }
  if (dbias != nullptr) {
    parallel_column_blocks(N, [&](int64_t n0, int64_t n1) {
      for (int64_t m = 0; m < M; ++m) {
        const T* d = dout + m * N;
#pragma omp simd
        for (int64_t n = n0; n < n1; ++n) dbias[n] += d[n];
      }
    });
  }
  if (K == 0) return;
  // dinp[M, K] = dout[M, N] @ weight[N, K]
  if (dinp != nullptr) gemm(CblasNoTrans, CblasNoTrans, M, K, N, dout, N, weight, K, T(0), dinp, K);
  // dweight[N, K] += dout[M, N]^T @ inp[M, K]
  if (dweight != nullptr)
    gemm(CblasTrans, CblasNoTrans, N, K, M, dout, N, inp, K, T(1), dweight, K);
}

template void matmul_forward<float>(float*, const float*, const float*, const float*, int64_t,
                                    int64_t, int64_t);
template void matmul_forward<double>(double*, const double*, const double*, const double*, int64_t,
                                     int64_t, int64_t);
template void matmul_backward<float>(float*, float*, float*, const float*, const float*,
                                     const float*, int64_t, int64_t, int64_t);
template void matmul_backward<double>(double*, double*, double*, const double*, const double*,
                                      const double*, int64_t, int64_t, int64_t);

}  // namespace tessera::ops::cpu
